//! A session replayed from the ledger: who connected, each statement with its decision
//! and timing, the rows the client saw (masked, as recorded), approvals, and the end.
//!
//! The input is the session's entries in ledger order (as JSON) and the recorded result
//! bytes per command entry; the output is a list of [`Step`]s, each with its time offset,
//! rendered as text lines. Result bytes are the protocol frames that left the gateway, so
//! they are decoded with the same codec the gateway wrote them with.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gatehouse_core::Evidence;
use gatehouse_core::evidence::{Command, CommandResult, SessionMasking};
use gatehouse_wire_pg::rows;
use serde_json::Value;

/// One moment of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Microseconds since the session started.
    pub offset_us: u64,
    /// What happened, as lines of text.
    pub lines: Vec<String>,
}

/// A replayed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub session: String,
    pub steps: Vec<Step>,
}

impl Replay {
    /// The whole replay as text: each step's lines, the first prefixed with its offset.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            for (n, line) in step.lines.iter().enumerate() {
                if n == 0 {
                    let _ = writeln!(out, "[{}] {line}", clock(step.offset_us));
                } else {
                    let _ = writeln!(out, "{:>width$} {line}", "", width = 11);
                }
            }
        }
        out
    }
}

/// `+MM:SS.mmm`.
fn clock(us: u64) -> String {
    let ms = us / 1000;
    format!("+{:02}:{:02}.{:03}", ms / 60_000, ms / 1000 % 60, ms % 1000)
}

/// At most this many rows of a result are shown; the rest are counted.
pub const MAX_ROWS: usize = 50;

/// Replays `session` from `entries` (every entry of the session, in ledger order) and
/// `results` (the recorded bytes of each command's result, by the command entry's index).
pub fn replay(session: &str, entries: &[Value], results: &BTreeMap<u64, Vec<u8>>) -> Replay {
    let start = entries.first().and_then(|e| e["ts"].as_u64()).unwrap_or(0);
    let mut steps = Vec::new();
    for entry in entries {
        let offset_us = entry["ts"].as_u64().unwrap_or(start).saturating_sub(start);
        let who = entry["actor"]["id"].as_str().unwrap_or("?");
        let lines = match Evidence::of_entry(entry) {
            Evidence::SessionStart(start) => vec![format!(
                "{who} connected to {} from {} (tls: {}, masking: {})",
                entry["resource"]["name"].as_str().unwrap_or("?"),
                start.client.as_deref().unwrap_or("?"),
                start.tls.unwrap_or(false),
                masking(start.masking.as_ref()),
            )],
            Evidence::Command(command) => command_lines(who, &command),
            Evidence::Result(result) => {
                result_lines(&result, results.get(&result.command.unwrap_or(u64::MAX)))
            }
            Evidence::ApprovalRequest(request) => vec![format!(
                "held for review {}: {} (needs {} approval(s))",
                request.review.as_deref().unwrap_or("?"),
                request.reason.as_deref().unwrap_or(""),
                count(request.required),
            )],
            Evidence::ApprovalDecision(decision) => vec![format!(
                "review {} {}{}{}",
                decision.review.as_deref().unwrap_or("?"),
                decision.state.as_deref().unwrap_or("?"),
                if who == "?" {
                    String::new()
                } else {
                    format!(" by {who}")
                },
                decision
                    .reason
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )],
            Evidence::SessionEnd(end) => vec![format!(
                "session ended after {:.3}s ({}): {} statements, {} denied",
                end.duration_ms.unwrap_or(0) as f64 / 1000.0,
                end.reason.as_deref().unwrap_or("?"),
                count(end.commands),
                count(end.denied),
            )],
            // Recording entries carry the bytes shown with each result.
            _ => continue,
        };
        steps.push(Step { offset_us, lines });
    }
    Replay {
        session: session.to_string(),
        steps,
    }
}

/// A count the entry may not have.
fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "?".into(), |n| n.to_string())
}

fn masking(masking: Option<&SessionMasking>) -> String {
    match masking {
        Some(SessionMasking::Named(name)) => name.clone(),
        Some(SessionMasking::Split { client, recording }) => format!(
            "client {}, recording {}",
            client.as_deref().unwrap_or("?"),
            recording.as_deref().unwrap_or("?")
        ),
        None => "?".into(),
    }
}

fn command_lines(who: &str, command: &Command) -> Vec<String> {
    let sql = command.postgres.text().unwrap_or("");
    let decision = command.decision.clone().unwrap_or_default();
    let mut verdict = decision.outcome.unwrap_or_else(|| "?".into());
    if let Some(rule) = decision.rule {
        verdict.push_str(&format!(" by rule {rule}"));
    }
    if let Some(review) = decision.grant.and_then(|g| g.review) {
        verdict.push_str(&format!(", granted by review {review}"));
    }
    let mut lines: Vec<String> = sql
        .trim_end()
        .lines()
        .enumerate()
        .map(|(n, l)| {
            if n == 0 {
                format!("{who}=> {l}")
            } else {
                format!("   {l}")
            }
        })
        .collect();
    if command.postgres.sql_in_chunk {
        lines.push("   ... (the full text is in a chunk)".into());
    }
    lines.push(format!("   decision: {verdict}"));
    lines
}

fn result_lines(result: &CommandResult, bytes: Option<&Vec<u8>>) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(bytes) = bytes {
        lines.extend(table(bytes));
    }
    let outcome = match (&result.error, result.skipped) {
        (Some(code), _) => format!("ERROR {code}"),
        (None, true) => "skipped (an earlier statement failed)".to_string(),
        _ if result.tags.is_empty() => "done".to_string(),
        _ => result.tags.join(", "),
    };
    let mut summary = format!(
        "{outcome} ({} rows, {} ms)",
        result.rows.unwrap_or(0),
        result
            .duration_us
            .map_or_else(|| "?".into(), |us| format!("{:.1}", us as f64 / 1000.0))
    );
    if let Some(masked) = &result.masked {
        summary.push_str(&format!(", masked {} value(s)", masked.values.unwrap_or(0)));
    }
    if result.truncated_bytes.unwrap_or(0) > 0 {
        summary.push_str(", recording truncated");
    }
    lines.push(summary);
    lines
}

/// The recorded frames of one result as an aligned table: RowDescription gives the
/// header, each DataRow a line (text values as they are, binary ones in hex, NULL as
/// empty), CopyData lines as they are.
fn table(bytes: &[u8]) -> Vec<String> {
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut formats: Vec<i16> = Vec::new();
    let mut copy = Vec::new();
    let mut more = 0usize;
    let mut at = 0;
    while let Some((tag, body)) = frame(bytes, &mut at) {
        match tag {
            b'T' => {
                if let Ok(fields) = rows::row_description(body) {
                    header = fields.iter().map(|f| f.name.to_string()).collect();
                    formats = fields.iter().map(|f| f.format).collect();
                }
            }
            b'D' if rows.len() >= MAX_ROWS => more += 1,
            b'D' => {
                let Ok(values) = rows::data_row(body) else {
                    rows.push(vec!["(unreadable row)".into()]);
                    continue;
                };
                let row = values
                    .enumerate()
                    .map(|(i, v)| match v {
                        Ok(Some(v)) if formats.get(i).copied().unwrap_or(0) == 0 => {
                            String::from_utf8_lossy(v).into_owned()
                        }
                        Ok(Some(v)) => format!("\\x{}", hex(v)),
                        Ok(None) => String::new(),
                        Err(_) => "?".into(),
                    })
                    .collect();
                rows.push(row);
            }
            b'd' => copy.push(String::from_utf8_lossy(body).trim_end().to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if !header.is_empty() {
        let width = |i: usize| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .chain(header.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..header.len()).map(width).collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(" | ")
                .trim_end()
                .to_string()
        };
        out.push(format!("   {}", line(&header)));
        out.push(format!(
            "   {}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-+-")
        ));
        for row in &rows {
            out.push(format!("   {}", line(row)));
        }
        if more > 0 {
            out.push(format!("   ... {more} more row(s)"));
        }
    }
    out.extend(copy.into_iter().map(|l| format!("   {l}")));
    out
}

/// The next frame (tag and body) of recorded bytes.
fn frame<'a>(bytes: &'a [u8], at: &mut usize) -> Option<(u8, &'a [u8])> {
    let tag = *bytes.get(*at)?;
    let len = u32::from_be_bytes(bytes.get(*at + 1..*at + 5)?.try_into().ok()?) as usize;
    let body = bytes.get(*at + 5..*at + 1 + len)?;
    *at += 1 + len;
    Some((tag, body))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame_of(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_session_reads_as_it_happened() {
        // RowDescription with columns id, email (text), then two rows, one with a NULL.
        let mut description = 2i16.to_be_bytes().to_vec();
        for name in ["id", "email"] {
            description.extend_from_slice(name.as_bytes());
            description.push(0);
            description.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff]);
            description.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
        }
        let mut bytes = frame_of(b'T', &description);
        let mut row = Vec::new();
        rows::write_data_row([Some(&b"1"[..]), Some(&b"[email]"[..])], &mut row);
        bytes.extend_from_slice(&row);
        row.clear();
        rows::write_data_row([Some(&b"2"[..]), None], &mut row);
        bytes.extend_from_slice(&row);
        let entries = vec![
            json!({"i": 1, "ts": 1_000_000, "kind": "session.start", "actor": {"id": "alice"},
                   "resource": {"name": "pg"}, "session": "s-1",
                   "data": {"client": "127.0.0.1:5000", "tls": false,
                            "masking": {"client": "masked", "recording": "masked"}}}),
            json!({"i": 2, "ts": 1_250_000, "kind": "command", "actor": {"id": "alice"}, "session": "s-1",
                   "data": {"sql": "SELECT id, email FROM people", "decision": {"outcome": "allow", "rule": null}}}),
            json!({"i": 3, "ts": 1_260_000, "kind": "result", "session": "s-1",
                   "data": {"command": 2, "tags": ["SELECT 2"], "rows": 2, "duration_us": 1500,
                            "masked": {"values": 1}}}),
            json!({"i": 4, "ts": 1_300_000, "kind": "recording", "session": "s-1", "data": {}}),
            json!({"i": 5, "ts": 3_000_000, "kind": "session.end", "actor": {"id": "alice"}, "session": "s-1",
                   "data": {"duration_ms": 2000, "reason": "client terminated the session", "commands": 1, "denied": 0}}),
        ];
        let results = BTreeMap::from([(2, bytes)]);
        let text = replay("s-1", &entries, &results).render();
        let expected = "\
[+00:00.000] alice connected to pg from 127.0.0.1:5000 (tls: false, masking: client masked, recording masked)
[+00:00.250] alice=> SELECT id, email FROM people
               decision: allow
[+00:00.260]    id | email
               ---+--------
               1  | [email]
               2  |
            SELECT 2 (2 rows, 1.5 ms), masked 1 value(s)
[+00:02.000] session ended after 2.000s (client terminated the session): 1 statements, 0 denied
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn broken_recordings_do_not_stop_a_replay() {
        let entries =
            vec![json!({"i": 0, "ts": 5, "kind": "result", "data": {"command": 9, "rows": 0}})];
        let results = BTreeMap::from([(9, vec![b'D', 0, 0, 0, 99, 1])]);
        let text = replay("s", &entries, &results).render();
        assert_eq!(text, "[+00:00.000] done (0 rows, ? ms)\n");
    }
}
