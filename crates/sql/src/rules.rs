//! Guardrail rules: which statements are denied or held for review, decided purely from an
//! [`Analysis`] and the principal's groups.

use serde::{Deserialize, Serialize};

use gatehouse_core::glob_match;

use crate::analyze::{Analysis, Statement, StatementClass};

/// One `[[resources.rules]]` entry. All given criteria must match (AND); each list matches
/// if any of its items does (OR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub action: RuleAction,
    /// Shown to the client when the rule decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Command names, case-insensitive: `DROP DATABASE`, `TRUNCATE`, `DELETE`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<StatementClass>,
    /// Table patterns with `*` wildcards (`public.secrets*`, `*.ssn_vault`). An unqualified
    /// table in a statement also matches as `public.<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Only UPDATE/DELETE statements without WHERE.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing_where: bool,
    /// The rule applies only to principals in one of these groups (empty: everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The rule never applies to principals in these groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_groups: Vec<String>,
    /// For `review`: approvals this rule's statements need (default: the resource's
    /// `reviews.approvals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<u32>,
    /// For `review`: groups that may approve this rule's statements (default: the
    /// resource's `reviews.approvers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
}

impl Rule {
    /// A rule with no criteria yet (it matches every statement until some are set):
    /// `Rule { commands: vec!["DROP TABLE".into()], ..Rule::new("drops", RuleAction::Review) }`.
    pub fn new(id: impl Into<String>, action: RuleAction) -> Rule {
        Rule {
            id: id.into(),
            action,
            message: None,
            commands: Vec::new(),
            classes: Vec::new(),
            tables: Vec::new(),
            missing_where: false,
            groups: Vec::new(),
            except_groups: Vec::new(),
            approvals: None,
            approvers: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Deny,
    Review,
}

/// The outcome for a whole message, strictest first in severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Review,
    Deny,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Review => "review",
            Outcome::Deny => "deny",
        }
    }
}

/// What to do with text the parser cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnparsed {
    Allow,
    #[default]
    Deny,
    Review,
}

/// The decision and what made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The id of the deciding rule, if a rule decided.
    pub rule: Option<String>,
    pub message: Option<String>,
    /// Every rule that reached the outcome (the deciding one first): a statement held by
    /// several rules needs each of them granted or approved.
    pub holders: Vec<String>,
}

impl Decision {
    fn allow() -> Self {
        Decision {
            outcome: Outcome::Allow,
            rule: None,
            message: None,
            holders: Vec::new(),
        }
    }
}

/// Decides a message: the strictest outcome over its statements wins (deny, then review),
/// and the first rule reaching that outcome names the decision.
pub fn evaluate(
    rules: &[Rule],
    analysis: &Analysis,
    groups: &[String],
    on_unparsed: OnUnparsed,
) -> Decision {
    if let Some(why) = &analysis.unparsed {
        let outcome = match on_unparsed {
            OnUnparsed::Allow => Outcome::Allow,
            OnUnparsed::Deny => Outcome::Deny,
            OnUnparsed::Review => Outcome::Review,
        };
        return Decision {
            outcome,
            rule: None,
            message: Some(format!("the statement could not be parsed ({why})")),
            holders: Vec::new(),
        };
    }
    let mut best = Decision::allow();
    let mut reached: Vec<(Outcome, &str)> = Vec::new();
    for statement in &analysis.statements {
        for rule in rules
            .iter()
            .filter(|r| applies_to(r, groups) && matches(r, statement))
        {
            let outcome = match rule.action {
                RuleAction::Deny => Outcome::Deny,
                RuleAction::Review => Outcome::Review,
            };
            reached.push((outcome, rule.id.as_str()));
            if outcome > best.outcome {
                best = Decision {
                    outcome,
                    rule: Some(rule.id.clone()),
                    message: Some(rule.message.clone().unwrap_or_else(|| {
                        format!(
                            "{} by rule {}",
                            if outcome == Outcome::Deny {
                                "denied"
                            } else {
                                "held for review"
                            },
                            rule.id
                        )
                    })),
                    holders: Vec::new(),
                };
            }
        }
    }
    for (outcome, id) in reached {
        if outcome == best.outcome && !best.holders.iter().any(|h| h == id) {
            best.holders.push(id.to_string());
        }
    }
    best
}

fn applies_to(rule: &Rule, groups: &[String]) -> bool {
    let member = |list: &[String]| list.iter().any(|g| groups.contains(g));
    (rule.groups.is_empty() || member(&rule.groups)) && !member(&rule.except_groups)
}

fn matches(rule: &Rule, s: &Statement) -> bool {
    let command_ok = rule.commands.is_empty()
        || rule.commands.iter().any(|c| {
            let c = c.trim();
            c.eq_ignore_ascii_case(&s.command)
                || s.inner_commands.iter().any(|i| c.eq_ignore_ascii_case(i))
        });
    let class_ok = rule.classes.is_empty()
        || rule.classes.contains(&s.class)
        || s.effects.iter().any(|e| rule.classes.contains(e));
    let tables_ok = rule.tables.is_empty()
        || s.tables.iter().any(|t| {
            rule.tables.iter().any(|p| {
                glob_match(&p.to_ascii_lowercase(), &t.to_ascii_lowercase())
                    || (!t.contains('.')
                        && glob_match(
                            &p.to_ascii_lowercase(),
                            &format!("public.{}", t.to_ascii_lowercase()),
                        ))
            })
        });
    let where_ok = !rule.missing_where || s.missing_where;
    command_ok && class_ok && tables_ok && where_ok
}

/// Problems in a rule list, as (rule index, key, problem).
pub fn validate_rules(rules: &[Rule]) -> Result<(), Vec<(usize, String, String)>> {
    let mut problems = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.id.trim().is_empty() {
            problems.push((i, "id".into(), "must not be empty".into()));
        } else if rules[..i].iter().any(|r| r.id == rule.id) {
            problems.push((
                i,
                "id".into(),
                format!("{:?} is used by an earlier rule", rule.id),
            ));
        }
        if rule.commands.is_empty()
            && rule.classes.is_empty()
            && rule.tables.is_empty()
            && !rule.missing_where
        {
            problems.push((
                i,
                "commands".into(),
                "the rule matches every statement; give commands, classes, tables or missing_where"
                    .into(),
            ));
        }
        if rule.tables.iter().any(|t| t.trim().is_empty()) {
            problems.push((i, "tables".into(), "contains an empty pattern".into()));
        }
        let reviews = rule.action == RuleAction::Review;
        match rule.approvals {
            Some(_) if !reviews => problems.push((
                i,
                "approvals".into(),
                "only a review rule has approvals".into(),
            )),
            Some(n) if !(1..=10).contains(&n) => {
                problems.push((i, "approvals".into(), format!("must be 1 to 10, not {n}")))
            }
            _ => {}
        }
        match &rule.approvers {
            Some(_) if !reviews => problems.push((
                i,
                "approvers".into(),
                "only a review rule has approvers".into(),
            )),
            Some(groups) if groups.is_empty() || groups.iter().any(|g| g.trim().is_empty()) => {
                problems.push((
                    i,
                    "approvers".into(),
                    "must name at least one group, none empty".into(),
                ))
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;

    fn rule(id: &str, action: RuleAction) -> Rule {
        Rule::new(id, action)
    }

    fn rules() -> Vec<Rule> {
        vec![
            Rule {
                commands: vec!["drop database".into()],
                message: Some("dropping databases is not allowed here".into()),
                ..rule("no-drop-db", RuleAction::Deny)
            },
            Rule {
                commands: vec!["DELETE".into(), "UPDATE".into()],
                missing_where: true,
                ..rule("no-unbounded-writes", RuleAction::Deny)
            },
            Rule {
                tables: vec!["public.secret*".into()],
                ..rule("secrets-need-review", RuleAction::Review)
            },
            Rule {
                classes: vec![StatementClass::Write, StatementClass::Ddl],
                groups: vec!["analysts".into()],
                except_groups: vec!["dba".into()],
                ..rule("analysts-read-only", RuleAction::Deny)
            },
        ]
    }

    fn decide(sql: &str, groups: &[&str]) -> Decision {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        evaluate(&rules(), &analyze(sql), &groups, OnUnparsed::Deny)
    }

    #[test]
    fn rules_decide_on_parsed_statements() {
        let d = decide("DROP DATABASE prod", &[]);
        assert_eq!(
            (d.outcome, d.rule.as_deref()),
            (Outcome::Deny, Some("no-drop-db"))
        );
        assert_eq!(
            d.message.as_deref(),
            Some("dropping databases is not allowed here")
        );
        assert_eq!(decide("DELETE FROM t", &[]).outcome, Outcome::Deny);
        assert_eq!(
            decide("delete /* sneaky */ from t", &[]).outcome,
            Outcome::Deny
        );
        assert_eq!(
            decide("WITH x AS (DELETE FROM t RETURNING 1) SELECT 1", &[]).outcome,
            Outcome::Deny
        );
        assert_eq!(
            decide("DELETE FROM t WHERE id = 3", &[]).outcome,
            Outcome::Allow
        );
        let r = decide("SELECT * FROM secrets_2024", &[]);
        assert_eq!(
            (r.outcome, r.rule.as_deref()),
            (Outcome::Review, Some("secrets-need-review"))
        );
        assert_eq!(
            decide("SELECT * FROM public.secret", &[]).outcome,
            Outcome::Review
        );
        assert_eq!(
            decide("SELECT * FROM other.secret", &[]).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn groups_scope_rules_and_strictest_wins() {
        assert_eq!(
            decide("INSERT INTO t VALUES (1)", &["analysts"]).outcome,
            Outcome::Deny
        );
        assert_eq!(
            decide("INSERT INTO t VALUES (1)", &["analysts", "dba"]).outcome,
            Outcome::Allow
        );
        assert_eq!(
            decide("INSERT INTO t VALUES (1)", &[]).outcome,
            Outcome::Allow
        );
        // review + deny in one message: deny wins.
        let d = decide("SELECT * FROM secrets; DROP DATABASE prod", &[]);
        assert_eq!(
            (d.outcome, d.rule.as_deref()),
            (Outcome::Deny, Some("no-drop-db"))
        );
    }

    #[test]
    fn unparsed_text_follows_the_setting() {
        let a = analyze("DROP DATABSE prod");
        for (setting, outcome) in [
            (OnUnparsed::Deny, Outcome::Deny),
            (OnUnparsed::Review, Outcome::Review),
            (OnUnparsed::Allow, Outcome::Allow),
        ] {
            let d = evaluate(&rules(), &a, &[], setting);
            assert_eq!(d.outcome, outcome);
            assert!(d.message.unwrap().contains("could not be parsed"));
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("public.secret*", "public.secrets"));
        assert!(glob_match("*.ssn_vault", "hr.ssn_vault"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxc"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn validation_names_the_rule_and_key() {
        let mut bad = rules();
        bad.push(rule("no-drop-db", RuleAction::Deny));
        bad.push(Rule {
            tables: vec![" ".into()],
            ..rule("", RuleAction::Review)
        });
        let problems = validate_rules(&bad).unwrap_err();
        assert!(problems.contains(&(
            4,
            "id".into(),
            "\"no-drop-db\" is used by an earlier rule".into()
        )));
        assert!(problems.iter().any(|(i, k, _)| *i == 4 && k == "commands"));
        assert!(problems.iter().any(|(i, k, _)| *i == 5 && k == "id"));
        assert!(problems.iter().any(|(i, k, _)| *i == 5 && k == "tables"));
        assert!(validate_rules(&rules()).is_ok());

        // Approvals and approvers belong to review rules, within bounds.
        let approvals = |action, approvals, approvers: Option<Vec<String>>| {
            validate_rules(&[Rule {
                commands: vec!["TRUNCATE".into()],
                approvals,
                approvers,
                ..rule("r", action)
            }])
        };
        assert!(approvals(RuleAction::Review, Some(2), Some(vec!["dba".into()])).is_ok());
        let keys = |r: Result<(), Vec<(usize, String, String)>>| -> Vec<String> {
            r.unwrap_err().into_iter().map(|(_, k, _)| k).collect()
        };
        assert_eq!(
            keys(approvals(
                RuleAction::Deny,
                Some(2),
                Some(vec!["dba".into()])
            )),
            ["approvals", "approvers"]
        );
        assert_eq!(
            keys(approvals(RuleAction::Review, Some(0), Some(Vec::new()))),
            ["approvals", "approvers"]
        );
    }

    #[test]
    fn every_rule_reaching_the_outcome_is_a_holder() {
        let review = |id: &str, commands: &[&str]| Rule {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            ..Rule::new(id, RuleAction::Review)
        };
        let rules = [
            review("drops", &["DROP TABLE"]),
            review("payroll", &[]),
            review("truncates", &["TRUNCATE"]),
        ];
        let d = evaluate(
            &rules,
            &crate::analyze("DROP TABLE payroll"),
            &[],
            OnUnparsed::Deny,
        );
        assert_eq!(d.outcome, Outcome::Review);
        assert_eq!(d.rule.as_deref(), Some("drops"));
        assert_eq!(d.holders, ["drops", "payroll"]);
    }
}
