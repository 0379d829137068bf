//! The delivery worker: one planner that turns what receivers must know
//! (`notify_alerts`) into deliveries when their group is due, and one task
//! per receiver that sends that receiver's deliveries in order, so a slow or
//! hanging receiver only ever delays itself.
//!
//! Nothing polls the database for new data: the planner wakes when the
//! alarm commit says so ([`NotifierHandle::waker`]) and at the earliest time
//! a group is due; a receiver's task wakes when the planner built a
//! delivery for it and when its head delivery's retry is due. Everything
//! is read back from the database at start, so a restart (or `kill -9`)
//! resumes what was pending.

use super::config::{Receiver, ReceiverKind, RetryPolicy};
use super::group::{self, Timing};
use super::retry::{self, Verdict};
use super::sender::{Attempt, Sender};
use super::{alertmanager, webhook, AlertState, AlertStatus};
use crate::clock::SharedClock;
use crate::store::{AttemptRow, DeliveryRow, Flush, Store, StoreError};
use crate::telemetry::ServerMetrics;
use metrolog_agent::random::Jitter;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

/// Attempts in flight at once, all receivers together.
pub const MAX_IN_FLIGHT: usize = 16;
/// Delivered and dead deliveries are kept this long…
pub const KEEP_DONE: Duration = Duration::from_secs(7 * 86400);
/// …and at most this many.
pub const KEEP_DONE_ROWS: i64 = 100_000;
/// How long a store error makes the worker wait before trying again.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Deliveries a lane reads from the outbox at once.
const READ_AHEAD: usize = 32;
/// How long an attempt in flight may finish after the stop signal.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One receiver at run time.
#[derive(Debug)]
struct Lane {
    name: String,
    retry: RetryPolicy,
    /// A notification receiver: what the planner groups for it. `None` for
    /// a lane whose deliveries someone else writes (a scaling hook).
    plan: Option<(Receiver, Timing)>,
    sender: Arc<dyn Sender>,
    /// Wakes the lane's sending task: a delivery was built for it.
    wake: Notify,
}

/// A lane the planner does not feed: its deliveries are written by another
/// commit (scaling events write their hooks' rows), which then wakes it
/// ([`NotifierHandle::lane_waker`]). The worker sends them in order with the
/// same retries, timeouts and dead letters.
#[derive(Debug)]
pub struct ExtraLane {
    pub name: String,
    /// The outbox's `kind` of its deliveries.
    pub kind: &'static str,
    pub retry: RetryPolicy,
    pub sender: Arc<dyn Sender>,
}

/// Wakes the sending task of the lane named so.
pub type LaneWake = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Debug)]
struct Inner {
    store: Arc<Store>,
    lanes: Vec<Arc<Lane>>,
    clock: SharedClock,
    metrics: Arc<ServerMetrics>,
    /// Wakes the planner: the alarm commit wrote notices or mutes.
    plan: Arc<Notify>,
    slots: Semaphore,
}

/// The running notifier.
#[derive(Debug)]
pub struct NotifierHandle {
    plan: Arc<Notify>,
    lanes: Vec<Arc<Lane>>,
    tasks: Vec<JoinHandle<()>>,
}

impl NotifierHandle {
    /// What the alarm evaluator calls after each commit that wrote notices.
    pub fn waker(&self) -> crate::alarms::evaluator::Wake {
        let plan = self.plan.clone();
        Arc::new(move || plan.notify_one())
    }

    /// What a commit that wrote deliveries for a lane calls (scaling hooks,
    /// a dead letter retried by hand).
    pub fn lane_waker(&self) -> LaneWake {
        let lanes = self.lanes.clone();
        Arc::new(move |name: &str| {
            if let Some(l) = lanes.iter().find(|l| l.name == name) {
                l.wake.notify_one();
            }
        })
    }

    /// Waits for every task (after the stop signal).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Builds the sender of a receiver's kind.
pub fn sender_for(client: &reqwest::Client, r: &Receiver) -> Arc<dyn Sender> {
    match &r.kind {
        ReceiverKind::Webhook(_) => Arc::new(webhook::sender(client.clone(), r)),
        ReceiverKind::Alertmanager { .. } => Arc::new(alertmanager::sender(client.clone(), r)),
    }
}

/// The notifier's entry point.
#[derive(Debug)]
pub struct Notifier;

impl Notifier {
    /// Records the configured receivers (so the alarm commit fans notices
    /// out to them: call this before the evaluator starts), then starts the
    /// planner and one task per receiver until `stop`.
    pub async fn start(
        store: Arc<Store>,
        receivers: Vec<Receiver>,
        clock: SharedClock,
        metrics: Arc<ServerMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Result<NotifierHandle, StoreError> {
        Self::start_with(store, receivers, Vec::new(), clock, metrics, stop).await
    }

    /// [`Notifier::start`] with lanes the planner does not feed (scaling hooks).
    pub async fn start_with(
        store: Arc<Store>,
        receivers: Vec<Receiver>,
        extra: Vec<ExtraLane>,
        clock: SharedClock,
        metrics: Arc<ServerMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Result<NotifierHandle, StoreError> {
        let names: Vec<(String, String)> = receivers
            .iter()
            .map(|r| (r.name.clone(), r.kind.as_str().to_string()))
            .chain(extra.iter().map(|l| (l.name.clone(), l.kind.to_string())))
            .collect();
        let dead = store.sync_receivers(&names, clock.now_ms()).await?;
        if dead > 0 {
            tracing::warn!(
                deliveries = dead,
                "pending deliveries of receivers removed or changed in the configuration are now dead letters"
            );
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("metrolog/", env!("CARGO_PKG_VERSION")))
            // A webhook that redirects is misconfigured: say so in the attempt.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let lanes: Vec<Arc<Lane>> = receivers
            .into_iter()
            .map(|r| {
                Arc::new(Lane {
                    name: r.name.clone(),
                    retry: r.retry,
                    sender: sender_for(&client, &r),
                    plan: Some((r.clone(), Timing::of(&r.kind))),
                    wake: Notify::new(),
                })
            })
            .chain(extra.into_iter().map(|l| {
                Arc::new(Lane {
                    name: l.name,
                    retry: l.retry,
                    plan: None,
                    sender: l.sender,
                    wake: Notify::new(),
                })
            }))
            .collect();
        let plan = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            store,
            lanes,
            clock,
            metrics,
            plan: plan.clone(),
            slots: Semaphore::new(MAX_IN_FLIGHT),
        });
        let mut tasks = Vec::new();
        if !inner.lanes.is_empty() {
            tasks.push(tokio::spawn(inner.clone().plan_loop(stop.clone())));
            for lane in &inner.lanes {
                tasks.push(tokio::spawn(
                    inner.clone().send_loop(lane.clone(), stop.clone()),
                ));
            }
        } else {
            inner.update_backlog().await;
        }
        Ok(NotifierHandle {
            plan,
            lanes: inner.lanes.clone(),
            tasks,
        })
    }
}

fn until(now_ms: i64, at_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0))
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Inner {
    async fn update_backlog(&self) {
        if let Ok(n) = self.store.outbox_backlog().await {
            self.metrics.notify.backlog.set(n);
        }
    }

    async fn plan_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut next_prune = self.clock.now_ms();
        loop {
            if *stop.borrow() {
                break;
            }
            let now = self.clock.now_ms();
            let mut next = now + 3_600_000;
            for lane in self.lanes.iter().filter(|l| l.plan.is_some()) {
                match self.plan_receiver(lane, now).await {
                    Ok((built, due)) => {
                        if built {
                            lane.wake.notify_one();
                        }
                        if let Some(d) = due {
                            next = next.min(d);
                        }
                    }
                    Err(e) => {
                        tracing::error!(receiver = %lane.name, error = %e, "cannot plan notifications; trying again in 5 s");
                        next = next.min(now + STORE_RETRY.as_millis() as i64);
                    }
                }
            }
            self.update_backlog().await;
            if now >= next_prune {
                let cutoff = now - KEEP_DONE.as_millis() as i64;
                match self.store.prune_outbox(cutoff, KEEP_DONE_ROWS).await {
                    Ok(n) if n > 0 => tracing::info!(deliveries = n, "old deliveries pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune the outbox"),
                }
                next_prune = now + 3_600_000;
            }
            next = next.min(next_prune);
            tokio::select! {
                _ = self.plan.notified() => {}
                _ = tokio::time::sleep(until(self.clock.now_ms(), next)) => {}
                _ = stopped(&mut stop) => break,
            }
        }
    }

    /// Flushes the receiver's due groups. Returns whether a delivery was
    /// built, and when to look again.
    async fn plan_receiver(
        &self,
        lane: &Lane,
        now_ms: i64,
    ) -> Result<(bool, Option<i64>), StoreError> {
        let Some((r, t)) = &lane.plan else {
            return Ok((false, None));
        };
        let alerts = self.store.receiver_alerts(&r.name).await?;
        let flushed = self.store.receiver_groups(&r.name).await?;
        let mut groups: BTreeMap<String, (BTreeMap<String, String>, Vec<&AlertState>)> =
            BTreeMap::new();
        for a in &alerts {
            let (key, labels) = match &r.kind {
                ReceiverKind::Webhook(g) => group::group_of(&g.group_by, &a.labels),
                ReceiverKind::Alertmanager { .. } => (String::new(), BTreeMap::new()),
            };
            groups
                .entry(key)
                .or_insert_with(|| (labels, Vec::new()))
                .1
                .push(a);
        }
        let stale: Vec<String> = flushed
            .keys()
            .filter(|k| !groups.contains_key(*k))
            .cloned()
            .collect();
        self.store.forget_groups(&r.name, &stale).await?;
        let mut built = false;
        let mut next: Option<i64> = None;
        let mut flushes: Vec<Flush> = Vec::new();
        for (key, (labels, members)) in groups {
            let last = flushed.get(&key).copied();
            let d = group::decide(t, last, &members, now_ms);
            let garbage: Vec<&AlertState> = members
                .iter()
                .copied()
                .filter(|a| a.is_garbage(t))
                .collect();
            if !d.flush && garbage.is_empty() {
                next = min_opt(next, d.next_ms);
                continue;
            }
            let body = if d.flush {
                group::body_alerts(t, &members)
            } else {
                Vec::new()
            };
            let bodies: Vec<String> = if body.is_empty() {
                Vec::new()
            } else {
                match &r.kind {
                    ReceiverKind::Webhook(g) => vec![webhook::body(r, g, &key, labels, &body)],
                    ReceiverKind::Alertmanager { resend_delay } => {
                        alertmanager::bodies(r, *resend_delay, &body, now_ms.div_euclid(1000))
                    }
                }
            };
            let firing = body
                .iter()
                .filter(|a| a.status == AlertStatus::Firing)
                .count();
            // For people: the group's labels and what it tells.
            let what = key.strip_prefix("{}:").unwrap_or(&key);
            let summary = match body.len() - firing {
                0 => format!("{what}: {firing} firing"),
                resolved if firing == 0 => format!("{what}: {resolved} resolved"),
                resolved => format!("{what}: {firing} firing, {resolved} resolved"),
            };
            let mut forget: Vec<(String, i64)> = garbage
                .iter()
                .chain(body.iter().filter(|a| a.status == AlertStatus::Resolved))
                .map(|a| (a.fingerprint.clone(), a.seq))
                .collect();
            forget.sort();
            forget.dedup();
            let flush = Flush {
                receiver: r.name.clone(),
                kind: r.kind.as_str().to_string(),
                group_key: key.clone(),
                group_empty: forget.len() == members.len(),
                bodies: bodies.into_iter().map(|b| (b, summary.clone())).collect(),
                sent: body
                    .iter()
                    .map(|a| (a.fingerprint.clone(), a.seq))
                    .collect(),
                forget,
                now_ms,
            };
            flushes.push(flush);
            // Decide again on the state just written (repeats, what is left).
            next = Some(now_ms);
        }
        // Every due group of the pass in one transaction: an alarm storm
        // costs one commit per pass, not one per group.
        for (f, ids) in flushes.iter().zip(self.store.flush_groups(&flushes).await?) {
            if !ids.is_empty() {
                built = true;
                tracing::debug!(receiver = %r.name, group = %f.group_key, deliveries = ?ids, "notification built");
            }
        }
        Ok((built, next))
    }

    async fn send_loop(self: Arc<Self>, lane: Arc<Lane>, mut stop: watch::Receiver<bool>) {
        let mut jitter = Jitter::from_entropy();
        let name = lane.name.clone();
        let mut rec = Recorder::default();
        // Id of the last delivery sent whose record may still be committing:
        // the next read starts after it.
        let mut after = 0;
        'read: loop {
            if *stop.borrow() {
                break;
            }
            let heads = match self.store.next_deliveries(&name, after, READ_AHEAD).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(receiver = %name, error = %e, "cannot read the outbox; trying again in 5 s");
                    tokio::select! {
                        _ = tokio::time::sleep(STORE_RETRY) => continue,
                        _ = stopped(&mut stop) => break,
                    }
                }
            };
            if heads.is_empty() || after != 0 && heads[0].next_attempt_ms > self.clock.now_ms() {
                // Idle (or only retries scheduled later): what was sent is
                // made durable before waiting, and the next read starts from
                // the oldest pending delivery again (one an operator retried
                // by hand has an older id).
                if !self.settle(&mut rec, &mut stop).await {
                    break;
                }
                if after != 0 {
                    after = 0;
                    continue;
                }
            }
            let Some(first) = heads.first() else {
                tokio::select! {
                    _ = lane.wake.notified() => continue,
                    _ = stopped(&mut stop) => break,
                }
            };
            let now = self.clock.now_ms();
            if first.next_attempt_ms > now {
                tokio::select! {
                    _ = tokio::time::sleep(until(now, first.next_attempt_ms)) => {}
                    _ = lane.wake.notified() => {}
                    _ = stopped(&mut stop) => break,
                }
                continue;
            }
            for d in heads {
                if d.next_attempt_ms > self.clock.now_ms() {
                    continue 'read;
                }
                let Some((row, verdict)) = self.attempt(&lane, &d, &mut jitter, &mut stop).await
                else {
                    break 'read;
                };
                let delivered = verdict == Verdict::Delivered;
                rec.unrecorded.push((d.id, row, verdict));
                if delivered {
                    // On to the next delivery while this one's record
                    // commits: the receiver's throughput is not one commit
                    // per notification.
                    after = d.id;
                    rec.kick(&self, &stop);
                } else {
                    // A failure: the order of this receiver's deliveries
                    // waits on its schedule, which the next read takes from
                    // the store.
                    if !self.settle(&mut rec, &mut stop).await {
                        break 'read;
                    }
                    after = 0;
                    continue 'read;
                }
            }
        }
        // What was sent is recorded before the lane stops; if the store
        // fails here, it is sent again at the next start (receivers
        // deduplicate by the idempotency key).
        let _ = self.settle(&mut rec, &mut stop).await;
    }

    /// Waits for the record in flight, then records what is left. False
    /// when stopping cut it short.
    async fn settle(
        self: &Arc<Self>,
        rec: &mut Recorder,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        if let Some(t) = rec.in_flight.take() {
            let _ = t.await;
        }
        if rec.unrecorded.is_empty() {
            return true;
        }
        let attempts = std::mem::take(&mut rec.unrecorded);
        self.clone().record(attempts, stop.clone()).await
    }

    /// Records attempts; until they are recorded they would be sent again,
    /// so a store error is retried. False when stopping cut it short.
    async fn record(
        self: Arc<Self>,
        attempts: Vec<(i64, AttemptRow, Verdict)>,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        loop {
            match self.store.record_attempts(&attempts).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(deliveries = attempts.len(), error = %e, "cannot record delivery attempts; trying again in 5 s");
                    tokio::select! {
                        _ = tokio::time::sleep(STORE_RETRY) => {}
                        _ = stopped(&mut stop) => return false,
                    }
                }
            }
        }
        self.update_backlog().await;
        true
    }

    /// One attempt of a delivery: the row to record and its verdict. None
    /// when stopping cut it short (it is sent again at the next start).
    async fn attempt(
        &self,
        lane: &Lane,
        d: &DeliveryRow,
        jitter: &mut Jitter,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(AttemptRow, Verdict)> {
        let policy: RetryPolicy = lane.retry;
        let name = &lane.name;
        let Ok(_slot) = self.slots.acquire().await else {
            return None;
        };
        let at_ms = self.clock.now_ms();
        let started = std::time::Instant::now();
        let send = tokio::time::timeout(
            policy.timeout,
            lane.sender.send(Attempt {
                delivery_id: d.id,
                idempotency_key: &d.idempotency_key,
                payload: &d.payload,
                number: d.attempts + 1,
            }),
        );
        let answer = tokio::select! {
            r = send => match r {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {}", humantime::format_duration(policy.timeout))),
            },
            _ = async { stopped(stop).await; tokio::time::sleep(STOP_GRACE).await } => return None,
        };
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now = self.clock.now_ms();
        let verdict = retry::judge(
            &policy,
            &answer,
            d.attempts + 1,
            d.created_ms,
            now,
            jitter.unit(),
        );
        let row = match &answer {
            Ok(a) => AttemptRow {
                at_ms,
                status: Some(a.status),
                error: None,
                latency_ms,
                excerpt: a.excerpt.clone(),
            },
            Err(e) => AttemptRow {
                at_ms,
                status: None,
                error: Some(e.clone()),
                latency_ms,
                excerpt: String::new(),
            },
        };
        match &verdict {
            Verdict::Delivered => {
                let age = u64::try_from(now - d.created_ms).unwrap_or(0);
                self.metrics.notify.update(name, |c| {
                    c.sent += 1;
                    c.latency_ms_sum += age;
                });
                tracing::debug!(receiver = %name, delivery = d.id, attempt = d.attempts + 1, "delivered");
            }
            Verdict::Retry { at_ms, reason } => {
                self.metrics.notify.update(name, |c| c.failed += 1);
                tracing::warn!(receiver = %name, delivery = d.id, attempt = d.attempts + 1, retry_in_ms = at_ms - now, "delivery failed ({reason}); retrying");
            }
            Verdict::Dead { reason } => {
                self.metrics.notify.update(name, |c| {
                    c.failed += 1;
                    c.dead += 1;
                });
                tracing::error!(receiver = %name, delivery = d.id, attempt = d.attempts + 1, "delivery is a dead letter: {reason}");
            }
        }
        Some((row, verdict))
    }
}

/// A lane's attempts sent and not yet recorded: at most one transaction
/// records them at a time, in the background, and what is sent meanwhile
/// goes into the next one.
#[derive(Debug, Default)]
struct Recorder {
    unrecorded: Vec<(i64, AttemptRow, Verdict)>,
    in_flight: Option<JoinHandle<bool>>,
}

impl Recorder {
    /// Starts recording what is unrecorded unless a record is in flight.
    fn kick(&mut self, inner: &Arc<Inner>, stop: &watch::Receiver<bool>) {
        if self.in_flight.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.in_flight = None;
        if self.unrecorded.is_empty() {
            return;
        }
        let attempts = std::mem::take(&mut self.unrecorded);
        self.in_flight = Some(tokio::spawn(inner.clone().record(attempts, stop.clone())));
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
