//! Scaling hooks (SPEC §7): group policies tell an autoscaler to scale out,
//! scale in, or heal back to the minimum; membership events tell load
//! balancers who joined and left. docs/scaling.md is the operator's view.
//!
//! - [`policy`]: `[[scaling.policies]]` and the API's policies, checked once;
//! - [`hook`]: `[[scaling.hooks]]`, checked once;
//! - [`eval`]: one policy's pure evaluation, round by round (hysteresis,
//!   `for`, M-of-N, cooldowns, target tracking, clamping);
//! - [`scaler`]: the runner's pure core (members, healing, membership
//!   events, policy states);
//! - [`event`]: the event body hooks receive;
//! - [`sender`]: the webhook (Standard Webhooks signature) and command
//!   senders behind the outbox's `Sender` trait;
//! - [`runner`]: the task on the event bus, committing events with their
//!   outbox rows;
//! - [`dryrun`]: a policy replayed over stored history through the same
//!   evaluation.

pub mod dryrun;
pub mod eval;
pub mod event;
pub mod hook;
pub mod policy;
pub mod runner;
pub mod scaler;
pub mod sender;

pub use event::DEFAULT_MAX_EVENT_MEMBERS;
pub use hook::{Hook, HookSection, HookTarget};
pub use policy::{Policy, PolicySection};
pub use runner::{Runner, ScalingHandle};

use crate::notify::worker::ExtraLane;
use std::sync::Arc;

/// The outbox lanes of the hooks: one per hook, with its sender.
pub fn lanes(hooks: &[Hook]) -> Vec<ExtraLane> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("metrolog/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    hooks
        .iter()
        .map(|h| ExtraLane {
            name: h.name.clone(),
            kind: h.kind(),
            retry: h.retry,
            sender: match &h.target {
                HookTarget::Webhook { url, key } => Arc::new(sender::SignedWebhook {
                    client: client.clone(),
                    url: url.clone(),
                    key: key.clone(),
                }),
                HookTarget::Command { argv, timeout } => Arc::new(sender::CommandHook {
                    argv: argv.clone(),
                    timeout: *timeout,
                }),
            },
        })
        .collect()
}
