//! What a PostgreSQL statement does, read with the real PostgreSQL parser (`pg_query`), the
//! guardrail rules decided over that reading, and where each column of a statement's result
//! comes from (`lineage`, for masking). Pure: no I/O, never panics.
//!
//! Reading parsed statements rather than matching text is the point: `DeLeTe /* x */ FROM t`
//! and a DELETE hidden inside a `WITH` are the same statement to the parser.

mod analyze;
pub mod lineage;
mod rules;

pub use analyze::{Analysis, Statement, StatementClass, analyze};
pub use lineage::{Lineage, Output, Sources, lineage};
pub use rules::{Decision, OnUnparsed, Outcome, Rule, RuleAction, evaluate, validate_rules};
