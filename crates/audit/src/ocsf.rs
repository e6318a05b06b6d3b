//! Ledger entries as OCSF 1.3.0 events, for SIEMs that speak the Open Cybersecurity Schema
//! Framework: [`event`] maps one entry, [`Mapper`] maps a run of entries and fills in what
//! an entry leaves to earlier ones (a session's client address, a review's requester).
//! Pure: the caller reads the entries and passes each one's leaf hash.
//!
//! Classes used (OCSF 1.3.0):
//!
//! | entry | class | activity |
//! |---|---|---|
//! | `session.start` | Authentication (3002) | Logon, success |
//! | `auth.failure` | Authentication (3002) | Logon, failure |
//! | `session.end` | Authentication (3002) | Logoff |
//! | `command`, `result` on postgres/mysql | Datastore Activity (6005) | Query |
//! | `target.failure`, a refused `connect` (`policy.decision`) on postgres/mysql | Datastore Activity (6005) | Connect, failure |
//! | `command` on ssh | SSH Activity (4007) | Traffic, or Refuse when denied |
//! | `command` on http/kubernetes | API Activity (6003) | Create/Read/Update/Delete/Other |
//! | `approval.request`, `approval.decision` | User Access Management (3005) | Assign Privileges, or Other (the request; the use) |
//! | `key.created`, `key.revoked` | Account Change (3001) | Create, Disable |
//!
//! Every event is traceable and provable: `metadata.uid` is the ledger index as text and
//! `metadata.sequence` the same index as a number (OCSF's "sequence number ... to make the
//! exact ordering of events unambiguous", which is what a ledger index is);
//! `unmapped.gatehouse` carries the index, the entry's leaf hash (hex), its kind and its
//! `data` as written, so `gatehouse ledger proof --index` can prove the event's source.
//! OCSF has no attribute for a record's hash, and `unmapped` is the schema's place for
//! source fields without one. `metadata.correlation_uid` is the session (or, for
//! approvals, the review) that ties related events together.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use gatehouse_core::Evidence;
use gatehouse_core::evidence::{
    ApprovalDecision, ApprovalRequest, AuthFailure, Command, CommandResult, Decision, KeyChange,
    PolicyDecision, SessionEnd, SessionStart, TargetFailure,
};
use serde_json::{Map, Value, json};

/// The OCSF schema version the events follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.3.0";

/// The OCSF event for one ledger entry (JSON), with its leaf hash (hex), or `None` for an
/// entry without an OCSF counterpart (see [`Mapper::event`]). Each entry is mapped on its
/// own: a command's client address and an approval decision's requester, which only earlier
/// entries say, are left at their fallbacks; [`Mapper`] fills them in.
pub fn event(entry: &Value, leaf: &str) -> Option<Value> {
    Mapper::default().event(entry, leaf)
}

/// Maps entries read in ledger order, remembering what later entries refer back to: each
/// open session's client address, database and statements awaiting their result, and each
/// open review's requester and what it asks for. Memory is released when a session ends
/// or a review is finished.
#[derive(Debug, Default)]
pub struct Mapper {
    sessions: HashMap<String, SessionFacts>,
    reviews: HashMap<String, ReviewFacts>,
}

#[derive(Debug, Default)]
struct SessionFacts {
    client: Option<String>,
    database: Option<String>,
    /// Statement text by `command` entry index, until its `result`.
    statements: HashMap<u64, String>,
}

#[derive(Debug, Clone)]
struct ReviewFacts {
    requester: Value,
    privilege: String,
    rule: Option<String>,
    access: bool,
}

/// An OCSF event class: its uid, name and category.
struct Class {
    uid: u64,
    name: &'static str,
    category_uid: u64,
    category_name: &'static str,
}

const AUTHENTICATION: Class = Class {
    uid: 3002,
    name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const ACCOUNT_CHANGE: Class = Class {
    uid: 3001,
    name: "Account Change",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const USER_ACCESS: Class = Class {
    uid: 3005,
    name: "User Access Management",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const SSH_ACTIVITY: Class = Class {
    uid: 4007,
    name: "SSH Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
};
const DATASTORE_ACTIVITY: Class = Class {
    uid: 6005,
    name: "Datastore Activity",
    category_uid: 6,
    category_name: "Application Activity",
};

/// The outcome of an event (`status_id`): 1 Success, 2 Failure, 0 Unknown, 99 Other.
enum Status {
    Success,
    Failure,
    Unknown,
    /// Not mapped: the text says what it is (a review still pending).
    Other(&'static str),
}

/// The security control's verdict (`action_id`, `disposition_id`; security_control profile).
#[derive(Clone, Copy)]
struct Verdict {
    action_id: u64,
    action: &'static str,
    disposition_id: u64,
    disposition: &'static str,
}

const ALLOWED: Verdict = Verdict {
    action_id: 1,
    action: "Allowed",
    disposition_id: 1,
    disposition: "Allowed",
};
const DENIED: Verdict = Verdict {
    action_id: 2,
    action: "Denied",
    disposition_id: 2,
    disposition: "Blocked",
};
/// Held for review: not (yet) allowed nor denied; its fate is in `approval.decision`
/// entries, so the action is unknown and the disposition "Delayed".
const HELD: Verdict = Verdict {
    action_id: 0,
    action: "Unknown",
    disposition_id: 14,
    disposition: "Delayed",
};
const UNDECIDED: Verdict = Verdict {
    action_id: 0,
    action: "Unknown",
    disposition_id: 0,
    disposition: "Unknown",
};
/// Allowed by the gateway, but the target failed (unreachable, refused the credentials).
const TARGET_ERROR: Verdict = Verdict {
    action_id: 1,
    action: "Allowed",
    disposition_id: 27,
    disposition: "Error",
};

impl Mapper {
    /// A mapper that has seen no entries.
    pub fn new() -> Self {
        Mapper::default()
    }

    /// The OCSF event for `entry` (the next entry in ledger order) with its `leaf` hash,
    /// or `None` when the entry has no OCSF counterpart:
    ///
    /// - `recording`: result bytes, stored as a chunk; the `result` event already says what
    ///   ran and its `recorded` hash ties the bytes to it. Bytes are not an activity.
    /// - `heartbeat`, `ledger.open`, `ledger.recovery`: the ledger's own liveness and
    ///   housekeeping, evidence for the ledger's verifier rather than for a SIEM.
    /// - `bench`: synthetic load from `gatehouse ledger bench`.
    /// - `config.change`: a configuration or policy reload; OCSF 1.3.0 has no class for an
    ///   application's configuration changing (Device Config State Change is about a
    ///   device's security posture).
    /// - `policy.decision` other than a refused `connect`, `result` on other than
    ///   postgres/mysql, and kinds this version does not know: nothing to say reliably.
    ///
    /// An entry without an index (`i`) or kind is not a ledger entry: `None`.
    pub fn event(&mut self, entry: &Value, leaf: &str) -> Option<Value> {
        let kind = entry["kind"].as_str()?;
        entry["i"].as_u64()?;
        let resource_kind = entry["resource"]["kind"].as_str().unwrap_or("");
        let datastore = matches!(resource_kind, "postgres" | "mysql");
        match Evidence::read(kind, &entry["data"]) {
            Evidence::SessionStart(start) => {
                let out = self.authentication(entry, leaf, &Logon::Start(&start));
                if let Some(session) = entry["session"].as_str() {
                    let facts = self.sessions.entry(session.to_string()).or_default();
                    facts.client = filled(start.client.as_deref()).map(str::to_string);
                    facts.database = filled(start.database.as_deref()).map(str::to_string);
                }
                Some(out)
            }
            Evidence::SessionEnd(end) => {
                let out = self.authentication(entry, leaf, &Logon::End(&end));
                if let Some(session) = entry["session"].as_str() {
                    self.sessions.remove(session);
                }
                Some(out)
            }
            Evidence::AuthFailure(failure) => {
                Some(self.authentication(entry, leaf, &Logon::Failure(&failure)))
            }
            Evidence::Command(command) if datastore => {
                Some(self.datastore_command(entry, leaf, &command))
            }
            Evidence::Command(command) if resource_kind == "ssh" => {
                Some(self.ssh_command(entry, leaf, &command))
            }
            Evidence::Command(command) if matches!(resource_kind, "http" | "kubernetes") => {
                Some(self.api_command(entry, leaf, &command))
            }
            Evidence::Result(result) if datastore => {
                Some(self.datastore_result(entry, leaf, &result))
            }
            Evidence::TargetFailure(failure) if datastore => {
                Some(self.datastore_connect(entry, leaf, &Connect::Target(&failure)))
            }
            Evidence::PolicyDecision(decision)
                if datastore && decision.action.as_deref() == Some("connect") =>
            {
                Some(self.datastore_connect(entry, leaf, &Connect::Refused(&decision)))
            }
            Evidence::ApprovalRequest(request) => {
                Some(self.approval_request(entry, leaf, &request))
            }
            Evidence::ApprovalDecision(decision) => {
                Some(self.approval_decision(entry, leaf, &decision))
            }
            Evidence::KeyCreated(key) => Some(account_change(entry, leaf, &key, true)),
            Evidence::KeyRevoked(key) => Some(account_change(entry, leaf, &key, false)),
            _ => None,
        }
    }

    fn session(&self, entry: &Value) -> Option<&SessionFacts> {
        self.sessions.get(entry["session"].as_str()?)
    }

    /// Where the client connected from: the entry's own `client` (from its `data`), else
    /// its session's.
    fn client(&self, entry: &Value, own: Option<&str>) -> Option<Value> {
        filled(own)
            .or_else(|| self.session(entry)?.client.as_deref())
            .map(endpoint)
    }

    /// `src_endpoint` where the class requires one. When the address is unknown (the
    /// session started before the entries mapped), the session id names the client's
    /// end, so the event can still be joined with the session's `session.start`.
    fn required_client(&self, entry: &Value, own: Option<&str>) -> Value {
        self.client(entry, own)
            .unwrap_or_else(|| match text(&entry["session"]) {
                Some(session) => json!({"uid": session}),
                None => json!({"name": "unknown"}),
            })
    }

    fn authentication(&self, entry: &Value, leaf: &str, logon: &Logon) -> Value {
        let (activity_id, activity, status) = match logon {
            Logon::Start(_) => (1, "Logon", Status::Success),
            Logon::Failure(_) => (1, "Logon", Status::Failure),
            Logon::End(_) => (2, "Logoff", Status::Success),
        };
        let mut out = base(&AUTHENTICATION, activity_id, activity, entry, leaf, &status);
        // The subject: the identity that signed in, or (failures) the name it claimed.
        let mut user = match logon {
            Logon::Failure(failure) => claimed_user(failure.user.as_deref()),
            _ => user(&entry["actor"]).unwrap_or_else(unknown_user),
        };
        if let (Some(key), Value::Object(u)) = (logon.key_id(), &mut user) {
            u.insert("credential_uid".into(), key.into());
        }
        out.insert("user".into(), user);
        // What was signed in to: the resource, or the admin API (`via`).
        let service = text(&entry["resource"]["name"])
            .map(str::to_string)
            .or_else(|| logon.via().map(|via| format!("gatehouse {via}")))
            .unwrap_or_else(|| "gatehouse".to_string());
        out.insert("service".into(), json!({"name": service}));
        if let Some(src) = self.client(entry, logon.client()) {
            out.insert("src_endpoint".into(), src);
        }
        if let Some(session) = text(&entry["session"]) {
            out.insert("session".into(), json!({"uid": session}));
        }
        out.insert("is_remote".into(), true.into());
        let (protocol_id, protocol) = auth_protocol(entry, logon);
        out.insert("auth_protocol_id".into(), protocol_id.into());
        out.insert("auth_protocol".into(), protocol.into());
        // The identity provider that vouched for the user rides on the actor.
        if text(&entry["actor"]["idp"]).is_some() {
            out.insert("actor".into(), actor(entry));
        }
        let who = text(&entry["actor"]["id"])
            .or_else(|| logon.user())
            .unwrap_or("?");
        let message = match logon {
            Logon::Start(_) => format!("{who} signed in to {service}"),
            Logon::Failure(failure) => {
                let reason = filled(failure.reason.as_deref()).unwrap_or("unknown reason");
                out.insert("status_detail".into(), reason.into());
                // An aggregated entry stands for this many failures (OCSF's `count`).
                if let Some(count) = failure.count {
                    out.insert("count".into(), count.into());
                    let from = filled(failure.client.as_deref()).unwrap_or("?");
                    format!("{count} sign-ins from {from} to {service} failed: {reason}")
                } else {
                    format!("sign-in of {who:?} to {service} failed: {reason}")
                }
            }
            Logon::End(end) => {
                if let Some(reason) = filled(end.reason.as_deref()) {
                    out.insert("status_detail".into(), reason.into());
                }
                if let Some(ms) = end.duration_ms {
                    let end = time_ms(entry);
                    out.insert("duration".into(), ms.into());
                    out.insert("start_time".into(), end.saturating_sub(ms).into());
                    out.insert("end_time".into(), end.into());
                }
                format!("{who} signed out of {service}")
            }
        };
        out.insert("message".into(), message.into());
        Value::Object(out)
    }

    fn datastore_command(&mut self, entry: &Value, leaf: &str, command: &Command) -> Value {
        let (verdict, status, detail) = decision(command.decision.as_ref());
        let mut out = base(&DATASTORE_ACTIVITY, 4, "Query", entry, leaf, &status);
        self.datastore_common(&mut out, entry, verdict, None);
        if let Some(detail) = detail {
            out.insert("status_detail".into(), detail.into());
        }
        if let Some(policy) = decision_policy(command.decision.as_ref()) {
            out.insert("policy".into(), policy);
        }
        let pg = &command.postgres;
        let sql = filled(pg.sql.as_deref()).or_else(|| filled(pg.sql_prefix.as_deref()));
        if let Some(sql) = sql {
            // A long statement is stored as a chunk; the entry (and so the event) holds
            // its first part, and `unmapped.gatehouse.data.sql_in_chunk` says so.
            out.insert("query_info".into(), json!({"query_string": sql}));
            out.insert("message".into(), sql.into());
            if let (Some(session), Some(i)) = (text(&entry["session"]), entry["i"].as_u64()) {
                self.sessions
                    .entry(session.to_string())
                    .or_default()
                    .statements
                    .insert(i, sql.to_string());
            }
        }
        if let [table] = pg.tables.as_slice()
            && let Some(name) = filled(Some(table))
        {
            // One `table` object: only a statement on a single table has one.
            out.insert("table".into(), json!({"name": name}));
        }
        Value::Object(out)
    }

    fn datastore_result(&mut self, entry: &Value, leaf: &str, result: &CommandResult) -> Value {
        let error = filled(result.error.as_deref());
        let skipped = result.skipped;
        let status = if error.is_some() || skipped {
            Status::Failure
        } else {
            Status::Success
        };
        let mut out = base(&DATASTORE_ACTIVITY, 4, "Query", entry, leaf, &status);
        // Only admitted statements run and have a result.
        self.datastore_common(&mut out, entry, ALLOWED, None);
        if let Some(error) = error {
            out.insert("status_detail".into(), error.into());
        } else if skipped {
            out.insert(
                "status_detail".into(),
                "skipped: the server discarded it after an earlier error".into(),
            );
        }
        if let Some(us) = result.duration_us {
            out.insert("duration".into(), (us / 1000).into());
        }
        let command = result.command;
        let statement = match (text(&entry["session"]), command) {
            (Some(session), Some(command)) => self
                .sessions
                .get_mut(session)
                .and_then(|s| s.statements.remove(&command)),
            _ => None,
        };
        if let Some(sql) = statement {
            out.insert("query_info".into(), json!({"query_string": sql}));
        }
        let rows = result.rows.unwrap_or(0);
        let message = match command {
            Some(command) => format!("result of command {command}: {rows} rows"),
            None => format!("result: {rows} rows"),
        };
        out.insert("message".into(), message.into());
        Value::Object(out)
    }

    /// A session that never started: the gateway refused the connection (`policy.decision`)
    /// or the target could not be reached (`target.failure`).
    fn datastore_connect(&mut self, entry: &Value, leaf: &str, connect: &Connect) -> Value {
        let refused = matches!(connect, Connect::Refused(_));
        let verdict = if refused { DENIED } else { TARGET_ERROR };
        let mut out = base(
            &DATASTORE_ACTIVITY,
            3,
            "Connect",
            entry,
            leaf,
            &Status::Failure,
        );
        let (client, detail, policies, target) = match connect {
            Connect::Refused(d) => (
                d.client.as_deref(),
                filled(d.reason.as_deref())
                    .or_else(|| filled(d.message.as_deref()))
                    .or_else(|| filled(d.error.as_deref())),
                d.policies.as_slice(),
                None,
            ),
            Connect::Target(f) => (
                f.client.as_deref(),
                filled(f.reason.as_deref()),
                &[][..],
                f.target.as_deref(),
            ),
        };
        self.datastore_common(&mut out, entry, verdict, client);
        let detail = detail.unwrap_or(if refused {
            "refused by access policy"
        } else {
            "target unavailable"
        });
        out.insert("status_detail".into(), detail.into());
        if let Some(policy) = policy(None, policies) {
            out.insert("policy".into(), policy);
        }
        if let Some(target) = filled(target) {
            out.insert("dst_endpoint".into(), endpoint(target));
        }
        let resource = text(&entry["resource"]["name"]).unwrap_or("?");
        out.insert(
            "message".into(),
            format!("connection to {resource} failed: {detail}").into(),
        );
        Value::Object(out)
    }

    /// What every Datastore Activity event carries: who, from where, which database, and
    /// the gateway's verdict (security_control profile, declared in `metadata.profiles`).
    /// `client` is the entry's own client address, when its kind has one.
    fn datastore_common(
        &self,
        out: &mut Map<String, Value>,
        entry: &Value,
        verdict: Verdict,
        client: Option<&str>,
    ) {
        out.insert("actor".into(), actor(entry));
        out.insert("src_endpoint".into(), self.required_client(entry, client));
        let resource = text(&entry["resource"]["name"]).unwrap_or("unknown");
        // The session's database; no entry mapped here names one in its own `data`.
        let database = self
            .session(entry)
            .and_then(|s| s.database.as_deref())
            .unwrap_or(resource);
        // type_id 1: Relational (both kinds mapped here are relational databases).
        out.insert(
            "database".into(),
            json!({"name": database, "type_id": 1, "type": "Relational"}),
        );
        // The resource as Gatehouse names it: the endpoint hosting the datastore.
        out.insert("dst_endpoint".into(), json!({"name": resource}));
        out.insert("type_id".into(), 1.into());
        out.insert("type".into(), "Database".into());
        verdict_into(out, verdict);
    }

    /// The `decision` is typed (shared by every protocol's `command`); the SSH fields
    /// (`client`, `target`, the command's text) are read by name: no gateway writes SSH
    /// entries yet, so they have no type in `gatehouse_core::evidence` to read them by.
    fn ssh_command(&self, entry: &Value, leaf: &str, command: &Command) -> Value {
        let data = &entry["data"];
        let (verdict, status, detail) = decision(command.decision.as_ref());
        // A refused command is a refused request; anything else is traffic on the session.
        let (activity_id, activity) = if verdict.action_id == 2 {
            (5, "Refuse")
        } else {
            (6, "Traffic")
        };
        let mut out = base(&SSH_ACTIVITY, activity_id, activity, entry, leaf, &status);
        add_profile(&mut out, "security_control");
        verdict_into(&mut out, verdict);
        if let Some(detail) = detail {
            out.insert("status_detail".into(), detail.into());
        }
        if let Some(policy) = decision_policy(command.decision.as_ref()) {
            out.insert("policy".into(), policy);
        }
        out.insert("actor".into(), actor(entry));
        out.insert(
            "src_endpoint".into(),
            self.required_client(entry, text(&data["client"])),
        );
        let resource = text(&entry["resource"]["name"]).unwrap_or("unknown");
        let dst = text(&data["target"]).map_or_else(|| json!({"name": resource}), endpoint);
        out.insert("dst_endpoint".into(), dst);
        if let Some(command) = command_text(data) {
            out.insert("message".into(), command.into());
        }
        Value::Object(out)
    }

    /// The `decision` is typed (shared by every protocol's `command`); the HTTP and
    /// Kubernetes fields (`verb`/`method`, `path`/`url`/`resource`, `client`, the text) are
    /// read by name: no gateway writes these entries yet, so they have no type in
    /// `gatehouse_core::evidence` to read them by.
    fn api_command(&self, entry: &Value, leaf: &str, command: &Command) -> Value {
        let data = &entry["data"];
        let (_, status, detail) = decision(command.decision.as_ref());
        let verb = text(&data["verb"]).or_else(|| text(&data["method"]));
        let (activity_id, activity) = api_activity(verb.unwrap_or(""));
        let mut out = base(&API_ACTIVITY, activity_id, activity, entry, leaf, &status);
        if let Some(detail) = detail {
            out.insert("status_detail".into(), detail.into());
        }
        let resource = text(&entry["resource"]["name"]).unwrap_or("unknown");
        let kind = text(&entry["resource"]["kind"]).unwrap_or("unknown");
        // The operation as the client asked for it: `GET /path`, a Kubernetes verb on its
        // resource, or whatever text the entry recorded.
        let target = text(&data["path"])
            .or_else(|| text(&data["url"]))
            .or_else(|| text(&data["resource"]));
        let operation = match (verb, target) {
            (Some(v), Some(t)) => format!("{v} {t}"),
            (Some(v), None) => v.to_string(),
            (None, _) => command_text(data).unwrap_or("unknown").to_string(),
        };
        out.insert(
            "api".into(),
            json!({"operation": operation, "service": {"name": resource}}),
        );
        out.insert(
            "resources".into(),
            json!([{"name": resource, "type": kind}]),
        );
        out.insert("actor".into(), actor(entry));
        out.insert(
            "src_endpoint".into(),
            self.required_client(entry, text(&data["client"])),
        );
        out.insert("message".into(), operation.into());
        Value::Object(out)
    }

    fn approval_request(&mut self, entry: &Value, leaf: &str, request: &ApprovalRequest) -> Value {
        let resource = text(&entry["resource"]["name"]).unwrap_or("unknown");
        let access = request.access.is_some();
        let privilege = if access {
            format!("connect:{resource}")
        } else {
            match request.command.as_ref().map(|c| c.index) {
                Some(index) => format!("execute:{resource}:command#{index}"),
                None => format!("execute:{resource}"),
            }
        };
        let requester = user(&entry["actor"]).unwrap_or_else(unknown_user);
        // Asked for, not yet assigned: OCSF 1.3.0 has no "request" activity here.
        let mut out = base(
            &USER_ACCESS,
            99,
            "Request",
            entry,
            leaf,
            &Status::Other("Pending"),
        );
        out.insert("user".into(), requester.clone());
        out.insert("privileges".into(), json!([privilege]));
        out.insert("actor".into(), actor(entry));
        out.insert("resource".into(), resource_details(entry));
        if let Some(reason) = filled(request.reason.as_deref()) {
            out.insert("status_detail".into(), reason.into());
        }
        let review = filled(request.review.as_deref()).unwrap_or("?");
        out["metadata"]["correlation_uid"] = review.into();
        out.insert(
            "message".into(),
            format!("review {review} asks for {privilege}").into(),
        );
        if let Some(id) = filled(request.review.as_deref()) {
            self.reviews.insert(
                id.to_string(),
                ReviewFacts {
                    requester,
                    privilege,
                    rule: filled(request.rule.as_deref()).map(str::to_string),
                    access,
                },
            );
        }
        Value::Object(out)
    }

    fn approval_decision(
        &mut self,
        entry: &Value,
        leaf: &str,
        decision: &ApprovalDecision,
    ) -> Value {
        let resource = text(&entry["resource"]["name"]).unwrap_or("unknown");
        let review = filled(decision.review.as_deref()).unwrap_or("?");
        let state = filled(decision.state.as_deref()).unwrap_or("unknown");
        let facts = self.reviews.get(review).cloned();
        // The requester: remembered from the request; else, when no approver decided
        // (no `verdict`: the session's own ends), the entry's actor is the requester.
        let requester = facts
            .as_ref()
            .map(|f| f.requester.clone())
            .or_else(|| {
                decision
                    .verdict
                    .is_none()
                    .then(|| user(&entry["actor"]))
                    .flatten()
            })
            .unwrap_or_else(unknown_user);
        let privilege = facts.as_ref().map_or_else(
            || format!("review:{review}:{resource}"),
            |f| f.privilege.clone(),
        );
        let mut privileges = vec![Value::String(privilege)];
        // An approval given for a duration (`for`) is also a grant of like statements (or
        // of access) until then.
        if let Some(until) = decision.grant_until {
            let until = rfc3339_ms(until);
            let granted = match &facts {
                Some(f) if f.access => format!("connect:{resource}:until={until}"),
                Some(ReviewFacts {
                    rule: Some(rule), ..
                }) => format!("execute:{resource}:rule={rule}:until={until}"),
                _ => format!("execute:{resource}:grant-of={review}:until={until}"),
            };
            privileges.push(granted.into());
        }
        let (activity_id, activity, status) = match state {
            "approved" => (1, "Assign Privileges", Status::Success),
            "denied" | "expired" | "cancelled" => (1, "Assign Privileges", Status::Failure),
            "pending" => (1, "Assign Privileges", Status::Other("Pending")),
            // The approved statement ran: the privilege was used.
            "executed" => (99, "Use", Status::Success),
            _ => (1, "Assign Privileges", Status::Unknown),
        };
        let mut out = base(&USER_ACCESS, activity_id, activity, entry, leaf, &status);
        out.insert("user".into(), requester);
        out.insert("privileges".into(), Value::Array(privileges));
        let mut who = actor(entry);
        if decision.verdict.is_some()
            && let Some(who) = who.as_object_mut()
        {
            // An approver decides through the admin API, not from the requester's session
            // the entry names.
            who.remove("session");
        }
        out.insert("actor".into(), who);
        out.insert("resource".into(), resource_details(entry));
        let mut detail = state.to_string();
        if let (Some(n), Some(of)) = (decision.approvals, decision.required) {
            detail.push_str(&format!(" ({n} of {of} approvals)"));
        }
        if let Some(reason) = filled(decision.reason.as_deref()) {
            detail.push_str(&format!(": {reason}"));
        }
        out.insert("status_detail".into(), detail.clone().into());
        out["metadata"]["correlation_uid"] = review.into();
        out.insert(
            "message".into(),
            format!("review {review}: {detail}").into(),
        );
        if matches!(state, "denied" | "expired" | "cancelled" | "executed") {
            self.reviews.remove(review);
        }
        Value::Object(out)
    }
}

/// A sign-in entry's kind, with its payload.
enum Logon<'a> {
    Start(&'a SessionStart),
    Failure(&'a AuthFailure),
    End(&'a SessionEnd),
}

impl Logon<'_> {
    /// The managed API key (or `oidc:<issuer>`) signed in with.
    fn key_id(&self) -> Option<&str> {
        match self {
            Logon::Start(start) => filled(start.key_id.as_deref()),
            Logon::Failure(failure) => filled(failure.key_id.as_deref()),
            Logon::End(_) => None,
        }
    }

    /// The client's address the entry itself says.
    fn client(&self) -> Option<&str> {
        match self {
            Logon::Start(start) => start.client.as_deref(),
            Logon::Failure(failure) => failure.client.as_deref(),
            Logon::End(_) => None,
        }
    }

    /// Where a failed sign-in was tried when not at a resource.
    fn via(&self) -> Option<&str> {
        match self {
            Logon::Failure(failure) => filled(failure.via.as_deref()),
            _ => None,
        }
    }

    /// The name a failed sign-in claimed.
    fn user(&self) -> Option<&str> {
        match self {
            Logon::Failure(failure) => filled(failure.user.as_deref()),
            _ => None,
        }
    }

    fn method(&self) -> Option<&str> {
        match self {
            Logon::Failure(failure) => filled(failure.method.as_deref()),
            _ => None,
        }
    }
}

/// A connection that failed: refused by access policy, or its target unreachable.
enum Connect<'a> {
    Refused(&'a PolicyDecision),
    Target(&'a TargetFailure),
}

/// Account Change rather than User Access Management: a managed key is the credential an
/// identity signs in with (its `name` is the identity), so creating one creates a way in
/// for that account and revoking it disables it; no privilege changes (the key's groups
/// are fixed when it is made), and User Access Management requires `privileges`.
fn account_change(entry: &Value, leaf: &str, key: &KeyChange, created: bool) -> Value {
    let (activity_id, activity) = if created {
        (1, "Create")
    } else {
        (5, "Disable")
    };
    let mut out = base(
        &ACCOUNT_CHANGE,
        activity_id,
        activity,
        entry,
        leaf,
        &Status::Success,
    );
    let name = filled(key.name.as_deref()).unwrap_or("unknown");
    let (type_id, type_name) = user_type(filled(key.kind.as_deref()));
    let mut user = json!({"name": name, "type_id": type_id, "type": type_name});
    if let Some(key) = filled(key.key_id.as_deref()) {
        user["credential_uid"] = key.into();
    }
    if let Some(groups) = group_names(key.groups.iter().map(String::as_str)) {
        user["groups"] = groups;
    }
    out.insert("user".into(), user);
    // Who made the change (the CLI's operator), on whose behalf the gateway recorded it.
    let actor = match filled(key.by.as_deref()) {
        Some(by) => json!({"user": {"name": by}, "app_name": "gatehouse"}),
        None => actor(entry),
    };
    out.insert("actor".into(), actor);
    if let Some(reason) = filled(key.reason.as_deref()) {
        out.insert("status_detail".into(), reason.into());
    }
    let key = filled(key.key_id.as_deref()).unwrap_or("?");
    let verb = if created { "created" } else { "revoked" };
    out.insert(
        "message".into(),
        format!("API key {key} of {name} {verb}").into(),
    );
    Value::Object(out)
}

/// The attributes every event has: classification, time, severity, status, metadata and
/// the entry itself under `unmapped.gatehouse`.
fn base(
    class: &Class,
    activity_id: u64,
    activity: &str,
    entry: &Value,
    leaf: &str,
    status: &Status,
) -> Map<String, Value> {
    let index = entry["i"].as_u64().unwrap_or(0);
    let kind = entry["kind"].as_str().unwrap_or("");
    let time = time_ms(entry);
    let (status_id, status_name) = match status {
        Status::Success => (1, "Success"),
        Status::Failure => (2, "Failure"),
        Status::Unknown => (0, "Unknown"),
        Status::Other(text) => (99, *text),
    };
    // Gatehouse grades nothing itself: failures and denials are Low, the rest Informational.
    let (severity_id, severity) = if status_id == 2 {
        (2, "Low")
    } else {
        (1, "Informational")
    };
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {"name": "Gatehouse", "vendor_name": "Gatehouse"},
        "uid": index.to_string(),
        "sequence": index,
        "event_code": kind,
        "log_name": "ledger",
        "logged_time": time,
    });
    if let Some(session) = text(&entry["session"]) {
        metadata["correlation_uid"] = session.into();
    }
    let mut gatehouse = json!({
        "index": index,
        "leaf": leaf,
        "kind": kind,
        "ts_us": entry["ts"].as_u64().unwrap_or(0),
        "data": entry["data"].clone(),
    });
    for field in ["session", "resource", "chunks"] {
        if !entry[field].is_null() {
            gatehouse[field] = entry[field].clone();
        }
    }
    let mut out = Map::new();
    out.insert("category_uid".into(), class.category_uid.into());
    out.insert("category_name".into(), class.category_name.into());
    out.insert("class_uid".into(), class.uid.into());
    out.insert("class_name".into(), class.name.into());
    out.insert("activity_id".into(), activity_id.into());
    out.insert("activity_name".into(), activity.into());
    out.insert("type_uid".into(), (class.uid * 100 + activity_id).into());
    out.insert(
        "type_name".into(),
        format!("{}: {activity}", class.name).into(),
    );
    out.insert("time".into(), time.into());
    out.insert("severity_id".into(), severity_id.into());
    out.insert("severity".into(), severity.into());
    out.insert("status_id".into(), status_id.into());
    out.insert("status".into(), status_name.into());
    out.insert("metadata".into(), metadata);
    out.insert("unmapped".into(), json!({"gatehouse": gatehouse}));
    out
}

/// The entry's time in epoch milliseconds (entries keep microseconds).
fn time_ms(entry: &Value) -> u64 {
    entry["ts"].as_u64().unwrap_or(0) / 1000
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A non-empty string.
fn text(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// A non-empty string of a typed payload (read as [`text`] reads a JSON value).
fn filled(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The OCSF user for an entry's `actor`, if it names one.
fn user(actor: &Value) -> Option<Value> {
    let id = text(&actor["id"])?;
    let (type_id, type_name) = user_type(text(&actor["kind"]));
    let mut user = json!({"name": id, "uid": id, "type_id": type_id, "type": type_name});
    if let Some(groups) = groups(&actor["groups"]) {
        user["groups"] = groups;
    }
    Some(user)
}

/// OCSF 1.3.0 user types are Unknown, User, Admin, System and Other: agents and services
/// are Other, named in `type`.
fn user_type(kind: Option<&str>) -> (u64, &'static str) {
    match kind {
        Some("human") => (1, "User"),
        Some("system") => (3, "System"),
        Some("agent") => (99, "Agent"),
        Some("service") => (99, "Service"),
        _ => (0, "Unknown"),
    }
}

fn groups(v: &Value) -> Option<Value> {
    group_names(v.as_array()?.iter().filter_map(Value::as_str))
}

/// OCSF groups for group names, the empty ones left out; `None` when none is left.
fn group_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Value> {
    let names: Vec<Value> = names
        .into_iter()
        .filter_map(|g| filled(Some(g)))
        .map(|g| json!({"name": g}))
        .collect();
    (!names.is_empty()).then_some(Value::Array(names))
}

/// The user a failed sign-in claimed to be; the name may be empty or absent.
fn claimed_user(name: Option<&str>) -> Value {
    match filled(name) {
        Some(name) => json!({"name": name, "type_id": 0, "type": "Unknown"}),
        None => unknown_user(),
    }
}

/// Where a required user is not said by the entry (nor remembered): named as unknown, so
/// the event stays valid and says plainly that the ledger did not name one here.
fn unknown_user() -> Value {
    json!({"name": "unknown", "type_id": 0, "type": "Unknown"})
}

/// The OCSF actor of an entry: its identity, how it signed in and its session; the
/// gateway itself when the entry names nobody.
fn actor(entry: &Value) -> Value {
    let mut actor = match user(&entry["actor"]) {
        Some(user) => json!({"user": user}),
        None => json!({"app_name": "gatehouse"}),
    };
    if let Some(idp) = text(&entry["actor"]["idp"]) {
        actor["idp"] = json!({"name": idp});
    }
    if let Some(session) = text(&entry["session"]) {
        actor["session"] = json!({"uid": session});
    }
    actor
}

fn resource_details(entry: &Value) -> Value {
    let mut resource = json!({"name": text(&entry["resource"]["name"]).unwrap_or("unknown")});
    if let Some(kind) = text(&entry["resource"]["kind"]) {
        resource["type"] = kind.into();
    }
    resource
}

/// A network endpoint from `ip:port`, `host:port` or a bare name.
fn endpoint(addr: &str) -> Value {
    if let Ok(sock) = addr.parse::<std::net::SocketAddr>() {
        return json!({"ip": sock.ip().to_string(), "port": sock.port()});
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) => json!({"hostname": host, "port": port}),
            Err(_) => json!({"name": addr}),
        },
        _ => json!({"name": addr}),
    }
}

/// The gateway's decision on a statement (`data.decision`): verdict, status and detail.
fn decision(decision: Option<&Decision>) -> (Verdict, Status, Option<String>) {
    let Some(decision) = decision else {
        return (UNDECIDED, Status::Unknown, None);
    };
    let rule = filled(decision.rule.as_deref())
        .map(|r| format!(" by rule {r}"))
        .unwrap_or_default();
    match decision.outcome.as_deref() {
        Some("allow") => (ALLOWED, Status::Success, None),
        Some("deny") => (DENIED, Status::Failure, Some(format!("denied{rule}"))),
        Some("review") => match filled(
            decision
                .grant
                .as_ref()
                .and_then(|grant| grant.review.as_deref()),
        ) {
            Some(review) => (
                ALLOWED,
                Status::Success,
                Some(format!("allowed by the grant of review {review}")),
            ),
            None => (
                HELD,
                Status::Other("Pending"),
                Some(format!("held for review{rule}")),
            ),
        },
        _ => (UNDECIDED, Status::Unknown, None),
    }
}

/// The rule or access policies behind a statement's decision, as the OCSF policy.
fn decision_policy(decision: Option<&Decision>) -> Option<Value> {
    let decision = decision?;
    policy(decision.rule.as_deref(), &decision.policies)
}

/// The rule, else the access policies, as the OCSF policy.
fn policy(rule: Option<&str>, policies: &[String]) -> Option<Value> {
    if let Some(rule) = filled(rule) {
        return Some(json!({"name": rule, "uid": rule}));
    }
    let policies: Vec<&str> = policies.iter().filter_map(|p| filled(Some(p))).collect();
    (!policies.is_empty()).then(|| json!({"name": policies.join(", ")}))
}

fn verdict_into(out: &mut Map<String, Value>, verdict: Verdict) {
    add_profile(out, "security_control");
    out.insert("action_id".into(), verdict.action_id.into());
    out.insert("action".into(), verdict.action.into());
    out.insert("disposition_id".into(), verdict.disposition_id.into());
    out.insert("disposition".into(), verdict.disposition.into());
}

/// Declares an OCSF profile the event uses (its attributes then follow that profile).
fn add_profile(out: &mut Map<String, Value>, profile: &str) {
    let Some(metadata) = out.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let profiles = metadata
        .entry("profiles")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = profiles
        && !list.iter().any(|p| p.as_str() == Some(profile))
    {
        list.push(profile.into());
    }
}

/// The text of a command on a non-SQL protocol, under the names a later gateway may use.
/// Read by name, not typed: no gateway writes these protocols' `command` entries yet, so
/// `gatehouse_core::evidence` has no type for them (as in `ssh_command` and `api_command`).
fn command_text(data: &Value) -> Option<&str> {
    ["command", "cmd_line", "request", "sql", "sql_prefix"]
        .into_iter()
        .find_map(|k| text(&data[k]))
}

/// API Activity's activity for an HTTP method or a Kubernetes verb.
fn api_activity(verb: &str) -> (u64, &'static str) {
    match verb.to_ascii_lowercase().as_str() {
        "post" | "create" => (1, "Create"),
        "get" | "head" | "options" | "list" | "watch" => (2, "Read"),
        "put" | "patch" | "update" => (3, "Update"),
        "delete" | "deletecollection" => (4, "Delete"),
        _ => (99, "Other"),
    }
}

/// How the identity signed in: OpenID Connect tokens, or Gatehouse API keys (Other).
fn auth_protocol(entry: &Value, logon: &Logon) -> (u64, &'static str) {
    let key = logon.key_id().unwrap_or("");
    let idp = text(&entry["actor"]["idp"]).unwrap_or("");
    let method = logon.method().unwrap_or("");
    if key.starts_with("oidc:") || method == "oidc" {
        (4, "OpenID")
    } else if idp == "apikey" || method == "apikey" || !key.is_empty() {
        (99, "API key")
    } else {
        (0, "Unknown")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(i: u64, outcome: &str) -> Value {
        json!({"v": 1, "i": i, "ts": 1_764_000_000_123_456u64, "kind": "command",
               "actor": {"id": "alice", "kind": "human", "idp": "apikey", "groups": ["dba"]},
               "resource": {"name": "pg-prod", "kind": "postgres"}, "session": "s-0011223344556677",
               "data": {"classes": ["read"], "commands": ["SELECT"], "tables": ["customers"],
                        "decision": {"outcome": outcome, "rule": null, "policies": []},
                        "sql": "SELECT * FROM customers"}})
    }

    #[test]
    fn entries_without_a_counterpart_map_to_none() {
        for kind in [
            "heartbeat",
            "bench",
            "recording",
            "ledger.open",
            "ledger.recovery",
            "config.change",
            "something.new",
        ] {
            let entry = json!({"v": 1, "i": 3, "ts": 1, "kind": kind,
                               "actor": {"id": "gatehouse", "kind": "system"}, "data": {}});
            assert_eq!(event(&entry, "00"), None, "{kind}");
        }
        // A result of a protocol without a datastore class says nothing on its own.
        let mut ssh_result = command(4, "allow");
        ssh_result["kind"] = "result".into();
        ssh_result["resource"]["kind"] = "ssh".into();
        assert_eq!(event(&ssh_result, "00"), None);
    }

    #[test]
    fn odd_input_does_not_panic() {
        for entry in [
            json!(null),
            json!([]),
            json!({}),
            json!({"kind": "command"}),
            json!({"i": "7", "kind": "command"}),
            json!({"i": 7, "kind": 5}),
        ] {
            assert_eq!(event(&entry, ""), None, "{entry}");
        }
        // Present but skeletal entries of every mapped kind still map.
        for kind in [
            "session.start",
            "session.end",
            "auth.failure",
            "approval.request",
            "approval.decision",
            "key.created",
            "key.revoked",
        ] {
            let out = event(&json!({"i": 1, "kind": kind}), "ab").unwrap();
            assert_eq!(out["metadata"]["uid"], "1", "{kind}");
            assert!(!out["user"].is_null(), "{kind}");
        }
        for kind in ["command", "result", "target.failure"] {
            let entry = json!({"i": 1, "kind": kind, "resource": {"kind": "postgres"},
                               "data": {"decision": "odd", "tables": "x", "rows": -1}});
            let out = event(&entry, "ab").unwrap();
            assert!(!out["src_endpoint"].is_null(), "{kind}");
        }
    }

    #[test]
    fn decisions_become_action_disposition_and_status() {
        let cases = [("allow", 1, 1, 1), ("deny", 2, 2, 2), ("review", 0, 14, 99)];
        for (outcome, action, disposition, status) in cases {
            let out = event(&command(9, outcome), "ab").unwrap();
            assert_eq!(out["class_uid"], 6005);
            assert_eq!(out["activity_id"], 4);
            assert_eq!(out["type_uid"], 600504);
            assert_eq!(
                (&out["action_id"], &out["disposition_id"], &out["status_id"]),
                (&json!(action), &json!(disposition), &json!(status)),
                "{outcome}"
            );
            assert_eq!(out["query_info"]["query_string"], "SELECT * FROM customers");
            assert_eq!(out["table"]["name"], "customers");
            assert_eq!(out["time"], 1_764_000_000_123u64);
        }
        // A grant lets a held statement through.
        let mut granted = command(9, "review");
        granted["data"]["decision"]["grant"] =
            json!({"review": "r-0a1b2c3d4e", "request": {"index": 5, "leaf": "aa"}, "until": 1});
        let out = event(&granted, "ab").unwrap();
        assert_eq!(
            (&out["action_id"], &out["status_id"]),
            (&json!(1), &json!(1))
        );
    }

    #[test]
    fn a_mapper_remembers_the_client_and_the_statement() {
        let start = json!({"v": 1, "i": 1, "ts": 1_000_000, "kind": "session.start",
            "actor": {"id": "alice", "kind": "human", "idp": "apikey"},
            "resource": {"name": "pg-prod", "kind": "postgres"}, "session": "s-0011223344556677",
            "data": {"client": "10.1.2.3:50432", "database": "shop", "key_id": "k-1"}});
        let result = json!({"v": 1, "i": 10, "ts": 2_000_000, "kind": "result",
            "actor": {"id": "alice", "kind": "human"},
            "resource": {"name": "pg-prod", "kind": "postgres"}, "session": "s-0011223344556677",
            "data": {"command": 9, "tags": ["SELECT 2"], "rows": 2, "bytes": 60,
                     "duration_us": 2500, "error": null, "skipped": false}});
        let mut mapper = Mapper::new();
        mapper.event(&start, "01").unwrap();
        let cmd = mapper.event(&command(9, "allow"), "02").unwrap();
        assert_eq!(
            cmd["src_endpoint"],
            json!({"ip": "10.1.2.3", "port": 50432})
        );
        assert_eq!(cmd["database"]["name"], "shop");
        let res = mapper.event(&result, "03").unwrap();
        assert_eq!(res["query_info"]["query_string"], "SELECT * FROM customers");
        assert_eq!(res["duration"], 2);
        // On its own, the result knows neither.
        let alone = event(&result, "03").unwrap();
        assert_eq!(alone["src_endpoint"], json!({"uid": "s-0011223344556677"}));
        assert!(alone["query_info"].is_null());
    }

    #[test]
    fn endpoints_parse_addresses_and_names() {
        assert_eq!(endpoint("[::1]:5432"), json!({"ip": "::1", "port": 5432}));
        assert_eq!(
            endpoint("db.internal:5432"),
            json!({"hostname": "db.internal", "port": 5432})
        );
        assert_eq!(endpoint("db"), json!({"name": "db"}));
        assert_eq!(endpoint(":x"), json!({"name": ":x"}));
    }
}
