//! Runs one plugin once: no shell (unless the check asks for one), stdin
//! closed, in a process group of its own; output read up to a cap; the whole
//! group killed on timeout, and the plugin reaped so no zombie remains.
//!
//! Exit 0–3 is the plugin's verdict; any other code, a signal, a timeout or a
//! program that cannot be started is UNKNOWN with the reason as the output.

use metrolog_protocol::nagios::{split_output, CheckStatus, MAX_OUTPUT_BYTES};
use rustix::process::{kill_process_group, Pid, Signal};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// After the timeout, the group gets SIGTERM and this long to exit before
/// SIGKILL: plugins that clean up (temporary files, remote sessions) can.
pub const KILL_GRACE: Duration = Duration::from_millis(500);
/// How long the output pipes may stay open once the plugin itself exited:
/// a child it left behind that holds them is killed with the group then.
pub const PIPE_GRACE: Duration = Duration::from_millis(250);
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

/// The plugin's process group, killed with SIGKILL if the run is abandoned
/// (the agent stops, or the check is removed, while it runs).
struct Group(Option<Pid>);

impl Group {
    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH: nothing left in the group, which is what we want.
            let _ = kill_process_group(pid, sig);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
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
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Should the run be dropped half-way, tokio reaps the killed child.
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Run::unknown(
                format!("cannot run {program}: {}", io_reason(&e)),
                started.elapsed(),
                None,
            )
        }
    };
    let pid = child.id();
    let mut group = Group(pid.and_then(|p| Pid::from_raw(p as i32)));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Run::unknown("plugin output not captured".into(), started.elapsed(), pid);
    };
    let deadline = started + timeout;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut out_truncated = false;
    let mut exit: Option<(std::io::Result<ExitStatus>, Instant)> = None;
    let timed_out = {
        let mut out_fut = std::pin::pin!(read_capped(stdout, &mut out, STDOUT_CAP));
        let mut err_fut = std::pin::pin!(read_capped(stderr, &mut err, STDERR_CAP));
        let (mut out_done, mut err_done) = (false, false);
        loop {
            if out_done && err_done && exit.is_some() {
                break false;
            }
            let until = match &exit {
                Some((_, at)) => (*at + PIPE_GRACE).min(deadline),
                None => deadline,
            };
            tokio::select! {
                t = &mut out_fut, if !out_done => {
                    out_done = true;
                    out_truncated = t;
                }
                _ = &mut err_fut, if !err_done => err_done = true,
                r = child.wait(), if exit.is_none() => exit = Some((r, Instant::now())),
                () = tokio::time::sleep_until(until) => {
                    if exit.is_some() {
                        // The plugin exited, a child of it holds the pipes.
                        group.signal(Signal::KILL);
                        break false;
                    }
                    break true;
                }
            }
        }
    };
    if timed_out {
        group.signal(Signal::TERM);
        let exited = tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok();
        // Whatever ignored SIGTERM (the plugin or its children) goes now.
        group.signal(Signal::KILL);
        if !exited {
            // Bounded: a process stuck in the kernel (a hung NFS mount)
            // cannot be reaped; tokio reaps it once it dies (kill_on_drop).
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        group.disarm();
        let mut r = Run::unknown(
            format!(
                "check timed out after {}",
                humantime::format_duration(timeout)
            ),
            started.elapsed(),
            pid,
        );
        let partial = split_output(&String::from_utf8_lossy(&out));
        r.long_output = join_lines(&partial.summary, &partial.long_output);
        fit(&mut r);
        return r;
    }
    group.disarm();
    let duration = started.elapsed();
    let status = match exit {
        Some((Ok(s), _)) => s,
        Some((Err(e), _)) => {
            return Run::unknown(
                format!("cannot wait for the plugin: {}", io_reason(&e)),
                duration,
                pid,
            )
        }
        None => return Run::unknown("plugin did not exit".into(), duration, pid),
    };
    let text = if out.iter().all(u8::is_ascii_whitespace) {
        &err
    } else {
        &out
    };
    let parts = split_output(&String::from_utf8_lossy(text));
    let mut r = Run {
        status: CheckStatus::Unknown,
        judged: false,
        output: parts.summary,
        long_output: parts.long_output,
        perfdata: String::new(),
        truncated: out_truncated,
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

/// Reads `r` to its end, keeping at most `cap` bytes in `buf` and discarding
/// the rest as it comes (memory stays bounded whatever the plugin prints).
/// Returns whether something was discarded.
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, buf: &mut Vec<u8>, cap: usize) -> bool {
    let mut chunk = [0u8; 8192];
    let mut truncated = false;
    loop {
        let room = cap.saturating_sub(buf.len());
        let want = if room > 0 {
            room.min(chunk.len())
        } else {
            chunk.len()
        };
        match r.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return truncated,
            Ok(n) if room > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => truncated = true,
        }
    }
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

/// The OS error without its number: "No such file or directory".
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
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
