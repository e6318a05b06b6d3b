//! `gatehouse policy check|eval`: Cedar policies validated and decisions explained offline,
//! with the same engine the gateway runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_config::Config;
use gatehouse_core::{Actor, ActorKind};
use gatehouse_policy::PolicyEngine;
use serde_json::json;

use crate::cli::{KeyKind, PolicyCommand, PolicyFiles};

pub(crate) fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check(files) => {
            let (policies, schema, _) = resolve(&files)?;
            match PolicyEngine::load(&policies, schema.as_deref()) {
                Ok(engine) => {
                    outln!(
                        "{}: ok ({} polic{}, validated against {})",
                        policies.display(),
                        engine.len(),
                        if engine.len() == 1 { "y" } else { "ies" },
                        schema
                            .as_ref()
                            .map_or("the built-in schema".to_string(), |s| s
                                .display()
                                .to_string())
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        PolicyCommand::Eval(args) => {
            let (policies, schema, config) = resolve(&args.files)?;
            let engine = PolicyEngine::load(&policies, schema.as_deref())?;
            let actor = Actor {
                id: args.principal.clone(),
                kind: match args.kind {
                    KeyKind::Human => ActorKind::Human,
                    KeyKind::Agent => ActorKind::Agent,
                    KeyKind::Service => ActorKind::Service,
                },
                idp: None,
                groups: args.groups.clone(),
            };
            // A resource of the config lends its kind, environment, tags and guardrails, as
            // in the gateway.
            let configured = config.as_ref().and_then(|c| c.resource(&args.resource));
            let kind = configured.map_or(args.resource_kind.clone(), |r| r.kind.to_string());
            let no_tags = Vec::new();
            let resource = gatehouse_policy::Target {
                name: &args.resource,
                kind: &kind,
                environment: configured.and_then(|r| r.environment.as_deref()),
                tags: configured.map_or(&no_tags, |r| &r.tags),
            };
            let who = engine.principal(&actor, &resource)?;
            let out = match (&args.action, &args.sql) {
                (Some(action), None) if action == "connect" => {
                    let d = engine.action(&who, gatehouse_policy::Action::Connect)?;
                    json!({
                        "outcome": d.outcome.as_str(),
                        "policies": d.policies,
                        "message": d.message,
                        "action": "connect",
                    })
                }
                (Some(action), None) => anyhow::bail!(
                    "--action {action:?}: only connect is decided without SQL; give --sql for statements"
                ),
                (_, Some(sql)) => {
                    let analysis = gatehouse_sql::analyze(sql);
                    let (rules, on_unparsed) = configured
                        .map(|r| (r.rules.as_slice(), r.on_unparsed))
                        .unwrap_or_default();
                    let cedar = engine.statements(&who, &analysis);
                    let d = gatehouse_policy::decide_statement(
                        rules,
                        on_unparsed,
                        &actor.groups,
                        &analysis,
                        Some(cedar),
                    );
                    let classes: Vec<&str> = analysis.classes().map(|c| c.as_str()).collect();
                    json!({
                        "outcome": d.outcome.as_str(),
                        "policies": d.policies,
                        "message": d.message,
                        "rule": d.rule,
                        "actions": classes,
                        "unparsed": analysis.unparsed,
                    })
                }
                (None, None) => unreachable!("clap requires --action or --sql"),
            };
            outln!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The policy and schema files: as given, else from the config's `[policy]`; and the
/// config when there is one (for the resource's guardrails).
fn resolve(files: &PolicyFiles) -> anyhow::Result<(PathBuf, Option<PathBuf>, Option<Config>)> {
    let config = match std::fs::read_to_string(&files.config) {
        Ok(text) => Some(Config::parse_toml_str(&text, &files.config)?),
        Err(_) if files.policies.is_some() => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading {} (give a policy file, or --config FILE with a [policy] section)",
                    files.config.display()
                )
            });
        }
    };
    if let Some(policies) = &files.policies {
        return Ok((policies.clone(), files.schema.clone(), config));
    }
    let policy = config
        .as_ref()
        .and_then(|c| c.policy.clone())
        .with_context(|| format!("{}: no [policy] section", files.config.display()))?;
    Ok((
        policy.policies,
        files.schema.clone().or(policy.schema),
        config,
    ))
}
