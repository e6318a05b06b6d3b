//! What a PostgreSQL statement does, read with the real PostgreSQL parser (`pg_query`), the
//! guardrail rules decided over that reading, and where each column of a statement's result
//! comes from (`lineage`, for masking). Pure: no I/O, never panics.
//!
//! Reading parsed statements rather than matching text is the point: `DeLeTe /* x */ FROM t`
//! and a DELETE hidden inside a `WITH` are the same statement to the parser.

mod analyze;
pub mod lineage;
mod rules;
mod startup;
mod syntax;

pub use analyze::{
    Analysis, Lexical, PreparedUse, Statement, StatementClass, analyze, analyze_with, reads_alike,
};
pub use lineage::{Lineage, Output, Sources, lineage, lineage_with};
pub use rules::{Decision, OnUnparsed, Outcome, Rule, RuleAction, evaluate, validate_rules};
pub use startup::{startup_parameter_forbidden, startup_parameter_safe};
pub use syntax::SyntaxError;
