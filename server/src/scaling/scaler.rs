//! The pure core of the scaling runner: host changes and group rounds in,
//! [`ScalingEvent`]s out. It owns the members it knows (to count live
//! members, list them in events and tell who is in warmup), each policy's
//! [`PolicyState`], and the heals waiting for their replacements.
//!
//! **Healing**: a member going `down` that leaves fewer than `min_size` live
//! members fires `heal` at once (no cooldown), `desired_size = min_size`.
//! While the group waits for its replacements a heal is not repeated (the
//! event's `reason` says so); if the group is still short
//! `replacement_timeout` after, it fires again. A member that `left`
//! shrinks the group with no heal.
//!
//! **Membership**: `member_joined` (a member came `up`: enrolled, or back
//! from `down`/`left`), `member_left`, `member_down`, with the member's facts.

use super::eval::{Judged, PolicyState, RoundInput};
use super::event::{
    addresses, new_id, MemberFacts, MemberView, ScalingEvent, DEFAULT_MAX_EVENT_MEMBERS,
};
use super::hook::EventType;
use super::policy::{Direction, Policy};
use crate::events::HostChange;
use crate::store::HostState;
use metrolog_protocol::Labels;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A member as the scaler knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub hostname: String,
    pub instance_id: Option<String>,
    pub group: String,
    pub labels: Labels,
    pub state: HostState,
    /// When it last came `up` (warmup counts from here).
    pub up_since: i64,
}

/// A heal waiting for its replacements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealWait {
    pub fired_at: i64,
    pub deadline: i64,
}

#[derive(Debug, Default)]
pub struct Scaler {
    policies: Vec<Policy>,
    states: Vec<PolicyState>,
    members: HashMap<i64, Member>,
    /// Each group's members in the order events list them, and how many are
    /// up: every host change builds an event listing its group, and at
    /// 10 000 members a scan and sort of all members per change was a tenth
    /// of the server's CPU. Kept in step with `members` by `index`/`unindex`.
    by_group: HashMap<String, GroupMembers>,
    /// (group, policy) → the heal it waits on.
    heals: BTreeMap<(String, String), HealWait>,
    /// Most members an event lists (`[scaling] max_event_members`).
    max_event_members: usize,
}

/// A group's members: (not up first, then by hostname, then id) → listed.
#[derive(Debug, Default)]
struct GroupMembers {
    order: BTreeSet<(bool, String, i64)>,
    up: u32,
}

fn rfc3339(secs: i64) -> String {
    crate::notify::rfc3339(secs)
}

impl Scaler {
    pub fn new(policies: Vec<Policy>) -> Self {
        let states = vec![PolicyState::default(); policies.len()];
        Self {
            policies,
            states,
            max_event_members: DEFAULT_MAX_EVENT_MEMBERS,
            ..Default::default()
        }
    }

    /// Sets `[scaling] max_event_members`.
    pub fn with_max_event_members(mut self, n: usize) -> Self {
        self.max_event_members = n;
        self
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Replaces the policies; each starts afresh, with the times of its last
    /// events (`last[(policy, type)]`) so cooldowns and heal waits survive a
    /// restart or a reload.
    pub fn set_policies(&mut self, policies: Vec<Policy>, last: &HashMap<(String, String), i64>) {
        let get = |p: &Policy, t: &str| last.get(&(p.name.clone(), t.to_string())).copied();
        self.states = policies
            .iter()
            .map(|p| PolicyState::with_history(get(p, "scale_out"), get(p, "scale_in")))
            .collect();
        self.heals.clear();
        for p in &policies {
            if let Some(at) = get(p, "heal") {
                self.heals.insert(
                    (p.group.clone(), p.name.clone()),
                    HealWait {
                        fired_at: at,
                        deadline: at + p.replacement_timeout,
                    },
                );
            }
        }
        self.policies = policies;
    }

    pub fn set_member(&mut self, id: i64, m: Member) {
        self.unindex(id);
        self.members.insert(id, m);
        self.index(id);
    }

    /// Takes member `id` out of its group's index (before a change to it).
    fn unindex(&mut self, id: i64) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let up = m.state == HostState::Up;
        if let Some(g) = self.by_group.get_mut(&m.group) {
            if g.order.remove(&(up, m.hostname.clone(), id)) && up {
                g.up -= 1;
            }
            if g.order.is_empty() {
                self.by_group.remove(&m.group);
            }
        }
    }

    /// Puts member `id` into its group's index (after a change to it).
    fn index(&mut self, id: i64) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let up = m.state == HostState::Up;
        let g = self.by_group.entry(m.group.clone()).or_default();
        if g.order.insert((up, m.hostname.clone(), id)) && up {
            g.up += 1;
        }
    }

    pub fn knows(&self, id: i64) -> bool {
        self.members.contains_key(&id)
    }

    pub fn live(&self, group: &str) -> u32 {
        self.by_group.get(group).map_or(0, |g| g.up)
    }

    /// Live members of `group` still in the warmup of policy `p` at `now`.
    pub fn warming(&self, p: &Policy, now: i64) -> Vec<i64> {
        if p.warmup <= 0 {
            return Vec::new();
        }
        self.members
            .iter()
            .filter(|(_, m)| {
                m.group == p.group && m.state == HostState::Up && now - m.up_since < p.warmup
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The members an event lists (at most `max_event_members`, those not
    /// up first, then by hostname) and how many the group has.
    fn members_of(&self, group: &str) -> (Vec<MemberView>, u32) {
        let Some(g) = self.by_group.get(group) else {
            return (Vec::new(), 0);
        };
        let list = g
            .order
            .iter()
            .take(self.max_event_members)
            .filter_map(|(_, _, id)| self.members.get(id))
            .map(|m| MemberView {
                hostname: m.hostname.clone(),
                instance_id: m.instance_id.clone(),
                state: m.state.as_str().to_string(),
            })
            .collect();
        (list, g.order.len() as u32)
    }

    fn blank(&self, kind: EventType, group: &str, at: i64, now_ms: i64) -> ScalingEvent {
        let (members, members_total) = self.members_of(group);
        ScalingEvent {
            id: new_id(now_ms),
            kind: kind.as_str().to_string(),
            group: group.to_string(),
            policy: None,
            metric: None,
            aggregation: None,
            value: None,
            threshold: None,
            current_size: self.live(group),
            desired_size: None,
            min_size: None,
            max_size: None,
            members,
            members_total,
            member: None,
            at: rfc3339(at),
            reason: String::new(),
        }
    }

    /// A host changed. `fresh` carries its facts when the scaler did not
    /// know it (the runner reads them from the store).
    pub fn on_host(
        &mut self,
        id: i64,
        change: HostChange,
        at: i64,
        fresh: Option<Member>,
        now_ms: i64,
    ) -> Vec<ScalingEvent> {
        let mut out = Vec::new();
        let before = self.members.get(&id).map(|m| m.state);
        if let Some(m) = fresh {
            self.unindex(id);
            let known = self.members.entry(id).or_insert(m.clone());
            // Facts refresh; the state is the change's.
            known.hostname = m.hostname;
            known.instance_id = m.instance_id;
            known.labels = m.labels;
            known.group = m.group;
            self.index(id);
        }
        let Some(group) = self.members.get(&id).map(|m| m.group.clone()) else {
            return out;
        };
        let (kind, state) = match change {
            HostChange::Up => (EventType::MemberJoined, HostState::Up),
            HostChange::Down => (EventType::MemberDown, HostState::Down),
            HostChange::Left => (EventType::MemberLeft, HostState::Left),
            HostChange::Removed => {
                self.unindex(id);
                self.members.remove(&id);
                return out;
            }
        };
        if before == Some(state) {
            // Re-enrolled while up, a second `down`: nothing changed.
            return out;
        }
        self.unindex(id);
        if let Some(m) = self.members.get_mut(&id) {
            m.state = state;
            if state == HostState::Up {
                m.up_since = at;
            }
        }
        self.index(id);
        let m = self.members[&id].clone();
        let mut ev = self.blank(kind, &group, at, now_ms);
        ev.member = Some(MemberFacts {
            hostname: m.hostname.clone(),
            instance_id: m.instance_id.clone(),
            state: state.as_str().to_string(),
            addresses: addresses(&m.labels),
            labels: m.labels.clone(),
        });
        ev.reason = match change {
            HostChange::Up => format!("{} is up in group {group}", m.hostname),
            HostChange::Down => format!("{} stopped reporting (liveness timeout)", m.hostname),
            _ => format!("{} left the group gracefully", m.hostname),
        };
        out.push(ev);
        let live = self.live(&group);
        match change {
            HostChange::Up => {
                let policies = &self.policies;
                self.heals.retain(|(g, p), _| {
                    g != &group
                        || policies
                            .iter()
                            .find(|x| &x.name == p)
                            .is_some_and(|p| live < p.min_size)
                });
            }
            HostChange::Down => {
                let now = at;
                for p in self.policies.clone() {
                    if p.group != group || live >= p.min_size {
                        continue;
                    }
                    let key = (group.clone(), p.name.clone());
                    if self.heals.get(&key).is_some_and(|w| now < w.deadline) {
                        continue;
                    }
                    self.heals.insert(
                        key,
                        HealWait {
                            fired_at: now,
                            deadline: now + p.replacement_timeout,
                        },
                    );
                    let reason = format!(
                        "{} went down: {live} live member(s), fewer than min_size {}; heal to {}. Not repeated while the group waits for its replacements, fired again if still short after {} s (replacement_timeout)",
                        m.hostname, p.min_size, p.min_size, p.replacement_timeout
                    );
                    out.push(self.heal(&p, live, now, reason, now_ms));
                }
            }
            _ => {}
        }
        out
    }

    fn heal(&self, p: &Policy, live: u32, at: i64, reason: String, now_ms: i64) -> ScalingEvent {
        let mut ev = self.blank(EventType::Heal, &p.group, at, now_ms);
        ev.policy = Some(p.name.clone());
        ev.current_size = live;
        ev.desired_size = Some(p.min_size);
        ev.min_size = Some(p.min_size);
        ev.max_size = Some(p.max_size);
        ev.reason = reason;
        ev
    }

    /// Heals whose replacement did not arrive in time, fired again.
    pub fn heal_timeouts(&mut self, now: i64, now_ms: i64) -> Vec<ScalingEvent> {
        let mut out = Vec::new();
        let due: Vec<(String, String)> = self
            .heals
            .iter()
            .filter(|(_, w)| now >= w.deadline)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(p) = self.policies.iter().find(|p| p.name == key.1).cloned() else {
                self.heals.remove(&key);
                continue;
            };
            let live = self.live(&p.group);
            if live >= p.min_size {
                self.heals.remove(&key);
                continue;
            }
            let waited = now - self.heals[&key].fired_at;
            self.heals.insert(
                key,
                HealWait {
                    fired_at: now,
                    deadline: now + p.replacement_timeout,
                },
            );
            let reason = format!(
                "the replacement did not arrive within {} s (replacement_timeout; waited {waited} s): {live} live member(s), fewer than min_size {}; heal to {} again",
                p.replacement_timeout, p.min_size, p.min_size
            );
            out.push(self.heal(&p, live, now, reason, now_ms));
        }
        out
    }

    /// Judges policy `i` at a round of its group.
    pub fn judge(
        &mut self,
        i: usize,
        r: RoundInput,
        now_ms: i64,
    ) -> (Judged, Option<ScalingEvent>) {
        let p = &self.policies[i];
        let judged = self.states[i].judge(p, r);
        let ev = judged.decision.as_ref().map(|d| {
            let kind = match d.direction {
                Direction::Out => EventType::ScaleOut,
                Direction::In => EventType::ScaleIn,
            };
            let mut ev = self.blank(kind, &p.group, d.ts, now_ms);
            ev.policy = Some(p.name.clone());
            ev.metric = Some(p.metric.as_str().to_string());
            ev.aggregation = Some(p.aggregation.as_str().to_string());
            ev.value = Some(d.value);
            ev.threshold = Some(d.threshold);
            ev.current_size = d.current_size;
            ev.desired_size = Some(d.desired_size);
            ev.min_size = Some(p.min_size);
            ev.max_size = Some(p.max_size);
            ev.reason = d.reason.clone();
            ev
        });
        (judged, ev)
    }

    /// Hosts the scaler knows, for a resync after a lag.
    pub fn member_ids(&self) -> Vec<i64> {
        self.members.keys().copied().collect()
    }

    pub fn member(&self, id: i64) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn waiting(&self, group: &str, policy: &str) -> Option<HealWait> {
        self.heals
            .get(&(group.to_string(), policy.to_string()))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn policy(extra: &str) -> Policy {
        crate::scaling::policy::test_policy("web-load", "app.load", extra)
    }

    fn member(name: &str, since: i64) -> Member {
        Member {
            hostname: name.into(),
            instance_id: Some(format!("i-{name}")),
            group: "web".into(),
            labels: Labels::from([("local_ipv4".to_string(), "10.0.0.7".to_string())]),
            state: HostState::Up,
            up_since: since,
        }
    }

    fn fleet(clock: &ManualClock, p: Policy) -> Scaler {
        let mut s = Scaler::new(Vec::new());
        s.set_policies(vec![p], &HashMap::new());
        for i in 1..=4 {
            s.set_member(i, member(&format!("web-{i}"), clock.now() - 3600));
        }
        s
    }

    fn kinds(evs: &[ScalingEvent]) -> Vec<&str> {
        evs.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn the_group_index_agrees_with_the_members_through_every_change() {
        // Hosts join, go down, come back, leave, move between groups (facts
        // refreshed) and are removed; after each change the listed members
        // and the live count are what a scan of all members gives.
        let mut s = Scaler::new(Vec::new()).with_max_event_members(5);
        let mut x: u64 = 7;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for step in 0..3000 {
            let id = next(40) as i64;
            let group = ["web", "db", "cache"][next(3) as usize];
            let change = match next(4) {
                0 => HostChange::Up,
                1 => HostChange::Down,
                2 => HostChange::Left,
                _ if step % 7 == 0 => HostChange::Removed,
                _ => HostChange::Up,
            };
            let mut m = member(&format!("h-{}", next(25)), step);
            m.group = group.into();
            let fresh = (next(2) == 0 || !s.knows(id)).then_some(m);
            s.on_host(id, change, step, fresh, step * 1000);
            for g in ["web", "db", "cache"] {
                let mut all: Vec<(&i64, &Member)> =
                    s.members.iter().filter(|(_, m)| m.group == g).collect();
                all.sort_by(|(ia, a), (ib, b)| {
                    (a.state == HostState::Up)
                        .cmp(&(b.state == HostState::Up))
                        .then_with(|| a.hostname.cmp(&b.hostname))
                        .then_with(|| ia.cmp(ib))
                });
                let want: Vec<(String, String)> = all
                    .iter()
                    .take(5)
                    .map(|(_, m)| (m.hostname.clone(), m.state.as_str().to_string()))
                    .collect();
                let (listed, total) = s.members_of(g);
                let got: Vec<(String, String)> =
                    listed.into_iter().map(|v| (v.hostname, v.state)).collect();
                assert_eq!(got, want, "group {g} after step {step}");
                assert_eq!(total as usize, all.len(), "group {g} after step {step}");
                let up = all.iter().filter(|(_, m)| m.state == HostState::Up).count();
                assert_eq!(s.live(g) as usize, up, "group {g} after step {step}");
            }
        }
    }

    #[test]
    fn a_large_group_s_events_list_the_members_that_matter_not_all_of_them() {
        // A fleet's arrival is one event per member: listing every member in
        // each made the stored events grow as the square of the fleet
        // (3 000 agents: 340 MB of member_joined bodies).
        let clock = ManualClock::at(10_000);
        let mut s = Scaler::new(Vec::new());
        for i in 0..3000 {
            s.set_member(i, member(&format!("web-{i:04}"), clock.now()));
        }
        s.on_host(2999, HostChange::Down, clock.now(), None, clock.now_ms());
        let e = s.on_host(7, HostChange::Left, clock.now(), None, clock.now_ms());
        assert_eq!(kinds(&e), ["member_left"]);
        let ev = &e[0];
        assert_eq!(ev.members_total, 3000);
        assert_eq!(ev.members.len(), DEFAULT_MAX_EVENT_MEMBERS);
        let names: Vec<&str> = ev.members.iter().map(|m| m.hostname.as_str()).collect();
        // Those not up first (by name), then the up ones by name.
        assert_eq!(
            &names[..4],
            ["web-0007", "web-2999", "web-0000", "web-0001"]
        );
        assert_eq!(ev.members[0].state, "left");
        assert_eq!(ev.members[1].state, "down");
        assert!(serde_json::to_vec(ev).unwrap().len() < 10_000);
        // A small group is listed whole.
        let mut s = fleet(&clock, policy(""));
        let e = s.on_host(1, HostChange::Down, clock.now(), None, clock.now_ms());
        assert_eq!((e[0].members.len(), e[0].members_total), (4, 4));
        // `[scaling] max_event_members` sets the cap.
        let mut s = fleet(&clock, policy("")).with_max_event_members(2);
        let e = s.on_host(3, HostChange::Down, clock.now(), None, clock.now_ms());
        let names: Vec<&str> = e[0].members.iter().map(|m| m.hostname.as_str()).collect();
        assert_eq!((names, e[0].members_total), (vec!["web-3", "web-1"], 4));
    }

    #[test]
    fn two_members_down_heal_once_then_again_after_the_replacement_timeout() {
        let clock = ManualClock::at(10_000);
        let mut s = fleet(&clock, policy("replacement_timeout = \"5m\""));
        let t = clock.now();
        let e = s.on_host(1, HostChange::Down, t, None, clock.now_ms());
        assert_eq!(kinds(&e), ["member_down"], "3 live: not below min_size");
        let e = s.on_host(2, HostChange::Down, t, None, clock.now_ms());
        assert_eq!(kinds(&e), ["member_down", "heal"]);
        let heal = &e[1];
        assert_eq!((heal.current_size, heal.desired_size), (2, Some(3)));
        assert!(
            heal.reason.contains("Not repeated while the group waits"),
            "{}",
            heal.reason
        );
        assert_eq!(heal.members.len(), 4);
        let down = e[0].member.as_ref().unwrap();
        assert_eq!(down.addresses, ["10.0.0.7"]);
        // A third member down while waiting: no second heal.
        clock.advance(60);
        let e = s.on_host(3, HostChange::Down, clock.now(), None, clock.now_ms());
        assert_eq!(kinds(&e), ["member_down"]);
        assert!(s.heal_timeouts(clock.now(), clock.now_ms()).is_empty());
        // Still short 5 min after the heal: fired again.
        clock.set(10_000 + 300);
        let e = s.heal_timeouts(clock.now(), clock.now_ms());
        assert_eq!(kinds(&e), ["heal"]);
        assert_eq!(e[0].current_size, 1);
        assert!(
            e[0].reason.contains("did not arrive within 300 s"),
            "{}",
            e[0].reason
        );
        // Replacements arrive: the wait ends, nothing more fires.
        for id in [5, 6] {
            let e = s.on_host(
                id,
                HostChange::Up,
                clock.now(),
                Some(member(&format!("web-{id}"), 0)),
                clock.now_ms(),
            );
            assert_eq!(kinds(&e), ["member_joined"]);
        }
        assert_eq!(s.live("web"), 3);
        assert!(s.waiting("web", "web-load").is_none());
        clock.advance(3600);
        assert!(s.heal_timeouts(clock.now(), clock.now_ms()).is_empty());
    }

    #[test]
    fn a_graceful_leave_shrinks_the_group_without_a_heal() {
        let clock = ManualClock::at(10_000);
        let mut s = fleet(&clock, policy("min_size = 4"));
        let e = s.on_host(4, HostChange::Left, clock.now(), None, clock.now_ms());
        assert_eq!(kinds(&e), ["member_left"]);
        assert_eq!(s.live("web"), 3);
        // A re-enrollment of an up member is not a join.
        let e = s.on_host(
            1,
            HostChange::Up,
            clock.now(),
            Some(member("web-1", 0)),
            clock.now_ms(),
        );
        assert!(e.is_empty());
    }

    #[test]
    fn new_members_are_in_warmup_for_its_length() {
        let clock = ManualClock::at(10_000);
        let p = policy("warmup = \"2m\"");
        let mut s = fleet(&clock, p.clone());
        s.on_host(
            9,
            HostChange::Up,
            clock.now(),
            Some(member("web-9", 0)),
            clock.now_ms(),
        );
        assert_eq!(s.warming(&p, clock.now() + 119), vec![9]);
        assert!(s.warming(&p, clock.now() + 120).is_empty());
    }

    #[test]
    fn scale_events_carry_the_policy_and_the_round() {
        let clock = ManualClock::at(10_000);
        let mut s = fleet(&clock, policy("scale_out_above = 75\nscale_in_below = 25"));
        let r = |ts, v| RoundInput {
            ts,
            value: Some(v),
            current_size: 4,
        };
        let (j, e) = s.judge(0, r(10_000, 90.0), clock.now_ms());
        assert_eq!(j.aggregate, Some(90.0));
        let e = e.unwrap();
        assert_eq!(e.kind, "scale_out");
        assert_eq!((e.current_size, e.desired_size), (4, Some(5)));
        assert_eq!(e.threshold, Some(75.0));
        assert_eq!(e.at, "1970-01-01T02:46:40Z");
        // Cooldown (default 300 s) holds the next one.
        assert!(s.judge(0, r(10_010, 95.0), clock.now_ms()).1.is_none());
        // The last events survive a reload.
        let last = HashMap::from([(("web-load".to_string(), "scale_out".to_string()), 10_000)]);
        s.set_policies(s.policies().to_vec(), &last);
        assert!(s.judge(0, r(10_020, 95.0), clock.now_ms()).1.is_none());
        assert!(s.judge(0, r(10_300, 95.0), clock.now_ms()).1.is_some());
    }
}
