//! `[[scrape]]`: a Prometheus exporter the agent scrapes (see `docs/scrape.md`).
//! The type is the protocol's, shared with the server's `[[agents]]` sections
//! (central configuration, `docs/agent-config.md`).

pub use metrolog_protocol::settings::scrape::{
    validate_all, ScrapeConfig, DEFAULT_TIMEOUT, MAX_NAME,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigErrors;
    use std::time::Duration;

    #[test]
    fn defaults_and_problems() {
        let ok = ScrapeConfig {
            name: "node".into(),
            url: "http://127.0.0.1:9100/metrics".into(),
            ..ScrapeConfig::default()
        };
        assert!(ok.problems("scrape[0]").is_empty());
        assert_eq!(ok.timeout(), DEFAULT_TIMEOUT);
        let quick = ScrapeConfig {
            interval: Duration::from_secs(2),
            ..ok.clone()
        };
        assert_eq!(
            quick.timeout(),
            Duration::from_secs(2),
            "cut to the interval"
        );
        assert!(quick.problems("scrape[0]").is_empty());
        let secret = ScrapeConfig {
            url: "http://scraper:hunter2@127.0.0.1:9100/metrics".into(),
            ..ok.clone()
        };
        assert_eq!(
            secret.url_for_logs(),
            "http://scraper:redacted@127.0.0.1:9100/metrics"
        );
        let bad = ScrapeConfig {
            name: "Node Exporter".into(),
            url: "ftp://x".into(),
            interval: Duration::from_secs(5),
            timeout: Some(Duration::from_secs(6)),
            sample_limit: 0,
            body_limit: 10,
            labels: [("job".to_string(), "x".to_string())].into(),
        };
        let errs = bad.problems("scrape[0]");
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "scrape[0].name",
                "scrape[0].url",
                "scrape[0].timeout",
                "scrape[0].sample_limit",
                "scrape[0].body_limit",
                "scrape[0].labels"
            ],
            "{errs}"
        );
        let mut errs = ConfigErrors::default();
        validate_all(&[ok.clone(), ok], &mut errs);
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].key, "scrape[1].name");
    }
}
