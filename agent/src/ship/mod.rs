//! Shipping: enrollment, batches, heartbeats and the final leave.
//!
//! One task owns the connection to the server. It takes batches from the
//! [`BatchQueue`] oldest first and drops each only once the server acknowledged it
//! (2xx = durably committed); on failure it fails over to the next server and
//! then backs off with jitter. When nothing was shipped for a ship interval it
//! sends a heartbeat, so a quiet agent is not taken for a dead one.
//!
//! The server's settings for the agent's group come with enrollment, and are
//! asked for again at start and every [`CONFIG_REFRESH`], so a changed
//! `[[agents]]` section reaches running agents within that time.

pub mod backoff;
pub mod client;

pub use client::{Client, ConfigAnswer, ShipError};

use crate::config::Secret;
use crate::spool::{Spool, SpoolPolicy, SpoolStats};
use crate::state::{Credential, KnownSettings, StateDir};
use backoff::Backoff;
use metrolog_protocol::{AgentSettings, Batch, BatchId, CheckSettings, EnrollRequest, LogSettings};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Longest time spent shipping what is pending at shutdown.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Longest time spent telling the server the agent leaves.
pub const LEAVE_LIMIT: Duration = Duration::from_secs(3);
/// How often a running agent asks the server for its settings
/// (`GET /api/v1/agent/config`). One small request a minute per agent costs
/// the server nothing, and bounds how long a changed server configuration
/// takes to reach the fleet.
pub const CONFIG_REFRESH: Duration = Duration::from_secs(60);

/// The intervals in force; the server may change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub sample: Duration,
    pub ship: Duration,
}

impl Intervals {
    /// [`Intervals::with`], keeping those `pinned` (`[sample, ship]`) as they are.
    pub fn with_pinned(self, settings: &AgentSettings, pinned: [bool; 2]) -> Self {
        let new = self.with(settings);
        Self {
            sample: if pinned[0] { self.sample } else { new.sample },
            ship: if pinned[1] { self.ship } else { new.ship },
        }
    }

    /// These intervals with the server's `settings` applied; values out of the
    /// accepted range (see `config`) are ignored.
    pub fn with(self, settings: &AgentSettings) -> Self {
        let ms = Duration::from_millis;
        let sample = settings
            .sample_interval_ms
            .map(ms)
            .filter(|d| (ms(100)..=ms(3_600_000)).contains(d));
        let ship = settings
            .ship_interval_ms
            .map(ms)
            .filter(|d| (ms(1000)..=ms(3_600_000)).contains(d));
        Self {
            sample: sample.unwrap_or(self.sample),
            ship: ship.unwrap_or(self.ship),
        }
    }
}

/// Told what becomes of the batches, so what rode in them (file offsets of
/// log records, their counters) follows.
pub trait SettleListener: Send + Sync {
    /// `[start, end)` index ranges of batch `id`'s log records read from
    /// tailed files (kept in the spool, see `docs/agent-spool.md`).
    fn file_lines(&self, id: &BatchId) -> Vec<(u32, u32)> {
        let _ = id;
        Vec::new()
    }
    /// Batch `id` and every earlier one of this run are durably in the
    /// spool, `id` at spool position `position`.
    fn spooled(&self, id: &BatchId, position: u64) {
        let _ = (id, position);
    }
    /// Batch `id` of this run, kept in memory only (the disk refused it),
    /// and every earlier one are settled: `delivered` when the server
    /// acknowledged it, `false` when it was dropped or refused for good.
    fn settled(&self, id: &BatchId, delivered: bool);
    /// A spooled batch carrying `records` log records left the spool:
    /// acknowledged (`delivered`) or dropped.
    fn counted(&self, records: u64, delivered: bool) {
        let _ = (records, delivered);
    }
}

/// Where the sampler hands sealed batches to the shipper (not to be confused
/// with the server's outbox of notifications): the spool, behind a lock,
/// used from blocking tasks (it writes and fsyncs files).
#[derive(Clone)]
pub struct Handoff {
    spool: Arc<Mutex<Spool>>,
    stats: Arc<SpoolStats>,
    /// Signalled when a batch is queued.
    pub wake: Arc<Notify>,
    listener: Option<Arc<dyn SettleListener>>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("batches", &self.len())
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

impl Handoff {
    pub fn new(spool: Spool) -> Self {
        Self {
            stats: spool.stats(),
            spool: Arc::new(Mutex::new(spool)),
            wake: Arc::new(Notify::new()),
            listener: None,
        }
    }

    /// A handoff to a spool in memory only, of `capacity` batches.
    pub fn in_memory(capacity: usize) -> Self {
        Self::new(Spool::in_memory(SpoolPolicy {
            memory_batches: capacity,
            ..SpoolPolicy::default()
        }))
    }

    /// The same, telling `listener` each batch's fate.
    pub fn with_listener(mut self, listener: Arc<dyn SettleListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The spool's counters.
    pub fn stats(&self) -> Arc<SpoolStats> {
        self.stats.clone()
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.stats
            .batches
            .load(std::sync::atomic::Ordering::Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spools a batch (off the runtime: it is written and fsynced) and wakes
    /// the shipper.
    pub async fn push(&self, batch: Batch) {
        let me = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || me.push_blocking(batch)).await {
            tracing::error!("spooling a batch failed: {e}");
        }
    }

    /// [`Handoff::push`] from a blocking context. The order matters for
    /// crash safety: the batch is on disk before its file offsets are
    /// committed (`spooled`).
    pub fn push_blocking(&self, batch: Batch) {
        let id = batch.id.clone();
        let files = self
            .listener
            .as_ref()
            .map(|l| l.file_lines(&id))
            .unwrap_or_default();
        let pushed = self.lock().push(batch, files);
        if let Some(l) = &self.listener {
            if pushed.durable {
                l.spooled(&id, pushed.seq);
            }
            for dropped in &pushed.dropped {
                l.settled(dropped, false);
            }
        }
        self.wake.notify_one();
    }

    /// The oldest batch: the next to send.
    pub async fn front(&self) -> Option<Batch> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.lock().front())
            .await
            .unwrap_or(None)
    }

    /// Removes the batch `id` that was sent: the server acknowledged it
    /// (`delivered`) or refused it for good. Reports its fate.
    pub async fn settle(&self, id: &BatchId, delivered: bool) {
        let me = self.clone();
        let id = id.clone();
        let _ = tokio::task::spawn_blocking(move || me.settle_blocking(&id, delivered)).await;
    }

    pub fn settle_blocking(&self, id: &BatchId, delivered: bool) {
        let left = {
            let mut spool = self.lock();
            if delivered {
                spool.ack(id)
            } else {
                spool.discard(id)
            }
        };
        if let (Some(left), Some(l)) = (left, &self.listener) {
            if left.memory {
                l.settled(id, delivered);
            } else {
                l.counted(left.logs, delivered);
            }
        }
    }

    /// A server was told of the spool's drops `drops` (see
    /// [`SpoolStats::drops`]): a restart no longer carries them over.
    pub async fn drops_reported(&self, drops: (u64, u64, u64)) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.lock().reported(drops)).await;
    }

    /// Locks the spool. A panic elsewhere while holding the lock leaves it
    /// usable (its files are the truth, and each method updates memory
    /// after the files), so a poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Shipper {
    pub client: Client,
    pub state: StateDir,
    pub enroll: EnrollRequest,
    pub enroll_token: Option<Secret>,
    pub credential: Option<Credential>,
    pub handoff: Handoff,
    pub intervals: watch::Sender<Intervals>,
    pub backoff: Backoff,
    /// Last time the server acknowledged something.
    last_contact: Instant,
    /// The intervals of the agent's own configuration: the server's settings
    /// apply over these, so a setting the server stops pushing reverts.
    local: Intervals,
    /// Where the server's log settings go (the log pipeline).
    logs: Option<watch::Sender<Option<LogSettings>>>,
    /// Where the server's checks go (the running checks).
    checks: Option<watch::Sender<Option<Vec<CheckSettings>>>>,
    /// The server's settings last applied.
    settings: Option<AgentSettings>,
    /// Their version, as the server named it: a heartbeat or batch answer
    /// naming another one makes the agent ask for its settings at once.
    version: Option<String>,
    /// Intervals set locally (flag, environment, file): the server's do
    /// not apply over them (`[sample, ship]`).
    pinned: [bool; 2],
    /// When to ask the server for its settings again.
    next_refresh: Instant,
    /// Settings waiting to be written to the state directory: the writes
    /// run off the runtime, one at a time, always the newest.
    unsaved: Arc<Mutex<Option<KnownSettings>>>,
    /// Pause between two batches of a backlog (`spool.replay_rate`).
    replay_gap: Duration,
    /// Whether the last failure was logged as such (a run of identical
    /// failures is logged once, then at debug level).
    failing: Option<String>,
}

impl Shipper {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        state: StateDir,
        enroll: EnrollRequest,
        enroll_token: Option<Secret>,
        credential: Option<Credential>,
        handoff: Handoff,
        intervals: watch::Sender<Intervals>,
        backoff: Backoff,
    ) -> Self {
        let local = *intervals.borrow();
        Self {
            client,
            state,
            enroll,
            enroll_token,
            credential,
            handoff,
            intervals,
            backoff,
            last_contact: Instant::now(),
            local,
            logs: None,
            checks: None,
            settings: None,
            version: None,
            pinned: [false; 2],
            next_refresh: Instant::now(),
            unsaved: Arc::default(),
            replay_gap: Duration::from_millis(200),
            failing: None,
        }
    }

    /// The server's settings known from the last run (already applied to
    /// the intervals and logs), over the agent's own `local` intervals.
    pub fn with_known_settings(mut self, local: Intervals, known: Option<AgentSettings>) -> Self {
        self.local = local;
        // Named at the first refresh: the server answers 304 when they are
        // still current.
        self.version = known.as_ref().map(AgentSettings::version);
        self.settings = known;
        self
    }

    /// Keeps the local sample (`[0]`) and ship (`[1]`) intervals over the
    /// server's: they were set by flag, environment or file.
    pub fn with_pinned_intervals(mut self, pinned: [bool; 2]) -> Self {
        self.pinned = pinned;
        self
    }

    /// Sends at most `rate` batches per second while replaying a backlog.
    pub fn with_replay_rate(mut self, rate: f64) -> Self {
        if rate.is_finite() && rate > 0.0 {
            self.replay_gap = Duration::from_secs_f64(1.0 / rate);
        }
        self
    }

    /// Sends the server's log settings to `logs` when they change.
    pub fn with_log_settings(mut self, logs: watch::Sender<Option<LogSettings>>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Sends the server's checks to `checks` when they change.
    pub fn with_check_settings(
        mut self,
        checks: watch::Sender<Option<Vec<CheckSettings>>>,
    ) -> Self {
        self.checks = Some(checks);
        self
    }

    /// Ships until `drain` turns true, then ships what is still queued (at most
    /// [`DRAIN_LIMIT`]) and leaves (at most [`LEAVE_LIMIT`]).
    pub async fn run(mut self, mut drain: watch::Receiver<bool>) {
        tokio::select! {
            () = self.pump(false) => {}
            _ = drain.wait_for(|d| *d) => {}
        }
        let pending = self.handoff.len();
        if pending > 0 {
            tracing::info!("shipping {pending} pending batch(es) before leaving");
            if tokio::time::timeout(DRAIN_LIMIT, self.pump(true))
                .await
                .is_err()
            {
                let left = self.handoff.len();
                tracing::warn!(
                    "gave up shipping at shutdown; {left} batch(es) stay in the spool for the next start"
                );
            }
        }
        match tokio::time::timeout(LEAVE_LIMIT, self.leave()).await {
            Ok(Ok(true)) => tracing::info!("left"),
            Ok(Ok(false)) => tracing::info!("exiting without leave: never enrolled"),
            Ok(Err(e)) => tracing::warn!("could not tell the server we leave: {e}"),
            Err(_) => tracing::warn!("could not tell the server we leave: timed out"),
        }
    }

    /// The shipping loop. With `until_empty`, returns once the queue is empty;
    /// otherwise never returns.
    async fn pump(&mut self, until_empty: bool) {
        loop {
            let token = match self.ensure_credential().await {
                Ok(c) => c.agent_token.clone(),
                Err(e) => {
                    self.retry_later("enrollment failed", &e).await;
                    continue;
                }
            };
            if !until_empty && Instant::now() >= self.next_refresh {
                self.refresh(&token).await;
                continue;
            }
            let front = self.handoff.front().await;
            match front {
                Some(batch) => match self.client.send_batch(&token, &batch).await {
                    Ok(ack) => {
                        self.handoff.settle(&batch.id, true).await;
                        self.contact();
                        if ack.rejected > 0 {
                            tracing::warn!(
                                "server stored {} and refused {} bucket(s) of batch {}",
                                ack.accepted,
                                ack.rejected,
                                batch.id
                            );
                        }
                        if let Some(s) = &ack.settings {
                            self.apply(s);
                        }
                        self.announced(ack.settings_version);
                        if !until_empty && self.handoff.len() > 1 {
                            // Replaying a backlog: at a bounded rate, so a
                            // recovering server (and its other agents) are
                            // not stampeded.
                            tokio::time::sleep(self.replay_gap).await;
                        }
                    }
                    Err(ShipError::Refused { status, message }) => {
                        // Resending would fail the same way and block every later batch.
                        self.handoff.settle(&batch.id, false).await;
                        tracing::error!(
                            "server refused batch {} ({status}): {message}; dropped it (counted in agent.spool.refused)",
                            batch.id
                        );
                    }
                    Err(e) => self.on_failure("cannot ship", e).await,
                },
                None if until_empty => return,
                None => {
                    let ship = self.intervals.borrow().ship;
                    let due = self.last_contact + ship;
                    if Instant::now() >= due {
                        match self.client.heartbeat(&token).await {
                            Ok(version) => {
                                self.contact();
                                self.announced(version);
                            }
                            Err(e) => self.on_failure("heartbeat failed", e).await,
                        }
                    } else {
                        let wake = if until_empty {
                            due
                        } else {
                            due.min(self.next_refresh)
                        };
                        tokio::select! {
                            () = self.handoff.wake.notified() => {}
                            () = tokio::time::sleep_until(wake) => {}
                        }
                    }
                }
            }
        }
    }

    /// Asks the server for this agent's settings and applies them. A server
    /// that refuses (a 4xx other than 401) is asked again at the next refresh.
    async fn refresh(&mut self, token: &str) {
        match self.client.config(token, self.version.as_deref()).await {
            Ok(answer) => {
                self.next_refresh = Instant::now() + CONFIG_REFRESH;
                self.reachable();
                if let ConfigAnswer::Changed { settings, version } = answer {
                    self.apply(&settings);
                    self.version = version;
                }
            }
            Err(ShipError::Refused { status, message }) => {
                self.next_refresh = Instant::now() + CONFIG_REFRESH;
                tracing::warn!("the server refused our settings ({status}): {message}");
            }
            Err(e) => self.on_failure("cannot fetch settings", e).await,
        }
    }

    /// The server named the version of this agent's settings: another than
    /// the one applied is fetched at once, so a change reaches the agent
    /// within a ship interval (a server that names none is asked every
    /// [`CONFIG_REFRESH`]).
    fn announced(&mut self, version: Option<String>) {
        if let Some(v) = version {
            if self.version.as_deref() != Some(v.as_str()) {
                tracing::debug!("the server's settings are now version {v}; fetching them");
                self.next_refresh = Instant::now();
            }
        }
    }

    /// A config request is not a heartbeat on the server: it resets the
    /// backoff but not the heartbeat clock.
    fn reachable(&mut self) {
        if self.backoff.failures() > 0 {
            let spooled = self.handoff.len();
            if spooled > 0 {
                tracing::info!("server reachable again; replaying {spooled} spooled batch(es)");
            } else {
                tracing::info!("server reachable again");
            }
        }
        self.failing = None;
        self.backoff.reset();
        self.handoff
            .stats()
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn contact(&mut self) {
        self.reachable();
        self.last_contact = Instant::now();
    }

    async fn on_failure(&mut self, what: &str, e: ShipError) {
        if let ShipError::Unauthorized(msg) = &e {
            tracing::warn!(
                "{what}: the server rejected our credential (401: {msg}); enrolling again"
            );
            self.credential = None;
            let state = self.state.clone();
            let removed = tokio::task::spawn_blocking(move || state.remove_credential()).await;
            if let Ok(Err(e)) = removed {
                tracing::error!("{e}");
            }
            // Not "shipping stopped" yet: the enrollment that follows says
            // whether it is (one line, see `retry_later`).
            self.handoff
                .stats()
                .connected
                .store(false, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(self.backoff.next_delay()).await;
            return;
        }
        self.retry_later(what, &e).await;
    }

    async fn retry_later(&mut self, what: &str, e: &ShipError) {
        self.handoff
            .stats()
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut delay = self.backoff.next_delay();
        if let ShipError::Busy { retry_after, .. } = e {
            // The server said when: not sooner, and not all agents at once.
            delay = delay.max(*retry_after + delay / 4);
        }
        let secs = format!("{:.1}s", delay.as_secs_f64());
        let spooled = self.handoff.len();
        // A run of the same failure is logged once, then at debug level.
        let kind = match e {
            ShipError::Unreachable(_) => "unreachable".to_string(),
            other => format!("{what}: {other}"),
        };
        let repeat = self.failing.as_deref() == Some(kind.as_str());
        match e {
            ShipError::Unreachable(why) if !repeat => tracing::warn!(
                "server unreachable — retrying in {secs}, batches are spooled ({spooled} waiting) ({what}: {why})"
            ),
            ShipError::Busy { message, .. } => tracing::info!(
                "the server asks to wait ({message}) — retrying in {secs} ({spooled} batch(es) waiting)"
            ),
            ShipError::Refused { .. } | ShipError::Unauthorized(_) if !repeat => tracing::error!(
                "{what}: {e} — shipping stopped; batches are spooled within spool.max_bytes until the server accepts this agent (re-enroll with a valid --enroll-token); retrying in {secs}"
            ),
            _ if !repeat => tracing::error!("{what}: {e} — retrying in {secs}"),
            _ => tracing::debug!("{what}: {e} — retrying in {secs}"),
        }
        self.failing = Some(kind);
        tokio::time::sleep(delay).await;
    }

    /// The credential, enrolling first when there is none.
    async fn ensure_credential(&mut self) -> Result<&Credential, ShipError> {
        if self.credential.is_none() {
            let token = self
                .enroll_token
                .clone()
                .ok_or_else(|| ShipError::Refused {
                    status: 401,
                    message: "no stored credential and no enrollment token: pass --enroll-token"
                        .into(),
                })?;
            let resp = self.client.enroll(&token, &self.enroll).await?;
            tracing::info!("enrolled as host {}", resp.host_id);
            let cred = Credential {
                host_id: resp.host_id,
                agent_token: resp.agent_token,
            };
            let state = self.state.clone();
            let stored = cred.clone();
            match tokio::task::spawn_blocking(move || state.store_credential(&stored)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("{e}; the agent will enroll again on restart"),
                Err(e) => tracing::error!("storing the credential failed: {e}"),
            }
            self.contact();
            self.apply(&resp.settings);
            self.version = resp.settings_version.clone();
            self.next_refresh = Instant::now() + CONFIG_REFRESH;
            self.credential = Some(cred);
        }
        self.credential
            .as_ref()
            .ok_or_else(|| ShipError::Encode("credential vanished".into()))
    }

    /// Applies the server's settings (the whole of them: what is absent no
    /// longer applies) and keeps them for the next start. Settings equal to
    /// those in force change nothing.
    fn apply(&mut self, settings: &AgentSettings) {
        if self.settings.as_ref() == Some(settings) {
            return;
        }
        self.settings = Some(settings.clone());
        *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()) = Some(KnownSettings {
            group: self.enroll.group.clone(),
            settings: settings.clone(),
        });
        let (state, unsaved) = (self.state.clone(), self.unsaved.clone());
        // Off the runtime (an fsync); losing it costs only the head start
        // at the next start, so nothing waits for it. The lock is held while
        // writing, so two writes never race and the last one is the newest.
        tokio::task::spawn_blocking(move || {
            let mut slot = unsaved.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(known) = slot.take() {
                if let Err(e) = state.store_settings(&known) {
                    tracing::warn!(
                        "{e}; the server's settings apply once it answers after a restart"
                    );
                }
            }
        });
        if let Some(logs) = &self.logs {
            logs.send_if_modified(|cur| {
                if *cur == settings.logs {
                    return false;
                }
                cur.clone_from(&settings.logs);
                true
            });
        }
        if let Some(checks) = &self.checks {
            checks.send_if_modified(|cur| {
                if *cur == settings.checks {
                    return false;
                }
                cur.clone_from(&settings.checks);
                true
            });
        }
        let local = self.local;
        let pinned = self.pinned;
        self.intervals.send_if_modified(|cur| {
            let new = local.with_pinned(settings, pinned);
            if new == *cur {
                return false;
            }
            tracing::info!(
                "server settings: sample every {}, ship every {}",
                humantime::format_duration(new.sample),
                humantime::format_duration(new.ship)
            );
            *cur = new;
            true
        });
    }

    /// Tells the server this agent leaves. `Ok(false)` when it never enrolled.
    async fn leave(&mut self) -> Result<bool, ShipError> {
        let Some(cred) = &self.credential else {
            return Ok(false);
        };
        let token = cred.agent_token.clone();
        self.client.leave(&token, "shutdown").await.map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_settings_apply_within_bounds() {
        let cur = Intervals {
            sample: Duration::from_secs(1),
            ship: Duration::from_secs(10),
        };
        assert_eq!(cur.with(&AgentSettings::default()), cur);
        let s = AgentSettings {
            sample_interval_ms: Some(5000),
            ship_interval_ms: Some(30_000),
            ..AgentSettings::default()
        };
        assert_eq!(
            cur.with(&s),
            Intervals {
                sample: Duration::from_secs(5),
                ship: Duration::from_secs(30)
            }
        );
        let silly = AgentSettings {
            sample_interval_ms: Some(0),
            ship_interval_ms: Some(10),
            ..AgentSettings::default()
        };
        assert_eq!(cur.with(&silly), cur);
    }
}
