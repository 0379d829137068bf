//! `metrolog-loadgen`: see docs/loadgen.md.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = metrolog_loadgen::Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(metrolog_loadgen::main(cli))?;
    std::process::exit(code)
}
