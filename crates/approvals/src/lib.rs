//! Just-in-time approvals: the reviews of statements a rule holds, who may decide them,
//! and how the waiting session learns the outcome.
//!
//! A review is opened by the session that holds the statement and decided by approvers
//! through the admin API or the CLI. Every state change is recorded before it takes effect:
//! [`Reviews::decide`] and [`Reviews::finish`] take the recording step (a ledger append) and
//! apply the change only once it succeeded, while holding the registry's lock, so the
//! ledger's order is the order things happened in and an approval that could not be
//! recorded never lets a statement run. The rules of deciding ([`judge`]) are pure;
//! [`notify`] tells approvers over webhooks.
//!
//! With a state store ([`Reviews::load`]), every change is also written through to it
//! once recorded, and a restarted gateway starts from what it holds: pending reviews stay
//! decidable and grants stay in force. Only the waiting (the channel a held session
//! listens on) lives in memory; a review pending across a restart has no session any more
//! (`restarted`), so its approval lets the requester run the statement again rather than
//! running it.

pub mod notify;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{Actor, Event, EventKind, ResourceRef};
use gatehouse_store::{Store, StoreError, StoredGrant, StoredReview};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

/// Where a review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Executed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Executed => "executed",
        }
    }
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<State, String> {
        Ok(match s {
            "pending" => State::Pending,
            "approved" => State::Approved,
            "denied" => State::Denied,
            "expired" => State::Expired,
            "cancelled" => State::Cancelled,
            "executed" => State::Executed,
            other => return Err(format!("unknown review state {other:?}")),
        })
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ledger entry a review refers to: its index and leaf hash (hex), so the reference is
/// checkable against the tree.
pub use gatehouse_core::evidence::EntryRef;

/// One approver's act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub by: String,
    /// Unix milliseconds.
    pub at: u64,
    pub reason: Option<String>,
    /// An approval that is also a grant: for this many milliseconds, later statements the
    /// same rule holds, from the same identity on the same resource, run without a review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_ms: Option<u64>,
}

/// Statements a rule would hold that run without a review until `until`: made by an
/// approval given for a duration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub resource: String,
    pub requester: String,
    pub rule: Option<String>,
    /// Unix milliseconds.
    pub until: u64,
    /// The review that granted it, and its request entry.
    pub review: String,
    pub request: EntryRef,
    /// A grant of access (`connect`) rather than of a rule's statements.
    pub access: bool,
}

/// A held statement, or an access request, waiting for (or past) its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    pub id: String,
    /// For an access request (no statement is held): how long access is asked for, in
    /// milliseconds. Approved, it becomes a grant of `connect` for that long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_ms: Option<u64>,
    pub resource: String,
    pub requester: String,
    pub session: String,
    /// The statement as the client sent it.
    pub statement: String,
    /// The rule (or Cedar policy) that asked for the review, and its message.
    pub rule: Option<String>,
    /// Every rule and policy that held the statement (when more than one did): an
    /// approval given for a duration grants each of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    pub reason: String,
    /// Groups whose members may decide.
    pub approvers: Vec<String>,
    /// Approvals needed; any denial rejects.
    pub required: u32,
    pub approvals: Vec<Verdict>,
    pub denial: Option<Verdict>,
    pub state: State,
    /// Unix milliseconds until which the approval also lets later statements of the same
    /// rule through (when every approval asked for a duration: the shortest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_until: Option<u64>,
    /// Unix milliseconds.
    pub requested_at: u64,
    pub expires_at: u64,
    /// The `approval.request` entry every later entry of this review refers to.
    pub request: EntryRef,
    /// The gateway restarted while this statement waited (pending, or approved and not yet
    /// run): the session that held it is gone, so it never runs by itself. Decided, it
    /// tells the requester the outcome; approved for a duration, its grant lets the
    /// statement through when the requester sends it again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
}

/// What a session (or an access request) knows when it opens a review.
#[derive(Debug, Clone)]
pub struct NewReview {
    /// An access request for this long, rather than a held statement.
    pub access: Option<Duration>,
    pub resource: String,
    pub requester: String,
    pub session: String,
    pub statement: String,
    pub rule: Option<String>,
    /// Every rule and policy that held the statement (see [`Review::holders`]).
    pub holders: Vec<String>,
    pub reason: String,
    pub approvers: Vec<String>,
    pub required: u32,
    pub timeout: Duration,
}

/// Who is deciding.
#[derive(Debug, Clone, Copy)]
pub struct Approver<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
    /// Access policy (a Cedar `permit` of action `approve` on the review's resource) lets
    /// this identity decide, whatever its groups.
    pub permitted: bool,
}

/// What an approver decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approve; with a duration, also grant later statements of the same rule for that long.
    Approve {
        grant: Option<Duration>,
    },
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("there is no review {0}")]
    NotFound(String),
    #[error("review {id} is {state}, no longer pending")]
    NotPending { id: String, state: State },
    #[error("{0} asked for this review and cannot decide it")]
    OwnRequest(String),
    #[error(
        "{name} may not decide review {id}: its approvers are the groups {groups:?} and no policy permits {name} to approve"
    )]
    NotAnApprover {
        name: String,
        id: String,
        groups: Vec<String>,
    },
    #[error("{0} has already approved this review")]
    AlreadyApproved(String),
    #[error("the decision could not be recorded, so it was not taken: {0}")]
    Record(String),
    #[error(
        "{requester} already has {limit} reviews waiting for a decision, the most one identity may have; wait until some are decided or have expired"
    )]
    TooManyOpen { requester: String, limit: usize },
}

/// The review after `who` approves or denies it: the rules of deciding. The requester
/// never decides their own request; only members of an approver group, or those access
/// policy permits to `approve`, decide; one approval per person; the review is approved once `required` people have
/// approved, and denied by any denial.
pub fn judge(
    review: &Review,
    who: Approver<'_>,
    decision: &Decision,
    reason: Option<String>,
    now: u64,
) -> Result<Review, ReviewError> {
    if review.state != State::Pending {
        return Err(ReviewError::NotPending {
            id: review.id.clone(),
            state: review.state,
        });
    }
    if who.name == review.requester {
        return Err(ReviewError::OwnRequest(who.name.to_string()));
    }
    if !who.permitted && !review.approvers.iter().any(|g| who.groups.contains(g)) {
        return Err(ReviewError::NotAnApprover {
            name: who.name.to_string(),
            id: review.id.clone(),
            groups: review.approvers.clone(),
        });
    }
    if review.approvals.iter().any(|a| a.by == who.name) {
        return Err(ReviewError::AlreadyApproved(who.name.to_string()));
    }
    let mut verdict = Verdict {
        by: who.name.to_string(),
        at: now,
        reason,
        grant_ms: None,
    };
    let mut next = review.clone();
    match decision {
        Decision::Approve { grant } => {
            verdict.grant_ms = grant.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX / 2));
            next.approvals.push(verdict);
            if next.approvals.len() >= review.required as usize {
                next.state = State::Approved;
                // An access request grants what it asked for; an approval of a statement
                // grants only when every approver gave a duration, the shortest of them.
                let grants: Option<Vec<u64>> = match review.access_ms {
                    Some(ms) => Some(vec![ms]),
                    None => next.approvals.iter().map(|a| a.grant_ms).collect(),
                };
                next.grant_until = grants
                    .and_then(|g| g.into_iter().min())
                    .map(|ms| now.saturating_add(ms));
            }
        }
        Decision::Deny => {
            next.denial = Some(verdict);
            next.state = State::Denied;
        }
    }
    Ok(next)
}

struct Slot {
    review: Review,
    tx: watch::Sender<Review>,
}

/// How long decided reviews stay listed.
const KEEP_DECIDED: Duration = Duration::from_secs(3600);

/// How many reviews one requester may have waiting at once. Each one holds a session (or
/// an access request), a place in every approver's list and a round of webhooks; without a
/// bound one identity could flood all three. Twenty is far above what a person or an agent
/// waits on at a time.
pub const MAX_OPEN_PER_REQUESTER: usize = 20;

/// The reviews of one gateway, shared by its sessions and its admin API.
#[derive(Clone, Default)]
pub struct Reviews {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    grants: Arc<std::sync::Mutex<Vec<Grant>>>,
    /// Where every change is written through to, when the gateway has a state store;
    /// `Reviews::default()` keeps everything in memory (tests, tools).
    store: Option<Store>,
}

impl std::fmt::Debug for Reviews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reviews")
    }
}

impl Reviews {
    /// The reviews and grants `store` holds, and a registry that writes every later change
    /// through to it. Pending reviews are loaded whatever their age (a restarted gateway
    /// must let approvers decide them, and expire them: see [`Reviews::list`]), decided ones
    /// for as long as they stay listed; grants while in force. What no longer counts is
    /// pruned from the store.
    pub async fn load(store: Store) -> Result<Reviews, StoreError> {
        let now = now_ms();
        let since = now.saturating_sub(keep_ms());
        store.prune_reviews(to_i64(since), to_i64(now)).await?;
        let mut slots = HashMap::new();
        for stored in store.reviews(to_i64(since)).await? {
            let mut review = from_stored(stored).map_err(StoreError::Corrupt)?;
            // Its session ended with the gateway that held it.
            review.restarted = !review.session.is_empty()
                && matches!(review.state, State::Pending | State::Approved);
            let (tx, _) = watch::channel(review.clone());
            slots.insert(review.id.clone(), Slot { review, tx });
        }
        let grants = store
            .grants(to_i64(now))
            .await?
            .into_iter()
            .map(|g| Grant {
                resource: g.resource,
                requester: g.requester,
                rule: g.rule,
                until: to_u64(g.until),
                review: g.review,
                request: EntryRef {
                    index: to_u64(g.request_index),
                    leaf: g.request_leaf,
                },
                access: g.access,
            })
            .collect();
        Ok(Reviews {
            slots: Arc::new(Mutex::new(slots)),
            grants: Arc::new(std::sync::Mutex::new(grants)),
            store: Some(store),
        })
    }

    /// Writes `review` (and the grants it just gave) through to the store. Called once the
    /// change is in the ledger, so it is applied whether or not this succeeds: the ledger
    /// is the record, and a change it holds must take effect. A failure is logged; the
    /// review's next change writes the whole row again.
    async fn persist(&self, review: &Review, grants: &[Grant]) {
        let Some(store) = &self.store else {
            return;
        };
        let grants: Vec<StoredGrant> = grants
            .iter()
            .map(|g| StoredGrant {
                resource: g.resource.clone(),
                requester: g.requester.clone(),
                rule: g.rule.clone(),
                access: g.access,
                until: to_i64(g.until),
                review: g.review.clone(),
                request_index: to_i64(g.request.index),
                request_leaf: g.request.leaf.clone(),
            })
            .collect();
        if let Err(e) = store.save_review(&to_stored(review), &grants).await {
            tracing::error!(
                review = %review.id,
                state = %review.state,
                error = %e,
                "a review change is in the ledger but could not be stored; a restart before its next change forgets it"
            );
        }
    }

    /// Opens a review once `record` (given the review to be) has recorded the request and
    /// returned its entry. The receiver sees every later change. A requester who already
    /// has [`MAX_OPEN_PER_REQUESTER`] reviews waiting gets [`ReviewError::TooManyOpen`],
    /// and nothing is recorded.
    pub async fn open<F, Fut, E>(
        &self,
        new: NewReview,
        record: F,
    ) -> Result<(Review, watch::Receiver<Review>), ReviewError>
    where
        F: FnOnce(&Review) -> Fut,
        Fut: Future<Output = Result<EntryRef, E>>,
        E: std::fmt::Display,
    {
        let now = now_ms();
        let mut review = Review {
            id: new_id(),
            access_ms: new
                .access
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)),
            resource: new.resource,
            requester: new.requester,
            session: new.session,
            statement: new.statement,
            rule: new.rule,
            holders: new.holders,
            reason: new.reason,
            approvers: new.approvers,
            required: new.required.max(1),
            approvals: Vec::new(),
            denial: None,
            state: State::Pending,
            grant_until: None,
            requested_at: now,
            expires_at: now + u64::try_from(new.timeout.as_millis()).unwrap_or(u64::MAX / 2),
            request: EntryRef {
                index: 0,
                leaf: String::new(),
            },
            restarted: false,
        };
        let mut slots = self.slots.lock().await;
        slots.retain(|_, s| {
            s.review.state == State::Pending || s.review.requested_at + keep_ms() > now
        });
        // Counted under the same lock the new review is inserted under, so concurrent
        // requests cannot both take the last place. A pending review past its expiry is
        // not counted: its end may not have been recorded yet (the ledger was failing),
        // and that must not shut its requester out.
        let open = slots
            .values()
            .filter(|s| {
                s.review.state == State::Pending
                    && s.review.expires_at > now
                    && s.review.requester == review.requester
            })
            .count();
        if open >= MAX_OPEN_PER_REQUESTER {
            return Err(ReviewError::TooManyOpen {
                requester: review.requester,
                limit: MAX_OPEN_PER_REQUESTER,
            });
        }
        review.request = record(&review)
            .await
            .map_err(|e| ReviewError::Record(e.to_string()))?;
        self.persist(&review, &[]).await;
        let (tx, rx) = watch::channel(review.clone());
        slots.insert(
            review.id.clone(),
            Slot {
                review: review.clone(),
                tx,
            },
        );
        Ok((review, rx))
    }

    /// Every review still known, newest first.
    pub async fn list(&self) -> Vec<Review> {
        let mut all: Vec<Review> = self
            .slots
            .lock()
            .await
            .values()
            .map(|s| s.review.clone())
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.requested_at));
        all
    }

    pub async fn get(&self, id: &str) -> Option<Review> {
        self.slots.lock().await.get(id).map(|s| s.review.clone())
    }

    /// An approver's decision ([`judge`]), taken once `record` has recorded it. An
    /// approval given for a duration also makes a [`Grant`].
    pub async fn decide<F, Fut, R, E>(
        &self,
        id: &str,
        who: Approver<'_>,
        decision: &Decision,
        reason: Option<String>,
        record: F,
    ) -> Result<Review, ReviewError>
    where
        F: FnOnce(&Review) -> Fut,
        // What the recording returns (the entry's reference) is not needed here.
        Fut: Future<Output = Result<R, E>>,
        E: std::fmt::Display,
    {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(id)
            .ok_or_else(|| ReviewError::NotFound(id.to_string()))?;
        let next = judge(&slot.review, who, decision, reason, now_ms())?;
        record(&next)
            .await
            .map_err(|e| ReviewError::Record(e.to_string()))?;
        let mut given = Vec::new();
        if let Some(until) = next.grant_until {
            // A grant covers exactly what held the statement: each holder gets its own.
            let rules: Vec<Option<String>> = if next.holders.is_empty() {
                vec![next.rule.clone()]
            } else {
                next.holders.iter().cloned().map(Some).collect()
            };
            for rule in rules {
                given.push(Grant {
                    resource: next.resource.clone(),
                    requester: next.requester.clone(),
                    rule,
                    until,
                    review: next.id.clone(),
                    request: next.request.clone(),
                    access: next.access_ms.is_some(),
                });
            }
        }
        self.persist(&next, &given).await;
        if !given.is_empty() {
            let mut grants = self.grants.lock().expect("grants lock");
            let now = now_ms();
            grants.retain(|g| g.until > now);
            grants.extend(given);
        }
        slot.review = next.clone();
        slot.tx.send_replace(next.clone());
        Ok(next)
    }

    /// A grant in force for statements `rule` holds from `requester` on `resource`.
    pub fn grant(&self, resource: &str, requester: &str, rule: Option<&str>) -> Option<Grant> {
        self.find_grant(|g| {
            !g.access
                && g.resource == resource
                && g.requester == requester
                && g.rule.as_deref() == rule
        })
    }

    /// A grant of access in force for `requester` on `resource`.
    pub fn access_grant(&self, resource: &str, requester: &str) -> Option<Grant> {
        self.find_grant(|g| g.access && g.resource == resource && g.requester == requester)
    }

    fn find_grant(&self, matches: impl Fn(&Grant) -> bool) -> Option<Grant> {
        let now = now_ms();
        self.grants
            .lock()
            .expect("grants lock")
            .iter()
            .filter(|g| g.until > now && matches(g))
            .max_by_key(|g| g.until)
            .cloned()
    }

    /// The session's own ends of a review: `Expired` or `Cancelled` while it is pending,
    /// `Executed` once approved. Taken once `record` has recorded it.
    pub async fn finish<F, Fut, R, E>(
        &self,
        id: &str,
        state: State,
        record: F,
    ) -> Result<Review, ReviewError>
    where
        F: FnOnce(&Review) -> Fut,
        // What the recording returns (the entry's reference) is not needed here.
        Fut: Future<Output = Result<R, E>>,
        E: std::fmt::Display,
    {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(id)
            .ok_or_else(|| ReviewError::NotFound(id.to_string()))?;
        let allowed = match state {
            State::Executed => slot.review.state == State::Approved,
            State::Expired | State::Cancelled => slot.review.state == State::Pending,
            _ => false,
        };
        if !allowed {
            return Err(ReviewError::NotPending {
                id: id.to_string(),
                state: slot.review.state,
            });
        }
        let mut next = slot.review.clone();
        next.state = state;
        record(&next)
            .await
            .map_err(|e| ReviewError::Record(e.to_string()))?;
        self.persist(&next, &[]).await;
        slot.review = next.clone();
        slot.tx.send_replace(next.clone());
        Ok(next)
    }
}

/// Unix milliseconds as SQLite's integers hold them (a far expiry saturates).
fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn to_u64(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn to_stored(review: &Review) -> StoredReview {
    StoredReview {
        id: review.id.clone(),
        resource: review.resource.clone(),
        requester: review.requester.clone(),
        session: review.session.clone(),
        access_ms: review.access_ms.map(to_i64),
        statement: review.statement.clone(),
        rule: review.rule.clone(),
        holders: review.holders.clone(),
        reason: review.reason.clone(),
        approvers: review.approvers.clone(),
        required: i64::from(review.required),
        approvals: serde_json::to_value(&review.approvals).unwrap_or_default(),
        denial: review
            .denial
            .as_ref()
            .map(|d| serde_json::to_value(d).unwrap_or_default()),
        state: review.state.as_str().to_string(),
        grant_until: review.grant_until.map(to_i64),
        requested_at: to_i64(review.requested_at),
        expires_at: to_i64(review.expires_at),
        request_index: to_i64(review.request.index),
        request_leaf: review.request.leaf.clone(),
        updated_at: to_i64(now_ms()),
    }
}

fn from_stored(s: StoredReview) -> Result<Review, String> {
    let id = s.id;
    let verdicts = |v: serde_json::Value| -> Result<Vec<Verdict>, String> {
        serde_json::from_value(v).map_err(|e| format!("review {id} approvals: {e}"))
    };
    let approvals = verdicts(s.approvals)?;
    let denial = match s.denial {
        Some(v) => Some(
            serde_json::from_value::<Verdict>(v).map_err(|e| format!("review {id} denial: {e}"))?,
        ),
        None => None,
    };
    Ok(Review {
        access_ms: s.access_ms.map(to_u64),
        resource: s.resource,
        requester: s.requester,
        session: s.session,
        statement: s.statement,
        rule: s.rule,
        holders: s.holders,
        reason: s.reason,
        approvers: s.approvers,
        required: u32::try_from(s.required).map_err(|e| format!("review {id} required: {e}"))?,
        approvals,
        denial,
        state: s
            .state
            .parse()
            .map_err(|e: String| format!("review {id}: {e}"))?,
        grant_until: s.grant_until.map(to_u64),
        requested_at: to_u64(s.requested_at),
        expires_at: to_u64(s.expires_at),
        request: EntryRef {
            index: to_u64(s.request_index),
            leaf: s.request_leaf,
        },
        restarted: false,
        id,
    })
}

fn keep_ms() -> u64 {
    KEEP_DECIDED.as_millis() as u64
}

/// Unix milliseconds now.
pub use gatehouse_core::clock::unix_ms as now_ms;

/// `r-` and ten hex digits: short enough to type, random so ids say nothing.
fn new_id() -> String {
    let mut raw = [0u8; 5];
    if getrandom::fill(&mut raw).is_err() {
        raw.copy_from_slice(&now_ms().to_be_bytes()[3..]);
    }
    format!("r-{}", hex::encode(raw))
}

/// An `approval.decision` entry: the review's new state, referring to its request entry
/// by index and leaf hash, by `actor`, with `extra` fields (an approver's verdict and
/// reason).
pub fn decision_event(review: &Review, actor: Option<Actor>, extra: serde_json::Value) -> Event {
    let mut data = serde_json::json!({
        "review": review.id,
        "requester": review.requester,
        "state": review.state,
        "approvals": review.approvals.len(),
        "required": review.required,
        "request": review.request,
    });
    if let (Some(map), serde_json::Value::Object(more)) = (data.as_object_mut(), extra) {
        map.extend(more);
    }
    Event {
        kind: EventKind::ApprovalDecision,
        actor,
        resource: Some(ResourceRef {
            name: review.resource.clone(),
            kind: "postgres".into(),
        }),
        // An access request comes from no session.
        session: (!review.session.is_empty()).then(|| review.session.clone()),
        data,
        chunks: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
