//! The runtime cross-check: the command tags the server returned for a statement must be
//! ones the decided statement can produce. A tag for a command that was never decided
//! (a `DELETE` after an allowed `SELECT`) means the gateway's reading and the server's
//! diverged: the safety net under every parser divergence left. Pure.

use gatehouse_sql::{Analysis, Statement, StatementClass};

/// The command a tag names: `INSERT 0 5` → `INSERT`, `SELECT 3` → `SELECT`, `CREATE TABLE`
/// stays.
fn tag_command(tag: &str) -> &str {
    tag.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ')
}

/// Tags that say the statement changed data, schema, privileges or ran code; only these
/// are checked (a read reported where a write was decided diverges too, but it runs
/// nothing that was not allowed).
fn consequential(command: &str) -> bool {
    const EXACT: [&str; 9] = [
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "COPY",
        "TRUNCATE TABLE",
        "DO",
        "CALL",
        "SET",
    ];
    const PREFIXES: [&str; 9] = [
        "CREATE",
        "ALTER",
        "DROP",
        "GRANT",
        "REVOKE",
        "COMMENT",
        "SECURITY LABEL",
        "REASSIGN",
        "IMPORT",
    ];
    EXACT.contains(&command) || PREFIXES.iter().any(|p| command.starts_with(p))
}

/// Whether `statement` can answer with a tag naming `command`.
fn accounts_for(statement: &Statement, command: &str) -> bool {
    match command {
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "DO" | "CALL" => statement.command == command,
        "COPY" => statement.command.starts_with("COPY"),
        "TRUNCATE TABLE" => statement.command == "TRUNCATE",
        // SET, SET ROLE, SET SESSION AUTHORIZATION and RESET all answer `SET`/`RESET`.
        "SET" => statement.command.starts_with("SET") || statement.command.starts_with("RESET"),
        // Schema and privilege commands: the gateway names them less finely than the
        // server's tags do, so their class is what must agree.
        _ => matches!(statement.class, StatementClass::Ddl | StatementClass::Dcl),
    }
}

/// The first tag the decided statements cannot account for, with why. Statements answer
/// one tag each, in order; a tag beyond the last statement is never accounted for.
pub(crate) fn unaccounted_tag<'a>(
    decided: &Analysis,
    tags: &'a [String],
) -> Option<(&'a str, String)> {
    for (i, tag) in tags.iter().enumerate() {
        let Some(statement) = decided.statements.get(i) else {
            return Some((
                tag.as_str(),
                format!(
                    "the server answered {} statements where {} were decided",
                    tags.len(),
                    decided.statements.len()
                ),
            ));
        };
        let command = tag_command(tag);
        if consequential(command) && !accounts_for(statement, command) {
            return Some((
                tag.as_str(),
                format!(
                    "statement {} was decided as {} but the server ran {command}",
                    i + 1,
                    statement.command
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sql::analyze;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn tags_the_decided_statements_produce_pass() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["SELECT 1"]),
            ("INSERT INTO t VALUES (1)", &["INSERT 0 1"]),
            (
                "BEGIN; DELETE FROM t WHERE id = 1; COMMIT",
                &["BEGIN", "DELETE 1", "COMMIT"],
            ),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                &["SELECT 2"],
            ),
            ("COPY t FROM STDIN", &["COPY 3"]),
            ("TRUNCATE t", &["TRUNCATE TABLE"]),
            ("CREATE TABLE t2 AS SELECT 1", &["SELECT 1"]),
            ("CREATE TABLE x (a int)", &["CREATE TABLE"]),
            ("ALTER TABLE x ADD b int", &["ALTER TABLE"]),
            ("CREATE INDEX ON x (a)", &["CREATE INDEX"]),
            ("GRANT SELECT ON x TO PUBLIC", &["GRANT"]),
            ("SET search_path = public", &["SET"]),
            ("DO $$ BEGIN END $$", &["DO"]),
            // An error stops a text: fewer tags than statements.
            ("SELECT 1; SELECT 2", &["SELECT 1"]),
        ];
        for (sql, answered) in cases {
            assert_eq!(
                unaccounted_tag(&analyze(sql), &tags(answered)),
                None,
                "{sql}"
            );
        }
    }

    #[test]
    fn a_tag_that_was_not_decided_is_named() {
        // The reviewer's reproduction: one SELECT decided, a DELETE ran after it.
        let answered = tags(&["SELECT 1", "DELETE 3"]);
        let (tag, why) = unaccounted_tag(&analyze("SELECT 'a\\' -- '"), &answered).unwrap();
        assert_eq!(tag, "DELETE 3");
        assert!(why.contains("2 statements where 1"), "{why}");
        let answered = tags(&["DELETE 2"]);
        let (tag, _) = unaccounted_tag(&analyze("SELECT 1"), &answered).unwrap();
        assert_eq!(tag, "DELETE 2");
        assert!(unaccounted_tag(&analyze("SELECT 1"), &tags(&["DROP TABLE"])).is_some());
        assert!(unaccounted_tag(&analyze(""), &tags(&["SELECT 1"])).is_some());
    }
}
