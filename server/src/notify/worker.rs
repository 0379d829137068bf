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
use std::collections::{BTreeMap, HashMap, HashSet};
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
/// The planner reads every alert of a receiver at least this often (ms),
/// besides when a timer is due (see [`Inner::plan_receiver`]).
const FULL_PASS_EVERY_MS: i64 = 60_000;
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
        let mut plans: Vec<ReceiverPlan> = self.lanes.iter().map(|_| Default::default()).collect();
        loop {
            if *stop.borrow() {
                break;
            }
            let now = self.clock.now_ms();
            let mut next = now + 3_600_000;
            for (lane, plan) in self.lanes.iter().zip(plans.iter_mut()) {
                if lane.plan.is_none() {
                    continue;
                }
                match self.plan_receiver(lane, plan, now).await {
                    Ok((built, due)) => {
                        if built {
                            lane.wake.notify_one();
                        }
                        if let Some(d) = due {
                            next = next.min(d);
                        }
                    }
                    Err(e) => {
                        // Read everything again: what is in memory may be
                        // behind what was written.
                        *plan = ReceiverPlan::default();
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
    ///
    /// A pass woken by the alarm commit reads only the alerts that changed
    /// since they were last sent and decides only their groups (and those
    /// it just flushed); it reads and decides everything at start, when a
    /// group's timer is due, after an error and every [`FULL_PASS_EVERY`].
    /// So an alarm storm costs each pass what changed, not every active
    /// alert.
    async fn plan_receiver(
        &self,
        lane: &Lane,
        plan: &mut ReceiverPlan,
        now_ms: i64,
    ) -> Result<(bool, Option<i64>), StoreError> {
        let Some((r, t)) = &lane.plan else {
            return Ok((false, None));
        };
        let key_of = |a: &AlertState| match &r.kind {
            ReceiverKind::Webhook(g) => group::group_of(&g.group_by, &a.labels),
            ReceiverKind::Alertmanager { .. } => (String::new(), BTreeMap::new()),
        };
        let full = plan
            .full_at
            .is_none_or(|f| now_ms - f >= FULL_PASS_EVERY_MS)
            || plan.next_ms.is_some_and(|n| n <= now_ms);
        // The groups to decide: None for all of them.
        let dirty: Option<HashSet<String>> = if full {
            let alerts = self.store.receiver_alerts(&r.name).await?;
            plan.groups = self.store.receiver_groups(&r.name).await?;
            plan.alerts = alerts
                .into_iter()
                .map(|a| (a.fingerprint.clone(), (key_of(&a).0, a)))
                .collect();
            plan.full_at = Some(now_ms);
            plan.next_ms = None;
            plan.redo.clear();
            None
        } else {
            let mut keys = std::mem::take(&mut plan.redo);
            for a in self.store.changed_alerts(&r.name).await? {
                let key = key_of(&a).0;
                keys.insert(key.clone());
                plan.alerts.insert(a.fingerprint.clone(), (key, a));
            }
            Some(keys)
        };
        let chosen = |k: &str| dirty.as_ref().is_none_or(|d| d.contains(k));
        let mut groups: BTreeMap<&str, Vec<&AlertState>> = BTreeMap::new();
        for (key, a) in plan.alerts.values() {
            if chosen(key) {
                groups.entry(key.as_str()).or_default().push(a);
            }
        }
        let stale: Vec<String> = plan
            .groups
            .keys()
            .filter(|k| chosen(k) && !groups.contains_key(k.as_str()))
            .cloned()
            .collect();
        self.store.forget_groups(&r.name, &stale).await?;
        for k in &stale {
            plan.groups.remove(k);
        }
        let mut built = false;
        let mut next: Option<i64> = None;
        let mut flushes: Vec<Flush> = Vec::new();
        for (key, members) in groups {
            let last = plan.groups.get(key).copied();
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
                    ReceiverKind::Webhook(g) => {
                        let labels = key_of(members[0]).1;
                        vec![webhook::body(r, g, key, labels, &body)]
                    }
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
            let what = key.strip_prefix("{}:").unwrap_or(key);
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
            flushes.push(Flush {
                receiver: r.name.clone(),
                kind: r.kind.as_str().to_string(),
                group_key: key.to_string(),
                group_empty: forget.len() == members.len(),
                bodies: bodies.into_iter().map(|b| (b, summary.clone())).collect(),
                sent: body
                    .iter()
                    .map(|a| (a.fingerprint.clone(), a.seq))
                    .collect(),
                forget,
                now_ms,
            });
        }
        plan.next_ms = min_opt(plan.next_ms, next);
        // Every due group of the pass in one transaction: an alarm storm
        // costs one commit per pass, not one per group.
        for (f, ids) in flushes.iter().zip(self.store.flush_groups(&flushes).await?) {
            if !ids.is_empty() {
                built = true;
                tracing::debug!(receiver = %r.name, group = %f.group_key, deliveries = ?ids, "notification built");
            }
            plan.apply(f);
        }
        if !flushes.is_empty() {
            // Decide again on the state just written (repeats, what is
            // left), at once.
            next = Some(now_ms);
        }
        // A pass that decided only some groups still wakes for the others'
        // timers.
        Ok((built, min_opt(next, plan.next_ms)))
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

/// What the planner holds of one receiver between passes (see
/// [`Inner::plan_receiver`]): the store's `notify_alerts` and
/// `notify_groups` rows as last read and as its own flushes changed them.
#[derive(Debug, Default)]
struct ReceiverPlan {
    /// fingerprint → (group key, alert).
    alerts: HashMap<String, (String, AlertState)>,
    /// group key → last flush (ms).
    groups: HashMap<String, i64>,
    /// When everything was last read; None: read it at the next pass.
    full_at: Option<i64>,
    /// The earliest timer of a group (ms): everything is read again then.
    next_ms: Option<i64>,
    /// Groups flushed by the last pass, decided again at the next.
    redo: HashSet<String>,
}

impl ReceiverPlan {
    /// What a committed flush changed in the store, in memory too.
    fn apply(&mut self, f: &Flush) {
        for (fp, seq) in &f.sent {
            if let Some((_, a)) = self.alerts.get_mut(fp).filter(|(_, a)| a.seq == *seq) {
                a.sent_seq = Some(*seq);
            }
        }
        for (fp, seq) in &f.forget {
            if self.alerts.get(fp).is_some_and(|(_, a)| a.seq == *seq) {
                self.alerts.remove(fp);
            }
        }
        if f.group_empty {
            self.groups.remove(&f.group_key);
        } else if !f.bodies.is_empty() {
            self.groups.insert(f.group_key.clone(), f.now_ms);
        }
        self.redo.insert(f.group_key.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::notify::{AlertNotice, NotifySection};
    use crate::store::DeliveryFilter;

    fn notice(instance: &str, status: AlertStatus, at: i64) -> AlertNotice {
        let labels: BTreeMap<String, String> = [("alertname", "disk"), ("instance", instance)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AlertNotice {
            fingerprint: format!("fp-{instance}"),
            status,
            labels,
            annotations: BTreeMap::new(),
            starts_at: 1_000,
            ends_at: (status == AlertStatus::Resolved).then_some(at),
            generator_url: String::new(),
        }
    }

    /// (status, [(instance, status)]) of every delivery, oldest first.
    async fn sent(store: &Store) -> Vec<(String, Vec<(String, String)>)> {
        let mut d = store
            .deliveries(&DeliveryFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        d.reverse();
        d.iter()
            .map(|d| {
                let alerts = d.payload["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        (
                            a["labels"]["instance"].as_str().unwrap().to_string(),
                            a["status"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                (d.payload["status"].as_str().unwrap().to_string(), alerts)
            })
            .collect()
    }

    fn pair(i: &str, s: &str) -> (String, String) {
        (i.to_string(), s.to_string())
    }

    #[tokio::test]
    async fn a_pass_woken_by_a_notice_groups_it_with_the_alerts_already_known() {
        let (store, _dir) = crate::store::temp_store().await;
        let store = Arc::new(store);
        let clock = ManualClock::at(1_000);
        #[derive(serde::Deserialize)]
        struct F {
            notify: Vec<NotifySection>,
        }
        let f: F = toml::from_str(
            "[[notify]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             group_wait = \"10s\"\ngroup_interval = \"1s\"\nrepeat_interval = \"1h\"\n",
        )
        .unwrap();
        let r = Receiver::parse_all(&f.notify).unwrap().remove(0);
        store
            .sync_receivers(&[("ops".into(), "webhook".into())], clock.now_ms())
            .await
            .unwrap();
        let lane = Lane {
            name: r.name.clone(),
            retry: r.retry,
            sender: sender_for(&reqwest::Client::new(), &r),
            plan: Some((r.clone(), Timing::of(&r.kind))),
            wake: Notify::new(),
        };
        let inner = Inner {
            store: store.clone(),
            lanes: Vec::new(),
            clock: Arc::new(clock.clone()),
            metrics: Arc::default(),
            plan: Arc::default(),
            slots: Semaphore::new(1),
        };
        let mut plan = ReceiverPlan::default();
        let now = |c: &ManualClock| c.now_ms();

        store
            .enqueue_alerts_for_test(&[notice("a", AlertStatus::Firing, 1_000)], now(&clock))
            .await;
        let (built, next) = inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert!(!built, "group_wait holds the first notification");
        assert_eq!(next, Some(1_010_000));
        assert!(sent(&store).await.is_empty());

        clock.set(1_010);
        let (built, _) = inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert!(built);
        inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert_eq!(
            sent(&store).await,
            [("firing".into(), vec![pair("a", "firing")])]
        );
        let full_at = plan.full_at;

        // A second alert of the group: the pass reads only it, and the
        // notification still carries the first one (Alertmanager sends the
        // whole group).
        clock.set(1_020);
        store
            .enqueue_alerts_for_test(&[notice("b", AlertStatus::Firing, 1_020)], now(&clock))
            .await;
        let (built, _) = inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert!(built);
        assert_eq!(plan.full_at, full_at, "a notice made a full read");
        inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert_eq!(
            sent(&store).await[1],
            (
                "firing".into(),
                vec![pair("a", "firing"), pair("b", "firing")]
            )
        );

        // The first resolves: told once, with the other still firing, then
        // forgotten.
        clock.set(1_030);
        store
            .enqueue_alerts_for_test(&[notice("a", AlertStatus::Resolved, 1_030)], now(&clock))
            .await;
        inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert_eq!(plan.full_at, full_at);
        let all = sent(&store).await;
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(
            all[2],
            (
                "firing".into(),
                vec![pair("a", "resolved"), pair("b", "firing")]
            )
        );
        assert_eq!(store.receiver_alerts("ops").await.unwrap().len(), 1);

        // Nothing changes for an hour: the repeat timer reads everything
        // again and sends the one still firing.
        clock.set(1_030 + 3_599);
        let (built, _) = inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert!(!built, "repeated before repeat_interval");
        assert_eq!(sent(&store).await.len(), 3);
        clock.set(1_030 + 3_600);
        let (built, _) = inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert!(built);
        assert_ne!(plan.full_at, full_at, "the timer made no full read");
        assert_eq!(
            sent(&store).await[3],
            ("firing".into(), vec![pair("b", "firing")])
        );
        inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();

        // An alert of another group: the passes that decide only that group
        // still wake for the first group's repeat (due at 4 630 + 3 600 s),
        // which comes before the new group's own (4 641 + 3 600 s).
        clock.set(4_631);
        let mut cpu = notice("c", AlertStatus::Firing, 4_631);
        cpu.labels.insert("alertname".into(), "cpu".into());
        cpu.fingerprint = "fp-cpu".into();
        store.enqueue_alerts_for_test(&[cpu], now(&clock)).await;
        inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        clock.set(4_641);
        let (built, _) = inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert!(built, "the new group was not sent after its group_wait");
        let (_, next) = inner
            .plan_receiver(&lane, &mut plan, now(&clock))
            .await
            .unwrap();
        assert_eq!(
            next,
            Some(8_230_000),
            "the other group's repeat is forgotten"
        );
    }
}
