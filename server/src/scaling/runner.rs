//! The scaling task: subscribed to the event bus, it judges a group's
//! policies when the group recorder publishes a round (never by polling),
//! follows members through host changes (healing, membership events), and
//! commits each event with its hooks' outbox rows in one transaction, then
//! wakes those hooks' lanes.
//!
//! Where the value comes from: the group's own recorded series
//! `metric{agg="…"}` at the round (the recorder's aggregate over the live
//! members). When a member of the group is in the policy's `warmup`, that
//! recorded aggregate includes it, so the runner computes the aggregate
//! itself, as the recorder does (each live member's latest value, not older
//! than the liveness timeout), from the members that are out of warmup.
//! The dry-run reads the recorded series only, so it cannot leave warming
//! members out (docs/scaling.md says so).
//!
//! A lag on the bus (the ring overflowed) costs the rounds missed; members
//! are read again from the store, and changes missed are applied as if
//! heard. Cooldowns and heal waits resume from the stored events at start.

use super::eval::RoundInput;
use super::event::ScalingEvent;
use super::hook::{EventType, Hook};
use super::policy::{self, Policy};
use super::scaler::{Member, Scaler};
use crate::clock::SharedClock;
use crate::events::{Envelope, Event, HostChange};
use crate::notify::worker::LaneWake;
use crate::query::Agg;
use crate::store::{HookDelivery, HostFilter, HostState, Store};
use crate::telemetry::ServerMetrics;
use metrolog_protocol::Labels;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Events kept for a retry when a commit failed, at most.
pub const MAX_RETRY_EVENTS: usize = 10_000;
/// Stored events are kept this long by default…
pub const KEEP_EVENTS: Duration = Duration::from_secs(90 * 86400);
/// …and at most this many.
pub const KEEP_EVENT_ROWS: i64 = 100_000;

/// Requests to the runner (from the API).
#[derive(Debug)]
pub enum Command {
    /// Policies changed in the store: read them again.
    Reload { reply: oneshot::Sender<()> },
}

/// The API's way to the runner.
#[derive(Debug, Clone)]
pub struct ScalingHandle {
    tx: mpsc::Sender<Command>,
}

impl ScalingHandle {
    pub fn channel() -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(16);
        (Self { tx }, rx)
    }

    /// Tells the runner policies changed; returns once applied.
    pub async fn reload(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Reload { reply }).await.is_ok()
            && tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .is_err()
        {
            tracing::warn!("the scaling runner did not take the reload within 10 s; it applies it when it catches up");
        }
    }
}

/// Every policy in force: the file's, then the API's (a stored policy that
/// no longer parses, or whose name the file took since, is left out).
pub async fn all_policies(store: &Store, file: &[Policy], base_step: i64) -> Vec<Policy> {
    let mut out = file.to_vec();
    match store.api_policies().await {
        Ok(stored) => {
            for s in stored {
                match policy::parse_stored(&s.definition, base_step) {
                    Ok(p) if !out.iter().any(|f| f.name == p.name) => out.push(p),
                    Ok(_) => {
                        tracing::warn!(policy = %s.name, "an API policy has the name of a file policy; the file's wins")
                    }
                    Err(e) => {
                        tracing::error!(policy = %s.name, errors = ?e, "a stored policy no longer parses; it is not evaluated")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the API's scaling policies"),
    }
    out
}

/// Which hooks want which events: the outbox rows of `events`.
pub fn deliveries(hooks: &[Hook], events: &[ScalingEvent]) -> Vec<HookDelivery> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Some(t) = e.event_type() else { continue };
        for h in hooks.iter().filter(|h| h.wants(t, &e.group)) {
            out.push(HookDelivery {
                event: i,
                hook: h.name.clone(),
                kind: h.kind().to_string(),
            });
        }
    }
    out
}

/// What the task needs.
pub struct Runner {
    pub store: Arc<Store>,
    pub clock: SharedClock,
    pub metrics: Arc<ServerMetrics>,
    pub file_policies: Vec<Policy>,
    pub hooks: Vec<Hook>,
    pub base_step: i64,
    /// Member values older than this do not count (the liveness timeout).
    pub staleness: i64,
    pub keep_events: Duration,
    /// `[scaling] max_event_members`.
    pub max_event_members: usize,
    pub wake: LaneWake,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("policies", &self.file_policies.len())
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

#[derive(Default)]
struct Cache {
    owners: HashMap<String, i64>,
    series: HashMap<(i64, String, Labels), i64>,
}

fn member_of(h: &crate::store::HostRow) -> Option<Member> {
    Some(Member {
        hostname: h.hostname.clone(),
        instance_id: h.instance_id.clone(),
        group: h.group.clone()?,
        labels: h.labels.clone(),
        state: h.state,
        up_since: h.state_since,
    })
}

impl Runner {
    async fn reload(&self, scaler: &mut Scaler) {
        let policies = all_policies(&self.store, &self.file_policies, self.base_step).await;
        let last = self.store.last_scaling_events().await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the last scaling events; cooldowns start afresh");
            HashMap::new()
        });
        scaler.set_policies(policies, &last);
    }

    /// Members from the store; changes missed (after a lag) are applied as
    /// if heard.
    async fn load_members(&self, scaler: &mut Scaler, pending: &mut Vec<ScalingEvent>) {
        let hosts = match self.store.hosts(&HostFilter::default()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot read hosts for the scaling runner");
                return;
            }
        };
        let now_ms = self.clock.now_ms();
        let seen: Vec<i64> = hosts.iter().map(|h| h.id).collect();
        for id in scaler.member_ids() {
            if !seen.contains(&id) {
                scaler.on_host(id, HostChange::Removed, 0, None, now_ms);
            }
        }
        for h in &hosts {
            let Some(m) = member_of(h) else { continue };
            match scaler.member(h.id).map(|k| k.state) {
                None => scaler.set_member(h.id, m),
                Some(s) if s == h.state => {}
                Some(_) => {
                    let change = match h.state {
                        HostState::Up => HostChange::Up,
                        HostState::Down => HostChange::Down,
                        HostState::Left => HostChange::Left,
                    };
                    pending.extend(scaler.on_host(h.id, change, h.state_since, Some(m), now_ms));
                }
            }
        }
    }

    async fn owner(&self, cache: &mut Cache, group: &str) -> Option<i64> {
        if let Some(id) = cache.owners.get(group) {
            return Some(*id);
        }
        let id = self.store.group_owner(group).await.ok().flatten()?;
        cache.owners.insert(group.to_string(), id);
        Some(id)
    }

    /// The value of `owner`'s series `name{labels}` recorded at `ts`.
    async fn recorded(
        &self,
        cache: &mut Cache,
        owner: i64,
        name: &str,
        labels: Labels,
        ts: i64,
    ) -> Option<f64> {
        let key = (owner, name.to_string(), labels);
        let id = match cache.series.get(&key) {
            Some(id) => *id,
            None => {
                let id = self
                    .store
                    .series_id(owner, name, &key.2)
                    .await
                    .ok()
                    .flatten()?;
                cache.series.insert(key, id);
                id
            }
        };
        self.store
            .last_sample(id)
            .filter(|(at, v)| *at == ts && v.is_finite())
            .map(|(_, v)| v)
    }

    /// The aggregate without the members in warmup, as the recorder computes
    /// it (latest member values, not older than the liveness timeout).
    async fn without_warming(&self, p: &Policy, warming: &[i64], now: i64) -> Option<f64> {
        let series = self
            .store
            .group_member_series(&p.group, p.metric.as_str())
            .await
            .ok()?;
        let mut vals = Vec::new();
        for s in series {
            if !s.labels.is_empty() || warming.contains(&s.host_id) {
                continue;
            }
            if self
                .store
                .host(s.host_id)
                .await
                .ok()
                .flatten()
                .map(|h| h.state)
                != Some(HostState::Up)
            {
                continue;
            }
            if let Some((at, v)) = self.store.last_sample(s.id) {
                if at > now - self.staleness && at <= now && v.is_finite() {
                    vals.push(v);
                }
            }
        }
        if vals.is_empty() {
            return None;
        }
        Some(match p.aggregation {
            Agg::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
            Agg::Sum => vals.iter().sum(),
            Agg::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
            Agg::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    async fn on_round(
        &self,
        scaler: &mut Scaler,
        cache: &mut Cache,
        ts: i64,
        groups: &[String],
        out: &mut Vec<ScalingEvent>,
    ) {
        let now = self.clock.now();
        for i in 0..scaler.policies().len() {
            let p = scaler.policies()[i].clone();
            if !groups.contains(&p.group) {
                continue;
            }
            let Some(owner) = self.owner(cache, &p.group).await else {
                continue;
            };
            let size = self
                .recorded(
                    cache,
                    owner,
                    crate::groups::MEMBERS_SERIES,
                    Labels::new(),
                    ts,
                )
                .await
                .map(|v| v.max(0.0) as u32)
                .unwrap_or_else(|| scaler.live(&p.group));
            let warming = scaler.warming(&p, now);
            let value = if warming.is_empty() {
                self.recorded(cache, owner, p.metric.as_str(), p.series_labels(), ts)
                    .await
            } else {
                self.without_warming(&p, &warming, now).await
            };
            let (_, ev) = scaler.judge(
                i,
                RoundInput {
                    ts,
                    value,
                    current_size: size,
                },
                self.clock.now_ms(),
            );
            out.extend(ev);
        }
    }

    async fn commit(&self, pending: &mut Vec<ScalingEvent>) {
        if pending.is_empty() {
            return;
        }
        let rows = deliveries(&self.hooks, pending);
        match self
            .store
            .commit_scaling(pending, &rows, self.clock.now_ms())
            .await
        {
            Ok(()) => {
                for e in pending.iter() {
                    if let Some(t) = e.event_type() {
                        self.metrics.scaling.count(t);
                    }
                    tracing::info!(event = %e.id, kind = %e.kind, group = %e.group, desired = ?e.desired_size, "{}", e.reason);
                }
                let mut woken: Vec<&str> = rows.iter().map(|r| r.hook.as_str()).collect();
                woken.sort_unstable();
                woken.dedup();
                for h in woken {
                    (self.wake)(h);
                }
                pending.clear();
            }
            Err(e) => {
                self.metrics.scaling.commit_failures.inc();
                tracing::error!(error = %e, events = pending.len(), "scaling events not committed; retrying at the next tick");
                if pending.len() > MAX_RETRY_EVENTS {
                    let drop = pending.len() - MAX_RETRY_EVENTS;
                    pending.drain(..drop);
                }
            }
        }
    }

    /// Judges one bus event; what it makes happen joins `pending`.
    async fn on_event(
        &self,
        scaler: &mut Scaler,
        cache: &mut Cache,
        pending: &mut Vec<ScalingEvent>,
        env: &Envelope,
    ) {
        match &env.event {
            Event::Host(h) => {
                let fresh = match &h.info {
                    Some(i) => i.group.clone().map(|group| Member {
                        hostname: i.hostname.clone(),
                        instance_id: i.instance_id.clone(),
                        group,
                        labels: i.labels.clone(),
                        state: HostState::Up,
                        up_since: h.at,
                    }),
                    None if !scaler.knows(h.host_id) && h.change != HostChange::Removed => self
                        .store
                        .host(h.host_id)
                        .await
                        .ok()
                        .flatten()
                        .as_ref()
                        .and_then(member_of),
                    None => None,
                };
                pending.extend(scaler.on_host(
                    h.host_id,
                    h.change,
                    h.at,
                    fresh,
                    self.clock.now_ms(),
                ));
            }
            Event::GroupRound(r) => {
                self.on_round(scaler, cache, r.ts, &r.groups, pending).await;
            }
            Event::Samples(_) | Event::Checks(_) | Event::SeriesMeta(_) => {}
        }
    }

    /// After missing `n` bus events: members read again from the store.
    async fn resync(&self, scaler: &mut Scaler, pending: &mut Vec<ScalingEvent>, n: u64) {
        self.metrics.scaling.resyncs.inc();
        tracing::warn!(missed = n, "the scaling runner fell behind the event bus; re-reading members from the store (rounds missed are not judged)");
        self.load_members(scaler, pending).await;
    }

    /// Runs until `stop`.
    pub async fn run(self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        // Subscribe first, so nothing committed while loading is missed.
        let (mut rx, _) = self.store.bus().subscribe();
        let mut scaler = Scaler::new(Vec::new()).with_max_event_members(self.max_event_members);
        self.reload(&mut scaler).await;
        let mut pending = Vec::new();
        let mut cache = Cache::default();
        self.load_members(&mut scaler, &mut pending).await;
        self.commit(&mut pending).await;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_prune = tokio::time::Instant::now();
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(env) => {
                        self.on_event(&mut scaler, &mut cache, &mut pending, &env).await;
                        // What else is already waiting is judged now and
                        // committed with it: one transaction for a fleet's
                        // arrivals, not one per host (at 5 000 agents, one
                        // per event fell behind the bus).
                        for _ in 0..DRAIN_EVENTS {
                            match rx.try_recv() {
                                Ok(env) => {
                                    self.on_event(&mut scaler, &mut cache, &mut pending, &env)
                                        .await;
                                }
                                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                    self.resync(&mut scaler, &mut pending, n).await;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.commit(&mut pending).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.resync(&mut scaler, &mut pending, n).await;
                        self.commit(&mut pending).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick() => {
                    // A timer, not a poll: heals whose replacement is late.
                    pending.extend(scaler.heal_timeouts(self.clock.now(), self.clock.now_ms()));
                    self.commit(&mut pending).await;
                    if tokio::time::Instant::now() >= next_prune {
                        next_prune = tokio::time::Instant::now() + Duration::from_secs(3600);
                        let cutoff = self.clock.now_ms() - self.keep_events.as_millis() as i64;
                        match self.store.prune_scaling_events(cutoff, KEEP_EVENT_ROWS).await {
                            Ok(n) if n > 0 => tracing::info!(events = n, "old scaling events pruned"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot prune scaling events"),
                        }
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Reload { reply }) => {
                        self.reload(&mut scaler).await;
                        cache = Cache::default();
                        let _ = reply.send(());
                    }
                    None => {}
                },
                _ = stop.changed() => {
                    self.commit(&mut pending).await;
                    return;
                }
            }
        }
    }
}

/// Bus events judged after the one that woke the runner, before one commit.
const DRAIN_EVENTS: usize = 4096;

/// Counters of `/metrics`: events by type.
#[derive(Debug, Default)]
pub struct ScalingMetrics {
    counts: [crate::telemetry::Counter; 6],
    pub commit_failures: crate::telemetry::Counter,
    pub resyncs: crate::telemetry::Counter,
}

impl ScalingMetrics {
    pub fn count(&self, t: EventType) {
        if let Some(i) = EventType::ALL.iter().position(|x| *x == t) {
            self.counts[i].inc();
        }
    }

    pub fn get(&self, t: EventType) -> u64 {
        EventType::ALL
            .iter()
            .position(|x| *x == t)
            .map_or(0, |i| self.counts[i].get())
    }
}
