//! `lineage`: where each output column of a statement's result comes from.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use gatehouse_sql::{Lineage, Output, Sources, lineage};
use proptest::prelude::*;

fn src(columns: &[&str], relations: &[&str]) -> Sources {
    Sources {
        columns: columns.iter().map(|s| s.to_string()).collect(),
        relations: relations.iter().map(|s| s.to_string()).collect(),
    }
}

fn col(columns: &[&str], relations: &[&str]) -> Output {
    Output::Column(src(columns, relations))
}

fn star(relation: Option<&str>, columns: &[&str], relations: &[&str]) -> Output {
    Output::Star {
        relation: relation.map(str::to_string),
        sources: src(columns, relations),
    }
}

/// The outputs of a statement that must be read completely.
fn outputs(sql: &str) -> Vec<Output> {
    let l = lineage(sql);
    assert!(!l.opaque, "{sql}: unexpectedly opaque: {l:?}");
    l.outputs
}

/// The sources of a statement's single output column.
fn one(sql: &str) -> Sources {
    match outputs(sql).as_slice() {
        [Output::Column(sources)] => sources.clone(),
        other => panic!("{sql}: expected one column, got {other:?}"),
    }
}

#[test]
fn plain_columns_aliases_and_qualified_names() {
    assert_eq!(one("SELECT ssn FROM customers"), src(&["ssn"], &[]));
    assert_eq!(one("SELECT ssn AS x FROM customers"), src(&["ssn"], &[]));
    assert_eq!(one("SELECT c.ssn FROM customers c"), src(&["ssn"], &[]));
    assert_eq!(
        one("SELECT public.customers.ssn FROM public.customers"),
        src(&["ssn"], &[])
    );
    // Unquoted names fold to lower case, quoted ones keep theirs.
    assert_eq!(
        outputs(r#"SELECT SSN, "Ssn" FROM customers"#),
        vec![col(&["ssn"], &[]), col(&["Ssn"], &[])]
    );
    // A constant reads nothing.
    assert_eq!(one("SELECT 1"), src(&[], &[]));
    // A field of a composite column: the column and the field are both reported.
    assert_eq!(
        one("SELECT c.addr.street FROM customers c"),
        src(&["addr", "street"], &[])
    );
}

#[test]
fn expressions_report_every_column_inside() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT reverse(ssn) FROM c", &["ssn"]),
        ("SELECT replace(ssn, '-', '') FROM c", &["ssn"]),
        (
            "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM c",
            &["ssn"],
        ),
        ("SELECT ssn || '' FROM c", &["ssn"]),
        ("SELECT name || ' ' || ssn FROM c", &["name", "ssn"]),
        ("SELECT CASE WHEN vip THEN ssn END FROM c", &["ssn", "vip"]),
        (
            "SELECT CASE kind WHEN 'a' THEN 'x' ELSE ssn END FROM c",
            &["kind", "ssn"],
        ),
        (
            "SELECT coalesce(nickname, ssn) FROM c",
            &["nickname", "ssn"],
        ),
        ("SELECT nullif(ssn, '') FROM c", &["ssn"]),
        ("SELECT greatest(ssn, name) FROM c", &["name", "ssn"]),
        ("SELECT ssn::text FROM c", &["ssn"]),
        ("SELECT CAST(ssn AS text) FROM c", &["ssn"]),
        ("SELECT ssn COLLATE \"C\" FROM c", &["ssn"]),
        ("SELECT string_agg(ssn, ',') FROM c", &["ssn"]),
        ("SELECT array_agg(ssn) FROM c", &["ssn"]),
        ("SELECT max(ssn) FROM c", &["ssn"]),
        (
            "SELECT string_agg(name, ',' ORDER BY ssn) FILTER (WHERE vip) FROM c",
            &["name", "ssn", "vip"],
        ),
        (
            "SELECT first_value(ssn) OVER (PARTITION BY region ORDER BY id) FROM c",
            &["id", "region", "ssn"],
        ),
        ("SELECT ROW(ssn, 1) FROM c", &["ssn"]),
        ("SELECT ARRAY[ssn] FROM c", &["ssn"]),
        ("SELECT (ARRAY[ssn])[1] FROM c", &["ssn"]),
        ("SELECT json_build_object('k', ssn) FROM c", &["ssn"]),
        ("SELECT JSON_OBJECT('k': ssn) FROM c", &["ssn"]),
        ("SELECT JSON_ARRAYAGG(ssn) FROM c", &["ssn"]),
        ("SELECT format(fmt => '%s', args => ssn) FROM c", &["ssn"]),
        ("SELECT ssn IS DISTINCT FROM name FROM c", &["name", "ssn"]),
        ("SELECT ssn LIKE '1%' FROM c", &["ssn"]),
        ("SELECT xmlelement(name x, ssn) FROM c", &["ssn"]),
        ("SELECT (c).ssn FROM customers c", &["c", "ssn"]),
    ];
    for (sql, columns) in cases {
        let sources = one(sql);
        assert_eq!(sources.columns, *columns, "{sql}");
    }
}

#[test]
fn count_star_and_constants_have_no_sources() {
    assert_eq!(one("SELECT count(*) FROM customers"), src(&[], &[]));
    assert_eq!(one("SELECT now() FROM customers"), src(&[], &[]));
}

#[test]
fn subqueries_in_expressions_give_their_outputs() {
    assert_eq!(
        one("SELECT (SELECT ssn FROM c LIMIT 1)"),
        src(&["ssn"], &[])
    );
    assert_eq!(
        one("SELECT ARRAY(SELECT ssn FROM c WHERE id > 3)"),
        src(&["ssn"], &[])
    );
    assert_eq!(one("SELECT EXISTS (SELECT ssn FROM c)"), src(&["ssn"], &[]));
    // The subquery's WHERE does not flow into the value.
    assert_eq!(
        one("SELECT EXISTS (SELECT 1 FROM c WHERE ssn = '1')"),
        src(&[], &[])
    );
    assert_eq!(
        one("SELECT id IN (SELECT ssn FROM c) FROM t"),
        src(&["id", "ssn"], &[])
    );
    // A correlated subquery reading the outer row whole.
    assert_eq!(
        one("SELECT (SELECT to_jsonb(c)) FROM customers c"),
        src(&["c"], &["customers"])
    );
}

#[test]
fn ctes_chain_and_rename() {
    assert_eq!(
        one("WITH x AS (SELECT ssn AS s FROM c) SELECT upper(s) FROM x"),
        src(&["s", "ssn"], &[])
    );
    // Two levels: u comes from s, which comes from ssn.
    assert_eq!(
        one(
            "WITH x AS (SELECT ssn AS s FROM c), y AS (SELECT lower(s) AS u FROM x) \
             SELECT u FROM y"
        ),
        src(&["s", "ssn", "u"], &[])
    );
    // A column alias list on the CTE.
    assert_eq!(
        one("WITH x(a) AS (SELECT ssn FROM c) SELECT a FROM x"),
        src(&["a", "ssn"], &[])
    );
    // Names PostgreSQL gives unnamed columns are followed.
    assert_eq!(
        one("SELECT upper FROM (SELECT upper(ssn) FROM c) t"),
        src(&["ssn", "upper"], &[])
    );
    assert_eq!(
        one(r#"SELECT "?column?" FROM (SELECT ssn || '' FROM c) t"#),
        src(&["?column?", "ssn"], &[])
    );
    assert_eq!(
        one("SELECT t.ssn FROM (SELECT ssn::text FROM c) t"),
        src(&["ssn"], &[])
    );
    assert_eq!(
        one("WITH x AS (SELECT (SELECT ssn FROM c) FROM d) SELECT ssn FROM x"),
        src(&["ssn"], &[])
    );
    // A whole-row reference to a CTE reads all its columns. (`x` is also kept as a
    // relation: without tracking CTE scopes it may be a table of that name.)
    assert_eq!(
        one("WITH x AS (SELECT ssn AS s, 1 AS n FROM c) SELECT row_to_json(x) FROM x"),
        src(&["ssn", "x"], &["x"])
    );
}

#[test]
fn recursive_ctes_reach_a_fixpoint() {
    assert_eq!(
        one("WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM c UNION ALL \
             SELECT n + 1, s FROM r WHERE n < 3) SELECT s FROM r"),
        src(&["s", "ssn"], &[])
    );
    assert_eq!(
        one(
            "WITH RECURSIVE r AS (SELECT id, '' AS acc FROM c UNION ALL \
             SELECT r.id, r.acc || c.ssn FROM r JOIN c ON c.id = r.id) SELECT acc FROM r"
        ),
        src(&["acc", "ssn"], &[])
    );
}

#[test]
fn subqueries_and_functions_in_from() {
    assert_eq!(
        one("SELECT t.a FROM (SELECT ssn AS a FROM c) t"),
        src(&["a", "ssn"], &[])
    );
    assert_eq!(
        one("SELECT a FROM (SELECT ssn FROM c) AS t(a)"),
        src(&["a", "ssn"], &[])
    );
    assert_eq!(
        one("SELECT l.x FROM c, LATERAL (SELECT c.ssn AS x) l"),
        src(&["ssn", "x"], &[])
    );
    // A function in FROM: its columns come from its arguments.
    assert_eq!(
        one("SELECT u FROM c, unnest(ARRAY[ssn]) AS u"),
        src(&["ssn", "u"], &[])
    );
    assert_eq!(
        one("SELECT kv.v FROM customers c, LATERAL jsonb_each_text(to_jsonb(c)) AS kv(k, v)"),
        src(&["c", "v"], &["customers"])
    );
    assert_eq!(
        one("SELECT j.s FROM c, JSON_TABLE(to_jsonb(c), '$' COLUMNS (s text PATH '$.ssn')) j"),
        src(&["c", "s"], &["c"])
    );
    // A `*` inside a subquery that a column alias list renames: the alias may be any column.
    assert_eq!(
        one("SELECT a FROM (SELECT * FROM customers) t(a)"),
        src(&["a"], &["customers"])
    );
    assert_eq!(
        one("SELECT t FROM (SELECT ssn FROM customers) t"),
        src(&["ssn", "t"], &[])
    );
}

#[test]
fn renamed_table_columns_stand_for_the_whole_table() {
    // `c(x)` renames the first column of customers, whichever it is.
    assert_eq!(
        one("SELECT upper(x) FROM customers AS c(x)"),
        src(&["x"], &["customers"])
    );
    assert_eq!(
        one("WITH w AS (SELECT ssn FROM c) SELECT upper(y) FROM w AS z(y)"),
        src(&["ssn", "y"], &["w"])
    );
    // A CYCLE path column carries the cycle columns' values.
    assert_eq!(
        one(
            "WITH RECURSIVE r AS (SELECT id, ssn FROM c UNION ALL SELECT id, ssn FROM r) \
             CYCLE ssn SET is_cycle USING path SELECT path::text FROM r"
        ),
        src(&["id", "path", "ssn"], &[])
    );
}

#[test]
fn functions_running_sql_text_are_opaque() {
    for sql in [
        "SELECT query_to_xml('select ssn from customers', true, false, '')",
        "SELECT pg_catalog.table_to_xml('customers', true, false, '')",
        "SELECT x FROM dblink('db', 'select ssn from customers') AS t(x text)",
    ] {
        assert!(lineage(sql).opaque, "{sql}");
    }
}

#[test]
fn set_operations_merge_by_position() {
    // The sensitive value only in the second branch still taints the first column.
    assert_eq!(
        outputs("SELECT name, id FROM c UNION SELECT ssn, id FROM c"),
        vec![col(&["name", "ssn"], &[]), col(&["id"], &[])]
    );
    assert_eq!(
        outputs(
            "SELECT name FROM c UNION ALL SELECT 'x' INTERSECT SELECT ssn FROM c EXCEPT SELECT 1"
        ),
        vec![col(&["name", "ssn"], &[])]
    );
    // A branch with `*`: positions cannot be lined up.
    let l = lineage("SELECT name FROM c UNION SELECT * FROM customers");
    assert!(l.opaque);
    assert_eq!(l.outputs, vec![star(None, &["name"], &["customers"])]);
    // In a CTE the branch names still lead to the sources.
    assert_eq!(
        one("WITH a AS (SELECT ssn AS x FROM c UNION SELECT * FROM d) SELECT x FROM a"),
        src(&["ssn", "x"], &["d"])
    );
}

#[test]
fn whole_row_references_name_the_table() {
    assert_eq!(
        outputs(
            "SELECT row_to_json(c), json_agg(c.*), to_jsonb(c), c \
             FROM customers c GROUP BY c.id"
        ),
        vec![
            col(&["c"], &["customers"]),
            col(&[], &["customers"]),
            col(&["c"], &["customers"]),
            col(&["c"], &["customers"]),
        ]
    );
    assert_eq!(
        one("SELECT customers FROM public.customers"),
        src(&["customers"], &["public.customers"])
    );
    // An unknown qualifier is reported as written.
    assert_eq!(one("SELECT json_agg(z.*) FROM t"), src(&[], &["z"]));
}

#[test]
fn stars_report_the_relations_they_cover() {
    assert_eq!(
        outputs("SELECT * FROM customers"),
        vec![star(None, &[], &["customers"])]
    );
    assert_eq!(
        outputs("SELECT c.* FROM public.customers c JOIN orders o ON o.cid = c.id"),
        vec![star(Some("public.customers"), &[], &["public.customers"])]
    );
    assert_eq!(
        outputs("SELECT * FROM customers c JOIN orders o ON o.cid = c.id"),
        vec![star(None, &[], &["customers", "orders"])]
    );
    assert_eq!(
        outputs("TABLE customers"),
        vec![star(None, &[], &["customers"])]
    );
    // Over a subquery: its sources; the qualifier of a subquery stays the alias.
    assert_eq!(
        outputs("SELECT * FROM (SELECT ssn FROM c) t"),
        vec![star(None, &["ssn"], &[])]
    );
    assert_eq!(
        outputs("SELECT t.* FROM (SELECT ssn FROM c) t"),
        vec![star(Some("t"), &["ssn"], &[])]
    );
    assert_eq!(
        outputs("SELECT id, (c).* FROM customers c"),
        vec![col(&["id"], &[]), star(None, &["c"], &["customers"])]
    );
}

#[test]
fn returning_lists() {
    assert_eq!(
        outputs("INSERT INTO customers (ssn) VALUES ('1') RETURNING id, upper(ssn)"),
        vec![col(&["id"], &[]), col(&["ssn"], &[])]
    );
    assert_eq!(
        outputs("UPDATE public.customers c SET name = 'x' RETURNING c.*, *, old.ssn"),
        vec![
            star(Some("public.customers"), &[], &["public.customers"]),
            star(Some("public.customers"), &[], &["public.customers"]),
            col(&["ssn"], &[]),
        ]
    );
    assert_eq!(
        outputs("DELETE FROM customers USING orders o WHERE o.cid = id RETURNING *"),
        vec![star(Some("customers"), &[], &["customers", "orders"])]
    );
    assert_eq!(
        outputs(
            "MERGE INTO customers c USING staging s ON s.id = c.id \
             WHEN MATCHED THEN DELETE RETURNING merge_action(), c.ssn"
        ),
        vec![col(&[], &[]), col(&["ssn"], &[])]
    );
    // Without RETURNING nothing comes back.
    assert_eq!(outputs("UPDATE customers SET ssn = NULL"), vec![]);
    // A data-modifying CTE feeding the result.
    assert_eq!(
        one("WITH d AS (DELETE FROM customers RETURNING ssn AS gone) SELECT gone FROM d"),
        src(&["gone", "ssn"], &[])
    );
}

#[test]
fn values_lists() {
    assert_eq!(
        outputs("VALUES (1, 'a'), (2, 'b')"),
        vec![col(&[], &[]), col(&[], &[])]
    );
    assert_eq!(
        one("SELECT column1 FROM c, LATERAL (VALUES (ssn), (name)) v"),
        src(&["column1", "name", "ssn"], &[])
    );
}

#[test]
fn statements_without_rows() {
    for sql in [
        "SELECT ssn INTO copy FROM customers",
        "CREATE TABLE copy AS SELECT ssn FROM customers",
        "EXPLAIN SELECT ssn FROM customers",
        "EXPLAIN ANALYZE SELECT ssn FROM customers",
        "SHOW search_path",
        "SET search_path = public",
        "BEGIN",
        "COMMIT",
        "CREATE VIEW v AS SELECT ssn FROM customers",
        "PREPARE q AS SELECT ssn FROM customers",
        "COPY customers FROM STDIN",
        "INSERT INTO t SELECT ssn FROM customers",
        "",
        "-- only a comment",
    ] {
        assert_eq!(lineage(sql), Lineage::default(), "{sql}");
    }
    // Code run by name or in a block returns no rows the text describes, and what it
    // reads is unknown.
    for sql in [
        "CALL p(1)",
        "DO $$ BEGIN PERFORM 1; END $$",
        "EXECUTE q",
        "EXPLAIN ANALYZE EXECUTE q",
        "CREATE TABLE t AS EXECUTE q",
    ] {
        let l = lineage(sql);
        assert!(
            l.runs_code && l.outputs.is_empty() && !l.opaque,
            "{sql}: {l:?}"
        );
    }
}

#[test]
fn functions_called_are_listed() {
    let l =
        lineage("SELECT upper(name), public.leak(id) FROM c WHERE lower(x) = 'a' AND f(g(1)) > 0");
    assert_eq!(l.functions, ["f", "g", "leak", "lower", "upper"]);
    assert!(lineage("SELECT * FROM generate_series(1, 3)").functions == ["generate_series"]);
}

#[test]
fn cursors() {
    let l = lineage("DECLARE Cur CURSOR FOR SELECT upper(ssn) FROM c");
    assert_eq!(l.declares_cursor.as_deref(), Some("cur"));
    assert_eq!(l.outputs, vec![col(&["ssn"], &[])]);
    assert!(!l.opaque);
    let l = lineage(r#"DECLARE "Cur" NO SCROLL CURSOR WITH HOLD FOR TABLE customers"#);
    assert_eq!(l.declares_cursor.as_deref(), Some("Cur"));
    assert_eq!(l.outputs, vec![star(None, &[], &["customers"])]);

    for sql in ["FETCH 10 FROM cur", "FETCH ALL IN cur", "MOVE NEXT IN cur"] {
        let l = lineage(sql);
        assert_eq!(l.fetches_cursor.as_deref(), Some("cur"), "{sql}");
        assert!(l.outputs.is_empty() && !l.opaque, "{sql}");
    }

    let l = lineage("BEGIN; DECLARE c1 CURSOR FOR SELECT ssn FROM c; FETCH 5 FROM c1");
    assert_eq!(l.declares_cursor.as_deref(), Some("c1"));
    assert_eq!(l.fetches_cursor.as_deref(), Some("c1"));
    assert_eq!(l.outputs, vec![col(&["ssn"], &[])]);
    // Two different cursors in one text cannot be told apart.
    assert!(lineage("FETCH 1 FROM a; FETCH 1 FROM b").opaque);
}

#[test]
fn copy_to() {
    assert_eq!(
        outputs("COPY (SELECT ssn, name FROM c) TO STDOUT"),
        vec![col(&["ssn"], &[]), col(&["name"], &[])]
    );
    assert_eq!(
        outputs("COPY public.customers TO STDOUT WITH (FORMAT csv)"),
        vec![star(Some("public.customers"), &[], &["public.customers"])]
    );
    assert_eq!(
        outputs("COPY customers (id, ssn) TO STDOUT"),
        vec![col(&["id"], &[]), col(&["ssn"], &[])]
    );
    assert_eq!(
        outputs("COPY (UPDATE customers SET name = 'x' RETURNING ssn) TO STDOUT"),
        vec![col(&["ssn"], &[])]
    );
}

#[test]
fn several_statements_merge_by_position() {
    assert_eq!(
        outputs("SELECT id, name FROM c; UPDATE c SET a = 1; SELECT 1, ssn FROM c; COMMIT"),
        vec![col(&["id"], &[]), col(&["name", "ssn"], &[])]
    );
    // Different widths: what could be merged is, but the reading is incomplete.
    let l = lineage("SELECT ssn FROM c; SELECT id, name FROM c");
    assert!(l.opaque);
    assert_eq!(
        l.outputs,
        vec![col(&["id", "ssn"], &[]), col(&["name"], &[])]
    );
    // A `*` in one of several results.
    let l = lineage("SELECT ssn FROM c; SELECT * FROM customers");
    assert!(l.opaque);
    assert_eq!(l.outputs, vec![star(None, &["ssn"], &["customers"])]);
    // One `*` alone is fine.
    assert!(!lineage("SET x = 1; SELECT * FROM customers").opaque);
}

#[test]
fn unparsed_text_is_opaque() {
    for sql in [
        "SELEC ssn FROM c",
        "SELECT (",
        "SELECT 1\0",
        "SELECT 'unterminated",
    ] {
        let l = lineage(sql);
        assert!(l.opaque, "{sql}");
        assert!(l.outputs.is_empty(), "{sql}");
    }
    // Too deep for the parser bindings: reported, not crashed.
    let deep = format!("SELECT {} FROM c", vec!["ssn"; 5000].join(" + "));
    assert!(lineage(&deep).opaque);
}

#[test]
fn deep_nesting_is_read_or_reported_without_crashing() {
    for depth in [5, 10, 20, 40, 80, 200] {
        let calls = format!(
            "SELECT {}ssn{} FROM c",
            "upper(".repeat(depth),
            ")".repeat(depth)
        );
        let l = lineage(&calls);
        assert!(
            l.opaque || l.outputs == vec![col(&["ssn"], &[])],
            "{depth}: {l:?}"
        );

        let mut nested = "(SELECT ssn AS a FROM c) t".to_string();
        for _ in 0..depth {
            nested = format!("(SELECT a FROM {nested}) t");
        }
        let l = lineage(&format!("SELECT a FROM {nested}"));
        assert!(
            l.opaque || l.outputs == vec![col(&["a", "ssn"], &[])],
            "{depth}: {l:?}"
        );
    }
}

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "FROM",
    "WITH",
    "AS",
    "(",
    ")",
    ";",
    ",",
    "*",
    ".",
    "c",
    "ssn",
    "t",
    "1",
    "UNION",
    "VALUES",
    "RETURNING",
    "DELETE",
    "UPDATE",
    "SET",
    "=",
    "LATERAL",
    "JOIN",
    "ON",
    "TABLE",
    "DECLARE",
    "CURSOR",
    "FOR",
    "FETCH",
    "COPY",
    "TO",
    "STDOUT",
    "row_to_json",
    "RECURSIVE",
    "WHERE",
    "EXISTS",
    "ARRAY",
    "CASE",
    "WHEN",
    "THEN",
    "END",
    "::",
    "text",
    "'x'",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = lineage(&text);
    }

    #[test]
    fn keyword_soup_never_panics(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..40)) {
        let text: Vec<&str> = parts.iter().map(|&i| FRAGMENTS[i]).collect();
        let l = lineage(&text.join(" "));
        // Sources are always sorted and deduplicated.
        for output in &l.outputs {
            let sources = match output {
                Output::Column(s) | Output::Star { sources: s, .. } => s,
            };
            prop_assert!(sources.columns.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(sources.relations.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

#[test]
fn copy_options_say_how_rows_are_written() {
    use gatehouse_sql::lineage::{CopyFormat, CopyKind};
    let format = |sql: &str| lineage(sql).copy;
    assert_eq!(
        format("COPY people TO STDOUT"),
        Some(CopyFormat::default_for(CopyKind::Text))
    );
    let csv = format(
        "COPY people TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';', QUOTE '''', NULL 'n/a')",
    )
    .unwrap();
    assert_eq!(csv.kind, CopyKind::Csv);
    assert_eq!((csv.delimiter, csv.quote, csv.escape), (b';', b'\'', b'\''));
    assert_eq!(csv.null, "n/a");
    assert!(csv.header);
    // The old syntax.
    let old = format("COPY (SELECT ssn FROM people) TO STDOUT CSV HEADER ESCAPE '\\'").unwrap();
    assert_eq!(
        (old.kind, old.header, old.escape, old.quote),
        (CopyKind::Csv, true, b'\\', b'"')
    );
    assert_eq!(
        format("COPY people TO STDOUT (FORMAT binary)")
            .unwrap()
            .kind,
        CopyKind::Binary
    );
    assert_eq!(
        format("COPY people TO STDOUT BINARY").unwrap().kind,
        CopyKind::Binary
    );
    assert!(
        !format("COPY people TO STDOUT (FORMAT csv, HEADER false)")
            .unwrap()
            .header
    );
    // A value that cannot be read, and statements that are not COPY TO.
    assert_eq!(
        format("COPY people TO STDOUT (FORMAT csv, DELIMITER ';;')"),
        None
    );
    assert_eq!(format("COPY people FROM STDIN"), None);
    assert_eq!(format("SELECT 1"), None);
}
