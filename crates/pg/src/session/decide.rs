//! Admission of a statement: its decision (guardrail rules and access policy) recorded
//! write-ahead in a `command` entry, the hold for review when one is needed, and the
//! audit append itself.

use gatehouse_approvals::{EntryRef, NewReview, Review, ReviewError, State, Verdict};
use gatehouse_core::EventKind;
use gatehouse_ledger::Receipt;
use gatehouse_policy::decide_statement;
use gatehouse_sql::Outcome;
use gatehouse_wire_pg::backend;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::client::Refusal;
use super::{ClientStream, Session, Stop, drain_into, ledger_refusal};
use crate::prepared::Prepared;

/// Client bytes a session keeps while a statement is held; more stay in the socket.
const MAX_HELD_INPUT: usize = 1 << 20;

/// SQL longer than this goes into a chunk; the entry keeps a prefix and the chunk's hash.
const INLINE_SQL: usize = 16 * 1024;

/// The client and the pending output, lent to a statement that may be held.
pub(super) struct Io<'a, S> {
    pub(super) client: &'a mut S,
    pub(super) to_server: &'a mut Vec<u8>,
    pub(super) to_client: &'a mut Vec<u8>,
}

impl Session {
    /// Decides a statement and records the decision, write-ahead: the `command` entry is
    /// appended (durable in `sync` mode) before an allowed statement may be forwarded. A
    /// statement held for review waits here for its decision ([`Session::hold`]). Returns
    /// the entry's ledger index, or the SQLSTATE and message of the refusal.
    pub(super) async fn admit<S: ClientStream>(
        &mut self,
        prepared: &Prepared,
        mut detail: Value,
        io: Io<'_, S>,
    ) -> Result<u64, Refusal> {
        let cedar = self.resource.policy.as_ref().map(|handle| {
            self.policy.statements(
                handle,
                &self.actor,
                &self.resource.target(),
                &prepared.analysis,
            )
        });
        let decision = decide_statement(
            &self.resource.rules,
            self.resource.on_unparsed,
            &self.actor.groups,
            &prepared.analysis,
            cedar,
        );
        if let Value::Object(map) = &mut detail {
            map.extend(prepared.summary.clone());
        }
        detail["decision"] = json!({"outcome": decision.outcome.as_str(), "rule": decision.rule, "policies": decision.policies});
        // Every rule and policy that holds the statement; a grant covers exactly what it
        // names, so the statement skips its review only with a grant for each.
        let holders: Vec<String> = if decision.holders.is_empty() {
            decision
                .rule
                .clone()
                .or_else(|| decision.policies.first().cloned())
                .into_iter()
                .collect()
        } else {
            decision.holders.clone()
        };
        if holders.len() > 1 {
            detail["decision"]["holders"] = json!(holders);
        }
        let grants: Option<Vec<gatehouse_approvals::Grant>> = match decision.outcome {
            Outcome::Review => holders
                .iter()
                .map(|h| {
                    self.resource
                        .reviews
                        .grant(&self.resource.name, &self.actor.id, Some(h))
                })
                .collect(),
            _ => None,
        };
        let grant = grants.as_ref().and_then(|g| g.first());
        if let (Some(grants), Some(first)) = (&grants, grant) {
            // The entry names the review that granted it (each, when several hold).
            detail["decision"]["grant"] =
                json!({"review": first.review, "request": first.request, "until": first.until});
            if grants.len() > 1 {
                detail["decision"]["grants"] = grants
                    .iter()
                    .map(|g| json!({"rule": g.rule, "review": g.review, "request": g.request, "until": g.until}))
                    .collect();
            }
        }
        let receipt = self
            .audit(&prepared.sql, detail)
            .await
            .map_err(|message| Refusal::LedgerUnavailable { message })?;
        match decision.outcome {
            Outcome::Allow => Ok(receipt.index),
            Outcome::Review if grant.is_some() => Ok(receipt.index),
            Outcome::Deny => {
                self.totals.denied += 1;
                // Text the parser rejected is answered with the parser's own error, as the
                // server would answer it; the entry above records it as refused.
                if let Some(syntax) = &prepared.analysis.syntax_error {
                    return Err(Refusal::AsTheTargetWould {
                        code: syntax.code,
                        message: syntax.message.clone(),
                        position: syntax.position,
                    });
                }
                let reason = decision.message.unwrap_or_default();
                Err(Refusal::Denied { reason })
            }
            Outcome::Review => {
                let reason = decision.message.unwrap_or_default();
                let held = self
                    .hold(&prepared.sql, &receipt, holders, reason, io)
                    .await;
                if held.is_err() {
                    self.totals.denied += 1;
                }
                held.map(|()| receipt.index)
            }
        }
    }

    /// Holds a statement for review: opens the review (an `approval.request` entry naming
    /// the command entry), tells the client how it can be approved, and waits — for the
    /// approvers, the timeout, a CancelRequest or the client leaving — recording how it
    /// ended. `Ok` once approved (its `executed` entry written before the statement is sent).
    async fn hold<S: ClientStream>(
        &mut self,
        sql: &str,
        command: &Receipt,
        holders: Vec<String>,
        reason: String,
        io: Io<'_, S>,
    ) -> Result<(), Refusal> {
        let mut settings = self.resource.review.clone();
        // A holding rule may ask for other approvers or more approvals. With several
        // holders, the review must satisfy each: the most approvals any asks for (a Cedar
        // policy asks for the resource's), from groups every holding rule accepts.
        let holding: Vec<&gatehouse_sql::Rule> = self
            .resource
            .rules
            .iter()
            .filter(|r| holders.iter().any(|h| h == &r.id))
            .collect();
        let default = settings.approvals;
        settings.approvals = holding
            .iter()
            .map(|r| r.approvals.unwrap_or(default))
            .chain((holding.len() < holders.len()).then_some(default))
            .max()
            .unwrap_or(default);
        let mut approvers: Option<Vec<String>> = None;
        for groups in holding.iter().filter_map(|r| r.approvers.as_ref()) {
            approvers = Some(match approvers {
                None => groups.clone(),
                Some(so_far) => so_far.into_iter().filter(|g| groups.contains(g)).collect(),
            });
        }
        if let Some(groups) = approvers {
            settings.approvers = groups;
        }
        let rule = holders.first().cloned();
        // Without approver groups only access policy can name approvers.
        if settings.approvers.is_empty() && self.resource.policy.is_none() {
            return Err(Refusal::NoApprovers {
                reason,
                resource: self.resource.name.clone(),
            });
        }
        let command_ref = EntryRef {
            index: command.index,
            leaf: hex::encode(command.leaf_hash),
        };
        let new = NewReview {
            access: None,
            resource: self.resource.name.clone(),
            requester: self.actor.id.clone(),
            session: self.id.clone(),
            statement: sql.to_string(),
            rule,
            holders: if holders.len() > 1 {
                holders
            } else {
                Vec::new()
            },
            reason,
            approvers: settings.approvers.clone(),
            required: settings.approvals,
            timeout: settings.timeout,
        };
        let ledger = self.resource.ledger.clone();
        let request = self.event(EventKind::ApprovalRequest, Value::Null);
        let opened = self
            .resource
            .reviews
            .open(new, |review: &Review| {
                let mut event = request;
                event.data = json!({
                    "review": review.id,
                    "command": command_ref,
                    "rule": review.rule,
                    "reason": review.reason,
                    "approvers": review.approvers,
                    "required": review.required,
                    "expires_at": review.expires_at,
                });
                async move { ledger.append_ref(&event).await }
            })
            .await;
        let (review, mut changes) = match opened {
            Ok(opened) => opened,
            // Too many of this identity's reviews wait already: a limit, not a failure.
            Err(e @ ReviewError::TooManyOpen { .. }) => {
                return Err(Refusal::TooManyOpenReviews {
                    limit: e.to_string(),
                });
            }
            Err(e) => {
                return Err(Refusal::ReviewNotOpened { why: e.to_string() });
            }
        };
        let id = review.id.clone();
        gatehouse_approvals::notify::review_requested(
            &settings.notify,
            &review,
            &settings.admin_url,
        );
        let wait = humantime::format_duration(settings.timeout).to_string();
        let mut notice = Vec::new();
        backend::write_message_fields(
            b'N',
            [
                (b'S', "NOTICE"),
                (b'V', "NOTICE"),
                (b'C', "00000"),
                (
                    b'M',
                    format!("gatehouse: held for review {id}: {}", review.reason).as_str(),
                ),
                (
                    b'D',
                    format!(
                        "Waiting up to {wait} for {} approval(s) from {}.",
                        review.required,
                        match (review.approvers.is_empty(), self.resource.policy.is_some()) {
                            (true, _) => "those access policy permits to approve".to_string(),
                            (false, true) => format!(
                                "the group(s) {} or those access policy permits to approve",
                                review.approvers.join(", ")
                            ),
                            (false, false) => format!("the group(s) {}", review.approvers.join(", ")),
                        }
                    )
                    .as_str(),
                ),
                (
                    b'H',
                    format!(
                        "Approve with `gatehouse reviews approve {id}` or POST {}/api/reviews/{id}/approve.",
                        settings.admin_url
                    )
                    .as_str(),
                ),
            ],
            &mut notice,
        );
        io.to_client.extend_from_slice(&notice);
        // What came before this statement goes out now; its results wait with the rest.
        drain_into(&mut self.target, io.to_server)
            .await
            .map_err(|e| Refusal::TargetFailed { why: e.to_string() })?;
        let _ = drain_into(io.client, io.to_client).await;
        let deadline = tokio::time::Instant::now() + settings.timeout;
        let cancelled = self.cancelled.clone();
        let mut stopping = self.stopping.clone();
        let ended = loop {
            tokio::select! {
                // The gateway is stopping: the review stays open (it is in the state store,
                // decidable after the restart); this session ends, saying so.
                _ = async {
                    match stopping.as_mut() {
                        // The guard `wait_for` returns is not Send; dropped in here.
                        Some(stop) => { let _ = stop.wait_for(|stop| *stop).await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let refusal = Refusal::GatewayStopping { review: id.clone() };
                    self.stop = Some(Stop {
                        code: "57P01",
                        message: refusal.to_string(),
                        event: None,
                    });
                    return Err(refusal);
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        break State::Cancelled;
                    }
                    let now = changes.borrow_and_update().clone();
                    match now.state {
                        State::Approved => break State::Approved,
                        State::Denied => {
                            let denial = now.denial.unwrap_or(Verdict { by: "?".into(), at: 0, reason: None, grant_ms: None });
                            return Err(Refusal::ReviewDenied { review: id.clone(), by: Some(denial.by), why: denial.reason });
                        }
                        State::Pending => {
                            // Progress: who approved, and how many are still needed.
                            let by = now.approvals.last().map(|a| a.by.as_str()).unwrap_or("?");
                            let mut out = Vec::new();
                            backend::notice_response(
                                "00000",
                                &format!(
                                    "gatehouse: review {id} approved by {by} ({} of {} approvals)",
                                    now.approvals.len(),
                                    now.required
                                ),
                                &mut out,
                            );
                            let _ = drain_into(io.client, &mut out).await;
                        }
                        _ => break now.state,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break State::Expired,
                _ = cancelled.notified() => break State::Cancelled,
                // Past the cap the client's bytes wait in its socket: the session holds
                // no more of them than this while a statement waits.
                read = io.client.read_buf(&mut self.held_input),
                    if self.held_input.len() < MAX_HELD_INPUT =>
                {
                    // More from the client waits its turn; nothing, or an error, means
                    // the client has gone.
                    if !matches!(read, Ok(n) if n > 0) {
                        self.client_gone = true;
                        break State::Cancelled;
                    }
                }
            }
        };
        let target = match ended {
            State::Approved => State::Executed,
            other => other,
        };
        let ledger = self.resource.ledger.clone();
        let finished = self
            .resource
            .reviews
            .finish(&id, target, |next: &Review| {
                let event =
                    gatehouse_approvals::decision_event(next, Some(self.actor.clone()), json!({}));
                async move { ledger.append_ref(&event).await }
            })
            .await;
        match (target, finished) {
            (State::Executed, Ok(_)) => Ok(()),
            (State::Expired, Ok(_)) => Err(Refusal::ReviewTimedOut {
                review: id,
                waited: wait.to_string(),
            }),
            (State::Cancelled, Ok(_)) => Err(Refusal::ReviewCancelled { review: id }),
            // A decision came in between (a denial just before the timeout): it stands.
            (
                _,
                Err(ReviewError::NotPending {
                    state: State::Denied,
                    ..
                }),
            ) => Err(Refusal::ReviewDenied {
                review: id,
                by: None,
                why: None,
            }),
            (_, Err(e)) => Err(Refusal::ReviewEnded {
                review: id,
                why: Some(e.to_string()),
            }),
            (_, Ok(_)) => Err(Refusal::ReviewEnded {
                review: id,
                why: None,
            }),
        }
    }

    /// Write-ahead audit: the `command` entry is appended (durable in `sync` mode) before the
    /// statement may be forwarded. Returns its ledger index, or the refusal message.
    pub(super) async fn audit(&mut self, sql: &str, mut detail: Value) -> Result<Receipt, String> {
        let mut event = self.event(EventKind::Command, Value::Null);
        if sql.len() > INLINE_SQL {
            match self
                .resource
                .ledger
                .put_chunk(sql.as_bytes().to_vec())
                .await
            {
                Ok(chunk) => {
                    detail["sql_prefix"] = sql[..sql.floor_char_boundary(INLINE_SQL)].into();
                    detail["sql_in_chunk"] = true.into();
                    event.chunks.push(chunk);
                }
                Err(e) => {
                    self.totals.refused += 1;
                    return Err(ledger_refusal(&e));
                }
            }
        } else {
            detail["sql"] = sql.into();
        }
        event.data = detail;
        match self
            .resource
            .ledger
            .append(&event, self.resource.durability)
            .await
        {
            Ok(receipt) => {
                self.totals.commands += 1;
                Ok(receipt)
            }
            Err(e) => {
                self.totals.refused += 1;
                tracing::warn!(session = %self.id, error = %e, "statement refused: ledger unavailable");
                Err(ledger_refusal(&e))
            }
        }
    }
}
