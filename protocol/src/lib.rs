//! Wire types shared by `metrolog-agent` and `metrolog-server`.
//!
//! Everything that crosses the network between an agent and the server lives
//! here, so both sides agree by construction. The protocol itself is described
//! for humans in `docs/protocol.md`.

pub mod agent;
pub mod error;
pub mod nagios;
pub mod rrd;
pub mod series;
pub mod settings;
pub mod syslog;
pub mod units;

pub use agent::*;
pub use error::{ApiError, ErrorBody};
pub use series::{Labels, SeriesKey, SeriesName, SeriesNameError};
pub use units::{parse_duration, parse_size, UnitError};
