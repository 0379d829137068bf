//! `[[scaling.hooks]]`: who is told about scaling events, as the file says it
//! ([`HookSection`]) and as the outbox uses it ([`Hook`]), checked once at
//! load with every problem reported at once.

use crate::notify::config::RetryPolicy;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// Default timeout of one attempt (a command is killed with its process
/// group when it runs longer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[scaling.hooks]]` entry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSection {
    pub name: String,
    /// Only this group's events; absent: every group's.
    pub group: Option<String>,
    /// A webhook (Standard Webhooks signature) …
    pub url: Option<String>,
    /// … keyed by this secret (`whsec_` + base64 of the key, or the key itself).
    pub secret: Option<String>,
    /// … or a program and its arguments (no shell).
    pub command: Option<Vec<String>>,
    /// Default: scale_out, scale_in, heal.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub max_retry_age: Option<Duration>,
    pub max_attempts: Option<u32>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub retry_backoff: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub retry_backoff_max: Option<Duration>,
}

/// The events of SPEC §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    ScaleOut,
    ScaleIn,
    Heal,
    MemberJoined,
    MemberLeft,
    MemberDown,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::ScaleOut,
        EventType::ScaleIn,
        EventType::Heal,
        EventType::MemberJoined,
        EventType::MemberLeft,
        EventType::MemberDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ScaleOut => "scale_out",
            EventType::ScaleIn => "scale_in",
            EventType::Heal => "heal",
            EventType::MemberJoined => "member_joined",
            EventType::MemberLeft => "member_left",
            EventType::MemberDown => "member_down",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// An HMAC key that never prints.
#[derive(Clone)]
pub struct SigningKey(pub Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// `whsec_<base64>` is the key's base64, as the Standard Webhooks
    /// libraries read it; any other text is the key's bytes.
    pub fn parse(secret: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("empty".into());
        }
        match secret.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(SigningKey)
                .map_err(|e| format!("whsec_ secrets are base64 of the key: {e}")),
            None => Ok(SigningKey(secret.as_bytes().to_vec())),
        }
    }
}

#[derive(Debug, Clone)]
pub enum HookTarget {
    Webhook {
        url: reqwest::Url,
        key: SigningKey,
    },
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
}

/// A checked hook.
#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub group: Option<String>,
    pub events: BTreeSet<EventType>,
    pub target: HookTarget,
    pub retry: RetryPolicy,
}

impl Hook {
    /// The outbox's `kind` of this hook's deliveries.
    pub fn kind(&self) -> &'static str {
        match self.target {
            HookTarget::Webhook { .. } => "scaling-webhook",
            HookTarget::Command { .. } => "scaling-command",
        }
    }

    /// Whether this hook wants `event` of `group`.
    pub fn wants(&self, event: EventType, group: &str) -> bool {
        self.events.contains(&event) && self.group.as_deref().is_none_or(|g| g == group)
    }

    /// Checks every section; `notify_names` are the `[[notify]]` receivers'
    /// (deliveries are listed by receiver name, so they may not clash).
    pub fn parse_all(
        sections: &[HookSection],
        notify_names: &[String],
    ) -> Result<Vec<Hook>, Vec<String>> {
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            let at = format!("scaling.hooks[{i}] ({})", s.name);
            if sections[..i].iter().any(|o| o.name == s.name) {
                errs.push(format!("{at}.name: another hook has this name"));
            }
            if notify_names.contains(&s.name) {
                errs.push(format!(
                    "{at}.name: a [[notify]] receiver has this name (deliveries are listed by name)"
                ));
            }
            match Self::parse(s) {
                Ok(h) => out.push(h),
                Err(e) => errs.extend(e.into_iter().map(|e| format!("{at}.{e}"))),
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }

    fn parse(s: &HookSection) -> Result<Hook, Vec<String>> {
        let mut errs = Vec::new();
        if let Err(e) = crate::alarms::rules::check_rule_name(&s.name) {
            errs.push(format!("name: {e}"));
        }
        if let Some(g) = &s.group {
            if let Err(e) = super::policy::check_group_name(g) {
                errs.push(format!("group: {e}"));
            }
        }
        let mut events = BTreeSet::new();
        if s.events.is_empty() {
            events.extend([EventType::ScaleOut, EventType::ScaleIn, EventType::Heal]);
        }
        for e in &s.events {
            match EventType::parse(e) {
                Some(t) => {
                    events.insert(t);
                }
                None => errs.push(format!(
                    "events: unknown event {e:?} (expected {})",
                    EventType::ALL.map(|e| e.as_str()).join(", ")
                )),
            }
        }
        let timeout = s.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > Duration::from_secs(600) {
            errs.push("timeout: must be more than 0 and at most 10m".into());
        }
        let target = match (&s.url, &s.command) {
            (Some(url), None) => {
                let url = match reqwest::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        Some(u)
                    }
                    _ => {
                        errs.push(format!("url: {url:?} must be an http:// or https:// URL"));
                        None
                    }
                };
                let key = match s.secret.as_deref() {
                    None => {
                        errs.push(
                            "secret: a webhook hook needs a secret: receivers verify the signature with it (Standard Webhooks)"
                                .into(),
                        );
                        None
                    }
                    Some(secret) => match SigningKey::parse(secret) {
                        Ok(k) => Some(k),
                        Err(e) => {
                            errs.push(format!("secret: {e}"));
                            None
                        }
                    },
                };
                url.zip(key)
                    .map(|(url, key)| HookTarget::Webhook { url, key })
            }
            (None, Some(argv)) => {
                if s.secret.is_some() {
                    errs.push("secret: only for a webhook (`url`)".into());
                }
                if argv.first().is_none_or(|p| p.is_empty()) {
                    errs.push("command: the program is missing".into());
                    None
                } else {
                    Some(HookTarget::Command {
                        argv: argv.clone(),
                        timeout,
                    })
                }
            }
            _ => {
                errs.push("url: give exactly one of `url` or `command`".into());
                None
            }
        };
        let d = RetryPolicy::default();
        let retry = RetryPolicy {
            // A command kills itself at `timeout`; the worker's bound is a
            // backstop.
            timeout: match target {
                Some(HookTarget::Command { .. }) => timeout + Duration::from_secs(2),
                _ => timeout,
            },
            backoff: s.retry_backoff.unwrap_or(d.backoff),
            backoff_max: s.retry_backoff_max.unwrap_or(d.backoff_max),
            max_age: s.max_retry_age.unwrap_or(d.max_age),
            max_attempts: s.max_attempts.unwrap_or(d.max_attempts),
        };
        if retry.backoff.is_zero() {
            errs.push("retry_backoff: must be more than 0".into());
        }
        if retry.backoff_max < retry.backoff {
            errs.push("retry_backoff_max: must be at least retry_backoff".into());
        }
        if retry.max_age > Duration::from_secs(7 * 86400) {
            errs.push("max_retry_age: at most 7d (deliveries are pruned after 7d)".into());
        }
        match target {
            Some(target) if errs.is_empty() => Ok(Hook {
                name: s.name.clone(),
                group: s.group.clone(),
                events,
                target,
                retry,
            }),
            _ => Err(errs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Hook>, Vec<String>> {
        #[derive(Deserialize)]
        struct F {
            hooks: Vec<HookSection>,
        }
        let f: F = toml::from_str(text).unwrap();
        Hook::parse_all(&f.hooks, &["ops".to_string()])
    }

    #[test]
    fn hooks_are_checked_with_every_problem_at_once() {
        let errs = parse(
            r#"
[[hooks]]
name = "a"
url = "http://scaler/hook"
[[hooks]]
name = "ops"
url = "http://x"
command = ["/bin/true"]
events = ["scale_sideways"]
[[hooks]]
name = "c"
url = "http://x"
secret = "whsec_!!!"
[[hooks]]
name = "d"
command = []
secret = "s"
"#,
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "hooks[0] (a).secret: a webhook hook needs a secret",
            "hooks[1] (ops).name: a [[notify]] receiver",
            "hooks[1] (ops).url: give exactly one",
            "hooks[1] (ops).events: unknown event \"scale_sideways\"",
            "hooks[2] (c).secret: whsec_ secrets are base64",
            "hooks[3] (d).secret: only for a webhook",
            "hooks[3] (d).command: the program is missing",
        ] {
            assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
        }
    }

    #[test]
    fn defaults_and_whsec_keys() {
        let h = parse(
            "[[hooks]]\nname = \"asg\"\ngroup = \"web\"\nurl = \"http://x/h\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        )
        .unwrap()
        .remove(0);
        assert!(h.wants(EventType::Heal, "web"));
        assert!(!h.wants(EventType::MemberJoined, "web"));
        assert!(!h.wants(EventType::Heal, "db"));
        let HookTarget::Webhook { key, .. } = &h.target else {
            panic!()
        };
        assert_eq!(key.0.len(), 24);
        assert!(!format!("{h:?}").contains("MfKQ"));
    }
}
