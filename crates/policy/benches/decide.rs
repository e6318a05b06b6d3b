//! What a Cedar decision costs on the statement path: with the session's entities built
//! once (what the gateway does) and built for every statement.
//! `cargo bench -p gatehouse-policy`.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use gatehouse_core::{Actor, ActorKind};
use gatehouse_policy::{DEFAULT_SCHEMA, PolicyEngine, Target};

fn main() {
    divan::main();
}

const POLICIES: &str = r#"
@id("analysts-connect")
permit (principal in Gatehouse::Group::"analysts", action == Gatehouse::Action::"connect", resource);
@id("analysts-read")
permit (principal in Gatehouse::Group::"analysts", action in [Gatehouse::Action::"read", Gatehouse::Action::"transaction"], resource);
@id("payroll-review")
@review("payroll needs an approval")
forbid (principal, action == Gatehouse::Action::"read", resource) when { context.tables.contains("public.payroll") };
"#;

fn setup() -> (PolicyEngine, Actor, gatehouse_sql::Analysis) {
    let engine = PolicyEngine::from_text(POLICIES, "bench", DEFAULT_SCHEMA, "schema").unwrap();
    let actor = Actor {
        id: "ann".into(),
        kind: ActorKind::Human,
        idp: None,
        groups: vec!["analysts".into()],
    };
    let analysis = gatehouse_sql::analyze("SELECT abalance FROM pgbench_accounts WHERE aid = $1");
    (engine, actor, analysis)
}

const PG: Target<'static> = Target {
    name: "pg",
    kind: "postgres",
    environment: None,
    tags: &[],
};

#[divan::bench]
fn statement_with_session_entities(bencher: divan::Bencher) {
    let (engine, actor, analysis) = setup();
    let who = engine.principal(&actor, &PG).unwrap();
    bencher.bench(|| {
        engine
            .statements(&who, divan::black_box(&analysis))
            .unwrap()
    });
}

#[divan::bench]
fn statement_building_entities_each_time(bencher: divan::Bencher) {
    let (engine, actor, analysis) = setup();
    bencher.bench(|| {
        let who = engine.principal(&actor, &PG).unwrap();
        engine
            .statements(&who, divan::black_box(&analysis))
            .unwrap()
    });
}
