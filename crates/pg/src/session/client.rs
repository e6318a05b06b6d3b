//! Client messages on the relay: each frame handled in turn, the statements in them read
//! under the session's lexical settings (each SQL `EXECUTE` as what it runs), then
//! admitted or refused with a stand-in the server must fail.

use std::sync::Arc;

use bytes::BytesMut;
use gatehouse_sql::{Analysis, PreparedUse};
use gatehouse_wire_pg::backend;
use gatehouse_wire_pg::frontend::{self, Frontend};
use gatehouse_wire_pg::split_frame;
use serde_json::{Value, json};

use super::decide::Io;
use super::{ClientStream, Session};
use crate::error::PgError;
use crate::lexical::Lexicon;
use crate::prepared::{Lookup, Op, Pending, Portal, Prepared};
use crate::tracker::{Expect, Work};

/// What the server is sent in place of a refused simple query: text that cannot parse,
/// and says in the server's log why it came.
const STAND_IN_QUERY: &[u8] = b"GATEHOUSE REFUSED THIS STATEMENT\0";
/// What the server is sent in place of a refused extended-protocol message: an Execute of
/// a portal no client can have made (its name has a space and a colon).
const STAND_IN_EXECUTE: &[u8] = b"gatehouse: refused\0\0\0\0\0";

/// How many distinct statement texts a session keeps analysed, and the longest text kept:
/// clients repeat the same few statements (simple queries, unnamed Parse), so a small cache
/// takes the parser off the hot path without letting one session hold much memory.
const RECENT_STATEMENTS: usize = 64;
const RECENT_MAX_SQL: usize = 4096;

/// The client message a statement came in, for the `command` entry of a refusal: made
/// into JSON only when such an entry is written, off the hot path.
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    Simple,
    Parse(&'a str),
    Execute {
        portal: &'a str,
        statement: Option<&'a str>,
    },
}

impl Via<'_> {
    fn detail(self) -> Value {
        match self {
            Via::Simple => json!({"protocol": "simple"}),
            Via::Parse(name) => json!({"protocol": "extended", "parse": name}),
            Via::Execute { portal, statement } => {
                json!({"protocol": "extended", "portal": portal, "statement": statement})
            }
        }
    }
}

pub(super) use gatehouse_core::Refusal;

/// The one place a refusal becomes PostgreSQL's error: its SQLSTATE, and the character of
/// the statement it points at (a syntax error's).
pub(super) fn sqlstate(refusal: &Refusal) -> (&'static str, Option<u32>) {
    let code = match refusal {
        Refusal::Denied { .. }
        | Refusal::NoApprovers { .. }
        | Refusal::ReviewDenied { .. }
        | Refusal::ReviewEnded { .. } => "42501",
        Refusal::TooManyOpenReviews { .. } => "53400",
        Refusal::ReviewNotOpened { .. } | Refusal::LedgerUnavailable { .. } => "58000",
        Refusal::ReviewTimedOut { .. } | Refusal::ReviewCancelled { .. } => "57014",
        Refusal::GatewayStopping { .. } => "57P01",
        Refusal::Unreadable { .. } => "55000",
        Refusal::SessionLimit { .. } => "54000",
        Refusal::TooComplex { .. } => "54001",
        Refusal::TargetFailed { .. } => "08006",
        Refusal::AsTheTargetWould { code, position, .. } => return (code, *position),
    };
    (code, None)
}

impl Session {
    /// Handles every complete client frame in `buf`. Returns true on Terminate.
    pub(super) async fn handle_client_frames<S: ClientStream>(
        &mut self,
        client: &mut S,
        buf: &mut BytesMut,
        to_server: &mut Vec<u8>,
        to_client: &mut Vec<u8>,
    ) -> Result<bool, PgError> {
        while let Some(len) = split_frame(buf).map_err(PgError::client_protocol)? {
            let frame = buf.split_to(len);
            self.totals.bytes_from_client += len as u64;
            // In another client encoding, statements are read as the characters the server
            // will see; the server gets the client's bytes.
            let readable = self.lexicon.encoding.readable_frame(&frame);
            let message = match frontend::parse(readable.as_deref().unwrap_or(&frame)) {
                Ok(m) => m,
                Err(e) => {
                    backend::error_response(
                        "FATAL",
                        "08P01",
                        &format!("gatehouse: {e}"),
                        to_client,
                    );
                    return Ok(true);
                }
            };
            if self.skip_until_sync && message != Frontend::Sync {
                continue;
            }
            match message {
                Frontend::Query(sql) => {
                    let read = self.read_statement(sql, Via::Simple).await;
                    let admitted = match read {
                        Ok(prepared) => {
                            let io = Io {
                                client: &mut *client,
                                to_server: &mut *to_server,
                                to_client: &mut *to_client,
                            };
                            self.admit(&prepared, json!({"protocol": "simple"}), io)
                                .await
                                .map(|index| (index, prepared))
                        }
                        Err(refusal) => Err(refusal),
                    };
                    match admitted {
                        Ok((index, prepared)) => {
                            to_server.extend_from_slice(&frame);
                            let shape = self.shape(&prepared, None);
                            self.tracker.push(Expect::Query(
                                Work::new(index).with_shape(shape).deciding(prepared),
                            ));
                        }
                        Err(refusal) => self.refuse(refusal, true, to_server),
                    }
                }
                Frontend::Parse { name, query } => {
                    let refusal = if !name.is_empty()
                        && self.names.statement_count() >= crate::prepared::MAX_STATEMENTS
                    {
                        let message = format!(
                            "gatehouse: this session holds {} prepared statements, the most it may; close some first",
                            crate::prepared::MAX_STATEMENTS
                        );
                        Some(Refusal::SessionLimit { message })
                    } else {
                        match self.read_text(query, Via::Parse(name)).await {
                            Ok(prepared) => {
                                to_server.extend_from_slice(&frame);
                                self.tracker.push(Expect::Parse(Op::Parse {
                                    name: name.to_string(),
                                    prepared,
                                }));
                                None
                            }
                            Err(refusal) => Some(refusal),
                        }
                    };
                    if let Some(refusal) = refusal {
                        self.refuse(refusal, false, to_server);
                    }
                }
                Frontend::Bind { portal, statement } => {
                    let formats = match self.masking {
                        // A malformed Bind is refused by the server; no rows follow it.
                        Some(_) => frontend::bind_result_formats(&frame[5..]).unwrap_or_default(),
                        None => Vec::new(),
                    };
                    // What the statement will be when the Bind reaches the server; a portal
                    // of a statement the gateway cannot name is refused at Execute.
                    let prepared = match self.names.statement(statement, self.tracker.pending()) {
                        Lookup::Known(prepared) => Some(prepared),
                        Lookup::Unknown | Lookup::Uncertain => None,
                    };
                    let bound = Portal {
                        statement: statement.to_string(),
                        prepared,
                        formats,
                    };
                    to_server.extend_from_slice(&frame);
                    self.tracker
                        .push(Expect::Bind(Op::Bind(portal.to_string(), bound)));
                }
                Frontend::Execute { portal, .. } => {
                    let bound = match self.names.portal(portal, self.tracker.pending()) {
                        Lookup::Known(Portal {
                            statement,
                            prepared: Some(prepared),
                            formats,
                        }) => Ok((statement, prepared, formats)),
                        Lookup::Known(Portal { statement, .. }) => Err(Refusal::Unreadable {
                            message: format!(
                                "gatehouse: portal \"{portal}\" was bound from statement \"{statement}\", which the gateway could not name when it was bound (it was unknown, or being redefined by statements still in flight)"
                            ),
                        }),
                        Lookup::Unknown => Err(Refusal::AsTheTargetWould {
                            code: "34000",
                            message: format!("portal \"{portal}\" does not exist"),
                            position: None,
                        }),
                        Lookup::Uncertain => Err(Refusal::Unreadable {
                            message: format!(
                                "gatehouse: portal \"{portal}\" is being redefined by statements still in flight; send its Execute after they complete"
                            ),
                        }),
                    };
                    let bound = match bound {
                        Ok((statement, prepared, formats)) => {
                            let via = Via::Execute {
                                portal,
                                statement: Some(&statement),
                            };
                            match self.resolve_executes(&prepared, via).await {
                                Ok(prepared) => Ok((statement, prepared, formats)),
                                Err(refusal) => Err(refusal),
                            }
                        }
                        Err(refusal) => {
                            let via = Via::Execute {
                                portal,
                                statement: None,
                            };
                            self.record_unreadable(via, "", &refusal).await;
                            Err(refusal)
                        }
                    };
                    let admitted = match bound {
                        Ok((statement, prepared, formats)) => {
                            let detail = json!({"protocol": "extended", "statement": statement, "portal": portal});
                            let io = Io {
                                client: &mut *client,
                                to_server: &mut *to_server,
                                to_client: &mut *to_client,
                            };
                            self.admit(&prepared, detail, io)
                                .await
                                .map(|index| (index, statement, prepared, formats))
                        }
                        Err(refusal) => Err(refusal),
                    };
                    match admitted {
                        Ok((index, statement, prepared, formats)) => {
                            to_server.extend_from_slice(&frame);
                            let shape = self.shape(&prepared, Some((statement, formats)));
                            self.tracker.push(Expect::Execute(
                                Work::new(index).with_shape(shape).deciding(prepared),
                            ));
                        }
                        Err(refusal) => self.refuse(refusal, false, to_server),
                    }
                }
                Frontend::Describe { kind, name } => {
                    to_server.extend_from_slice(&frame);
                    self.tracker
                        .push(Expect::Describe((kind == b'S').then(|| name.to_string())));
                }
                Frontend::Close { kind, name } => {
                    // Takes effect when the server confirms it (CloseComplete).
                    to_server.extend_from_slice(&frame);
                    self.tracker.push(Expect::Close(Op::Close {
                        kind,
                        name: name.to_string(),
                    }));
                }
                Frontend::Sync => {
                    self.skip_until_sync = false;
                    to_server.extend_from_slice(&frame);
                    self.tracker.push(Expect::Sync);
                }
                Frontend::FunctionCall => {
                    // A function call runs code on the server: recorded like a statement, and
                    // decided as text the parser cannot read (it has no SQL).
                    let prepared = Prepared::from_analysis(
                        "",
                        self.lexicon.lexical,
                        Analysis {
                            statements: Vec::new(),
                            unparsed: Some("a fast-path function call carries no SQL".into()),
                            syntax_error: None,
                        },
                    );
                    let io = Io {
                        client: &mut *client,
                        to_server: &mut *to_server,
                        to_client: &mut *to_client,
                    };
                    match self
                        .admit(&prepared, json!({"protocol": "function_call"}), io)
                        .await
                    {
                        Ok(index) => {
                            to_server.extend_from_slice(&frame);
                            self.tracker.push(Expect::Query(Work::new(index)));
                        }
                        Err(refusal) => self.refuse(refusal, true, to_server),
                    }
                }
                Frontend::Terminate => {
                    to_server.extend_from_slice(&frame);
                    return Ok(true);
                }
                // Flush, COPY data and anything this gateway does not inspect pass through.
                _ => to_server.extend_from_slice(&frame),
            }
        }
        Ok(false)
    }

    /// Reads a text sent for parsing (a simple query or a Parse) under the session's
    /// lexical settings. While statements are in flight the server may be changing those
    /// settings; a text that would read differently then is refused (and recorded).
    async fn read_text(&mut self, sql: &str, via: Via<'_>) -> Result<Arc<Prepared>, Refusal> {
        if !self.tracker.is_idle()
            && let Some(why) = Lexicon::unsettled_reading(sql)
        {
            let message = format!(
                "gatehouse: this statement cannot be read safely now: {why}; send it after the statements before it have completed"
            );
            let refusal = Refusal::Unreadable { message };
            self.record_unreadable(via, sql, &refusal).await;
            return Err(refusal);
        }
        Ok(self.analysed(sql))
    }

    /// [`Session::read_text`], then every `EXECUTE` in it read as the statement it runs.
    async fn read_statement(&mut self, sql: &str, via: Via<'_>) -> Result<Arc<Prepared>, Refusal> {
        let prepared = self.read_text(sql, via).await?;
        self.resolve_executes(&prepared, via).await
    }

    /// The statement as the server will run it: each SQL `EXECUTE name` (also inside
    /// `EXPLAIN ANALYZE` or `CREATE TABLE AS`) is decided on what `name` will be when it
    /// runs. A name the gateway does not know, or cannot be sure of, is refused and
    /// recorded.
    async fn resolve_executes(
        &mut self,
        prepared: &Arc<Prepared>,
        via: Via<'_>,
    ) -> Result<Arc<Prepared>, Refusal> {
        match self.substitute_executes(prepared, 0) {
            Ok(resolved) => Ok(resolved),
            Err(refusal) => {
                self.record_unreadable(via, &prepared.sql, &refusal).await;
                Err(refusal)
            }
        }
    }

    fn substitute_executes(
        &self,
        prepared: &Arc<Prepared>,
        depth: usize,
    ) -> Result<Arc<Prepared>, Refusal> {
        let statements = &prepared.analysis.statements;
        let executes =
            |s: &gatehouse_sql::Statement| matches!(s.prepared, Some(PreparedUse::Execute { .. }));
        if !statements.iter().any(executes) {
            return Ok(prepared.clone());
        }
        if depth >= 4 {
            return Err(Refusal::TooComplex {
                message: "gatehouse: prepared statements execute each other too deeply".into(),
            });
        }
        let mut out = Vec::with_capacity(statements.len());
        let mut unparsed = prepared.analysis.unparsed.clone();
        for (i, statement) in statements.iter().enumerate() {
            let Some(PreparedUse::Execute { name }) = &statement.prepared else {
                out.push(statement.clone());
                continue;
            };
            // Statements before this one in the same text have run if this one runs.
            let ahead = statements[..i]
                .iter()
                .filter(|s| s.prepared.is_some())
                .map(|s| Pending::Sql(prepared, s));
            let body = match self
                .names
                .statement(name, self.tracker.pending().chain(ahead))
            {
                Lookup::Known(body) => self.substitute_executes(&body, depth + 1)?,
                Lookup::Unknown => {
                    return Err(Refusal::AsTheTargetWould {
                        code: "26000",
                        message: format!("prepared statement \"{name}\" does not exist"),
                        position: None,
                    });
                }
                Lookup::Uncertain => {
                    return Err(Refusal::Unreadable {
                        message: format!(
                            "gatehouse: prepared statement \"{name}\" is being redefined by statements still in flight; execute it after they complete"
                        ),
                    });
                }
            };
            if body.analysis.unparsed.is_some() {
                unparsed = body.analysis.unparsed.clone();
            }
            for run in &body.analysis.statements {
                out.push(executed(statement, run));
            }
        }
        Ok(Arc::new(Prepared::from_analysis(
            &prepared.sql,
            prepared.lexical,
            Analysis {
                statements: out,
                unparsed,
                syntax_error: None,
            },
        )))
    }

    /// Records a statement the gateway refuses because it cannot tell what the server
    /// would run: a `command` entry decided `deny`, with the reason.
    async fn record_unreadable(&mut self, via: Via<'_>, sql: &str, refusal: &Refusal) {
        let mut detail = via.detail();
        let (code, _) = sqlstate(refusal);
        detail["decision"] =
            json!({"outcome": "deny", "unreadable": code, "message": refusal.to_string()});
        self.totals.denied += 1;
        if let Err(e) = self.audit(sql, detail).await {
            tracing::warn!(session = %self.id, error = %e, "could not record a refused statement");
        }
    }

    /// Refuses a message: the client gets the refusal where the server's answer would have
    /// been, and the server gets a stand-in it must fail, so it aborts the transaction (or
    /// skips to the next Sync) exactly as after a real error — a refusal in the middle of a
    /// pipeline or a transaction block never lets what came before it commit as though
    /// nothing had failed. A simple query or function call (`query`) is stood in for by a
    /// query that cannot parse; an extended-protocol message by an Execute of a portal that
    /// cannot exist, after which the rest of the pipeline is dropped until Sync, as the
    /// server drops it.
    fn refuse(&mut self, refusal: Refusal, query: bool, to_server: &mut Vec<u8>) {
        let mut reply = Vec::new();
        let (code, position) = sqlstate(&refusal);
        let message = refusal.to_string();
        match position {
            Some(at) => backend::error_response_at("ERROR", code, &message, at, &mut reply),
            None => backend::error_response("ERROR", code, &message, &mut reply),
        }
        if query {
            frontend::frame(b'Q', STAND_IN_QUERY, to_server);
        } else {
            frontend::frame(b'E', STAND_IN_EXECUTE, to_server);
            self.skip_until_sync = true;
        }
        self.tracker.push(Expect::Refused { reply, query });
    }

    /// The analysis of `sql`, from the session's cache when the text was seen recently.
    fn analysed(&mut self, sql: &str) -> Arc<Prepared> {
        if let Some(hit) = self.recent.get(sql) {
            return hit.clone();
        }
        let prepared = Arc::new(Prepared::new(sql, self.lexicon.lexical));
        if sql.len() <= RECENT_MAX_SQL {
            if self.recent.len() >= RECENT_STATEMENTS {
                // Simpler than LRU and enough: a workload of more distinct texts than
                // this gains little from any cache of this size.
                self.recent.clear();
            }
            self.recent.insert(sql.to_string(), prepared.clone());
        }
        prepared
    }
}

/// What runs when `wrapper` executes a prepared statement whose statement is `run`: a
/// plain `EXECUTE` is the statement it runs; `EXPLAIN ANALYZE EXECUTE` and `CREATE TABLE AS
/// EXECUTE` keep their own command and take on what it does.
fn executed(
    wrapper: &gatehouse_sql::Statement,
    run: &gatehouse_sql::Statement,
) -> gatehouse_sql::Statement {
    let mut out = if wrapper.command == "EXECUTE" {
        run.clone()
    } else {
        let mut merged = wrapper.clone();
        if wrapper.command == "EXPLAIN ANALYZE" {
            merged.class = run.class;
        }
        for t in &run.tables {
            if !merged.tables.contains(t) {
                merged.tables.push(t.clone());
            }
        }
        merged.missing_where |= run.missing_where;
        merged.writes |= run.writes;
        merged.inner_commands.push(run.command.clone());
        merged
            .inner_commands
            .extend(run.inner_commands.iter().cloned());
        merged.prepared = None;
        merged
    };
    if !out.inner_commands.iter().any(|c| c == "EXECUTE") {
        out.inner_commands.push("EXECUTE".into());
    }
    out
}
