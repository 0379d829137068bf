//! Metrolog server: the HTTP API and dashboard, the agent protocol, storage,
//! and the housekeeping of an elastic fleet.
//!
//! Layout by role: `config` (typed configuration), `store` (all SQL), `auth`
//! (credentials), `http` (router, API, dashboard), `ingest` (the committed-batch
//! path), `query` (reading metrics back), `fleet` (liveness, expiry, retention),
//! `startup` (assembly and shutdown), `local_agent` (the built-in agent).

pub mod alarms;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod config;
pub mod events;
pub mod fleet;
pub mod graph;
pub mod graphite;
pub mod groups;
pub mod http;
pub mod ingest;
pub mod local_agent;
pub mod logs;
pub mod notify;
pub mod prometheus;
pub mod query;
pub mod scaling;
pub mod startup;
pub mod store;
pub mod syslog;
pub mod telemetry;
