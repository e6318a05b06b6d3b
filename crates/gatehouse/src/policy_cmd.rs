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

pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check(files) => {
            let (policies, schema) = resolve(&files)?;
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
            let (policies, schema) = resolve(&args.files)?;
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
            let resource = (args.resource.as_str(), args.resource_kind.as_str());
            let (decision, detail) = match (&args.action, &args.sql) {
                (Some(action), None) if action == "connect" => (
                    engine.connect(&actor, resource)?,
                    json!({"action": "connect"}),
                ),
                (Some(action), None) => anyhow::bail!(
                    "--action {action:?}: only connect is decided without SQL; give --sql for statements"
                ),
                (_, Some(sql)) => {
                    let analysis = gatehouse_sql::analyze(sql);
                    if let Some(why) = &analysis.unparsed {
                        anyhow::bail!(
                            "--sql: the parser cannot read it ({why}); the gateway would apply on_unparsed"
                        );
                    }
                    let classes: Vec<&str> = analysis.classes().map(|c| c.as_str()).collect();
                    (
                        engine.statements(&actor, resource, &analysis)?,
                        json!({"actions": classes}),
                    )
                }
                (None, None) => unreachable!("clap requires --action or --sql"),
            };
            let mut out = json!({
                "outcome": decision.outcome.as_str(),
                "policies": decision.policies,
                "message": decision.message,
            });
            if let (Some(o), Some(d)) = (out.as_object_mut(), detail.as_object()) {
                o.extend(d.clone());
            }
            outln!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The policy and schema files: as given, else from the config's `[policy]`.
fn resolve(files: &PolicyFiles) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    if let Some(policies) = &files.policies {
        return Ok((policies.clone(), files.schema.clone()));
    }
    let text = std::fs::read_to_string(&files.config).with_context(|| {
        format!(
            "reading {} (give a policy file, or --config FILE with a [policy] section)",
            files.config.display()
        )
    })?;
    let config = Config::parse_toml_str(&text, &files.config)?;
    let policy = config
        .policy
        .with_context(|| format!("{}: no [policy] section", files.config.display()))?;
    Ok((policy.policies, files.schema.clone().or(policy.schema)))
}
