//! The Nagios plugin conventions both sides share: threshold ranges
//! (`10`, `10:`, `~:10`, `10:20`, `@10:20`), the plugin's output and its
//! perfdata, the plugin's result (exit status, output, perfdata) as it rides
//! an agent batch.
//!
//! References: the Monitoring Plugins Development Guidelines, sections
//! "Threshold and ranges" and "Performance data".

pub mod perfdata;
pub mod range;
pub mod result;

pub use perfdata::{split_output, PerfItem, Perfdata, PluginOutput, Unit};
pub use range::{Range, RangeError};
pub use result::{
    CheckName, CheckNameError, CheckResult, CheckStatus, MAX_CHECK_NAME, MAX_OUTPUT_BYTES,
};
