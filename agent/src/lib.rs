//! Metrolog agent: collects metrics on one instance and ships them to the server.
pub mod collect;
pub mod config;
