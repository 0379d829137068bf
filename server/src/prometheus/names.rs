//! How Metrolog's series look to a Prometheus client: `__name__` is the series
//! name with `.` (and any other character Prometheus does not allow) as `_`
//! (`cpu.busy_pct` → `cpu_busy_pct`); the labels are the series' own plus
//! `host`, `group` and `instance_id` of the host that owns it. A group's own
//! series (docs/groups.md) carry `group` and no `host`.

use crate::store::CatalogRow;
use std::collections::BTreeMap;

/// A Prometheus label set, `__name__` included, sorted by name.
pub type LabelSet = BTreeMap<String, String>;

pub const NAME: &str = "__name__";
pub const HOST: &str = "host";
pub const GROUP: &str = "group";
pub const INSTANCE_ID: &str = "instance_id";
/// The label of a group's own series that says which aggregate it is.
pub const AGG: &str = crate::groups::AGG_LABEL;

/// A metric name Prometheus accepts: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn metric_name(name: &str) -> String {
    sanitize(name, true)
}

/// A label name Prometheus accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(name: &str) -> String {
    sanitize(name, false)
}

fn sanitize(name: &str, colon: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The LIKE pattern that finds, in the store, every series whose Prometheus
/// name may be `prom_name`: each `_` may stand for `.`, `_` or another
/// character mapped to `_` (the caller checks the mapped name exactly).
/// `None` when no pattern can say it (a `_` added before a leading digit).
pub fn like_for(prom_name: &str) -> Option<String> {
    if prom_name.starts_with('_') {
        return None;
    }
    let mut out = String::with_capacity(prom_name.len());
    for c in prom_name.chars() {
        match c {
            '%' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

/// The label set of a stored series. Metrolog's own labels win over a series
/// label of the same name, which is kept as `exported_<name>` (as Prometheus
/// does with `honor_labels: false`).
pub fn labels_of(row: &CatalogRow) -> LabelSet {
    let mut out = LabelSet::new();
    for (k, v) in &row.labels {
        out.insert(label_name(k), v.clone());
    }
    let mut own = |key: &str, value: &str| {
        if let Some(old) = out.insert(key.to_string(), value.to_string()) {
            if old != value {
                out.insert(format!("exported_{key}"), old);
            }
        }
    };
    if row.is_group {
        own(GROUP, &row.owner);
    } else {
        own(HOST, &row.owner);
        if let Some(g) = &row.group {
            own(GROUP, g);
        }
        if let Some(i) = &row.instance_id {
            own(INSTANCE_ID, i);
        }
    }
    out.insert(NAME.to_string(), metric_name(&row.name));
    out
}

/// Help and unit of the agent's own series (docs of its collectors), for
/// `/api/v1/metadata`. Everything Metrolog stores is a gauge: counters are
/// turned into per-second rates before they are stored.
pub fn help_of(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "cpu.busy_pct" => ("CPU time not idle, percent of all CPUs", "percent"),
        "cpu.user_pct" => ("CPU time in user mode, percent", "percent"),
        "cpu.system_pct" => ("CPU time in kernel mode, percent", "percent"),
        "cpu.iowait_pct" => ("CPU time waiting for I/O, percent", "percent"),
        "cpu.steal_pct" => ("CPU time stolen by the hypervisor, percent", "percent"),
        "load.1m" => ("Load average over 1 minute", ""),
        "load.5m" => ("Load average over 5 minutes", ""),
        "load.15m" => ("Load average over 15 minutes", ""),
        "mem.total_bytes" => ("Memory installed", "bytes"),
        "mem.used_bytes" => ("Memory used (total less available)", "bytes"),
        "mem.available_bytes" => ("Memory available without swapping", "bytes"),
        "mem.used_pct" => ("Memory used, percent of total", "percent"),
        "swap.total_bytes" => ("Swap space", "bytes"),
        "swap.used_bytes" => ("Swap used", "bytes"),
        "swap.used_pct" => ("Swap used, percent of total", "percent"),
        "disk.total_bytes" => ("Size of the filesystem", "bytes"),
        "disk.used_bytes" => ("Space used on the filesystem", "bytes"),
        "disk.used_pct" => ("Space used, percent of the filesystem", "percent"),
        "disk.inodes_used_pct" => ("Inodes used, percent", "percent"),
        "disk.read_bytes_per_s" => ("Bytes read from the device per second", "bytes"),
        "disk.write_bytes_per_s" => ("Bytes written to the device per second", "bytes"),
        "disk.io_ops_per_s" => ("I/O operations per second", ""),
        "net.rx_bytes_per_s" => ("Bytes received per second", "bytes"),
        "net.tx_bytes_per_s" => ("Bytes sent per second", "bytes"),
        "net.rx_packets_per_s" => ("Packets received per second", ""),
        "net.tx_packets_per_s" => ("Packets sent per second", ""),
        "net.rx_errors_per_s" => ("Receive errors per second", ""),
        "net.tx_errors_per_s" => ("Transmit errors per second", ""),
        "procs.total" => ("Processes", ""),
        "procs.running" => ("Processes running", ""),
        "group.members" => ("Members of the group that are up", ""),
        _ => return None,
    })
}

/// Whether a series (by its Prometheus name) is stored as a per-second rate
/// already, so that `rate()` over it is its average: the agent's `*_per_s`
/// series, and exporter series (`prom.*`), whose counters the agent turns
/// into rates.
pub fn is_rate(prom_name: &str) -> bool {
    prom_name.ends_with("_per_s") || prom_name.starts_with("prom_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, labels: &[(&str, &str)], owner: &str, is_group: bool) -> CatalogRow {
        CatalogRow {
            series_id: 1,
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owner: owner.into(),
            is_group,
            group: (!is_group).then(|| "web".to_string()),
            instance_id: (!is_group).then(|| "i-0abc".to_string()),
        }
    }

    #[test]
    fn names_map_dots_and_forbidden_characters() {
        assert_eq!(metric_name("cpu.busy_pct"), "cpu_busy_pct");
        assert_eq!(metric_name("load.1m"), "load_1m");
        assert_eq!(metric_name("check.http-api.time"), "check_http_api_time");
        assert_eq!(metric_name("1x"), "_1x");
        assert_eq!(metric_name("a:b"), "a:b");
        assert_eq!(label_name("a:b"), "a_b");
        assert_eq!(like_for("cpu_busy_pct").unwrap(), "cpu_busy_pct");
        assert_eq!(like_for("a%b").unwrap(), "a\\%b");
        assert_eq!(like_for("_1x"), None);
    }

    #[test]
    fn host_series_get_host_group_and_instance() {
        let l = labels_of(&row("disk.used_pct", &[("mount", "/")], "web-1", false));
        let want: Vec<(&str, &str)> = vec![
            ("__name__", "disk_used_pct"),
            ("group", "web"),
            ("host", "web-1"),
            ("instance_id", "i-0abc"),
            ("mount", "/"),
        ];
        assert_eq!(
            l.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn group_series_have_group_and_no_host() {
        let l = labels_of(&row("cpu.busy_pct", &[("agg", "avg")], "web", true));
        assert_eq!(l.get("group").map(String::as_str), Some("web"));
        assert_eq!(l.get("agg").map(String::as_str), Some("avg"));
        assert!(!l.contains_key("host"));
        assert!(!l.contains_key("instance_id"));
    }

    #[test]
    fn a_series_label_named_like_ours_is_kept_as_exported() {
        let l = labels_of(&row("prom.up", &[("host", "db:9100")], "web-1", false));
        assert_eq!(l["host"], "web-1");
        assert_eq!(l["exported_host"], "db:9100");
    }

    #[test]
    fn rates_are_recognised_by_name() {
        assert!(is_rate("net_rx_bytes_per_s"));
        assert!(is_rate("prom_http_requests_total"));
        assert!(!is_rate("cpu_busy_pct"));
    }
}
