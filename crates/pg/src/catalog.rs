//! What the target's catalog says about the relations and types a result comes from: the
//! schema, table and column behind a RowDescription's (table OID, column number), a view's
//! definition, and what a user-defined type is made of. Read over one side connection per
//! resource and cached; the cache is dropped after DDL through the gateway and after
//! [`CACHE_TTL`], so a column renamed behind the gateway's back is seen again soon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use gatehouse_wire_pg::types::{TypeClass, builtin_class};
use gatehouse_wire_pg::{backend, rows, split_frame};
use tokio::io::AsyncReadExt;

use crate::PgResource;
use crate::error::PgError;
use crate::upstream::{self, TargetStream};

/// How long what was read from the catalog is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long one catalog query may take before the lookup counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How deep views over views are followed; deeper ones are masked by name only.
pub const MAX_VIEW_DEPTH: usize = 8;

/// A table, view or other relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`: `r` table, `v` view, `m` materialized view, `p` partitioned, ...
    pub kind: u8,
    /// Live columns by attribute number: name and type OID.
    pub columns: HashMap<i16, (String, u32)>,
    /// The SELECT a view or materialized view stands for.
    pub definition: Option<String>,
    /// The relations a view's definition reads (from `pg_depend`), loaded with it so a
    /// view over a view is traced to the table behind both.
    pub depends: Vec<u32>,
}

impl Relation {
    /// Columns in attribute order (what `SELECT *` and `COPY table` produce).
    pub fn ordered_columns(&self) -> Vec<(i16, &str, u32)> {
        let mut cols: Vec<(i16, &str, u32)> = self
            .columns
            .iter()
            .map(|(n, (name, ty))| (*n, name.as_str(), *ty))
            .collect();
        cols.sort_by_key(|c| c.0);
        cols
    }
}

#[derive(Default)]
struct Cache {
    since: Option<Instant>,
    relations: HashMap<u32, Option<Arc<Relation>>>,
    names: HashMap<String, Option<u32>>,
    types: HashMap<u32, TypeClass>,
    /// Function name → whether a function of that name exists outside `pg_catalog` and
    /// `information_schema` (a user-defined one, which may read any column).
    functions: HashMap<String, bool>,
}

/// One resource's catalog reader, shared by its sessions.
pub struct Catalog {
    cache: Mutex<Cache>,
    /// Counts the times the cache was dropped, so plans built on it know they are stale.
    generation: std::sync::atomic::AtomicU64,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

struct Conn {
    stream: TargetStream,
    buf: BytesMut,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog {
            cache: Mutex::new(Cache::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Forgets everything read so far (after DDL).
    pub fn invalidate(&self) {
        *self.cache.lock().expect("catalog cache lock") = Cache::default();
        self.bump();
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes whenever what was read is dropped.
    pub fn generation(&self) -> u64 {
        // Reading the cache first lets an expired one be dropped (and counted).
        drop(self.cache());
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        let mut cache = self.cache.lock().expect("catalog cache lock");
        if cache.since.is_some_and(|t| t.elapsed() > CACHE_TTL) {
            *cache = Cache::default();
            self.bump();
        }
        cache.since.get_or_insert_with(Instant::now);
        cache
    }

    /// The relation with OID `oid`, if the cache has an answer (`Some(None)`: no such
    /// relation).
    pub fn cached_relation(&self, oid: u32) -> Option<Option<Arc<Relation>>> {
        self.cache().relations.get(&oid).cloned()
    }

    /// What a type is, from the built-in table or the cache; `Unknown` until looked up.
    pub fn type_class(&self, oid: u32) -> TypeClass {
        match builtin_class(oid) {
            TypeClass::Unknown => self
                .cache()
                .types
                .get(&oid)
                .copied()
                .unwrap_or(TypeClass::Unknown),
            known => known,
        }
    }

    /// The OID of the relation a statement calls `name` (`table` or `schema.table`, as
    /// the parser folded it), if cached.
    pub fn cached_name(&self, name: &str) -> Option<Option<u32>> {
        self.cache().names.get(name).copied()
    }

    /// Whether a function called `name` may be user-defined (`None`: not looked up yet).
    pub fn user_function(&self, name: &str) -> Option<bool> {
        self.cache().functions.get(name).copied()
    }

    /// Reads whatever of `relations`, `types`, `names` and `functions` the cache lacks;
    /// also the functions the views among the relations call.
    pub async fn load(
        &self,
        resource: &PgResource,
        relations: &[u32],
        types: &[u32],
        names: &[String],
        functions: &[String],
    ) -> Result<(), PgError> {
        let functions: Vec<String> = {
            let cache = self.cache();
            functions
                .iter()
                .filter(|f| !cache.functions.contains_key(*f))
                .cloned()
                .collect()
        };
        let (relations, types, names) = {
            let cache = self.cache();
            let relations: Vec<u32> = relations
                .iter()
                .copied()
                .filter(|o| *o != 0 && !cache.relations.contains_key(o))
                .collect();
            let types: Vec<u32> = types
                .iter()
                .copied()
                .filter(|o| builtin_class(*o) == TypeClass::Unknown && !cache.types.contains_key(o))
                .collect();
            let names: Vec<String> = names
                .iter()
                .filter(|n| !cache.names.contains_key(*n))
                .cloned()
                .collect();
            (relations, types, names)
        };
        if relations.is_empty() && types.is_empty() && names.is_empty() && functions.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock().await;
        let result = tokio::time::timeout(
            QUERY_TIMEOUT,
            self.load_over(&mut conn, resource, relations, types, names, functions),
        )
        .await
        .unwrap_or_else(|_| Err(PgError::Target("catalog lookup timed out".into())));
        if result.is_err() {
            // A connection that failed mid-query is in an unknown state: start afresh.
            *conn = None;
        }
        result
    }

    /// Which of `functions` have a definition outside the built-in schemas. A name that is
    /// not a plain identifier is not looked up and counts as user-defined.
    async fn load_functions(&self, conn: &mut Conn, functions: &[String]) -> Result<(), PgError> {
        let plain = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let mut found: HashMap<String, bool> =
            functions.iter().map(|f| (f.clone(), true)).collect();
        let list: Vec<String> = functions
            .iter()
            .filter(|f| plain(f))
            .map(|f| format!("('{f}')"))
            .collect();
        if !list.is_empty() {
            let sql = format!(
                "SELECT v.n, EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace \
                 WHERE p.proname = v.n AND s.nspname NOT IN ('pg_catalog', 'information_schema')) \
                 FROM (VALUES {}) AS v(n)",
                list.join(",")
            );
            for row in query(conn, &sql).await? {
                if let [Some(name), Some(user)] = &row[..] {
                    found.insert(name.clone(), user == "t");
                }
            }
        }
        self.cache().functions.extend(found);
        Ok(())
    }

    async fn load_over(
        &self,
        conn: &mut Option<Conn>,
        resource: &PgResource,
        mut relations: Vec<u32>,
        types: Vec<u32>,
        names: Vec<String>,
        mut functions: Vec<String>,
    ) -> Result<(), PgError> {
        if conn.is_none() {
            let params = [(
                "application_name".to_string(),
                "gatehouse-catalog".to_string(),
            )];
            let up = upstream::connect(resource, &params).await?;
            *conn = Some(Conn {
                stream: up.stream,
                buf: BytesMut::with_capacity(8192),
            });
        }
        let conn = conn.as_mut().expect("connected above");
        if !names.is_empty() {
            // Names come from the parser; anything but plain identifiers is not looked up
            // (it cannot be quoted safely here and is then treated as not a view).
            let plain: Vec<&String> = names
                .iter()
                .filter(|n| {
                    n.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.$".contains(&b)
                    })
                })
                .collect();
            let mut found: HashMap<String, Option<u32>> =
                names.iter().map(|n| (n.clone(), None)).collect();
            if !plain.is_empty() {
                let list: Vec<String> = plain.iter().map(|n| format!("('{n}')")).collect();
                let sql = format!(
                    "SELECT n, to_regclass(n)::oid FROM (VALUES {}) AS v(n)",
                    list.join(",")
                );
                for row in query(conn, &sql).await? {
                    if let [Some(name), oid] = &row[..] {
                        let oid = oid.as_deref().and_then(|o| o.parse().ok());
                        if let Some(oid) = oid {
                            relations.push(oid);
                        }
                        found.insert(name.clone(), oid);
                    }
                }
            }
            self.cache().names.extend(found);
        }
        // Views bring the relations they read, loaded in the next round.
        for _ in 0..=MAX_VIEW_DEPTH {
            relations.sort_unstable();
            relations.dedup();
            if relations.is_empty() {
                break;
            }
            let list = join(&relations);
            let sql = format!(
                "SELECT c.oid, n.nspname, c.relname, c.relkind, \
                 CASE WHEN c.relkind IN ('v','m') THEN pg_get_viewdef(c.oid) END, \
                 a.attnum, a.attname, a.atttypid \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE c.oid IN ({list})"
            );
            let mut found: HashMap<u32, Relation> = HashMap::new();
            let rows = query(conn, &sql).await?;
            for row in rows {
                let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                let Ok(oid) = text(0).parse::<u32>() else {
                    continue;
                };
                let rel = found.entry(oid).or_insert_with(|| Relation {
                    schema: text(1),
                    name: text(2),
                    kind: text(3).bytes().next().unwrap_or(b'r'),
                    columns: HashMap::new(),
                    definition: row.get(4).cloned().flatten(),
                    depends: Vec::new(),
                });
                if let (Ok(num), Ok(ty)) = (text(5).parse::<i16>(), text(7).parse::<u32>()) {
                    rel.columns.insert(num, (text(6), ty));
                }
            }
            // What the views among them read: loaded next, down to a bounded depth.
            let views: Vec<u32> = found
                .iter()
                .filter(|(_, r)| r.definition.is_some())
                .map(|(oid, _)| *oid)
                .collect();
            if !views.is_empty() {
                let sql = format!(
                    "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_rewrite r \
                     JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                     AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class \
                     WHERE r.ev_class IN ({})",
                    join(&views)
                );
                for row in query(conn, &sql).await? {
                    let oid = |i: usize| row.get(i).cloned().flatten()?.parse::<u32>().ok();
                    if let (Some(view), Some(dep)) = (oid(0), oid(1))
                        && let Some(rel) = found.get_mut(&view)
                    {
                        rel.depends.push(dep);
                    }
                }
            }
            let deps: Vec<u32> = found.values().flat_map(|r| r.depends.clone()).collect();
            for definition in found.values().filter_map(|r| r.definition.as_deref()) {
                functions.extend(gatehouse_sql::lineage(definition).functions);
            }
            let mut cache = self.cache();
            for oid in relations {
                let rel = found.remove(&oid).map(Arc::new);
                cache.relations.insert(oid, rel);
            }
            relations = deps
                .into_iter()
                .filter(|d| !cache.relations.contains_key(d))
                .collect();
        }
        functions.sort();
        functions.dedup();
        functions.retain(|f| !self.cache().functions.contains_key(f));
        if !functions.is_empty() {
            self.load_functions(conn, &functions).await?;
        }
        if !types.is_empty() {
            let sql = format!(
                "SELECT t.oid, t.typtype, t.typcategory, t.typelem, t.typbasetype FROM pg_type t WHERE t.oid IN ({})",
                join(&types)
            );
            let rows = query(conn, &sql).await?;
            let mut cache = self.cache();
            for oid in &types {
                cache.types.insert(*oid, TypeClass::Unknown);
            }
            for row in rows {
                let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                let Ok(oid) = text(0).parse::<u32>() else {
                    continue;
                };
                let base: u32 = text(4).parse().unwrap_or(0);
                let class = match (text(1).as_str(), text(2).as_str()) {
                    // A domain is its base type.
                    ("d", _) if builtin_class(base) != TypeClass::Unknown => builtin_class(base),
                    // An enum's value is its label, sent as text in both formats.
                    ("e", _) => TypeClass::Text,
                    ("c", _) => TypeClass::Record,
                    (_, "A") => TypeClass::Array,
                    // String types from extensions (citext): text in both formats.
                    ("b", "S") => TypeClass::Text,
                    ("b", _) | ("r", _) | ("m", _) => TypeClass::Scalar,
                    _ => TypeClass::Unknown,
                };
                cache.types.insert(oid, class);
            }
        }
        Ok(())
    }
}

fn join(oids: &[u32]) -> String {
    oids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs one simple query; the rows as text (`None` for NULL).
async fn query(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
    let mut out = Vec::with_capacity(sql.len() + 6);
    gatehouse_wire_pg::frontend::frame(b'Q', format!("{sql}\0").as_bytes(), &mut out);
    crate::send(&mut conn.stream, &out).await?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let frame = loop {
            if let Some(len) =
                split_frame(&conn.buf).map_err(|e| PgError::Target(format!("protocol: {e}")))?
            {
                break conn.buf.split_to(len);
            }
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                return Err(PgError::Target("closed the catalog connection".into()));
            }
        };
        match frame[0] {
            b'D' => {
                let mut row = Vec::new();
                for value in rows::data_row(&frame[5..])
                    .map_err(|e| PgError::Target(format!("catalog row: {e}")))?
                {
                    let value = value.map_err(|e| PgError::Target(format!("catalog row: {e}")))?;
                    row.push(value.map(|v| String::from_utf8_lossy(v).into_owned()));
                }
                rows.push(row);
            }
            b'E' => {
                let (code, message) = backend::error_fields(&frame[5..]).unwrap_or(("", ""));
                error = Some(PgError::Target(format!(
                    "catalog query failed: {message} (SQLSTATE {code})"
                )));
            }
            b'Z' => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}
