//! Column rules: which table columns are masked whole, by `schema.table.column` patterns
//! with `*` and `?` wildcards, matched case-insensitively (PostgreSQL folds unquoted names,
//! and a rule that misses a column because of its case would leak it).

use crate::{MaskError, Strategy};

/// One configured rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    /// As written: `table.column` or `schema.table.column`.
    pub pattern: String,
    pub strategy: Strategy,
    /// What the redaction token and the ledger call it (default: the column part).
    pub label: String,
}

#[derive(Debug, Clone)]
struct Compiled {
    schema: Option<String>,
    table: String,
    column: String,
}

/// The rules of one resource, in order; the first that matches a column decides.
#[derive(Debug, Clone, Default)]
pub struct ColumnRules {
    rules: Vec<(ColumnRule, Compiled)>,
}

impl ColumnRules {
    pub fn new(rules: Vec<ColumnRule>) -> Result<ColumnRules, MaskError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let parts = parse_pattern(&rule.pattern)?;
            compiled.push((rule, parts));
        }
        Ok(ColumnRules { rules: compiled })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for column `column` of `schema.table`, if any.
    pub fn find(&self, schema: &str, table: &str, column: &str) -> Option<&ColumnRule> {
        self.rules
            .iter()
            .find(|(_, c)| {
                c.schema.as_deref().is_none_or(|s| glob(s, schema))
                    && glob(&c.table, table)
                    && glob(&c.column, column)
            })
            .map(|(rule, _)| rule)
    }

    /// The first rule whose column part matches `column` in any table: what an expression
    /// over a column of that name is masked by when the table it reads cannot be told.
    pub fn by_column_name(&self, column: &str) -> Option<&ColumnRule> {
        self.rules
            .iter()
            .find(|(_, c)| glob(&c.column, column))
            .map(|(rule, _)| rule)
    }

    /// The first rule covering some column of `relation` (`table` or `schema.table` as
    /// written in a statement): a whole-row reference to it carries that column.
    pub fn by_relation(&self, relation: &str) -> Option<&ColumnRule> {
        let (schema, table) = match relation.rsplit_once('.') {
            Some((schema, table)) => (Some(schema), table),
            None => (None, relation),
        };
        self.rules
            .iter()
            .find(|(_, c)| {
                glob(&c.table, table)
                    && match (schema, &c.schema) {
                        (Some(s), Some(p)) => glob(p, s),
                        _ => true,
                    }
            })
            .map(|(rule, _)| rule)
    }
}

/// Checks a column pattern as the config does, without building rules.
pub fn check_pattern(pattern: &str) -> Result<(), MaskError> {
    parse_pattern(pattern).map(|_| ())
}

/// Two or three dot-separated, non-empty parts.
fn parse_pattern(pattern: &str) -> Result<Compiled, MaskError> {
    let parts: Vec<&str> = pattern.split('.').collect();
    let bad = |why: &str| MaskError::Column {
        pattern: pattern.to_string(),
        message: why.to_string(),
    };
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("has an empty part"));
    }
    let lower = |s: &str| s.to_lowercase();
    match parts[..] {
        [table, column] => Ok(Compiled {
            schema: None,
            table: lower(table),
            column: lower(column),
        }),
        [schema, table, column] => Ok(Compiled {
            schema: Some(lower(schema)),
            table: lower(table),
            column: lower(column),
        }),
        _ => Err(bad(
            "must be table.column or schema.table.column (wildcards * and ? allowed)",
        )),
    }
}

/// `pattern` (lower-case) against `text` in any case: the shared wildcard match.
fn glob(pattern: &str, text: &str) -> bool {
    gatehouse_core::glob_match(pattern, &text.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> ColumnRules {
        ColumnRules::new(
            patterns
                .iter()
                .map(|p| ColumnRule {
                    pattern: p.to_string(),
                    strategy: Strategy::Redact,
                    label: p.rsplit('.').next().unwrap().to_string(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob("ssn", "SSN"));
        assert!(glob("*", ""));
        assert!(glob("card_*", "card_number"));
        assert!(glob("*_secret", "api_secret"));
        assert!(!glob("*_secret", "api_secrets"));
        assert!(glob("c?stomers", "customers"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn first_matching_rule_decides() {
        let r = rules(&["public.customers.ssn", "customers.email", "*.*.api_*"]);
        assert_eq!(r.find("public", "customers", "ssn").unwrap().label, "ssn");
        assert!(r.find("other", "customers", "ssn").is_none());
        assert!(r.find("other", "customers", "EMAIL").is_some());
        assert_eq!(r.find("x", "y", "api_token").unwrap().label, "api_*");
        assert!(r.find("public", "customers", "name").is_none());
        assert!(r.by_column_name("ssn").is_some());
        assert!(r.by_column_name("name").is_none());
        assert!(r.by_relation("customers").is_some());
        assert!(r.by_relation("public.customers").is_some());
        assert!(
            r.by_relation("anything").is_some(),
            "*.*.api_* covers every table"
        );
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in ["ssn", "a..b", "a.b.c.d", ".x"] {
            let e = ColumnRules::new(vec![ColumnRule {
                pattern: bad.into(),
                strategy: Strategy::Null,
                label: "x".into(),
            }])
            .unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
