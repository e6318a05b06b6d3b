//! Typed `data` payloads of ledger entries, one type per [`EventKind`], and [`Evidence::read`],
//! the one way readers (replay, export, OCSF, report, bundle verify) interpret an entry's
//! `data`.
//!
//! The types describe what writers put in `data` today. Readers only ever deserialise a
//! copy: stored entries are hashed byte-for-byte and never re-serialised, so nothing here
//! can change what an old ledger verifies to. Every field is optional (writers omit some,
//! older gateways wrote fewer), unknown fields are ignored (newer gateways may add some),
//! and a kind this version does not know reads as [`Evidence::Unknown`].

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::EventKind;

/// An entry's `data`, typed by the entry's kind.
// Read once per entry and matched at once: boxing the large variants would only add an
// allocation per entry.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    SessionStart(SessionStart),
    SessionEnd(SessionEnd),
    Command(Command),
    Result(CommandResult),
    Recording(Recording),
    AuthFailure(AuthFailure),
    KeyCreated(KeyChange),
    KeyRevoked(KeyChange),
    TargetFailure(TargetFailure),
    PolicyDecision(PolicyDecision),
    IntegrityMismatch(IntegrityMismatch),
    ApprovalRequest(ApprovalRequest),
    ApprovalDecision(ApprovalDecision),
    ConfigChange(ConfigChange),
    Heartbeat(Heartbeat),
    LedgerOpen(LedgerOpen),
    LedgerRecovery(LedgerRecovery),
    LedgerPrune(LedgerPrune),
    Bench(Bench),
    /// A kind this version does not know (written by a newer gateway): its `data` as is.
    Unknown(Value),
}

impl Evidence {
    /// Reads the `data` of an entry of `kind` (its `kind` field as written).
    ///
    /// Never fails, because an auditor must see every entry: `data` that is not an object
    /// reads as empty, and a field whose value does not fit its type (a writer's mistake,
    /// or a later gateway's change) reads as absent while the entry's other fields are kept.
    pub fn read(kind: &str, data: &Value) -> Evidence {
        let Ok(kind) = serde_json::from_value::<EventKind>(Value::String(kind.to_string())) else {
            return Evidence::Unknown(data.clone());
        };
        match kind {
            EventKind::SessionStart => Evidence::SessionStart(payload(data)),
            EventKind::SessionEnd => Evidence::SessionEnd(payload(data)),
            EventKind::Command => Evidence::Command(payload(data)),
            EventKind::Result => Evidence::Result(payload(data)),
            EventKind::Recording => Evidence::Recording(payload(data)),
            EventKind::AuthFailure => Evidence::AuthFailure(payload(data)),
            EventKind::KeyCreated => Evidence::KeyCreated(payload(data)),
            EventKind::KeyRevoked => Evidence::KeyRevoked(payload(data)),
            EventKind::TargetFailure => Evidence::TargetFailure(payload(data)),
            EventKind::PolicyDecision => Evidence::PolicyDecision(payload(data)),
            EventKind::IntegrityMismatch => Evidence::IntegrityMismatch(payload(data)),
            EventKind::ApprovalRequest => Evidence::ApprovalRequest(payload(data)),
            EventKind::ApprovalDecision => Evidence::ApprovalDecision(payload(data)),
            EventKind::ConfigChange => Evidence::ConfigChange(payload(data)),
            EventKind::Heartbeat => Evidence::Heartbeat(payload(data)),
            EventKind::LedgerOpen => Evidence::LedgerOpen(payload(data)),
            EventKind::LedgerRecovery => Evidence::LedgerRecovery(payload(data)),
            EventKind::LedgerPrune => Evidence::LedgerPrune(payload(data)),
            EventKind::Bench => Evidence::Bench(payload(data)),
        }
    }

    /// Reads the `data` of a whole entry (as JSON), by its `kind`.
    pub fn of_entry(entry: &Value) -> Evidence {
        Evidence::read(entry["kind"].as_str().unwrap_or(""), &entry["data"])
    }
}

/// Deserialises `data` as `T`, keeping the fields that fit when some do not.
fn payload<T: DeserializeOwned + Default>(data: &Value) -> T {
    let Value::Object(fields) = data else {
        return T::default();
    };
    if let Ok(typed) = serde_json::from_value(data.clone()) {
        return typed;
    }
    // Slow path, for malformed entries only: drop each field that does not read on its own.
    let fits: Map<String, Value> = fields
        .iter()
        .filter(|(name, value)| {
            let alone = Map::from_iter([((*name).clone(), (*value).clone())]);
            serde_json::from_value::<T>(Value::Object(alone)).is_ok()
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    serde_json::from_value(Value::Object(fits)).unwrap_or_default()
}

/// A reference to another entry: its ledger index and leaf hash (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRef {
    pub index: u64,
    pub leaf: String,
}

/// `session.start`: a client signed in and its session to the target opened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionStart {
    /// The client's address (`ip:port`).
    pub client: Option<String>,
    pub application: Option<String>,
    pub database: Option<String>,
    /// The managed API key signed in with, or `oidc:<issuer>` for a token.
    pub key_id: Option<String>,
    /// The token claims that matched the identity mapping.
    pub token_claims: Option<BTreeMap<String, Value>>,
    pub tls: Option<bool>,
    pub target_tls: Option<bool>,
    pub recording: Option<RecordingSettings>,
    pub masking: Option<SessionMasking>,
    /// The approved access request that let the client in, when policy alone would not.
    pub access_grant: Option<Grant>,
}

/// What a session records of results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordingSettings {
    pub results: Option<bool>,
    pub max_session_bytes: Option<u64>,
}

/// How a session's results are masked: `"off"`, or for the client and the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SessionMasking {
    /// `"off"`.
    Named(String),
    Split {
        /// `clear` or `masked`.
        client: Option<String>,
        recording: Option<String>,
    },
}

/// `session.end`: the session's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionEnd {
    pub reason: Option<String>,
    pub duration_ms: Option<u64>,
    pub commands: Option<u64>,
    pub refused: Option<u64>,
    pub denied: Option<u64>,
    pub errors: Option<u64>,
    pub bytes_from_client: Option<u64>,
    pub bytes_to_client: Option<u64>,
    pub recorded_bytes: Option<u64>,
    pub truncated_bytes: Option<u64>,
}

/// `command`: a statement and the gateway's decision on it, written before it may run.
///
/// The protocol's own detail sits beside `decision` in the same object (entries are flat);
/// each protocol has its part, read by the resource's kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Command {
    pub decision: Option<Decision>,
    #[serde(flatten)]
    pub postgres: PostgresCommand,
}

/// The PostgreSQL part of a `command` entry: the statement's text and what the gateway
/// read in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresCommand {
    /// The statement's text, when short enough to be inline.
    pub sql: Option<String>,
    /// The start of a long statement whose full text is in the entry's chunk.
    pub sql_prefix: Option<String>,
    pub sql_in_chunk: bool,
    /// `simple`, `extended` or `function_call`.
    pub protocol: Option<String>,
    /// The prepared statement a Parse names.
    pub parse: Option<String>,
    /// The portal and prepared statement an Execute runs.
    pub portal: Option<String>,
    pub statement: Option<String>,
    /// Statement classes (`read`, `write`, `ddl`, ...), as the analysis found them.
    pub classes: Vec<String>,
    /// Command tags of the statements (`SELECT`, `INSERT`, ...).
    pub commands: Vec<String>,
    pub tables: Vec<String>,
    /// Why the text could not be parsed fully, when it could not.
    pub unparsed: Option<String>,
    pub syntax_error: Option<SyntaxError>,
}

impl PostgresCommand {
    /// The statement's text as the entry holds it: all of it, or its start.
    pub fn text(&self) -> Option<&str> {
        self.sql.as_deref().or(self.sql_prefix.as_deref())
    }
}

/// The parser's error for a statement, as the server would report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyntaxError {
    pub code: Option<String>,
    pub message: Option<String>,
    /// Character position (from 1) the error points at.
    pub position: Option<u32>,
}

/// The gateway's decision on a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Decision {
    /// `allow`, `deny` or `review`.
    pub outcome: Option<String>,
    pub rule: Option<String>,
    pub policies: Vec<String>,
    /// Every rule and policy that holds the statement, when more than one does.
    pub holders: Vec<String>,
    /// The review whose grant let a held statement run.
    pub grant: Option<Grant>,
    /// Each grant, when several holders needed one.
    pub grants: Vec<Grant>,
    /// SQLSTATE of a statement refused because it could not be read.
    pub unreadable: Option<String>,
    pub message: Option<String>,
}

/// An approved review's grant (of a rule's statements, or of access).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grant {
    pub rule: Option<String>,
    pub review: Option<String>,
    pub request: Option<EntryRef>,
    /// Unix milliseconds.
    pub until: Option<u64>,
}

/// `result`: how a statement ended, written after it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandResult {
    /// Ledger index of the `command` entry.
    pub command: Option<u64>,
    pub tags: Vec<String>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub duration_us: Option<u64>,
    /// SQLSTATE of the error the statement ended with.
    pub error: Option<String>,
    /// Skipped by the server after an earlier error.
    pub skipped: bool,
    pub recorded: Option<Recorded>,
    pub truncated_bytes: Option<u64>,
    pub masked: Option<Masked>,
}

/// The hash and size of a result's recorded bytes (carried by `recording` entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recorded {
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
}

/// What was masked in a result: counts only, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Masked {
    pub values: Option<u64>,
    /// By rule label.
    pub rules: BTreeMap<String, u64>,
    /// By detector kind.
    pub detectors: BTreeMap<String, u64>,
    /// Values whose binary format could not be read, sent as NULL.
    pub undecodable: Option<u64>,
}

/// `recording`: result bytes stored in the entry's chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recording {
    /// `[command index, offset, length]` of each slice of the chunk.
    pub parts: Vec<[u64; 3]>,
    pub bytes: Option<u64>,
    /// Why the chunk could not be stored, when it could not.
    pub lost: Option<String>,
}

/// `auth.failure`: a failed sign-in, or (`aggregated`) a count of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthFailure {
    /// The name the client claimed.
    pub user: Option<String>,
    /// The client's address, or `many` for an aggregate of many sources.
    pub client: Option<String>,
    pub reason: Option<String>,
    /// `apikey` (database sign-ins).
    pub method: Option<String>,
    pub key_id: Option<String>,
    /// Where the sign-in was tried when not at a resource (`admin-api`).
    pub via: Option<String>,
    pub aggregated: bool,
    /// How many failures an aggregate stands for.
    pub count: Option<u64>,
    pub interval_s: Option<u64>,
    pub users: Vec<String>,
    /// The aggregate of the source's previous interval, written with its next failure.
    pub earlier: Option<Box<AuthFailure>>,
}

/// `key.created` and `key.revoked`: a managed API key changed (from the state store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyChange {
    pub key_id: Option<String>,
    /// The state store's sequence number of the change.
    pub seq: Option<i64>,
    /// Unix time of the change, as the store keeps it.
    pub at: Option<i64>,
    /// The identity the key signs in as.
    pub name: Option<String>,
    /// The identity's kind (`human`, `agent`, `service`).
    pub kind: Option<String>,
    pub groups: Vec<String>,
    pub expires_at: Option<i64>,
    /// Who made the change.
    pub by: Option<String>,
    pub reason: Option<String>,
}

/// `target.failure`: a signed-in client's session could not reach its target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetFailure {
    pub client: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
}

/// `policy.decision`: a session refused before or outside a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyDecision {
    /// `connect`, `startup_parameter` or `session_setting`.
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub policies: Vec<String>,
    pub message: Option<String>,
    /// Why policy could not be evaluated.
    pub error: Option<String>,
    /// A reason code (`database_not_served`).
    pub reason: Option<String>,
    pub client: Option<String>,
    pub requested_database: Option<String>,
    pub parameter: Option<String>,
    pub setting: Option<String>,
    pub value: Option<String>,
}

/// `integrity.mismatch`: the target ran a command the gateway had not decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntegrityMismatch {
    /// Ledger index of the `command` entry.
    pub command: Option<u64>,
    /// The command tags the gateway decided.
    pub decided: Vec<String>,
    /// The tags the target reported.
    pub tags: Vec<String>,
    /// The tag that was not decided.
    pub tag: Option<String>,
    pub reason: Option<String>,
}

/// `approval.request`: a review was opened, of a held statement or of access.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalRequest {
    pub review: Option<String>,
    /// The held statement's `command` entry.
    pub command: Option<EntryRef>,
    /// Present when access to the resource is asked for.
    pub access: Option<AccessRequest>,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub approvers: Vec<String>,
    pub required: Option<u64>,
    /// Unix milliseconds.
    pub expires_at: Option<u64>,
}

/// What an access request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessRequest {
    pub for_ms: Option<u64>,
}

/// `approval.decision`: a review's new state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalDecision {
    pub review: Option<String>,
    pub requester: Option<String>,
    /// `pending`, `approved`, `denied`, `expired`, `cancelled` or `executed`.
    pub state: Option<String>,
    pub approvals: Option<u64>,
    pub required: Option<u64>,
    /// The `approval.request` entry.
    pub request: Option<EntryRef>,
    /// An approver's `approve` or `deny`; absent when the review ended by itself.
    pub verdict: Option<String>,
    pub reason: Option<String>,
    /// Unix milliseconds until which the approval also grants like statements.
    pub grant_until: Option<u64>,
}

/// `config.change`: the configuration a run enforces, or an access policy (re)load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigChange {
    pub file: Option<String>,
    pub sha256: Option<String>,
    /// The resources the configuration serves; absent in a policy load.
    pub resources: Option<Vec<String>>,
    pub policy: Option<PolicyLoad>,
}

/// An access policy file loaded (or not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyLoad {
    pub file: Option<String>,
    /// `start`, `file change`, `SIGHUP`, ...
    pub trigger: Option<String>,
    pub loaded: Option<bool>,
    pub policies: Option<u64>,
    pub error: Option<String>,
}

/// `heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Heartbeat {
    pub interval_ms: Option<u64>,
}

/// `ledger.open`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LedgerOpen {
    /// The gateway's version.
    pub gatehouse: Option<String>,
    pub verifier_key: Option<String>,
    pub entries: Option<u64>,
}

/// `ledger.recovery`: an unclean shutdown, a torn tail, or a failed write recovered from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LedgerRecovery {
    pub unclean_shutdown: Option<bool>,
    pub entries_recovered: Option<u64>,
    pub last_entry_ts: Option<u64>,
    pub batched_window_us: Option<u64>,
    pub gap: Option<RecoveryGap>,
    pub truncated: Option<Truncated>,
    /// The write failure recovered from at runtime.
    pub failure: Option<String>,
    pub discarded: Option<Discarded>,
    pub note: Option<String>,
}

/// When batched entries may have been lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoveryGap {
    pub from_ts: Option<u64>,
    pub to_ts: Option<u64>,
    pub note: Option<String>,
}

/// A torn segment tail that was zeroed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Truncated {
    pub segment: Option<String>,
    pub offset: Option<u64>,
    pub bytes: Option<u64>,
}

/// Entries discarded after a failed write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Discarded {
    pub from_index: Option<u64>,
    pub count: Option<u64>,
}

/// `ledger.prune`: retention pruned the index range `first..end`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LedgerPrune {
    pub cutoff_ts: Option<u64>,
    pub first: Option<u64>,
    pub end: Option<u64>,
    pub first_ts: Option<u64>,
    pub last_ts: Option<u64>,
    pub segments: Vec<String>,
    pub chunks: Vec<String>,
    pub bytes: Option<u64>,
    /// What asked for it (`retention_days = 90`).
    pub reason: Option<String>,
    pub entries: Option<u64>,
}

/// `bench`: synthetic load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bench {
    pub writer: Option<u64>,
    pub n: Option<u64>,
    pub pad: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Payloads as the writers build them today (see the `json!` in each writer).
    fn written() -> Vec<(&'static str, Value)> {
        vec![
            (
                "session.start",
                json!({"client": "127.0.0.1:50000", "application": null, "database": "app",
                       "key_id": "k-1", "token_claims": {"sub": "ci"}, "tls": true, "target_tls": false,
                       "recording": {"results": true, "max_session_bytes": 1048576},
                       "masking": {"client": "masked", "recording": "masked"},
                       "access_grant": {"review": "r-0a1b2c3d4e", "request": {"index": 5, "leaf": "ab"}, "until": 9}}),
            ),
            (
                "session.end",
                json!({"reason": "client terminated the session", "duration_ms": 2000, "commands": 3,
                       "refused": 0, "denied": 1, "errors": 0, "bytes_from_client": 100,
                       "bytes_to_client": 200, "recorded_bytes": 150, "truncated_bytes": 0}),
            ),
            (
                "command",
                json!({"protocol": "extended", "portal": "", "statement": null,
                       "classes": ["read"], "commands": ["SELECT"], "tables": ["public.people"],
                       "decision": {"outcome": "review", "rule": "prod-writes", "policies": [],
                                    "holders": ["a", "b"],
                                    "grant": {"review": "r-1", "request": {"index": 1, "leaf": "cd"}, "until": 2},
                                    "grants": [{"rule": "a", "review": "r-1", "request": {"index": 1, "leaf": "cd"}, "until": 2}]},
                       "sql_prefix": "SELECT ", "sql_in_chunk": true}),
            ),
            (
                "command",
                json!({"protocol": "simple", "classes": [], "commands": [], "tables": [],
                       "unparsed": "syntax_error",
                       "syntax_error": {"code": "42601", "message": "syntax error at or near \"FORM\"", "position": 10},
                       "decision": {"outcome": "deny", "unreadable": "0A000", "message": "no"},
                       "sql": "SELECT * FORM t"}),
            ),
            (
                "result",
                json!({"command": 7, "tags": ["SELECT 2"], "rows": 2, "bytes": 60, "duration_us": 1500,
                       "error": null, "skipped": false, "recorded": {"sha256": "ab", "bytes": 60},
                       "truncated_bytes": 4,
                       "masked": {"values": 2, "rules": {"email": 1}, "detectors": {"card": 1}, "undecodable": 1}}),
            ),
            (
                "recording",
                json!({"parts": [[7, 0, 60]], "bytes": 60, "lost": "disk full"}),
            ),
            (
                "auth.failure",
                json!({"user": "bob", "client": "10.0.0.1:4000", "reason": "wrong_key", "method": "apikey",
                       "key_id": "k-2", "earlier": {"client": "10.0.0.1", "reason": "wrong_key",
                       "aggregated": true, "count": 4, "interval_s": 60, "users": ["bob"]}}),
            ),
            (
                "auth.failure",
                json!({"via": "admin-api", "user": "eve", "reason": "unknown_identity"}),
            ),
            (
                "key.created",
                json!({"name": "ci", "kind": "service", "groups": ["deploy"], "expires_at": null,
                       "by": "ops", "key_id": "k-3", "seq": 4, "at": 1700000000}),
            ),
            (
                "key.revoked",
                json!({"name": "ci", "reason": "leaked", "by": "ops", "key_id": "k-3", "seq": 5, "at": 1700000001}),
            ),
            (
                "target.failure",
                json!({"client": "10.0.0.1:4000", "target": "db:5432", "reason": "connection refused"}),
            ),
            (
                "policy.decision",
                json!({"outcome": "deny", "policies": ["p0"], "message": null, "action": "connect", "client": "10.0.0.1:4000"}),
            ),
            (
                "policy.decision",
                json!({"action": "startup_parameter", "parameter": "role", "outcome": "deny", "client": "x"}),
            ),
            (
                "policy.decision",
                json!({"action": "session_setting", "setting": "client_encoding", "value": "SJIS",
                       "outcome": "deny", "client": "x", "message": "m"}),
            ),
            (
                "integrity.mismatch",
                json!({"command": 7, "decided": ["SELECT"], "tags": ["DELETE 1"], "tag": "DELETE 1", "reason": "r"}),
            ),
            (
                "approval.request",
                json!({"review": "r-1", "command": {"index": 7, "leaf": "ef"}, "rule": "prod-writes",
                       "reason": "writes to prod", "approvers": ["dba"], "required": 1, "expires_at": 99}),
            ),
            (
                "approval.request",
                json!({"review": "r-2", "access": {"for_ms": 3600000}, "reason": "oncall",
                       "approvers": [], "required": 2, "expires_at": 99}),
            ),
            (
                "approval.decision",
                json!({"review": "r-1", "requester": "alice", "state": "approved", "approvals": 1,
                       "required": 1, "request": {"index": 8, "leaf": "01"}, "verdict": "approve",
                       "reason": null, "grant_until": 123}),
            ),
            (
                "config.change",
                json!({"file": "/etc/gatehouse.toml", "sha256": "00", "resources": ["pg"]}),
            ),
            (
                "config.change",
                json!({"policy": {"file": "p.cedar", "trigger": "start", "loaded": false, "error": "bad"}}),
            ),
            ("heartbeat", json!({"interval_ms": 1000})),
            (
                "ledger.open",
                json!({"gatehouse": "0.1.0", "verifier_key": "k", "entries": 10}),
            ),
            (
                "ledger.recovery",
                json!({"unclean_shutdown": true, "entries_recovered": 10, "last_entry_ts": null,
                       "batched_window_us": 2000, "gap": {"from_ts": null, "to_ts": 5, "note": "n"},
                       "truncated": {"segment": "0000.log", "offset": 10, "bytes": 3}}),
            ),
            (
                "ledger.recovery",
                json!({"unclean_shutdown": false, "failure": "EIO",
                       "discarded": {"from_index": 3, "count": 2}, "note": "n"}),
            ),
            (
                "ledger.prune",
                json!({"cutoff_ts": 1, "first": 0, "end": 10, "first_ts": 0, "last_ts": 1,
                       "segments": ["0000.log"], "chunks": [], "bytes": 100, "reason": "retention_days = 90", "entries": 10}),
            ),
            ("bench", json!({"writer": 1, "n": 2, "pad": ""})),
        ]
    }

    /// Every field a writer wrote is read: the typed payload, serialised, holds each
    /// written field with its value (it may add `null`s and defaults).
    #[test]
    fn payloads_as_written_today_are_read_field_for_field() {
        for (kind, data) in written() {
            let evidence = Evidence::read(kind, &data);
            assert!(!matches!(evidence, Evidence::Unknown(_)), "{kind}");
            let back = serde_json::to_value(&evidence).unwrap();
            assert!(holds(&back, &data), "{kind}: {back} does not hold {data}");
        }
    }

    /// Whether `read` has every field of `written` with the same value (objects compared
    /// field by field, at any depth).
    fn holds(read: &Value, written: &Value) -> bool {
        match (read, written) {
            (Value::Object(r), Value::Object(w)) => w
                .iter()
                .all(|(k, v)| holds(r.get(k).unwrap_or(&Value::Null), v)),
            (Value::Array(r), Value::Array(w)) => {
                r.len() == w.len() && r.iter().zip(w).all(|(r, w)| holds(r, w))
            }
            _ => read == written,
        }
    }

    #[test]
    fn typed_payloads_round_trip() {
        for (kind, data) in written() {
            let evidence = Evidence::read(kind, &data);
            let again = Evidence::read(kind, &serde_json::to_value(&evidence).unwrap());
            assert_eq!(again, evidence, "{kind}");
        }
    }

    #[test]
    fn the_postgres_part_of_a_command_is_typed() {
        let Evidence::Command(command) = Evidence::read("command", &written()[2].1) else {
            panic!("not a command");
        };
        assert_eq!(command.postgres.text(), Some("SELECT "));
        assert!(command.postgres.sql_in_chunk);
        assert_eq!(command.postgres.tables, ["public.people"]);
        let decision = command.decision.unwrap();
        assert_eq!(decision.outcome.as_deref(), Some("review"));
        assert_eq!(decision.grant.unwrap().request.unwrap().index, 1);
    }

    #[test]
    fn unknown_fields_and_kinds_are_tolerated() {
        let data = json!({"sql": "SELECT 1", "from_the_future": {"x": 1}, "decision": {"outcome": "allow", "why": 2}});
        let Evidence::Command(command) = Evidence::read("command", &data) else {
            panic!("not a command");
        };
        assert_eq!(command.postgres.sql.as_deref(), Some("SELECT 1"));
        assert_eq!(
            Evidence::read("ssh.channel", &data),
            Evidence::Unknown(data)
        );
    }

    #[test]
    fn ill_typed_fields_read_as_absent_and_keep_the_rest() {
        let data = json!({"decision": "odd", "tables": "x", "sql": "SELECT 1"});
        let Evidence::Command(command) = Evidence::read("command", &data) else {
            panic!("not a command");
        };
        assert_eq!(command.decision, None);
        assert!(command.postgres.tables.is_empty());
        assert_eq!(command.postgres.sql.as_deref(), Some("SELECT 1"));
        let Evidence::Result(result) = Evidence::read("result", &json!({"rows": -1, "command": 4}))
        else {
            panic!("not a result");
        };
        assert_eq!((result.rows, result.command), (None, Some(4)));
        // Not an object at all (absent, or malformed): every field absent.
        assert_eq!(
            Evidence::read("session.end", &Value::Null),
            Evidence::SessionEnd(SessionEnd::default())
        );
    }

    #[test]
    fn config_resources_absent_and_empty_differ() {
        let read = |data: Value| match Evidence::read("config.change", &data) {
            Evidence::ConfigChange(c) => c.resources,
            _ => None,
        };
        assert_eq!(read(json!({"file": "f"})), None);
        assert_eq!(read(json!({"file": "f", "resources": []})), Some(vec![]));
        assert_eq!(
            read(json!({"resources": ["pg"]})),
            Some(vec!["pg".to_string()])
        );
    }

    #[test]
    fn masking_reads_off_or_split() {
        let read = |m: Value| match Evidence::read("session.start", &json!({"masking": m})) {
            Evidence::SessionStart(s) => s.masking,
            _ => None,
        };
        assert_eq!(
            read(json!("off")),
            Some(SessionMasking::Named("off".into()))
        );
        assert_eq!(
            read(json!({"client": "clear", "recording": "masked"})),
            Some(SessionMasking::Split {
                client: Some("clear".into()),
                recording: Some("masked".into())
            })
        );
    }
}
