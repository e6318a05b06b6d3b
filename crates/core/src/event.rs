//! The audit event schema (version 1): what one ledger entry says and how it is laid out.
//!
//! An entry is written once as a single line of JSON with a fixed field order and is
//! hashed byte-for-byte; verifiers never re-serialise it. Fields that a later schema
//! adds must be optional so that version-1 readers keep working.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the entry layout written in every entry's `v` field.
pub const SCHEMA_VERSION: u32 = 1;

/// What happened. Serialised as a dotted lower-case name (`session.start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "session.start")]
    SessionStart,
    #[serde(rename = "session.end")]
    SessionEnd,
    #[serde(rename = "command")]
    Command,
    #[serde(rename = "result")]
    Result,
    /// Result data of a session, stored as a chunk; says which command each slice belongs to.
    #[serde(rename = "recording")]
    Recording,
    #[serde(rename = "auth.failure")]
    AuthFailure,
    /// A managed API key was created (from the CLI; recorded by the gateway).
    #[serde(rename = "key.created")]
    KeyCreated,
    /// A managed API key was revoked.
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    /// An authenticated client's session could not reach its target (unreachable, refused
    /// the held credentials, or its TLS certificate did not verify).
    #[serde(rename = "target.failure")]
    TargetFailure,
    #[serde(rename = "policy.decision")]
    PolicyDecision,
    /// The target did something the gateway had not decided (a command tag for a command
    /// that was not in the decided statement): the session was ended.
    #[serde(rename = "integrity.mismatch")]
    IntegrityMismatch,
    #[serde(rename = "approval.request")]
    ApprovalRequest,
    #[serde(rename = "approval.decision")]
    ApprovalDecision,
    #[serde(rename = "config.change")]
    ConfigChange,
    #[serde(rename = "heartbeat")]
    Heartbeat,
    /// The ledger opened its data directory (start of a gateway run).
    #[serde(rename = "ledger.open")]
    LedgerOpen,
    /// The ledger found an unclean shutdown or a torn tail and repaired it.
    #[serde(rename = "ledger.recovery")]
    LedgerRecovery,
    /// Retention pruned old segments: their entries' bodies and recorded data went, their
    /// leaf hashes stayed.
    #[serde(rename = "ledger.prune")]
    LedgerPrune,
    /// Synthetic load written by `gatehouse ledger bench`.
    #[serde(rename = "bench")]
    Bench,
}

impl EventKind {
    /// Every kind, in the order docs/ARCHITECTURE.md lists them.
    pub const ALL: [EventKind; 19] = [
        EventKind::SessionStart,
        EventKind::SessionEnd,
        EventKind::Command,
        EventKind::Result,
        EventKind::Recording,
        EventKind::AuthFailure,
        EventKind::KeyCreated,
        EventKind::KeyRevoked,
        EventKind::TargetFailure,
        EventKind::PolicyDecision,
        EventKind::IntegrityMismatch,
        EventKind::ApprovalRequest,
        EventKind::ApprovalDecision,
        EventKind::ConfigChange,
        EventKind::Heartbeat,
        EventKind::LedgerOpen,
        EventKind::LedgerRecovery,
        EventKind::LedgerPrune,
        EventKind::Bench,
    ];

    /// The name written into entries, e.g. `session.start`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionStart => "session.start",
            EventKind::SessionEnd => "session.end",
            EventKind::Command => "command",
            EventKind::Result => "result",
            EventKind::Recording => "recording",
            EventKind::AuthFailure => "auth.failure",
            EventKind::KeyCreated => "key.created",
            EventKind::KeyRevoked => "key.revoked",
            EventKind::TargetFailure => "target.failure",
            EventKind::PolicyDecision => "policy.decision",
            EventKind::IntegrityMismatch => "integrity.mismatch",
            EventKind::ApprovalRequest => "approval.request",
            EventKind::ApprovalDecision => "approval.decision",
            EventKind::ConfigChange => "config.change",
            EventKind::Heartbeat => "heartbeat",
            EventKind::LedgerOpen => "ledger.open",
            EventKind::LedgerRecovery => "ledger.recovery",
            EventKind::LedgerPrune => "ledger.prune",
            EventKind::Bench => "bench",
        }
    }
}

/// What sort of principal acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    Human,
    Agent,
    Service,
    /// The gateway itself (heartbeats, recovery, configuration).
    System,
}

/// Who acted: an authenticated identity, or the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub kind: ActorKind,
    /// The identity provider that vouched for `id` (an OIDC issuer name, `apikey`, `gatehouse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Actor {
    /// The gateway acting on its own behalf.
    pub fn system() -> Self {
        Actor {
            id: "gatehouse".into(),
            kind: ActorKind::System,
            idp: None,
            groups: Vec::new(),
        }
    }
}

/// The target a session or command concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    pub name: String,
    /// `postgres`, `mysql`, `ssh`, `http`, `kubernetes`, ...
    pub kind: String,
}

/// A large payload stored beside the log as a content-addressed chunk file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Lower-case hex SHA-256 of the chunk's bytes; also its file name.
    pub sha256: String,
    pub size: u64,
}

/// How long a caller waits for its entry: until it is on disk, or only until it is sequenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledged only after the batch holding the entry is fdatasynced.
    #[default]
    Sync,
    /// Acknowledged once sequenced; synced within the configured window.
    Batched,
}

/// An event as a caller hands it to the ledger; the ledger adds index and timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Kind-specific fields, always a JSON object.
    #[serde(default = "empty_object")]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Event {
    /// An event of `kind` by the gateway itself with the given kind-specific fields.
    pub fn system(kind: EventKind, data: Value) -> Self {
        Event {
            kind,
            actor: Some(Actor::system()),
            resource: None,
            session: None,
            data,
            chunks: Vec::new(),
        }
    }

    /// Serialises the event's own fields (`{"kind":...}`), the part of an entry a caller can
    /// prepare before the ledger assigns index and timestamp.
    pub fn to_body(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_vec(self).expect("event serialisation is infallible")
    }

    /// Writes this event as one canonical entry line (without the trailing newline).
    ///
    /// Field order is fixed: `v`, `i`, `ts`, `kind`, `actor`, `resource`, `session`,
    /// `data`, `chunks`. The bytes written here are the bytes that get hashed.
    pub fn write_entry(&self, index: u64, ts_us: u64, out: &mut Vec<u8>) {
        let entry = EntryOut {
            v: SCHEMA_VERSION,
            i: index,
            ts: ts_us,
            kind: self.kind,
            actor: self.actor.as_ref(),
            resource: self.resource.as_ref(),
            session: self.session.as_deref(),
            data: &self.data,
            chunks: &self.chunks,
        };
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_writer(out, &entry).expect("entry serialisation is infallible");
    }
}

/// Writes one canonical entry line (without the trailing newline) from a body made by
/// [`Event::to_body`]: `{"v":1,"i":<index>,"ts":<ts>,` followed by the body's fields.
///
/// Produces exactly the bytes of [`Event::write_entry`], which the tests check, so the
/// ledger can splice pre-serialised bodies without re-encoding them.
pub fn write_entry_line(index: u64, ts_us: u64, body: &[u8], out: &mut Vec<u8>) {
    debug_assert!(body.first() == Some(&b'{'));
    out.extend_from_slice(b"{\"v\":");
    push_u64(out, u64::from(SCHEMA_VERSION));
    out.extend_from_slice(b",\"i\":");
    push_u64(out, index);
    out.extend_from_slice(b",\"ts\":");
    push_u64(out, ts_us);
    out.push(b',');
    out.extend_from_slice(&body[1..]);
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[derive(Serialize)]
struct EntryOut<'a> {
    v: u32,
    i: u64,
    ts: u64,
    kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a ResourceRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    data: &'a Value,
    #[serde(skip_serializing_if = "<[ChunkRef]>::is_empty")]
    chunks: &'a [ChunkRef],
}

/// The fields a verifier needs from an entry line; everything else is carried by the hash.
///
/// `kind` is kept as text so entries written by newer gateways still verify.
#[derive(Debug, Clone, Deserialize)]
pub struct EntryHeader {
    pub v: u32,
    pub i: u64,
    pub ts: u64,
    pub kind: String,
    #[serde(default)]
    pub chunks: Vec<ChunkRef>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The architecture's list of kinds is the code's: every kind, in order, and a new
    /// variant cannot be left out of [`EventKind::ALL`] (the match below stops compiling).
    #[test]
    fn the_documented_kinds_are_the_kinds() {
        let doc = include_str!("../../../docs/ARCHITECTURE.md");
        let listed = doc
            .split_once("Kinds: ")
            .and_then(|(_, rest)| rest.split_once(".\n\n"))
            .map(|(list, _)| list)
            .expect("docs/ARCHITECTURE.md lists the kinds after `Kinds: `");
        let names: Vec<&str> = listed
            .split(',')
            .map(|n| n.trim().trim_matches('`'))
            .collect();
        let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, kinds);
        for kind in EventKind::ALL {
            match kind {
                EventKind::SessionStart
                | EventKind::SessionEnd
                | EventKind::Command
                | EventKind::Result
                | EventKind::Recording
                | EventKind::AuthFailure
                | EventKind::KeyCreated
                | EventKind::KeyRevoked
                | EventKind::TargetFailure
                | EventKind::PolicyDecision
                | EventKind::IntegrityMismatch
                | EventKind::ApprovalRequest
                | EventKind::ApprovalDecision
                | EventKind::ConfigChange
                | EventKind::Heartbeat
                | EventKind::LedgerOpen
                | EventKind::LedgerRecovery
                | EventKind::LedgerPrune
                | EventKind::Bench => {}
            }
        }
    }

    #[test]
    fn entry_line_has_fixed_field_order_and_round_trips() {
        let event = Event {
            kind: EventKind::Command,
            actor: Some(Actor {
                id: "alice@example.com".into(),
                kind: ActorKind::Human,
                idp: Some("okta".into()),
                groups: vec!["dba".into()],
            }),
            resource: Some(ResourceRef {
                name: "pg-prod".into(),
                kind: "postgres".into(),
            }),
            session: Some("s-1".into()),
            data: json!({"sql": "select 1"}),
            chunks: vec![ChunkRef {
                sha256: "ab".repeat(32),
                size: 3,
            }],
        };
        let mut line = Vec::new();
        event.write_entry(7, 1_700_000_000_000_000, &mut line);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.starts_with(r#"{"v":1,"i":7,"ts":1700000000000000,"kind":"command","actor":{"id":"alice@example.com","kind":"human","idp":"okta","groups":["dba"]},"resource":{"name":"pg-prod","kind":"postgres"},"session":"s-1","data":{"sql":"select 1"},"chunks":"#),
            "{text}"
        );
        let header: EntryHeader = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (header.v, header.i, header.kind.as_str()),
            (1, 7, "command")
        );
        assert_eq!(header.chunks.len(), 1);
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn spliced_line_equals_serialised_line() {
        let mut event = Event::system(EventKind::Bench, json!({"x": [1, 2, {"y": "z"}]}));
        event.session = Some("abc".into());
        for (index, ts) in [(0, 0), (9, 10), (u64::MAX, 1_700_000_000_123_456)] {
            let mut a = Vec::new();
            let mut b = Vec::new();
            event.write_entry(index, ts, &mut a);
            write_entry_line(index, ts, &event.to_body(), &mut b);
            assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        }
    }

    #[test]
    fn system_event_omits_empty_fields() {
        let mut line = Vec::new();
        Event::system(EventKind::Heartbeat, json!({})).write_entry(0, 5, &mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"v":1,"i":0,"ts":5,"kind":"heartbeat","actor":{"id":"gatehouse","kind":"system"},"data":{}}"#
        );
    }

    #[test]
    fn kind_names_match_serde_names() {
        for kind in [
            EventKind::SessionStart,
            EventKind::AuthFailure,
            EventKind::TargetFailure,
            EventKind::IntegrityMismatch,
            EventKind::ApprovalDecision,
            EventKind::LedgerRecovery,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
