//! The syslog layer shared by the server's UDP/TCP receivers and the agent's
//! local receiver and file tailing (SPEC §3 "Log record", §5). Pure: bytes
//! in, [`LogRecord`]s out, no I/O.
//!
//! - [`parse`] reads one message off the network (RFC 5424, RFC 3164, or
//!   anything else kept whole), [`parse_file_line`] one line of a log file.
//!   Neither fails nor panics, whatever the bytes.
//! - [`Framer`] cuts a TCP byte stream into messages (RFC 6587 octet
//!   counting or newline-delimited, decided per frame), with bounded memory.
//! - [`Severity`] and [`Facility`] are the typed RFC 5424 values.
//!
//! The decisions (timezone, NUL bytes, limits) are written up for operators
//! in `docs/syslog.md`.

mod framing;
mod level;
mod parse;
mod record;
mod text;

pub use framing::{Frame, Framer, OCTET_COUNT_HARD_CAP};
pub use level::{split_pri, Facility, LevelError, Severity};
pub use parse::{
    parse, parse_file_line, parse_file_line_with, parse_with, ParseOptions, DEFAULT_MAX_LINE_BYTES,
};
pub use record::{unix_micros, LogRecord, LogSource};
pub use text::NUL_REPLACEMENT;
