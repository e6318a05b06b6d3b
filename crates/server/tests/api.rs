//! The admin API's routes through `router` and `oneshot`: who sees which review, and
//! that credentials are refused over plain HTTP from another host before they are checked.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod common;

use axum::http::StatusCode;
use common::*;
use gatehouse_server::router;
use serde_json::Value;
use tower::ServiceExt;

/// The ids `who` gets from `GET /api/reviews`, sorted.
async fn listed(app: &axum::Router, who: &str) -> Vec<String> {
    let response = app
        .clone()
        .oneshot(request(
            "GET",
            "/api/reviews",
            Some(&basic(who)),
            Some(local()),
            None,
        ))
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{who}: {body}");
    let mut ids: Vec<String> = body["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn shown(app: &axum::Router, who: &str, id: &str) -> (StatusCode, Value) {
    let path = format!("/api/reviews/{id}");
    let response = app
        .clone()
        .oneshot(request(
            "GET",
            &path,
            Some(&basic(who)),
            Some(local()),
            None,
        ))
        .await
        .unwrap();
    read(response).await
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_seen_by_their_requester_approvers_and_auditors_only() {
    let gw = Gateway::start();
    // On pg-prod (resource approvers: dba).
    let prod = gw.open("alice", "pg-prod", &["dba"]).await.id;
    // On pg-dev (resource approvers: devleads).
    let dev = gw.open("alice", "pg-dev", &["devleads"]).await.id;
    // On pg-dev, by a rule that names analysts as its approvers.
    let ruled = gw.open("zed", "pg-dev", &["analysts"]).await.id;
    let app = router(gw.state.clone());

    let cases: [(&str, Vec<&String>, &str); 7] = [
        ("alice", vec![&prod, &dev], "her own requests"),
        ("bob", vec![&prod], "a dba approves pg-prod's reviews"),
        (
            "dora",
            vec![&dev, &ruled],
            "pg-dev's approvers see its reviews, also those a rule gives to others",
        ),
        ("eve", vec![&ruled], "a rule's approver group"),
        (
            "ann",
            vec![&prod],
            "Cedar permits auditors to audit pg-prod",
        ),
        (
            "pat",
            vec![&prod],
            "Cedar permits pat to approve on pg-prod",
        ),
        ("mallory", vec![], "nobody in particular"),
    ];
    for (who, expected, why) in cases {
        assert_eq!(listed(&app, who).await, sorted(&expected), "{who}: {why}");
    }

    // One review each may see is shown in full; one they may not see is answered exactly
    // as an id that does not exist.
    let (status, body) = shown(&app, "ann", &prod).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["statement"], "DROP TABLE secret_alice");
    let (hidden_status, hidden) = shown(&app, "mallory", &prod).await;
    let (unknown_status, unknown) = shown(&app, "mallory", "r-0000000000").await;
    assert_eq!(
        (hidden_status, unknown_status),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        hidden["error"]
            .as_str()
            .unwrap()
            .replace(prod.as_str(), "ID"),
        unknown["error"]
            .as_str()
            .unwrap()
            .replace("r-0000000000", "ID"),
    );
    assert!(!hidden.to_string().contains("secret_alice"));
    for (who, id) in [
        ("bob", &dev),
        ("ann", &dev),
        ("eve", &prod),
        ("pat", &ruled),
    ] {
        assert_eq!(shown(&app, who, id).await.0, StatusCode::NOT_FOUND, "{who}");
    }
    for (who, id) in [("alice", &dev), ("dora", &ruled), ("pat", &prod)] {
        assert_eq!(shown(&app, who, id).await.0, StatusCode::OK, "{who}");
    }
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_over_plain_http_from_another_host_are_refused_unread() {
    let gw = Gateway::start();
    let app = router(gw.state.clone());
    let before = gw.entries();
    let wrong = basic_with("bob", "not-bobs-key");

    for auth in [basic("bob"), wrong.clone()] {
        for peer in [Some(remote(false)), None] {
            let response = app
                .clone()
                .oneshot(request("GET", "/api/reviews", Some(&auth), peer, None))
                .await
                .unwrap();
            let (status, body) = read(response).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{peer:?}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("not accepted over plain HTTP from another host"),
                "{body}"
            );
        }
    }
    // The POST routes too, whatever their body.
    let response = app
        .clone()
        .oneshot(request(
            "POST",
            "/api/access",
            Some(&wrong),
            Some(remote(false)),
            Some(r#"{"resource":"pg-prod","for":"1h","reason":"x"}"#),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(gw.entries(), before, "no sign-in was attempted or recorded");

    // The same wrong key from this host is a sign-in attempt: refused and recorded.
    let response = app
        .clone()
        .oneshot(request(
            "GET",
            "/api/reviews",
            Some(&wrong),
            Some(local()),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(gw.entries(), before + 1, "an auth.failure entry");

    // Over TLS from another host, and from a dual-stack listener's IPv4 loopback.
    let mapped = gatehouse_server::Peer {
        addr: "[::ffff:127.0.0.1]:40000".parse().unwrap(),
        tls: false,
    };
    for peer in [remote(true), mapped] {
        let response = app
            .clone()
            .oneshot(request(
                "GET",
                "/api/reviews",
                Some(&basic("bob")),
                Some(peer),
                None,
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{peer:?}");
    }
    // What needs no credentials stays open to everyone.
    let response = app
        .clone()
        .oneshot(request("GET", "/healthz", None, Some(remote(false)), None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .clone()
        .oneshot(request(
            "GET",
            "/api/reviews",
            None,
            Some(remote(false)),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "asked to sign in"
    );
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_requests_past_the_cap_are_refused_with_429() {
    let gw = Gateway::start();
    let app = router(gw.state.clone());
    let ask = r#"{"resource":"pg-prod","for":"1h","reason":"incident 4711"}"#;
    for n in 0..gatehouse_approvals::MAX_OPEN_PER_REQUESTER {
        let response = app
            .clone()
            .oneshot(request(
                "POST",
                "/api/access",
                Some(&basic("vic")),
                Some(local()),
                Some(ask),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "request {n}");
    }
    let entries = gw.entries();
    let response = app
        .clone()
        .oneshot(request(
            "POST",
            "/api/access",
            Some(&basic("vic")),
            Some(local()),
            Some(ask),
        ))
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("vic already has 20 reviews waiting for a decision"),
        "{body}"
    );
    assert_eq!(
        gw.entries(),
        entries,
        "nothing recorded for a refused request"
    );
    gw.close().await;
}
