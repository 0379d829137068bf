//! Runs one plugin once: no shell (unless the check asks for one), stdin
//! closed, in a process group of its own; output read up to a cap; the whole
//! group killed on timeout, and the plugin reaped so no zombie remains.
//!
//! Exit 0–3 is the plugin's verdict; any other code, a signal, a timeout or a
//! program that cannot be started is UNKNOWN with the reason as the output.

use crate::subprocess::{self, io_reason, Ending};
use metrolog_protocol::nagios::{split_output, CheckStatus, MAX_OUTPUT_BYTES};
use rustix::process::Signal;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use tokio::time::Instant;

/// After the timeout, the group gets SIGTERM and this long to exit before
/// SIGKILL: plugins that clean up (temporary files, remote sessions) can.
pub const KILL_GRACE: Duration = Duration::from_millis(500);
/// How long the output pipes may stay open once the plugin itself exited.
pub use subprocess::PIPE_GRACE;
/// Stdout kept: the cap less room for the reason and the truncation mark.
const STDOUT_CAP: usize = MAX_OUTPUT_BYTES - 512;
/// Stderr kept: used only when the plugin printed nothing on stdout.
const STDERR_CAP: usize = 1024;
/// Appended to the long output when the plugin printed more than the cap.
pub const TRUNCATED_MARK: &str = "[output truncated: the plugin printed more than 16 KiB]";

/// What one run gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub status: CheckStatus,
    /// Whether the plugin's exit code gave the status (0–3); only then is its
    /// perfdata used.
    pub judged: bool,
    /// The summary, or the reason for UNKNOWN (`check timed out after 10s`).
    pub output: String,
    pub long_output: String,
    pub perfdata: String,
    /// The plugin printed more than the cap; the rest was discarded.
    pub truncated: bool,
    pub duration: Duration,
    /// The plugin's process id (and process group), when it started.
    pub pid: Option<u32>,
}

impl Run {
    fn unknown(reason: String, duration: Duration, pid: Option<u32>) -> Self {
        Self {
            status: CheckStatus::Unknown,
            judged: false,
            output: reason,
            long_output: String::new(),
            perfdata: String::new(),
            truncated: false,
            duration,
            pid,
        }
    }
}

/// Runs `argv` (program and arguments; `["/bin/sh", "-c", line]` for a shell
/// check) with `timeout` covering the start, the reading and the exit.
pub async fn run(argv: &[String], timeout: Duration) -> Run {
    let started = Instant::now();
    let Some((program, args)) = argv.split_first() else {
        return Run::unknown("no command to run".into(), Duration::ZERO, None);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).process_group(0);
    let limits = subprocess::Limits {
        timeout,
        stdout_cap: STDOUT_CAP,
        stderr_cap: STDERR_CAP,
        stop_signal: Signal::TERM,
        kill_grace: KILL_GRACE,
    };
    let done = match subprocess::run(cmd, &limits).await {
        Ok(done) => done,
        Err(e) => {
            return Run::unknown(
                format!("cannot run {program}: {}", io_reason(&e)),
                started.elapsed(),
                None,
            )
        }
    };
    let (duration, pid) = (done.duration, done.pid);
    let status = match done.ending {
        Ending::Exited(s) => s,
        Ending::TimedOut => {
            let mut r = Run::unknown(
                format!(
                    "check timed out after {}",
                    humantime::format_duration(timeout)
                ),
                duration,
                pid,
            );
            let partial = split_output(&String::from_utf8_lossy(&done.stdout));
            r.long_output = join_lines(&partial.summary, &partial.long_output);
            fit(&mut r);
            return r;
        }
        Ending::WaitFailed(reason) => {
            return Run::unknown(
                format!("cannot wait for the plugin: {reason}"),
                duration,
                pid,
            )
        }
    };
    let text = if done.stdout.iter().all(u8::is_ascii_whitespace) {
        &done.stderr
    } else {
        &done.stdout
    };
    let parts = split_output(&String::from_utf8_lossy(text));
    let mut r = Run {
        status: CheckStatus::Unknown,
        judged: false,
        output: parts.summary,
        long_output: parts.long_output,
        perfdata: String::new(),
        truncated: done.stdout_truncated,
        duration,
        pid,
    };
    match (status.code(), status.signal()) {
        (Some(code @ 0..=3), _) => {
            r.status = CheckStatus::from_exit_code(code);
            r.judged = true;
            r.perfdata = parts.perfdata;
        }
        (Some(code), _) => r.output = with_reason(format!("exit code {code}"), &r.output),
        (None, Some(sig)) => r.output = with_reason(format!("killed by signal {sig}"), &r.output),
        (None, None) => r.output = with_reason("ended without an exit code".into(), &r.output),
    }
    if r.truncated {
        r.long_output = join_lines(&r.long_output, TRUNCATED_MARK);
    }
    fit(&mut r);
    r
}

/// `reason: summary`, or the reason alone.
fn with_reason(reason: String, summary: &str) -> String {
    if summary.is_empty() {
        reason
    } else {
        format!("{reason}: {summary}")
    }
}

fn join_lines(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}\n{b}"),
    }
}

/// Keeps output + long output + perfdata within [`MAX_OUTPUT_BYTES`]
/// (invalid UTF-8 replaced by U+FFFD may have grown it), cutting the long
/// output first, on character boundaries.
fn fit(r: &mut Run) {
    let total = |r: &Run| r.output.len() + r.long_output.len() + r.perfdata.len();
    for field in [0, 1, 2] {
        let over = total(r).saturating_sub(MAX_OUTPUT_BYTES);
        if over == 0 {
            return;
        }
        r.truncated = true;
        let s = match field {
            0 => &mut r.long_output,
            1 => &mut r.perfdata,
            _ => &mut r.output,
        };
        let mut end = s.len().saturating_sub(over);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_and_output() {
        let r = run(
            &sh("echo 'OK - fine | t=1s;2;3'; echo more; exit 0"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, CheckStatus::Ok);
        assert!(r.judged);
        assert_eq!(
            (r.output.as_str(), r.long_output.as_str()),
            ("OK - fine", "more")
        );
        assert_eq!(r.perfdata, "t=1s;2;3");
        let r = run(&sh("echo 'odd | t=1'; exit 7"), Duration::from_secs(5)).await;
        assert_eq!((r.status, r.judged), (CheckStatus::Unknown, false));
        assert_eq!(r.output, "exit code 7: odd");
        assert_eq!(r.perfdata, "");
        let r = run(&sh("echo oops >&2; exit 2"), Duration::from_secs(5)).await;
        assert_eq!(
            (r.status, r.output.as_str()),
            (CheckStatus::Critical, "oops")
        );
    }

    #[tokio::test]
    async fn a_missing_program_says_so() {
        let r = run(&["/nonexistent/check_x".into()], Duration::from_secs(5)).await;
        assert_eq!(r.status, CheckStatus::Unknown);
        assert_eq!(
            r.output,
            "cannot run /nonexistent/check_x: No such file or directory"
        );
        let r = run(&[], Duration::from_secs(5)).await;
        assert_eq!(r.status, CheckStatus::Unknown);
    }

    #[test]
    fn fit_cuts_on_char_boundaries() {
        let mut r = Run::unknown("é".repeat(MAX_OUTPUT_BYTES), Duration::ZERO, None);
        r.long_output = "x".repeat(100);
        fit(&mut r);
        assert!(r.output.len() + r.long_output.len() <= MAX_OUTPUT_BYTES);
        assert!(r.long_output.is_empty() && r.truncated);
    }
}
