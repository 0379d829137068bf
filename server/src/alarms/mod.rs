//! Supervision: rules judge what the fleet reports and raise alarms.
//!
//! - [`rules`]: `[[rules]]` and the API's rules, parsed once into typed rules;
//! - [`condition`]: windows, M-of-N, `for` and `keep_firing_for`;
//! - [`machine`]: one alarm's states (soft/hard, flapping, acks) and what
//!   receivers must be told;
//! - [`silence`]: matchers and time windows that mute notifications;
//! - [`evaluator`]: the task that owns the alarms, fed by the event bus.
//!
//! Notifications leave through the outbox (`notify`, `store::outbox`): an
//! alarm transition and its outbox rows commit in one transaction.
//! docs/supervision.md is the operator's view of all this.

pub mod condition;
pub mod evaluator;
pub mod flap;
pub mod machine;
pub mod rules;
pub mod silence;

pub use evaluator::{AlarmWrite, AlarmsHandle, Evaluator, HostEntry};
pub use machine::{Alarm, Subject};
pub use rules::{Rule, RuleContext, RuleKind, RuleSection, RuleSource};

/// An alarm's state: Nagios' four.
pub type Status = metrolog_protocol::nagios::CheckStatus;

/// A rule stored by the API (JSON with the keys of `[[rules]]`), checked as
/// the file's rules are.
pub fn parse_stored_rule(json: &str, ctx: RuleContext) -> Result<Rule, Vec<String>> {
    let section: RuleSection = serde_json::from_str(json).map_err(|e| vec![e.to_string()])?;
    Rule::parse(&section, RuleSource::Api, ctx, "rule")
}
