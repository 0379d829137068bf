//! `[[notify]]`: the receivers as the file says them ([`NotifySection`]) and
//! as the notifier uses them ([`Receiver`]), checked once at load with every
//! problem reported at once.

use crate::auth::Secret;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// One `[[notify]]` receiver, as written. Absent keys take the defaults of
/// [`Receiver`] (see docs/notifications.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    pub name: String,
    /// `webhook` (default): Alertmanager's webhook body; `alertmanager`:
    /// Alertmanager's API v2.
    pub kind: Option<String>,
    pub url: String,
    /// Labels that make one aggregation group; `["..."]`: every label.
    pub group_by: Option<Vec<String>>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub group_wait: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub group_interval: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub repeat_interval: Option<Duration>,
    pub send_resolved: Option<bool>,
    /// Alerts per webhook body at most; 0: no limit.
    pub max_alerts: Option<u32>,
    /// kind = "alertmanager": how often active alerts are re-sent.
    #[serde(default, with = "crate::config::opt_duration")]
    pub resend_delay: Option<Duration>,
    /// One attempt's limit, connection to last byte.
    #[serde(default, with = "crate::config::opt_duration")]
    pub timeout: Option<Duration>,
    /// Retries stop this long after the delivery was built.
    #[serde(default, with = "crate::config::opt_duration")]
    pub max_retry_age: Option<Duration>,
    /// Attempts at most (first included); 0: only `max_retry_age` bounds.
    pub max_attempts: Option<u32>,
    /// First retry delay ceiling; doubles per attempt (full jitter).
    #[serde(default, with = "crate::config::opt_duration")]
    pub retry_backoff: Option<Duration>,
    /// Ceiling of any retry delay.
    #[serde(default, with = "crate::config::opt_duration")]
    pub retry_backoff_max: Option<Duration>,
    #[serde(default, deserialize_with = "opt_secret")]
    pub bearer_token: Option<Secret>,
    pub basic_auth: Option<BasicAuthSection>,
    /// Base of `externalURL` and of relative `generatorURL`s.
    pub external_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    pub username: String,
    #[serde(deserialize_with = "secret")]
    pub password: Secret,
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    String::deserialize(d).map(|s| Some(Secret::new(s)))
}

/// Which labels make an aggregation group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// `["..."]`: every label (one group per alert).
    All,
    Labels(Vec<String>),
}

/// How a webhook receiver batches alerts (Alertmanager's route timers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub group_by: GroupBy,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub send_resolved: bool,
    /// 0: no limit.
    pub max_alerts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverKind {
    /// Alertmanager's webhook body (version 4), grouped.
    Webhook(Grouping),
    /// Alertmanager's API v2, as Prometheus pushes.
    Alertmanager { resend_delay: Duration },
}

impl ReceiverKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReceiverKind::Webhook(_) => "webhook",
            ReceiverKind::Alertmanager { .. } => "alertmanager",
        }
    }
}

/// The worker's retry policy of one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub timeout: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub max_age: Duration,
    /// 0: unbounded by count (`max_age` still bounds).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Auth {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// A checked receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: reqwest::Url,
    pub auth: Option<Auth>,
    pub retry: RetryPolicy,
    /// Without a trailing slash; may be empty.
    pub external_url: String,
}

/// Defaults, named so docs and tests can point at them.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(10);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
pub const DEFAULT_RESEND_DELAY: Duration = Duration::from_secs(60);

fn label_name_ok(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl Receiver {
    /// Checks every section; `Err` lists every problem, each with its key.
    pub fn parse_all(sections: &[NotifySection]) -> Result<Vec<Receiver>, Vec<String>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            let at = format!("notify[{i}] ({})", s.name);
            if out.iter().any(|r: &Receiver| r.name == s.name)
                || sections[..i].iter().any(|o| o.name == s.name)
            {
                errors.push(format!("{at}: name: another receiver has this name"));
            }
            match Self::parse(s) {
                Ok(r) => out.push(r),
                Err(es) => errors.extend(es.into_iter().map(|e| format!("{at}: {e}"))),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn parse(s: &NotifySection) -> Result<Receiver, Vec<String>> {
        let mut errors = Vec::new();
        if s.name.is_empty()
            || s.name.len() > 64
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            errors.push("name: 1 to 64 characters among A-Z a-z 0-9 _ - .".to_string());
        }
        let url = match reqwest::Url::parse(&s.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                errors.push(format!(
                    "url: {:?} must be an http:// or https:// URL",
                    s.url
                ));
                None
            }
            Err(e) => {
                errors.push(format!("url: {:?} is not a URL: {e}", s.url));
                None
            }
        };
        let webhook_only = [
            ("group_by", s.group_by.is_some()),
            ("group_wait", s.group_wait.is_some()),
            ("group_interval", s.group_interval.is_some()),
            ("repeat_interval", s.repeat_interval.is_some()),
            ("send_resolved", s.send_resolved.is_some()),
            ("max_alerts", s.max_alerts.is_some()),
        ];
        let kind = match s.kind.as_deref().unwrap_or("webhook") {
            "webhook" => {
                if s.resend_delay.is_some() {
                    errors.push("resend_delay: only for kind = \"alertmanager\"".into());
                }
                let group_by = match s.group_by.as_deref() {
                    None => GroupBy::Labels(vec!["alertname".into()]),
                    Some([all]) if all == "..." => GroupBy::All,
                    Some(names) => {
                        for n in names {
                            if n == "..." {
                                errors.push("group_by: \"...\" (every label) must be alone".into());
                            } else if !label_name_ok(n) {
                                errors.push(format!(
                                    "group_by: {n:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                                ));
                            }
                        }
                        let mut v = names.to_vec();
                        v.sort();
                        v.dedup();
                        GroupBy::Labels(v)
                    }
                };
                let g = Grouping {
                    group_by,
                    group_wait: s.group_wait.unwrap_or(DEFAULT_GROUP_WAIT),
                    group_interval: s.group_interval.unwrap_or(DEFAULT_GROUP_INTERVAL),
                    repeat_interval: s.repeat_interval.unwrap_or(DEFAULT_REPEAT_INTERVAL),
                    send_resolved: s.send_resolved.unwrap_or(true),
                    max_alerts: s.max_alerts.unwrap_or(0),
                };
                if g.group_interval.is_zero() {
                    errors.push("group_interval: must be more than 0".into());
                }
                if g.repeat_interval < g.group_interval {
                    errors.push(format!(
                        "repeat_interval: {:?} is shorter than group_interval ({:?})",
                        g.repeat_interval, g.group_interval
                    ));
                }
                Some(ReceiverKind::Webhook(g))
            }
            "alertmanager" => {
                for (key, given) in webhook_only {
                    if given {
                        errors.push(format!(
                            "{key}: only for kind = \"webhook\" (Alertmanager groups, waits and repeats itself)"
                        ));
                    }
                }
                let resend_delay = s.resend_delay.unwrap_or(DEFAULT_RESEND_DELAY);
                if resend_delay < Duration::from_secs(1) {
                    errors.push("resend_delay: must be at least 1s".into());
                }
                Some(ReceiverKind::Alertmanager { resend_delay })
            }
            other => {
                errors.push(format!(
                    "kind: unknown kind {other:?} (expected webhook or alertmanager)"
                ));
                None
            }
        };
        let d = RetryPolicy::default();
        let retry = RetryPolicy {
            timeout: s.timeout.unwrap_or(d.timeout),
            backoff: s.retry_backoff.unwrap_or(d.backoff),
            backoff_max: s.retry_backoff_max.unwrap_or(d.backoff_max),
            max_age: s.max_retry_age.unwrap_or(d.max_age),
            max_attempts: s.max_attempts.unwrap_or(d.max_attempts),
        };
        if retry.timeout.is_zero() || retry.timeout > Duration::from_secs(600) {
            errors.push("timeout: must be more than 0 and at most 10m".into());
        }
        if retry.backoff.is_zero() {
            errors.push("retry_backoff: must be more than 0".into());
        }
        if retry.backoff_max < retry.backoff {
            errors.push("retry_backoff_max: must be at least retry_backoff".into());
        }
        if retry.max_age > Duration::from_secs(7 * 86400) {
            errors.push("max_retry_age: at most 7d (deliveries are pruned after 7d)".into());
        }
        let auth = match (&s.bearer_token, &s.basic_auth) {
            (Some(_), Some(_)) => {
                errors.push("bearer_token and basic_auth: give at most one".into());
                None
            }
            (Some(t), None) if t.expose().is_empty() => {
                errors.push("bearer_token: empty".into());
                None
            }
            (Some(t), None) => Some(Auth::Bearer(t.clone())),
            (None, Some(b)) => Some(Auth::Basic {
                username: b.username.clone(),
                password: b.password.clone(),
            }),
            (None, None) => None,
        };
        let external_url = s
            .external_url
            .clone()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        if !external_url.is_empty() && reqwest::Url::parse(&external_url).is_err() {
            errors.push(format!("external_url: {external_url:?} is not a URL"));
        }
        match (kind, url) {
            (Some(kind), Some(url)) if errors.is_empty() => Ok(Receiver {
                name: s.name.clone(),
                kind,
                url,
                auth,
                retry,
                external_url,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<Receiver>, Vec<String>> {
        #[derive(Deserialize)]
        struct F {
            notify: Vec<NotifySection>,
        }
        let f: F = toml::from_str(toml_text).unwrap();
        Receiver::parse_all(&f.notify)
    }

    #[test]
    fn defaults_follow_alertmanager_except_group_wait() {
        let r =
            parse("[[notify]]\nname = \"ops\"\nurl = \"http://127.0.0.1:5001/hook\"\n").unwrap();
        let ReceiverKind::Webhook(g) = &r[0].kind else {
            panic!("webhook by default")
        };
        assert_eq!(g.group_by, GroupBy::Labels(vec!["alertname".into()]));
        assert_eq!(g.group_wait, Duration::from_secs(10));
        assert_eq!(g.group_interval, Duration::from_secs(300));
        assert_eq!(g.repeat_interval, Duration::from_secs(4 * 3600));
        assert!(g.send_resolved);
        assert_eq!(r[0].retry.timeout, Duration::from_secs(10));
        assert_eq!(r[0].retry.max_age, Duration::from_secs(86400));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = parse(
            r#"
[[notify]]
name = "a"
kind = "pager"
url = "ftp://x"
[[notify]]
name = "a"
kind = "alertmanager"
url = "http://am:9093"
group_by = ["alertname"]
resend_delay = "0s"
[[notify]]
name = "c"
url = "http://x"
group_by = ["bad-label", "..."]
repeat_interval = "1m"
timeout = "0s"
bearer_token = "t"
basic_auth = { username = "u", password = "p" }
"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        for needle in [
            "notify[0] (a): url",
            "notify[0] (a): kind: unknown kind \"pager\"",
            "notify[1] (a): name: another receiver",
            "notify[1] (a): group_by: only for kind = \"webhook\"",
            "notify[1] (a): resend_delay: must be at least 1s",
            "notify[2] (c): group_by: \"bad-label\"",
            "notify[2] (c): group_by: \"...\"",
            "notify[2] (c): repeat_interval",
            "notify[2] (c): timeout",
            "notify[2] (c): bearer_token and basic_auth",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let r =
            parse("[[notify]]\nname = \"ops\"\nurl = \"http://x\"\nbearer_token = \"hunter2\"\n")
                .unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
