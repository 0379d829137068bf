//! Runs an outside program once, for the sources that run plugins (Nagios
//! checks, Munin plugins): stdin closed, stdout and stderr read up to a cap
//! (the rest is read and discarded, so memory stays bounded whatever the
//! program prints), the whole process group signalled on timeout, and the
//! program reaped so no zombie remains.
//!
//! The caller puts the program in a process group of its own
//! (`Command::process_group(0)`, or `setsid` before exec): the group is what
//! gets killed, children included.

use rustix::process::{kill_process_group, Pid, Signal};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// How long the output pipes may stay open once the program itself exited:
/// a child it left behind that holds them is killed with the group then.
pub const PIPE_GRACE: Duration = Duration::from_millis(250);
/// Longest wait to reap a program after SIGKILL: a process stuck in the
/// kernel (a hung NFS mount) cannot be reaped; tokio reaps it once it dies.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// Bounds of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Covers the start, the reading and the exit.
    pub timeout: Duration,
    /// Stdout bytes kept.
    pub stdout_cap: usize,
    /// Stderr bytes kept.
    pub stderr_cap: usize,
    /// Sent to the group at the timeout (SIGTERM for checks, SIGHUP for
    /// Munin plugins as munin-node does).
    pub stop_signal: Signal,
    /// How long after `stop_signal` the group gets SIGKILL.
    pub kill_grace: Duration,
}

/// How the program ended.
#[derive(Debug)]
pub enum Ending {
    Exited(ExitStatus),
    /// Still running at the timeout: the group was signalled and killed.
    TimedOut,
    /// The program could not be waited for (the reason).
    WaitFailed(String),
}

/// What one run gave.
#[derive(Debug)]
pub struct Finished {
    pub ending: Ending,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The program printed more than `stdout_cap` on stdout.
    pub stdout_truncated: bool,
    pub duration: Duration,
    /// The program's process id (and process group).
    pub pid: Option<u32>,
}

/// The program's process group, killed with SIGKILL if the run is abandoned
/// (the agent stops, or the source is removed, while it runs).
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

/// Runs `cmd` (already given its program, arguments, environment and its
/// own process group) within `limits`. Errs only when it cannot start.
pub async fn run(
    mut cmd: tokio::process::Command,
    limits: &Limits,
) -> Result<Finished, std::io::Error> {
    let started = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Should the run be dropped half-way, tokio reaps the killed child.
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let mut group = Group(pid.and_then(|p| Pid::from_raw(p as i32)));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("program output not captured"));
    };
    let deadline = started + limits.timeout;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut out_truncated = false;
    let mut exit: Option<(std::io::Result<ExitStatus>, Instant)> = None;
    let timed_out = {
        let mut out_fut = std::pin::pin!(read_capped(stdout, &mut out, limits.stdout_cap));
        let mut err_fut = std::pin::pin!(read_capped(stderr, &mut err, limits.stderr_cap));
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
                        // The program exited, a child of it holds the pipes.
                        group.signal(Signal::KILL);
                        break false;
                    }
                    break true;
                }
            }
        }
    };
    if timed_out {
        group.signal(limits.stop_signal);
        let exited = tokio::time::timeout(limits.kill_grace, child.wait())
            .await
            .is_ok();
        // Whatever ignored the first signal (the program or its children)
        // goes now.
        group.signal(Signal::KILL);
        if !exited {
            let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
        }
        group.disarm();
        return Ok(Finished {
            ending: Ending::TimedOut,
            stdout: out,
            stderr: err,
            stdout_truncated: out_truncated,
            duration: started.elapsed(),
            pid,
        });
    }
    group.disarm();
    let ending = match exit {
        Some((Ok(s), _)) => Ending::Exited(s),
        Some((Err(e), _)) => Ending::WaitFailed(io_reason(&e)),
        None => Ending::WaitFailed("program did not exit".into()),
    };
    Ok(Finished {
        ending,
        stdout: out,
        stderr: err,
        stdout_truncated: out_truncated,
        duration: started.elapsed(),
        pid,
    })
}

/// Reads `r` to its end, keeping at most `cap` bytes in `buf` and discarding
/// the rest as it comes. Returns whether something was discarded.
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

/// The OS error without its number: "No such file or directory".
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
