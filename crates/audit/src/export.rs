//! Plain exports of the ledger for spreadsheets and SIEMs: the entries of a time window,
//! filtered by identity or resource, as JSON lines or CSV. Each row carries its ledger
//! index and leaf hash, so it can be traced back to the entry and proven against a
//! checkpoint (`gatehouse ledger proof --index`).

use gatehouse_core::{EventKind, Evidence};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which entries an export takes (recorded as the query in a bundle's manifest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Unix microseconds, inclusive.
    pub since: Option<u64>,
    /// Unix microseconds, exclusive.
    pub until: Option<u64>,
    /// The identity: who acted (`actor.id`), the name claimed in a failed sign-in, or
    /// whose request an approval decides — so an auditor following one person sees the
    /// attempts to sign in as them and the decisions on their requests.
    pub user: Option<String>,
    /// The resource's name.
    pub resource: Option<String>,
}

impl Filter {
    /// Whether `entry` (an entry as JSON) is taken.
    pub fn matches(&self, entry: &Value) -> bool {
        self.in_window(entry["ts"].as_u64().unwrap_or(0))
            && self
                .user
                .as_deref()
                .is_none_or(|u| entry["actor"]["id"].as_str() == Some(u) || named_in_data(entry, u))
            && self
                .resource
                .as_deref()
                .is_none_or(|r| entry["resource"]["name"].as_str() == Some(r))
    }
}

/// Whether `entry`'s `data` names `user` as the one a failed sign-in claimed to be, or as
/// the requester an approval decides for.
fn named_in_data(entry: &Value, user: &str) -> bool {
    // Only these two kinds name a user in `data`: the kind is read first, so the other
    // entries' payloads (statements above all) are not deserialised just to be skipped.
    if !matches!(
        EventKind::deserialize(&entry["kind"]),
        Ok(EventKind::AuthFailure | EventKind::ApprovalDecision)
    ) {
        return false;
    }
    match Evidence::of_entry(entry) {
        Evidence::AuthFailure(failure) => failure.user.as_deref() == Some(user),
        Evidence::ApprovalDecision(decision) => decision.requester.as_deref() == Some(user),
        _ => false,
    }
}

impl Filter {
    /// Whether a time (unix microseconds) lies in the window.
    pub fn in_window(&self, ts: u64) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }
}

/// The JSON line of an exported entry: the entry with its `leaf` hash (hex) added.
pub fn jsonl(entry: &Value, leaf: &str) -> String {
    let mut out = entry.clone();
    if let Value::Object(map) = &mut out {
        map.insert("leaf".into(), Value::String(leaf.to_string()));
    }
    out.to_string()
}

/// The CSV header.
pub const CSV_HEADER: &str = "index,time,kind,identity,resource,session,summary,leaf";

/// The CSV row of an exported entry: what a spreadsheet needs, and the summary of what
/// happened (a statement and its decision, a result, a review step ...).
pub fn csv(entry: &Value, leaf: &str) -> String {
    let fields = [
        entry["i"].to_string(),
        time(entry["ts"].as_u64().unwrap_or(0)),
        text(&entry["kind"]),
        text(&entry["actor"]["id"]),
        text(&entry["resource"]["name"]),
        text(&entry["session"]),
        summary(entry),
        leaf.to_string(),
    ];
    fields
        .iter()
        .map(|f| quote(f))
        .collect::<Vec<_>>()
        .join(",")
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// RFC 3339 with microseconds, UTC.
fn time(us: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
    humantime::format_rfc3339_micros(t).to_string()
}

fn summary(entry: &Value) -> String {
    match Evidence::of_entry(entry) {
        Evidence::Command(command) => format!(
            "{} [{}]",
            command.postgres.text().unwrap_or(""),
            command
                .decision
                .and_then(|d| d.outcome)
                .as_deref()
                .unwrap_or("?")
        ),
        Evidence::Result(result) => format!(
            "command {}: {} rows{}",
            number(result.command),
            number(result.rows),
            result
                .error
                .map(|e| format!(", error {e}"))
                .unwrap_or_default()
        ),
        Evidence::ApprovalRequest(request) => format!(
            "review {} requested",
            request.review.as_deref().unwrap_or("?")
        ),
        Evidence::ApprovalDecision(decision) => format!(
            "review {} {}",
            decision.review.as_deref().unwrap_or("?"),
            decision.state.as_deref().unwrap_or("requested")
        ),
        Evidence::AuthFailure(failure) => failure.reason.unwrap_or_else(|| "?".into()),
        Evidence::SessionEnd(end) => end.reason.unwrap_or_default(),
        Evidence::PolicyDecision(decision) => format!(
            "{} {}",
            decision.action.as_deref().unwrap_or("?"),
            decision.outcome.as_deref().unwrap_or("?")
        ),
        _ => String::new(),
    }
}

/// A number as its JSON text, `null` when the entry does not have it.
fn number(n: Option<u64>) -> String {
    n.map_or_else(|| "null".into(), |n| n.to_string())
}

/// A CSV field quoted when it must be (RFC 4180), and never starting with a character a
/// spreadsheet would run as a formula.
fn quote(field: &str) -> String {
    let field = match field.chars().next() {
        Some('=' | '+' | '-' | '@') => format!("'{field}"),
        _ => field.to_string(),
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({"v": 1, "i": 7, "ts": 1_764_000_000_000_000u64, "kind": "command",
               "actor": {"id": "alice"}, "resource": {"name": "pg"}, "session": "s-1",
               "data": {"sql": "SELECT 1, \"x\"", "decision": {"outcome": "allow"}}})
    }

    #[test]
    fn filters_take_the_window_the_user_and_the_resource() {
        let e = entry();
        assert!(Filter::default().matches(&e));
        let at = 1_764_000_000_000_000u64;
        assert!(
            Filter {
                since: Some(at),
                until: Some(at + 1),
                ..Filter::default()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                until: Some(at),
                ..Filter::default()
            }
            .matches(&e),
            "until is exclusive"
        );
        assert!(
            !Filter {
                since: Some(at + 1),
                ..Filter::default()
            }
            .matches(&e)
        );
        assert!(
            Filter {
                user: Some("alice".into()),
                resource: Some("pg".into()),
                ..Filter::default()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                user: Some("bob".into()),
                ..Filter::default()
            }
            .matches(&e)
        );
        let failed = json!({"kind": "auth.failure", "data": {"user": "alice"}});
        let decided = json!({"kind": "approval.decision", "actor": {"id": "bob"},
                             "data": {"requester": "alice"}});
        for e in [failed, decided] {
            let alice = Filter {
                user: Some("alice".into()),
                ..Filter::default()
            };
            let bob = Filter {
                user: Some("carol".into()),
                ..Filter::default()
            };
            assert!(alice.matches(&e) && !bob.matches(&e), "{e}");
        }
        assert!(
            !Filter {
                resource: Some("pg-prod".into()),
                ..Filter::default()
            }
            .matches(&e)
        );
    }

    #[test]
    fn rows_carry_the_index_and_leaf_and_csv_is_safe_for_spreadsheets() {
        let e = entry();
        let line: Value = serde_json::from_str(&jsonl(&e, "ab12")).unwrap();
        assert_eq!(
            (line["i"].as_u64(), line["leaf"].as_str()),
            (Some(7), Some("ab12"))
        );
        assert_eq!(
            csv(&e, "ab12"),
            "7,2025-11-24T16:00:00.000000Z,command,alice,pg,s-1,\"SELECT 1, \"\"x\"\" [allow]\",ab12"
        );
        assert_eq!(quote("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(quote("a\nb"), "\"a\nb\"");
    }
}
