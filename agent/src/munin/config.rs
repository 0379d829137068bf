//! `[munin]`: where the plugins are, how often they run and the limits of
//! what one plugin may print (see `docs/munin.md`). The type is the
//! protocol's, shared with the server's `[[agents]]` sections (central
//! configuration, `docs/agent-config.md`).

pub use metrolog_protocol::settings::munin::MuninConfig;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigErrors;
    use std::time::Duration;

    #[test]
    fn defaults_are_munin_nodes_and_valid() {
        let c: MuninConfig = toml::from_str("").unwrap();
        assert_eq!(c, MuninConfig::default());
        let mut errs = ConfigErrors::default();
        c.validate(&mut errs);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(c.timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_keys_are_reported() {
        let c: MuninConfig = toml::from_str(
            "plugins_dir = \"plugins\"\ninterval = \"0s\"\nmax_fields = 0\nmax_output_bytes = 10",
        )
        .unwrap();
        let mut errs = ConfigErrors::default();
        c.validate(&mut errs);
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "munin.plugins_dir",
                "munin.interval",
                "munin.max_fields",
                "munin.max_output_bytes"
            ]
        );
        assert!(toml::from_str::<MuninConfig>("plugin_dir = \"/x\"").is_err());
    }
}
