//! Masking on the PostgreSQL data path: which result columns a rule masks whole (from the
//! server's column origins, the catalog and the statement's lineage), and the rewriting of
//! result, COPY, notification, error and notice messages. Pure: the catalog is read by the
//! session before a plan is built, and the same rewritten bytes feed the client (unless
//! policy lets it see clear values) and the recording.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_config::{DetectorSelection, MaskingConfig};
use gatehouse_mask::{
    ColumnRule, ColumnRules, Counts, Detectors, Findings, Kind, MaskError, Masker, Strategy,
};
use gatehouse_sql::Lexical;
use gatehouse_sql::lineage::{CopyFormat, CopyKind, Lineage, Output, Sources};
use gatehouse_wire_pg::copy;
use gatehouse_wire_pg::rows::{self, FieldDescription};
use gatehouse_wire_pg::types::{self, Leaf, TypeClass};
use gatehouse_wire_pg::{backend, frontend};
use smallvec::SmallVec;

use crate::catalog::{Catalog, MAX_VIEW_DEPTH, Relation};
use crate::encoding::ClientEncoding;

/// A resource's masking: detectors with their strategies, and column rules.
#[derive(Debug)]
pub struct MaskPolicy {
    pub masker: Masker,
    pub columns: ColumnRules,
    /// Whether values of types whose text cannot hold a detector's finding (timestamps,
    /// UUIDs, ...) skip the detectors: only when no user pattern could match them.
    skip_inert: bool,
}

impl MaskPolicy {
    /// Builds the policy of `[resources.masking]`; `key` keys the `hash` strategy.
    pub fn from_config(config: &MaskingConfig, key: &[u8]) -> Result<MaskPolicy, MaskError> {
        let builtin: Vec<Kind> = match &config.detectors {
            DetectorSelection::All => Kind::BUILTIN.to_vec(),
            DetectorSelection::Default => Kind::BUILTIN
                .into_iter()
                .filter(|k| !DetectorSelection::NOT_BY_DEFAULT.contains(&k.name()))
                .collect(),
            DetectorSelection::Only(names) => {
                names.iter().filter_map(|n| Kind::builtin(n)).collect()
            }
        };
        let custom: Vec<(String, String)> = config
            .patterns
            .iter()
            .map(|p| (p.name.clone(), p.regex.clone()))
            .collect();
        let mut masker = Masker::new(Detectors::select(&builtin, &custom)?, key)?;
        for pattern in &config.patterns {
            masker = masker.with_strategy(&pattern.name, pattern.strategy.0);
        }
        for (kind, strategy) in &config.strategies {
            masker = masker.with_strategy(kind, strategy.0);
        }
        let columns = ColumnRules::new(
            config
                .columns
                .iter()
                .map(|c| ColumnRule {
                    pattern: c.column.clone(),
                    strategy: c.strategy.0,
                    label: c
                        .label
                        .clone()
                        .unwrap_or_else(|| c.column.rsplit('.').next().unwrap_or("").to_string()),
                })
                .collect(),
        )?;
        let skip_inert = !masker.has_custom_patterns();
        Ok(MaskPolicy {
            masker,
            columns,
            skip_inert,
        })
    }

    /// Whether lineage (and so the catalog) matters: only column rules need it.
    pub fn has_rules(&self) -> bool {
        !self.columns.is_empty()
    }

    fn tainted<'a>(
        &'a self,
        sources: &Sources,
        views: &'a HashMap<String, Arc<str>>,
    ) -> Option<Taint<'a>> {
        for name in &sources.columns {
            if let Some(rule) = self.columns.by_column_name(name) {
                return Some(Taint::Rule(rule));
            }
            if let Some(label) = views.get(name) {
                return Some(Taint::View(label.clone()));
            }
        }
        sources
            .relations
            .iter()
            .find_map(|r| self.columns.by_relation(r))
            .map(Taint::Rule)
    }
}

enum Taint<'a> {
    Rule(&'a ColumnRule),
    /// A column of a view computed from a masked column (the rule's label).
    View(Arc<str>),
}

/// How one result column is masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnMask {
    /// Content detectors, as the type allows.
    Content,
    /// Masked whole by a column rule, whatever it holds.
    Rule { strategy: Strategy, label: Arc<str> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    pub mask: ColumnMask,
    pub type_oid: u32,
    pub format: i16,
    /// The type's class, read from the catalog when the plan is built.
    class: TypeClass,
    /// What the row loop does with each value, decided here once rather than per value.
    route: Route,
}

/// The row loop's path for one column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Text in text format: through the detectors, masked straight into the row.
    Detect,
    /// Text masked whole by a rule that writes text.
    RuleText,
    /// Content masking of a type whose text cannot hold a finding: passed as it is.
    Inert,
    /// Everything else (binary formats, JSON, arrays, numbers, NULL strategies).
    Other,
}

impl ColumnPlan {
    /// A column of type `type_oid` in `format`, masked as `mask` says; the type's class
    /// comes from `catalog` (loaded before the plan is built).
    pub fn new(
        policy: &MaskPolicy,
        catalog: &Catalog,
        mask: ColumnMask,
        type_oid: u32,
        format: i16,
    ) -> ColumnPlan {
        let class = catalog.type_class(type_oid);
        let route = match &mask {
            ColumnMask::Content if policy.skip_inert && types::text_is_inert(type_oid) => {
                Route::Inert
            }
            ColumnMask::Content if format == 0 && class == TypeClass::Text => Route::Detect,
            // A text value's binary format is its text.
            ColumnMask::Rule { strategy, .. }
                if *strategy != Strategy::Null && class == TypeClass::Text =>
            {
                Route::RuleText
            }
            _ => Route::Other,
        };
        ColumnPlan {
            mask,
            type_oid,
            format,
            class,
            route,
        }
    }
}

/// How each column of one result is masked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultPlan {
    pub columns: Vec<ColumnPlan>,
}

/// What masking knows of one statement execution: where its columns come from, and (once
/// described) how each is masked; and what was masked.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub source: Option<Arc<Source>>,
    /// Extended protocol: the prepared statement executed, whose description the server
    /// may have given before this execution.
    pub statement: Option<String>,
    /// The Bind's result formats.
    pub formats: Option<Vec<i16>>,
    pub plan: Option<Arc<ResultPlan>>,
    pub copy: Option<Arc<CopyPlan>>,
    /// CopyData messages seen so far (the first may be a header line).
    pub copy_rows: u64,
    pub counts: MaskCounts,
    /// The statement changes the schema: the catalog is read afresh after it.
    pub ddl: bool,
    /// Whether its error and notice texts are masked whole ([`texts_tainted`]); `None`
    /// until its first such message asks.
    pub texts_tainted: Option<bool>,
}

/// What the client reads in place of a message that may quote masked values.
const TAINTED_MESSAGE: &str = "gatehouse: message masked: the statement read masked columns, and the message may quote their values";

/// The statement behind a result, as masking reads it.
#[derive(Debug)]
pub struct Source {
    pub sql: String,
    pub lineage: Option<Lineage>,
    /// Relations the statement names (views among them are looked into).
    pub relations: Vec<String>,
    /// Plans already built for this statement's results, so a repeated statement costs a
    /// comparison of its description, not a plan (see [`Source::plan`]).
    pub plans: std::sync::Mutex<Vec<CachedPlan>>,
}

/// A plan and what it was built from.
#[derive(Debug)]
pub struct CachedPlan {
    description: Vec<u8>,
    formats: Option<Vec<i16>>,
    /// The catalog generation it was built on; a newer catalog makes it stale.
    generation: u64,
    plan: Arc<ResultPlan>,
}

/// Plans kept per statement: one result shape each, rarely more (a multi-statement query,
/// a portal described with different formats).
const PLANS_PER_STATEMENT: usize = 4;

impl Source {
    pub fn new(sql: String, lineage: Option<Lineage>, relations: Vec<String>) -> Source {
        Source {
            sql,
            lineage,
            relations,
            plans: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The plan built earlier for this description and these formats, unless the catalog
    /// changed since.
    pub fn plan(
        &self,
        description: &[u8],
        formats: Option<&[i16]>,
        generation: u64,
    ) -> Option<Arc<ResultPlan>> {
        let plans = self.plans.lock().expect("plan cache lock");
        plans
            .iter()
            .find(|c| {
                c.generation == generation
                    && c.description == description
                    && c.formats.as_deref() == formats
            })
            .map(|c| c.plan.clone())
    }

    /// Keeps a plan for [`Source::plan`].
    pub fn keep(
        &self,
        description: &[u8],
        formats: Option<Vec<i16>>,
        generation: u64,
        plan: Arc<ResultPlan>,
    ) {
        let mut plans = self.plans.lock().expect("plan cache lock");
        plans.retain(|c| c.generation == generation);
        if plans.len() >= PLANS_PER_STATEMENT {
            plans.remove(0);
        }
        plans.push(CachedPlan {
            description: description.to_vec(),
            formats,
            generation,
            plan,
        });
    }
}

/// What was masked in one result: never the values, only how many by which rule or
/// detector. Goes into the `result` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCounts {
    pub rules: Tally,
    pub detectors: DetectorCounts,
    /// Values whose binary format could not be read, sent as NULL.
    pub undecodable: u64,
}

impl MaskCounts {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.detectors.is_empty() && self.undecodable == 0
    }

    /// `{"values": n, "rules": {label: n}, "detectors": {kind: n}}`, plus `undecodable`
    /// when some were. Built field by field: this runs once per result.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::Map::with_capacity(4);
        let values = self.rules.total() + self.detectors.total() + self.undecodable;
        v.insert("values".into(), values.into());
        v.insert(
            "rules".into(),
            counts_json(self.rules.0.iter().map(|(k, n)| (&**k, *n))),
        );
        v.insert("detectors".into(), self.detectors.to_json());
        if self.undecodable > 0 {
            v.insert("undecodable".into(), self.undecodable.into());
        }
        serde_json::Value::Object(v)
    }

    fn rule(&mut self, label: &str) {
        self.rules.bump(label, 1);
    }

    fn add(&mut self, kinds: Counts<'_>) {
        for (kind, n) in kinds.iter() {
            self.detectors.bump(kind, *n);
        }
    }
}

/// Values masked by each detector: a slot per built-in kind, counted by its index (this
/// runs once per masked value, so no name is compared), and user-defined kinds by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectorCounts {
    builtin: [u64; Kind::BUILTIN.len()],
    custom: Tally,
}

impl DetectorCounts {
    pub fn is_empty(&self) -> bool {
        self.builtin.iter().all(|&n| n == 0) && self.custom.is_empty()
    }

    /// One value masked as `kind`.
    fn found(&mut self, kind: &Kind) {
        match kind.index() {
            Some(i) => self.builtin[i] += 1,
            None => self.custom.bump(kind.name(), 1),
        }
    }

    /// `n` values masked as the kind called `name`.
    fn bump(&mut self, name: &str, n: u64) {
        match Kind::builtin(name).and_then(|k| k.index()) {
            Some(i) => self.builtin[i] += n,
            None => self.custom.bump(name, n),
        }
    }

    /// How many values the kind called `name` masked.
    pub fn get(&self, name: &str) -> u64 {
        match Kind::builtin(name).and_then(|k| k.index()) {
            Some(i) => self.builtin[i],
            None => self.custom.get(name),
        }
    }

    fn total(&self) -> u64 {
        self.builtin.iter().sum::<u64>() + self.custom.total()
    }

    /// `{name: count}` for every kind that masked something.
    fn to_json(&self) -> serde_json::Value {
        let builtin = Kind::BUILTIN
            .iter()
            .zip(&self.builtin)
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| (kind.name(), *n));
        counts_json(builtin.chain(self.custom.0.iter().map(|(k, n)| (&**k, *n))))
    }
}

/// Counts by name, in the order first met. A result masks a few kinds at most, and this
/// runs once per masked value: a short list finds a name with a length check or two where
/// a map compares it with every key on its way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(Vec<(Box<str>, u64)>);

impl Tally {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many `name` counted.
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(k, _)| **k == *name)
            .map_or(0, |(_, n)| *n)
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// Adds `n` to `name`'s count, allocating the name only the first time it is met.
    fn bump(&mut self, name: &str, n: u64) {
        match self.0.iter_mut().find(|(k, _)| **k == *name) {
            Some((_, count)) => *count += n,
            None => self.0.push((name.into(), n)),
        }
    }
}

/// `{name: count}` with the names in order (a user pattern named as a built-in kind adds
/// to its count).
fn counts_json<'a>(counts: impl Iterator<Item = (&'a str, u64)>) -> serde_json::Value {
    let mut sorted: SmallVec<[(&str, u64); 4]> = counts.collect();
    sorted.sort_unstable_by_key(|(name, _)| *name);
    // Equal names are now neighbours: merged here, each name is inserted once, unlooked-up.
    sorted.dedup_by(|(name, n), (kept, total)| {
        let same = name == kept;
        if same {
            *total += *n;
        }
        same
    });
    let mut map = serde_json::Map::with_capacity(sorted.len());
    for (name, n) in sorted {
        map.insert(name.to_string(), n.into());
    }
    serde_json::Value::Object(map)
}

/// The relation OIDs, type OIDs and relation names a plan for `fields` needs from the
/// catalog (so the session can load them first).
pub fn catalog_needs(
    policy: &MaskPolicy,
    fields: &[FieldDescription<'_>],
    source: Option<&Source>,
) -> CatalogNeeds {
    let types: Vec<u32> = fields.iter().map(|f| f.type_oid).collect();
    if !policy.has_rules() {
        return CatalogNeeds {
            types,
            ..CatalogNeeds::default()
        };
    }
    let relations: Vec<u32> = fields
        .iter()
        .map(|f| f.table_oid)
        .filter(|o| *o != 0)
        .collect();
    CatalogNeeds {
        relations,
        types,
        ..CatalogNeeds::of_statement(source)
    }
}

/// What the catalog must say before a plan, or a message's masking, can be decided.
#[derive(Debug, Default)]
pub struct CatalogNeeds {
    pub relations: Vec<u32>,
    pub types: Vec<u32>,
    /// Relations the statement names.
    pub names: Vec<String>,
    /// Functions the statement calls.
    pub functions: Vec<String>,
}

impl CatalogNeeds {
    /// The names and functions of a statement.
    pub fn of_statement(source: Option<&Source>) -> CatalogNeeds {
        CatalogNeeds {
            names: source.map(|s| s.relations.clone()).unwrap_or_default(),
            functions: source
                .and_then(|s| s.lineage.as_ref())
                .map(|l| l.functions.clone())
                .unwrap_or_default(),
            ..CatalogNeeds::default()
        }
    }
}

/// Whether a statement calls a function that may be user-defined (or one the catalog has
/// not answered for): such a function can read any column and return it transformed,
/// beyond what the statement's lineage shows.
fn calls_user_function(catalog: &Catalog, lineage: &Lineage) -> bool {
    lineage
        .functions
        .iter()
        .any(|f| catalog.user_function(f) != Some(false))
}

/// Whether the error and notice texts of a statement may quote values of masked columns,
/// transformed past what a detector recognises (`CAST(reverse(email) AS int)` puts the
/// reversed address in the error): with column rules, when the statement names a relation
/// holding masked columns (a view over them included), calls a user-defined function,
/// runs code (DO, CALL, EXECUTE), or cannot be read. Such texts are masked whole.
pub fn texts_tainted(policy: &MaskPolicy, catalog: &Catalog, source: Option<&Source>) -> bool {
    if !policy.has_rules() {
        return false;
    }
    let Some(lineage) = source.and_then(|s| s.lineage.as_ref()) else {
        return true;
    };
    if lineage.opaque || lineage.runs_code || calls_user_function(catalog, lineage) {
        return true;
    }
    source.is_some_and(|s| {
        s.relations.iter().any(|name| {
            if policy.columns.by_relation(name).is_some() {
                return true;
            }
            match catalog.cached_name(name) {
                // Not read yet (the catalog could not be reached): it could be anything.
                None => true,
                // No such relation: the statement fails on its name alone.
                Some(None) => false,
                Some(Some(oid)) => match catalog.cached_relation(oid) {
                    Some(Some(rel)) => {
                        policy
                            .columns
                            .by_relation(&format!("{}.{}", rel.schema, rel.name))
                            .is_some()
                            || view_columns(policy, catalog, &rel)
                                .iter()
                                .any(Option::is_some)
                    }
                    Some(None) => false,
                    None => true,
                },
            }
        })
    })
}

/// The masked view columns a statement can refer to by name (none without column rules).
fn statement_views(
    policy: &MaskPolicy,
    catalog: &Catalog,
    source: Option<&Source>,
) -> HashMap<String, Arc<str>> {
    match (policy.has_rules(), source) {
        (true, Some(source)) => view_taints(policy, catalog, &source.relations),
        _ => HashMap::new(),
    }
}

/// For each view among `names` (cached in `catalog`), the names of its columns computed
/// from a masked column, with the rule's label.
fn view_taints(
    policy: &MaskPolicy,
    catalog: &Catalog,
    names: &[String],
) -> HashMap<String, Arc<str>> {
    let oids = names
        .iter()
        .filter_map(|name| catalog.cached_name(name).flatten());
    taints_of(policy, catalog, oids, 0)
}

/// The masked columns (by name, with their label) of the views among `oids`.
fn taints_of(
    policy: &MaskPolicy,
    catalog: &Catalog,
    oids: impl IntoIterator<Item = u32>,
    depth: usize,
) -> HashMap<String, Arc<str>> {
    let mut tainted = HashMap::new();
    for oid in oids {
        if let Some(Some(rel)) = catalog.cached_relation(oid) {
            let columns = view_columns_at(policy, catalog, &rel, depth);
            for (col, label) in columns.into_iter().flatten() {
                tainted.insert(col, label);
            }
        }
    }
    tainted
}

/// The masked columns of a view: per column in attribute order, its name and label when
/// its definition computes it from a masked column, directly or through the views it
/// reads (followed down to [`MAX_VIEW_DEPTH`]). Tables give nothing.
fn view_columns(
    policy: &MaskPolicy,
    catalog: &Catalog,
    rel: &Relation,
) -> Vec<Option<(String, Arc<str>)>> {
    view_columns_at(policy, catalog, rel, 0)
}

fn view_columns_at(
    policy: &MaskPolicy,
    catalog: &Catalog,
    rel: &Relation,
    depth: usize,
) -> Vec<Option<(String, Arc<str>)>> {
    let Some(definition) = &rel.definition else {
        return Vec::new();
    };
    let lineage = gatehouse_sql::lineage::lineage(definition);
    let inner = if depth < MAX_VIEW_DEPTH {
        taints_of(policy, catalog, rel.depends.iter().copied(), depth + 1)
    } else {
        HashMap::new()
    };
    rel.ordered_columns()
        .into_iter()
        .enumerate()
        .map(|(i, (_, name, _))| {
            let taint = match lineage.outputs.get(i) {
                // A view calling a user-defined function: any of its columns may carry a
                // masked value the function read.
                _ if calls_user_function(catalog, &lineage) => {
                    Some(Taint::View(Arc::from("user_function")))
                }
                _ if lineage.opaque => policy.columns.by_relation(&rel.name).map(Taint::Rule),
                Some(Output::Column(s)) | Some(Output::Star { sources: s, .. }) => {
                    policy.tainted(s, &inner)
                }
                None => None,
            };
            taint.map(|t| (name.to_string(), label_of(&t)))
        })
        .collect()
}

fn label_of(t: &Taint<'_>) -> Arc<str> {
    match t {
        Taint::Rule(rule) => rule.label.as_str().into(),
        Taint::View(label) => label.clone(),
    }
}

/// Builds the plan of a result described by `fields`. `formats` overrides the formats in
/// `fields` (a statement's description has zeros; the Bind says what was asked for).
/// Everything it needs from `catalog` must have been loaded; what is missing there counts
/// as unresolved, and with column rules configured an unresolved origin is masked whole.
pub fn plan(
    policy: &MaskPolicy,
    catalog: &Catalog,
    fields: &[FieldDescription<'_>],
    formats: Option<&[i16]>,
    source: Option<&Source>,
) -> ResultPlan {
    let lineage = source.and_then(|s| s.lineage.as_ref());
    let n = fields.len();
    let format = |i: usize| match formats {
        Some(f) => frontend::result_format(f, i),
        None => fields[i].format,
    };
    let rules = policy.has_rules();
    let views = statement_views(policy, catalog, source);
    // A user-defined function can return any column transformed: computed columns of a
    // statement that calls one are read as of unknown lineage.
    let opaque = Lineage {
        opaque: true,
        ..Lineage::default()
    };
    let lineage = match lineage {
        Some(l) if rules && calls_user_function(catalog, l) => Some(&opaque),
        other => other,
    };
    let targets = lineage.map(|l| align(l, n));
    let columns = (0..n)
        .map(|i| {
            let field = &fields[i];
            let mask = if !rules {
                ColumnMask::Content
            } else {
                // A column the server traces to a table column is that column's value:
                // its origin decides. Only computed columns need the statement's lineage.
                let by_origin = origin_rule(policy, catalog, field);
                let by_lineage = match &targets {
                    _ if field.table_oid != 0 && field.column > 0 => None,
                    Some(t) => match &t[i] {
                        Target::Sources(s) => {
                            policy.tainted(s, &views).map(|t| label_rule(policy, &t))
                        }
                        // Nothing is known of a computed column: mask it.
                        Target::Unknown if field.table_oid == 0 => {
                            Some((Strategy::Redact, Arc::from("unknown_lineage")))
                        }
                        Target::Unknown => None,
                    },
                    None => None,
                };
                match by_origin.or(by_lineage) {
                    Some((strategy, label)) => ColumnMask::Rule { strategy, label },
                    None => ColumnMask::Content,
                }
            };
            ColumnPlan::new(policy, catalog, mask, field.type_oid, format(i))
        })
        .collect();
    ResultPlan { columns }
}

fn label_rule(policy: &MaskPolicy, t: &Taint<'_>) -> (Strategy, Arc<str>) {
    match t {
        Taint::Rule(rule) => (rule.strategy, rule.label.as_str().into()),
        // A view column: the strategy of the rule called that, else redaction.
        Taint::View(label) => {
            let strategy = policy
                .columns
                .by_column_name(label)
                .map(|r| r.strategy)
                .unwrap_or(Strategy::Redact);
            (strategy, label.clone())
        }
    }
}

/// The rule for a column the server says comes from a table (or view) column.
fn origin_rule(
    policy: &MaskPolicy,
    catalog: &Catalog,
    field: &FieldDescription<'_>,
) -> Option<(Strategy, Arc<str>)> {
    if field.table_oid == 0 || field.column <= 0 {
        return None;
    }
    match catalog.cached_relation(field.table_oid) {
        Some(Some(rel)) => {
            let (name, _) = rel.columns.get(&field.column)?;
            if let Some(rule) = policy.columns.find(&rel.schema, &rel.name, name) {
                return Some((rule.strategy, rule.label.as_str().into()));
            }
            if rel.definition.is_some() {
                let ordered = rel.ordered_columns();
                let position = ordered.iter().position(|c| c.0 == field.column)?;
                let (_, label) = view_columns(policy, catalog, &rel)
                    .get(position)
                    .cloned()
                    .flatten()?;
                return Some(label_rule(policy, &Taint::View(label)));
            }
            None
        }
        // The catalog could not say where it comes from: fail closed.
        _ => Some((Strategy::Redact, Arc::from("unresolved"))),
    }
}

/// What the statement's lineage says about one result column.
enum Target<'a> {
    Sources(&'a Sources),
    Unknown,
}

/// Lines the statement's outputs up with the `n` result columns: outputs before the first
/// `*` from the start, outputs after the last from the end; columns a `*` covers take the
/// star's sources.
fn align(lineage: &Lineage, n: usize) -> Vec<Target<'_>> {
    if lineage.opaque {
        return (0..n).map(|_| Target::Unknown).collect();
    }
    let outs = &lineage.outputs;
    let first_star = outs.iter().position(|o| matches!(o, Output::Star { .. }));
    let Some(first) = first_star else {
        if outs.len() != n {
            return (0..n).map(|_| Target::Unknown).collect();
        }
        return outs
            .iter()
            .map(|o| match o {
                Output::Column(s) => Target::Sources(s),
                Output::Star { sources, .. } => Target::Sources(sources),
            })
            .collect();
    };
    let last = outs
        .iter()
        .rposition(|o| matches!(o, Output::Star { .. }))
        .unwrap_or(first);
    let tail = outs.len() - last - 1;
    if first + tail > n {
        return (0..n).map(|_| Target::Unknown).collect();
    }
    // Sources of everything between the first and last star, for the columns they cover.
    let middle: Vec<&Sources> = outs[first..=last]
        .iter()
        .map(|o| match o {
            Output::Column(s) => s,
            Output::Star { sources, .. } => sources,
        })
        .collect();
    (0..n)
        .map(|i| {
            if i < first {
                match &outs[i] {
                    Output::Column(s) | Output::Star { sources: s, .. } => Target::Sources(s),
                }
            } else if i >= n - tail {
                match &outs[outs.len() - (n - i)] {
                    Output::Column(s) | Output::Star { sources: s, .. } => Target::Sources(s),
                }
            } else if middle.len() == 1 {
                Target::Sources(middle[0])
            } else {
                // Several stars: which one covers this column is not known here; the
                // column's origin (if any) still decides, and a computed one is masked.
                Target::Unknown
            }
        })
        .collect()
}

/// What masking did to one value.
enum Change {
    Keep,
    Replace(Vec<u8>),
    Null,
}

/// A change to an element of an array or record.
fn leaf_of(change: Change) -> Leaf {
    match change {
        Change::Keep => Leaf::Keep,
        Change::Replace(bytes) => Leaf::Replace(bytes),
        Change::Null => Leaf::Null,
    }
}

/// `jsonpath`: classed with `jsonb` for its binary format (a version byte, then the text),
/// but its text is a path expression, not JSON.
const JSONPATH: u32 = 4072;

/// How deep arrays and records inside one another are masked; deeper values are not
/// passed.
const MAX_NESTING: usize = 8;

/// Rewrites result and notification messages of one session with one policy.
pub struct Rewriter<'a> {
    pub policy: &'a MaskPolicy,
    pub catalog: &'a Catalog,
    /// The session's client encoding: the server's texts are in it.
    pub encoding: ClientEncoding,
}

impl Rewriter<'_> {
    /// A DataRow masked by `plan` (`None`: the shape is unknown, every value is masked
    /// whole). Returns `None` when nothing changed.
    pub fn data_row(
        &self,
        frame: &[u8],
        plan: Option<&ResultPlan>,
        counts: &mut MaskCounts,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.data_row_into(frame, plan, counts, &mut out)
            .then_some(out)
    }

    /// [`Rewriter::data_row`] into the caller's buffer, which a session reuses for every
    /// row: the masked frame is appended to `out`, and `false` means nothing changed (and
    /// nothing was appended).
    pub fn data_row_into(
        &self,
        frame: &[u8],
        plan: Option<&ResultPlan>,
        counts: &mut MaskCounts,
        out: &mut Vec<u8>,
    ) -> bool {
        let body = &frame[5..];
        let values = match rows::data_row(body) {
            Ok(values) => values,
            // Not a well-formed row: it cannot be masked, so it does not pass.
            Err(_) => {
                counts.undecodable += 1;
                rows::write_data_row::<&[u8]>(std::iter::empty(), out);
                return true;
            }
        };
        // Most rows change nothing: the frame is copied only from the first value that
        // changes.
        let mut row = rows::RowRewrite::new(frame, out);
        for (i, value) in values.enumerate() {
            let Ok(value) = value else {
                counts.undecodable += 1;
                row.abandon();
                rows::write_data_row::<&[u8]>((0..i).map(|_| None), out);
                return true;
            };
            let Some(v) = value else {
                row.keep(None);
                continue;
            };
            let Some(col) = plan.and_then(|p| p.columns.get(i)) else {
                counts.rule("unknown_shape");
                row.replace(value, None);
                continue;
            };
            // Text in another client encoding is read as its characters, off the fast paths.
            let foreign = matches!(self.encoding, ClientEncoding::Other(_)) && !v.is_ascii();
            match col.route {
                Route::Inert => {
                    row.keep(value);
                    continue;
                }
                _ if foreign => {}
                // The common case, text in text format, is masked straight into the row
                // (text that is not UTF-8 takes the general path).
                Route::Detect => {
                    if let Some(findings) = self.policy.masker.find_bytes(v) {
                        if findings.is_empty() {
                            row.keep(value);
                        } else {
                            let mut more = Findings::new();
                            row.replace_with(value, |out| {
                                more = self.policy.masker.write_findings(v, &findings, out);
                            });
                            for f in findings.iter().chain(&more) {
                                counts.detectors.found(f.kind);
                            }
                        }
                        continue;
                    }
                }
                // So is a text value masked whole by a column rule.
                Route::RuleText => {
                    if let ColumnMask::Rule { strategy, label } = &col.mask {
                        counts.rule(label);
                        row.replace_with(value, |out| {
                            self.policy.masker.write_value(*strategy, label, v, out);
                        });
                        continue;
                    }
                }
                Route::Other => {}
            }
            match self.value(col, v, counts) {
                Change::Keep => row.keep(value),
                Change::Replace(bytes) => row.replace(value, Some(&bytes)),
                Change::Null => row.replace(value, None),
            }
        }
        row.finish()
    }

    /// A value off the fast paths (inert types never come here: their route keeps them).
    fn value(&self, col: &ColumnPlan, value: &[u8], counts: &mut MaskCounts) -> Change {
        let class = col.class;
        match &col.mask {
            ColumnMask::Rule { strategy, label } => {
                counts.rule(label);
                self.in_session_encoding(value, |v| {
                    self.whole(*strategy, label, class, col.format, v)
                })
            }
            ColumnMask::Content if col.format == 0 => {
                self.text_value(col.type_oid, class, value, counts, 0)
            }
            ColumnMask::Content => self.binary_value(col.type_oid, class, value, counts, 0),
        }
    }

    /// A value masked whole by a rule: the strategy's text where the type holds text,
    /// NULL otherwise (a redaction token is not a valid number or date).
    fn whole(
        &self,
        strategy: Strategy,
        label: &str,
        class: TypeClass,
        format: i16,
        value: &[u8],
    ) -> Change {
        let text = String::from_utf8_lossy(match (class, format) {
            (TypeClass::Jsonb, 1) => value.get(1..).unwrap_or_default(),
            _ => value,
        });
        let Some(masked) = self.policy.masker.mask_value(strategy, label, &text) else {
            return Change::Null;
        };
        match class {
            TypeClass::Text => Change::Replace(masked.into_bytes()),
            TypeClass::Json | TypeClass::Jsonb => {
                let json = serde_json::Value::String(masked).to_string();
                if class == TypeClass::Jsonb && format == 1 {
                    let mut out = vec![1u8];
                    out.extend_from_slice(json.as_bytes());
                    Change::Replace(out)
                } else {
                    Change::Replace(json.into_bytes())
                }
            }
            _ => Change::Null,
        }
    }

    /// A value in text format (or a COPY field with its escapes undone) of type `oid`,
    /// masked so that it is still a value of its type: text takes the strategies'
    /// replacements, JSON is masked as JSON, `bytea` as the bytes it stands for, arrays and
    /// records element by element. The text of any other type (a card number in a
    /// `bigint`, an address in an `inet`) holding a finding makes the value NULL, as it
    /// does where the type is not known (`oid` 0).
    fn text_value(
        &self,
        oid: u32,
        class: TypeClass,
        value: &[u8],
        counts: &mut MaskCounts,
        depth: usize,
    ) -> Change {
        self.in_session_encoding(value, |v| self.text_utf8(oid, class, v, counts, depth))
    }

    /// `mask` over `value` read as the characters of the session's client encoding, its
    /// replacement written back in that encoding (NULL if a character has no bytes there).
    /// In a UTF-8 session, and for ASCII, the bytes are the characters already.
    fn in_session_encoding(&self, value: &[u8], mask: impl FnOnce(&[u8]) -> Change) -> Change {
        if !matches!(self.encoding, ClientEncoding::Other(_)) || value.is_ascii() {
            return mask(value);
        }
        let Some(text) = self.encoding.decode(value) else {
            // Not text in that encoding: looked at as it is, never rewritten by halves.
            return mask(value);
        };
        match mask(text.as_bytes()) {
            Change::Replace(bytes) => match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| self.encoding.encode(t))
            {
                Some(encoded) => Change::Replace(encoded.into_owned()),
                None => Change::Null,
            },
            other => other,
        }
    }

    /// [`Rewriter::text_value`] of a value already in UTF-8.
    fn text_utf8(
        &self,
        oid: u32,
        class: TypeClass,
        value: &[u8],
        counts: &mut MaskCounts,
        depth: usize,
    ) -> Change {
        let Ok(text) = std::str::from_utf8(value) else {
            // Not UTF-8 (another client_encoding): look at it, but never rewrite it by
            // halves.
            let lossy = String::from_utf8_lossy(value);
            return self.null_if_found(&lossy, true, counts);
        };
        match class {
            TypeClass::Text => {
                let masked = self.policy.masker.mask_text(text);
                if masked.counts.is_empty() {
                    return Change::Keep;
                }
                counts.add(masked.counts);
                Change::Replace(masked.text.into_owned().into_bytes())
            }
            TypeClass::Json => self.json_text(text, counts),
            TypeClass::Jsonb if oid != JSONPATH => self.json_text(text, counts),
            TypeClass::Bytea => self.bytea_text(text, counts),
            // int2vector and oidvector are arrays in binary format, numbers between spaces
            // in text.
            TypeClass::Array if depth < MAX_NESTING && !matches!(oid, 22 | 30) => {
                self.text_array(oid, text, counts, depth)
            }
            TypeClass::Record if depth < MAX_NESTING => {
                let mut out = Vec::new();
                // A record's fields are of types the text does not say.
                let mut leaf = |field: &str| {
                    leaf_of(self.text_utf8(
                        0,
                        TypeClass::Unknown,
                        field.as_bytes(),
                        counts,
                        depth + 1,
                    ))
                };
                let walked = types::rewrite_text_record(text, &mut leaf, &mut out);
                self.walked(walked, out, counts)
            }
            _ => self.null_if_found(text, oid == 0 || class == TypeClass::Unknown, counts),
        }
    }

    /// A JSON document in text: masked as JSON ([`gatehouse_mask::Masker::mask_json`]);
    /// text that is not JSON cannot be masked as JSON, and is not passed.
    fn json_text(&self, text: &str, counts: &mut MaskCounts) -> Change {
        let Some(masked) = self.policy.masker.mask_json(text) else {
            counts.undecodable += 1;
            return Change::Null;
        };
        match masked.text {
            Cow::Borrowed(_) => Change::Keep,
            Cow::Owned(json) => {
                counts.add(masked.counts);
                Change::Replace(json.into_bytes())
            }
        }
    }

    /// An array in text format, element by element as its element type allows.
    fn text_array(&self, oid: u32, text: &str, counts: &mut MaskCounts, depth: usize) -> Change {
        // An array type not built in (of a user type) has elements of a type not known.
        let element = types::array_element(oid).unwrap_or(0);
        let class = match element {
            0 => TypeClass::Unknown,
            oid => self.catalog.type_class(oid),
        };
        // box, alone among the built-in types, separates array elements with `;`.
        let delimiter = if element == 603 { b';' } else { b',' };
        let mut out = Vec::new();
        let mut leaf =
            |e: &str| leaf_of(self.text_utf8(element, class, e.as_bytes(), counts, depth + 1));
        let walked = types::rewrite_text_array(text, delimiter, &mut leaf, &mut out);
        self.walked(walked, out, counts)
    }

    /// What walking an array or record made of it: a value that cannot be read is not
    /// passed.
    fn walked(
        &self,
        walked: Result<bool, gatehouse_wire_pg::DecodeError>,
        out: Vec<u8>,
        counts: &mut MaskCounts,
    ) -> Change {
        match walked {
            Ok(true) => Change::Replace(out),
            Ok(false) => Change::Keep,
            Err(_) => {
                counts.undecodable += 1;
                Change::Null
            }
        }
    }

    /// The text of a value that cannot take a replacement (a number, an address, a type
    /// not known): NULL when it holds a finding. `any_type`: the type is not known, so the
    /// text may be JSON whose strings hold findings only when decoded (`\u0040`).
    fn null_if_found(&self, text: &str, any_type: bool, counts: &mut MaskCounts) -> Change {
        let findings = self.policy.masker.find(text);
        if !findings.is_empty() {
            for f in &findings {
                counts.detectors.found(f.kind);
            }
            return Change::Null;
        }
        if !any_type {
            return Change::Keep;
        }
        let start = text.trim_start();
        if start.starts_with(['{', '[', '"'])
            && let Some(masked) = self.policy.masker.mask_json(text)
            && !masked.counts.is_empty()
        {
            counts.add(masked.counts);
            return Change::Null;
        }
        // It may be an array or a record, whose elements are quoted and escaped (`\"` and
        // `\\n` hide what they hold from the reading above): each is read the same way.
        if start.starts_with(['{', '[', '(']) {
            let mut found = false;
            let mut leaf = |element: &str| {
                found |= matches!(self.null_if_found(element, true, counts), Change::Null);
                Leaf::Keep
            };
            let _ = match start.starts_with('(') {
                true => types::rewrite_text_record(text, &mut leaf, &mut Vec::new()),
                false => types::rewrite_text_array(text, b',', &mut leaf, &mut Vec::new()),
            };
            if found {
                return Change::Null;
            }
        }
        // It may be a bytea's hex, standing for text.
        if let Some(bytes) = text.strip_prefix("\\x").and_then(|h| hex::decode(h).ok())
            && let Ok(inner) = std::str::from_utf8(&bytes)
        {
            return self.null_if_found(inner, false, counts);
        }
        Change::Keep
    }

    /// `bytea` in text format is `\x` and hex: the bytes are decoded and, when they are
    /// text, masked and encoded again, so `convert_to(notes, 'UTF8')` is no way around.
    fn bytea_text(&self, text: &str, counts: &mut MaskCounts) -> Change {
        let Some(decoded) = text.strip_prefix("\\x").and_then(|h| hex::decode(h).ok()) else {
            // The escape format (bytea_output = escape): looked at as it is.
            return self.null_if_found(text, false, counts);
        };
        let Ok(inner) = std::str::from_utf8(&decoded) else {
            return Change::Keep;
        };
        let masked = self.policy.masker.mask_text(inner);
        if masked.counts.is_empty() {
            return Change::Keep;
        }
        counts.add(masked.counts);
        Change::Replace(format!("\\x{}", hex::encode(masked.text.as_bytes())).into_bytes())
    }

    /// A value in binary format, masked so that it is still a value of its type, as
    /// [`Rewriter::text_value`] masks its text: the types whose binary format is their text
    /// like text, arrays and records element by element, and scalars whose text a finding
    /// can be in (numbers, addresses) read as that text, NULL when it holds one.
    fn binary_value(
        &self,
        oid: u32,
        class: TypeClass,
        value: &[u8],
        counts: &mut MaskCounts,
        depth: usize,
    ) -> Change {
        match class {
            TypeClass::Text | TypeClass::Json => self.text_value(oid, class, value, counts, depth),
            // A version byte (1, the only one there is), then the text.
            TypeClass::Jsonb => match value.split_first() {
                Some((1, text)) => match self.text_value(oid, class, text, counts, depth) {
                    Change::Replace(bytes) => {
                        let mut out = Vec::with_capacity(bytes.len() + 1);
                        out.push(1);
                        out.extend_from_slice(&bytes);
                        Change::Replace(out)
                    }
                    other => other,
                },
                _ => {
                    counts.undecodable += 1;
                    Change::Null
                }
            },
            // Raw bytes: looked at as text when they are text, and then masked as text
            // (any bytes are a bytea); other bytes pass exactly as they are.
            TypeClass::Bytea => match std::str::from_utf8(value) {
                Ok(_) => self.text_utf8(oid, TypeClass::Text, value, counts, depth),
                Err(_) => Change::Keep,
            },
            TypeClass::Array | TypeClass::Record if depth < MAX_NESTING => {
                let mut out = Vec::new();
                let mut leaf = |oid: u32, bytes: &[u8]| {
                    let class = self.catalog.type_class(oid);
                    leaf_of(self.binary_value(oid, class, bytes, counts, depth + 1))
                };
                let walked = if class == TypeClass::Array {
                    types::rewrite_binary_array(value, &mut leaf, &mut out)
                } else {
                    types::rewrite_binary_record(value, &mut leaf, &mut out)
                };
                self.walked(walked, out, counts)
            }
            // A number's digits, an address as text: a finding makes the value NULL, as in
            // text format.
            TypeClass::Scalar => match types::binary_text(oid, value) {
                Some(text) => self.null_if_found(&text, false, counts),
                None => Change::Keep,
            },
            // A user type not resolved, or nesting too deep: cannot be read, so not sent.
            _ => {
                counts.undecodable += 1;
                Change::Null
            }
        }
    }

    /// An ErrorResponse or NoticeResponse with its texts masked. Constraint errors about a
    /// table with masked columns lose the row and key values in their DETAIL, which
    /// PostgreSQL fills with the very values a rule masks. `None` when nothing changed.
    pub fn fields_message(
        &self,
        frame: &[u8],
        tainted: bool,
        counts: &mut MaskCounts,
    ) -> Option<Vec<u8>> {
        let tag = frame[0];
        // Each text in the session's client encoding, read as its characters.
        let fields: Option<Vec<(u8, Cow<'_, str>)>> = backend::message_fields_raw(&frame[5..])
            .ok()
            .and_then(|raw| {
                raw.into_iter()
                    .map(|(f, v)| self.encoding.decode(v).map(|t| (f, t)))
                    .collect()
            });
        let Some(fields) = fields else {
            // Unreadable (not text in that encoding): keep only what cannot leak.
            let mut out = Vec::new();
            backend::error_response(
                if tag == b'E' { "ERROR" } else { "NOTICE" },
                "XX000",
                "gatehouse: the target sent a message that could not be checked for sensitive values",
                &mut out,
            );
            if tag == b'N' {
                out[0] = b'N';
            }
            return Some(out);
        };
        let table = fields
            .iter()
            .find(|(f, _)| *f == b't')
            .map(|(_, v)| v.as_ref());
        let schema = fields
            .iter()
            .find(|(f, _)| *f == b's')
            .map(|(_, v)| v.as_ref());
        let rule_table = table.is_some_and(|t| {
            let name = match schema {
                Some(s) => format!("{s}.{t}"),
                None => t.to_string(),
            };
            self.policy.columns.by_relation(&name).is_some()
        });
        let mut changed = false;
        let mut out_fields: Vec<(u8, Cow<'_, str>)> = Vec::with_capacity(fields.len());
        for (field, value) in &fields {
            let (field, value): (u8, &str) = (*field, value);
            let masked: Cow<'_, str> = match field {
                // Severity, code, positions, source locations and object names carry no data.
                b'S' | b'V' | b'C' | b'P' | b'p' | b'F' | b'L' | b'R' | b's' | b't' | b'c'
                | b'd' | b'n' => Cow::Borrowed(value),
                // The statement may have read masked columns: its texts may quote them in
                // any form, so they go whole (the message keeps its code and severity).
                b'M' if tainted => {
                    counts.rule("message_text");
                    changed = true;
                    Cow::Borrowed(TAINTED_MESSAGE)
                }
                _ if tainted => {
                    changed = true;
                    continue;
                }
                b'D' if rule_table
                    && (value.starts_with("Failing row contains")
                        || value.starts_with("Key (")) =>
                {
                    counts.rule("error_detail");
                    Cow::Owned(redact_detail(value))
                }
                _ => {
                    let m = self.policy.masker.mask_text(value);
                    counts.add(m.counts);
                    m.text
                }
            };
            changed |= matches!(masked, Cow::Owned(_));
            out_fields.push((field, masked));
        }
        if !changed {
            return None;
        }
        let mut out = Vec::with_capacity(frame.len());
        // Written back in the session's encoding; a character it has no bytes for (none
        // can come from the server's own text) becomes `?`.
        let encoded: Vec<(u8, Cow<'_, [u8]>)> = out_fields
            .iter()
            .map(|(f, v)| {
                let bytes = self
                    .encoding
                    .encode(v)
                    .unwrap_or(Cow::Borrowed(b"?".as_slice()));
                (*f, bytes)
            })
            .collect();
        backend::write_message_fields_raw(
            tag,
            encoded.iter().map(|(f, v)| (*f, v.as_ref())),
            &mut out,
        );
        Some(out)
    }

    /// A NotificationResponse with its payload masked; `None` when nothing changed.
    pub fn notification(&self, frame: &[u8], counts: &mut MaskCounts) -> Option<Vec<u8>> {
        let (pid, channel, payload) = backend::notification_raw(&frame[5..]).ok()?;
        let Some(text) = self.encoding.decode(payload) else {
            // Not text in the session's encoding: looked at as it is; sent empty if it
            // holds something to mask.
            let lossy = String::from_utf8_lossy(payload);
            let masked = self.policy.masker.mask_text(&lossy);
            if masked.counts.is_empty() {
                return None;
            }
            counts.add(masked.counts);
            let mut out = Vec::new();
            backend::write_notification_raw(pid, channel, b"", &mut out);
            return Some(out);
        };
        let masked = self.policy.masker.mask_text(&text);
        if masked.counts.is_empty() {
            return None;
        }
        counts.add(masked.counts);
        // Masked text is the server's characters and ASCII tokens, so it always encodes.
        let payload = self
            .encoding
            .encode(&masked.text)
            .unwrap_or(Cow::Borrowed(b"".as_slice()));
        let mut out = Vec::new();
        backend::write_notification_raw(pid, channel, &payload, &mut out);
        Some(out)
    }

    /// One CopyData of COPY TO STDOUT (the server sends one row per message) masked by
    /// `copy`: text rows split on the delimiter (escapes undone, and done again for a
    /// masked value), CSV rows parsed with their quoting, binary rows read field by field;
    /// each value masked as its column's type allows (as `text_value` says).
    /// `first` says it is the COPY's first message (a header line of column names, when the
    /// options ask for one). A row that cannot be read is not passed on. `None` when
    /// nothing changed.
    pub fn copy_data(
        &self,
        frame: &[u8],
        copy: &CopyPlan,
        first: bool,
        counts: &mut MaskCounts,
    ) -> Option<Vec<u8>> {
        let body = &frame[5..];
        let wrap = |bytes: &[u8]| {
            let mut out = Vec::with_capacity(bytes.len() + 5);
            frontend::frame(b'd', bytes, &mut out);
            out
        };
        if copy.binary {
            return self.copy_binary(body, copy, counts).map(|b| wrap(&b));
        }
        // Text rows are in the session's client encoding: read as their characters, and a
        // rewritten row written back in that encoding.
        let Some(line) = self.encoding.decode(body) else {
            // Not text in that encoding (SQL_ASCII holds any bytes): looked at as it is,
            // passed whole or not at all.
            let lossy = String::from_utf8_lossy(body);
            let masked = self.policy.masker.mask_text(&lossy);
            if masked.counts.is_empty()
                && !copy
                    .plan
                    .columns
                    .iter()
                    .any(|c| matches!(c.mask, ColumnMask::Rule { .. }))
            {
                return None;
            }
            counts.undecodable += 1;
            return Some(wrap(b"[masked]\n"));
        };
        let line: &str = &line;
        let wrap = |bytes: &[u8]| match std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| self.encoding.encode(t))
        {
            Some(encoded) => wrap(&encoded),
            None => wrap(b"[masked]\n"),
        };
        let (content, newline) = match line
            .strip_suffix("\r\n")
            .or_else(|| line.strip_suffix('\n'))
        {
            Some(c) => (c, &line[c.len()..]),
            None => (line, ""),
        };
        let has_rules = copy
            .plan
            .columns
            .iter()
            .any(|c| matches!(c.mask, ColumnMask::Rule { .. }));
        let format = match &copy.format {
            // Column names: looked at by the detectors like any text.
            Some(format) if format.header && first => None,
            Some(format) if format.delimiter.is_ascii() => Some(format),
            _ => None,
        };
        let Some(format) = format else {
            // The row cannot be split (options not read): whole, or not at all.
            if has_rules && !(first && copy.format.as_ref().is_some_and(|f| f.header)) {
                counts.rule("copy_unread_row");
                return Some(wrap(b"[masked]\n"));
            }
            let masked = self.policy.masker.mask_text(line);
            if masked.counts.is_empty() {
                return None;
            }
            counts.add(masked.counts);
            return Some(wrap(masked.text.as_bytes()));
        };
        let masked = match format.kind {
            CopyKind::Csv => self.copy_csv(content, copy, format, counts),
            _ => self.copy_text(content, copy, format, counts),
        };
        match masked {
            Ok(None) => None,
            Ok(Some(mut row)) => {
                row.extend_from_slice(newline.as_bytes());
                Some(wrap(&row))
            }
            Err(()) => {
                counts.rule("copy_row_shape");
                Some(wrap(b"[masked]\n"))
            }
        }
    }

    /// One value of a COPY row in text form (escapes undone), masked as a text-format value
    /// of its column's type; a column not planned, or whose type is not known
    /// (`COPY (query)`), holding a finding becomes NULL, which every type takes.
    fn copy_value(
        &self,
        col: Option<&ColumnPlan>,
        value: &[u8],
        counts: &mut MaskCounts,
    ) -> Change {
        let Some(col) = col else {
            return self.text_utf8(0, TypeClass::Unknown, value, counts, 0);
        };
        match &col.mask {
            ColumnMask::Rule { strategy, label } => {
                counts.rule(label);
                self.whole(*strategy, label, col.class, 0, value)
            }
            ColumnMask::Content if col.route == Route::Inert => Change::Keep,
            ColumnMask::Content => self.text_utf8(col.type_oid, col.class, value, counts, 0),
        }
    }

    /// A text-format row: fields split on the delimiter (inside values it is escaped), NULL
    /// written as the NULL string, a masked value escaped as COPY escapes it. `Err` when the
    /// row cannot be read, or a row of a planned table has the wrong number of fields.
    fn copy_text(
        &self,
        content: &str,
        copy: &CopyPlan,
        format: &CopyFormat,
        counts: &mut MaskCounts,
    ) -> Result<Option<Vec<u8>>, ()> {
        let fields = copy::text_fields(content, format.delimiter).map_err(|_| ())?;
        if fields.len() != copy.plan.columns.len() && !copy.plan.columns.is_empty() {
            return Err(());
        }
        let mut out = Vec::with_capacity(content.len() + 16);
        let mut changed = false;
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(format.delimiter);
            }
            let raw = &content.as_bytes()[field.raw.clone()];
            let change = if raw == format.null.as_bytes() {
                Change::Keep
            } else {
                self.copy_value(copy.plan.columns.get(i), &field.value, counts)
            };
            changed |= !matches!(change, Change::Keep);
            match change {
                Change::Keep => out.extend_from_slice(raw),
                Change::Null => out.extend_from_slice(format.null.as_bytes()),
                Change::Replace(text) => {
                    copy::write_text_escaped(&text, format.delimiter, &mut out)
                }
            }
        }
        Ok(changed.then_some(out))
    }

    /// A CSV row: fields parsed with their quotes; a masked value is written quoted, NULL as
    /// the NULL string unquoted. `Err` when the row cannot be parsed or has the wrong
    /// number of fields.
    fn copy_csv(
        &self,
        content: &str,
        copy: &CopyPlan,
        format: &CopyFormat,
        counts: &mut MaskCounts,
    ) -> Result<Option<Vec<u8>>, ()> {
        let fields = copy::csv_fields(content, format.delimiter, format.quote, format.escape)
            .map_err(|_| ())?;
        if fields.len() != copy.plan.columns.len() && !copy.plan.columns.is_empty() {
            return Err(());
        }
        let mut out = Vec::with_capacity(content.len() + 16);
        let mut changed = false;
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(format.delimiter);
            }
            let change = if !field.quoted && field.value == format.null {
                Change::Keep
            } else {
                self.copy_value(copy.plan.columns.get(i), field.value.as_bytes(), counts)
            };
            changed |= !matches!(change, Change::Keep);
            match change {
                Change::Keep => out.extend_from_slice(&content.as_bytes()[field.raw.clone()]),
                Change::Null => out.extend_from_slice(format.null.as_bytes()),
                Change::Replace(text) => copy::write_csv_quoted(
                    &String::from_utf8_lossy(&text),
                    format.quote,
                    format.escape,
                    &mut out,
                ),
            }
        }
        Ok(changed.then_some(out))
    }

    /// A binary-format CopyData: each field is masked as a binary result value of its
    /// column's type; a rule makes it NULL (a redaction token is not a value of most
    /// types). Where the type is not known (`COPY (query)`), a value that reads as text, a
    /// number, an address, an array or a record holding something to mask is made NULL.
    /// Unreadable data becomes an empty message, never passed on. `None` when nothing
    /// changed.
    fn copy_binary(
        &self,
        body: &[u8],
        copy: &CopyPlan,
        counts: &mut MaskCounts,
    ) -> Option<Vec<u8>> {
        let Ok(chunk) = copy::binary_chunk(body) else {
            counts.undecodable += 1;
            return Some(Vec::new());
        };
        let mut changed = false;
        let mut rows: Vec<Vec<Option<Cow<'_, [u8]>>>> = Vec::with_capacity(chunk.rows.len());
        for row in &chunk.rows {
            let mut out = Vec::with_capacity(row.len());
            for (i, value) in row.iter().enumerate() {
                let Some(value) = value else {
                    out.push(None);
                    continue;
                };
                let change = match copy.plan.columns.get(i) {
                    Some(ColumnPlan {
                        mask: ColumnMask::Rule { label, .. },
                        ..
                    }) => {
                        counts.rule(label);
                        Change::Null
                    }
                    Some(col) if col.type_oid != 0 => {
                        self.binary_value(col.type_oid, col.class, value, counts, 0)
                    }
                    Some(_) => self.unknown_binary(value, counts),
                    // Columns not planned: only rules could need them, and then they are
                    // not known.
                    None if self.policy.has_rules() => {
                        counts.rule("unknown_shape");
                        Change::Null
                    }
                    None => self.unknown_binary(value, counts),
                };
                changed |= !matches!(change, Change::Keep);
                out.push(match change {
                    Change::Keep => Some(Cow::Borrowed(*value)),
                    Change::Replace(bytes) => Some(Cow::Owned(bytes)),
                    Change::Null => None,
                });
            }
            rows.push(out);
        }
        if !changed {
            return None;
        }
        let mut out = Vec::with_capacity(body.len());
        copy::write_binary_chunk(chunk.header, rows, chunk.trailer, &mut out);
        Some(out)
    }

    /// A binary value of a type not known: read as text (JSON included), as a `jsonb`, an
    /// `int8`, a `numeric`, an `inet`, and as an array or record (which name their
    /// elements' types), and made NULL when any reading holds something to mask.
    fn unknown_binary(&self, value: &[u8], counts: &mut MaskCounts) -> Change {
        let text = std::str::from_utf8(value).ok().map(Cow::Borrowed);
        let jsonb = match value.split_first() {
            Some((1, rest)) => std::str::from_utf8(rest).ok().map(Cow::Borrowed),
            _ => None,
        };
        let readings = [20, 1700, 869].map(|oid| types::binary_text(oid, value).map(Cow::Owned));
        for text in [text, jsonb].into_iter().chain(readings).flatten() {
            if let Change::Null = self.null_if_found(&text, true, counts) {
                return Change::Null;
            }
        }
        // Read as an array or a record, its elements are masked as their types are; the
        // value may be something else, so it is not rewritten, only withheld.
        let mut found = false;
        let mut leaf = |oid: u32, bytes: &[u8]| {
            let class = self.catalog.type_class(oid);
            found |= !matches!(
                self.binary_value(oid, class, bytes, counts, 1),
                Change::Keep
            );
            Leaf::Keep
        };
        let _ = types::rewrite_binary_array(value, &mut leaf, &mut Vec::new());
        let _ = types::rewrite_binary_record(value, &mut leaf, &mut Vec::new());
        if found {
            return Change::Null;
        }
        Change::Keep
    }
}

/// How the rows of one COPY TO STDOUT are masked.
#[derive(Debug, Clone, Default)]
pub struct CopyPlan {
    /// The columns; a column's type is 0 where it is not known (`COPY (query)`).
    pub plan: ResultPlan,
    /// The row format the statement's options set; `None` when they could not be read.
    pub format: Option<CopyFormat>,
    /// The server's CopyOutResponse says binary.
    pub binary: bool,
}

/// The plan of a COPY's columns: `COPY table` takes the table's columns from the
/// catalog, `COPY (query)` the query's lineage (there is no origin to go by).
pub fn copy_plan(
    policy: &MaskPolicy,
    catalog: &Catalog,
    source: Option<&Source>,
    formats: (i8, usize),
) -> CopyPlan {
    let (overall, count) = formats;
    // Without column rules the session reads no lineage, but the row format is needed all
    // the same: without it a row cannot be split into values, and masking the line whole
    // would put a token where a number or an address must be.
    let read_here = source
        .filter(|s| s.lineage.is_none())
        .map(|s| copy_lineage(&s.sql));
    let lineage = source
        .and_then(|s| s.lineage.as_ref())
        .or(read_here.as_ref());
    // CopyOutResponse says text for CSV too; the statement's options say which.
    let format = lineage.and_then(|l| l.copy.clone());
    let mut columns = Vec::with_capacity(count);
    let rules = policy.has_rules();
    let views = statement_views(policy, catalog, source);
    let outs = lineage.map(|l| l.outputs.as_slice()).unwrap_or_default();
    let opaque = lineage.is_none_or(|l| l.opaque || calls_user_function(catalog, l));
    if let [
        Output::Star {
            relation: Some(rel),
            ..
        },
    ] = outs
    {
        let table = catalog
            .cached_name(rel)
            .flatten()
            .and_then(|oid| catalog.cached_relation(oid).flatten());
        match table {
            Some(table) => {
                let view = view_columns(policy, catalog, &table);
                for (i, (_, name, ty)) in table.ordered_columns().into_iter().enumerate() {
                    let mask = match policy.columns.find(&table.schema, &table.name, name) {
                        Some(rule) => ColumnMask::Rule {
                            strategy: rule.strategy,
                            label: rule.label.as_str().into(),
                        },
                        None => match view.get(i).cloned().flatten() {
                            Some((_, label)) => {
                                let (strategy, label) = label_rule(policy, &Taint::View(label));
                                ColumnMask::Rule { strategy, label }
                            }
                            None => ColumnMask::Content,
                        },
                    };
                    columns.push(ColumnPlan::new(policy, catalog, mask, ty, 0));
                }
            }
            None if rules => {
                for _ in 0..count {
                    let mask = ColumnMask::Rule {
                        strategy: Strategy::Redact,
                        label: "unresolved".into(),
                    };
                    columns.push(ColumnPlan::new(policy, catalog, mask, 0, 0));
                }
            }
            None => {}
        }
    } else {
        for i in 0..count {
            let mask = match outs.get(i) {
                _ if !rules => ColumnMask::Content,
                _ if opaque || outs.len() != count => ColumnMask::Rule {
                    strategy: Strategy::Redact,
                    label: "unknown_lineage".into(),
                },
                Some(Output::Column(s)) | Some(Output::Star { sources: s, .. }) => {
                    match policy.tainted(s, &views) {
                        Some(t) => {
                            let (strategy, label) = label_rule(policy, &t);
                            ColumnMask::Rule { strategy, label }
                        }
                        None => ColumnMask::Content,
                    }
                }
                None => ColumnMask::Content,
            };
            columns.push(ColumnPlan::new(policy, catalog, mask, 0, 0));
        }
    }
    CopyPlan {
        plan: ResultPlan { columns },
        format,
        binary: overall == 1,
    }
}

/// The lineage of a COPY statement read here, with no settings known: a string literal
/// with a backslash in the options (`NULL '\N'`) reads one way with
/// `standard_conforming_strings` on and another with it off, so the row format is kept only
/// when both readings agree.
fn copy_lineage(sql: &str) -> Lineage {
    let on = gatehouse_sql::lineage_with(sql, Lexical::default());
    let off = gatehouse_sql::lineage_with(
        sql,
        Lexical {
            backslash_escapes: true,
        },
    );
    Lineage {
        copy: on
            .copy
            .clone()
            .filter(|format| off.copy.as_ref() == Some(format)),
        ..on
    }
}

/// `Failing row contains (...)` / `Key (col)=(value) ...`: the values replaced.
fn redact_detail(detail: &str) -> String {
    if detail.starts_with("Failing row contains") {
        return "Failing row contains (values masked by gatehouse).".into();
    }
    match detail.split_once(")=(") {
        Some((key, _)) => format!("{key})=([masked]) (values masked by gatehouse)."),
        None => "(detail masked by gatehouse)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_mask::Strategy;
    use gatehouse_wire_pg::rows::data_row;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};

    /// Every built-in detector, IP addresses too.
    fn policy() -> MaskPolicy {
        let config = MaskingConfig {
            detectors: DetectorSelection::All,
            ..MaskingConfig::default()
        };
        MaskPolicy::from_config(&config, b"k").unwrap()
    }

    /// Built once: compiling the detectors per generated case would dominate the run.
    static POLICY: std::sync::LazyLock<MaskPolicy> = std::sync::LazyLock::new(policy);

    fn row(values: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        rows::write_data_row(values.iter().map(|v| v.as_deref()), &mut out);
        out
    }

    fn decoded(frame: &[u8]) -> Vec<Option<Vec<u8>>> {
        data_row(&frame[5..])
            .unwrap()
            .map(|v| v.unwrap().map(<[u8]>::to_vec))
            .collect()
    }

    proptest! {
        /// Whatever the values and the plan, a masked row is a valid DataRow with the same
        /// number of columns, and no planted address survives in it.
        #[test]
        fn masking_keeps_the_row_shape_and_never_lets_a_planted_value_through(
            values in proptest::collection::vec(
                proptest::option::of(("[a-z ]{0,12}", any::<bool>(), "[a-z ]{0,12}")),
                0..12,
            ),
            binary in any::<bool>(),
            rule_at in any::<Option<prop::sample::Index>>(),
        ) {
            let policy = &*POLICY;
            let catalog = Catalog::new();
            let values: Vec<Option<Vec<u8>>> = values
                .into_iter()
                .map(|v| v.map(|(a, plant, b)| {
                    let mid = if plant { " secret.person@example.com " } else { " " };
                    format!("{a}{mid}{b}").into_bytes()
                }))
                .collect();
            let n = values.len();
            let rule = rule_at.map(|i| i.index(n.max(1)));
            let plan = ResultPlan {
                columns: (0..n)
                    .map(|i| {
                        let mask = if Some(i) == rule {
                            ColumnMask::Rule { strategy: Strategy::Hash, label: "x".into() }
                        } else {
                            ColumnMask::Content
                        };
                        ColumnPlan::new(policy, &catalog, mask, 25, i16::from(binary))
                    })
                    .collect(),
            };
            let frame = row(&values);
            let rewriter = Rewriter {
                policy,
                catalog: &catalog,
                encoding: Default::default(),
            };
            let mut counts = MaskCounts::default();
            let out = rewriter.data_row(&frame, Some(&plan), &mut counts).unwrap_or(frame.clone());
            let got = decoded(&out);
            prop_assert_eq!(got.len(), n);
            for (before, after) in values.iter().zip(&got) {
                prop_assert_eq!(before.is_none(), after.is_none());
                if let Some(after) = after {
                    prop_assert!(!String::from_utf8_lossy(after).contains("secret.person@example.com"));
                }
            }
        }
    }

    #[test]
    fn mask_counts_are_recorded_by_name() {
        let mut counts = MaskCounts::default();
        assert!(counts.is_empty());
        counts.detectors.found(&Kind::PaymentCard);
        counts.detectors.found(&Kind::Email);
        counts.detectors.found(&Kind::Email);
        counts.detectors.found(&Kind::Custom("ticket".into()));
        // Counted by name elsewhere (text that is not a row), into the same slots.
        counts.detectors.bump("email", 3);
        counts.rule("ssn");
        counts.rule("ssn");
        assert_eq!(counts.detectors.get("email"), 5);
        assert_eq!(counts.detectors.get("phone"), 0);
        assert_eq!(
            counts.to_json(),
            serde_json::json!({
                "values": 9,
                "rules": {"ssn": 2},
                "detectors": {"email": 5, "payment_card": 1, "ticket": 1},
            })
        );
    }

    #[test]
    fn an_unknown_shape_masks_every_value_and_numbers_become_null() {
        let policy = policy();
        let catalog = Catalog::new();
        let rewriter = Rewriter {
            policy: &policy,
            catalog: &catalog,
            encoding: Default::default(),
        };
        let mut counts = MaskCounts::default();
        let frame = row(&[Some(b"1".to_vec()), None]);
        let out = rewriter.data_row(&frame, None, &mut counts).unwrap();
        assert_eq!(decoded(&out), vec![None, None]);
        assert_eq!(counts.rules.get("unknown_shape"), 1);

        // A card number in an int8 column (text format) cannot be rewritten as a number.
        let frame = row(&[Some(b"4111111111111111".to_vec())]);
        let out = rewriter
            .data_row(&frame, Some(&one_column(&policy, 20, 0)), &mut counts)
            .unwrap();
        assert_eq!(decoded(&out), vec![None]);
        assert_eq!(counts.detectors.get("payment_card"), 1);
    }

    fn one_column(policy: &MaskPolicy, type_oid: u32, format: i16) -> ResultPlan {
        let catalog = Catalog::new();
        ResultPlan {
            columns: vec![ColumnPlan::new(
                policy,
                &catalog,
                ColumnMask::Content,
                type_oid,
                format,
            )],
        }
    }

    #[test]
    fn numbers_in_binary_are_read_as_digits() {
        let policy = policy();
        let catalog = Catalog::new();
        let rewriter = Rewriter {
            policy: &policy,
            catalog: &catalog,
            encoding: Default::default(),
        };
        let mut counts = MaskCounts::default();
        let card = 4_111_111_111_111_111i64.to_be_bytes().to_vec();
        let frame = row(&[Some(card)]);
        let out = rewriter.data_row(&frame, Some(&one_column(&policy, 20, 1)), &mut counts);
        assert_eq!(decoded(&out.unwrap()), vec![None]);
        // An ordinary bigint passes untouched.
        let frame = row(&[Some(42i64.to_be_bytes().to_vec())]);
        assert!(
            rewriter
                .data_row(&frame, Some(&one_column(&policy, 20, 1)), &mut counts)
                .is_none()
        );
        assert_eq!(counts.detectors.get("payment_card"), 1);
    }

    #[test]
    fn inert_types_skip_the_detectors_unless_user_patterns_exist() {
        // No timestamp's text holds an e-mail address; this one stands for what a
        // detector would find, to show the value is not looked at.
        let frame = row(&[Some(b"ada@example.com".to_vec())]);
        let catalog = Catalog::new();
        let policy = policy();
        let rewriter = Rewriter {
            policy: &policy,
            catalog: &catalog,
            encoding: Default::default(),
        };
        let mut counts = MaskCounts::default();
        assert!(
            rewriter
                .data_row(&frame, Some(&one_column(&policy, 1184, 0)), &mut counts)
                .is_none()
        );
        // Text is looked at.
        assert!(
            rewriter
                .data_row(&frame, Some(&one_column(&policy, 25, 0)), &mut counts)
                .is_some()
        );

        let mut config = MaskingConfig::default();
        config.patterns.push(gatehouse_config::PatternConfig {
            name: "ticket".into(),
            regex: r"T-\d+".into(),
            strategy: gatehouse_config::MaskStrategy(Strategy::Redact),
        });
        let policy = MaskPolicy::from_config(&config, b"k").unwrap();
        let rewriter = Rewriter {
            policy: &policy,
            catalog: &catalog,
            encoding: Default::default(),
        };
        let out = rewriter.data_row(&frame, Some(&one_column(&policy, 1184, 0)), &mut counts);
        assert_eq!(decoded(&out.unwrap()), vec![None]);
    }

    #[test]
    fn constraint_details_about_masked_tables_lose_their_values() {
        let mut config = MaskingConfig::default();
        config.columns.push(gatehouse_config::ColumnMaskConfig {
            column: "people.ssn".into(),
            strategy: gatehouse_config::MaskStrategy(Strategy::Redact),
            label: None,
        });
        let policy = MaskPolicy::from_config(&config, b"k").unwrap();
        let catalog = Catalog::new();
        let rewriter = Rewriter {
            policy: &policy,
            catalog: &catalog,
            encoding: Default::default(),
        };
        let mut frame = Vec::new();
        backend::write_message_fields(
            b'E',
            [
                (b'S', "ERROR"),
                (b'C', "23505"),
                (
                    b'M',
                    "duplicate key value violates unique constraint \"people_ssn_key\"",
                ),
                (b'D', "Key (ssn)=(219099999) already exists."),
                (b's', "public"),
                (b't', "people"),
            ],
            &mut frame,
        );
        let mut counts = MaskCounts::default();
        let out = rewriter.fields_message(&frame, false, &mut counts).unwrap();
        let fields = backend::message_fields(&out[5..]).unwrap();
        let detail = fields.iter().find(|(f, _)| *f == b'D').unwrap().1;
        assert_eq!(detail, "Key (ssn)=([masked]) (values masked by gatehouse).");
        assert!(fields.contains(&(b'C', "23505")), "the code is kept");
    }

    /// One value of `type_oid` in `format` through a DataRow: what the client gets.
    fn one_value(type_oid: u32, format: i16, value: &[u8]) -> (Option<Vec<u8>>, MaskCounts) {
        let policy = &*POLICY;
        let catalog = Catalog::new();
        let rewriter = Rewriter {
            policy,
            catalog: &catalog,
            encoding: Default::default(),
        };
        let mut counts = MaskCounts::default();
        let frame = row(&[Some(value.to_vec())]);
        let out = rewriter
            .data_row(
                &frame,
                Some(&one_column(policy, type_oid, format)),
                &mut counts,
            )
            .unwrap_or(frame);
        (decoded(&out).remove(0), counts)
    }

    /// A COPY of columns of `types` (0: not known) in `kind`, for [`copy_row`].
    fn copy_of(types: &[u32], kind: CopyKind, delimiter: u8, rule: Option<usize>) -> CopyPlan {
        let policy = &*POLICY;
        let catalog = Catalog::new();
        let columns = types
            .iter()
            .enumerate()
            .map(|(i, oid)| {
                let mask = match rule {
                    Some(r) if r == i => ColumnMask::Rule {
                        strategy: Strategy::Redact,
                        label: "secret".into(),
                    },
                    _ => ColumnMask::Content,
                };
                ColumnPlan::new(policy, &catalog, mask, *oid, 0)
            })
            .collect();
        let format = CopyFormat {
            delimiter,
            ..CopyFormat::default_for(kind)
        };
        CopyPlan {
            plan: ResultPlan { columns },
            format: (kind != CopyKind::Binary).then_some(format),
            binary: kind == CopyKind::Binary,
        }
    }

    /// One CopyData through the rewriter: its body as the client gets it.
    fn copy_row(copy: &CopyPlan, body: &[u8]) -> Vec<u8> {
        let catalog = Catalog::new();
        let rewriter = Rewriter {
            policy: &POLICY,
            catalog: &catalog,
            encoding: Default::default(),
        };
        let mut frame = Vec::new();
        frontend::frame(b'd', body, &mut frame);
        let mut counts = MaskCounts::default();
        let out = rewriter
            .copy_data(&frame, copy, false, &mut counts)
            .unwrap_or(frame);
        out[5..].to_vec()
    }

    #[test]
    fn json_is_masked_as_json_in_both_formats() {
        let doc = br#"{"m": "ada\u0040example.com", "n": [4111111111111111, 2], "k": "x\"y"}"#;
        let masked = br#"{"m": "[email]", "n": [null, 2], "k": "x\"y"}"#;
        let (out, counts) = one_value(114, 0, doc);
        assert_eq!(out.as_deref(), Some(&masked[..]));
        assert_eq!(counts.detectors.get("email"), 1);
        assert_eq!(counts.detectors.get("payment_card"), 1);
        let mut binary = vec![1];
        binary.extend_from_slice(doc);
        let (out, _) = one_value(3802, 1, &binary);
        assert_eq!(&out.unwrap()[1..], &masked[..]);
        // Not JSON (a server never sends that): not passed.
        let (out, counts) = one_value(3802, 0, b"{ada@example.com}");
        assert_eq!((out, counts.undecodable), (None, 1));
        // jsonpath is classed with jsonb but is no JSON document: a finding makes it NULL.
        assert_eq!(
            one_value(4072, 0, b"$.a ? (@ == \"ada@example.com\")").0,
            None
        );
        assert!(one_value(4072, 0, b"$.a[*]").0.is_some());
    }

    #[test]
    fn the_default_detectors_leave_addresses_alone() {
        let policy = MaskPolicy::from_config(&MaskingConfig::default(), b"k").unwrap();
        let masked = policy
            .masker
            .mask_text("host 192.168.1.5 or fe80::1, mail ada@example.com");
        assert_eq!(masked.text, "host 192.168.1.5 or fe80::1, mail [email]");
    }

    #[test]
    fn addresses_are_null_in_every_format() {
        assert_eq!(one_value(869, 0, b"192.168.1.5").0, None);
        // inet_send(inet '192.168.1.5'), cidr_send(cidr '10.1.0.0/16').
        assert_eq!(one_value(869, 1, &[2, 32, 0, 4, 192, 168, 1, 5]).0, None);
        assert_eq!(one_value(650, 1, &[2, 16, 1, 4, 10, 1, 0, 0]).0, None);
        let v6: std::net::Ipv6Addr = "2001:db8::8a2e:370:7334".parse().unwrap();
        let mut inet = vec![3, 128, 0, 16];
        inet.extend(v6.octets());
        assert_eq!(one_value(869, 1, &inet).0, None);
        // Within arrays too.
        let (out, _) = one_value(1041, 0, b"{192.168.1.5,NULL}");
        assert_eq!(out.as_deref(), Some(&b"{NULL,NULL}"[..]));
        // In COPY: the format's NULL, never a token.
        let text = copy_of(&[23, 869], CopyKind::Text, b'\t', None);
        assert_eq!(copy_row(&text, b"1\t192.168.1.5\n"), b"1\t\\N\n");
        let csv = copy_of(&[23, 869], CopyKind::Csv, b',', None);
        assert_eq!(copy_row(&csv, b"1,192.168.1.5\n"), b"1,\n");
        let mut binary = copy::BINARY_SIGNATURE.to_vec();
        binary.extend([0; 8]);
        let row_start = binary.len();
        binary.extend([0, 1, 0, 0, 0, 8, 2, 32, 0, 4, 10, 1, 2, 3]);
        let binary_plan = copy_of(&[869], CopyKind::Binary, b'\t', None);
        let out = copy_row(&binary_plan, &binary);
        assert_eq!(&out[row_start..], [0, 1, 0xff, 0xff, 0xff, 0xff]);
    }

    /// COPY text reads backslash escapes: a masked value is escaped again (not stripped of
    /// what the format escapes), so loading the output gives exactly the masked text.
    #[test]
    fn copy_text_escapes_masked_values() {
        for delimiter in [b'\t', b'|', b','] {
            let d = delimiter as char;
            let text = copy_of(&[25, 25], CopyKind::Text, delimiter, None);
            let mut line = Vec::new();
            copy::write_text_escaped(b"a\\b\t", delimiter, &mut line);
            line.push(delimiter);
            let second = format!("ada@example.com\n\\{d}2{d}x\r");
            copy::write_text_escaped(second.as_bytes(), delimiter, &mut line);
            line.push(b'\n');
            let out = String::from_utf8(copy_row(&text, &line)).unwrap();
            let fields = copy::text_fields(out.strip_suffix('\n').unwrap(), delimiter).unwrap();
            assert_eq!(fields.len(), 2, "{out:?}");
            assert_eq!(fields[0].value.as_ref(), b"a\\b\t", "{out:?}");
            assert_eq!(
                fields[1].value.as_ref(),
                second.replace("ada@example.com", "[email]").as_bytes(),
                "{out:?}"
            );
        }
    }

    /// A column rule on a type that takes no text, and a value of a type not known holding
    /// a finding, are NULL in COPY text and CSV.
    #[test]
    fn copy_rules_and_unknown_types_write_null() {
        let text = copy_of(&[20, 25], CopyKind::Text, b'\t', Some(0));
        assert_eq!(copy_row(&text, b"42\tplain\n"), b"\\N\tplain\n");
        let text = copy_of(&[25, 20], CopyKind::Text, b'\t', Some(0));
        assert_eq!(copy_row(&text, b"x\t42\n"), b"[secret]\t42\n");
        let csv = copy_of(&[20, 25], CopyKind::Csv, b',', Some(0));
        assert_eq!(copy_row(&csv, b"42,plain\n"), b",plain\n");
        let unknown = copy_of(&[0, 0, 0], CopyKind::Csv, b',', None);
        assert_eq!(
            copy_row(
                &unknown,
                b"ada@example.com,\"{\"\"a\"\": \"\"x\\u0040y.io\"\"}\",ok\n"
            ),
            b",,ok\n"
        );
        // Text of a known type keeps the strategies' replacement, quoted.
        let csv = copy_of(&[25, 3802], CopyKind::Csv, b',', None);
        assert_eq!(
            copy_row(
                &csv,
                b"\"mail ada@example.com\",\"{\"\"a\"\": 4111111111111111}\"\n"
            ),
            b"\"mail [email]\",\"{\"\"a\"\": null}\"\n"
        );
    }

    #[test]
    fn text_arrays_are_masked_element_by_element() {
        let (out, _) = one_value(1009, 0, br#"{"ada@example.com x",plain,NULL,"a\"b"}"#);
        assert_eq!(
            out.as_deref(),
            Some(&br#"{"[email] x",plain,NULL,"a\"b"}"#[..])
        );
        let (out, _) = one_value(1016, 0, b"{4111111111111111,7}");
        assert_eq!(out.as_deref(), Some(&b"{NULL,7}"[..]));
        let (out, _) = one_value(3807, 0, br#"{"{\"a\": \"x\\u0040y.io\"}"}"#);
        assert_eq!(out.as_deref(), Some(&br#"{"{\"a\": \"[email]\"}"}"#[..]));
        // Records: the fields' types are not said, so a finding makes the field NULL.
        let (out, _) = one_value(2249, 0, br#"(1,"ada@example.com",ok)"#);
        assert_eq!(out.as_deref(), Some(&b"(1,,ok)"[..]));
    }

    proptest! {
        /// bytea in binary (a result or a binary COPY) passes exactly unless its bytes are
        /// text holding a finding; then it is that text masked (any bytes are a bytea).
        #[test]
        fn bytea_in_binary_passes_exactly_unless_it_holds_a_finding(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            text in "[a-z @.0-9]{0,20}",
            plant in any::<bool>(),
            as_text in any::<bool>(),
        ) {
            let value = if as_text {
                let mid = if plant { " ada@example.com " } else { "" };
                format!("{text}{mid}").into_bytes()
            } else {
                bytes
            };
            let found = std::str::from_utf8(&value)
                .is_ok_and(|t| !POLICY.masker.find(t).is_empty());
            let (out, _) = one_value(17, 1, &value);
            let mut copy = copy::BINARY_SIGNATURE.to_vec();
            copy.extend([0; 8]);
            let header = copy.len();
            copy.extend(1i16.to_be_bytes());
            copy.extend((value.len() as i32).to_be_bytes());
            copy.extend(&value);
            let copied = copy_row(&copy_of(&[17], CopyKind::Binary, b'\t', None), &copy);
            let chunk = copy::binary_chunk(&copied).unwrap();
            prop_assert_eq!(chunk.header, &copy[..header]);
            let copied = chunk.rows[0][0].map(<[u8]>::to_vec);
            prop_assert_eq!(&copied, &out);
            match out {
                None => prop_assert!(false, "a bytea is never NULLed"),
                Some(out) if !found => prop_assert_eq!(out, value),
                Some(out) => {
                    let out = String::from_utf8(out).unwrap();
                    prop_assert!(POLICY.masker.find(&out).is_empty(), "{}", out);
                }
            }
        }
    }
}
