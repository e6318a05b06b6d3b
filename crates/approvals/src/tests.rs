//! The rules of deciding, and the registry's record-then-apply order.

use super::*;

fn new_review(required: u32) -> NewReview {
    NewReview {
        access: None,
        resource: "pg-prod".into(),
        requester: "alice".into(),
        session: "s-1".into(),
        statement: "DROP TABLE t".into(),
        rule: Some("drops-need-review".into()),
        holders: Vec::new(),
        reason: "dropping needs an approval".into(),
        approvers: vec!["dba".into()],
        required,
        timeout: Duration::from_secs(60),
    }
}

const APPROVE: Decision = Decision::Approve { grant: None };

fn approver<'a>(name: &'a str, groups: &'a [String], permitted: bool) -> Approver<'a> {
    Approver {
        name,
        groups,
        permitted,
    }
}

fn dba() -> Vec<String> {
    vec!["dba".to_string()]
}

async fn opened(reviews: &Reviews, required: u32) -> (Review, watch::Receiver<Review>) {
    reviews
        .open(new_review(required), |_| async {
            Ok::<_, String>(EntryRef {
                index: 7,
                leaf: "ab".into(),
            })
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn approvals_count_and_the_waiting_side_sees_each() {
    let reviews = Reviews::default();
    let (review, mut rx) = opened(&reviews, 2).await;
    assert_eq!(review.state, State::Pending);
    assert_eq!(review.request.index, 7);
    assert!(review.id.starts_with("r-") && review.id.len() == 12);

    let groups = dba();
    let bob = approver("bob", &groups, false);
    let after = reviews
        .decide(&review.id, bob, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!((after.state, after.approvals.len()), (State::Pending, 1));
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow().approvals.len(), 1);
    // One approval per person.
    let again = reviews
        .decide(&review.id, bob, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await;
    assert_eq!(again, Err(ReviewError::AlreadyApproved("bob".into())));

    let carol = approver("carol", &groups, false);
    let done = reviews
        .decide(&review.id, carol, &APPROVE, Some("ok".into()), |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(done.state, State::Approved);
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow().state, State::Approved);
    let executed = reviews
        .finish(&review.id, State::Executed, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(executed.state, State::Executed);
}

#[tokio::test]
async fn requesters_outsiders_and_late_deciders_are_refused() {
    let reviews = Reviews::default();
    let (review, _rx) = opened(&reviews, 1).await;
    let groups = dba();
    let alice = approver("alice", &groups, false);
    let refused = reviews
        .decide(&review.id, alice, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await;
    assert_eq!(refused, Err(ReviewError::OwnRequest("alice".into())));

    let others = vec!["analysts".to_string()];
    let eve = approver("eve", &others, false);
    let refused = reviews
        .decide(&review.id, eve, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("approvers are the groups [\"dba\"]"),
        "{refused}"
    );

    let bob = approver("bob", &groups, false);
    let denied = reviews
        .decide(
            &review.id,
            bob,
            &Decision::Deny,
            Some("not now".into()),
            |_| async { Ok::<(), String>(()) },
        )
        .await
        .unwrap();
    assert_eq!(denied.state, State::Denied);
    assert_eq!(denied.denial.unwrap().reason.as_deref(), Some("not now"));
    let late = reviews
        .decide(&review.id, bob, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await;
    assert!(matches!(
        late,
        Err(ReviewError::NotPending {
            state: State::Denied,
            ..
        })
    ));
    // A denied review is never executed, and an unknown one cannot be decided.
    let run = reviews
        .finish(&review.id, State::Executed, |_| async {
            Ok::<(), String>(())
        })
        .await;
    assert!(run.is_err());
    let unknown = reviews
        .decide("r-0000000000", bob, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await;
    assert_eq!(unknown, Err(ReviewError::NotFound("r-0000000000".into())));
}

#[tokio::test]
async fn nothing_changes_unless_it_was_recorded() {
    let reviews = Reviews::default();
    let failed = reviews
        .open(new_review(1), |_| async {
            Err::<EntryRef, _>("ledger down".to_string())
        })
        .await;
    assert_eq!(
        failed.unwrap_err(),
        ReviewError::Record("ledger down".into())
    );
    assert!(reviews.list().await.is_empty());

    let (review, rx) = opened(&reviews, 1).await;
    let groups = dba();
    let bob = approver("bob", &groups, false);
    let failed = reviews
        .decide(&review.id, bob, &APPROVE, None, |next| {
            // The recording step sees the review as it will be.
            assert_eq!(next.state, State::Approved);
            async { Err::<(), _>("ledger down".to_string()) }
        })
        .await;
    assert!(matches!(failed, Err(ReviewError::Record(_))));
    assert_eq!(reviews.get(&review.id).await.unwrap().state, State::Pending);
    assert!(!rx.has_changed().unwrap(), "the waiting side saw nothing");

    let expired = reviews
        .finish(&review.id, State::Expired, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(expired.state, State::Expired);
    let late = reviews
        .decide(&review.id, bob, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await;
    assert!(matches!(
        late,
        Err(ReviewError::NotPending {
            state: State::Expired,
            ..
        })
    ));
}

#[tokio::test]
async fn an_approval_for_a_duration_grants_the_same_rule_to_the_same_person() {
    let reviews = Reviews::default();
    let (review, _rx) = opened(&reviews, 2).await;
    let groups = dba();
    let bob = approver("bob", &groups, false);
    let carol = approver("carol", &groups, false);
    let hour = Decision::Approve {
        grant: Some(Duration::from_secs(3600)),
    };
    let minute = Decision::Approve {
        grant: Some(Duration::from_secs(60)),
    };
    reviews
        .decide(&review.id, bob, &hour, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert!(
        reviews
            .grant("pg-prod", "alice", Some("drops-need-review"))
            .is_none()
    );
    let done = reviews
        .decide(&review.id, carol, &minute, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    // The shortest duration given.
    let until = done.grant_until.unwrap();
    assert!(
        (59_000..=60_000).contains(&(until - done.approvals[1].at)),
        "{until}"
    );
    let grant = reviews
        .grant("pg-prod", "alice", Some("drops-need-review"))
        .unwrap();
    assert_eq!(
        (grant.review.as_str(), grant.until),
        (review.id.as_str(), until)
    );
    assert_eq!(grant.request.index, 7);
    // Not for another person, resource or rule.
    assert!(
        reviews
            .grant("pg-prod", "mallory", Some("drops-need-review"))
            .is_none()
    );
    assert!(
        reviews
            .grant("pg-dev", "alice", Some("drops-need-review"))
            .is_none()
    );
    assert!(
        reviews
            .grant("pg-prod", "alice", Some("other-rule"))
            .is_none()
    );

    // An approval without a duration grants nothing.
    let (plain, _rx) = opened(&reviews, 2).await;
    reviews
        .decide(&plain.id, bob, &hour, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    let done = reviews
        .decide(&plain.id, carol, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!((done.state, done.grant_until), (State::Approved, None));
}

#[tokio::test]
async fn grants_end_by_themselves() {
    let reviews = Reviews::default();
    let (review, _rx) = opened(&reviews, 1).await;
    let groups = dba();
    let bob = approver("bob", &groups, false);
    let brief = Decision::Approve {
        grant: Some(Duration::from_millis(200)),
    };
    reviews
        .decide(&review.id, bob, &brief, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert!(
        reviews
            .grant("pg-prod", "alice", Some("drops-need-review"))
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reviews
            .grant("pg-prod", "alice", Some("drops-need-review"))
            .is_none()
    );
}

#[tokio::test]
async fn policy_may_let_someone_outside_the_groups_decide() {
    let reviews = Reviews::default();
    let (review, _rx) = opened(&reviews, 1).await;
    let none: Vec<String> = Vec::new();
    let permitted = approver("pat", &none, true);
    let done = reviews
        .decide(&review.id, permitted, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(done.state, State::Approved);
    // Policy never lets the requester decide their own request.
    let (review, _rx) = opened(&reviews, 1).await;
    let alice = approver("alice", &none, true);
    let own = reviews
        .decide(&review.id, alice, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await;
    assert_eq!(own, Err(ReviewError::OwnRequest("alice".into())));
}

#[tokio::test]
async fn an_approved_access_request_grants_connect_for_what_it_asked() {
    let reviews = Reviews::default();
    let ask = NewReview {
        access: Some(Duration::from_secs(7200)),
        statement: "access to pg-prod for 2h".into(),
        rule: None,
        holders: Vec::new(),
        ..new_review(1)
    };
    let (review, _rx) = reviews
        .open(ask, |_| async {
            Ok::<_, String>(EntryRef {
                index: 3,
                leaf: "cd".into(),
            })
        })
        .await
        .unwrap();
    assert!(reviews.access_grant("pg-prod", "alice").is_none());
    let groups = dba();
    let bob = approver("bob", &groups, false);
    let done = reviews
        .decide(&review.id, bob, &APPROVE, None, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    let until = done.grant_until.unwrap();
    assert!((7_199_000..=7_200_000).contains(&(until - done.approvals[0].at)));
    let grant = reviews.access_grant("pg-prod", "alice").unwrap();
    assert!(grant.access && grant.until == until);
    // It is not a grant of statements, nor for anyone else.
    assert!(reviews.grant("pg-prod", "alice", None).is_none());
    assert!(reviews.access_grant("pg-prod", "mallory").is_none());
}

#[tokio::test]
async fn a_requester_has_at_most_the_cap_of_reviews_waiting() {
    let reviews = Reviews::default();
    let mut first = None;
    for _ in 0..MAX_OPEN_PER_REQUESTER {
        let (review, _rx) = opened(&reviews, 1).await;
        first.get_or_insert(review);
    }
    let mut recorded = false;
    let refused = reviews
        .open(new_review(1), |_| {
            recorded = true;
            async {
                Ok::<_, String>(EntryRef {
                    index: 8,
                    leaf: "ef".into(),
                })
            }
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        ReviewError::TooManyOpen {
            requester: "alice".into(),
            limit: MAX_OPEN_PER_REQUESTER,
        }
    );
    assert!(!recorded, "a refused review is not recorded");
    assert!(
        refused
            .to_string()
            .contains("alice already has 20 reviews waiting"),
        "{refused}"
    );
    assert_eq!(reviews.list().await.len(), MAX_OPEN_PER_REQUESTER);

    // Someone else is not held back by alice's reviews.
    let bob = NewReview {
        requester: "bob".into(),
        ..new_review(1)
    };
    assert!(
        reviews
            .open(bob, |_| async {
                Ok::<_, String>(EntryRef {
                    index: 9,
                    leaf: "01".into(),
                })
            })
            .await
            .is_ok()
    );

    // Once one of hers is decided, alice may open another.
    let groups = dba();
    let carol = approver("carol", &groups, false);
    reviews
        .decide(
            &first.unwrap().id,
            carol,
            &Decision::Deny,
            None,
            |_| async { Ok::<(), String>(()) },
        )
        .await
        .unwrap();
    assert!(
        reviews
            .open(new_review(1), |_| async {
                Ok::<_, String>(EntryRef {
                    index: 10,
                    leaf: "02".into(),
                })
            })
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_review_past_its_expiry_does_not_count_against_the_cap() {
    let reviews = Reviews::default();
    let brief = NewReview {
        timeout: Duration::from_millis(1),
        ..new_review(1)
    };
    for _ in 0..MAX_OPEN_PER_REQUESTER {
        reviews
            .open(brief.clone(), |_| async {
                Ok::<_, String>(EntryRef {
                    index: 1,
                    leaf: "aa".into(),
                })
            })
            .await
            .unwrap();
    }
    // Their ends were never recorded (no session finished them): still pending, but
    // past their time.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        reviews
            .list()
            .await
            .iter()
            .all(|r| r.state == State::Pending)
    );
    assert!(opened_ok(&reviews).await);
}

async fn opened_ok(reviews: &Reviews) -> bool {
    reviews
        .open(new_review(1), |_| async {
            Ok::<_, String>(EntryRef {
                index: 2,
                leaf: "bb".into(),
            })
        })
        .await
        .is_ok()
}

#[tokio::test]
async fn a_grant_covers_exactly_the_rules_that_held_the_statement() {
    let reviews = Reviews::default();
    let held_by_two = NewReview {
        rule: Some("drops-need-review".into()),
        holders: vec!["drops-need-review".into(), "prod-needs-review".into()],
        ..new_review(1)
    };
    let (review, _rx) = reviews
        .open(held_by_two, |_| async {
            Ok::<_, String>(EntryRef {
                index: 3,
                leaf: "cd".into(),
            })
        })
        .await
        .unwrap();
    assert_eq!(review.holders.len(), 2);
    let groups = dba();
    let hour = Decision::Approve {
        grant: Some(Duration::from_secs(3600)),
    };
    reviews
        .decide(
            &review.id,
            approver("bob", &groups, false),
            &hour,
            None,
            |_| async { Ok::<(), String>(()) },
        )
        .await
        .unwrap();
    for rule in ["drops-need-review", "prod-needs-review"] {
        let grant = reviews.grant("pg-prod", "alice", Some(rule)).unwrap();
        assert_eq!(grant.review, review.id, "{rule}");
    }
    assert!(
        reviews
            .grant("pg-prod", "alice", Some("truncate-needs-review"))
            .is_none(),
        "a rule that did not hold the statement is not granted"
    );
}

/// A registry on a fresh state store in `dir`.
async fn stored(dir: &std::path::Path) -> Reviews {
    Reviews::load(gatehouse_store::Store::open_in(dir).await.unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restarted_registry_keeps_pending_reviews_decidable_and_grants_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = stored(dir.path()).await;
    let (review, _rx) = opened(&first, 1).await;
    let mut access = new_review(1);
    access.access = Some(Duration::from_secs(3600));
    access.session = String::new();
    let (asked, _) = first
        .open(access, |_| async {
            Ok::<_, String>(EntryRef {
                index: 8,
                leaf: "cd".into(),
            })
        })
        .await
        .unwrap();
    drop(first);

    // The "restart": a new registry on the same file.
    let second = stored(dir.path()).await;
    let held = second.get(&review.id).await.unwrap();
    assert_eq!(held.state, State::Pending);
    assert!(held.restarted, "its session is gone");
    assert_eq!(
        (held.request.index, held.statement.as_str()),
        (7, "DROP TABLE t")
    );
    let reloaded = second.get(&asked.id).await.unwrap();
    // An access request has no session to lose.
    assert!(!reloaded.restarted);
    assert_eq!(reloaded.access_ms, Some(3_600_000));
    assert_eq!(
        second.list().await.len(),
        2,
        "both listed for approvers again"
    );

    // Approvers decide it as before; the decision is recorded first.
    let groups = dba();
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = recorded.clone();
    let decided = second
        .decide(
            &review.id,
            approver("bob", &groups, false),
            &Decision::Approve {
                grant: Some(Duration::from_secs(3600)),
            },
            Some("planned".into()),
            move |next| {
                seen.lock().unwrap().push(next.state);
                async { Ok::<(), String>(()) }
            },
        )
        .await
        .unwrap();
    assert_eq!(decided.state, State::Approved);
    assert_eq!(*recorded.lock().unwrap(), [State::Approved]);
    assert!(
        second
            .grant("pg-prod", "alice", Some("drops-need-review"))
            .is_some()
    );
    // A decision that could not be recorded is not taken, nor stored.
    let refused = second
        .decide(
            &asked.id,
            approver("bob", &groups, false),
            &APPROVE,
            None,
            |_| async { Err::<(), _>("ledger failed".to_string()) },
        )
        .await;
    assert!(matches!(refused, Err(ReviewError::Record(_))));
    drop(second);

    // After another restart, the decision and the grant stand.
    let third = stored(dir.path()).await;
    let after = third.get(&review.id).await.unwrap();
    assert_eq!(after.state, State::Approved);
    assert_eq!(after.approvals[0].by, "bob");
    assert_eq!(after.approvals[0].reason.as_deref(), Some("planned"));
    assert_eq!(after.approvals[0].grant_ms, Some(3_600_000));
    assert!(after.restarted, "approved, but nothing waits to run it");
    let grant = third
        .grant("pg-prod", "alice", Some("drops-need-review"))
        .unwrap();
    assert_eq!(
        (grant.review.as_str(), grant.request.index),
        (review.id.as_str(), 7)
    );
    assert_eq!(Some(grant.until), after.grant_until);
    assert_eq!(
        third.get(&asked.id).await.unwrap().state,
        State::Pending,
        "the refused decision left no trace"
    );
    let err = third
        .decide(
            &review.id,
            approver("carol", &groups, false),
            &APPROVE,
            None,
            |_| async { Ok::<(), String>(()) },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ReviewError::NotPending { .. }), "{err}");
}

#[tokio::test]
async fn a_reloaded_review_expires_and_access_grants_reload() {
    let dir = tempfile::tempdir().unwrap();
    let first = stored(dir.path()).await;
    let (review, _rx) = opened(&first, 1).await;
    let mut access = new_review(1);
    access.access = Some(Duration::from_secs(600));
    access.session = String::new();
    let (asked, _) = first
        .open(access, |_| async {
            Ok::<_, String>(EntryRef {
                index: 9,
                leaf: "ef".into(),
            })
        })
        .await
        .unwrap();
    let groups = dba();
    first
        .decide(
            &asked.id,
            approver("bob", &groups, false),
            &APPROVE,
            None,
            |_| async { Ok::<(), String>(()) },
        )
        .await
        .unwrap();
    drop(first);

    let second = stored(dir.path()).await;
    // Nothing waits on a reloaded review, but it still ends: the gateway expires it.
    let ended = second
        .finish(&review.id, State::Expired, |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(ended.state, State::Expired);
    let access = second.access_grant("pg-prod", "alice").unwrap();
    assert_eq!(access.review, asked.id);
    assert!(second.grant("pg-prod", "alice", None).is_none());
    drop(second);

    let third = stored(dir.path()).await;
    let expired = third.get(&review.id).await.unwrap();
    assert_eq!(expired.state, State::Expired);
    assert!(!expired.restarted, "it no longer waits for anything");
    assert!(third.access_grant("pg-prod", "alice").is_some());
}
