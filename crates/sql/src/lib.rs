//! What a PostgreSQL statement does, read with the real PostgreSQL parser (`pg_query`), and
//! the guardrail rules decided over that reading. Pure: no I/O, never panics.
//!
//! Reading parsed statements rather than matching text is the point: `DeLeTe /* x */ FROM t`
//! and a DELETE hidden inside a `WITH` are the same statement to the parser.

mod analyze;
mod rules;

pub use analyze::{Analysis, Statement, StatementClass, analyze};
pub use rules::{Decision, OnUnparsed, Outcome, Rule, RuleAction, evaluate, validate_rules};
