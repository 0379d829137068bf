//! End-to-end tests: the real `metrolog-server` and `metrolog-agent` binaries,
//! real sockets, real processes and signals.

mod agent_failure;
mod agent_logs;
mod agent_spool;
mod archives;
mod backup;
mod central_config;
mod checks;
mod cloud;
mod compose;
mod config_reference;
mod dashboard;
mod fleet;
mod full_disk;
mod graphite;
mod https;
mod liveness;
mod loadgen;
mod logs;
mod metrics;
mod munin;
mod notify;
mod prometheus;
mod pushed_logs;
mod scaling;
mod scrape;
mod startup;
mod syslog_tls;
