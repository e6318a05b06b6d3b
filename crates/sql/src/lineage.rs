//! Column lineage: which base columns and whole-row relations each output column of a
//! statement's result is computed from, read with the real PostgreSQL parser.
//!
//! The server's RowDescription names the table column behind a plain column reference, but
//! says nothing for `reverse(ssn)`, `max(ssn)`, a CTE or a UNION branch. This reading fills
//! that gap so the caller can decide which outputs carry masked data. It errs on the side of
//! reporting too much: a source that does not really flow into an output costs a needless
//! mask, a missed one leaks data.
//!
//! The parse tree is walked as its JSON form (the `pg_query` protobuf types serialise with
//! serde), so every expression node kind, including ones added by future PostgreSQL
//! versions, is searched for column references without being listed here.

use std::cell::Cell;
use std::collections::BTreeMap;

use serde_json::Value;

/// Where each output column of a statement's result comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lineage {
    /// One entry per target-list item of the result-returning part, in order.
    pub outputs: Vec<Output>,
    /// True when the reading could not be completed (unparsed SQL, a construct not handled):
    /// the caller must treat every output without a server-reported origin as sensitive.
    pub opaque: bool,
    /// `DECLARE name CURSOR FOR ...`: the cursor's name (lowercased unless quoted); `outputs`
    /// are the cursor query's.
    pub declares_cursor: Option<String>,
    /// `FETCH ... FROM name` / `MOVE`: the cursor read; its outputs are the DECLARE's.
    pub fetches_cursor: Option<String>,
    /// `COPY ... TO`: how the rows are written, from the statement's options (the server's
    /// CopyOutResponse says text for CSV too). `None` for other statements, or when an
    /// option's value cannot be read.
    pub copy: Option<CopyFormat>,
    /// The text runs code or a statement it does not show (`DO`, `CALL`, `EXECUTE`): what
    /// that reads is unknown, so its messages (RAISE, errors) may quote any column.
    pub runs_code: bool,
    /// Every function the statement calls, by the last part of its name as written
    /// (sorted, deduplicated): a user-defined one can read any column and return it
    /// transformed, so the caller checks them against the catalog.
    pub functions: Vec<String>,
}

/// The row format of a `COPY ... TO`, as its options set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub kind: CopyKind,
    /// The field separator (one byte, as PostgreSQL requires).
    pub delimiter: u8,
    /// How NULL is written (`\N` in text, empty and unquoted in CSV).
    pub null: String,
    /// CSV's quote and escape characters.
    pub quote: u8,
    pub escape: u8,
    /// CSV or text with a header line of column names first.
    pub header: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Text,
    Csv,
    Binary,
}

impl CopyFormat {
    /// PostgreSQL's defaults for `kind`.
    pub fn default_for(kind: CopyKind) -> CopyFormat {
        let csv = kind == CopyKind::Csv;
        CopyFormat {
            kind,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { String::new() } else { "\\N".into() },
            quote: b'"',
            escape: b'"',
            header: false,
        }
    }
}

/// One item of a result's target list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One result column computed from these sources.
    Column(Sources),
    /// `*` or `rel.*` at the top level: expands to several columns the server describes.
    /// `relation` is the qualifier when written (`c.*` → the relation/alias resolved to the
    /// table name if it is an alias of a plain table, else the alias).
    Star {
        relation: Option<String>,
        sources: Sources,
    },
}

/// What one output is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sources {
    /// Column names referenced, lower-cased as PostgreSQL folds unquoted identifiers (quoted
    /// names keep their case), last name part only (`c.ssn` → `ssn`, `public.c.ssn` → `ssn`).
    /// Sorted, deduplicated.
    pub columns: Vec<String>,
    /// Relations referenced whole (`row_to_json(c)`, `json_agg(c.*)`, `to_jsonb(c)`,
    /// `SELECT c FROM customers c`, and every relation a `*` covers), as the table name as
    /// written in FROM (schema-qualified if written so: `public.customers`), resolving aliases
    /// to the table name. Sorted, deduplicated.
    pub relations: Vec<String>,
}

/// Reads `sql` (one or more statements; never panics — a parser failure, or a panic inside
/// the parser bindings, gives an opaque reading).
pub fn lineage(sql: &str) -> Lineage {
    lineage_with(sql, crate::Lexical::default())
}

/// [`lineage`] under the session's lexical settings (see [`crate::Lexical`]).
pub fn lineage_with(sql: &str, lexical: crate::Lexical) -> Lineage {
    std::panic::catch_unwind(|| lineage_inner(sql, lexical)).unwrap_or_else(|_| opaque())
}

fn opaque() -> Lineage {
    Lineage {
        opaque: true,
        ..Lineage::default()
    }
}

fn lineage_inner(sql: &str, lexical: crate::Lexical) -> Lineage {
    let Ok(parsed) = crate::analyze::parse(sql, lexical) else {
        return opaque();
    };
    let Ok(tree) = serde_json::to_value(&parsed.protobuf) else {
        return opaque();
    };
    let mut result = Lineage::default();
    // Outputs of every row-returning statement, merged position-wise.
    let mut merged: Option<Vec<Col>> = None;
    let mut row_statements = 0;
    let mut any_star = false;
    for raw in items(&tree, "stmts") {
        let Some(stmt) = raw.get("stmt") else {
            continue;
        };
        let Some((kind, body)) = node(stmt) else {
            continue;
        };
        let wraps_execute = || {
            body.get("query")
                .and_then(node)
                .is_some_and(|(k, _)| k == "ExecuteStmt")
        };
        result.runs_code |= matches!(kind, "DoStmt" | "CallStmt" | "ExecuteStmt")
            || matches!(kind, "ExplainStmt" | "CreateTableAsStmt") && wraps_execute();
        let reader = Reader::new(stmt);
        let rows = reader.statement(kind, body, &mut result);
        result.opaque |= reader.opaque.get();
        let Some(cols) = rows else { continue };
        row_statements += 1;
        any_star |= cols.iter().any(Col::is_star);
        merged = Some(match merged {
            None => cols,
            Some(before) => {
                let (cols, imprecise) = combine(before, cols);
                result.opaque |= imprecise;
                cols
            }
        });
    }
    // With several results, a `*` (of unknown width) makes the positions impossible to line up.
    result.opaque |= row_statements > 1 && any_star;
    collect_functions(&tree, &mut result.functions);
    result.functions.sort();
    result.functions.dedup();
    result.outputs = merged
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.output)
        .collect();
    result
}

/// The names of every function called anywhere in `v`.
fn collect_functions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "FuncCall"
                    && let Some(name) = items(child, "funcname").last().and_then(sval)
                {
                    out.push(name.to_string());
                }
                collect_functions(child, out);
            }
        }
        Value::Array(list) => list.iter().for_each(|c| collect_functions(c, out)),
        _ => {}
    }
}

/// Bound on the rounds of re-reading CTEs and subqueries until their sources stop growing.
/// Each round carries every source at least one step further along the chain of derived
/// items feeding each other, so one round more than there are items always suffices; the
/// cap only stops a pathological statement from costing too much, and then the reading is
/// given up (opaque) rather than reported incomplete.
const MAX_ROUNDS: usize = 256;

/// Built-in functions that run SQL given as text or read a table or cursor named by a
/// value: what they read cannot be seen in the statement, so their presence makes the
/// reading opaque. (User-defined functions can read anything too; that is the policy's
/// concern, not something a parse can tell.)
const RUNS_SQL_TEXT: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "dblink",
    "dblink_fetch",
    "dblink_get_result",
];

/// `SelectStmt.op`: `SETOP_NONE` (and the unset value) mean a plain SELECT; 2 to 4 are
/// UNION, INTERSECT and EXCEPT.
const SETOP_NONE: i64 = 1;
const SETOP_EXCEPT: i64 = 4;

/// An output column while reading: its `Output`, and the names an enclosing query can use to
/// refer to it (when it is a CTE or subquery column).
#[derive(Debug, Clone)]
struct Col {
    output: Output,
    names: Vec<String>,
}

impl Col {
    fn column(sources: Sources, names: Vec<String>) -> Col {
        Col {
            output: Output::Column(sources),
            names,
        }
    }

    fn is_star(&self) -> bool {
        matches!(self.output, Output::Star { .. })
    }

    fn sources(&self) -> &Sources {
        match &self.output {
            Output::Column(sources) | Output::Star { sources, .. } => sources,
        }
    }

    fn sources_mut(&mut self) -> &mut Sources {
        match &mut self.output {
            Output::Column(sources) | Output::Star { sources, .. } => sources,
        }
    }

    fn absorb(&mut self, other: &Col) {
        self.sources_mut().absorb(other.sources());
        for name in &other.names {
            if !self.names.contains(name) {
                self.names.push(name.clone());
            }
        }
    }
}

impl Sources {
    fn add_column(&mut self, name: &str) -> bool {
        insert_sorted(&mut self.columns, name)
    }

    fn add_relation(&mut self, name: &str) -> bool {
        insert_sorted(&mut self.relations, name)
    }

    /// Adds everything in `other`; true when something was new.
    fn absorb(&mut self, other: &Sources) -> bool {
        let mut changed = false;
        for c in &other.columns {
            changed |= self.add_column(c);
        }
        for r in &other.relations {
            changed |= self.add_relation(r);
        }
        changed
    }
}

fn insert_sorted(list: &mut Vec<String>, item: &str) -> bool {
    match list.binary_search_by(|x| x.as_str().cmp(item)) {
        Ok(_) => false,
        Err(at) => {
            list.insert(at, item.to_string());
            true
        }
    }
}

/// Position-wise union of two column lists (the branches of a set operation, or the results
/// of several statements). Also says whether the result is imprecise: a `*` in either list
/// has an unknown width, so from the first `*` on the positions cannot be lined up and are
/// merged into one `Star` holding all their sources; lists of different widths likewise.
fn combine(a: Vec<Col>, b: Vec<Col>) -> (Vec<Col>, bool) {
    let first_star = [&a, &b]
        .iter()
        .filter_map(|list| list.iter().position(Col::is_star))
        .min();
    let imprecise = first_star.is_some() || a.len() != b.len();
    let aligned = first_star.unwrap_or(a.len().max(b.len()));
    let mut rest = Col {
        output: Output::Star {
            relation: None,
            sources: Sources::default(),
        },
        names: Vec::new(),
    };
    let mut out: Vec<Col> = Vec::new();
    let mut a = a.into_iter();
    let mut b = b.into_iter();
    for i in 0.. {
        let (x, y) = (a.next(), b.next());
        if x.is_none() && y.is_none() {
            break;
        }
        for col in [x, y].into_iter().flatten() {
            if i >= aligned {
                rest.absorb(&col);
            } else if let Some(merged) = out.get_mut(i) {
                merged.absorb(&col);
            } else {
                out.push(col);
            }
        }
    }
    if first_star.is_some() {
        out.push(rest);
    }
    (out, imprecise)
}

/// What a name in FROM stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Binding {
    /// A table (or view), by its name as written.
    Table(String),
    /// A CTE, subquery, function or aliased join: an index into `Reader::derived`.
    Derived(usize),
}

/// A CTE, subquery or other non-table item in FROM whose columns are computed.
struct Derived<'t> {
    body: DerivedBody<'t>,
    /// Sources of all its columns together (what a whole-row reference to it reads).
    whole: Sources,
}

enum DerivedBody<'t> {
    /// A CTE or subquery: its outputs by position, renamed by `colnames` when given.
    Query {
        query: &'t Value,
        colnames: Vec<String>,
    },
    /// A function, XMLTABLE, JSON_TABLE or aliased join: every column it yields is taken to
    /// come from everything inside it, under any of `names`.
    Other {
        kind: &'t str,
        item: &'t Value,
        names: Vec<String>,
    },
}

/// The reading of one statement. Names are statement-global (scoping is ignored), which can
/// only add sources, never lose one.
struct Reader<'t> {
    bindings: BTreeMap<String, Vec<Binding>>,
    /// CTE name → its entries in `derived` (a name may be defined at several levels).
    ctes: BTreeMap<String, Vec<usize>>,
    derived: Vec<Derived<'t>>,
    /// Output name of any CTE/subquery/function column → the sources behind it.
    names: BTreeMap<String, Sources>,
    opaque: Cell<bool>,
}

impl<'t> Reader<'t> {
    /// `stmt` is the statement node, `{"node": {"SelectStmt": ...}}`.
    fn new(stmt: &'t Value) -> Reader<'t> {
        let mut reader = Reader {
            bindings: BTreeMap::new(),
            ctes: BTreeMap::new(),
            derived: Vec::new(),
            names: BTreeMap::new(),
            opaque: Cell::new(false),
        };
        // CTEs first, so a table reference can be recognised as naming one.
        reader.scan(stmt, &mut |r, kind, body| r.find_cte(kind, body));
        reader.scan(stmt, &mut |r, kind, body| r.find_from_item(kind, body));
        reader.settle();
        reader
    }

    /// Calls `visit` on every node of the tree, at any depth.
    fn scan(&mut self, v: &'t Value, visit: &mut impl FnMut(&mut Self, &'t str, &'t Value)) {
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    visit(self, key.as_str(), child);
                    self.scan(child, visit);
                }
            }
            Value::Array(list) => {
                for child in list {
                    self.scan(child, visit);
                }
            }
            _ => {}
        }
    }

    fn bind(&mut self, name: &str, binding: Binding) {
        let list = self.bindings.entry(name.to_string()).or_default();
        if !list.contains(&binding) {
            list.push(binding);
        }
    }

    fn add_derived(&mut self, body: DerivedBody<'t>) -> usize {
        self.derived.push(Derived {
            body,
            whole: Sources::default(),
        });
        self.derived.len() - 1
    }

    fn find_cte(&mut self, kind: &'t str, body: &'t Value) {
        if kind != "CommonTableExpr" {
            return;
        }
        let Some(query) = body.get("ctequery") else {
            return;
        };
        let name = text(body, "ctename");
        let colnames = svals(items(body, "aliascolnames"));
        let index = self.add_derived(DerivedBody::Query { query, colnames });
        self.ctes.entry(name.to_string()).or_default().push(index);
        self.bind(name, Binding::Derived(index));
        // `SEARCH ... SET seq` and `CYCLE ... SET mark USING path` add columns that carry
        // values of the CTE's columns (the path is an array of them).
        let mut added = Vec::new();
        for (clause, fields) in [
            ("search_clause", &["search_seq_column"][..]),
            (
                "cycle_clause",
                &["cycle_mark_column", "cycle_path_column"][..],
            ),
        ] {
            if let Some(clause) = body.get(clause).filter(|c| c.is_object()) {
                added.extend(fields.iter().map(|f| text(clause, f).to_string()));
            }
        }
        if !added.is_empty() {
            self.add_other(kind, body, added);
        }
    }

    fn find_from_item(&mut self, kind: &'t str, body: &'t Value) {
        match kind {
            "RangeVar" => self.bind_range_var(body),
            // Their target relation is a plain field, not a node the scan visits.
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                let Some(target) = body.get("relation").filter(|r| r.is_object()) else {
                    return;
                };
                self.bind_range_var(target);
                // RETURNING old.* / new.* (and their renamings) read the target table.
                let table = relation_name(target);
                let mut names = vec!["old".to_string(), "new".to_string()];
                if let Some(returning) = body.get("returning_clause") {
                    for option in items(returning, "options") {
                        if let Some(("ReturningOption", o)) = node(option) {
                            names.push(text(o, "value").to_string());
                        }
                    }
                }
                for name in names {
                    self.bind(&name, Binding::Table(table.clone()));
                }
            }
            "RangeSubselect" => {
                let Some(query) = body.get("subquery") else {
                    return;
                };
                let (alias, colnames) = alias(body);
                let index = self.add_derived(DerivedBody::Query { query, colnames });
                if let Some(alias) = alias {
                    self.bind(&alias, Binding::Derived(index));
                }
            }
            "RangeFunction" | "RangeTableFunc" | "JsonTable" => {
                // Its range name and column names: the alias and its column list, the
                // function names (an unaliased function names both), column definitions.
                let mut names = Vec::new();
                collect_names(body, &mut names);
                self.add_other(kind, body, names);
            }
            "JoinExpr" => {
                let mut names = Vec::new();
                for field in ["alias", "join_using_alias"] {
                    if let Some(alias) = body.get(field).filter(|a| a.is_object()) {
                        names.push(text(alias, "aliasname").to_string());
                        names.extend(svals(items(alias, "colnames")));
                    }
                }
                if !names.is_empty() {
                    self.add_other(kind, body, names);
                }
            }
            _ => {}
        }
    }

    fn add_other(&mut self, kind: &'t str, item: &'t Value, mut names: Vec<String>) {
        names.retain(|n| !n.is_empty());
        names.sort();
        names.dedup();
        let bound = names.clone();
        let index = self.add_derived(DerivedBody::Other { kind, item, names });
        // Every name is bound as a range name too: a reference to any of them reads the
        // whole item, which is the same sources its columns have.
        for name in bound {
            self.bind(&name, Binding::Derived(index));
        }
    }

    fn bind_range_var(&mut self, body: &'t Value) {
        let (alias, colnames) = alias(body);
        let relname = text(body, "relname");
        let key = alias.unwrap_or_else(|| relname.to_string());
        self.bind(&key, Binding::Table(relation_name(body)));
        // An unqualified name may be a CTE. Without tracking CTE scopes it may also be a
        // table of that name elsewhere, so it keeps both meanings.
        if text(body, "schemaname").is_empty()
            && let Some(ctes) = self.ctes.get(relname).cloned()
        {
            for index in ctes {
                self.bind(&key, Binding::Derived(index));
            }
        }
        // `customers AS c(a, b)` renames the table's first columns: which ones is unknown
        // here, so each new name stands for the whole table.
        if !colnames.is_empty() {
            self.add_other("RangeVar", body, colnames);
        }
    }

    /// Reads every CTE/subquery/function until their sources stop growing: they can refer to
    /// each other (CTE chains, recursive CTEs) in any order.
    fn settle(&mut self) {
        for _ in 0..(self.derived.len() + 2).min(MAX_ROUNDS) {
            let mut changed = false;
            for index in 0..self.derived.len() {
                let (whole, named) = self.evaluate(index);
                changed |= self.derived[index].whole.absorb(&whole);
                for (name, sources) in named {
                    changed |= self.names.entry(name).or_default().absorb(&sources);
                }
            }
            if !changed {
                return;
            }
        }
        self.opaque.set(true);
    }

    /// The sources of a derived item as a whole, and per name of its columns.
    fn evaluate(&self, index: usize) -> (Sources, Vec<(String, Sources)>) {
        let mut whole = Sources::default();
        let mut named = Vec::new();
        match &self.derived[index].body {
            DerivedBody::Query { query, colnames } => {
                let cols = self.query_outputs(query, false);
                for col in &cols {
                    whole.absorb(col.sources());
                }
                // Past a `*` the position of a column alias is unknown: it may name any of
                // the columns from the `*` on.
                let first_star = cols.iter().position(Col::is_star);
                let mut from_star = Sources::default();
                for col in &cols[first_star.unwrap_or(cols.len())..] {
                    from_star.absorb(col.sources());
                }
                for (i, alias) in colnames.iter().enumerate() {
                    let sources = match cols.get(i) {
                        Some(col) if first_star.is_none_or(|s| i < s) => col.sources().clone(),
                        _ if first_star.is_some() => from_star.clone(),
                        _ => whole.clone(),
                    };
                    named.push((alias.clone(), sources));
                }
                for col in cols.iter().skip(colnames.len()) {
                    for name in &col.names {
                        named.push((name.clone(), col.sources().clone()));
                    }
                }
            }
            DerivedBody::Other { kind, item, names } => {
                whole = self.range_item_sources(kind, item);
                for name in names {
                    named.push((name.clone(), whole.clone()));
                }
            }
        }
        (whole, named)
    }

    /// The top-level statement's result columns, or `None` when it returns no rows.
    fn statement(&self, kind: &str, body: &Value, result: &mut Lineage) -> Option<Vec<Col>> {
        match kind {
            // SELECT ... INTO creates a table and returns nothing.
            "SelectStmt" if body.get("into_clause").is_some_and(|i| !i.is_null()) => None,
            "SelectStmt" => Some(self.select_outputs(body, true)),
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.returning_outputs(body)
            }
            "DeclareCursorStmt" => {
                self.note_cursor(&mut result.declares_cursor, text(body, "portalname"));
                Some(self.query_outputs(body.get("query")?, true))
            }
            "FetchStmt" => {
                self.note_cursor(&mut result.fetches_cursor, text(body, "portalname"));
                None
            }
            "CopyStmt" => self.copy_outputs(body, result),
            // EXPLAIN, SHOW, CALL, DO, DDL, SET, transaction control...: no table data.
            _ => None,
        }
    }

    /// Records a cursor name; a second, different one in the same text cannot be expressed.
    fn note_cursor(&self, slot: &mut Option<String>, name: &str) {
        match slot {
            Some(existing) if existing != name => self.opaque.set(true),
            _ => *slot = Some(name.to_string()),
        }
    }

    fn copy_outputs(&self, body: &Value, result: &mut Lineage) -> Option<Vec<Col>> {
        if body.get("is_from").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        result.copy = copy_format(items(body, "options"));
        if let Some(query) = body.get("query").filter(|q| !q.is_null()) {
            return Some(self.query_outputs(query, true));
        }
        let table = relation_name(body.get("relation").filter(|r| r.is_object())?);
        let listed = svals(items(body, "attlist"));
        if listed.is_empty() {
            let mut sources = Sources::default();
            sources.add_relation(&table);
            return Some(vec![Col {
                output: Output::Star {
                    relation: Some(table),
                    sources,
                },
                names: Vec::new(),
            }]);
        }
        Some(
            listed
                .into_iter()
                .map(|name| {
                    let mut sources = Sources::default();
                    sources.add_column(&name);
                    Col::column(sources, vec![name])
                })
                .collect(),
        )
    }

    /// The result columns of a query node (SELECT, VALUES, or a data-modifying statement's
    /// RETURNING). `top` says it is the statement's result, where a `*` in a set operation
    /// makes the reading opaque.
    fn query_outputs(&self, query: &Value, top: bool) -> Vec<Col> {
        match node(query) {
            Some(("SelectStmt", body)) => self.select_outputs(body, top),
            Some(("InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt", body)) => {
                self.returning_outputs(body).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    fn select_outputs(&self, body: &Value, top: bool) -> Vec<Col> {
        let op = body.get("op").and_then(Value::as_i64).unwrap_or(SETOP_NONE);
        if op > SETOP_NONE {
            if op > SETOP_EXCEPT {
                self.opaque.set(true);
            }
            // The branches of UNION/INTERSECT/EXCEPT are plain SelectStmt fields.
            let branch = |field: &str| match body.get(field) {
                Some(b) if b.is_object() => self.select_outputs(b, top),
                _ => Vec::new(),
            };
            let (cols, imprecise) = combine(branch("larg"), branch("rarg"));
            if top && imprecise {
                self.opaque.set(true);
            }
            return cols;
        }
        let rows = items(body, "values_lists");
        if !rows.is_empty() {
            return self.values_outputs(rows);
        }
        let scope = self.range_list_sources(items(body, "from_clause"));
        items(body, "target_list")
            .iter()
            .map(|target| self.target(target, &scope, None))
            .collect()
    }

    /// `VALUES (...), (...)`: column i is the union of every row's i-th expression, named
    /// `column1`, `column2`... as PostgreSQL names them.
    fn values_outputs(&self, rows: &[Value]) -> Vec<Col> {
        let mut cols: Vec<Col> = Vec::new();
        for row in rows {
            let exprs = match node(row) {
                Some(("List", list)) => items(list, "items"),
                _ => &[],
            };
            for (i, expr) in exprs.iter().enumerate() {
                let sources = self.expr(expr, &Sources::default());
                match cols.get_mut(i) {
                    Some(col) => {
                        col.sources_mut().absorb(&sources);
                    }
                    None => cols.push(Col::column(sources, vec![format!("column{}", i + 1)])),
                }
            }
        }
        cols
    }

    /// RETURNING of INSERT/UPDATE/DELETE/MERGE, or `None` when there is none.
    fn returning_outputs(&self, body: &Value) -> Option<Vec<Col>> {
        let exprs = items(body.get("returning_clause")?, "exprs");
        if exprs.is_empty() {
            return None;
        }
        let target = body
            .get("relation")
            .filter(|r| r.is_object())
            .map(relation_name);
        // A bare `*` covers the target and whatever UPDATE ... FROM, DELETE ... USING or
        // MERGE ... USING join to it.
        let mut scope = Sources::default();
        if let Some(target) = &target {
            scope.add_relation(target);
        }
        for field in ["from_clause", "using_clause"] {
            scope.absorb(&self.range_list_sources(items(body, field)));
        }
        if let Some(source) = body.get("source_relation").and_then(node) {
            scope.absorb(&self.range_item_sources(source.0, source.1));
        }
        Some(
            exprs
                .iter()
                .map(|e| self.target(e, &scope, target.as_deref()))
                .collect(),
        )
    }

    /// One target-list item. `scope` is what a bare `*` covers; `star_relation` the relation
    /// to report for a bare `*` (the RETURNING target).
    fn target(&self, item: &Value, scope: &Sources, star_relation: Option<&str>) -> Col {
        let Some(("ResTarget", target)) = node(item) else {
            self.opaque.set(true);
            return Col::column(Sources::default(), Vec::new());
        };
        let Some(val) = target.get("val").filter(|v| !v.is_null()) else {
            self.opaque.set(true);
            return Col::column(Sources::default(), Vec::new());
        };
        let name = text(target, "name");
        let names = if name.is_empty() {
            vec![figure_colname(val)]
        } else {
            vec![name.to_string()]
        };
        let output = match node(val) {
            Some(("ColumnRef", cref)) => {
                let parts: Vec<Option<&str>> = items(cref, "fields").iter().map(sval).collect();
                match parts.split_last() {
                    Some((None, [])) => Some(Output::Star {
                        relation: star_relation.map(str::to_string),
                        sources: scope.clone(),
                    }),
                    Some((None, qualifier)) => {
                        let qualifier: Vec<&str> = qualifier.iter().flatten().copied().collect();
                        let mut sources = Sources::default();
                        let relation = match qualifier.last() {
                            Some(last) => {
                                self.whole_row(last, &mut sources);
                                self.star_relation(last, &qualifier.join("."))
                            }
                            None => qualifier.join("."),
                        };
                        Some(Output::Star {
                            relation: Some(relation),
                            sources,
                        })
                    }
                    _ => None,
                }
            }
            // `(expr).*`: the fields of a composite value.
            Some(("AIndirection", ind))
                if items(ind, "indirection")
                    .last()
                    .and_then(node)
                    .is_some_and(|(kind, _)| kind == "AStar") =>
            {
                Some(Output::Star {
                    relation: None,
                    sources: self.expr(val, scope),
                })
            }
            _ => None,
        };
        match output {
            // The columns a `*` expands to keep their own names, which need no mapping.
            Some(output) => Col {
                output,
                names: Vec::new(),
            },
            None => Col::column(self.expr(val, scope), names),
        }
    }

    /// The relation to report for `q.*`: the table when `q` is only ever a table (or its
    /// alias), else `q` as written.
    fn star_relation(&self, q: &str, written: &str) -> String {
        match self.bindings.get(q).map(Vec::as_slice) {
            Some([Binding::Table(table)]) => table.clone(),
            _ => written.to_string(),
        }
    }

    /// Everything a FROM list provides: what a bare `*` over it covers.
    fn range_list_sources(&self, from: &[Value]) -> Sources {
        let mut sources = Sources::default();
        for item in from {
            if let Some((kind, body)) = node(item) {
                sources.absorb(&self.range_item_sources(kind, body));
            }
        }
        sources
    }

    fn range_item_sources(&self, kind: &str, body: &Value) -> Sources {
        match kind {
            "RangeVar" => self.range_var_sources(body),
            "RangeSubselect" => {
                let mut sources = Sources::default();
                if let Some(query) = body.get("subquery") {
                    for col in self.query_outputs(query, false) {
                        sources.absorb(col.sources());
                    }
                }
                sources
            }
            "JoinExpr" => {
                let mut sources = Sources::default();
                for side in ["larg", "rarg"] {
                    if let Some((kind, body)) = body.get(side).and_then(node) {
                        sources.absorb(&self.range_item_sources(kind, body));
                    }
                }
                sources
            }
            // Functions, XMLTABLE, JSON_TABLE, TABLESAMPLE...: whatever is inside.
            _ => self.expr(body, &Sources::default()),
        }
    }

    /// A table in FROM read whole: the table, and the CTE it may name.
    fn range_var_sources(&self, body: &Value) -> Sources {
        let mut sources = Sources::default();
        sources.add_relation(&relation_name(body));
        if text(body, "schemaname").is_empty()
            && let Some(ctes) = self.ctes.get(text(body, "relname"))
        {
            for &index in ctes {
                sources.absorb(&self.derived[index].whole);
            }
        }
        sources
    }

    /// Sources of an expression: every column reference anywhere inside it, whatever the node
    /// kinds around it, with subqueries contributing their outputs. `scope` is what a bare `*`
    /// covers.
    fn expr(&self, v: &Value, scope: &Sources) -> Sources {
        let mut sources = Sources::default();
        self.walk(v, scope, &mut sources);
        sources
    }

    fn walk(&self, v: &Value, scope: &Sources, out: &mut Sources) {
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    match key.as_str() {
                        "ColumnRef" => self.column_ref(items(child, "fields"), scope, out),
                        "FuncCall" => {
                            let name = items(child, "funcname").last().and_then(sval);
                            if name.is_some_and(|n| RUNS_SQL_TEXT.contains(&n)) {
                                self.opaque.set(true);
                            }
                            self.walk(child, scope, out);
                        }
                        // `(c).ssn`, `(row).field`: the field names are read too.
                        "AIndirection" => {
                            for name in items(child, "indirection").iter().filter_map(sval) {
                                self.column_name(name, out);
                            }
                            self.walk(child, scope, out);
                        }
                        // A subquery (scalar, EXISTS, IN, ARRAY(...), LATERAL...) contributes
                        // its outputs; its WHERE and the like do not flow into the value.
                        "SelectStmt" => {
                            for col in self.select_outputs(child, false) {
                                out.absorb(col.sources());
                            }
                        }
                        // Inside a function/TABLESAMPLE in FROM: a table read whole.
                        "RangeVar" => {
                            out.absorb(&self.range_var_sources(child));
                        }
                        _ => self.walk(child, scope, out),
                    }
                }
            }
            Value::Array(list) => {
                for child in list {
                    self.walk(child, scope, out);
                }
            }
            _ => {}
        }
    }

    fn column_ref(&self, fields: &[Value], scope: &Sources, out: &mut Sources) {
        // `None` stands for `*`.
        let parts: Vec<Option<&str>> = fields.iter().map(sval).collect();
        match parts.split_last() {
            None => {}
            Some((None, [])) => {
                out.absorb(scope);
            }
            Some((None, qualifier)) => {
                if let Some(Some(q)) = qualifier.last() {
                    self.whole_row(q, out);
                }
            }
            Some((Some(name), qualifier)) => {
                self.column_name(name, out);
                // A bare name that is also a range name may be a whole-row reference
                // (`SELECT c FROM customers c`): keep both readings.
                if qualifier.is_empty() && self.bindings.contains_key(*name) {
                    self.whole_row(name, out);
                }
                // `c.addr.street` with `c` a range name: `addr` is a column (whose field is
                // read), not a table of schema `c`.
                if let [Some(first), middle @ ..] = qualifier
                    && self.bindings.contains_key(*first)
                {
                    for part in middle.iter().flatten() {
                        self.column_name(part, out);
                    }
                }
            }
        }
    }

    /// A column name, and whatever a CTE/subquery column of that name is computed from.
    fn column_name(&self, name: &str, out: &mut Sources) {
        out.add_column(name);
        if let Some(sources) = self.names.get(name) {
            out.absorb(sources);
        }
    }

    /// A whole-row reference to the range name `name`.
    fn whole_row(&self, name: &str, out: &mut Sources) {
        let Some(bindings) = self.bindings.get(name) else {
            // Not a name seen in FROM: report it as a relation, as written.
            out.add_relation(name);
            return;
        };
        for binding in bindings {
            match binding {
                Binding::Table(table) => {
                    out.add_relation(table);
                }
                Binding::Derived(index) => {
                    out.absorb(&self.derived[*index].whole);
                }
            }
        }
    }
}

/// The kind and body of a parse-tree node, `{"node": {"Kind": body}}`.
fn node(v: &Value) -> Option<(&str, &Value)> {
    let (kind, body) = v.get("node")?.as_object()?.iter().next()?;
    Some((kind.as_str(), body))
}

/// The format a COPY's options (`DefElem`s) set, or `None` when one cannot be read.
fn copy_format(options: &[Value]) -> Option<CopyFormat> {
    let mut named: Vec<(&str, Option<&Value>)> = Vec::new();
    for option in options {
        let ("DefElem", def) = node(option)? else {
            return None;
        };
        named.push((
            text(def, "defname"),
            def.get("arg").filter(|a| !a.is_null()),
        ));
    }
    let one_byte = |arg: Option<&Value>| -> Option<u8> {
        match arg.and_then(sval)?.as_bytes() {
            [b] => Some(*b),
            _ => None,
        }
    };
    let kind = match named.iter().find(|(n, _)| *n == "format") {
        None => CopyKind::Text,
        Some((_, arg)) => match arg.and_then(|a| sval(a))?.to_ascii_lowercase().as_str() {
            "text" => CopyKind::Text,
            "csv" => CopyKind::Csv,
            "binary" => CopyKind::Binary,
            _ => return None,
        },
    };
    let mut format = CopyFormat::default_for(kind);
    let mut escape = None;
    for (name, arg) in named {
        match name {
            "delimiter" => format.delimiter = one_byte(arg)?,
            "null" => format.null = arg.and_then(sval)?.to_string(),
            "quote" => format.quote = one_byte(arg)?,
            "escape" => escape = Some(one_byte(arg)?),
            "header" => format.header = boolean(arg)?,
            _ => {}
        }
    }
    // ESCAPE defaults to the QUOTE character.
    format.escape = escape.unwrap_or(format.quote);
    Some(format)
}

/// An option's boolean value as PostgreSQL's `defGetBoolean` reads it: no value is true.
fn boolean(arg: Option<&Value>) -> Option<bool> {
    let Some(arg) = arg else {
        return Some(true);
    };
    match node(arg)? {
        ("Boolean", b) => Some(b.get("boolval").and_then(Value::as_bool).unwrap_or(false)),
        ("Integer", i) => Some(i.get("ival").and_then(Value::as_i64).unwrap_or(0) != 0),
        ("String", _) => match sval(arg)?.to_ascii_lowercase().as_str() {
            "true" | "on" | "1" | "yes" => Some(true),
            "false" | "off" | "0" | "no" => Some(false),
            // `HEADER MATCH` is for COPY FROM only.
            _ => None,
        },
        _ => None,
    }
}

/// A list field (empty when absent).
fn items<'v>(body: &'v Value, field: &str) -> &'v [Value] {
    body.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A string field (empty when absent).
fn text<'v>(body: &'v Value, field: &str) -> &'v str {
    body.get(field).and_then(Value::as_str).unwrap_or("")
}

/// The text of a `String` node.
fn sval(v: &Value) -> Option<&str> {
    match node(v)? {
        ("String", s) => s.get("sval")?.as_str(),
        _ => None,
    }
}

fn svals(list: &[Value]) -> Vec<String> {
    list.iter().filter_map(sval).map(str::to_string).collect()
}

/// The alias name and column aliases of a FROM item.
fn alias(body: &Value) -> (Option<String>, Vec<String>) {
    match body.get("alias").filter(|a| a.is_object()) {
        Some(alias) => (
            Some(text(alias, "aliasname").to_string()).filter(|n| !n.is_empty()),
            svals(items(alias, "colnames")),
        ),
        None => (None, Vec::new()),
    }
}

/// A RangeVar's name as written: `customers`, `public.customers`.
fn relation_name(body: &Value) -> String {
    ["catalogname", "schemaname", "relname"]
        .iter()
        .map(|f| text(body, f))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// Every name a function-like FROM item may give its range or columns: alias and column
/// aliases, function names, column definition names (`AS f(a text)`, XMLTABLE / JSON_TABLE
/// columns). Too many names only add sources.
fn collect_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, child) in map {
                match key.as_str() {
                    "aliasname" | "colname" | "name" => {
                        if let Some(s) = child.as_str() {
                            out.push(s.to_string());
                        }
                    }
                    "colnames" => out.extend(svals(child.as_array().map_or(&[], Vec::as_slice))),
                    "funcname" => {
                        if let Some(last) = child.as_array().and_then(|l| l.last()).and_then(sval) {
                            out.push(last.to_string());
                        }
                    }
                    _ => {}
                }
                collect_names(child, out);
            }
        }
        Value::Array(list) => {
            for child in list {
                collect_names(child, out);
            }
        }
        _ => {}
    }
}

/// The name PostgreSQL gives an unnamed output column (`FigureColname` in parse_target.c),
/// so an enclosing query's reference to it can be followed.
fn figure_colname(v: &Value) -> String {
    figure(v).1.unwrap_or_else(|| "?column?".to_string())
}

/// `FigureColnameInternal`: the name and its strength (2 good, 1 a fallback, 0 none).
fn figure(v: &Value) -> (u8, Option<String>) {
    let Some((kind, body)) = node(v) else {
        return (0, None);
    };
    let good = |name: &str| (2, Some(name.to_string()));
    let op = body.get("op").and_then(Value::as_i64).unwrap_or(0);
    match kind {
        "ColumnRef" => match items(body, "fields").iter().filter_map(sval).next_back() {
            Some(name) => good(name),
            None => (0, None),
        },
        "AIndirection" => match items(body, "indirection")
            .iter()
            .filter_map(sval)
            .next_back()
        {
            Some(name) => good(name),
            None => body.get("arg").map_or((0, None), figure),
        },
        "FuncCall" => match items(body, "funcname").last().and_then(sval) {
            Some(name) => good(name),
            None => (0, None),
        },
        // AEXPR_NULLIF
        "AExpr" if body.get("kind").and_then(Value::as_i64) == Some(6) => good("nullif"),
        "TypeCast" => {
            let inner = body.get("arg").map_or((0, None), figure);
            if inner.0 > 1 {
                return inner;
            }
            let type_name = body
                .get("type_name")
                .and_then(|t| items(t, "names").last())
                .and_then(sval);
            match type_name {
                Some(name) => (1, Some(name.to_string())),
                None => inner,
            }
        }
        "CollateClause" => body.get("arg").map_or((0, None), figure),
        "GroupingFunc" => good("grouping"),
        "MergeSupportFunc" => good("merge_action"),
        "SubLink" => match body.get("sub_link_type").and_then(Value::as_i64) {
            Some(1) => good("exists"),
            Some(7) => good("array"),
            // EXPR_SUBLINK: the name of the subquery's single column.
            Some(5) => match body.get("subselect").and_then(node) {
                Some(("SelectStmt", select)) => match first_target_name(select) {
                    Some(name) => (2, Some(name)),
                    None => (0, None),
                },
                _ => (0, None),
            },
            _ => (0, None),
        },
        "CaseExpr" => {
            let inner = body.get("defresult").map_or((0, None), figure);
            if inner.0 > 1 {
                inner
            } else {
                (1, Some("case".to_string()))
            }
        }
        "AArrayExpr" => good("array"),
        "RowExpr" => good("row"),
        "CoalesceExpr" => good("coalesce"),
        "MinMaxExpr" => match op {
            1 => good("greatest"),
            2 => good("least"),
            _ => (0, None),
        },
        "SqlvalueFunction" => match op {
            1 => good("current_date"),
            2 | 3 => good("current_time"),
            4 | 5 => good("current_timestamp"),
            6 | 7 => good("localtime"),
            8 | 9 => good("localtimestamp"),
            10 => good("current_role"),
            11 => good("current_user"),
            12 => good("user"),
            13 => good("session_user"),
            14 => good("current_catalog"),
            15 => good("current_schema"),
            _ => (0, None),
        },
        "XmlExpr" => match op {
            1 => good("xmlconcat"),
            2 => good("xmlelement"),
            3 => good("xmlforest"),
            4 => good("xmlparse"),
            5 => good("xmlpi"),
            6 => good("xmlroot"),
            7 => good("xmlserialize"),
            _ => (0, None),
        },
        "XmlSerialize" => good("xmlserialize"),
        "JsonParseExpr" => good("json"),
        "JsonScalarExpr" => good("json_scalar"),
        "JsonSerializeExpr" => good("json_serialize"),
        "JsonObjectConstructor" => good("json_object"),
        "JsonArrayConstructor" | "JsonArrayQueryConstructor" => good("json_array"),
        "JsonObjectAgg" => good("json_objectagg"),
        "JsonArrayAgg" => good("json_arrayagg"),
        "JsonFuncExpr" => match op {
            1 => good("json_exists"),
            2 => good("json_query"),
            3 => good("json_value"),
            _ => (0, None),
        },
        _ => (0, None),
    }
}

/// The name of a subquery's first column (its leftmost branch's, for a set operation).
fn first_target_name(select: &Value) -> Option<String> {
    let op = select
        .get("op")
        .and_then(Value::as_i64)
        .unwrap_or(SETOP_NONE);
    if op > SETOP_NONE {
        return first_target_name(select.get("larg")?);
    }
    if !items(select, "values_lists").is_empty() {
        return Some("column1".to_string());
    }
    let (_, target) = node(items(select, "target_list").first()?)?;
    let name = text(target, "name");
    if !name.is_empty() {
        return Some(name.to_string());
    }
    let val = target.get("val")?;
    // A `*` names the first column of what it expands to, which is unknown here.
    if let Some(("ColumnRef", cref)) = node(val)
        && items(cref, "fields")
            .last()
            .and_then(node)
            .is_some_and(|(kind, _)| kind == "AStar")
    {
        return None;
    }
    Some(figure_colname(val))
}
