//! The session's prepared statements and portals as the server has them, and what a name
//! will mean to the server when a message using it arrives there. Pure: the session feeds
//! it what the client sent and what the server confirmed.
//!
//! A Parse, Bind or Close changes the server's names only once the server has carried it
//! out (ParseComplete, BindComplete, CloseComplete; `PREPARE`, `DEALLOCATE` and `DISCARD
//! ALL` by their command tags), so the confirmed names ([`Names`]) change only then. A
//! message that uses a name may arrive while changes to it are still in flight; what the
//! name will mean is worked out from the confirmed names and the changes ahead of it
//! ([`Names::statement`], [`Names::portal`]):
//! - changes in the same pipeline segment as the message (since the last Sync) are certain:
//!   if one fails, the server skips the rest of the segment, this message included;
//! - changes in earlier segments may or may not happen (an error skips the rest of its
//!   segment), so every outcome counts.
//!
//! A name that may mean two different statements is [`Lookup::Uncertain`], and the session
//! refuses to decide it; a name that means nothing is [`Lookup::Unknown`], and the session
//! refuses it as the server would. A name that may also be absent is not uncertain: if it
//! is absent the server refuses the message itself.

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_sql::{Analysis, Lexical, PreparedUse, Statement, analyze_with};
use serde_json::Value;
use smallvec::SmallVec;

use crate::masking::Source;

/// A statement as the gateway remembers it: its text, the lexical settings it was read
/// under, its analysis and the part of the `command` entry that follows from the analysis
/// alone, all computed once.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub sql: String,
    pub lexical: Lexical,
    pub analysis: Analysis,
    /// What masking reads of the statement, built the first time a result needs it.
    source: std::sync::OnceLock<Arc<Source>>,
    /// `classes`, `commands`, `tables` and (when unparsed) `unparsed`, ready to copy into
    /// each `command` entry.
    pub summary: serde_json::Map<String, Value>,
}

impl Prepared {
    pub(crate) fn new(sql: &str, lexical: Lexical) -> Prepared {
        Prepared::from_analysis(sql, lexical, analyze_with(sql, lexical))
    }

    pub(crate) fn from_analysis(sql: &str, lexical: Lexical, analysis: Analysis) -> Prepared {
        let mut summary = serde_json::Map::new();
        summary.insert(
            "classes".into(),
            analysis
                .classes()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .into(),
        );
        summary.insert(
            "commands".into(),
            analysis
                .statements
                .iter()
                .map(|s| s.command.clone())
                .collect::<Vec<_>>()
                .into(),
        );
        summary.insert("tables".into(), distinct_tables(&analysis).into());
        if let Some(why) = &analysis.unparsed {
            summary.insert("unparsed".into(), why.as_str().into());
        }
        if let Some(error) = &analysis.syntax_error {
            // What a refused client is told: the parser's error, as the server reports it.
            summary.insert(
                "syntax_error".into(),
                serde_json::to_value(error).unwrap_or_default(),
            );
        }
        Prepared {
            sql: sql.to_string(),
            lexical,
            analysis,
            summary,
            source: std::sync::OnceLock::new(),
        }
    }

    /// The statement as masking reads it; the lineage is read only where column rules
    /// need it.
    pub(crate) fn source(&self, with_lineage: bool) -> Arc<Source> {
        self.source
            .get_or_init(|| {
                Arc::new(Source::new(
                    self.sql.clone(),
                    with_lineage.then(|| gatehouse_sql::lineage_with(&self.sql, self.lexical)),
                    distinct_tables(&self.analysis),
                ))
            })
            .clone()
    }

    pub(crate) fn is_ddl(&self) -> bool {
        self.analysis
            .classes()
            .any(|c| c == gatehouse_sql::StatementClass::Ddl)
    }

    /// What a `PREPARE name AS body` in this text makes `name` run, as a statement of its
    /// own (its text is this whole text, which is what the client sent).
    fn body(&self, body: &Statement) -> Arc<Prepared> {
        Arc::new(Prepared::from_analysis(
            &self.sql,
            self.lexical,
            Analysis {
                statements: vec![body.clone()],
                unparsed: None,
                syntax_error: None,
            },
        ))
    }
}

/// Every relation the statements name, once, in order of appearance.
pub(crate) fn distinct_tables(analysis: &Analysis) -> Vec<String> {
    let mut tables: Vec<String> = Vec::new();
    for t in analysis.statements.iter().flat_map(|s| s.tables.iter()) {
        if !tables.contains(t) {
            tables.push(t.clone());
        }
    }
    tables
}

/// A portal: the statement it was bound from (by name, for masking's descriptions), what
/// that statement was when bound (`None` when the gateway could not say), and the Bind's
/// result formats.
#[derive(Debug, Clone)]
pub(crate) struct Portal {
    pub statement: String,
    pub prepared: Option<Arc<Prepared>>,
    pub formats: Vec<i16>,
}

/// A change to the session's names sent to the server and not yet confirmed by it.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Parse {
        name: String,
        prepared: Arc<Prepared>,
    },
    Bind(String, Portal),
    /// Close of a statement (`b'S'`) or a portal (`b'P'`).
    Close {
        kind: u8,
        name: String,
    },
}

/// Something sent ahead of the message being decided, in the order the server meets it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pending<'a> {
    Op(&'a Op),
    /// A statement of a text (a simple query, or a prepared statement executed) that may
    /// prepare or deallocate by SQL, with the text it belongs to.
    Sql(&'a Prepared, &'a Statement),
    /// A Sync, or the end of a simple query: what follows starts a new segment.
    Boundary,
}

/// What the server reported back about a change, in the order it did.
#[derive(Debug)]
pub(crate) enum Settled {
    /// ParseComplete, BindComplete or CloseComplete.
    Applied(Op),
    /// The server answered the change with an error.
    Failed(Op),
    /// A statement finished; its first `completed` statements got a command tag.
    Ran {
        prepared: Arc<Prepared>,
        completed: usize,
    },
    /// ReadyForQuery outside a transaction block: every portal is gone.
    TransactionEnded,
}

/// What a name will mean when the message using it reaches the server.
#[derive(Debug, Clone)]
pub(crate) enum Lookup<T> {
    Known(T),
    Unknown,
    /// Changes still in flight may leave it meaning one of several things.
    Uncertain,
}

/// The names the server has confirmed.
#[derive(Debug, Default)]
pub(crate) struct Names {
    statements: HashMap<String, Arc<Prepared>>,
    portals: HashMap<String, Portal>,
}

/// Prepared statements a session may hold: PostgreSQL itself has no limit, but the
/// gateway keeps each one's analysis in memory, so one session cannot grow without bound.
pub(crate) const MAX_STATEMENTS: usize = 10_000;

impl Names {
    pub(crate) fn statement_count(&self) -> usize {
        self.statements.len()
    }

    /// Applies what the server confirmed. Returns the statement names whose meaning
    /// changed (for masking's kept descriptions).
    pub(crate) fn settle(&mut self, settled: Settled, changed: &mut Vec<String>) {
        match settled {
            Settled::Applied(Op::Parse { name, prepared }) => {
                changed.push(name.clone());
                self.statements.insert(name, prepared);
            }
            Settled::Applied(Op::Bind(name, portal)) => {
                self.portals.insert(name, portal);
            }
            Settled::Applied(Op::Close { kind: b'S', name }) => {
                changed.push(name.clone());
                self.statements.remove(&name);
            }
            Settled::Applied(Op::Close { name, .. }) => {
                self.portals.remove(&name);
            }
            // The server drops the unnamed statement (or portal) before it tries to
            // replace it, so a failed replacement leaves none.
            Settled::Failed(Op::Parse { name, .. }) if name.is_empty() => {
                changed.push(name.clone());
                self.statements.remove(&name);
            }
            Settled::Failed(Op::Bind(name, _)) if name.is_empty() => {
                self.portals.remove(&name);
            }
            Settled::Failed(_) => {}
            Settled::Ran {
                prepared,
                completed,
            } => {
                for statement in prepared.analysis.statements.iter().take(completed) {
                    match &statement.prepared {
                        Some(PreparedUse::Prepare { name, body }) => {
                            changed.push(name.clone());
                            self.statements.insert(name.clone(), prepared.body(body));
                        }
                        Some(PreparedUse::Deallocate { name }) => {
                            changed.push(name.clone());
                            self.statements.remove(name);
                        }
                        Some(PreparedUse::DeallocateAll) => {
                            changed.extend(self.statements.keys().cloned());
                            self.statements.clear();
                            if statement.command == "DISCARD" {
                                self.portals.clear();
                            }
                        }
                        Some(PreparedUse::Execute { .. }) | None => {}
                    }
                }
            }
            Settled::TransactionEnded => self.portals.clear(),
        }
    }

    /// What statement `name` will be when a message sent now reaches the server, after
    /// the changes `pending` (oldest first; a text's statements that come before the one
    /// being decided go last, as certain).
    pub(crate) fn statement<'a>(
        &self,
        name: &str,
        pending: impl Iterator<Item = Pending<'a>>,
    ) -> Lookup<Arc<Prepared>> {
        let start = self.statements.get(name).cloned();
        let same = |a: &Arc<Prepared>, b: &Arc<Prepared>| {
            Arc::ptr_eq(a, b)
                || a.sql == b.sql && a.lexical == b.lexical && a.analysis == b.analysis
        };
        let effect = |state: &Option<Arc<Prepared>>, item: Pending<'_>| match item {
            Pending::Op(Op::Parse { name: n, prepared }) if n == name => {
                // A named statement that exists already makes the Parse fail.
                Some(if n.is_empty() || state.is_none() {
                    Some(prepared.clone())
                } else {
                    state.clone()
                })
            }
            Pending::Op(Op::Close {
                kind: b'S',
                name: n,
            }) if n == name => Some(None),
            Pending::Sql(text, statement) => match &statement.prepared {
                Some(PreparedUse::Prepare { name: n, body }) if n == name => Some(match state {
                    None => Some(text.body(body)),
                    Some(_) => state.clone(),
                }),
                Some(PreparedUse::Deallocate { name: n }) if n == name => Some(None),
                Some(PreparedUse::DeallocateAll) => Some(None),
                _ => None,
            },
            _ => None,
        };
        let absolute = |item: Pending<'_>| {
            matches!(
                item,
                Pending::Op(Op::Parse { name: n, .. }) if n.is_empty()
            ) || matches!(item, Pending::Op(Op::Close { .. }))
                || matches!(
                    item,
                    Pending::Sql(_, s) if matches!(
                        s.prepared,
                        Some(PreparedUse::Deallocate { .. } | PreparedUse::DeallocateAll)
                    )
                )
        };
        match walk(start, pending, effect, absolute, same) {
            Some(outcomes) => decide(outcomes, same),
            None => Lookup::Uncertain,
        }
    }

    /// What portal `name` will be when a message sent now reaches the server.
    pub(crate) fn portal<'a>(
        &self,
        name: &str,
        pending: impl Iterator<Item = Pending<'a>>,
    ) -> Lookup<Portal> {
        let start = self.portals.get(name).cloned();
        let same = |a: &Portal, b: &Portal| {
            a.statement == b.statement
                && a.formats == b.formats
                && match (&a.prepared, &b.prepared) {
                    (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                    _ => false,
                }
        };
        let effect = |_: &Option<Portal>, item: Pending<'_>| match item {
            Pending::Op(Op::Bind(n, portal)) if n == name => Some(Some(portal.clone())),
            Pending::Op(Op::Close {
                kind: b'P',
                name: n,
            }) if n == name => Some(None),
            // A transaction may end there, and its portals with it.
            Pending::Boundary => Some(None),
            _ => None,
        };
        // A Bind or a Close sets the portal whatever it was; a boundary may or may not.
        let absolute = |item: Pending<'_>| matches!(item, Pending::Op(_));
        match walk(start, pending, effect, absolute, same) {
            Some(outcomes) => decide(outcomes, same),
            None => Lookup::Uncertain,
        }
    }
}

/// Changes in flight touching one name that the gateway follows; past this it gives up
/// on the name (uncertain). Each one adds at most one possible outcome.
const MAX_TOUCHING: usize = 1024;

/// Every state a name may be in after `pending`, starting from `start`; `None` when too
/// many changes touch it to follow. `effect` says what one item makes of a state (`None`:
/// it does not touch the name, whatever the state); `absolute` says an item's effect does
/// not depend on the state (a Bind, a Close, an unnamed Parse); `same` tells equal
/// meanings apart. Items before the last boundary may or may not take effect; items after
/// it are certain, and a certain absolute one makes everything before it moot. Only items
/// that touch the name are kept, so the common case (nothing in flight names it)
/// allocates nothing.
fn walk<'a, T: Clone>(
    start: Option<T>,
    pending: impl Iterator<Item = Pending<'a>>,
    effect: impl Fn(&Option<T>, Pending<'a>) -> Option<Option<T>>,
    absolute: impl Fn(Pending<'a>) -> bool,
    same: impl Fn(&T, &T) -> bool,
) -> Option<Outcomes<T>> {
    let mut last_boundary = None;
    let mut touching: SmallVec<[(usize, Pending<'a>); 4]> = SmallVec::new();
    for (i, item) in pending.enumerate() {
        if matches!(item, Pending::Boundary) {
            last_boundary = Some(i);
        }
        if effect(&None, item).is_some() {
            touching.push((i, item));
        }
    }
    let segment_start = last_boundary.map_or(0, |i| i + 1);
    let certain = |i: usize| i >= segment_start;
    // The last certain absolute change decides alone what the name is at that point.
    let from = touching
        .iter()
        .rposition(|(i, item)| certain(*i) && absolute(*item));
    let (mut states, rest): (Outcomes<T>, _) = match from {
        Some(k) => (
            smallvec::smallvec![effect(&None, touching[k].1).flatten()],
            &touching[k + 1..],
        ),
        None => (smallvec::smallvec![start], &touching[..]),
    };
    if rest.len() > MAX_TOUCHING {
        return None;
    }
    let contains = |states: &[Option<T>], state: &Option<T>| {
        states.iter().any(|s| match (s, state) {
            (None, None) => true,
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        })
    };
    for &(i, item) in rest {
        let changed: Outcomes<T> = states
            .iter()
            .map(|s| effect(s, item).unwrap_or_else(|| s.clone()))
            .collect();
        if certain(i) {
            states.clear();
        }
        for state in changed {
            if !contains(&states, &state) {
                states.push(state);
            }
        }
    }
    Some(states)
}

/// The states a name may be in; almost always one, so kept inline.
type Outcomes<T> = SmallVec<[Option<T>; 2]>;

/// One meaning, none, or several.
fn decide<T: Clone>(outcomes: Outcomes<T>, same: impl Fn(&T, &T) -> bool) -> Lookup<T> {
    let mut found: Option<T> = None;
    for outcome in outcomes.into_iter().flatten() {
        match &found {
            None => found = Some(outcome),
            Some(f) if same(f, &outcome) => {}
            Some(_) => return Lookup::Uncertain,
        }
    }
    match found {
        Some(f) => Lookup::Known(f),
        None => Lookup::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sql: &str) -> Arc<Prepared> {
        Arc::new(Prepared::new(sql, Lexical::default()))
    }

    fn parse(name: &str, sql: &str) -> Op {
        Op::Parse {
            name: name.into(),
            prepared: p(sql),
        }
    }

    fn known_sql(lookup: Lookup<Arc<Prepared>>) -> String {
        match lookup {
            Lookup::Known(p) => p.sql.clone(),
            other => panic!("expected a known statement, got {other:?}"),
        }
    }

    #[test]
    fn a_parse_counts_only_once_the_server_confirms_it() {
        let mut names = Names::default();
        let mut changed = Vec::new();
        names.settle(Settled::Applied(parse("s", "DELETE FROM t")), &mut changed);
        // The reviewer's reproduction: a second Parse of "s" is refused by the server
        // (42P05), so "s" stays the DELETE, ahead of the confirmation and after it.
        let second = parse("s", "SELECT 1");
        let pending = [Pending::Op(&second)];
        assert_eq!(
            known_sql(names.statement("s", pending.into_iter())),
            "DELETE FROM t"
        );
        names.settle(Settled::Failed(second), &mut changed);
        assert_eq!(
            known_sql(names.statement("s", std::iter::empty())),
            "DELETE FROM t"
        );
        // A Close the server never saw changes nothing.
        assert!(matches!(
            names.statement("nope", std::iter::empty()),
            Lookup::Unknown
        ));
    }

    #[test]
    fn changes_in_the_same_segment_are_certain_earlier_ones_are_not() {
        let mut names = Names::default();
        names.settle(
            Settled::Applied(parse("s", "DELETE FROM t")),
            &mut Vec::new(),
        );
        let close = Op::Close {
            kind: b'S',
            name: "s".into(),
        };
        let reparse = parse("s", "SELECT 1");
        // Same segment: if the Close or the Parse fails, this message is skipped anyway.
        let same = [Pending::Op(&close), Pending::Op(&reparse)];
        assert_eq!(
            known_sql(names.statement("s", same.into_iter())),
            "SELECT 1"
        );
        // An earlier segment may have stopped before its Close (a failed message before
        // it): "s" may still be the DELETE.
        let earlier = [
            Pending::Op(&close),
            Pending::Op(&reparse),
            Pending::Boundary,
        ];
        assert!(matches!(
            names.statement("s", earlier.into_iter()),
            Lookup::Uncertain
        ));
        // An unnamed statement is replaced by every Parse; a failure leaves none.
        let unnamed = parse("", "SELECT 2");
        let earlier = [Pending::Op(&unnamed), Pending::Boundary];
        assert_eq!(
            known_sql(names.statement("", earlier.into_iter())),
            "SELECT 2"
        );
    }

    #[test]
    fn sql_prepare_and_deallocate_share_the_namespace() {
        let mut names = Names::default();
        let text = p("PREPARE s AS DELETE FROM t; SELECT 1");
        // Only statements that got a tag took effect.
        names.settle(
            Settled::Ran {
                prepared: text.clone(),
                completed: 0,
            },
            &mut Vec::new(),
        );
        assert!(matches!(
            names.statement("s", std::iter::empty()),
            Lookup::Unknown
        ));
        names.settle(
            Settled::Ran {
                prepared: text,
                completed: 1,
            },
            &mut Vec::new(),
        );
        let Lookup::Known(body) = names.statement("s", std::iter::empty()) else {
            panic!("PREPARE defines s");
        };
        assert_eq!(body.analysis.statements[0].command, "DELETE");
        // Earlier in the same text: certain.
        let text = p("DEALLOCATE s; PREPARE s AS SELECT 1; EXECUTE s");
        let ahead = text.analysis.statements[..2]
            .iter()
            .map(|s| Pending::Sql(&text, s));
        let Lookup::Known(body) = names.statement("s", ahead) else {
            panic!("the text redefines s");
        };
        assert_eq!(body.analysis.statements[0].command, "SELECT");
        // In flight: a DEALLOCATE ALL that may or may not run leaves s absent or the
        // DELETE, never anything else.
        let all = p("DEALLOCATE ALL");
        let pending = [
            Pending::Sql(&all, &all.analysis.statements[0]),
            Pending::Boundary,
        ];
        assert!(matches!(
            names.statement("s", pending.into_iter()),
            Lookup::Known(_)
        ));
    }

    #[test]
    fn portals_follow_binds_and_end_with_transactions() {
        let mut names = Names::default();
        let portal = Portal {
            statement: "s".into(),
            prepared: Some(p("SELECT 1")),
            formats: Vec::new(),
        };
        let bind = Op::Bind("c".into(), portal);
        let pending = [Pending::Op(&bind)];
        assert!(matches!(
            names.portal("c", pending.into_iter()),
            Lookup::Known(_)
        ));
        names.settle(Settled::Applied(bind), &mut Vec::new());
        assert!(matches!(
            names.portal("c", std::iter::empty()),
            Lookup::Known(_)
        ));
        names.settle(Settled::TransactionEnded, &mut Vec::new());
        assert!(matches!(
            names.portal("c", std::iter::empty()),
            Lookup::Unknown
        ));
    }

    #[test]
    fn deep_pipelines_stay_decidable_and_too_many_meanings_are_uncertain() {
        let names = Names::default();
        // A long pipeline of segments each binding the unnamed portal: the current
        // segment's Bind is certain, whatever came before.
        let binds: Vec<Op> = (0..300)
            .map(|i| {
                Op::Bind(
                    String::new(),
                    Portal {
                        statement: String::new(),
                        prepared: Some(p(&format!("SELECT {i}"))),
                        formats: Vec::new(),
                    },
                )
            })
            .collect();
        let mut pending = Vec::new();
        for bind in &binds {
            pending.push(Pending::Op(bind));
            pending.push(Pending::Boundary);
        }
        pending.pop();
        let Lookup::Known(portal) = names.portal("", pending.iter().copied()) else {
            panic!("the last Bind is certain");
        };
        assert_eq!(portal.prepared.unwrap().sql, "SELECT 299");
        // Many distinct possible meanings from earlier segments: the gateway gives up.
        let parses: Vec<Op> = (0..MAX_TOUCHING)
            .map(|i| parse("s", &format!("SELECT {i}")))
            .chain([Op::Close {
                kind: b'S',
                name: "s".into(),
            }])
            .collect();
        let mut pending = Vec::new();
        for op in &parses {
            pending.push(Pending::Op(op));
            pending.push(Pending::Op(&parses[MAX_TOUCHING]));
            pending.push(Pending::Boundary);
        }
        assert!(matches!(
            names.statement("s", pending.iter().copied()),
            Lookup::Uncertain
        ));
    }
}
