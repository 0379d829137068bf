//! `metrolog-server`: parse the command line, set up logging, call the library.

use anyhow::Context;
use clap::Parser;
use metrolog_server::auth::{hash_password_async, new_token, random_string, token_hash, Role};
use metrolog_server::cli::{Cli, Command, TokenAction, UserAction};
use metrolog_server::config::ServerConfig;
use metrolog_server::startup::{self, Application};
use metrolog_server::store::Store;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    metrolog_server::telemetry::init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Some(Command::CheckConfig { file }) => Ok(check_config(&cli, file)),
        Some(Command::Token {
            action: TokenAction::Create { role, name },
        }) => {
            let role = match Role::parse(role) {
                Some(r @ (Role::Admin | Role::Viewer | Role::Enroll)) => r,
                _ => anyhow::bail!("--role must be admin, viewer or enroll (got {role:?})"),
            };
            let store = open_store(&cli).await?;
            let token = new_token();
            store
                .insert_token(name, role.as_str(), &token_hash(token.expose()), None)
                .await?;
            println!("{}", token.expose());
            eprintln!(
                "created {} token {name:?}; it is shown only this once",
                role.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::User {
            action:
                UserAction::Add {
                    name,
                    role,
                    password_stdin,
                },
        }) => {
            if !matches!(role.as_str(), "admin" | "viewer") {
                anyhow::bail!("--role must be admin or viewer (got {role:?})");
            }
            let store = open_store(&cli).await?;
            let (password, generated) = if *password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                let p = line.trim_end_matches(['\r', '\n']).to_string();
                anyhow::ensure!(p.len() >= 8, "the password must have at least 8 characters");
                (p, false)
            } else {
                (random_string(18), true)
            };
            let hash = hash_password_async(password.clone()).await;
            store.create_user(name, &hash, role).await?;
            if generated {
                println!("{password}");
                eprintln!(
                    "created {role} user {name:?} with the password above (shown only this once)"
                );
            } else {
                eprintln!("created {role} user {name:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Backup { dir }) => {
            let config = load_config(&cli)?;
            let copies = metrolog_server::store::backup::backup(&config.database_url, dir).await?;
            for c in &copies {
                println!(
                    "{} -> {} ({} bytes)",
                    c.from.display(),
                    c.to.display(),
                    c.bytes
                );
            }
            eprintln!("backup complete: restore by copying these files into an empty data directory (docs/backup.md)");
            Ok(ExitCode::SUCCESS)
        }
        None => serve(&cli).await,
    }
}

fn check_config(cli: &Cli, file: &std::path::Path) -> ExitCode {
    let mut over = cli.overrides();
    over.config = Some(file.to_path_buf());
    match ServerConfig::load(&over) {
        Ok(_) => {
            println!("{}: configuration OK", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} problem(s):", file.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  - {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<ServerConfig> {
    ServerConfig::load(&cli.overrides()).map_err(|errors| {
        anyhow::anyhow!("invalid configuration:\n  - {}", errors.0.join("\n  - "))
    })
}

async fn open_store(cli: &Cli) -> anyhow::Result<Store> {
    let config = load_config(cli)?;
    startup::ensure_writable_dir(&config.data_dir)?;
    Ok(Store::open(&config.database_url).await?)
}

async fn serve(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    if let Some(p) = &app.bootstrapped.admin_password {
        println!("\n  First start: created user `admin` with password  {}\n  (shown only this once; set METROLOG_ADMIN_PASSWORD to choose it)", p.expose());
    }
    if let Some(t) = &app.bootstrapped.enroll_token {
        println!("  Enrollment token for agents:  {}\n  (shown only this once; `metrolog-server token create --role enroll` makes more)\n", t.expose());
    }
    // Tests started with port 0 read the bound syslog addresses from here.
    let (udp, tcp) = app.syslog_addrs();
    for (name, a) in [("UDP", udp), ("TCP", tcp), ("TLS", app.syslog_tls_addr())] {
        if let Some(a) = a {
            println!("  Syslog {name}: {a}");
        }
    }
    if let Some(g) = app.graphite_addr() {
        println!("  Graphite TCP: {g}");
    }
    let scheme = if app.https() { "https" } else { "http" };
    println!("  Dashboard: {scheme}://{addr}/");
    app.run_until(startup::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
