//! How `switchboard-broker admin` shows the API's answers to a person: aligned columns with a
//! header, sizes and ages in units people read. (`--json` prints the answer itself instead.)

use serde_json::Value;

/// Rows of cells under `header`, each column as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn u(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn s(value: &Value) -> String {
    value.as_str().unwrap_or("").to_owned()
}

/// `1.5 KiB`, `3 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `42s`, `3m05s`, `2h07m`, `3d04h`; `-` for none.
pub(crate) fn age(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 60 => format!("{s}s"),
        Some(s) if s < 3_600 => format!("{}m{:02}s", s / 60, s % 60),
        Some(s) if s < 86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        Some(s) => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

fn yes(value: &Value) -> String {
    if value.as_bool().unwrap_or(false) {
        "yes"
    } else {
        "no"
    }
    .into()
}

pub(crate) fn clients(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["id"]),
                s(&c["address"]),
                age(c["connected_secs"].as_u64()),
                format!(
                    "{} / {}",
                    u(&c["window_entries"]),
                    bytes(u(&c["window_bytes"]))
                ),
                bytes(u(&c["bytes_in"])),
                bytes(u(&c["bytes_out"])),
            ]
        })
        .collect();
    table(
        &["ID", "ADDRESS", "CONNECTED", "WINDOW", "IN", "OUT"],
        &rows,
    )
}

pub(crate) fn mailboxes(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["mailboxes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                s(&m["id"]),
                u(&m["entries"]).to_string(),
                bytes(u(&m["bytes"])),
                age(m["oldest_entry_age_secs"].as_u64()),
                yes(&m["online"]),
            ]
        })
        .collect();
    let mut out = table(&["ID", "ENTRIES", "BYTES", "OLDEST", "ONLINE"], &rows);
    out.push_str(&format!(
        "{} of {} non-empty mailboxes\n",
        rows.len(),
        u(&answer["total"])
    ));
    out
}

pub(crate) fn mailbox(answer: &Value) -> String {
    let mut out = format!(
        "{}: {} entries, {}, {}\n",
        s(&answer["id"]),
        u(&answer["entries"]),
        bytes(u(&answer["bytes"])),
        if answer["online"].as_bool().unwrap_or(false) {
            "online"
        } else {
            "offline"
        }
    );
    let rows: Vec<Vec<String>> = answer["page"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                u(&e["id"]).to_string(),
                s(&e["kind"]),
                s(&e["peer"]),
                u(&e["send_id"]).to_string(),
                u(&e["sent_at_ms"]).to_string(),
                bytes(u(&e["body_bytes"])),
                yes(&e["handed_out"]),
                s(&e["body_peek_base64"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ENTRY",
            "KIND",
            "PEER",
            "SEND_ID",
            "SENT_AT_MS",
            "BODY",
            "HANDED_OUT",
            "PEEK_BASE64",
        ],
        &rows,
    ));
    out
}

pub(crate) fn removed(answer: &Value, what: &str) -> String {
    format!(
        "{what} {}: {} removed, {} senders told `removed`, {} left (handed out, awaiting their ack)\n",
        s(&answer["mailbox"]),
        u(&answer["removed"]),
        u(&answer["receipts"]),
        u(&answer["busy"]),
    )
}

pub(crate) fn status(answer: &Value) -> String {
    let m = &answer["mailboxes"];
    let t = &answer["totals"];
    let l = &answer["limits"];
    let mut out = format!(
        "switchboard-broker {} up {}, {}\n\
         store {} (durability {}), tls {}\n\
         connections {} (max {})\n\
         accepted {}/s, delivered {}/s; since start {} accepted, {} delivered, {} rejected\n\
         store commits {} (mean {} µs)\n\
         mailboxes {} holding {} entries, {}; oldest entry {}\n\
         limits: window {} / {}, frame {}, mailbox {} entries / {}\n",
        s(&answer["version"]),
        age(answer["uptime_secs"].as_u64()),
        if answer["ready"].as_bool().unwrap_or(false) {
            "ready"
        } else {
            "not ready"
        },
        s(&answer["store"]),
        s(&answer["durability"]),
        if answer["tls"].as_bool().unwrap_or(false) {
            "on"
        } else {
            "off"
        },
        u(&answer["connections"]),
        u(&l["max_connections"]),
        answer["accepted_per_sec"].as_f64().unwrap_or(0.0),
        answer["delivered_per_sec"].as_f64().unwrap_or(0.0),
        u(&t["accepted"]),
        u(&t["delivered"]),
        u(&t["rejected"]),
        u(&t["commits"]),
        u(&t["commit_mean_us"]),
        u(&m["count"]),
        u(&m["entries"]),
        bytes(u(&m["bytes"])),
        age(m["oldest_entry_age_secs"].as_u64()),
        u(&l["window"]),
        bytes(u(&l["window_bytes"])),
        bytes(u(&l["max_frame_bytes"])),
        u(&l["mailbox_max_messages"]),
        bytes(u(&l["mailbox_max_bytes"])),
    );
    let deepest = serde_json::json!({"mailboxes": answer["deepest"], "total": m["count"]});
    if answer["deepest"].as_array().is_some_and(|d| !d.is_empty()) {
        out.push_str("deepest mailboxes:\n");
        out.push_str(&mailboxes(&deepest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_under_their_header() {
        let rows = vec![
            vec!["bob".to_string(), "12".to_string()],
            vec!["carol-the-long".to_string(), "3".to_string()],
        ];
        assert_eq!(
            table(&["ID", "ENTRIES"], &rows),
            "ID              ENTRIES\nbob             12\ncarol-the-long  3\n"
        );
    }

    #[test]
    fn sizes_and_ages_read_as_people_say_them() {
        assert_eq!(bytes(3), "3 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(age(None), "-");
        assert_eq!(age(Some(42)), "42s");
        assert_eq!(age(Some(185)), "3m05s");
        assert_eq!(age(Some(7_620)), "2h07m");
        assert_eq!(age(Some(273_600)), "3d04h");
    }

    #[test]
    fn a_mailbox_listing_shows_each_mailbox_and_the_total() {
        let answer = json!({"total": 7, "mailboxes": [
            {"id": "bob", "entries": 3, "bytes": 15, "oldest_entry_age_secs": 61, "online": false}
        ]});
        let text = mailboxes(&answer);
        assert!(
            text.starts_with(
                "ID   ENTRIES  BYTES  OLDEST  ONLINE\nbob  3        15 B   1m01s   no\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("1 of 7 non-empty mailboxes\n"), "{text}");
    }
}
