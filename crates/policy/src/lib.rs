//! Who may do what, written in Cedar: the policy set and its schema, validated when loaded,
//! and the decisions for `connect` and for each statement class. Pure: files are read by
//! [`PolicyEngine::load`], everything after is computation.
//!
//! The Cedar model (namespace `Gatehouse`, see [`DEFAULT_SCHEMA`]):
//! - principals are `Identity` entities in `Group`s, with `kind` (human, agent, service);
//! - resources are `Resource` entities with `kind` (postgres, ...);
//! - actions are `connect`, `unmask` (sees clear values where masking applies; the
//!   recording stays masked), `approve` (decides other people's held statements on the
//!   resource), `audit` (sees the resource's reviews and their statements) and one per
//!   statement class: `read`, `write`, `ddl`, `dcl`,
//!   `transaction`, `utility`, `procedural` (DO, CALL) and `external` (the server's files
//!   and programs, other servers) (`ddl`, `dcl`, `utility`, `procedural` and `external`
//!   are also `in` the action group `admin`, so one policy can name all administrative
//!   work); a statement is decided under its own class and under each class its function
//!   calls add. Statement actions carry `context.command` (`SELECT`, `DROP TABLE`, ...),
//!   `context.commands` (that command and every command inside it: a DELETE in a WITH,
//!   the statement EXPLAIN ANALYZE or EXECUTE runs, functions with effects),
//!   `context.tables` (as written, and unqualified ones also as `public.<name>`) and
//!   `context.missing_where`.
//!
//! Cedar denies what no policy permits and a `forbid` beats any `permit`. On top, a
//! `forbid` annotated `@review("why")` holds the statement for an approval instead of
//! refusing it, when review policies are all that forbid it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use gatehouse_core::{Actor, ActorKind};
use gatehouse_sql::{Analysis, OnUnparsed, Outcome, Rule, StatementClass};

/// The schema used when the config names none. A schema of one's own must keep these
/// entity types and actions (it may add attributes and groups).
pub const DEFAULT_SCHEMA: &str = r#"namespace Gatehouse {
  entity Group;
  entity Identity in [Group] { kind: String };
  entity Resource { kind: String, environment?: String, tags: Set<String> };
  action connect appliesTo { principal: Identity, resource: Resource, context: {} };
  action unmask appliesTo { principal: Identity, resource: Resource, context: {} };
  action approve appliesTo { principal: Identity, resource: Resource, context: {} };
  action audit appliesTo { principal: Identity, resource: Resource, context: {} };
  action admin;
  action read, write, transaction appliesTo {
    principal: Identity,
    resource: Resource,
    context: { command: String, commands: Set<String>, tables: Set<String>, missing_where: Bool }
  };
  action ddl, dcl, utility, procedural, external in [admin] appliesTo {
    principal: Identity,
    resource: Resource,
    context: { command: String, commands: Set<String>, tables: Set<String>, missing_where: Bool }
  };
}
"#;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: policy {policy}: {message}")]
    Invalid {
        file: String,
        policy: String,
        message: String,
    },
    #[error("policy request: {0}")]
    Request(String),
}

/// A resource as policies see it: `Gatehouse::Resource::"<name>"` with `kind`, `tags` and
/// (when configured) `environment`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub environment: Option<&'a str>,
    pub tags: &'a [String],
}

impl Target<'_> {
    fn attributes(&self) -> HashMap<String, RestrictedExpression> {
        let mut attrs = HashMap::from([
            (
                "kind".to_string(),
                RestrictedExpression::new_string(self.kind.to_string()),
            ),
            (
                "tags".to_string(),
                RestrictedExpression::new_set(
                    self.tags
                        .iter()
                        .map(|t| RestrictedExpression::new_string(t.clone())),
                ),
            ),
        ]);
        if let Some(env) = self.environment {
            attrs.insert(
                "environment".to_string(),
                RestrictedExpression::new_string(env.to_string()),
            );
        }
        attrs
    }
}

/// One actor on one resource, as Cedar entities ([`PolicyEngine::principal`]).
pub struct Principal {
    principal: EntityUid,
    resource: EntityUid,
    resource_name: String,
    action_type: EntityTypeName,
    entities: Entities,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("principal", &self.principal.to_string())
            .field("resource", &self.resource_name)
            .finish_non_exhaustive()
    }
}

/// The outcome of one decision and the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub outcome: Outcome,
    /// Ids of the determining policies (`policy0`, or the `@id("...")` annotation).
    pub policies: Vec<String>,
    /// For a review or a deny by an annotated policy: its `@review` or `@message` text.
    pub message: Option<String>,
}

/// A loaded, validated policy set.
#[derive(Debug)]
pub struct PolicyEngine {
    policies: PolicySet,
    schema: Schema,
    /// Where the policies came from, for messages.
    source: String,
}

impl PolicyEngine {
    /// Reads and validates `policies` against `schema` (default: [`DEFAULT_SCHEMA`]).
    pub fn load(policies: &Path, schema: Option<&Path>) -> Result<PolicyEngine, PolicyError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
                file: path.display().to_string(),
                message: e.to_string(),
            })
        };
        let text = read(policies)?;
        let (schema_text, schema_name) = match schema {
            Some(path) => (read(path)?, path.display().to_string()),
            None => (
                DEFAULT_SCHEMA.to_string(),
                "the built-in schema".to_string(),
            ),
        };
        PolicyEngine::from_text(
            &text,
            &policies.display().to_string(),
            &schema_text,
            &schema_name,
        )
    }

    /// [`PolicyEngine::load`] on texts; `source` and `schema_source` name them in errors.
    pub fn from_text(
        text: &str,
        source: &str,
        schema_text: &str,
        schema_source: &str,
    ) -> Result<PolicyEngine, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(schema_text).map_err(|e| PolicyError::Parse {
                file: schema_source.to_string(),
                message: format!("{e:?}")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            })?;
        let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse {
            file: source.to_string(),
            message: e.to_string(),
        })?;
        // Policies may carry `@id("...")`: that name, not Cedar's `policyN`, is what
        // decisions and the ledger report.
        let mut policies = PolicySet::new();
        for policy in parsed.policies() {
            let id = policy
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| policy.id().to_string());
            let renamed = policy.new_id(cedar_policy::PolicyId::new(&id));
            policies.add(renamed).map_err(|e| PolicyError::Invalid {
                file: source.to_string(),
                policy: id.clone(),
                message: e.to_string(),
            })?;
        }
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if let Some(first) = result.validation_errors().next() {
            return Err(PolicyError::Invalid {
                file: source.to_string(),
                policy: first.policy_id().to_string(),
                message: first.to_string(),
            });
        }
        Ok(PolicyEngine {
            policies,
            schema,
            source: source.to_string(),
        })
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The Cedar entities of one signed-in actor on one resource, for this engine. Building
    /// (and schema-checking) them costs more than a decision, so a session builds them once
    /// and again only when a reload puts another engine in force.
    pub fn principal(
        &self,
        actor: &Actor,
        resource: &Target<'_>,
    ) -> Result<Principal, PolicyError> {
        let uid = |kind: &str, id: &str| {
            EntityTypeName::from_str(&format!("Gatehouse::{kind}"))
                .map(|t| EntityUid::from_type_name_and_id(t, EntityId::new(id)))
                .map_err(|e| PolicyError::Request(e.to_string()))
        };
        let principal = uid("Identity", &actor.id)?;
        let groups: Vec<EntityUid> = actor
            .groups
            .iter()
            .map(|g| uid("Group", g))
            .collect::<Result<_, _>>()?;
        let kind = match actor.kind {
            ActorKind::Human => "human",
            ActorKind::Agent => "agent",
            ActorKind::Service => "service",
            ActorKind::System => "system",
        };
        let resource_uid = uid("Resource", resource.name)?;
        let mut entities = vec![
            Entity::new(
                principal.clone(),
                HashMap::from([(
                    "kind".to_string(),
                    RestrictedExpression::new_string(kind.to_string()),
                )]),
                groups.iter().cloned().collect::<HashSet<_>>(),
            )
            .map_err(|e| PolicyError::Request(e.to_string()))?,
            Entity::new(resource_uid.clone(), resource.attributes(), HashSet::new())
                .map_err(|e| PolicyError::Request(e.to_string()))?,
        ];
        entities.extend(groups.into_iter().map(Entity::with_uid));
        let entities = Entities::from_entities(entities, Some(&self.schema))
            .map_err(|e| PolicyError::Request(e.to_string()))?;
        Ok(Principal {
            principal,
            resource: resource_uid,
            resource_name: resource.name.to_string(),
            action_type: EntityTypeName::from_str("Gatehouse::Action")
                .map_err(|e| PolicyError::Request(e.to_string()))?,
            entities,
        })
    }

    /// May the principal take `action` on its resource?
    pub fn action(&self, who: &Principal, action: Action) -> Result<PolicyDecision, PolicyError> {
        self.decide(who, action.name(), Context::empty())
    }

    /// The decision for a message: each statement by its class, the strictest wins. Text
    /// the parser could not read is not decided here (`on_unparsed` decides it).
    pub fn statements(
        &self,
        who: &Principal,
        analysis: &Analysis,
    ) -> Result<PolicyDecision, PolicyError> {
        let mut strictest = PolicyDecision {
            outcome: Outcome::Allow,
            policies: Vec::new(),
            message: None,
        };
        for statement in &analysis.statements {
            let commands = std::iter::once(&statement.command)
                .chain(statement.inner_commands.iter())
                .cloned()
                .map(RestrictedExpression::new_string);
            let context = Context::from_pairs([
                (
                    "command".to_string(),
                    RestrictedExpression::new_string(statement.command.clone()),
                ),
                (
                    "commands".to_string(),
                    RestrictedExpression::new_set(commands),
                ),
                (
                    "tables".to_string(),
                    RestrictedExpression::new_set(
                        table_names(&statement.tables)
                            .into_iter()
                            .map(RestrictedExpression::new_string),
                    ),
                ),
                (
                    "missing_where".to_string(),
                    RestrictedExpression::new_bool(statement.missing_where),
                ),
            ])
            .map_err(|e| PolicyError::Request(e.to_string()))?;
            // Its own class, then each class its function calls add: the strictest wins.
            let classes = std::iter::once(statement.class).chain(statement.effects.iter().copied());
            for class in classes {
                let decision = self.decide(who, class.as_str(), context.clone())?;
                if decision.outcome > strictest.outcome
                    || strictest.policies.is_empty() && decision.outcome == strictest.outcome
                {
                    strictest = decision;
                }
            }
        }
        Ok(strictest)
    }

    fn decide(
        &self,
        who: &Principal,
        action: &str,
        context: Context,
    ) -> Result<PolicyDecision, PolicyError> {
        let action_uid =
            EntityUid::from_type_name_and_id(who.action_type.clone(), EntityId::new(action));
        let request = Request::new(
            who.principal.clone(),
            action_uid,
            who.resource.clone(),
            context,
            Some(&self.schema),
        )
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let response = Authorizer::new().is_authorized(&request, &self.policies, &who.entities);
        if let Some(error) = response.diagnostics().errors().next() {
            // A policy that fails to evaluate is skipped by Cedar; say so, since it can
            // mean a forbid that never applies.
            return Err(PolicyError::Request(format!("policy evaluation: {error}")));
        }
        let policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        let annotation = |key: &str| {
            policies.iter().find_map(|id| {
                self.policies
                    .policy(&cedar_policy::PolicyId::new(id))
                    .and_then(|p| p.annotation(key))
                    .map(str::to_string)
            })
        };
        let outcome = match response.decision() {
            CedarDecision::Allow => Outcome::Allow,
            CedarDecision::Deny => {
                let all_review = !policies.is_empty()
                    && policies.iter().all(|id| {
                        self.policies
                            .policy(&cedar_policy::PolicyId::new(id))
                            .is_some_and(|p| p.annotation("review").is_some())
                    });
                if all_review {
                    Outcome::Review
                } else {
                    Outcome::Deny
                }
            }
        };
        let message = match outcome {
            Outcome::Allow => None,
            Outcome::Review => annotation("review"),
            Outcome::Deny if policies.is_empty() => Some(format!(
                "no policy permits {action} on {}",
                who.resource_name
            )),
            Outcome::Deny => annotation("message"),
        };
        Ok(PolicyDecision {
            outcome,
            policies,
            message,
        })
    }
}

/// Tables as written, and an unqualified one also as `public.<name>`, so a policy naming
/// `public.payroll` holds whether a statement writes `payroll` or `public.payroll`.
fn table_names(tables: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for t in tables {
        names.push(t.clone());
        if !t.contains('.') {
            names.push(format!("public.{t}"));
        }
    }
    names
}

/// A statement's decision from every layer, and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementDecision {
    pub outcome: Outcome,
    /// The guardrail rule that decided, if one did.
    pub rule: Option<String>,
    /// The Cedar policies that determined Cedar's part (also when a rule decided).
    pub policies: Vec<String>,
    pub message: Option<String>,
    /// For a review: every rule and `@review` policy that holds the statement. Each must
    /// be granted (or the review approved) for it to run.
    pub holders: Vec<String>,
}

/// The one place a statement is decided: the resource's guardrails (and `on_unparsed` for
/// text the parser cannot read) for an actor in `groups`, and Cedar's decision when there
/// is a policy (`cedar`, from [`PolicyEngine::statements`]); the stricter outcome wins, and
/// a policy that could not be evaluated refuses.
pub fn decide_statement(
    guardrails: &[Rule],
    on_unparsed: OnUnparsed,
    groups: &[String],
    analysis: &Analysis,
    cedar: Option<Result<PolicyDecision, PolicyError>>,
) -> StatementDecision {
    let rules = gatehouse_sql::evaluate(guardrails, analysis, groups, on_unparsed);
    let mut decision = StatementDecision {
        outcome: rules.outcome,
        rule: rules.rule,
        policies: Vec::new(),
        message: rules.message,
        holders: match rules.outcome {
            Outcome::Review => rules.holders,
            _ => Vec::new(),
        },
    };
    match cedar {
        // Without access policy nothing can permit reaching outside the database.
        None if analysis.classes().any(|c| c == StatementClass::External) => {
            decision.outcome = Outcome::Deny;
            decision.rule = None;
            decision.holders.clear();
            decision.message = Some(
                "it reaches outside the database (the server's files or programs, or another server); only an access policy permitting the `external` action allows that".into(),
            );
        }
        None => {}
        Some(Ok(cedar)) => {
            if cedar.outcome > decision.outcome {
                decision.outcome = cedar.outcome;
                decision.rule = None;
                decision.message = cedar.message;
                decision.holders.clear();
            }
            if decision.outcome == Outcome::Review && cedar.outcome == Outcome::Review {
                decision.holders.extend(cedar.policies.iter().cloned());
            }
            decision.policies = cedar.policies;
        }
        Some(Err(e)) => {
            decision.outcome = Outcome::Deny;
            decision.rule = None;
            decision.holders.clear();
            decision.message = Some(format!("the access policy could not be evaluated ({e})"));
        }
    }
    decision
}

/// The actions decided on a resource without a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a session.
    Connect,
    /// See clear values where masking applies (the recording is masked either way).
    Unmask,
    /// Approve or deny other people's held statements and access requests.
    Approve,
    /// See the resource's reviews and their statements (without deciding them).
    Audit,
}

impl Action {
    /// The action's name in the schema.
    pub fn name(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Unmask => "unmask",
            Action::Approve => "approve",
            Action::Audit => "audit",
        }
    }
}

/// What a session keeps of the policy: the engine it last decided with and its
/// [`Principal`] for that engine, rebuilt only when a reload has put another engine in
/// force, so a statement costs one authorization and not an entity build as well.
#[derive(Debug, Default)]
pub struct SessionPolicy {
    cached: Option<(Arc<PolicyEngine>, Result<Principal, String>)>,
}

impl SessionPolicy {
    /// May `actor` take `action` on `resource`, under the policy in force?
    pub fn action(
        &mut self,
        handle: &PolicyHandle,
        actor: &Actor,
        resource: &Target<'_>,
        action: Action,
    ) -> Result<PolicyDecision, PolicyError> {
        let (engine, who) = self.current(handle, actor, resource);
        engine.action(who?, action)
    }

    /// Cedar's decision for a message, under the policy in force.
    pub fn statements(
        &mut self,
        handle: &PolicyHandle,
        actor: &Actor,
        resource: &Target<'_>,
        analysis: &Analysis,
    ) -> Result<PolicyDecision, PolicyError> {
        let (engine, who) = self.current(handle, actor, resource);
        engine.statements(who?, analysis)
    }

    fn current(
        &mut self,
        handle: &PolicyHandle,
        actor: &Actor,
        resource: &Target<'_>,
    ) -> (&PolicyEngine, Result<&Principal, PolicyError>) {
        let engine = handle.get();
        let stale = self
            .cached
            .as_ref()
            .is_none_or(|(cached, _)| !Arc::ptr_eq(cached, &engine));
        if stale {
            let principal = engine.principal(actor, resource).map_err(|e| e.to_string());
            self.cached = Some((engine, principal));
        }
        let (engine, principal) = self.cached.as_ref().expect("filled above");
        (
            engine,
            principal
                .as_ref()
                .map_err(|e| PolicyError::Request(e.clone())),
        )
    }
}

/// The policy in force, replaceable while sessions run: a reload that loads and validates
/// swaps it in for every decision after it; one that fails leaves the old one in force.
#[derive(Debug)]
pub struct PolicyHandle {
    current: RwLock<Arc<PolicyEngine>>,
    policies: PathBuf,
    schema: Option<PathBuf>,
    /// Size and modification time of the files when last loaded (or last tried).
    seen: RwLock<Fingerprint>,
}

type Fingerprint = Vec<Option<(u64, SystemTime)>>;

impl PolicyHandle {
    /// Loads the files; an error here stops the gateway from starting.
    pub fn load(policies: &Path, schema: Option<&Path>) -> Result<PolicyHandle, PolicyError> {
        let engine = PolicyEngine::load(policies, schema)?;
        let handle = PolicyHandle {
            current: RwLock::new(Arc::new(engine)),
            policies: policies.to_path_buf(),
            schema: schema.map(Path::to_path_buf),
            seen: RwLock::new(Vec::new()),
        };
        *handle.seen.write().unwrap_or_else(|p| p.into_inner()) = handle.fingerprint();
        Ok(handle)
    }

    /// The policy in force now.
    pub fn get(&self) -> Arc<PolicyEngine> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn policies_path(&self) -> &Path {
        &self.policies
    }

    /// Loads the files again; on success the new policy is in force and its size is
    /// returned, on failure the old one stays and the error says why.
    pub fn reload(&self) -> Result<usize, PolicyError> {
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = self.fingerprint();
        let engine = PolicyEngine::load(&self.policies, self.schema.as_deref())?;
        let count = engine.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        Ok(count)
    }

    /// Whether a file changed (size or modification time) since the last load or try.
    pub fn changed(&self) -> bool {
        *self.seen.read().unwrap_or_else(|p| p.into_inner()) != self.fingerprint()
    }

    fn fingerprint(&self) -> Fingerprint {
        std::iter::once(&self.policies)
            .chain(self.schema.as_ref())
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.len(), m.modified().ok()?)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sql::analyze;

    const POLICIES: &str = r#"
@id("analysts-connect")
permit (principal in Gatehouse::Group::"analysts", action == Gatehouse::Action::"connect", resource);

@id("analysts-read")
permit (
  principal in Gatehouse::Group::"analysts",
  action in [Gatehouse::Action::"read", Gatehouse::Action::"transaction"],
  resource
);

@id("payroll-review")
@review("reading payroll needs an approval")
forbid (principal, action == Gatehouse::Action::"read", resource)
when { context.tables.contains("public.payroll") };

@id("dba-all")
permit (principal in Gatehouse::Group::"dba", action, resource);

@id("no-agent-writes")
@message("agents do not write here")
forbid (principal, action == Gatehouse::Action::"write", resource)
when { principal.kind == "agent" };
"#;

    fn engine() -> PolicyEngine {
        PolicyEngine::from_text(POLICIES, "policies.cedar", DEFAULT_SCHEMA, "schema").unwrap()
    }

    /// Cedar's connect decision for `who` on `on`.
    fn connect(e: &PolicyEngine, who: &Actor, on: &Target<'_>) -> PolicyDecision {
        e.action(&e.principal(who, on).unwrap(), Action::Connect)
            .unwrap()
    }

    /// Cedar's decision for `sql` by `who` on [`PG`].
    fn cedar(e: &PolicyEngine, who: &Actor, sql: &str) -> PolicyDecision {
        e.statements(&e.principal(who, PG).unwrap(), &analyze(sql))
            .unwrap()
    }

    fn actor(id: &str, kind: ActorKind, groups: &[&str]) -> Actor {
        Actor {
            id: id.into(),
            kind,
            idp: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    const PG: &Target<'static> = &Target {
        name: "pg-prod",
        kind: "postgres",
        environment: Some("production"),
        tags: &[],
    };

    #[test]
    fn connect_is_decided_by_group_and_named_by_policy_id() {
        let e = engine();
        assert_eq!(e.len(), 5);
        let ann = actor("ann", ActorKind::Human, &["analysts"]);
        let d = connect(&e, &ann, PG);
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(d.policies, ["analysts-connect"]);
        let stranger = actor("eve", ActorKind::Human, &[]);
        let d = connect(&e, &stranger, PG);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.policies.is_empty());
        assert_eq!(
            d.message.as_deref(),
            Some("no policy permits connect on pg-prod")
        );
    }

    #[test]
    fn statements_are_decided_by_class_and_context_and_review_is_an_annotation() {
        let e = engine();
        let ann = actor("ann", ActorKind::Human, &["analysts"]);
        let decide = |who: &Actor, sql: &str| cedar(&e, who, sql);
        assert_eq!(
            decide(&ann, "SELECT * FROM customers").outcome,
            Outcome::Allow
        );
        let payroll = decide(&ann, "BEGIN; SELECT * FROM payroll; COMMIT");
        assert_eq!(payroll.outcome, Outcome::Review);
        assert_eq!(payroll.policies, ["payroll-review"]);
        assert_eq!(
            payroll.message.as_deref(),
            Some("reading payroll needs an approval")
        );
        // No permit for writes: Cedar's default deny.
        let write = decide(&ann, "DELETE FROM customers WHERE id = 1");
        assert_eq!(write.outcome, Outcome::Deny);
        // A forbid beats a permit, and its message is reported.
        let bot = actor("agent:fixer", ActorKind::Agent, &["dba"]);
        let d = decide(&bot, "UPDATE customers SET name = 'x' WHERE id = 1");
        assert_eq!(
            (d.outcome, d.policies.clone()),
            (Outcome::Deny, vec!["no-agent-writes".to_string()])
        );
        assert_eq!(d.message.as_deref(), Some("agents do not write here"));
        let dba = actor("dora", ActorKind::Human, &["dba"]);
        assert_eq!(decide(&dba, "DROP TABLE customers").outcome, Outcome::Allow);
        // The strictest statement of a message decides it.
        assert_eq!(
            decide(&ann, "SELECT 1; DROP TABLE customers").outcome,
            Outcome::Deny
        );
    }

    #[test]
    fn every_command_inside_and_every_class_a_call_adds_are_decided() {
        let text = r#"@id("readers")
permit (principal, action == Gatehouse::Action::"read", resource);
@id("no-hidden-deletes")
@message("no deletes, even inside a WITH")
forbid (principal, action in [Gatehouse::Action::"read", Gatehouse::Action::"write"], resource)
  when { context.commands.contains("DELETE") };"#;
        let e = PolicyEngine::from_text(text, "p.cedar", DEFAULT_SCHEMA, "schema").unwrap();
        let ana = actor("ana", ActorKind::Human, &[]);
        assert_eq!(cedar(&e, &ana, "SELECT 1").outcome, Outcome::Allow);
        // A read that also reaches the server's files is decided as `external` too.
        let d = cedar(&e, &ana, "SELECT pg_read_file('/etc/passwd')");
        assert_eq!(d.outcome, Outcome::Deny);
        // A DELETE inside a WITH is one of the statement's commands.
        let d = cedar(
            &e,
            &ana,
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        );
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.policies, ["no-hidden-deletes"]);
        // Without access policy, reaching outside the database is denied by default.
        let external = analyze("COPY t TO PROGRAM 'sh'");
        let d = decide_statement(&[], OnUnparsed::Deny, &[], &external, None);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.message.unwrap().contains("external"));
        let plain = analyze("COPY t TO STDOUT");
        assert_eq!(
            decide_statement(&[], OnUnparsed::Deny, &[], &plain, None).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn every_rule_and_policy_holding_a_statement_is_named() {
        let text = r#"@id("read-all")
permit (principal, action == Gatehouse::Action::"read", resource);
@id("payroll-review")
@review("payroll needs an approval")
forbid (principal, action == Gatehouse::Action::"read", resource)
  when { context.tables.contains("public.payroll") };"#;
        let e = PolicyEngine::from_text(text, "p.cedar", DEFAULT_SCHEMA, "schema").unwrap();
        let ana = actor("ana", ActorKind::Human, &[]);
        let rule = Rule {
            tables: vec!["public.payroll".into()],
            ..Rule::new("pii-review", gatehouse_sql::RuleAction::Review)
        };
        let analysis = analyze("SELECT * FROM payroll");
        let cedar_decision = e.statements(&e.principal(&ana, PG).unwrap(), &analysis);
        let d = decide_statement(
            &[rule],
            OnUnparsed::Deny,
            &[],
            &analysis,
            Some(cedar_decision),
        );
        assert_eq!(d.outcome, Outcome::Review);
        assert_eq!(d.holders, ["pii-review", "payroll-review"]);
    }

    #[test]
    fn admin_names_every_administrative_class() {
        let text = r#"@id("ops-admin")
permit (principal in Gatehouse::Group::"ops", action in Gatehouse::Action::"admin", resource);"#;
        let e = PolicyEngine::from_text(text, "p.cedar", DEFAULT_SCHEMA, "schema").unwrap();
        let ops = actor("olga", ActorKind::Human, &["ops"]);
        for sql in [
            "CREATE TABLE t (i int)",
            "GRANT SELECT ON t TO bob",
            "VACUUM",
            "DO $$ BEGIN END $$",
            "COPY t FROM '/tmp/x'",
        ] {
            let d = cedar(&e, &ops, sql);
            assert_eq!(d.outcome, Outcome::Allow, "{sql}");
        }
        for sql in ["SELECT 1", "DELETE FROM t WHERE i = 1"] {
            let d = cedar(&e, &ops, sql);
            assert_eq!(d.outcome, Outcome::Deny, "{sql}");
        }
    }

    #[test]
    fn resource_attributes_are_visible_to_policies() {
        let text = r#"@id("prod-needs-tag")
permit (principal, action == Gatehouse::Action::"connect", resource)
when { resource has environment && resource.environment == "production" && resource.tags.contains("pci") };"#;
        let e = PolicyEngine::from_text(text, "p.cedar", DEFAULT_SCHEMA, "schema").unwrap();
        let ann = actor("ann", ActorKind::Human, &[]);
        let tags = ["pci".to_string()];
        let tagged = Target { tags: &tags, ..*PG };
        assert_eq!(connect(&e, &ann, &tagged).outcome, Outcome::Allow);
        assert_eq!(connect(&e, &ann, PG).outcome, Outcome::Deny);
        let staging = Target {
            environment: None,
            ..tagged
        };
        assert_eq!(connect(&e, &ann, &staging).outcome, Outcome::Deny);
    }

    #[test]
    fn bad_policies_are_refused_at_load_with_file_and_policy() {
        let unknown_attr = r#"@id("by-department")
permit (principal, action, resource) when { principal.department == "finance" };"#;
        let err = PolicyEngine::from_text(unknown_attr, "p.cedar", DEFAULT_SCHEMA, "schema")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.cedar: policy by-department:"), "{err}");
        let err = PolicyEngine::from_text("permit (principal", "p.cedar", DEFAULT_SCHEMA, "schema")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.cedar: "), "{err}");
        let err = PolicyEngine::from_text("", "p.cedar", "namespace {", "s.cedarschema")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.cedarschema: "), "{err}");
    }

    #[test]
    fn a_reload_swaps_in_a_good_policy_and_keeps_the_old_one_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.cedar");
        std::fs::write(&path, POLICIES).unwrap();
        let handle = PolicyHandle::load(&path, None).unwrap();
        let before = handle.get();
        assert!(!handle.changed());
        let ann = actor("ann", ActorKind::Human, &["analysts"]);
        assert_eq!(connect(&before, &ann, PG).outcome, Outcome::Allow);

        let mut session = SessionPolicy::default();
        let allowed = session.action(&handle, &ann, PG, Action::Connect).unwrap();
        assert_eq!(allowed.outcome, Outcome::Allow);
        std::fs::write(
            &path,
            "@id(\"nobody\")\nforbid (principal, action, resource);\n",
        )
        .unwrap();
        assert!(handle.changed());
        assert_eq!(handle.reload().unwrap(), 1);
        assert!(!handle.changed());
        assert_eq!(connect(&handle.get(), &ann, PG).outcome, Outcome::Deny);
        // A session's cached entities follow the reload.
        let after = session.action(&handle, &ann, PG, Action::Connect).unwrap();
        assert_eq!(after.outcome, Outcome::Deny);
        // A decision already holding the old policy keeps it to its end.
        assert_eq!(connect(&before, &ann, PG).outcome, Outcome::Allow);

        std::fs::write(
            &path,
            "permit (principal, action, resource) when { principal.x };",
        )
        .unwrap();
        let err = handle.reload().unwrap_err().to_string();
        assert!(err.contains("policies.cedar"), "{err}");
        assert_eq!(handle.get().len(), 1, "the last good policy stays in force");
        assert!(
            !handle.changed(),
            "a failed try is not retried until the file changes again"
        );
    }

    #[test]
    fn guardrails_and_cedar_decide_together_and_the_stricter_wins() {
        let e = engine();
        let ann = actor("ann", ActorKind::Human, &["analysts"]);
        let deny_drop = Rule {
            message: Some("not here".into()),
            commands: vec!["DROP TABLE".into()],
            ..Rule::new("no-drop", gatehouse_sql::RuleAction::Deny)
        };
        let rules = [deny_drop];
        let decide = |who: &Actor, sql: &str| {
            let cedar = e.statements(&e.principal(who, PG).unwrap(), &analyze(sql));
            decide_statement(
                &rules,
                OnUnparsed::Deny,
                &who.groups,
                &analyze(sql),
                Some(cedar),
            )
        };
        // A rule denies what Cedar would allow (dba may do anything).
        let dba = actor("dora", ActorKind::Human, &["dba"]);
        let d = decide(&dba, "DROP TABLE customers");
        assert_eq!(
            (d.outcome, d.rule.as_deref()),
            (Outcome::Deny, Some("no-drop"))
        );
        assert_eq!(d.policies, ["dba-all"], "Cedar's part is recorded too");
        // Cedar holds what no rule minds.
        let d = decide(&ann, "SELECT * FROM payroll");
        assert_eq!((d.outcome, d.rule), (Outcome::Review, None));
        assert_eq!(d.policies, ["payroll-review"]);
        // Without a policy the rules alone decide.
        let d = decide_statement(
            &rules,
            OnUnparsed::Deny,
            &ann.groups,
            &analyze("SELECT 1"),
            None,
        );
        assert_eq!(d.outcome, Outcome::Allow);
        let d = decide_statement(
            &rules,
            OnUnparsed::Review,
            &ann.groups,
            &analyze("SELEC 1"),
            None,
        );
        assert_eq!(
            d.outcome,
            Outcome::Review,
            "unreadable text follows on_unparsed"
        );
    }

    #[test]
    fn files_are_read_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.cedar");
        std::fs::write(&path, POLICIES).unwrap();
        assert_eq!(PolicyEngine::load(&path, None).unwrap().len(), 5);
        let missing = dir.path().join("nope.cedar");
        let err = PolicyEngine::load(&missing, None).unwrap_err().to_string();
        assert!(err.contains("nope.cedar"), "{err}");
    }
}
