//! `analyze` answers every input, however broken, without panicking.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "DELETE",
    "FROM",
    "WITH",
    "AS",
    "(",
    ")",
    ";",
    "'",
    "\"",
    "$$",
    "--",
    "/*",
    "*/",
    "t",
    "1",
    "WHERE",
    "INSERT",
    "INTO",
    "VALUES",
    "DROP",
    "DATABASE",
    ",",
    "RETURNING",
    "*",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in ".{0,200}") {
        let _ = gatehouse_sql::analyze(&text);
    }

    #[test]
    fn keyword_soup(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..40)) {
        let text: Vec<&str> = parts.iter().map(|&i| FRAGMENTS[i]).collect();
        let a = gatehouse_sql::analyze(&text.join(" "));
        prop_assert!(a.unparsed.is_some() || a.statements.iter().all(|s| !s.command.is_empty()));
    }
}
