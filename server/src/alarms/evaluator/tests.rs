//! The evaluator's core driven by events and hand-set times: no sleeping,
//! no database.

use super::*;
use crate::config::FileConfig;
use crate::events::{ChecksCommitted, HostChanged, SampleSource};
use crate::logs::feed::LogEvent;
use crate::notify::AlertStatus;
use metrolog_protocol::nagios::{CheckName, CheckResult};
use metrolog_protocol::syslog::{LogRecord, LogSource};

const CTX: super::super::RuleContext = super::super::RuleContext {
    base_step: 10,
    liveness_timeout: 30,
};

fn evaluator(rules: &str) -> Evaluator {
    let cfg = FileConfig::parse(rules).unwrap();
    let rules = Rule::parse_all(&cfg.rules, CTX).unwrap();
    let mut ev = Evaluator::new(rules, 10);
    for (id, name, group) in [
        (1, "web-1", Some("web")),
        (2, "web-2", Some("web")),
        (3, "db-1", None),
    ] {
        ev.set_host(
            id,
            HostEntry {
                hostname: name.into(),
                group: group.map(str::to_string),
                owner_of: None,
                state: HostState::Up,
                last_seen: 0,
                passive: false,
            },
        );
    }
    ev.set_host(
        100,
        HostEntry {
            hostname: "web".into(),
            group: None,
            owner_of: Some("web".into()),
            state: HostState::Up,
            last_seen: 0,
            passive: true,
        },
    );
    ev
}

fn samples(host_id: i64, name: &str, labels: &[(&str, &str)], ts: i64, v: f64) -> Event {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Event::Samples(Arc::new(SamplesCommitted {
        host_id,
        source: SampleSource::Agent,
        series: vec![(
            SeriesKey::new(name, labels).unwrap(),
            vec![Bucket {
                ts,
                avg: v,
                min: v,
                max: v,
                last: v,
                count: 10,
            }],
        )],
    }))
}

fn notices(writes: &[AlarmWrite]) -> Vec<(AlertStatus, String)> {
    writes
        .iter()
        .flat_map(|w| w.effects.notices.iter())
        .map(|n| (n.status, n.labels["severity"].clone()))
        .collect()
}

fn state(ev: &Evaluator, rule: &str, subject: Subject) -> Option<(Status, bool)> {
    ev.alarms
        .get(&(rule.to_string(), subject))
        .map(|a| (a.state, a.hard))
}

const CPU_FOR: &str = r#"
[[rules]]
name = "cpu-high"
kind = "threshold"
metric = "cpu.busy_pct"
group = "web"
window = "10s"
critical = "~:90"
for = "30s"
"#;

#[test]
fn a_threshold_with_for_fires_exactly_when_the_pending_time_is_over_and_resolves() {
    let mut ev = evaluator(CPU_FOR);
    let mut all = Vec::new();
    for t in [100, 110, 120] {
        all.extend(ev.on_event(&samples(1, "cpu.busy_pct", &[], t, 95.0), t));
        all.extend(ev.on_tick(t + 5));
    }
    assert!(notices(&all).is_empty(), "pending for 25 s only");
    assert_eq!(state(&ev, "cpu-high", Subject::host(1)), None);
    // 30 s after the first breach (100), by the timer, between datapoints.
    all.extend(ev.on_tick(129));
    assert!(notices(&all).is_empty());
    all.extend(ev.on_tick(130));
    assert_eq!(notices(&all), [(AlertStatus::Firing, "critical".into())]);
    // Other hosts and other groups are not judged by it.
    let other = ev.on_event(&samples(3, "cpu.busy_pct", &[], 130, 99.0), 130);
    assert!(other.is_empty());
    let back = ev.on_event(&samples(1, "cpu.busy_pct", &[], 140, 20.0), 140);
    assert_eq!(notices(&back), [(AlertStatus::Resolved, "critical".into())]);
    let t = &back[0].effects.transitions[0];
    assert_eq!(
        (t.from, t.to, t.value),
        (Status::Critical, Status::Ok, Some(20.0))
    );
}

#[test]
fn m_of_n_fires_on_the_mth_breach_among_n() {
    let mut ev = evaluator(
        r#"
[[rules]]
name = "load"
kind = "threshold"
metric = "load.1m"
window = "10s"
warning = "~:4"
datapoints = "2/3"
"#,
    );
    let vals = [5.0, 1.0, 1.0, 5.0, 1.0, 5.0];
    let mut fired_at = None;
    for (i, v) in vals.iter().enumerate() {
        let t = 100 + 10 * i as i64;
        let w = ev.on_event(&samples(3, "load.1m", &[], t, *v), t);
        if !notices(&w).is_empty() && fired_at.is_none() {
            fired_at = Some(t);
        }
    }
    // [5,1,1] no; [1,1,5] no; [1,5,1] no; [5,1,5] yes: the sixth datapoint.
    assert_eq!(fired_at, Some(150));
}

#[test]
fn one_alarm_per_series_labels_and_the_labels_reach_the_notice() {
    let mut ev = evaluator(
        r#"
[[rules]]
name = "disk-full"
kind = "threshold"
metric = "disk.used_pct"
critical = "~:90"
"#,
    );
    let w1 = ev.on_event(
        &samples(3, "disk.used_pct", &[("mount", "/")], 100, 95.0),
        100,
    );
    let w2 = ev.on_event(
        &samples(3, "disk.used_pct", &[("mount", "/var")], 100, 50.0),
        100,
    );
    assert_eq!(notices(&w1).len(), 1);
    assert!(w2.is_empty());
    let n = &w1[0].effects.notices[0];
    assert_eq!(n.labels["mount"], "/");
    assert_eq!(n.labels["instance"], "db-1");
    assert_eq!(n.labels["alertname"], "disk-full");
}

#[test]
fn no_data_never_resolves_silently() {
    let mut ev = evaluator(
        r#"
[[rules]]
name = "cpu"
kind = "threshold"
metric = "cpu.busy_pct"
window = "10s"
critical = "~:90"
"#,
    );
    let w = ev.on_event(&samples(3, "cpu.busy_pct", &[], 100, 99.0), 100);
    assert_eq!(notices(&w).len(), 1);
    // Stale after max(window, 3 × step) + one step = 40 s.
    assert!(ev.on_tick(140).is_empty());
    let w = ev.on_tick(141);
    assert_eq!(
        state(&ev, "cpu", Subject::host(3)),
        Some((Status::Unknown, true))
    );
    assert_eq!(
        notices(&w),
        [
            (AlertStatus::Resolved, "critical".into()),
            (AlertStatus::Firing, "unknown".into())
        ]
    );
    assert!(ev.on_tick(150).is_empty(), "applied once per silence");
}

#[test]
fn sigkill_is_critical_after_the_timeout_and_sigterm_raises_nothing() {
    let mut ev = evaluator(
        r#"
[[rules]]
name = "host-down"
kind = "liveness"
timeout = "40s"
"#,
    );
    let down = |id, at, last_seen| {
        Event::Host(HostChanged {
            host_id: id,
            change: HostChange::Down,
            at,
            last_seen,
            info: None,
        })
    };
    // Marked down at 30 s of silence; the rule waits for its own 40 s.
    assert!(ev.on_event(&down(1, 130, 100), 130).is_empty());
    assert!(ev.on_tick(139).is_empty());
    let w = ev.on_tick(140);
    assert_eq!(notices(&w), [(AlertStatus::Firing, "critical".into())]);
    assert_eq!(w[0].alarm.output, "no report for 40 s (timeout 40 s)");
    // The other leaves gracefully: nothing.
    let left = Event::Host(HostChanged {
        host_id: 2,
        change: HostChange::Left,
        at: 140,
        last_seen: 140,
        info: None,
    });
    assert!(ev.on_event(&left, 140).is_empty());
    assert!(ev
        .on_tick(200)
        .iter()
        .all(|w| w.alarm.subject != Subject::host(2)));
    // The first comes back.
    let up = Event::Host(HostChanged {
        host_id: 1,
        change: HostChange::Up,
        at: 300,
        last_seen: 300,
        info: None,
    });
    let w = ev.on_event(&up, 300);
    assert_eq!(notices(&w), [(AlertStatus::Resolved, "critical".into())]);
}

#[test]
fn leaving_clears_the_hosts_alarms() {
    let mut ev = evaluator(CPU_FOR);
    for t in [100, 110, 120, 130] {
        ev.on_event(&samples(1, "cpu.busy_pct", &[], t, 99.0), t);
    }
    assert_eq!(
        state(&ev, "cpu-high", Subject::host(1)),
        Some((Status::Critical, true))
    );
    let left = Event::Host(HostChanged {
        host_id: 1,
        change: HostChange::Left,
        at: 135,
        last_seen: 135,
        info: None,
    });
    let w = ev.on_event(&left, 135);
    assert_eq!(notices(&w), [(AlertStatus::Resolved, "critical".into())]);
    assert_eq!(w[0].alarm.output, "host left");
    assert!(
        ev.on_tick(500).is_empty(),
        "no no-data alarm for a host that left"
    );
}

fn check(status: Status, attempt: u32, ts: i64) -> Event {
    Event::Checks(Arc::new(ChecksCommitted {
        host_id: 3,
        results: vec![CheckResult {
            name: CheckName::parse("disk_root").unwrap(),
            status,
            output: format!("DISK {status}"),
            long_output: String::new(),
            perfdata: String::new(),
            ts,
            duration_ms: 5,
            attempt,
            max_attempts: 3,
        }],
    }))
}

#[test]
fn a_check_goes_soft_then_hard_and_notifies_once_each_way() {
    let mut ev = evaluator("[[rules]]\nname = \"disk\"\nkind = \"check\"\ncheck = \"disk_root\"\n");
    let mut all = Vec::new();
    all.extend(ev.on_event(&check(Status::Critical, 1, 10), 10));
    assert_eq!(
        state(&ev, "disk", Subject::host(3)),
        Some((Status::Critical, false))
    );
    all.extend(ev.on_event(&check(Status::Critical, 2, 20), 20));
    assert!(notices(&all).is_empty());
    all.extend(ev.on_event(&check(Status::Critical, 3, 30), 30));
    assert_eq!(
        state(&ev, "disk", Subject::host(3)),
        Some((Status::Critical, true))
    );
    all.extend(ev.on_event(&check(Status::Ok, 1, 40), 40));
    assert_eq!(
        notices(&all),
        [
            (AlertStatus::Firing, "critical".into()),
            (AlertStatus::Resolved, "critical".into())
        ]
    );
    let moves: Vec<_> = all
        .iter()
        .flat_map(|w| &w.effects.transitions)
        .map(|t| (t.from, t.to, t.hard))
        .collect();
    assert_eq!(
        moves,
        [
            (Status::Ok, Status::Critical, false),
            (Status::Critical, Status::Critical, true),
            (Status::Critical, Status::Ok, true)
        ]
    );
}

#[test]
fn a_silence_mutes_the_notice_and_it_is_sent_when_the_silence_ends() {
    let mut ev = evaluator("[[rules]]\nname = \"disk\"\nkind = \"check\"\ncheck = \"disk_root\"\n");
    let m = crate::alarms::silence::MatcherSpec {
        name: "host".into(),
        op: crate::alarms::silence::Op::Eq,
        value: "db-1".into(),
    };
    ev.set_silences(vec![Silence::parse(1, vec![m], 0, 100).unwrap()]);
    let w = ev.on_event(&check(Status::Critical, 3, 10), 10);
    assert!(notices(&w).is_empty());
    assert_eq!(ev.silenced, 1);
    assert!(notices(&ev.on_tick(99)).is_empty());
    assert_eq!(
        notices(&ev.on_tick(100)),
        [(AlertStatus::Firing, "critical".into())]
    );
}

#[test]
fn log_rules_count_matching_records_over_their_window() {
    let mut ev = evaluator(
        r#"
[[rules]]
name = "auth-failures"
kind = "log"
query = "Failed password"
app = "sshd"
window = "60s"
warning = "~:2"
"#,
    );
    let rec = |app: &str, msg: &str| LogEvent {
        id: None,
        host_id: Some(3),
        source: LogSource::Agent,
        record: LogRecord {
            app_name: Some(app.into()),
            ..LogRecord::whole(msg.into(), chrono::Utc::now())
        },
    };
    let batch = FeedBatch {
        seq: 0,
        events: vec![
            rec("sshd", "Failed password for root from 10.0.0.1"),
            rec("sshd", "Accepted password for bob"),
            rec("cron", "Failed password"),
            rec("sshd", "FAILED PASSWORD for admin"),
        ],
    };
    assert!(ev.on_logs(&batch, 100).is_empty(), "2 matches: not above 2");
    let one = FeedBatch {
        seq: 4,
        events: vec![rec("sshd", "Failed password for x")],
    };
    let w = ev.on_logs(&one, 110);
    assert_eq!(notices(&w), [(AlertStatus::Firing, "warning".into())]);
    assert_eq!(w[0].alarm.value, Some(3.0));
    // The first two age out of the 60 s window.
    let w = ev.on_tick(160);
    assert_eq!(notices(&w), [(AlertStatus::Resolved, "warning".into())]);
}

#[test]
fn a_group_rule_reads_the_groups_recorded_aggregate() {
    let mut ev = evaluator(
        r#"
[[rules]]
name = "web-cpu"
kind = "threshold"
metric = "cpu.busy_pct"
group = "web"
scope = "group"
aggregation = "avg"
critical = "~:80"
"#,
    );
    assert!(
        ev.on_event(&samples(1, "cpu.busy_pct", &[], 100, 99.0), 100)
            .is_empty(),
        "members are not judged"
    );
    assert!(ev
        .on_event(
            &samples(100, "cpu.busy_pct", &[("agg", "max")], 100, 99.0),
            100
        )
        .is_empty());
    let w = ev.on_event(
        &samples(100, "cpu.busy_pct", &[("agg", "avg")], 100, 85.0),
        100,
    );
    assert_eq!(notices(&w), [(AlertStatus::Firing, "critical".into())]);
    assert_eq!(w[0].alarm.subject, Subject::Group("web".into()));
    assert_eq!(w[0].effects.notices[0].labels["group"], "web");
}

#[test]
fn an_acknowledgement_needs_a_problem_and_removing_a_rule_resolves_its_alarms() {
    let mut ev = evaluator("[[rules]]\nname = \"disk\"\nkind = \"check\"\ncheck = \"disk_root\"\n");
    ev.on_event(&check(Status::Critical, 3, 10), 10);
    ev.set_alarm_id("disk", &Subject::host(3), 7);
    assert_eq!(
        ev.acknowledge(8, "ops", "", 11).unwrap_err(),
        AckError::NotFound
    );
    let w = ev.acknowledge(7, "ops", "disk ordered", 11).unwrap();
    assert!(w.effects.transitions[0]
        .note
        .contains("acknowledged by ops: disk ordered"));
    assert_eq!(w.effects.mute.len(), 1);
    let w = ev.set_rules(Vec::new(), 20);
    assert_eq!(notices(&w), [(AlertStatus::Resolved, "critical".into())]);
    assert!(ev.alarm(7).is_none());
}

#[test]
fn rules_are_met_by_the_hosts_and_groups_they_select() {
    let mut ev = evaluator(
        r#"
[[rules]]
name = "only-web-1"
kind = "threshold"
metric = "cpu.busy_pct"
host = "web-1"
critical = "~:90"

[[rules]]
name = "web-members"
kind = "threshold"
metric = "cpu.busy_pct"
group = "web"
critical = "~:90"

[[rules]]
name = "everyone"
kind = "threshold"
metric = "cpu.busy_pct"
critical = "~:90"

[[rules]]
name = "web-avg"
kind = "threshold"
metric = "cpu.busy_pct"
group = "web"
scope = "group"
aggregation = "avg"
critical = "~:90"
"#,
    );
    let host = |id| Subject::Host {
        id,
        series_labels: String::new(),
    };
    for id in [1, 2, 3] {
        ev.on_event(&samples(id, "cpu.busy_pct", &[], 100, 99.0), 100);
    }
    ev.on_event(
        &samples(100, "cpu.busy_pct", &[("agg", "avg")], 100, 99.0),
        100,
    );
    let fired = |rule: &str, s: Subject| state(&ev, rule, s).map(|(st, _)| st);
    assert_eq!(fired("only-web-1", host(1)), Some(Status::Critical));
    assert_eq!(fired("only-web-1", host(2)), None);
    assert_eq!(fired("web-members", host(2)), Some(Status::Critical));
    assert_eq!(fired("web-members", host(3)), None, "db-1 is not in web");
    assert_eq!(fired("everyone", host(3)), Some(Status::Critical));
    assert_eq!(
        fired("web-avg", Subject::Group("web".into())),
        Some(Status::Critical)
    );
    assert_eq!(
        fired("web-avg", host(1)),
        None,
        "a group rule judges the aggregate"
    );
    assert_eq!(
        fired("web-members", host(100)),
        None,
        "not the group's own row"
    );
}

const MUNIN_LIMITS: &str = r#"
[[rules]]
name = "munin-limits"
kind = "threshold"
metric = "munin.fixture.x"
window = "10s"
limits = "series"
"#;

fn series_meta(host_id: i64, name: &str, warning: Option<&str>, critical: Option<&str>) -> Event {
    Event::SeriesMeta(Arc::new(SeriesMetaCommitted {
        host_id,
        series: vec![(
            SeriesKey::new(name, Labels::new()).unwrap(),
            warning.map(str::to_string),
            critical.map(str::to_string),
        )],
    }))
}

#[test]
fn a_rule_with_series_limits_judges_each_series_by_its_own_munin_ranges() {
    let mut ev = evaluator(MUNIN_LIMITS);
    // Host 1's plugin says `x.warning 10`, `x.critical 5:20`; host 2's says nothing.
    assert!(ev
        .on_event(
            &series_meta(1, "munin.fixture.x", Some("10"), Some("5:20")),
            90
        )
        .is_empty());
    let mut all = ev.on_event(&samples(1, "munin.fixture.x", &[], 100, 8.0), 100);
    assert!(notices(&all).is_empty(), "8 is inside both ranges");
    all = ev.on_event(&samples(1, "munin.fixture.x", &[], 110, 15.0), 110);
    assert_eq!(notices(&all), [(AlertStatus::Firing, "warning".into())]);
    let out = &all[0].alarm.output;
    assert!(out.contains("(warning ~:10)"), "{out}");
    all = ev.on_event(&samples(1, "munin.fixture.x", &[], 120, 25.0), 120);
    assert_eq!(
        notices(&all).last(),
        Some(&(AlertStatus::Firing, "critical".into()))
    );
    // Below the lower bound of `5:20` is critical too; a bare `10` has none.
    all = ev.on_event(&samples(1, "munin.fixture.x", &[], 130, -3.0), 130);
    assert!(notices(&all).is_empty(), "still critical: {all:?}");
    assert_eq!(
        state(&ev, "munin-limits", Subject::host(1)).map(|s| s.0),
        Some(Status::Critical)
    );
    // A series without ranges (and a rule without its own) is never judged bad.
    let other = ev.on_event(&samples(2, "munin.fixture.x", &[], 130, 1e9), 130);
    assert!(notices(&other).is_empty());
    // The plugin's config changes: the new ranges judge the next value.
    ev.on_event(
        &series_meta(1, "munin.fixture.x", Some("-10:10"), None),
        135,
    );
    all = ev.on_event(&samples(1, "munin.fixture.x", &[], 140, 0.0), 140);
    assert_eq!(notices(&all), [(AlertStatus::Resolved, "critical".into())]);
    // A text that is no range is counted; the series falls back to none.
    ev.on_event(&series_meta(1, "munin.fixture.x", Some("lots"), None), 145);
    assert_eq!(ev.limits_unreadable, 1);
    all = ev.on_event(&samples(1, "munin.fixture.x", &[], 150, 1e6), 150);
    assert!(notices(&all).is_empty());
}

#[test]
fn series_limits_are_kept_only_for_metrics_a_series_rule_reads() {
    let mut ev = evaluator(CPU_FOR);
    ev.on_event(&series_meta(1, "cpu.busy_pct", Some("10"), None), 90);
    ev.on_event(&series_meta(1, "munin.other.y", Some("10"), None), 90);
    assert!(ev.limits.is_empty());
    let mut ev = evaluator(MUNIN_LIMITS);
    ev.on_event(&series_meta(1, "munin.fixture.x", Some("10"), None), 90);
    assert_eq!(ev.limits.len(), 1);
    ev.on_event(
        &Event::Host(HostChanged {
            host_id: 1,
            change: HostChange::Removed,
            at: 95,
            last_seen: 90,
            info: None,
        }),
        95,
    );
    assert!(ev.limits.is_empty(), "a removed host's ranges go with it");
}
