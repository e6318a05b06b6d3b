//! The auditor's report: one self-contained HTML file (inline CSS and SVG, no scripts, no
//! network) that presents a window of ledger entries as SOC 2 evidence — the verification
//! of the ledger, a summary per criterion, activity charts, sessions, privileged commands
//! with their approval chains, denials, masking and configuration changes.
//!
//! Pure: the caller reads and verifies the ledger, filters the entries and hands them over
//! with their leaf hashes; [`render`] only reads them. Each entry's `data` is read once
//! through its typed payload ([`gatehouse_core::Evidence`]; only the envelope — index,
//! time, kind, actor, resource, session — is read as JSON), and any field may be missing
//! or odd: a report of a damaged or future ledger still renders, it never panics. Every value taken from an
//! entry is HTML-escaped, and the page carries a Content-Security-Policy that forbids
//! scripts and remote loads, so a hostile statement text can neither run nor phone home.
//!
//! Every row shows the ledger index (and carries the leaf hash) of the entry it comes from,
//! so each line of evidence can be proven against the checkpoint with
//! `gatehouse ledger proof --index N`. Key figures sit in elements with stable ids
//! (`<span id="sessions-count" data-value="12">12</span>`, see [`FIGURE_IDS`]) so tools and
//! tests can read them from the DOM.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use gatehouse_core::Evidence;
use gatehouse_core::evidence::{
    AuthFailure, ConfigChange, IntegrityMismatch, KeyChange, LedgerPrune, PolicyDecision,
    TargetFailure,
};
use serde_json::Value;

/// The outcome of verifying the ledger the report is drawn from, as the caller found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Whether every entry led to the signed checkpoint.
    pub ok: bool,
    /// One line: `verified: 1,234 entries lead to the signed root`, or the failure.
    pub summary: String,
    /// The checkpoint's origin line (the log's name).
    pub origin: String,
    /// The checkpoint's tree size.
    pub checkpoint_size: u64,
    /// The checkpoint's root hash, hex.
    pub root: String,
    /// Entries the filter took (the ones in [`ReportInput::entries`]).
    pub matched: u64,
    /// Entries verified but left out by the filter.
    pub excluded: u64,
    /// Entries removed by retention (their hashes still count towards the root).
    pub pruned: u64,
}

/// What a report is made of.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    pub title: String,
    /// The window, unix microseconds: `since` inclusive, `until` exclusive (as
    /// [`crate::export::Filter`]). When absent, the charts span the entries.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// The identity and resource filters the entries were taken with, for the header.
    pub user: Option<String>,
    pub resource: Option<String>,
    /// When the report was made, unix microseconds.
    pub generated_at: u64,
    pub verification: Verification,
    /// The entries the filter took, in ledger order, each with its leaf hash (hex).
    pub entries: &'a [(Value, String)],
}

/// The ids of the elements holding the key figures, each `<span id=... data-value=N>`.
pub const FIGURE_IDS: &[&str] = &[
    "entries-count",
    "sessions-count",
    "auth-success-count",
    "auth-failures-count",
    "connection-denials-count",
    "statement-denials-count",
    "denials-count",
    "target-failures-count",
    "integrity-mismatches-count",
    "statements-count",
    "approval-requests-count",
    "approvals-approved-count",
    "approvals-denied-count",
    "approvals-expired-count",
    "approvals-cancelled-count",
    "approvals-pending-count",
    "grants-count",
    "granted-statements-count",
    "key-changes-count",
    "masked-values-count",
    "masked-statements-count",
    "changes-count",
    "changes-approved-count",
    "privileged-count",
    "config-changes-count",
];

/// The report's key figures, counted from the entries alone (the same numbers the HTML
/// shows; the CLI may print them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Entries in the report.
    pub entries: u64,
    /// Sessions seen (a `session.start`, or any entry of a session that began earlier).
    pub sessions: u64,
    /// Successful sign-ins: `session.start` entries.
    pub authentications: u64,
    /// `auth.failure` entries.
    pub auth_failures: u64,
    /// Connections access policy refused (`policy.decision` other than allow).
    pub connection_denials: u64,
    /// Statements decided `deny`.
    pub statement_denials: u64,
    /// `connection_denials + statement_denials`.
    pub denials: u64,
    /// Sessions that could not reach their target (`target.failure`).
    pub target_failures: u64,
    /// Sessions ended because the target ran a command that was not decided
    /// (`integrity.mismatch`).
    pub integrity_mismatches: u64,
    /// `command` entries.
    pub statements: u64,
    /// `approval.request` entries.
    pub approval_requests: u64,
    /// Reviews approved (or approved and executed).
    pub approved: u64,
    /// Reviews denied.
    pub denied_reviews: u64,
    /// Reviews that ran out of time undecided.
    pub expired: u64,
    /// Reviews cancelled (the client cancelled or left).
    pub cancelled: u64,
    /// Reviews with no final decision in the report.
    pub pending: u64,
    /// Approvals that also granted a duration (`grant_until`).
    pub grants: u64,
    /// Statements let through by such a grant.
    pub granted_statements: u64,
    /// API keys created or revoked.
    pub key_changes: u64,
    /// Values masked in results (all rules, detectors and undecodable values).
    pub masked_values: u64,
    /// Results in which at least one value was masked.
    pub masked_statements: u64,
    /// Statements that change schema or privileges (DDL, DCL, CREATE/ALTER/DROP/GRANT/
    /// REVOKE/TRUNCATE).
    pub changes: u64,
    /// Those of them approved in a review or run under a grant.
    pub changes_approved: u64,
    /// Statements listed as privileged: changes, and any statement held for review.
    pub privileged: u64,
    /// `config.change` entries (configuration and access policy loads).
    pub config_changes: u64,
}

/// Counts the key figures of `entries` (in ledger order, with leaf hashes).
pub fn figures(entries: &[(Value, String)]) -> Figures {
    Model::build(entries).figures()
}

/// Renders the report as one HTML document.
pub fn render(input: &ReportInput) -> String {
    let model = Model::build(input.entries);
    let fig = model.figures();
    let mut out = String::with_capacity(64 * 1024 + input.entries.len() * 256);
    head(&mut out, input);
    verification(&mut out, &input.verification);
    criteria(&mut out, &fig);
    activity(&mut out, input, &model);
    sessions(&mut out, &model);
    privileged(&mut out, &model);
    approvals(&mut out, &model);
    denials(&mut out, &model);
    masking(&mut out, &model, &fig);
    changes(&mut out, &model);
    out.push_str(
        "<footer><p>Each row names the ledger entry it comes from (<code>#index</code>; \
         hover for its leaf hash). Prove any of them against the checkpoint above with \
         <code>gatehouse ledger proof --index N</code> and verify the proof offline with \
         the ledger's public key.</p></footer>\n</main>\n</body>\n</html>\n",
    );
    out
}

// ---------------------------------------------------------------------------------------
// The model: the entries read once into sessions, statements, reviews and the rest.
// ---------------------------------------------------------------------------------------

/// The leading keywords of statements that change schema or privileges (CC8.1).
const CHANGE_KEYWORDS: [&str; 6] = ["CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "TRUNCATE"];

/// At most this many statements are listed inside one session (all are counted): a
/// session of millions of statements would make a page no browser opens; the export
/// (`gatehouse audit export`) holds the rest.
const MAX_LISTED_PER_SESSION: usize = 1000;

/// Where a row comes from: the entry's index, time and leaf hash.
#[derive(Debug, Clone, Copy)]
struct At<'a> {
    index: u64,
    ts: u64,
    leaf: &'a str,
}

struct Command<'a> {
    at: At<'a>,
    actor: &'a str,
    resource: &'a str,
    session: Option<&'a str>,
    sql: String,
    /// The text is a prefix; the whole statement is in a chunk.
    in_chunk: bool,
    outcome: String,
    rule: Option<String>,
    classes: Vec<String>,
    /// The review whose grant let this statement through.
    grant_review: Option<String>,
    change: bool,
}

impl Command<'_> {
    fn privileged(&self) -> bool {
        self.change || self.outcome == "review" || self.grant_review.is_some()
    }
}

#[derive(Default)]
struct Outcome {
    rows: Option<u64>,
    error: Option<String>,
    masked: u64,
}

struct SessionEnd<'a> {
    at: At<'a>,
    duration_ms: Option<u64>,
    reason: String,
}

struct Session<'a> {
    id: &'a str,
    actor: &'a str,
    actor_kind: &'a str,
    idp: &'a str,
    resource: &'a str,
    client: String,
    /// The `session.start` entry, when it is in the report.
    start: Option<At<'a>>,
    /// The session's first entry in the report.
    first: At<'a>,
    end: Option<SessionEnd<'a>>,
    /// Positions in [`Model::commands`].
    commands: Vec<usize>,
    denied: u64,
    access_grant: Option<String>,
}

struct Request<'a> {
    at: At<'a>,
    requester: &'a str,
    resource: &'a str,
    command: Option<u64>,
    access_ms: Option<u64>,
    rule: Option<String>,
    reason: String,
    approvers: Vec<String>,
    required: Option<u64>,
}

struct Decision<'a> {
    at: At<'a>,
    by: Option<&'a str>,
    state: String,
    verdict: Option<String>,
    reason: Option<String>,
    /// Unix milliseconds.
    grant_until: Option<u64>,
    approvals: Option<u64>,
    required: Option<u64>,
}

struct Review<'a> {
    id: String,
    request: Option<Request<'a>>,
    decisions: Vec<Decision<'a>>,
}

impl Review<'_> {
    /// The review's standing as the report's entries tell it.
    fn outcome(&self) -> &str {
        let states: Vec<&str> = self.decisions.iter().map(|d| d.state.as_str()).collect();
        if states.contains(&"denied") {
            "denied"
        } else if states.contains(&"executed") {
            "executed"
        } else if states.contains(&"approved") {
            "approved"
        } else if states.contains(&"expired") {
            "expired"
        } else if states.contains(&"cancelled") {
            "cancelled"
        } else {
            "pending"
        }
    }

    fn approved(&self) -> bool {
        matches!(self.outcome(), "approved" | "executed")
    }
}

/// A listed event that is not a statement: a failed sign-in, a refused connection, an
/// unreachable target, a configuration or key change, with its typed payload.
struct Event<'a, T> {
    at: At<'a>,
    /// The entry's kind as written.
    kind: &'a str,
    who: String,
    resource: &'a str,
    data: T,
    /// The entry's `data` as written, for the events shown as raw JSON.
    raw: &'a Value,
}

/// A key created or revoked.
enum KeyEvent {
    Created(KeyChange),
    Revoked(KeyChange),
}

/// A ledger event shown in the integrity section.
enum LedgerEvent {
    Open,
    /// Shown as its raw `data`.
    Recovery,
    Prune(LedgerPrune),
}

#[derive(Default)]
struct Model<'a> {
    entries: u64,
    sessions: Vec<Session<'a>>,
    commands: Vec<Command<'a>>,
    /// Result of each command, by the command's ledger index.
    results: HashMap<u64, Outcome>,
    reviews: Vec<Review<'a>>,
    auth_failures: Vec<Event<'a, AuthFailure>>,
    connection_denials: Vec<Event<'a, PolicyDecision>>,
    target_failures: Vec<Event<'a, TargetFailure>>,
    integrity_mismatches: Vec<Event<'a, IntegrityMismatch>>,
    config_changes: Vec<Event<'a, ConfigChange>>,
    key_changes: Vec<Event<'a, KeyEvent>>,
    /// Ledger opens and recoveries, for the integrity section.
    ledger_events: Vec<Event<'a, LedgerEvent>>,
    masked_values: u64,
    masked_statements: u64,
    masked_rules: BTreeMap<String, u64>,
    masked_detectors: BTreeMap<String, u64>,
    masked_undecodable: u64,
    /// Time span of the entries, unix microseconds.
    first_ts: Option<u64>,
    last_ts: Option<u64>,
}

fn text(v: &Value) -> Option<&str> {
    v.as_str()
}

fn num(v: &Value) -> Option<u64> {
    v.as_u64()
}

impl<'a> Model<'a> {
    fn build(entries: &'a [(Value, String)]) -> Model<'a> {
        let mut m = Model::default();
        let mut session_at: HashMap<&'a str, usize> = HashMap::new();
        let mut review_at: HashMap<String, usize> = HashMap::new();
        // Requests by their own ledger index, for decisions naming no review id.
        let mut request_index: HashMap<u64, usize> = HashMap::new();
        for (entry, leaf) in entries {
            m.entries += 1;
            let at = At {
                index: num(&entry["i"]).unwrap_or(0),
                ts: num(&entry["ts"]).unwrap_or(0),
                leaf,
            };
            m.first_ts = Some(m.first_ts.map_or(at.ts, |t| t.min(at.ts)));
            m.last_ts = Some(m.last_ts.map_or(at.ts, |t| t.max(at.ts)));
            let kind = text(&entry["kind"]).unwrap_or("");
            let actor = text(&entry["actor"]["id"]).unwrap_or("");
            let resource = text(&entry["resource"]["name"]).unwrap_or("");
            let raw = &entry["data"];
            let evidence = Evidence::of_entry(entry);
            let session = text(&entry["session"]).filter(|s| !s.is_empty());
            // Any entry of a session makes the session known, even when its start lies
            // before the window; but not an approver's decision, which would name the
            // approver as the session's identity.
            let slot = session.and_then(|id| {
                if matches!(evidence, Evidence::ApprovalDecision(_)) {
                    return session_at.get(id).copied();
                }
                Some(*session_at.entry(id).or_insert_with(|| {
                    m.sessions.push(Session {
                        id,
                        actor,
                        actor_kind: text(&entry["actor"]["kind"]).unwrap_or(""),
                        idp: text(&entry["actor"]["idp"]).unwrap_or(""),
                        resource,
                        client: String::new(),
                        start: None,
                        first: at,
                        end: None,
                        commands: Vec::new(),
                        denied: 0,
                        access_grant: None,
                    });
                    m.sessions.len() - 1
                }))
            });
            // A listed event of this entry, with its typed payload.
            macro_rules! event {
                ($data:expr) => {
                    Event {
                        at,
                        kind,
                        who: actor.to_string(),
                        resource,
                        data: $data,
                        raw,
                    }
                };
            }
            match evidence {
                Evidence::SessionStart(start) => {
                    if let Some(s) = slot.and_then(|n| m.sessions.get_mut(n)) {
                        s.start = Some(at);
                        s.client = start.client.unwrap_or_default();
                        s.access_grant = start.access_grant.and_then(|g| g.review);
                    }
                }
                Evidence::SessionEnd(end) => {
                    if let Some(s) = slot.and_then(|n| m.sessions.get_mut(n)) {
                        s.end = Some(SessionEnd {
                            at,
                            duration_ms: end.duration_ms,
                            reason: end.reason.unwrap_or_default(),
                        });
                    }
                }
                Evidence::Command(command) => {
                    let pg = command.postgres;
                    let (sql, in_chunk) = match pg.sql {
                        Some(sql) => (sql, false),
                        None => (pg.sql_prefix.unwrap_or_default(), true),
                    };
                    let decision = command.decision.unwrap_or_default();
                    let outcome = decision.outcome.unwrap_or_else(|| "?".to_string());
                    let change = {
                        let classes: Vec<&str> = pg.classes.iter().map(String::as_str).collect();
                        let commands: Vec<&str> = pg.commands.iter().map(String::as_str).collect();
                        is_change(&classes, &commands, &sql)
                    };
                    if let Some(s) = slot.and_then(|n| m.sessions.get_mut(n)) {
                        s.commands.push(m.commands.len());
                        if outcome == "deny" {
                            s.denied += 1;
                        }
                    }
                    m.commands.push(Command {
                        at,
                        actor,
                        resource,
                        session,
                        sql,
                        in_chunk,
                        outcome,
                        rule: decision
                            .rule
                            .or_else(|| decision.policies.into_iter().next()),
                        change,
                        classes: pg.classes,
                        grant_review: decision.grant.and_then(|g| g.review),
                    });
                }
                Evidence::Result(result) => {
                    let masked = result.masked.unwrap_or_default();
                    let values = masked.values.unwrap_or(0);
                    m.masked_values = m.masked_values.saturating_add(values);
                    if values > 0 {
                        m.masked_statements += 1;
                    }
                    for (map, counts) in [
                        (&mut m.masked_rules, masked.rules),
                        (&mut m.masked_detectors, masked.detectors),
                    ] {
                        for (label, n) in counts {
                            let slot = map.entry(label).or_insert(0);
                            *slot = slot.saturating_add(n);
                        }
                    }
                    m.masked_undecodable = m
                        .masked_undecodable
                        .saturating_add(masked.undecodable.unwrap_or(0));
                    if let Some(command) = result.command {
                        m.results.insert(
                            command,
                            Outcome {
                                rows: result.rows,
                                error: result.error,
                                masked: values,
                            },
                        );
                    }
                }
                Evidence::ApprovalRequest(request) => {
                    let id = request.review.unwrap_or_default();
                    let n = m.review_slot(&mut review_at, id);
                    request_index.insert(at.index, n);
                    m.reviews[n].request = Some(Request {
                        at,
                        requester: actor,
                        resource,
                        command: request.command.map(|c| c.index),
                        access_ms: request.access.and_then(|a| a.for_ms),
                        rule: request.rule,
                        reason: request.reason.unwrap_or_default(),
                        approvers: request.approvers,
                        required: request.required,
                    });
                }
                Evidence::ApprovalDecision(decision) => {
                    let id = decision.review.unwrap_or_default();
                    // Linked by review id; by the request's index when the id is missing.
                    let n = match (
                        review_at.get(id.as_str()).copied(),
                        decision.request.map(|r| r.index),
                    ) {
                        (Some(n), _) => n,
                        (None, Some(i)) if id.is_empty() && request_index.contains_key(&i) => {
                            request_index[&i]
                        }
                        _ => m.review_slot(&mut review_at, id),
                    };
                    m.reviews[n].decisions.push(Decision {
                        at,
                        by: (!actor.is_empty()).then_some(actor),
                        state: decision.state.unwrap_or_else(|| "?".to_string()),
                        verdict: decision.verdict,
                        reason: decision.reason,
                        grant_until: decision.grant_until,
                        approvals: decision.approvals,
                        required: decision.required,
                    });
                }
                Evidence::AuthFailure(failure) => m.auth_failures.push(Event {
                    // The sign-in failed, so no actor is known; the name tried is the identity.
                    who: failure.user.clone().unwrap_or_default(),
                    ..event!(failure)
                }),
                Evidence::PolicyDecision(decision)
                    if decision.outcome.as_deref() != Some("allow") =>
                {
                    m.connection_denials.push(event!(decision))
                }
                Evidence::TargetFailure(failure) => m.target_failures.push(event!(failure)),
                Evidence::IntegrityMismatch(mismatch) => {
                    m.integrity_mismatches.push(event!(mismatch))
                }
                Evidence::ConfigChange(change) => m.config_changes.push(event!(change)),
                Evidence::KeyCreated(key) => m.key_changes.push(event!(KeyEvent::Created(key))),
                Evidence::KeyRevoked(key) => m.key_changes.push(event!(KeyEvent::Revoked(key))),
                Evidence::LedgerOpen(_) => m.ledger_events.push(event!(LedgerEvent::Open)),
                Evidence::LedgerRecovery(_) => m.ledger_events.push(event!(LedgerEvent::Recovery)),
                Evidence::LedgerPrune(prune) => {
                    m.ledger_events.push(event!(LedgerEvent::Prune(prune)))
                }
                _ => {}
            }
        }
        m
    }

    fn review_slot(&mut self, at: &mut HashMap<String, usize>, id: String) -> usize {
        // Reviews without an id are kept apart rather than merged.
        if !id.is_empty()
            && let Some(&n) = at.get(id.as_str())
        {
            return n;
        }
        if !id.is_empty() {
            at.insert(id.clone(), self.reviews.len());
        }
        self.reviews.push(Review {
            id,
            request: None,
            decisions: Vec::new(),
        });
        self.reviews.len() - 1
    }

    /// The review that held the command at ledger index `index`.
    fn review_of(&self, index: u64) -> Option<&Review<'a>> {
        self.reviews
            .iter()
            .find(|r| r.request.as_ref().and_then(|q| q.command) == Some(index))
    }

    fn review_by_id(&self, id: &str) -> Option<&Review<'a>> {
        self.reviews.iter().find(|r| r.id == id)
    }

    /// Approvals that granted a duration: (review, the approving decision).
    fn grants(&self) -> impl Iterator<Item = (&Review<'a>, &Decision<'a>)> {
        self.reviews.iter().flat_map(|r| {
            r.decisions
                .iter()
                .filter(|d| d.grant_until.is_some() && d.state == "approved")
                .map(move |d| (r, d))
        })
    }

    fn change_approved(&self, c: &Command) -> bool {
        c.grant_review.is_some() || self.review_of(c.at.index).is_some_and(Review::approved)
    }

    fn figures(&self) -> Figures {
        let count = |state: &str| self.reviews.iter().filter(|r| r.outcome() == state).count();
        let statement_denials = self.commands.iter().filter(|c| c.outcome == "deny").count();
        let changes: Vec<&Command> = self.commands.iter().filter(|c| c.change).collect();
        Figures {
            entries: self.entries,
            sessions: self.sessions.len() as u64,
            authentications: self.sessions.iter().filter(|s| s.start.is_some()).count() as u64,
            // An aggregated entry stands for `count` failures.
            auth_failures: self
                .auth_failures
                .iter()
                .map(|e| e.data.count.unwrap_or(1))
                .sum(),
            connection_denials: self.connection_denials.len() as u64,
            statement_denials: statement_denials as u64,
            denials: (self.connection_denials.len() + statement_denials) as u64,
            target_failures: self.target_failures.len() as u64,
            integrity_mismatches: self.integrity_mismatches.len() as u64,
            statements: self.commands.len() as u64,
            approval_requests: self.reviews.iter().filter(|r| r.request.is_some()).count() as u64,
            approved: self.reviews.iter().filter(|r| r.approved()).count() as u64,
            denied_reviews: count("denied") as u64,
            expired: count("expired") as u64,
            cancelled: count("cancelled") as u64,
            pending: count("pending") as u64,
            grants: self.grants().count() as u64,
            granted_statements: self
                .commands
                .iter()
                .filter(|c| c.grant_review.is_some())
                .count() as u64,
            key_changes: self.key_changes.len() as u64,
            masked_values: self.masked_values,
            masked_statements: self.masked_statements,
            changes: changes.len() as u64,
            changes_approved: changes.iter().filter(|c| self.change_approved(c)).count() as u64,
            privileged: self.commands.iter().filter(|c| c.privileged()).count() as u64,
            config_changes: self.config_changes.len() as u64,
        }
    }
}

/// Whether a statement changes schema or privileges: its classes say DDL or DCL (or an
/// admin action), or a command or the text itself begins with a change keyword.
fn is_change(classes: &[&str], commands: &[&str], sql: &str) -> bool {
    let keyword = |s: &str| {
        let word = first_word(s);
        CHANGE_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
    };
    classes
        .iter()
        .any(|c| matches!(*c, "ddl" | "dcl" | "admin"))
        || commands.iter().any(|c| keyword(c))
        || keyword(sql)
}

/// The first word of a statement, past white space, `--` and `/* */` comments and
/// semicolons.
fn first_word(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == '(');
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
        } else {
            rest = trimmed;
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(rest.len());
    &rest[..end]
}

// ---------------------------------------------------------------------------------------
// Formatting helpers.
// ---------------------------------------------------------------------------------------

/// Text made safe for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are shown, not passed on.
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// An optional text from an entry, escaped; absent as empty.
fn esc_opt(v: Option<&str>) -> String {
    v.map(esc).unwrap_or_default()
}

/// `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A key figure: `<span id="…" class="figure" data-value="n">n</span>`.
fn figure(id: &str, n: u64) -> String {
    format!(
        "<span id=\"{id}\" class=\"figure\" data-value=\"{n}\">{}</span>",
        thousands(n)
    )
}

/// The last second humantime can print (the end of year 9999).
const MAX_PRINTABLE_SECS: u64 = 253_402_300_799;

/// Unix microseconds as `2025-11-24 16:00:00Z` (UTC); absurd values as the raw number.
fn time(us: u64) -> String {
    let secs = us / 1_000_000;
    if secs > MAX_PRINTABLE_SECS {
        return format!("{us} µs");
    }
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replacen('T', " ", 1)
}

/// Unix milliseconds, as [`time`].
fn time_ms(ms: u64) -> String {
    time(ms.saturating_mul(1000))
}

/// A duration in milliseconds as `1h 02m 03s`, `4.250s` or `850 ms`.
fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let secs = ms / 1000;
    if secs < 60 {
        return format!("{}.{:03}s", secs, ms % 1000);
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

/// The cell naming an entry: `#index`, with the leaf hash on hover.
fn index_cell(at: &At) -> String {
    format!(
        "<td class=\"idx\" title=\"leaf {}\">#{}</td>",
        esc(at.leaf),
        at.index
    )
}

/// The attributes of a row from one entry.
fn row_attrs(at: &At, kind: &str) -> String {
    format!(
        "data-index=\"{}\" data-leaf=\"{}\" data-kind=\"{}\"",
        at.index,
        esc(at.leaf),
        esc(kind)
    )
}

/// The SQL of a statement, marked when only its prefix is in the entry.
fn sql_html(c: &Command) -> String {
    let mut out = format!("<code class=\"sql\">{}</code>", esc(&c.sql));
    if c.in_chunk {
        out.push_str(
            " <span class=\"note\">(prefix; the whole statement is in the entry's chunk)</span>",
        );
    }
    out
}

fn outcome_badge(outcome: &str) -> String {
    let class = match outcome {
        "allow" | "approved" | "executed" => "ok",
        "deny" | "denied" => "bad",
        "review" | "pending" => "warn",
        "expired" | "cancelled" => "muted",
        _ => "muted",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(outcome))
}

fn identity(who: &str) -> String {
    if who.is_empty() {
        "<span class=\"muted\">—</span>".to_string()
    } else {
        esc(who)
    }
}

// ---------------------------------------------------------------------------------------
// Sections.
// ---------------------------------------------------------------------------------------

const STYLE: &str = r#"
:root { --fg:#1d2330; --muted:#667085; --line:#d9dee7; --bg:#f6f7f9; --ok:#127a3e; --okbg:#e6f4ec;
        --bad:#b42318; --badbg:#fdecea; --warn:#9a6700; --warnbg:#fff4d6; --accent:#2f5bd3; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1200px; margin:0 auto; padding:24px; }
header h1 { margin:0 0 4px; font-size:24px; }
header p { margin:2px 0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:18px 0; }
h2 { font-size:18px; margin:0 0 10px; }
h3 { font-size:15px; margin:14px 0 6px; }
table { border-collapse:collapse; width:100%; margin:6px 0; }
th, td { text-align:left; vertical-align:top; padding:5px 8px; border-bottom:1px solid var(--line); }
th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
td.idx { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; color:var(--accent); white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
code.sql { white-space:pre-wrap; word-break:break-word; }
.verification { border-width:2px; }
.verification.ok { border-color:var(--ok); background:var(--okbg); }
.verification.fail { border-color:var(--bad); background:var(--badbg); }
.status { font-size:22px; font-weight:700; }
.ok .status { color:var(--ok); } .fail .status { color:var(--bad); }
dl.kv { display:grid; grid-template-columns:max-content 1fr; gap:3px 14px; margin:10px 0 0; }
dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; word-break:break-all; }
.figure { font-weight:700; font-variant-numeric:tabular-nums; }
.criteria td:first-child { white-space:nowrap; font-weight:600; }
.badge { display:inline-block; padding:0 7px; border-radius:10px; font-size:12px; font-weight:600; }
.badge.ok { background:var(--okbg); color:var(--ok); } .badge.bad { background:var(--badbg); color:var(--bad); }
.badge.warn { background:var(--warnbg); color:var(--warn); } .badge.muted { background:#eef0f3; color:var(--muted); }
tr.denied td { background:#fff7f6; }
.muted, .note { color:var(--muted); } .note { font-size:12px; }
details summary { cursor:pointer; color:var(--accent); }
ol.chain { margin:4px 0; padding-left:20px; }
.legend span { display:inline-block; margin-right:14px; font-size:12px; }
.legend i { display:inline-block; width:10px; height:10px; margin-right:4px; border-radius:2px; }
svg.chart { width:100%; height:auto; display:block; }
.banner { background:var(--bad); color:#fff; font-weight:700; padding:10px 16px; border-radius:6px; }
footer { color:var(--muted); font-size:12px; }
.nowrap { white-space:nowrap; }
@media print { body { background:#fff; } section { break-inside:avoid-page; } }
"#;

fn head(out: &mut String, input: &ReportInput) {
    let title = if input.verification.ok {
        esc(&input.title)
    } else {
        format!("UNVERIFIED — {}", esc(&input.title))
    };
    // No script may run and nothing may be fetched, whatever an entry contains.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"gatehouse audit report\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<header>\n\
         <h1 id=\"report-title\">{}</h1>\n",
        esc(&input.title)
    );
    let window = match (input.since, input.until) {
        (None, None) => "the whole ledger".to_string(),
        (Some(s), None) => format!("from {}", time(s)),
        (None, Some(u)) => format!("until {} (exclusive)", time(u)),
        (Some(s), Some(u)) => format!("{} to {} (end exclusive)", time(s), time(u)),
    };
    let _ = writeln!(
        out,
        "<p>Window: <span id=\"report-window\">{}</span></p>",
        esc(&window)
    );
    let mut filters = Vec::new();
    if let Some(u) = &input.user {
        filters.push(format!(
            "identity <code id=\"filter-user\">{}</code>",
            esc(u)
        ));
    }
    if let Some(r) = &input.resource {
        filters.push(format!(
            "resource <code id=\"filter-resource\">{}</code>",
            esc(r)
        ));
    }
    if !filters.is_empty() {
        let _ = writeln!(out, "<p>Filtered to {}.</p>", filters.join(" and "));
    }
    if input.user.is_some() {
        out.push_str(
            "<p class=\"note\">With an identity filter, entries by others (approvers' decisions, \
             the gateway's own) are left out, so approval chains may be incomplete.</p>\n",
        );
    }
    let _ = writeln!(
        out,
        "<p>Generated <span id=\"generated-at\">{}</span> by <code>gatehouse audit report</code>.</p>\n</header>",
        esc(&time(input.generated_at))
    );
}

fn verification(out: &mut String, v: &Verification) {
    let (class, status) = if v.ok {
        ("ok", "VERIFIED")
    } else {
        ("fail", "VERIFICATION FAILED")
    };
    if !v.ok {
        out.push_str(
            "<p class=\"banner\" role=\"alert\">The ledger did NOT verify against its signed \
             checkpoint. Nothing in this report may be relied on as evidence until the failure \
             below is explained.</p>\n",
        );
    }
    let _ = writeln!(
        out,
        "<section id=\"verification\" class=\"verification {class}\" data-ok=\"{}\">\n\
         <h2>Ledger verification</h2>\n\
         <div id=\"verification-status\" class=\"status\">{status}</div>\n\
         <p id=\"verification-summary\">{}</p>\n<dl class=\"kv\">\n\
         <dt>Checkpoint origin</dt><dd id=\"checkpoint-origin\" class=\"mono\">{}</dd>\n\
         <dt>Checkpoint size</dt><dd><span id=\"checkpoint-size\" data-value=\"{}\">{}</span> entries</dd>\n\
         <dt>Root hash</dt><dd id=\"checkpoint-root\" class=\"mono\">{}</dd>\n\
         <dt>In this report</dt><dd><span id=\"verification-matched\" data-value=\"{}\">{}</span> entries matched the filter; \
         <span id=\"verification-excluded\" data-value=\"{}\">{}</span> verified entries were left out by it; \
         <span id=\"verification-pruned\" data-value=\"{}\">{}</span> were pruned by retention (their hashes still lead to the root)</dd>\n\
         </dl>\n</section>",
        v.ok,
        esc(&v.summary),
        esc(&v.origin),
        v.checkpoint_size,
        thousands(v.checkpoint_size),
        esc(&v.root),
        v.matched,
        thousands(v.matched),
        v.excluded,
        thousands(v.excluded),
        v.pruned,
        thousands(v.pruned),
    );
}

fn criteria(out: &mut String, f: &Figures) {
    let _ = writeln!(
        out,
        "<section id=\"criteria\">\n<h2>SOC 2 criteria supported</h2>\n\
         <p>{} ledger entries are summarised below; each figure links to its section, where every row names its entry.</p>\n\
         <table class=\"criteria\">\n<tr><th>Criterion</th><th>What the ledger shows</th></tr>\n\
         <tr><td>CC6.1 Logical access</td><td>{} sessions (<a href=\"#sessions\">list</a>); {} successful authentications; \
         {} failed authentications; {} denials ({} refused connections, {} denied statements; <a href=\"#denials\">list</a>); \
         {} sessions could not reach their target; {} sessions ended because the target ran what was not decided \
         (<a href=\"#denials\">integrity mismatches</a>).</td></tr>\n\
         <tr><td>CC6.2 / CC6.3 Access grants and approvals</td><td>{} approval requests: {} approved, {} denied, {} expired, \
         {} cancelled, {} pending (<a href=\"#approvals\">list</a>); {} time-limited grants, under which {} statements ran; \
         {} API key changes (<a href=\"#changes\">list</a>).</td></tr>\n\
         <tr><td>CC7.2 Monitoring</td><td>{} recorded sessions with {} statements, each recorded before it ran; \
         {} values masked in {} results (<a href=\"#masking\">by rule and detector</a>).</td></tr>\n\
         <tr><td>CC8.1 Change management</td><td>{} schema or privilege changes, {} of them approved or run under a grant; \
         {} privileged statements with their approval chains (<a href=\"#privileged\">list</a>); \
         {} configuration and policy loads (<a href=\"#changes\">list</a>).</td></tr>\n\
         </table>\n</section>",
        figure("entries-count", f.entries),
        figure("sessions-count", f.sessions),
        figure("auth-success-count", f.authentications),
        figure("auth-failures-count", f.auth_failures),
        figure("denials-count", f.denials),
        figure("connection-denials-count", f.connection_denials),
        figure("statement-denials-count", f.statement_denials),
        figure("target-failures-count", f.target_failures),
        figure("integrity-mismatches-count", f.integrity_mismatches),
        figure("approval-requests-count", f.approval_requests),
        figure("approvals-approved-count", f.approved),
        figure("approvals-denied-count", f.denied_reviews),
        figure("approvals-expired-count", f.expired),
        figure("approvals-cancelled-count", f.cancelled),
        figure("approvals-pending-count", f.pending),
        figure("grants-count", f.grants),
        figure("granted-statements-count", f.granted_statements),
        figure("key-changes-count", f.key_changes),
        // The same session count again, without a duplicate id.
        thousands(f.sessions),
        figure("statements-count", f.statements),
        figure("masked-values-count", f.masked_values),
        figure("masked-statements-count", f.masked_statements),
        figure("changes-count", f.changes),
        figure("changes-approved-count", f.changes_approved),
        figure("privileged-count", f.privileged),
        figure("config-changes-count", f.config_changes),
    );
}

/// Bucket widths the charts choose from, in seconds: the smallest that keeps the number
/// of bars readable.
const BUCKETS: [u64; 9] = [
    60,
    5 * 60,
    15 * 60,
    3600,
    6 * 3600,
    86_400,
    7 * 86_400,
    30 * 86_400,
    365 * 86_400,
];
const MAX_BARS: u64 = 60;

/// The chart grid: first bucket's start and bucket width (microseconds), bucket count.
fn grid(from: u64, to: u64) -> (u64, u64, usize) {
    let span = to.saturating_sub(from).max(1);
    let step = BUCKETS
        .iter()
        .map(|s| s * 1_000_000)
        .find(|step| span.div_ceil(*step) < MAX_BARS)
        .unwrap_or_else(|| span.div_ceil(MAX_BARS).max(1));
    // Buckets start on whole multiples of the step (UTC), so hours start at :00.
    let start = from - from % step;
    let n = (to.saturating_sub(start) / step + 1).min(MAX_BARS + 1);
    (start, step, n as usize)
}

/// A bucket width in words: `15 minutes`, `1 hour`, `7 days`.
fn bucket_name(step_us: u64) -> String {
    let secs = step_us / 1_000_000;
    let (n, unit) = match secs {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    plural(n, unit)
}

/// `1 statement`, `2 statements`.
fn plural(n: u64, noun: &str) -> String {
    format!("{} {noun}{}", thousands(n), if n == 1 { "" } else { "s" })
}

struct Series<'s> {
    label: &'s str,
    color: &'s str,
    counts: Vec<u64>,
}

fn activity(out: &mut String, input: &ReportInput, m: &Model) {
    out.push_str("<section id=\"activity\">\n<h2>Activity over time</h2>\n");
    let from = input.since.or(m.first_ts);
    let to = input
        .until
        .map(|u| u.saturating_sub(1))
        .or(m.last_ts)
        .or(from);
    let (Some(from), Some(to)) = (from, to) else {
        out.push_str("<p class=\"muted\">No entries in the window.</p>\n</section>\n");
        return;
    };
    let (start, step, n) = grid(from, to.max(from));
    let bucket = |ts: u64| (ts.saturating_sub(start) / step).min(n as u64 - 1) as usize;
    let mut allowed = vec![0; n];
    let mut held = vec![0; n];
    let mut denied = vec![0; n];
    for c in &m.commands {
        let b = bucket(c.at.ts);
        match c.outcome.as_str() {
            "deny" => denied[b] += 1,
            "review" => held[b] += 1,
            _ => allowed[b] += 1,
        }
    }
    let mut sessions = vec![0; n];
    for s in &m.sessions {
        if let Some(at) = &s.start {
            sessions[bucket(at.ts)] += 1;
        }
    }
    let mut refused = vec![0; n];
    let refusals = m.auth_failures.iter().map(|e| e.at.ts);
    for ts in refusals.chain(m.connection_denials.iter().map(|e| e.at.ts)) {
        refused[bucket(ts)] += 1;
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">One bar per {}; times in UTC.</p>",
        esc(&bucket_name(step))
    );
    out.push_str("<h3>Statements</h3>\n");
    chart(
        out,
        "chart-statements",
        start,
        step,
        &[
            Series {
                label: "allowed",
                color: "#5b7bd5",
                counts: allowed,
            },
            Series {
                label: "held for review",
                color: "#d9a21b",
                counts: held,
            },
            Series {
                label: "denied",
                color: "#d92d20",
                counts: denied,
            },
        ],
    );
    out.push_str("<h3>Sign-ins</h3>\n");
    chart(
        out,
        "chart-signins",
        start,
        step,
        &[
            Series {
                label: "sessions started",
                color: "#3f9b6b",
                counts: sessions,
            },
            Series {
                label: "failed or refused",
                color: "#d92d20",
                counts: refused,
            },
        ],
    );
    out.push_str("</section>\n");
}

/// A stacked bar chart as inline SVG, one bar per bucket, each with a tooltip.
fn chart(out: &mut String, id: &str, start: u64, step: u64, series: &[Series]) {
    const W: f64 = 1000.0;
    const H: f64 = 180.0;
    const LEFT: f64 = 44.0;
    const BOTTOM: f64 = 22.0;
    const TOP: f64 = 8.0;
    let n = series.first().map_or(0, |s| s.counts.len()).max(1);
    let totals: Vec<u64> = (0..n)
        .map(|b| {
            series
                .iter()
                .map(|s| s.counts.get(b).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let plot_h = H - BOTTOM - TOP;
    let slot = (W - LEFT) / n as f64;
    let bar = (slot * 0.8).max(1.0);
    let _ = write!(
        out,
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{id}\" data-total=\"{}\"",
        totals.iter().sum::<u64>()
    );
    for s in series {
        let _ = write!(
            out,
            " data-{}=\"{}\"",
            s.label.replace(' ', "-"),
            s.counts.iter().sum::<u64>()
        );
    }
    out.push_str(">\n");
    // Axes and the scale.
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#98a2b3\"/>\
         <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{W}\" y2=\"{:.1}\" stroke=\"#98a2b3\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#667085\">{max}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#667085\">0</text>",
        H - BOTTOM,
        H - BOTTOM,
        H - BOTTOM,
        LEFT - 4.0,
        TOP + 10.0,
        LEFT - 4.0,
        H - BOTTOM,
    );
    for b in 0..n {
        let x = LEFT + slot * b as f64 + (slot - bar) / 2.0;
        let mut y = H - BOTTOM;
        let bucket_start = start.saturating_add(step.saturating_mul(b as u64));
        let mut tip = format!("{}: ", time(bucket_start));
        for (k, s) in series.iter().enumerate() {
            let count = s.counts.get(b).copied().unwrap_or(0);
            if k > 0 {
                tip.push_str(", ");
            }
            let _ = write!(tip, "{count} {}", s.label);
            if count == 0 {
                continue;
            }
            let h = plot_h * count as f64 / max as f64;
            y -= h;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}</title></rect>",
                s.color,
                esc(&tip_for(bucket_start, s.label, count))
            );
        }
        // An invisible full-height target so empty buckets have a tooltip too.
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{slot:.1}\" height=\"{plot_h:.1}\" fill=\"transparent\"><title>{}</title></rect>",
            LEFT + slot * b as f64,
            esc(&tip)
        );
    }
    // About eight time labels along the bottom.
    let every = n.div_ceil(8).max(1);
    let short_time = step < 86_400 * 1_000_000;
    for b in (0..n).step_by(every) {
        let t = time(start.saturating_add(step.saturating_mul(b as u64)));
        let label = if short_time {
            t.get(5..16).unwrap_or(&t).to_string()
        } else {
            t.get(..10).unwrap_or(&t).to_string()
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#667085\">{}</text>",
            LEFT + slot * b as f64,
            H - 6.0,
            esc(&label)
        );
    }
    out.push_str("</svg>\n<p class=\"legend\">");
    for s in series {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{} ({})</span>",
            s.color,
            esc(s.label),
            thousands(s.counts.iter().sum())
        );
    }
    out.push_str("</p>\n");
}

fn tip_for(start: u64, label: &str, count: u64) -> String {
    format!("{}: {count} {label}", time(start))
}

fn sessions(out: &mut String, m: &Model) {
    let _ = writeln!(
        out,
        "<section id=\"sessions\">\n<h2>Sessions</h2>\n<p>{}. Open a session to see its statements.</p>",
        plural(m.sessions.len() as u64, "session")
    );
    if m.sessions.is_empty() {
        out.push_str("<p class=\"muted\">No sessions in the window.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table id=\"sessions-table\">\n<tr><th>Entry</th><th>Session</th><th>Identity</th><th>Resource</th>\
         <th>Start</th><th>Duration</th><th class=\"num\">Statements</th><th class=\"num\">Denied</th></tr>\n",
    );
    for s in &m.sessions {
        let first = s.start.unwrap_or(s.first);
        let duration = match &s.end {
            Some(end) => {
                let ms = end
                    .duration_ms
                    .unwrap_or_else(|| end.at.ts.saturating_sub(first.ts) / 1000);
                format!(
                    "{} <span class=\"note\">(#{}: {})</span>",
                    esc(&duration_ms(ms)),
                    end.at.index,
                    esc(&end.reason)
                )
            }
            None => "<span class=\"muted\">open, or ended after the window</span>".into(),
        };
        let start = if s.start.is_some() {
            esc(&time(first.ts))
        } else {
            format!(
                "<span class=\"muted\">before the window</span> (first seen {})",
                esc(&time(first.ts))
            )
        };
        let mut who = identity(s.actor);
        if !s.actor_kind.is_empty() || !s.idp.is_empty() {
            let _ = write!(
                who,
                " <span class=\"note\">{}{}{}</span>",
                esc(s.actor_kind),
                if s.idp.is_empty() { "" } else { " via " },
                esc(s.idp)
            );
        }
        if let Some(review) = &s.access_grant {
            let _ = write!(
                who,
                "<br><span class=\"note\">admitted by access grant {}</span>",
                esc(review)
            );
        }
        let _ = writeln!(
            out,
            "<tr class=\"session\" {} data-session=\"{}\" data-statements=\"{}\">{}<td class=\"mono\">{}{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            row_attrs(&first, "session"),
            esc(s.id),
            s.commands.len(),
            index_cell(&first),
            esc(s.id),
            if s.client.is_empty() {
                String::new()
            } else {
                format!("<br><span class=\"note\">from {}</span>", esc(&s.client))
            },
            who,
            esc(s.resource),
            start,
            duration,
            thousands(s.commands.len() as u64),
            thousands(s.denied),
        );
        if s.commands.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "<tr class=\"statements\"><td></td><td colspan=\"7\"><details><summary>{}</summary>\n\
             <table class=\"inner\"><tr><th>Entry</th><th>Time</th><th>Statement</th><th>Decision</th><th class=\"num\">Rows</th><th class=\"num\">Masked</th></tr>\n",
            plural(s.commands.len() as u64, "statement")
        );
        for &k in s.commands.iter().take(MAX_LISTED_PER_SESSION) {
            let Some(c) = m.commands.get(k) else { continue };
            let result = m.results.get(&c.at.index);
            let rows = match result {
                Some(Outcome { error: Some(e), .. }) => {
                    format!(
                        "<span class=\"badge bad\" title=\"{}\">error</span>",
                        esc(e)
                    )
                }
                Some(Outcome { rows: Some(r), .. }) => thousands(*r),
                _ => String::new(),
            };
            let masked = result.map_or(String::new(), |r| {
                if r.masked > 0 {
                    thousands(r.masked)
                } else {
                    String::new()
                }
            });
            let _ = writeln!(
                out,
                "<tr {}{}>{}<td>{}</td><td>{}</td><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                row_attrs(&c.at, "command"),
                if c.outcome == "deny" {
                    " class=\"denied\""
                } else {
                    ""
                },
                index_cell(&c.at),
                esc(&time(c.at.ts)),
                sql_html(c),
                outcome_badge(&c.outcome),
                c.rule
                    .as_deref()
                    .map(|r| format!(" <span class=\"note\">{}</span>", esc(r)))
                    .unwrap_or_default(),
                rows,
                masked
            );
        }
        if s.commands.len() > MAX_LISTED_PER_SESSION {
            let _ = writeln!(
                out,
                "<tr><td colspan=\"6\" class=\"note\">… and {} more statements, not listed here; \
                 <code>gatehouse audit export</code> lists them all.</td></tr>",
                thousands((s.commands.len() - MAX_LISTED_PER_SESSION) as u64)
            );
        }
        out.push_str("</table></details></td></tr>\n");
    }
    out.push_str("</table>\n</section>\n");
}

/// A review's chain as a list: the request, then each decision in ledger order.
fn chain(out: &mut String, r: &Review) {
    out.push_str("<ol class=\"chain\">");
    match &r.request {
        Some(q) => {
            let _ = write!(
                out,
                "<li {}><span class=\"mono\">#{}</span> {} requested by {}{}{}{}{}</li>",
                row_attrs(&q.at, "approval.request"),
                q.at.index,
                esc(&time(q.at.ts)),
                identity(q.requester),
                q.rule
                    .as_deref()
                    .map(|rule| format!(", rule <code>{}</code>", esc(rule)))
                    .unwrap_or_default(),
                if q.reason.is_empty() {
                    String::new()
                } else {
                    format!(": “{}”", esc(&q.reason))
                },
                match (q.required, q.approvers.is_empty()) {
                    (Some(n), false) => format!(
                        " <span class=\"note\">(needs {n} from {})</span>",
                        esc(&q.approvers.join(", "))
                    ),
                    (Some(n), true) => format!(" <span class=\"note\">(needs {n})</span>"),
                    _ => String::new(),
                },
                q.access_ms
                    .map(|ms| format!(
                        " <span class=\"note\">access for {}</span>",
                        esc(&duration_ms(ms))
                    ))
                    .unwrap_or_default(),
            );
        }
        None => out.push_str("<li class=\"muted\">request before the window</li>"),
    }
    for d in &r.decisions {
        let mut what = outcome_badge(&d.state);
        if let (Some(a), Some(n)) = (d.approvals, d.required)
            && d.state == "pending"
        {
            let _ = write!(what, " <span class=\"note\">{a} of {n} approvals</span>");
        }
        // An approver's verdict names the approver; the states a session or the gateway
        // records afterwards say what became of the held statement.
        let by = match (d.by, d.verdict.as_deref(), d.state.as_str()) {
            (Some(by), Some(verdict), _) => format!(" — {} by {}", esc(verdict), esc(by)),
            (_, None, "executed") => " — the held statement ran".to_string(),
            (_, None, "expired") => " — no decision in time; not run".to_string(),
            (_, None, "cancelled") => " — the client cancelled or left; not run".to_string(),
            (Some(by), None, _) => format!(" — recorded by {}", esc(by)),
            (None, _, _) => " — recorded by the gateway".to_string(),
        };
        let _ = write!(
            out,
            "<li {}><span class=\"mono\">#{}</span> {} {what}{by}{}{}</li>",
            row_attrs(&d.at, "approval.decision"),
            d.at.index,
            esc(&time(d.at.ts)),
            d.reason
                .as_deref()
                .map(|r| format!(": “{}”", esc(r)))
                .unwrap_or_default(),
            d.grant_until
                .map(|until| format!(
                    " <span class=\"badge warn\">grant until {} ({})</span>",
                    esc(&time_ms(until)),
                    esc(&duration_ms(until.saturating_sub(d.at.ts / 1000)))
                ))
                .unwrap_or_default(),
        );
    }
    out.push_str("</ol>");
}

fn privileged(out: &mut String, m: &Model) {
    let list: Vec<&Command> = m.commands.iter().filter(|c| c.privileged()).collect();
    let _ = writeln!(
        out,
        "<section id=\"privileged\">\n<h2>Privileged commands and their approvals</h2>\n\
         <p>Schema and privilege changes (CC8.1) and every statement a rule held for review, \
         each with its approval chain: the request (which names the held statement's entry) and every decision.</p>"
    );
    if list.is_empty() {
        out.push_str("<p class=\"muted\">No privileged commands in the window.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table id=\"privileged-table\">\n<tr><th>Entry</th><th>Time</th><th>Identity / resource</th><th>Statement</th>\
         <th>Decision</th><th>Approval chain</th></tr>\n",
    );
    for c in list {
        let _ = write!(
            out,
            "<tr {} data-change=\"{}\">{}<td>{}</td><td>{}<br><span class=\"note\">{}{}</span></td><td>{}{}</td><td>{}{}</td><td>",
            row_attrs(&c.at, "command"),
            c.change,
            index_cell(&c.at),
            esc(&time(c.at.ts)),
            identity(c.actor),
            esc(c.resource),
            c.session
                .map(|s| format!(" · {}", esc(s)))
                .unwrap_or_default(),
            sql_html(c),
            if c.classes.is_empty() {
                String::new()
            } else {
                format!(
                    "<br><span class=\"note\">{}</span>",
                    esc(&c.classes.join(", "))
                )
            },
            outcome_badge(&c.outcome),
            c.rule
                .as_deref()
                .map(|r| format!("<br><span class=\"note\">{}</span>", esc(r)))
                .unwrap_or_default(),
        );
        if let Some(r) = m.review_of(c.at.index) {
            let _ = write!(
                out,
                "<div>review <code>{}</code> {}</div>",
                esc(&r.id),
                outcome_badge(r.outcome())
            );
            chain(out, r);
        } else if let Some(id) = &c.grant_review {
            let _ = write!(
                out,
                "<div>ran under the grant of review <code>{}</code></div>",
                esc(id)
            );
            if let Some(r) = m.review_by_id(id) {
                chain(out, r);
            } else {
                out.push_str("<p class=\"note\">(the granting review is outside the report)</p>");
            }
        } else if c.outcome == "review" {
            out.push_str("<span class=\"muted\">held; no review entry in the window</span>");
        } else {
            out.push_str("<span class=\"muted\">no approval required by the rules in force</span>");
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n</section>\n");
}

fn approvals(out: &mut String, m: &Model) {
    let _ = writeln!(
        out,
        "<section id=\"approvals\">\n<h2>Approvals and grants</h2>\n<p>{}.</p>",
        plural(m.reviews.len() as u64, "review")
    );
    if !m.reviews.is_empty() {
        out.push_str(
            "<table id=\"approvals-table\">\n<tr><th>Review</th><th>Resource</th><th>Held</th><th>Outcome</th><th>Chain</th></tr>\n",
        );
        for r in &m.reviews {
            let held = match r.request.as_ref() {
                Some(q) if q.access_ms.is_some() => "access request".to_string(),
                Some(Request {
                    command: Some(i), ..
                }) => format!("statement <span class=\"mono\">#{i}</span>"),
                _ => String::new(),
            };
            let _ = write!(
                out,
                "<tr data-review=\"{}\" data-outcome=\"{}\"><td class=\"mono\">{}</td><td>{}</td><td>{held}</td><td>{}</td><td>",
                esc(&r.id),
                esc(r.outcome()),
                esc(&r.id),
                esc(r.request.as_ref().map_or("", |q| q.resource)),
                outcome_badge(r.outcome())
            );
            chain(out, r);
            out.push_str("</td></tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h3>Time-limited grants</h3>\n");
    let grants: Vec<_> = m.grants().collect();
    if grants.is_empty() {
        out.push_str("<p class=\"muted\">No grants in the window.</p>\n");
    } else {
        out.push_str(
            "<table id=\"grants-table\">\n<tr><th>Entry</th><th>Review</th><th>For</th><th>Approved by</th><th>From</th><th>Until</th><th class=\"nowrap\">Duration</th></tr>\n",
        );
        for (r, d) in grants {
            let until = d.grant_until.unwrap_or(0);
            let what = match &r.request {
                Some(q) if q.access_ms.is_some() => {
                    format!(
                        "access to {} for {}",
                        esc(q.resource),
                        identity(q.requester)
                    )
                }
                Some(q) => format!(
                    "statements of rule <code>{}</code> on {} by {}",
                    esc(q.rule.as_deref().unwrap_or("?")),
                    esc(q.resource),
                    identity(q.requester)
                ),
                None => "<span class=\"muted\">request before the window</span>".into(),
            };
            let _ = writeln!(
                out,
                "<tr {}>{}<td class=\"mono\">{}</td><td>{what}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"nowrap\">{}</td></tr>",
                row_attrs(&d.at, "approval.decision"),
                index_cell(&d.at),
                esc(&r.id),
                identity(d.by.unwrap_or("")),
                esc(&time(d.at.ts)),
                esc(&time_ms(until)),
                esc(&duration_ms(until.saturating_sub(d.at.ts / 1000))),
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</section>\n");
}

fn denials(out: &mut String, m: &Model) {
    out.push_str("<section id=\"denials\">\n<h2>Denials and failed authentications</h2>\n");
    out.push_str("<h3>Denied statements</h3>\n");
    let denied: Vec<&Command> = m.commands.iter().filter(|c| c.outcome == "deny").collect();
    if denied.is_empty() {
        out.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        out.push_str(
            "<table id=\"denied-statements\">\n<tr><th>Entry</th><th>Time</th><th>Identity</th><th>Resource</th><th>Statement</th><th>Rule</th></tr>\n",
        );
        for c in denied {
            let _ = writeln!(
                out,
                "<tr class=\"denied\" {}>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                row_attrs(&c.at, "command"),
                index_cell(&c.at),
                esc(&time(c.at.ts)),
                identity(c.actor),
                esc(c.resource),
                sql_html(c),
                esc(c.rule.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h3>Refused connections</h3>\n");
    events(out, "connection-denials", &m.connection_denials, |e| {
        let d = &e.data;
        format!(
            "{} {} from {}{}",
            esc_opt(d.action.as_deref()),
            outcome_badge(d.outcome.as_deref().unwrap_or("deny")),
            esc_opt(d.client.as_deref()),
            d.message
                .as_deref()
                .or(d.error.as_deref())
                .map(|why| format!(": {}", esc(why)))
                .unwrap_or_default()
        )
    });
    out.push_str("<h3>Failed authentications</h3>\n");
    events(out, "auth-failures", &m.auth_failures, |e| {
        let d = &e.data;
        let via = d.via.as_deref().or(d.method.as_deref()).unwrap_or("");
        format!(
            "<strong>{}</strong>{}{}{}",
            esc_opt(d.reason.as_deref()),
            if via.is_empty() {
                String::new()
            } else {
                format!(" via {}", esc(via))
            },
            d.client
                .as_deref()
                .map(|c| format!(" from {}", esc(c)))
                .unwrap_or_default(),
            d.key_id
                .as_deref()
                .map(|k| format!(" (key {})", esc(k)))
                .unwrap_or_default(),
        )
    });
    out.push_str("<h3>Unreachable targets</h3>\n");
    events(out, "target-failures", &m.target_failures, |e| {
        format!(
            "{} from {}: {}",
            esc_opt(e.data.target.as_deref()),
            esc_opt(e.data.client.as_deref()),
            esc_opt(e.data.reason.as_deref())
        )
    });
    out.push_str("<h3>Integrity mismatches (the target ran what was not decided; the session was ended)</h3>\n");
    events(out, "integrity-mismatches", &m.integrity_mismatches, |e| {
        format!(
            "command entry {}: server answered {} — {}",
            e.data.command.map(|n| n.to_string()).unwrap_or_default(),
            esc_opt(e.data.tag.as_deref()),
            esc_opt(e.data.reason.as_deref())
        )
    });
    out.push_str("</section>\n");
}

/// A table of non-statement events: entry, time, identity, resource, and `what`.
fn events<T>(out: &mut String, id: &str, list: &[Event<T>], what: impl Fn(&Event<T>) -> String) {
    if list.is_empty() {
        out.push_str("<p class=\"muted\">None.</p>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<table id=\"{id}\">\n<tr><th>Entry</th><th>Time</th><th>Identity</th><th>Resource</th><th>What</th></tr>"
    );
    for e in list {
        let _ = writeln!(
            out,
            "<tr {}>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            row_attrs(&e.at, e.kind),
            index_cell(&e.at),
            esc(&time(e.at.ts)),
            identity(&e.who),
            esc(e.resource),
            what(e)
        );
    }
    out.push_str("</table>\n");
}

fn masking(out: &mut String, m: &Model, f: &Figures) {
    let _ = writeln!(
        out,
        "<section id=\"masking\">\n<h2>Masking</h2>\n<p>{} values masked in {} results.</p>",
        thousands(f.masked_values),
        thousands(f.masked_statements)
    );
    for (title, id, attr, map) in [
        ("By column rule", "masking-rules", "rule", &m.masked_rules),
        (
            "By content detector",
            "masking-detectors",
            "detector",
            &m.masked_detectors,
        ),
    ] {
        let _ = writeln!(out, "<h3>{title}</h3>");
        if map.is_empty() {
            out.push_str("<p class=\"muted\">None.</p>\n");
            continue;
        }
        let _ = writeln!(
            out,
            "<table id=\"{id}\">\n<tr><th>{}</th><th class=\"num\">Values</th></tr>",
            if attr == "rule" { "Rule" } else { "Detector" }
        );
        for (label, n) in map {
            let _ = writeln!(
                out,
                "<tr data-{attr}=\"{}\" data-value=\"{n}\"><td><code>{}</code></td><td class=\"num\">{}</td></tr>",
                esc(label),
                esc(label),
                thousands(*n)
            );
        }
        out.push_str("</table>\n");
    }
    if m.masked_undecodable > 0 {
        let _ = writeln!(
            out,
            "<p>{} values could not be decoded and were masked whole.</p>",
            thousands(m.masked_undecodable)
        );
    }
    out.push_str("</section>\n");
}

fn changes(out: &mut String, m: &Model) {
    out.push_str("<section id=\"changes\">\n<h2>Configuration, policy and key changes</h2>\n");
    out.push_str("<h3>Configuration and access policy</h3>\n");
    events(out, "config-changes", &m.config_changes, |e| {
        let d = &e.data;
        if let Some(p) = &d.policy {
            let loaded = p.loaded.unwrap_or(false);
            format!(
                "access policy <code>{}</code> {} ({}){}",
                esc_opt(p.file.as_deref()),
                if loaded {
                    "<span class=\"badge ok\">loaded</span>".to_string()
                } else {
                    "<span class=\"badge bad\">NOT loaded</span>".to_string()
                },
                esc_opt(p.trigger.as_deref()),
                if loaded {
                    format!(
                        ", {} policies",
                        p.policies.map(|n| n.to_string()).unwrap_or_default()
                    )
                } else {
                    format!(": {}", esc_opt(p.error.as_deref()))
                }
            )
        } else if d.file.is_some() || d.sha256.is_some() {
            format!(
                "configuration <code>{}</code> sha256 <code>{}</code>{}",
                esc_opt(d.file.as_deref()),
                esc_opt(d.sha256.as_deref()),
                d.resources
                    .as_ref()
                    .map(|r| format!(", resources {}", esc(&r.join(", "))))
                    .unwrap_or_default()
            )
        } else {
            // Neither a policy load nor a configuration: shown as written.
            format!("<code>{}</code>", esc(&e.raw.to_string()))
        }
    });
    out.push_str("<h3>API keys</h3>\n");
    events(out, "key-changes", &m.key_changes, |e| {
        let (created, d) = match &e.data {
            KeyEvent::Created(d) => (true, d),
            KeyEvent::Revoked(d) => (false, d),
        };
        format!(
            "{} <code>{}</code> ({}){}{}",
            if created {
                "<span class=\"badge warn\">created</span>"
            } else {
                "<span class=\"badge muted\">revoked</span>"
            },
            esc_opt(d.key_id.as_deref()),
            esc_opt(d.name.as_deref()),
            d.by.as_deref()
                .map(|b| format!(" by {}", esc(b)))
                .unwrap_or_default(),
            if created {
                format!(
                    "{}{}",
                    Some(&d.groups)
                        .filter(|g| !g.is_empty())
                        .map(|g| format!(", groups {}", esc(&g.join(", "))))
                        .unwrap_or_default(),
                    d.expires_at
                        .and_then(|t| u64::try_from(t).ok())
                        .map(|t| format!(", expires {}", esc(&time_ms(t))))
                        .unwrap_or_default()
                )
            } else {
                d.reason
                    .as_deref()
                    .map(|r| format!(": {}", esc(r)))
                    .unwrap_or_default()
            }
        )
    });
    out.push_str("<h3>Ledger</h3>\n");
    events(out, "ledger-events", &m.ledger_events, |e| match &e.data {
        LedgerEvent::Recovery => format!(
            "<span class=\"badge warn\">recovery</span> <code>{}</code>",
            esc(&e.raw.to_string())
        ),
        LedgerEvent::Prune(p) => {
            let n = |v: Option<u64>| v.unwrap_or(0);
            format!(
                "<span class=\"badge warn\">retention</span> entries {}..{} (from {} to {}) pruned to their hashes, {} recorded data chunks removed ({})",
                n(p.first),
                n(p.end),
                esc(&time(n(p.first_ts))),
                esc(&time(n(p.last_ts))),
                p.chunks.len(),
                esc(p.reason.as_deref().unwrap_or("retention"))
            )
        }
        LedgerEvent::Open => "opened (a gateway run began)".to_string(),
    });
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_764_000_000_000_000;

    fn entry(
        i: u64,
        kind: &str,
        actor: &str,
        session: Option<&str>,
        data: Value,
    ) -> (Value, String) {
        let mut e = json!({"v": 1, "i": i, "ts": T0 + i * 60_000_000, "kind": kind,
            "actor": {"id": actor, "kind": "human", "idp": "apikey"},
            "resource": {"name": "pg-prod", "kind": "postgres"}, "data": data});
        if let Some(s) = session {
            e["session"] = s.into();
        }
        (e, format!("{i:064x}"))
    }

    fn command(
        i: u64,
        session: &str,
        sql: &str,
        outcome: &str,
        classes: &[&str],
    ) -> (Value, String) {
        entry(
            i,
            "command",
            "alice",
            Some(session),
            json!({"protocol": "simple", "classes": classes, "commands": [], "tables": [],
                   "decision": {"outcome": outcome, "rule": null, "policies": []}, "sql": sql}),
        )
    }

    fn sample() -> Vec<(Value, String)> {
        vec![
            entry(
                0,
                "config.change",
                "gatehouse",
                None,
                json!({"file": "g.toml", "sha256": "ab", "resources": ["pg-prod"]}),
            ),
            entry(
                1,
                "session.start",
                "alice",
                Some("s-1"),
                json!({"client": "127.0.0.1:5000", "tls": true}),
            ),
            command(2, "s-1", "SELECT 1", "allow", &["read"]),
            entry(
                3,
                "result",
                "alice",
                Some("s-1"),
                json!({"command": 2, "rows": 1,
                "masked": {"values": 5, "rules": {"email": 3}, "detectors": {"phone": 2}}}),
            ),
            command(4, "s-1", "DELETE FROM t", "deny", &["write"]),
            command(5, "s-1", "DROP TABLE t", "review", &["ddl"]),
            entry(
                6,
                "approval.request",
                "alice",
                Some("s-1"),
                json!({"review": "r-1",
                "command": {"index": 5, "leaf": "00"}, "rule": "ddl", "reason": "DDL", "approvers": ["dba"], "required": 1}),
            ),
            entry(
                7,
                "approval.decision",
                "bob",
                Some("s-1"),
                json!({"review": "r-1", "state": "approved",
                "approvals": 1, "required": 1, "request": {"index": 6, "leaf": "00"}, "verdict": "approve",
                "reason": "ok", "grant_until": (T0 + 7 * 60_000_000) / 1000 + 3_600_000}),
            ),
            entry(
                8,
                "approval.decision",
                "alice",
                Some("s-1"),
                json!({"review": "r-1", "state": "executed",
                "approvals": 1, "required": 1, "request": {"index": 6, "leaf": "00"}}),
            ),
            entry(
                9,
                "command",
                "alice",
                Some("s-1"),
                json!({"classes": ["ddl"], "sql": "  /* x */ alter table t add c int",
                "decision": {"outcome": "review", "rule": "ddl", "grant": {"review": "r-1", "until": 1}}}),
            ),
            entry(
                10,
                "result",
                "alice",
                Some("s-1"),
                json!({"command": 9, "rows": 0,
                "masked": {"values": 1, "rules": {"email": 1}, "detectors": {}}}),
            ),
            entry(
                11,
                "session.end",
                "alice",
                Some("s-1"),
                json!({"duration_ms": 600_000, "reason": "client closed"}),
            ),
            entry(
                12,
                "auth.failure",
                "",
                None,
                json!({"user": "mallory", "reason": "wrong_key"}),
            ),
            entry(
                13,
                "policy.decision",
                "eve",
                None,
                json!({"outcome": "deny", "action": "connect"}),
            ),
            entry(
                14,
                "policy.decision",
                "eve",
                None,
                json!({"outcome": "allow", "action": "connect"}),
            ),
            entry(
                15,
                "approval.request",
                "carol",
                None,
                json!({"review": "r-2", "access": {"for_ms": 3_600_000}, "reason": "on call"}),
            ),
            entry(
                16,
                "approval.decision",
                "",
                None,
                json!({"review": "r-2", "state": "expired"}),
            ),
            // A session whose start lies before the window.
            command(17, "s-0", "GRANT SELECT ON t TO x", "allow", &[]),
        ]
    }

    #[test]
    fn figures_count_what_the_entries_say() {
        let f = figures(&sample());
        assert_eq!(f.entries, 18);
        assert_eq!((f.sessions, f.authentications), (2, 1));
        assert_eq!(f.statements, 5);
        assert_eq!(
            (
                f.auth_failures,
                f.connection_denials,
                f.statement_denials,
                f.denials
            ),
            (1, 1, 1, 2)
        );
        assert_eq!(f.approval_requests, 2);
        assert_eq!(
            (f.approved, f.denied_reviews, f.expired, f.pending),
            (1, 0, 1, 0)
        );
        assert_eq!((f.grants, f.granted_statements), (1, 1));
        assert_eq!((f.masked_values, f.masked_statements), (6, 2));
        // DROP (class ddl), ALTER (behind a comment), GRANT (keyword only).
        assert_eq!((f.changes, f.changes_approved), (3, 2));
        assert_eq!(f.privileged, 3);
        assert_eq!(f.config_changes, 1);
    }

    #[test]
    fn mismatches_are_shown_and_aggregated_failures_counted_whole() {
        let mut entries = sample();
        entries.push(entry(
            18,
            "integrity.mismatch",
            "alice",
            Some("s-1"),
            json!({"command": 4, "tag": "DELETE 1", "decided": ["SELECT"],
                   "reason": "statement 1 was decided as SELECT but the server ran DELETE"}),
        ));
        let before = figures(&entries).auth_failures;
        entries.push(entry(
            19,
            "auth.failure",
            "gatehouse",
            None,
            json!({"client": "10.0.0.9", "reason": "wrong_key", "aggregated": true, "count": 41,
                   "users": ["mallory"]}),
        ));
        let f = figures(&entries);
        assert_eq!(f.integrity_mismatches, 1);
        assert_eq!(f.auth_failures, before + 41);
        let html = render(&input(&entries, true));
        assert!(
            html.contains("server answered DELETE 1"),
            "the mismatch is listed"
        );
    }

    #[test]
    fn masking_is_summed_per_rule_and_detector() {
        let entries = sample();
        let m = Model::build(&entries);
        assert_eq!(m.masked_rules.get("email"), Some(&4));
        assert_eq!(m.masked_detectors.get("phone"), Some(&2));
    }

    #[test]
    fn reviews_link_commands_and_decisions() {
        let entries = sample();
        let m = Model::build(&entries);
        let r = m.review_of(5).expect("review of the DROP");
        assert_eq!(r.id, "r-1");
        assert_eq!(r.decisions.len(), 2);
        assert_eq!(r.outcome(), "executed");
        assert!(m.review_of(4).is_none());
        let html = render(&input(&entries, true));
        // The chain names the request, the approver and the reason.
        assert!(html.contains("requested by alice"));
        assert!(html.contains("approve by bob: “ok”"));
        assert!(html.contains("grant until"));
    }

    fn input(entries: &[(Value, String)], ok: bool) -> ReportInput<'_> {
        ReportInput {
            title: "Q4 <access> review".into(),
            since: Some(T0),
            until: Some(T0 + 86_400_000_000),
            user: None,
            resource: Some("pg-prod".into()),
            generated_at: T0,
            verification: Verification {
                ok,
                summary: if ok {
                    "verified: 18 entries lead to the signed root".into()
                } else {
                    "entry 3 does not match".into()
                },
                origin: "gatehouse/test".into(),
                checkpoint_size: 18,
                root: "ab".repeat(32),
                matched: 18,
                excluded: 0,
                pruned: 0,
            },
            entries,
        }
    }

    #[test]
    fn values_from_entries_are_escaped() {
        let mut entries = sample();
        entries.push(command(
            18,
            "s-1",
            "SELECT '<script>alert(1)</script>' \"&",
            "allow",
            &[],
        ));
        entries[0].0["data"]["file"] = "\"><img src=x onerror=alert(1)>".into();
        let html = render(&input(&entries, true));
        assert!(!html.contains("<script"), "no script element");
        assert!(!html.contains("<img"), "no injected element");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Q4 &lt;access&gt; review"));
    }

    #[test]
    fn figures_sit_in_elements_with_ids() {
        let entries = sample();
        let html = render(&input(&entries, true));
        for id in FIGURE_IDS {
            assert_eq!(html.matches(&format!("id=\"{id}\"")).count(), 1, "{id}");
        }
        assert!(
            html.contains("<span id=\"sessions-count\" class=\"figure\" data-value=\"2\">2</span>")
        );
        assert!(html.contains(
            "<span id=\"masked-values-count\" class=\"figure\" data-value=\"6\">6</span>"
        ));
        assert!(html.contains("data-index=\"17\""));
    }

    #[test]
    fn a_failed_verification_is_red_and_says_so() {
        let entries = sample();
        let html = render(&input(&entries, false));
        assert!(html.contains("class=\"verification fail\""));
        assert!(html.contains("VERIFICATION FAILED"));
        assert!(html.contains("<title>UNVERIFIED"));
        let ok = render(&input(&entries, true));
        assert!(ok.contains("class=\"verification ok\"") && !ok.contains("role=\"alert\""));
    }

    #[test]
    fn self_contained_without_remote_references() {
        let html = render(&input(&sample(), true));
        for needle in [
            "<script", "<link", "src=", "url(", "@import", "http://", "https://",
        ] {
            assert!(!html.contains(needle), "{needle}");
        }
    }

    #[test]
    fn odd_entries_do_not_panic() {
        let odd = vec![
            (json!(null), String::new()),
            (json!([1, 2]), "x".into()),
            (
                json!({"kind": "command", "i": "seven", "ts": -1, "data": "nope", "session": 5}),
                "y".into(),
            ),
            (
                json!({"kind": "result", "data": {"masked": {"values": u64::MAX, "rules": {"a": u64::MAX}}}}),
                "z".into(),
            ),
            (
                json!({"kind": "result", "data": {"masked": {"values": u64::MAX, "rules": {"a": u64::MAX}}}}),
                "z".into(),
            ),
            (
                json!({"kind": "approval.decision", "ts": u64::MAX, "data": {}}),
                "w".into(),
            ),
            (
                json!({"kind": "session.start", "ts": u64::MAX, "session": "s", "data": {}}),
                "w".into(),
            ),
        ];
        let f = figures(&odd);
        assert_eq!(f.masked_values, u64::MAX);
        let mut inp = input(&odd, false);
        inp.since = None;
        inp.until = None;
        inp.generated_at = u64::MAX;
        let html = render(&inp);
        assert!(html.ends_with("</html>\n"));
        let mut none = input(&[], true);
        none.since = None;
        none.until = None;
        let empty = render(&none);
        assert!(empty.contains("No entries in the window"));
    }

    #[test]
    fn change_detection_reads_past_comments() {
        assert_eq!(first_word("  -- hi\n /* x */ Drop table t"), "Drop");
        assert_eq!(first_word("(SELECT 1)"), "SELECT");
        assert_eq!(first_word("-- only a comment"), "");
        assert!(is_change(&[], &[], "truncate t"));
        assert!(is_change(&["dcl"], &[], "x"));
        assert!(is_change(&[], &["DROP TABLE"], ""));
        assert!(!is_change(&["read"], &["SELECT"], "select 'drop'"));
    }

    #[test]
    fn grid_keeps_bars_readable() {
        let (start, step, n) = grid(T0 + 5, T0 + 3 * 3600 * 1_000_000);
        assert_eq!(step, 5 * 60 * 1_000_000);
        assert!(start <= T0 + 5 && n as u64 <= MAX_BARS + 1 && n >= 36);
        let (_, step, n) = grid(0, u64::MAX);
        assert!(step > 0 && n as u64 <= MAX_BARS + 1);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration_ms(3_723_000), "1h 02m 03s");
        assert_eq!(time(u64::MAX), format!("{} µs", u64::MAX));
        assert_eq!(bucket_name(15 * 60 * 1_000_000), "15 minutes");
        assert_eq!(bucket_name(86_400 * 1_000_000), "1 day");
        assert_eq!(plural(1, "statement"), "1 statement");
    }
}
