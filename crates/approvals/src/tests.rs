//! The rules of deciding, and the registry's record-then-apply order.

use super::*;

fn new_review(required: u32) -> NewReview {
    NewReview {
        resource: "pg-prod".into(),
        requester: "alice".into(),
        session: "s-1".into(),
        statement: "DROP TABLE t".into(),
        rule: Some("drops-need-review".into()),
        reason: "dropping needs an approval".into(),
        approvers: vec!["dba".into()],
        required,
        timeout: Duration::from_secs(60),
    }
}

fn dba() -> Vec<String> {
    vec!["dba".to_string()]
}

async fn opened(reviews: &Reviews, required: u32) -> (Review, watch::Receiver<Review>) {
    reviews
        .open(new_review(required), |_| async {
            Ok(EntryRef {
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
    let bob = Approver {
        name: "bob",
        groups: &groups,
    };
    let after = reviews
        .decide(&review.id, bob, true, None, |_| async { Ok(()) })
        .await
        .unwrap();
    assert_eq!((after.state, after.approvals.len()), (State::Pending, 1));
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow().approvals.len(), 1);
    // One approval per person.
    let again = reviews
        .decide(&review.id, bob, true, None, |_| async { Ok(()) })
        .await;
    assert_eq!(again, Err(ReviewError::AlreadyApproved("bob".into())));

    let carol = Approver {
        name: "carol",
        groups: &groups,
    };
    let done = reviews
        .decide(&review.id, carol, true, Some("ok".into()), |_| async {
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(done.state, State::Approved);
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow().state, State::Approved);
    let executed = reviews
        .finish(&review.id, State::Executed, |_| async { Ok(()) })
        .await
        .unwrap();
    assert_eq!(executed.state, State::Executed);
}

#[tokio::test]
async fn requesters_outsiders_and_late_deciders_are_refused() {
    let reviews = Reviews::default();
    let (review, _rx) = opened(&reviews, 1).await;
    let groups = dba();
    let alice = Approver {
        name: "alice",
        groups: &groups,
    };
    let refused = reviews
        .decide(&review.id, alice, true, None, |_| async { Ok(()) })
        .await;
    assert_eq!(refused, Err(ReviewError::OwnRequest("alice".into())));

    let others = vec!["analysts".to_string()];
    let eve = Approver {
        name: "eve",
        groups: &others,
    };
    let refused = reviews
        .decide(&review.id, eve, true, None, |_| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("approvers are the groups [\"dba\"]"),
        "{refused}"
    );

    let bob = Approver {
        name: "bob",
        groups: &groups,
    };
    let denied = reviews
        .decide(&review.id, bob, false, Some("not now".into()), |_| async {
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(denied.state, State::Denied);
    assert_eq!(denied.denial.unwrap().reason.as_deref(), Some("not now"));
    let late = reviews
        .decide(&review.id, bob, true, None, |_| async { Ok(()) })
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
        .finish(&review.id, State::Executed, |_| async { Ok(()) })
        .await;
    assert!(run.is_err());
    let unknown = reviews
        .decide("r-0000000000", bob, true, None, |_| async { Ok(()) })
        .await;
    assert_eq!(unknown, Err(ReviewError::NotFound("r-0000000000".into())));
}

#[tokio::test]
async fn nothing_changes_unless_it_was_recorded() {
    let reviews = Reviews::default();
    let failed = reviews
        .open(new_review(1), |_| async { Err("ledger down".to_string()) })
        .await;
    assert_eq!(
        failed.unwrap_err(),
        ReviewError::Record("ledger down".into())
    );
    assert!(reviews.list().await.is_empty());

    let (review, rx) = opened(&reviews, 1).await;
    let groups = dba();
    let bob = Approver {
        name: "bob",
        groups: &groups,
    };
    let failed = reviews
        .decide(&review.id, bob, true, None, |next| {
            // The recording step sees the review as it will be.
            assert_eq!(next.state, State::Approved);
            async { Err("ledger down".to_string()) }
        })
        .await;
    assert!(matches!(failed, Err(ReviewError::Record(_))));
    assert_eq!(reviews.get(&review.id).await.unwrap().state, State::Pending);
    assert!(!rx.has_changed().unwrap(), "the waiting side saw nothing");

    let expired = reviews
        .finish(&review.id, State::Expired, |_| async { Ok(()) })
        .await
        .unwrap();
    assert_eq!(expired.state, State::Expired);
    let late = reviews
        .decide(&review.id, bob, true, None, |_| async { Ok(()) })
        .await;
    assert!(matches!(
        late,
        Err(ReviewError::NotPending {
            state: State::Expired,
            ..
        })
    ));
}
