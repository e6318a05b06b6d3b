//! Why the gateway refused a command, as facts every protocol shares: a rule or policy
//! denied it, its review was denied, timed out or was cancelled, the ledger could not
//! record it, the gateway could not read it... Each protocol maps a refusal to its own error
//! in one place (a SQLSTATE for PostgreSQL; an exit status for SSH; a status code for HTTP)
//! and shows the client [`Refusal`]'s text.

use std::fmt;

/// A refused command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A guardrail rule or the access policy denied it (`reason` says which and why).
    Denied { reason: String },
    /// It needs an approval, but nobody may give one on `resource`.
    NoApprovers { reason: String, resource: String },
    /// The requester has as many reviews open as it may (`limit` says so).
    TooManyOpenReviews { limit: String },
    /// Its review could not be opened (the ledger refused the request entry, ...).
    ReviewNotOpened { why: String },
    /// An approver denied its review.
    ReviewDenied {
        review: String,
        by: Option<String>,
        why: Option<String>,
    },
    /// Nobody decided its review in time.
    ReviewTimedOut { review: String, waited: String },
    /// The client cancelled it while its review was open.
    ReviewCancelled { review: String },
    /// Its review ended otherwise (`why`, when known): not approved.
    ReviewEnded { review: String, why: Option<String> },
    /// The gateway is stopping while the command waits for its review, which stays open.
    GatewayStopping { review: String },
    /// The ledger cannot record it, so it must not run (`message` says why).
    LedgerUnavailable { message: String },
    /// The gateway cannot tell what the target would run (`message` says why, and when to
    /// try again).
    Unreadable { message: String },
    /// The target itself would refuse it, and the gateway answers as the target would:
    /// `code` is the target's own error code, `position` (from 1, in characters) the place
    /// in the command an error points at.
    AsTheTargetWould {
        code: &'static str,
        message: String,
        position: Option<u32>,
    },
    /// The session holds as many of something as it may (`message` says what).
    SessionLimit { message: String },
    /// The command nests deeper than the gateway follows (`message` says what).
    TooComplex { message: String },
    /// The connection to the target failed while the command was being handled.
    TargetFailed { why: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Denied { reason } => write!(f, "gatehouse: denied: {reason}"),
            Refusal::NoApprovers { reason, resource } => write!(
                f,
                "gatehouse: this statement needs an approval ({reason}), but resources.{resource}.reviews.approvers names no group that may give one and no access policy is configured, so it was not executed"
            ),
            Refusal::TooManyOpenReviews { limit } => {
                write!(f, "gatehouse: {limit}; the statement was not executed")
            }
            Refusal::ReviewNotOpened { why } => {
                write!(f, "gatehouse: the review could not be opened: {why}")
            }
            Refusal::ReviewDenied { review, by, why } => {
                write!(f, "gatehouse: review {review} was denied")?;
                if let Some(by) = by {
                    write!(f, " by {by}")?;
                    if let Some(why) = why {
                        write!(f, ": {why}")?;
                    }
                }
                Ok(())
            }
            Refusal::ReviewTimedOut { review, waited } => write!(
                f,
                "gatehouse: review {review} timed out after {waited} without a decision; the statement was not executed"
            ),
            Refusal::ReviewCancelled { review } => write!(
                f,
                "gatehouse: canceling statement due to user request (review {review} cancelled)"
            ),
            Refusal::ReviewEnded { review, why } => match why {
                Some(why) => write!(
                    f,
                    "gatehouse: review {review}: {why}; the statement was not executed"
                ),
                None => write!(
                    f,
                    "gatehouse: review {review} ended; the statement was not executed"
                ),
            },
            Refusal::GatewayStopping { review } => write!(
                f,
                "gatehouse is shutting down; review {review} stays open for approvers: run the statement again once it is approved"
            ),
            Refusal::LedgerUnavailable { message }
            | Refusal::Unreadable { message }
            | Refusal::AsTheTargetWould { message, .. }
            | Refusal::SessionLimit { message }
            | Refusal::TooComplex { message } => f.write_str(message),
            Refusal::TargetFailed { why } => {
                write!(f, "gatehouse: the target connection failed: {why}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Refusal;

    #[test]
    fn texts_name_the_review_and_the_reason() {
        let denied = Refusal::ReviewDenied {
            review: "r-1".into(),
            by: Some("bob".into()),
            why: Some("not today".into()),
        };
        assert_eq!(
            denied.to_string(),
            "gatehouse: review r-1 was denied by bob: not today"
        );
        let anonymous = Refusal::ReviewDenied {
            review: "r-1".into(),
            by: None,
            why: Some("ignored without an approver".into()),
        };
        assert_eq!(anonymous.to_string(), "gatehouse: review r-1 was denied");
        assert_eq!(
            Refusal::Denied {
                reason: "denied by rule no-drop".into()
            }
            .to_string(),
            "gatehouse: denied: denied by rule no-drop"
        );
        let target = Refusal::AsTheTargetWould {
            code: "34000",
            message: "portal \"p\" does not exist".into(),
            position: None,
        };
        assert_eq!(target.to_string(), "portal \"p\" does not exist");
    }
}
