//! The differential suite: what the gateway decided against what the server ran, over a
//! few hundred generated texts. A fixed-seed generator composes statements from the pieces
//! that make PostgreSQL's lexer depend on its settings — plain and `E''` literals holding
//! quotes, backslashes, comment openers and semicolons, dollar quoting, `U&''` escapes
//! (with and without UESCAPE), line and nested block comments, several statements per
//! message (empty ones too) — plus hand-written texts that only read differently when
//! backslashes escape. Each text is sent under standard_conforming_strings on and off (set
//! by SET and by set_config) and client encodings UTF8 and LATIN1, in four shapes: simple
//! queries one at a time, simple queries written back to back (raw protocol), the extended
//! protocol one at a time, and libpq pipelines with settings changed in flight.
//!
//! For every text the test caused, the ledger must tell the truth: the command tags the
//! server returned for an allowed statement are, one to one and in order, the commands the
//! gateway decided (a prefix when the server stopped at an error); a refused statement
//! never reached the server; nothing is an `integrity.mismatch`; the client saw what the
//! ledger says it saw; what the gateway refused the server reads as the gateway did (run
//! directly, in a transaction rolled back); and the scratch table holds exactly what the
//! recorded, committed statements did to it — the refused ones carry unbounded DELETEs and
//! UPDATEs aimed at rows no allowed statement touches.
//!
//! This file owns that cross-check; `bypass.rs` owns the hand-picked attacks.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_core::Durability;
use harness::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The generator's seed: every run tries the same texts in the same order.
const SEED: u64 = 0x6761_7465_686f_7573;
/// Texts the generator composes (the hand-written ones come on top).
const GENERATED: usize = 360;
/// Rows no generated statement may touch: every generated UPDATE and DELETE is bounded by
/// `id > 100`, and the identity column starts at 1000.
const SENTINELS: i64 = 10;

// ---------------------------------------------------------------------------------------
// The generator.

/// xorshift64*: small, fixed, and enough to spread choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Inside a plain `'...'` literal: quotes doubled, and backslashes only in pairs or before
/// a letter, so the literal ends in the same place whether or not backslashes escape.
const PLAIN: &[&str] = &[
    "a", "b c", "''", r"\\", r"\n", "--", "/*", "*/", ";", "$$", "$q$", "\"", "x%", "-",
];
/// Inside a plain literal of a hostile text: a backslash before a quote, which ends the
/// literal only when backslashes do not escape, so the rest of the text changes meaning;
/// some carry an unbounded DELETE or UPDATE into the reading where they end it.
const PLAIN_HOSTILE: &[&str] = &[
    r"\",
    r"\'",
    r"\'--",
    r"\' , 1 --",
    r"\'; SELECT '",
    r"\'; DELETE FROM scratch; SELECT '",
    r"\'; UPDATE scratch SET note = 'pwned'; SELECT '",
];
/// Inside `E'...'`, where a backslash always escapes.
const ESCAPED: &[&str] = &[
    "a", r"\'", r"\\", r"\n", r"\x41", r"\101", r"\u00e9", "''", ";", "--", "/*", "*/", "$$",
];
/// Inside a dollar-quoted body: nothing but the closing delimiter is special.
const DOLLAR: &[&str] = &[
    "'", "''", r"\", r"\'", ";", "--", "/*", "*/", "a b", "$", "$x", "$$",
];
const DOLLAR_TAGS: &[&str] = &["", "q", "t1", "_z"];
const UNICODE: &[&str] = &[
    r"U&'d\0061t\+000061'",
    r"U&'d!0061t!+000061' UESCAPE '!'",
    r"u&'\0041\\b'",
    r"U&'caf\00e9'",
    r"U&'a' UESCAPE '#'",
    r"U&'#0041' UESCAPE '#'",
];
const ALIASES: &[&str] = &["a", "\"x y\"", r#"U&"d\0061t""#, "\"q'uote\"", "\"b\\\""];
/// Non-ASCII pieces (UTF8 sessions only); a non-ASCII byte before `;` or a digit is what
/// an encoding change in flight could read differently.
const NON_ASCII: &[&str] = &["é", "ü;", "ぁ", "€a", "ñ1"];
const LINE_COMMENT: &[&str] = &["'", r"\", r"\'", ";", "/*", "*/", "x", "$$", "--", "E'"];
const BLOCK_COMMENT: &[&str] = &["'", r"\", r"\'", ";", "--", "x", "$$", "E'", "$q$"];

/// A `SELECT` that flips standard_conforming_strings whatever it is: two in one message
/// leave the session as it was, while the statements between them are read as the message
/// began (the server parses a whole message before it runs any of it).
const TOGGLE: &str = "SELECT set_config('standard_conforming_strings', CASE current_setting('standard_conforming_strings') WHEN 'on' THEN 'off' ELSE 'on' END, false)";

/// Hand-written texts that read differently when backslashes escape, many carrying a
/// DELETE or UPDATE without WHERE into one reading; and whether the text is one statement
/// in some reading (so the extended protocol tries it too).
fn hostile_templates() -> Vec<(String, bool)> {
    let fixed: &[(&str, bool)] = &[
        (r"SELECT 'a\' , 1 -- '", true),
        (r"SELECT 'a\' -- '; DELETE FROM scratch; --", true),
        (r"SELECT 'a\'; DELETE FROM scratch; SELECT ''", false),
        (
            r"SELECT 'a\' , 1; DELETE FROM scratch WHERE id > 100 AND id % 2 = 0 -- '",
            true,
        ),
        (
            r"SET application_name = 'a\'; UPDATE scratch SET note = 'pwned'; --'",
            true,
        ),
        (
            r"SELECT 'x\' ; UPDATE scratch SET note = 'pwned' ; SELECT ' '",
            false,
        ),
        (r"SELECT $$\$$, 'it\'s'", true),
        (r"SELECT 'it\'s' /* ' */", true),
        (r"SELECT E'a\' -- '; DELETE FROM scratch; --'", false),
        (r"SELECT 'a\\' , 2", true),
        ("SELECT 1 -- \\' \n, 2", true),
        (
            r"INSERT INTO scratch (note) VALUES ('a\'), (''b') -- ')",
            true,
        ),
        (r"SELECT 'a\'/* '; DELETE FROM scratch; -- */'", true),
        (r"SELECT '\', '; DELETE FROM scratch; --'", true),
        (
            r"SELECT '\' AS x; INSERT INTO scratch (note) VALUES ('\'); SELECT '\'",
            false,
        ),
        (r"SELECT $a$ ' $a$, '\' -- $a$ '", true),
        (r"SELECT /* '\' */ 'b\' ; SELECT 2 -- '", true),
        (r"SELECT U&'d\0061t\+000061', 'x\' -- '", true),
        (
            r"SELECT U&'d!0061t!+000061' UESCAPE '!', 'y\' ; DELETE FROM scratch; -- '",
            true,
        ),
        (
            "SELECT 'a\\'\n; DELETE FROM scratch WHERE id > 100 AND id % 3 = 0 -- '",
            false,
        ),
        (r"DO $d$BEGIN PERFORM 'a\'; END$d$; SELECT 'b\' -- '", true),
        (
            r"SET application_name TO 'c\' ; SHOW application_name -- '",
            true,
        ),
    ];
    let mut out: Vec<(String, bool)> = fixed.iter().map(|(s, one)| (s.to_string(), *one)).collect();
    out.push((
        format!("{TOGGLE}; SELECT 'a\\' , 1 -- '\n; {TOGGLE}"),
        false,
    ));
    out.push((
        format!(
            "{TOGGLE}; SELECT '\\', '; DELETE FROM scratch WHERE id > 100 AND id % 4 = 1; --'\n; {TOGGLE}"
        ),
        false,
    ));
    out.push((
        format!("{TOGGLE}; SELECT 'z\\' ; DELETE FROM scratch; --'\n; {TOGGLE}"),
        false,
    ));
    out
}

/// One text of the pool.
struct Text {
    sql: String,
    /// Composed as one statement (the extended protocol's Parse takes one).
    single: bool,
    /// Composed to read differently with the setting: a backslash before a quote in its
    /// plain literals, a comment left open (every hand-written text is hostile).
    hostile: bool,
}

struct Gen {
    rng: Rng,
    hostile: bool,
    non_ascii: bool,
    tables: usize,
}

impl Gen {
    fn pieces(&mut self, from: &[&str], extra: &[&str], most: usize) -> String {
        let n = self.rng.below(most + 1);
        let mut out = String::new();
        for _ in 0..n {
            if !extra.is_empty() && self.rng.chance(30) {
                out.push_str(self.rng.pick(extra));
            } else if self.non_ascii && self.rng.chance(10) {
                out.push_str(self.rng.pick(NON_ASCII));
            } else {
                out.push_str(self.rng.pick(from));
            }
        }
        out
    }

    fn plain(&mut self) -> String {
        let extra: &[&str] = if self.hostile { PLAIN_HOSTILE } else { &[] };
        format!("'{}'", self.pieces(PLAIN, extra, 4))
    }

    fn escaped(&mut self) -> String {
        let prefix = self.rng.pick(&["E", "e"]);
        format!("{prefix}'{}'", self.pieces(ESCAPED, &[], 4))
    }

    fn dollar(&mut self) -> String {
        let tag = self.rng.pick(DOLLAR_TAGS);
        let delimiter = format!("${tag}$");
        loop {
            let body = self.pieces(DOLLAR, &[], 4);
            // The body may not hold its own delimiter, nor end in a way that forms it.
            let whole = format!("{body}{delimiter}");
            if whole.find(&delimiter) == Some(body.len()) {
                return format!("{delimiter}{body}{delimiter}");
            }
        }
    }

    /// A string literal of any kind.
    fn string(&mut self) -> String {
        match self.rng.below(10) {
            0..=4 => self.plain(),
            5..=6 => self.escaped(),
            7..=8 => self.dollar(),
            _ => self.rng.pick(UNICODE).to_string(),
        }
    }

    fn expr(&mut self) -> String {
        match self.rng.below(12) {
            0..=6 => self.string(),
            7 => {
                let (a, gap, b) = (self.string(), self.gap(), self.string());
                format!("{a} ||{gap}{b}")
            }
            8 => format!("length({})", self.string()),
            9 => format!("{}::text", self.string()),
            _ => self
                .rng
                .pick(&["1", "42", "-7", "3.5", "1e3", "NULL", "true"])
                .to_string(),
        }
    }

    fn comment(&mut self) -> String {
        match self.rng.below(10) {
            0..=3 => format!("--{}\n", self.pieces(LINE_COMMENT, &[], 4)),
            4..=6 => format!("/*{}*/", self.pieces(BLOCK_COMMENT, &[], 4)),
            7..=8 => format!(
                "/* {} /* {} */ {} */",
                self.pieces(BLOCK_COMMENT, &[], 2),
                self.pieces(BLOCK_COMMENT, &[], 2),
                self.pieces(BLOCK_COMMENT, &[], 2)
            ),
            // Nesting left open: the rest of the text is a comment to the lexer, which
            // then refuses the text as unterminated.
            _ if self.hostile => "/* open /* inner */".to_string(),
            _ => "/**/".to_string(),
        }
    }

    /// Whitespace between tokens, sometimes with a comment in it.
    fn gap(&mut self) -> String {
        if self.rng.chance(12) {
            format!(" {} ", self.comment())
        } else {
            " ".to_string()
        }
    }

    fn statement(&mut self) -> String {
        match self.rng.below(100) {
            0..=29 => {
                let n = 1 + self.rng.below(3);
                let mut columns = Vec::new();
                for _ in 0..n {
                    let e = self.expr();
                    columns.push(if self.rng.chance(25) {
                        format!("{e} AS {}", self.rng.pick(ALIASES))
                    } else {
                        e
                    });
                }
                let sep = format!(",{}", self.gap());
                let mut s = format!("SELECT{}{}", self.gap(), columns.join(&sep));
                if self.rng.chance(20) {
                    let (gap, lit) = (self.gap(), self.string());
                    s.push_str(&format!(
                        " FROM scratch WHERE id > 100 AND note ={gap}{lit}"
                    ));
                }
                s
            }
            30..=37 => format!("VALUES ({}), ({})", self.string(), self.string()),
            38..=49 => match self.rng.below(3) {
                0 => format!("INSERT INTO scratch (note) VALUES ({})", self.string()),
                1 => format!(
                    "INSERT INTO scratch (note) VALUES ({}),{}({})",
                    self.string(),
                    self.gap(),
                    self.string()
                ),
                _ => format!(
                    "INSERT INTO scratch (note) SELECT{}{}",
                    self.gap(),
                    self.string()
                ),
            },
            50..=57 => format!(
                "UPDATE scratch SET note ={}{} WHERE id > 100 AND id % 7 = {}",
                self.gap(),
                self.string(),
                self.rng.below(7)
            ),
            58..=65 => format!(
                "DELETE FROM scratch WHERE id > 100 AND (note ={}{} OR id % 9 = {})",
                self.gap(),
                self.string(),
                self.rng.below(9)
            ),
            66..=73 => match self.rng.below(6) {
                0 | 1 => format!("SET application_name ={}{}", self.gap(), self.string()),
                2 => "SET extra_float_digits = 2".to_string(),
                3 => "RESET application_name".to_string(),
                4 => "SET statement_timeout TO '30s'".to_string(),
                _ => format!(
                    "SELECT set_config('application_name',{}{}, false)",
                    self.gap(),
                    self.string()
                ),
            },
            74..=77 => format!(
                "SHOW{}{}",
                self.gap(),
                self.rng
                    .pick(&["application_name", "search_path", "extra_float_digits"])
            ),
            78..=83 => match self.rng.below(3) {
                0 => format!("DO $do$BEGIN PERFORM {}; END$do$", self.plain()),
                1 => format!("DO $e$ BEGIN PERFORM {}; END $e$", self.escaped()),
                _ => "DO 'BEGIN PERFORM ''a;b''; END'".to_string(),
            },
            84..=88 => format!("EXPLAIN SELECT{}{}", self.gap(), self.expr()),
            89..=92 => {
                self.tables += 1;
                let (n, e) = (self.tables, self.expr());
                format!("CREATE TEMP TABLE tt{n} AS SELECT {e} AS v")
            }
            _ => String::new(),
        }
    }

    fn message(&mut self, single: bool) -> String {
        let n = if single { 1 } else { 1 + self.rng.below(4) };
        let mut s = String::new();
        if self.rng.chance(15) {
            s.push_str(&self.comment());
            s.push(' ');
        }
        for i in 0..n {
            if i > 0 {
                s.push(';');
                if self.rng.chance(15) {
                    s.push_str(" ;");
                }
                s.push_str(&self.gap());
            }
            s.push_str(&self.statement());
        }
        if self.rng.chance(30) {
            s.push(';');
        }
        if self.rng.chance(15) {
            s.push(' ');
            s.push_str(&self.comment());
        }
        s
    }
}

/// The pool: generated texts, then the hand-written hostile ones.
fn pool() -> Vec<Text> {
    let mut rng = Rng(SEED);
    let mut out = Vec::new();
    let mut tables = 0;
    for _ in 0..GENERATED {
        let mut g = Gen {
            rng: Rng(rng.next() | 1),
            hostile: rng.chance(30),
            non_ascii: rng.chance(15),
            tables,
        };
        let single = g.rng.chance(45);
        let sql = g.message(single);
        tables = g.tables;
        out.push(Text {
            sql,
            single,
            hostile: g.hostile,
        });
    }
    for (sql, single) in hostile_templates() {
        out.push(Text {
            sql,
            single,
            hostile: true,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// The plan: sessions, each a lexical setting and a shape, and the cases they send.

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Shape {
    Simple,
    Batch,
    Extended,
    Pipeline,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Simple => "simple query, one at a time",
            Shape::Batch => "simple queries written back to back",
            Shape::Extended => "extended protocol, one at a time",
            Shape::Pipeline => "extended protocol, pipelined",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Shape::Simple => "simple",
            Shape::Batch => "batch",
            Shape::Extended => "extended",
            Shape::Pipeline => "pipeline",
        }
    }
}

/// One text as sent once: what it is, where it went and how.
struct Case {
    sql: String,
    shape: Shape,
    session: String,
    /// `query` (a Query message), `params` (PQexecParams) or `prepared` (a named statement).
    via: &'static str,
    /// The statements that commit or roll back together: one Query, one Sync.
    unit: String,
    /// The pool text it sends (none for the settings the test itself changes).
    text: Option<usize>,
    /// Cases written in the same batch or pipeline window before it: still in flight
    /// when it was sent, so part of what reproduces it.
    after: Vec<usize>,
}

/// What the client saw for one result: its status, command tag, SQLSTATE, and `prepare`
/// when it answered the Parse of a prepared case.
#[derive(Clone, Debug)]
struct Got {
    s: String,
    tag: Option<String>,
    code: Option<String>,
    stage: Option<String>,
}

fn got_of(v: &Value) -> Got {
    let text = |k: &str| v[k].as_str().map(String::from);
    Got {
        s: text("s").unwrap_or_default(),
        tag: text("tag"),
        code: text("code"),
        stage: text("stage"),
    }
}

/// What the client saw for one case, and what it had last heard of the settings.
#[derive(Clone, Debug, Default)]
struct Seen {
    results: Vec<Got>,
    scs: String,
    enc: String,
    inflight: bool,
}

struct Session {
    name: String,
    shape: Shape,
    /// Startup parameters.
    options: Vec<(String, String)>,
    /// Simple and extended: one case per step. Batch: the cases written together.
    /// Pipeline: see `windows`.
    steps: Vec<Vec<usize>>,
    /// Pipeline: windows of segments (a Sync after each), all sent before reading.
    windows: Vec<Vec<Vec<usize>>>,
}

struct Plan {
    cases: Vec<Case>,
    sessions: Vec<Session>,
}

impl Plan {
    fn case(
        &mut self,
        session: &Session,
        sql: &str,
        via: &'static str,
        unit: Option<String>,
        text: Option<usize>,
    ) -> usize {
        let id = self.cases.len();
        self.cases.push(Case {
            // The marker names the case in the ledger; a closed comment first in the text
            // changes nothing about how the rest of it is read.
            sql: format!("/*c{id}*/ {sql}"),
            shape: session.shape,
            session: session.name.clone(),
            via,
            unit: unit.unwrap_or_else(|| format!("case {id}")),
            text,
            after: Vec::new(),
        });
        id
    }
}

fn set_scs(value: &str, by_set: bool) -> String {
    if by_set {
        format!("SET standard_conforming_strings = {value}")
    } else {
        format!("SELECT set_config('standard_conforming_strings', '{value}', false)")
    }
}

fn plan(pool: &[Text]) -> Plan {
    let mut plan = Plan {
        cases: Vec::new(),
        sessions: Vec::new(),
    };
    let mut rng = Rng(SEED ^ 0x5eed);
    let shapes = [
        Shape::Simple,
        Shape::Batch,
        Shape::Extended,
        Shape::Pipeline,
    ];
    let settings = [
        ("on", "UTF8"),
        ("off", "UTF8"),
        ("on", "LATIN1"),
        ("off", "LATIN1"),
    ];
    for (si, shape) in shapes.into_iter().enumerate() {
        for (ci, (scs, enc)) in settings.into_iter().enumerate() {
            let index = si * settings.len() + ci;
            // Each shape sets standard_conforming_strings by SET for one encoding and by
            // set_config for the other (the next shape the other way round), and takes
            // the encoding at startup with one value of the setting and by SET with the
            // other.
            let by_set = (si + ci / 2).is_multiple_of(2);
            let enc_at_startup = (si + ci).is_multiple_of(2);
            let name = format!(
                "{}: standard_conforming_strings={scs} (by {}), client_encoding={enc} ({})",
                shape.short(),
                if by_set { "SET" } else { "set_config" },
                if enc_at_startup {
                    "at startup"
                } else {
                    "by SET"
                }
            );
            let mut options = vec![(
                "application_name".to_string(),
                format!("differential-{}", index),
            )];
            if enc_at_startup {
                options.push(("client_encoding".into(), enc.into()));
            } else {
                options.push(("client_encoding".into(), "UTF8".into()));
            }
            let mut session = Session {
                name,
                shape,
                options,
                steps: Vec::new(),
                windows: Vec::new(),
            };
            // Setup: always a change (on is the default, so go through off first).
            let mut setup = Vec::new();
            if scs == "on" {
                setup.push(set_scs("off", !by_set));
            }
            setup.push(set_scs(scs, by_set));
            if !enc_at_startup {
                setup.push(format!("SET client_encoding = '{enc}'"));
            }
            let extended = matches!(shape, Shape::Extended | Shape::Pipeline);
            let mut texts: Vec<usize> = (0..pool.len())
                .filter(|&i| enc != "LATIN1" || pool[i].sql.is_ascii())
                .filter(|&i| !extended || pool[i].single)
                .collect();
            rng.shuffle(&mut texts);
            let via = |rng: &mut Rng| -> &'static str {
                match shape {
                    Shape::Simple | Shape::Batch => "query",
                    _ if rng.chance(50) => "prepared",
                    _ => "params",
                }
            };
            let mut planned = scs;
            let flip = |planned: &mut &'static str, by_set: bool| {
                *planned = if *planned == "on" { "off" } else { "on" };
                set_scs(planned, by_set)
            };
            match shape {
                Shape::Simple | Shape::Extended => {
                    for sql in &setup {
                        let v = if shape == Shape::Simple {
                            "query"
                        } else {
                            "params"
                        };
                        let id = plan.case(&session, sql, v, None, None);
                        session.steps.push(vec![id]);
                    }
                    for &t in &texts {
                        let v = via(&mut rng);
                        let id = plan.case(&session, &pool[t].sql, v, None, Some(t));
                        session.steps.push(vec![id]);
                    }
                }
                Shape::Batch => {
                    for sql in &setup {
                        let id = plan.case(&session, sql, "query", None, None);
                        session.steps.push(vec![id]);
                    }
                    let mut rest = texts.as_slice();
                    let mut batches = 0;
                    while !rest.is_empty() {
                        let n = (1 + rng.below(5)).min(rest.len());
                        let mut batch = Vec::new();
                        // Every few batches, the setting changes at the head of the batch:
                        // the texts after it are in flight while it runs.
                        if batches % 4 == 1 {
                            let sql = flip(&mut planned, batches % 8 == 1);
                            batch.push(plan.case(&session, &sql, "query", None, None));
                        }
                        for &t in &rest[..n] {
                            batch.push(plan.case(&session, &pool[t].sql, "query", None, Some(t)));
                        }
                        session.steps.push(batch);
                        rest = &rest[n..];
                        batches += 1;
                    }
                }
                Shape::Pipeline => {
                    // Each segment (up to its Sync) is one unit; its name is the session's
                    // and its number.
                    let mut numbered = 0;
                    let mut unit = || {
                        numbered += 1;
                        Some(format!("{} segment {numbered}", session.name))
                    };
                    // The setup settles first, one segment per window.
                    for sql in &setup {
                        let id = plan.case(&session, sql, "params", unit(), None);
                        session.windows.push(vec![vec![id]]);
                    }
                    let mut segments: Vec<Vec<usize>> = Vec::new();
                    let mut rest = texts.as_slice();
                    while !rest.is_empty() {
                        let n = (1 + rng.below(4)).min(rest.len());
                        let u = unit();
                        let count = segments.len();
                        // Segments go two to a window (the second is sent while the first
                        // runs). Some begin with a change of setting: four flips of
                        // standard_conforming_strings in every twelve segments, alternately
                        // by SET and set_config, and in UTF8 sessions a window that
                        // switches to LATIN1 and back.
                        let head = match count % 12 {
                            1 | 4 | 7 | 10 => {
                                Some(flip(&mut planned, (count / 3).is_multiple_of(2)))
                            }
                            8 if enc == "UTF8" => Some("SET client_encoding = 'LATIN1'".into()),
                            9 if enc == "UTF8" => Some("SET client_encoding = 'UTF8'".into()),
                            _ => None,
                        };
                        let mut segment = Vec::new();
                        if let Some(sql) = head {
                            segment.push(plan.case(&session, &sql, "params", u.clone(), None));
                        }
                        for &t in &rest[..n] {
                            let v = via(&mut rng);
                            segment.push(plan.case(&session, &pool[t].sql, v, u.clone(), Some(t)));
                        }
                        segments.push(segment);
                        rest = &rest[n..];
                    }
                    let mut it = segments.into_iter();
                    while let Some(first) = it.next() {
                        let mut window = vec![first];
                        window.extend(it.next());
                        session.windows.push(window);
                    }
                }
            }
            // What each case was sent after, without waiting.
            let groups: Vec<Vec<usize>> = match shape {
                Shape::Batch => session.steps.clone(),
                Shape::Pipeline => session.windows.iter().map(|w| w.concat()).collect(),
                _ => Vec::new(),
            };
            for group in groups {
                for (i, &id) in group.iter().enumerate() {
                    plan.cases[id].after = group[..i].to_vec();
                }
            }
            plan.sessions.push(session);
        }
    }
    plan
}

// ---------------------------------------------------------------------------------------
// Running the plan.

/// Runs `tests/drivers/differential_client.py` with `input` on its stdin (the harness's
/// runner passes no input); returns its report.
fn driver(conninfo: &str, input: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/differential_client.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(conninfo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let body = serde_json::to_vec(input).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "the driver failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("the driver's report: {e}: {stdout}"))
}

/// The driver's plan for the libpq sessions (every shape but Batch).
fn libpq_plan(plan: &Plan) -> Value {
    let case_json =
        |id: usize| json!({"id": id, "sql": plan.cases[id].sql, "via": plan.cases[id].via});
    let sessions: Vec<Value> = plan
        .sessions
        .iter()
        .filter(|s| s.shape != Shape::Batch)
        .map(|s| {
            let options: Vec<String> = s.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let steps: Value = match s.shape {
                Shape::Pipeline => s
                    .windows
                    .iter()
                    .map(|w| {
                        w.iter()
                            .map(|seg| seg.iter().map(|&id| case_json(id)).collect::<Vec<_>>())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
                    .into(),
                _ => s
                    .steps
                    .iter()
                    .map(|step| case_json(step[0]))
                    .collect::<Vec<_>>()
                    .into(),
            };
            let shape = match s.shape {
                Shape::Simple => "simple",
                Shape::Extended => "extended",
                _ => "pipeline",
            };
            json!({"name": s.name, "shape": shape, "options": options.join(" "), "steps": steps})
        })
        .collect();
    json!({"mode": "gateway", "sessions": sessions})
}

/// What the driver saw in the libpq sessions, and which of them broke off.
fn libpq_report(report: &Value) -> (HashMap<usize, Seen>, Vec<String>) {
    let mut seen = HashMap::new();
    let mut broken = Vec::new();
    for session in report["sessions"].as_array().unwrap() {
        if let Some(failure) = session["failure"].as_str() {
            broken.push(format!("session {}: {failure}", session["name"]));
        }
        for case in session["cases"].as_array().unwrap() {
            seen.insert(case["id"].as_u64().unwrap() as usize, seen_of(case));
        }
    }
    (seen, broken)
}

fn seen_of(case: &Value) -> Seen {
    Seen {
        results: case["results"]
            .as_array()
            .map(|a| a.iter().map(got_of).collect())
            .unwrap_or_default(),
        scs: case["scs"].as_str().unwrap_or("?").to_string(),
        enc: case["enc"].as_str().unwrap_or("?").to_string(),
        inflight: case["inflight"].as_bool().unwrap_or(false),
    }
}

/// A client speaking the protocol itself, to write several Query messages at once (libpq's
/// pipeline mode only pipelines the extended protocol).
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    scs: String,
    enc: String,
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The SQLSTATE in an ErrorResponse body.
fn error_code(body: &[u8]) -> String {
    let mut fields = body;
    while let Some((&kind, rest)) = fields.split_first() {
        if kind == 0 {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if kind == b'C' {
            return String::from_utf8_lossy(&rest[..end]).into_owned();
        }
        fields = &rest[(end + 1).min(rest.len())..];
    }
    "?".into()
}

impl Raw {
    async fn connect(port: u16, options: &[(String, String)]) -> Result<Raw, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            scs: "?".into(),
            enc: "?".into(),
        };
        let mut body = 196608i32.to_be_bytes().to_vec();
        let fixed = [("user", "alice"), ("database", "appdb")];
        let pairs = fixed
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(options.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in pairs {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.write(&packet).await?;
        loop {
            let (tag, body) = raw.message().await?;
            match tag {
                b'R' => match i32::from_be_bytes(body[..4].try_into().unwrap()) {
                    0 => {}
                    3 => {
                        let mut password = KEY.as_bytes().to_vec();
                        password.push(0);
                        raw.write(&frame(b'p', &password)).await?;
                    }
                    other => return Err(format!("unexpected authentication request {other}")),
                },
                b'S' => raw.observe(&body),
                b'E' => return Err(format!("sign-in refused: {}", error_code(&body))),
                b'Z' => return Ok(raw),
                _ => {}
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    async fn message(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..=len].to_vec();
                    self.buf.drain(..=len);
                    return Ok((tag, body));
                }
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
                .await
                .map_err(|_| "no answer in 30 s".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the gateway closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn observe(&mut self, body: &[u8]) {
        let mut parts = body.split(|&b| b == 0);
        let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        match name.as_str() {
            "standard_conforming_strings" => self.scs = value,
            "client_encoding" => self.enc = value,
            _ => {}
        }
    }

    /// Writes every text as its own Query message in one write, then reads as many
    /// ReadyForQuery. Returns what each got; a broken connection ends the list early.
    async fn batch(&mut self, sqls: &[&str]) -> (Vec<Vec<Got>>, Option<String>) {
        let mut bytes = Vec::new();
        for sql in sqls {
            let mut body = sql.as_bytes().to_vec();
            body.push(0);
            bytes.extend_from_slice(&frame(b'Q', &body));
        }
        if let Err(e) = self.write(&bytes).await {
            return (Vec::new(), Some(e));
        }
        let mut out = Vec::new();
        for _ in sqls {
            let mut results = Vec::new();
            loop {
                let (tag, body) = match self.message().await {
                    Ok(m) => m,
                    Err(e) => {
                        out.push(results);
                        return (out, Some(e));
                    }
                };
                match tag {
                    b'C' => {
                        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                        results.push(Got {
                            s: "command_ok".into(),
                            tag: Some(String::from_utf8_lossy(&body[..end]).into_owned()),
                            code: None,
                            stage: None,
                        });
                    }
                    b'I' => results.push(Got {
                        s: "empty_query".into(),
                        tag: None,
                        code: None,
                        stage: None,
                    }),
                    b'E' => results.push(Got {
                        s: "fatal_error".into(),
                        tag: None,
                        code: Some(error_code(&body)),
                        stage: None,
                    }),
                    b'S' => self.observe(&body),
                    b'Z' => break,
                    _ => {}
                }
            }
            out.push(results);
        }
        (out, None)
    }
}

/// Runs the Batch sessions.
async fn run_raw(port: u16, plan: &Plan) -> (HashMap<usize, Seen>, Vec<String>) {
    let mut seen = HashMap::new();
    let mut broken = Vec::new();
    for session in plan.sessions.iter().filter(|s| s.shape == Shape::Batch) {
        let mut raw = match Raw::connect(port, &session.options).await {
            Ok(raw) => raw,
            Err(e) => {
                broken.push(format!("session {}: {e}", session.name));
                continue;
            }
        };
        for batch in &session.steps {
            let (scs, enc) = (raw.scs.clone(), raw.enc.clone());
            let sqls: Vec<&str> = batch
                .iter()
                .map(|&id| plan.cases[id].sql.as_str())
                .collect();
            let (got, failure) = raw.batch(&sqls).await;
            for (position, results) in got.into_iter().enumerate() {
                seen.insert(
                    batch[position],
                    Seen {
                        results,
                        scs: scs.clone(),
                        enc: enc.clone(),
                        inflight: position > 0,
                    },
                );
            }
            if let Some(e) = failure {
                broken.push(format!("session {}: {e}", session.name));
                break;
            }
        }
        let _ = raw.write(&frame(b'X', &[])).await;
    }
    (seen, broken)
}

// ---------------------------------------------------------------------------------------
// Judging.

/// Whether the server's command tag `tag` is what the decided command `command` answers.
/// Strict, and only for the commands this suite generates: anything else fails, named.
fn tag_fits(command: &str, tag: &str) -> bool {
    let words: Vec<&str> = tag.split(' ').collect();
    let counts = |from: usize, n: usize| {
        words.len() == from + n
            && words[from..]
                .iter()
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
    };
    match command {
        // CREATE TABLE AS answers with the rows it selected.
        "SELECT" | "CREATE TABLE AS" => words[0] == "SELECT" && counts(1, 1),
        "INSERT" => words[0] == "INSERT" && counts(1, 2) && words[1] == "0",
        "UPDATE" => words[0] == "UPDATE" && counts(1, 1),
        "DELETE" => words[0] == "DELETE" && counts(1, 1),
        "SET" | "RESET" | "SHOW" | "EXPLAIN" | "DO" => tag == command,
        _ => false,
    }
}

/// Rows a tag says were added to (INSERT) or taken from (DELETE) the scratch table.
fn delta(tag: &str) -> i64 {
    let words: Vec<&str> = tag.split(' ').collect();
    let n = |w: Option<&&str>| w.and_then(|w| w.parse::<i64>().ok()).unwrap_or(0);
    match words[0] {
        "INSERT" => n(words.get(2)),
        "DELETE" => -n(words.get(1)),
        _ => 0,
    }
}

/// How a failing check names the case: enough to run it again by hand.
fn label(plan: &Plan, id: usize, seen: Option<&Seen>) -> String {
    let case = &plan.cases[id];
    let setting = match seen {
        Some(s) => format!(
            "standard_conforming_strings={} client_encoding={}{}",
            s.scs,
            s.enc,
            if s.inflight {
                " (heard before sending; statements were in flight)"
            } else {
                ""
            }
        ),
        None => "setting unknown (the client never got to it)".into(),
    };
    let mut out = format!(
        "[{} via {} | session {} | {setting}] text {:?}",
        case.shape.name(),
        case.via,
        case.session,
        case.sql
    );
    if !case.after.is_empty() {
        let earlier: Vec<&str> = case
            .after
            .iter()
            .map(|&e| plan.cases[e].sql.as_str())
            .collect();
        out.push_str(&format!(", sent right after {earlier:?}"));
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The case a command entry's SQL names by its marker.
fn marker(sql: &str) -> Option<usize> {
    sql.strip_prefix("/*c")?.split("*/").next()?.parse().ok()
}

/// Whether `sql` is made of other commands, or parses in one reading only, depending on
/// whether backslashes escape: a gateway reading under the wrong setting would decide it
/// wrongly. Counted to show the texts discriminate, never used to judge.
fn readings_differ(sql: &str) -> bool {
    let read = |backslash_escapes| {
        let a = gatehouse_sql::analyze_with(sql, gatehouse_sql::Lexical { backslash_escapes });
        let commands: Vec<String> = a.statements.into_iter().map(|s| s.command).collect();
        (commands, a.unparsed.is_some())
    };
    read(false) != read(true)
}

/// Counts for the summary, per shape and the setting the client had heard.
#[derive(Default)]
struct Tally {
    tried: usize,
    allowed: usize,
    server_errors: usize,
    unreadable: usize,
    denied: usize,
    unparsed: usize,
    dropped: usize,
    /// Allowed texts holding a backslash, decided while statements were in flight.
    inflight_backslash: usize,
    /// Allowed texts that read differently under the other setting.
    discriminating: usize,
}

impl Tally {
    fn add(&mut self, t: &Tally) {
        self.tried += t.tried;
        self.allowed += t.allowed;
        self.server_errors += t.server_errors;
        self.unreadable += t.unreadable;
        self.denied += t.denied;
        self.unparsed += t.unparsed;
        self.dropped += t.dropped;
        self.inflight_backslash += t.inflight_backslash;
        self.discriminating += t.discriminating;
    }
}

/// What judging the ledger against what was sent found.
#[derive(Default)]
struct Verdict<'a> {
    failures: Vec<String>,
    tallies: BTreeMap<(Shape, String, String), Tally>,
    /// Per unit (one Query, one Sync): the rows its recorded statements added or removed,
    /// and whether the server failed anything in it (then all of it rolled back).
    units: HashMap<&'a str, (i64, bool)>,
    /// Texts refused by policy or as unparsed, to be run directly: (case, decided
    /// commands, unparsed).
    refused: Vec<(usize, Vec<String>, bool)>,
}

/// Judges every case against its `command` and `result` entries and what the client saw.
fn judge<'a>(
    plan: &'a Plan,
    pool: &[Text],
    seen: &HashMap<usize, Seen>,
    entries: &[Value],
) -> Verdict<'a> {
    let mut v = Verdict::default();

    // No reading diverged badly enough for the gateway's own cross-check to see it.
    for mismatch in of_kind(entries, "integrity.mismatch") {
        let command = mismatch["data"]["command"].as_u64().unwrap_or(0) as usize;
        let case = entries
            .get(command)
            .and_then(|c| c["data"]["sql"].as_str())
            .and_then(marker)
            .filter(|&id| id < plan.cases.len())
            .map(|id| label(plan, id, seen.get(&id)));
        v.failures.push(format!(
            "DIVERGENCE: integrity.mismatch {}: {}",
            mismatch["data"],
            case.unwrap_or_default()
        ));
    }

    let mut results: HashMap<u64, Vec<&Value>> = HashMap::new();
    for r in of_kind(entries, "result") {
        results
            .entry(r["data"]["command"].as_u64().unwrap())
            .or_default()
            .push(r);
    }
    let mut commands_of: HashMap<usize, Vec<&Value>> = HashMap::new();
    for c in of_kind(entries, "command") {
        match c["data"]["sql"].as_str().and_then(marker) {
            Some(id) if id < plan.cases.len() => commands_of.entry(id).or_default().push(c),
            _ => v.failures.push(format!(
                "a command entry no case of the test accounts for: {c}"
            )),
        }
    }

    // Units in which the client has seen an error so far (cases are judged in the order
    // they were sent).
    let mut failed_before: HashSet<&str> = HashSet::new();
    for (id, case) in plan.cases.iter().enumerate() {
        let Some(seen_here) = seen.get(&id) else {
            // Never sent: its session broke off earlier, which is a failure of its own.
            continue;
        };
        let what = label(plan, id, Some(seen_here));
        let text = case.text.map(|t| &pool[t]);
        let tally = v
            .tallies
            .entry((case.shape, seen_here.scs.clone(), seen_here.enc.clone()))
            .or_default();
        tally.tried += 1;
        let client_tags: Vec<String> = seen_here
            .results
            .iter()
            .filter_map(|g| g.tag.clone())
            .collect();
        let client_code = seen_here.results.iter().find_map(|g| g.code.clone());
        let unit = case.unit.as_str();
        let commands = commands_of.get(&id).cloned().unwrap_or_default();
        if commands.is_empty() {
            // Dropped unread by the gateway after its refusal of an earlier message in the
            // segment, or a prepared case whose Parse the server refused (never executed).
            let aborted = !seen_here.results.is_empty()
                && seen_here.results.iter().all(|g| g.s == "pipeline_aborted");
            let failed_prepare = case.via == "prepared"
                && seen_here
                    .results
                    .iter()
                    .any(|g| g.stage.as_deref() == Some("prepare"));
            if aborted || failed_prepare {
                tally.dropped += 1;
                // A Parse the server refused aborts the rest of its segment.
                v.units.entry(unit).or_default().1 |= failed_prepare && client_code.is_some();
            } else {
                v.failures.push(format!(
                    "no command entry for a text the client sent (it saw {:?}): {what}",
                    seen_here.results
                ));
            }
            if client_code.is_some() {
                failed_before.insert(unit);
            }
            continue;
        }
        if commands.len() > 1 {
            v.failures.push(format!(
                "{} command entries for one text sent once: {what}",
                commands.len()
            ));
        }
        let data = &commands[0]["data"];
        let decided = strings(&data["commands"]);
        let index = commands[0]["i"].as_u64().unwrap();
        let answered = results.get(&index).cloned().unwrap_or_default();
        match data["decision"]["outcome"].as_str() {
            Some("allow") => {
                tally.allowed += 1;
                let [result] = answered.as_slice() else {
                    v.failures.push(format!(
                        "{} result entries for an allowed statement: {what}",
                        answered.len()
                    ));
                    continue;
                };
                let tags = strings(&result["data"]["tags"]);
                let error = result["data"]["error"].as_str().map(String::from);
                let skipped = result["data"]["skipped"].as_bool().unwrap_or(false);
                tally.server_errors += usize::from(error.is_some());
                tally.inflight_backslash +=
                    usize::from(seen_here.inflight && case.sql.contains('\\'));
                tally.discriminating += usize::from(readings_differ(&case.sql));
                // One to one and in order; all of them unless the server stopped (or
                // skipped the statement after an earlier error in its pipeline).
                let fits = tags.len() <= decided.len()
                    && tags.iter().zip(&decided).all(|(t, c)| tag_fits(c, t));
                let complete = error.is_some() || tags.len() == decided.len();
                if !fits || !(complete || skipped) || (skipped && !tags.is_empty()) {
                    v.failures.push(format!(
                        "DIVERGENCE: decided {decided:?}, the server answered {tags:?} (error {error:?}, skipped {skipped}): {what}"
                    ));
                }
                // A text the gateway read whole that the server could not parse: the two
                // readings differ. (A DO body is plpgsql's to parse, when it runs; a Parse
                // takes one statement.)
                let failing = decided.get(tags.len()).map(String::as_str);
                if error.as_deref() == Some("42601")
                    && tags.is_empty()
                    && (case.via == "query" || decided.len() <= 1)
                    && failing != Some("DO")
                {
                    v.failures.push(format!(
                        "DIVERGENCE: the gateway read {decided:?} where the server found a syntax error: {what}"
                    ));
                }
                // The client got what the ledger says it got.
                if client_tags != tags || client_code != error {
                    v.failures.push(format!(
                        "the client saw tags {client_tags:?} and error {client_code:?}, the ledger recorded {tags:?} and {error:?}: {what}"
                    ));
                }
                let effect = v.units.entry(unit).or_default();
                effect.0 += tags.iter().map(|t| delta(t)).sum::<i64>();
                effect.1 |= error.is_some();
            }
            Some("deny") => {
                let unreadable = data["decision"]["unreadable"].as_str();
                let unparsed = !data["unparsed"].is_null();
                match unreadable {
                    Some(_) => tally.unreadable += 1,
                    None if unparsed => tally.unparsed += 1,
                    None => tally.denied += 1,
                }
                // The server never saw it.
                if !answered.is_empty() {
                    v.failures.push(format!(
                        "a refused statement has result entries {answered:?}: {what}"
                    ));
                }
                // Text the parser rejected is answered with its syntax error.
                let expected = unreadable
                    .or(data["syntax_error"]["code"].as_str())
                    .unwrap_or("42501");
                // In the extended protocol the server answers the Parse before the
                // gateway's refusal of the Execute is due: a text it cannot take as one
                // statement shows the client the server's error, and the refusal is not sent.
                let parse_failed = case.via != "query"
                    && unreadable.is_none()
                    && (unparsed || decided.len() > 1)
                    && client_code.as_deref().is_some_and(|c| c != expected);
                // Nor is a refusal sent for what the server discards after an error earlier
                // in the segment: the gateway decided before it heard of the error.
                let discarded = !seen_here.results.is_empty()
                    && seen_here.results.iter().all(|g| g.s == "pipeline_aborted")
                    && failed_before.contains(unit);
                if (client_code.as_deref() != Some(expected) && !parse_failed && !discarded)
                    || !client_tags.is_empty()
                {
                    v.failures.push(format!(
                        "refused ({expected}) but the client saw {:?}: {what}",
                        seen_here.results
                    ));
                }
                // A refusal fails at the server too (the gateway sends it a stand-in that
                // must fail), and so does a failed Parse: either way what ran before it in
                // its unit is rolled back, as after any error.
                v.units.entry(unit).or_default().1 = true;
                if let Some(code) = unreadable {
                    // Only while statements are in flight may a setting change unheard,
                    // and only a backslash, a `U&''` string (an error without standard
                    // strings) or a non-ASCII byte can read differently then.
                    if !seen_here.inflight {
                        v.failures.push(format!(
                            "refused as unreadable ({code}) with nothing in flight: {what}"
                        ));
                    }
                    let alike_by_construction = text.is_some_and(|t| !t.hostile)
                        && case.sql.is_ascii()
                        && !case.sql.to_ascii_uppercase().contains("U&");
                    let plain = !case.sql.contains('\\')
                        && case.sql.is_ascii()
                        && !case.sql.to_ascii_uppercase().contains("U&'");
                    if alike_by_construction || plain {
                        v.failures.push(format!(
                            "refused as unreadable ({code}), but it reads alike under either setting: {what}"
                        ));
                    }
                } else {
                    v.refused.push((id, decided, unparsed));
                }
            }
            other => v.failures.push(format!("decision {other:?}: {what}")),
        }
        if client_code.is_some() {
            failed_before.insert(unit);
        }
    }
    v
}

/// What the server made of a text run directly: the setting, its tags, its SQLSTATE.
type Reading = (String, Vec<String>, Option<String>);

/// What the gateway refused by policy or as unparsed, the server reads as the gateway did:
/// each text run directly under the settings the gateway read it with, in a transaction
/// rolled back. A text sent while a change of setting was in flight may have been read
/// under either value (the gateway reads it under the new one if the change completed
/// before the text arrived), so either reading may match.
fn judge_direct(
    gw: &Gateway,
    plan: &Plan,
    seen: &HashMap<usize, Seen>,
    refused: &[(usize, Vec<String>, bool)],
) -> Vec<String> {
    // (refused index, standard_conforming_strings) per direct run.
    let mut runs: Vec<(usize, &str)> = Vec::new();
    for (r, (id, _, _)) in refused.iter().enumerate() {
        let heard = seen[id].scs.as_str();
        runs.push((r, heard));
        let changing = seen[id].inflight
            && plan.cases[*id]
                .after
                .iter()
                .any(|&e| plan.cases[e].text.is_none());
        if changing {
            runs.push((r, if heard == "on" { "off" } else { "on" }));
        }
    }
    let cases: Vec<Value> = runs
        .iter()
        .enumerate()
        .map(|(n, (r, scs))| {
            let id = refused[*r].0;
            json!({"id": n, "sql": plan.cases[id].sql, "via": "query", "scs": scs, "enc": seen[&id].enc})
        })
        .collect();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app dbname=appdb password=app-secret",
        gw.pg.port
    );
    let report = driver(&conninfo, &json!({"mode": "direct", "cases": cases}));
    let mut readings: Vec<Vec<Reading>> = vec![Vec::new(); refused.len()];
    for c in report["cases"].as_array().unwrap() {
        let (r, scs) = runs[c["id"].as_u64().unwrap() as usize];
        let server = seen_of(c);
        assert_eq!(server.scs, scs, "the direct run could not set the setting");
        let tags: Vec<String> = server
            .results
            .iter()
            .filter_map(|g| g.tag.clone())
            .collect();
        let error = server.results.iter().find_map(|g| g.code.clone());
        readings[r].push((scs.to_string(), tags, error));
    }
    let mut failures = Vec::new();
    for ((id, decided, unparsed), readings) in refused.iter().zip(&readings) {
        let agrees = |(_, tags, error): &Reading| {
            if *unparsed {
                error.is_some() && tags.is_empty()
            } else {
                tags.len() <= decided.len()
                    && tags.iter().zip(decided).all(|(t, c)| tag_fits(c, t))
                    && (error.is_some() || tags.len() == decided.len())
            }
        };
        if readings.is_empty() || !readings.iter().any(agrees) {
            let what = label(plan, *id, seen.get(id));
            let decision = if *unparsed {
                "could not parse".to_string()
            } else {
                format!("refused as {decided:?}")
            };
            failures.push(format!(
                "DIVERGENCE: the gateway {decision} a text the server runs as (setting, tags, error) {readings:?}: {what}"
            ));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_ledger_decided_is_what_the_server_ran() {
    let started = Instant::now();
    let gw = gateway_on(Setup {
        // The reading is what is checked, not durability: batched appends keep thousands
        // of statements quick.
        durability: Durability::Batched,
        // Result summaries are what is compared; recording result data would only cost.
        record_cap: None,
        ..Setup::default()
    })
    .await;
    gw.pg
        .psql(
            "appdb",
            &format!(
                "SET ROLE app; \
                 CREATE TABLE scratch (id int GENERATED BY DEFAULT AS IDENTITY (START WITH 1000) PRIMARY KEY, note text); \
                 INSERT INTO scratch (id, note) SELECT g, 'sentinel' FROM generate_series(1, {SENTINELS}) g"
            ),
        )
        .unwrap();

    let pool = pool();
    let plan = plan(&pool);

    // The raw-protocol sessions run alongside the libpq ones.
    let input = libpq_plan(&plan);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=alice dbname=appdb password={KEY}",
        gw.port
    );
    let libpq = tokio::task::spawn_blocking(move || driver(&conninfo, &input));
    let (raw_seen, raw_broken) = run_raw(gw.port, &plan).await;
    let (mut seen, broken) = libpq_report(&libpq.await.unwrap());
    seen.extend(raw_seen);
    let sent = started.elapsed();

    let entries = gw.entries().await;
    let mut verdict = judge(&plan, &pool, &seen, &entries);
    let mut failures: Vec<String> = broken
        .iter()
        .chain(&raw_broken)
        .map(|b| format!("a session broke off: {b}"))
        .collect();
    failures.append(&mut verdict.failures);
    failures.extend(judge_direct(&gw, &plan, &seen, &verdict.refused));

    // The scratch table holds what the recorded statements of committed units did to it,
    // and nothing refused touched it.
    let expected: i64 = SENTINELS
        + verdict
            .units
            .values()
            .filter(|(_, failed)| !failed)
            .map(|(rows, _)| rows)
            .sum::<i64>();
    let count = |sql: &str| -> i64 { gw.pg.psql("appdb", sql).unwrap().trim().parse().unwrap() };
    let rows = count("SELECT count(*) FROM scratch");
    if rows != expected {
        failures.push(format!(
            "the scratch table has {rows} rows; the recorded statements of committed units leave {expected}"
        ));
    }
    let sentinels = count("SELECT count(*) FROM scratch WHERE id <= 10 AND note = 'sentinel'");
    if sentinels != SENTINELS {
        failures.push(format!(
            "{sentinels} of the {SENTINELS} rows no allowed statement touches are left as they were: a refused DELETE or UPDATE ran"
        ));
    }
    let pwned = count("SELECT count(*) FROM scratch WHERE note = 'pwned'");
    if pwned != 0 {
        failures.push(format!(
            "{pwned} rows were set by an UPDATE the gateway refused"
        ));
    }

    // One line: per shape and setting heard, then the totals.
    let mut total = Tally::default();
    let mut parts = Vec::new();
    for ((shape, scs, enc), t) in &verdict.tallies {
        total.add(t);
        parts.push(format!(
            "{} scs={scs} {enc}: {} tried, {} allowed, {} unreadable, {} denied, {} unparsed",
            shape.short(),
            t.tried,
            t.allowed,
            t.unreadable,
            t.denied,
            t.unparsed,
        ));
        if t.tried >= 20 && t.allowed == 0 {
            failures.push(format!(
                "{} scs={scs} {enc}: nothing was allowed",
                shape.short()
            ));
        }
    }
    eprintln!(
        "differential: {} texts, {} sent in {sent:.1?}: {} allowed ({} reading differently under the other setting, {} with backslashes decided in flight, {} failed at the server), {} refused as unreadable, {} refused by policy, {} refused as unparsed, {} dropped after a refusal or error in their pipeline | {}",
        pool.len(),
        total.tried,
        total.allowed,
        total.discriminating,
        total.inflight_backslash,
        total.server_errors,
        total.unreadable,
        total.denied,
        total.unparsed,
        total.dropped,
        parts.join(" | ")
    );
    // The texts must exercise what the suite is about.
    if total.unreadable == 0 || total.denied == 0 || total.unparsed == 0 {
        failures
            .push("the texts drew no refusal of some kind (unreadable, policy, unparsed)".into());
    }
    if total.discriminating < 100 || total.inflight_backslash == 0 {
        failures.push(format!(
            "too few allowed texts that tell the settings apart ({}) or that were decided in flight with backslashes ({})",
            total.discriminating, total.inflight_backslash
        ));
    }

    let _ = gw.stop.send(true);
    assert!(
        failures.is_empty(),
        "{} failures (each names the text, the shape and the setting):\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The tag mapping the suite judges by is strict: a tag answers only the command it names.
#[test]
fn tags_answer_only_their_own_commands() {
    for (command, tag) in [
        ("SELECT", "SELECT 3"),
        ("CREATE TABLE AS", "SELECT 1"),
        ("INSERT", "INSERT 0 2"),
        ("UPDATE", "UPDATE 0"),
        ("DELETE", "DELETE 15"),
        ("SET", "SET"),
        ("RESET", "RESET"),
        ("SHOW", "SHOW"),
        ("EXPLAIN", "EXPLAIN"),
        ("DO", "DO"),
    ] {
        assert!(tag_fits(command, tag), "{command} answers {tag}");
    }
    for (command, tag) in [
        ("SELECT", "DELETE 1"),
        ("SELECT", "SELECT"),
        ("SELECT", "SELECT 1 2"),
        ("INSERT", "INSERT 1 1"),
        ("DELETE", "UPDATE 1"),
        ("SET", "RESET"),
        ("SET", "SELECT 1"),
        // Commands this suite never generates are never taken as answered.
        ("TRANSACTION", "BEGIN"),
        ("DROP TABLE", "DROP TABLE"),
    ] {
        assert!(!tag_fits(command, tag), "{command} does not answer {tag}");
    }
    assert_eq!(
        delta("INSERT 0 2") + delta("DELETE 3") + delta("UPDATE 4"),
        -1
    );
}
