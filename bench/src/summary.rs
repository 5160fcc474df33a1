//! `switchboard-bench summarize FILE...`: the JSON lines of many runs as Markdown tables of medians.
//!
//! Runs are grouped by system, durability (or label) and workload; every figure shown is the median
//! over the group's runs, and the exactly-once columns add up the missing and duplicated messages of
//! all its runs, so a single bad run cannot hide behind a median.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

/// The columns of each workload's table: (heading, dotted path into the JSON line).
const COLUMNS: &[(&str, &[(&str, &str)])] = &[
    (
        "relay",
        &[
            ("msgs/s", "msgs_per_sec"),
            ("p50 µs", "latency.p50_us"),
            ("p99 µs", "latency.p99_us"),
            ("p99.9 µs", "latency.p999_us"),
        ],
    ),
    (
        "offline",
        &[
            ("accept msgs/s", "accept_per_sec"),
            ("drain msgs/s", "drain_per_sec"),
        ],
    ),
    (
        "latency",
        &[
            ("p50 µs", "latency.p50_us"),
            ("p99 µs", "latency.p99_us"),
            ("p99.9 µs", "latency.p999_us"),
            ("accepted p50 µs", "accepted_latency.p50_us"),
        ],
    ),
    (
        "idle",
        &[
            ("bytes/conn", "bytes_per_connection"),
            ("clients", "clients"),
        ],
    ),
    (
        "fan-in",
        &[
            ("msgs/s", "msgs_per_sec"),
            ("p50 µs", "latency.p50_us"),
            ("p99 µs", "latency.p99_us"),
        ],
    ),
    (
        "reconnect-storm",
        &[
            ("clients", "clients"),
            ("fill msgs/s", "fill_per_sec"),
            ("all drained s", "drain_s"),
            ("client p50 ms", "client_drained.p50_ms"),
            ("client p99 ms", "client_drained.p99_ms"),
            ("retries", "connect_retries"),
        ],
    ),
    (
        "large-mailbox",
        &[
            ("messages", "messages"),
            ("fill msgs/s", "fill_per_sec"),
            ("restart s", "restart_s"),
            ("data MiB", "data_bytes"),
            ("first delivery ms", "first_delivery_ms"),
            ("drain msgs/s", "drain_per_sec"),
            ("peak RSS MiB", "peak_rss_bytes"),
            ("RSS at rest MiB", "rss_at_rest_bytes"),
        ],
    ),
];

fn lookup<'a>(line: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(line, |v, key| v.get(key))
}

fn number(line: &Value, path: &str) -> Option<f64> {
    lookup(line, path).and_then(Value::as_f64)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn show(path: &str, value: f64) -> String {
    if path.ends_with("_bytes") && !path.starts_with("bytes_per") {
        format!("{:.1}", value / (1024.0 * 1024.0))
    } else if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Reads JSON lines (other lines are skipped) and renders one table per workload.
pub(crate) fn render(files: &[PathBuf]) -> anyhow::Result<String> {
    // workload -> system column -> runs
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let Ok(value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let workload = value["workload"].as_str().unwrap_or("?").to_string();
            let mut system = value["system"].as_str().unwrap_or("?").to_string();
            if let Some(d) = value.get("durability").and_then(Value::as_str) {
                write!(system, " ({d})")?;
            }
            if let Some(l) = value.get("label").and_then(Value::as_str) {
                write!(system, " ({l})")?;
            }
            groups
                .entry(workload)
                .or_default()
                .entry(system)
                .or_default()
                .push(value);
        }
    }
    let mut out = String::new();
    for (workload, columns) in COLUMNS {
        let Some(systems) = groups.get(*workload) else {
            continue;
        };
        writeln!(out, "\n#### {workload}\n")?;
        write!(out, "| system | runs |")?;
        for (heading, _) in *columns {
            write!(out, " {heading} |")?;
        }
        writeln!(out, " missing | duplicated |")?;
        writeln!(out, "|---|---:|{}---:|---:|", "---:|".repeat(columns.len()))?;
        for (system, runs) in systems {
            write!(out, "| {system} | {} |", runs.len())?;
            for (_, path) in *columns {
                let values = runs.iter().filter_map(|r| number(r, path)).collect();
                match median(values) {
                    Some(m) => write!(out, " {} |", show(path, m))?,
                    None => write!(out, " – |")?,
                }
            }
            let sum = |path: &str| -> String {
                let values: Vec<f64> = runs.iter().filter_map(|r| number(r, path)).collect();
                if values.is_empty() {
                    "–".to_string()
                } else {
                    format!("{}", values.iter().sum::<f64>() as u64)
                }
            };
            writeln!(
                out,
                " {} | {} |",
                sum("delivery.missing"),
                sum("delivery.duplicated")
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn renders_a_table_of_medians() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let lines = [
            r#"{"system":"switchboard","workload":"relay","durability":"fsync","msgs_per_sec":10.0,"latency":{"p50_us":1.0,"p99_us":2.0,"p999_us":3.0},"delivery":{"missing":0,"duplicated":0}}"#,
            r#"{"system":"switchboard","workload":"relay","durability":"fsync","msgs_per_sec":30.0,"latency":{"p50_us":1.0,"p99_us":2.0,"p999_us":3.0},"delivery":{"missing":1,"duplicated":0}}"#,
            r#"{"system":"switchboard","workload":"relay","durability":"fsync","msgs_per_sec":20.0,"latency":{"p50_us":1.0,"p99_us":2.0,"p999_us":3.0},"delivery":{"missing":0,"duplicated":0}}"#,
            "not json",
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let table = render(&[path]).unwrap();
        assert!(
            table.contains("| switchboard (fsync) | 3 | 20 | 1 | 2 | 3 | 1 | 0 |"),
            "{table}"
        );
    }
}
