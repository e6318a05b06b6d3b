//! The OCSF export checked against the schema: each event mapped from a realistic ledger
//! (`fixtures/ocsf-ledger.jsonl`, entries laid out as the gateway writes them) must carry
//! every attribute OCSF 1.3.0 requires of its class, its base event, its profiles and the
//! objects it holds (`fixtures/ocsf-required.json`, with the schema files they come from),
//! use only enum values the schema defines, and say which ledger entry it came from.
//!
//! The ssh, http and kubernetes `command` entries of the ledger fixture are for protocols
//! not built yet: they follow the PostgreSQL `command` entry (its `decision` object) with
//! protocol fields (`command`, `method`/`path`, `verb`/`resource`) assumed here.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use std::collections::BTreeSet;

use gatehouse_audit::ocsf::{self, Mapper, OCSF_VERSION};
use serde_json::{Value, json};

fn schema() -> Value {
    serde_json::from_str(include_str!("fixtures/ocsf-required.json")).unwrap()
}

fn ledger() -> Vec<Value> {
    include_str!("fixtures/ocsf-ledger.jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A stand-in leaf hash per index (the export passes the real one).
fn leaf(i: u64) -> String {
    format!("{:064x}", i * 7919 + 1)
}

fn ints(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// Every way `event` breaks the schema; empty when it conforms.
fn violations(schema: &Value, event: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(class_uid) = event["class_uid"].as_u64() else {
        return vec!["class_uid is missing".into()];
    };
    let class = &schema["classes"][class_uid.to_string()];
    if class.is_null() {
        return vec![format!(
            "class_uid {class_uid} is not one the fixture describes"
        )];
    }
    let profiles = names(&class["profiles"]);
    let mut required = names(&schema["base_event"]["required"]);
    required.extend(names(&class["required"]));
    for profile in &profiles {
        required.extend(names(&schema["profiles"][profile]["required"]));
    }
    for attr in required {
        if !present(&event[attr]) {
            out.push(format!("required attribute {attr} is missing"));
        }
    }
    for group in class["at_least_one"].as_array().into_iter().flatten() {
        if !names(group).iter().any(|a| present(&event[*a])) {
            out.push(format!("none of {group} is present"));
        }
    }
    // Classification is consistent.
    let category = event["category_uid"].as_u64();
    if category != class["category_uid"].as_u64() || category != Some(class_uid / 1000) {
        out.push(format!(
            "category_uid {category:?} does not fit class {class_uid}"
        ));
    }
    let activity = event["activity_id"].as_u64();
    if event["type_uid"].as_u64() != activity.map(|a| class_uid * 100 + a) {
        out.push(format!(
            "type_uid {} is not class_uid * 100 + activity_id",
            event["type_uid"]
        ));
    }
    // Enum values the schema defines.
    let enums = [
        ("activity_id", &class["activity_ids"]),
        ("severity_id", &schema["severity_ids"]),
        ("status_id", &schema["status_ids"]),
    ];
    for (attr, allowed) in enums {
        check_enum(event, attr, allowed, attr, &mut out);
    }
    for profile in &profiles {
        let spec = &schema["profiles"][profile];
        for (attr, allowed) in [
            ("action_id", &spec["action_ids"]),
            ("disposition_id", &spec["disposition_ids"]),
        ] {
            check_enum(event, attr, allowed, attr, &mut out);
        }
        if !names(&event["metadata"]["profiles"]).contains(profile) {
            out.push(format!("metadata.profiles does not declare {profile}"));
        }
    }
    if event["metadata"]["version"].as_str() != schema["version"].as_str() {
        out.push(format!(
            "metadata.version is {}",
            event["metadata"]["version"]
        ));
    }
    if !event["time"].is_u64() {
        out.push("time is not epoch milliseconds".into());
    }
    objects(schema, event, "", &mut out);
    out
}

/// Checks the objects among `value`'s attributes, and theirs, against the schema's objects.
fn objects(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (attr, inner) in map {
        // `unmapped` holds the source entry as written, not OCSF objects.
        if attr == "unmapped" {
            continue;
        }
        let Some(object) = schema["attribute_objects"][attr].as_str() else {
            continue;
        };
        let path = format!("{path}{attr}");
        match inner {
            Value::Array(items) => {
                for (n, item) in items.iter().enumerate() {
                    object_checks(schema, object, item, &format!("{path}[{n}]"), out);
                }
            }
            _ => object_checks(schema, object, inner, &path, out),
        }
    }
}

fn object_checks(schema: &Value, object: &str, value: &Value, path: &str, out: &mut Vec<String>) {
    let spec = &schema["objects"][object];
    if spec.is_null() {
        out.push(format!("{path}: object {object} is not in the fixture"));
        return;
    }
    if !value.is_object() {
        out.push(format!("{path} is not an object"));
        return;
    }
    for attr in names(&spec["required"]) {
        if !present(&value[attr]) {
            out.push(format!("required attribute {path}.{attr} is missing"));
        }
    }
    for group in spec["at_least_one"].as_array().into_iter().flatten() {
        if !names(group).iter().any(|a| present(&value[*a])) {
            out.push(format!("{path}: none of {group} is present"));
        }
    }
    if let Some(enums) = spec["enums"].as_object() {
        for (attr, allowed) in enums {
            check_enum(value, attr, allowed, &format!("{path}.{attr}"), out);
        }
    }
    objects(schema, value, &format!("{path}."), out);
}

/// The fixture's entries mapped in order, with the entry each came from.
fn mapped() -> Vec<(Value, Option<Value>)> {
    let mut mapper = Mapper::new();
    ledger()
        .into_iter()
        .map(|entry| {
            let i = entry["i"].as_u64().unwrap();
            let event = mapper.event(&entry, &leaf(i));
            (entry, event)
        })
        .collect()
}

#[test]
fn every_event_conforms_to_ocsf_and_names_its_entry() {
    let schema = schema();
    assert_eq!(schema["version"], OCSF_VERSION);
    let mut classes = BTreeSet::new();
    // Mapped in order (with what earlier entries say) and each on its own.
    let alone: Vec<Option<Value>> = ledger()
        .iter()
        .map(|e| ocsf::event(e, &leaf(e["i"].as_u64().unwrap())))
        .collect();
    for ((entry, event), alone) in mapped().into_iter().zip(alone) {
        assert_eq!(event.is_some(), alone.is_some(), "{entry}");
        for event in [event, alone].into_iter().flatten() {
            let problems = violations(&schema, &event);
            assert!(
                problems.is_empty(),
                "{problems:#?}\nin {event:#}\nfrom {entry}"
            );
            let i = entry["i"].as_u64().unwrap();
            assert_eq!(event["metadata"]["uid"], i.to_string());
            assert_eq!(event["metadata"]["sequence"], i);
            assert_eq!(event["unmapped"]["gatehouse"]["index"], i);
            assert_eq!(event["unmapped"]["gatehouse"]["leaf"], leaf(i));
            assert_eq!(event["unmapped"]["gatehouse"]["data"], entry["data"]);
            assert_eq!(event["metadata"]["product"]["name"], "Gatehouse");
            assert_eq!(event["time"], entry["ts"].as_u64().unwrap() / 1000);
            classes.insert(event["class_uid"].as_u64().unwrap());
        }
    }
    assert_eq!(
        classes,
        BTreeSet::from([3001, 3002, 3005, 4007, 6003, 6005]),
        "every class the export uses is checked"
    );
}

#[test]
fn each_entry_maps_to_its_class_activity_and_status() {
    // (kind, class_uid, activity_id, status_id); None: no OCSF counterpart.
    let expected: Vec<Option<(&str, u64, u64, u64)>> = vec![
        None,                                     // ledger.open
        None,                                     // config.change
        Some(("key.created", 3001, 1, 1)),        // Account Change: Create
        Some(("auth.failure", 3002, 1, 2)),       // Logon, failure (psql)
        Some(("auth.failure", 3002, 1, 2)),       // Logon, failure (admin API)
        Some(("session.start", 3002, 1, 1)),      // Logon
        Some(("command", 6005, 4, 1)),            // Query, allowed
        Some(("result", 6005, 4, 1)),             // its result
        None,                                     // recording
        Some(("command", 6005, 4, 2)),            // Query, denied
        Some(("command", 6005, 4, 99)),           // Query, held for review
        Some(("approval.request", 3005, 99, 99)), // privilege asked for, pending
        Some(("approval.decision", 3005, 1, 1)),  // Assign Privileges (with a grant)
        Some(("approval.decision", 3005, 99, 1)), // the approved statement ran
        Some(("result", 6005, 4, 1)),             // its result
        Some(("command", 6005, 4, 1)),            // allowed by the grant
        Some(("command", 6005, 4, 1)),            // long statement (text in a chunk)
        Some(("result", 6005, 4, 2)),             // failed
        Some(("session.end", 3002, 2, 1)),        // Logoff
        Some(("policy.decision", 6005, 3, 2)),    // Connect refused by policy
        Some(("target.failure", 6005, 3, 2)),     // Connect, target unreachable
        Some(("approval.request", 3005, 99, 99)), // access request
        Some(("approval.decision", 3005, 1, 2)),  // it expired
        Some(("key.revoked", 3001, 5, 1)),        // Account Change: Disable
        None,                                     // heartbeat
        Some(("command", 4007, 6, 1)),            // SSH Traffic, allowed
        Some(("command", 4007, 5, 2)),            // SSH Refuse, denied
        Some(("command", 6003, 4, 99)),           // API Delete, held
        Some(("command", 6003, 2, 1)),            // API Read (kubernetes get)
        None,                                     // bench
    ];
    let got: Vec<Option<(String, u64, u64, u64)>> = mapped()
        .iter()
        .map(|(entry, event)| {
            event.as_ref().map(|e| {
                (
                    entry["kind"].as_str().unwrap().to_string(),
                    e["class_uid"].as_u64().unwrap(),
                    e["activity_id"].as_u64().unwrap(),
                    e["status_id"].as_u64().unwrap(),
                )
            })
        })
        .collect();
    let expected: Vec<Option<(String, u64, u64, u64)>> = expected
        .into_iter()
        .map(|t| t.map(|(k, c, a, s)| (k.to_string(), c, a, s)))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn events_carry_what_an_analyst_looks_for() {
    let events: Vec<Value> = mapped().into_iter().filter_map(|(_, e)| e).collect();
    let by_index = |i: u64| {
        events
            .iter()
            .find(|e| e["metadata"]["sequence"] == i)
            .unwrap()
            .clone()
    };
    // The sign-in: who, from where, to what, with which credential.
    let start = by_index(5);
    assert_eq!(start["user"]["name"], "alice");
    assert_eq!(start["user"]["credential_uid"], "gk_9Hq1aZ");
    assert_eq!(
        start["src_endpoint"],
        json!({"ip": "10.20.0.7", "port": 51560})
    );
    assert_eq!(start["service"]["name"], "pg-prod");
    assert_eq!(start["metadata"]["correlation_uid"], "s-5f0c2a91d3e47b18");
    // A denied statement: the SQL, the verdict and the rule.
    let denied = by_index(9);
    assert_eq!(
        denied["query_info"]["query_string"],
        "DELETE FROM customers"
    );
    assert_eq!(
        (&denied["action"], &denied["disposition"]),
        (&json!("Denied"), &json!("Blocked"))
    );
    assert_eq!(denied["policy"]["name"], "no-unbounded-delete");
    assert_eq!(denied["src_endpoint"]["ip"], "10.20.0.7");
    assert_eq!(denied["database"]["name"], "shop");
    // The approver's decision names the requester (from the request) and the grant.
    let approved = by_index(12);
    assert_eq!(approved["user"]["name"], "alice");
    assert_eq!(approved["actor"]["user"]["name"], "bob");
    assert!(
        approved["actor"]["session"].is_null(),
        "bob is not in alice's session"
    );
    assert_eq!(
        approved["privileges"],
        json!([
            "execute:pg-prod:command#10",
            "execute:pg-prod:rule=prod-writes:until=2025-11-24T18:00:00.000Z"
        ])
    );
    assert_eq!(approved["metadata"]["correlation_uid"], "r-4be01c9a7d");
    // The result of the approved statement says what ran.
    assert_eq!(
        by_index(14)["query_info"]["query_string"],
        "UPDATE orders SET status = 'refunded' WHERE id = 991"
    );
    // Key events: the key's identity, and who changed it.
    let created = by_index(2);
    assert_eq!(created["user"]["name"], "carol");
    assert_eq!(created["user"]["credential_uid"], "gk_7Qm2xV");
    assert_eq!(created["actor"]["user"]["name"], "root@ops-1");
    // Logoff carries the session's span.
    let end = by_index(18);
    assert_eq!(end["duration"], 48211);
    assert_eq!(end["end_time"], end["time"]);
}

#[test]
fn the_validator_catches_what_is_missing_or_wrong() {
    let schema = schema();
    let events: Vec<Value> = mapped().into_iter().filter_map(|(_, e)| e).collect();
    let of_class = |uid: u64| {
        events
            .iter()
            .find(|e| e["class_uid"] == uid && e["table"].is_null())
            .unwrap()
            .clone()
    };
    let auth = of_class(3002);
    let datastore = of_class(6005);
    let api = of_class(6003);
    let ssh = of_class(4007);
    let access = of_class(3005);
    assert!(violations(&schema, &auth).is_empty());

    type Break = fn(&mut Value);
    let breaks: [(&Value, Break, &str); 16] = [
        (
            &auth,
            |e| e["user"] = Value::Null,
            "required attribute user",
        ),
        (
            &auth,
            |e| e["metadata"] = Value::Null,
            "required attribute metadata",
        ),
        (
            &auth,
            |e| e["time"] = Value::Null,
            "required attribute time",
        ),
        (&auth, |e| e["severity_id"] = json!(7), "severity_id 7"),
        (&auth, |e| e["activity_id"] = json!(42), "activity_id 42"),
        (&auth, |e| e["type_uid"] = json!(300299), "type_uid"),
        (&auth, |e| e["category_uid"] = json!(6), "category_uid"),
        (&auth, |e| e["service"] = Value::Null, "none of"),
        (
            &auth,
            |e| e["metadata"]["product"]["vendor_name"] = Value::Null,
            "metadata.product.vendor_name",
        ),
        (
            &auth,
            |e| {
                let user = e["user"].as_object_mut().unwrap();
                user.remove("name");
                user.remove("uid");
            },
            "user: none of",
        ),
        (
            &datastore,
            |e| e["action_id"] = Value::Null,
            "required attribute action_id",
        ),
        (&datastore, |e| e["database"] = Value::Null, "none of"),
        (
            &datastore,
            |e| e["src_endpoint"] = json!({"port": 5432}),
            "src_endpoint: none of",
        ),
        (
            &api,
            |e| e["api"]["operation"] = Value::Null,
            "api.operation",
        ),
        (
            &ssh,
            |e| e["dst_endpoint"] = Value::Null,
            "required attribute dst_endpoint",
        ),
        (
            &access,
            |e| e["privileges"] = json!([]),
            "required attribute privileges",
        ),
    ];
    for (event, damage, expect) in breaks {
        let mut broken = event.clone();
        damage(&mut broken);
        let problems = violations(&schema, &broken);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "expected a problem with {expect:?}, got {problems:?}"
        );
    }
}

#[test]
fn the_fixture_is_consistent() {
    let schema = schema();
    for (uid, class) in schema["classes"].as_object().unwrap() {
        let uid: u64 = uid.parse().unwrap();
        assert_eq!(class["category_uid"].as_u64(), Some(uid / 1000), "{uid}");
        assert!(
            class["file"].as_str().unwrap().starts_with("events/"),
            "{uid}"
        );
    }
    for object in schema["attribute_objects"].as_object().unwrap().values() {
        assert!(
            !schema["objects"][object.as_str().unwrap()].is_null(),
            "{object}"
        );
    }
}

/// Notes `value[attr]` when it is set to a number the schema does not define; `name` is
/// how messages call it.
fn check_enum(value: &Value, attr: &str, allowed: &Value, name: &str, out: &mut Vec<String>) {
    if !value[attr].is_null()
        && !value[attr]
            .as_u64()
            .is_some_and(|v| ints(allowed).contains(&v))
    {
        out.push(format!(
            "{name} {} is not defined by the schema",
            value[attr]
        ));
    }
}

#[test]
fn an_aggregated_failed_sign_in_carries_its_count() {
    let entry = json!({"v": 1, "i": 7, "ts": 1_700_000_000_000_000u64, "kind": "auth.failure",
        "actor": {"id": "gatehouse", "kind": "system"},
        "resource": {"name": "pg-prod", "kind": "postgres"},
        "data": {"client": "10.0.0.9", "reason": "wrong_key", "aggregated": true, "count": 41,
                 "interval_s": 10, "users": ["mallory"]}});
    let event = Mapper::new().event(&entry, &"ab".repeat(32)).unwrap();
    assert_eq!(event["class_uid"], 3002);
    assert_eq!(event["count"], 41);
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("41 sign-ins from 10.0.0.9")
    );
}
