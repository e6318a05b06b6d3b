//! Results on the data path: masking plans for what the server returns (made before the
//! frame that needs one), masked frames, and the recording of each result and its bytes.

use std::sync::Arc;

use gatehouse_core::EventKind;
use serde_json::json;

use super::{Session, Stop};
use crate::masking::{CopyPlan, ResultPlan, Rewriter, Shape, Source};
use crate::prepared::Prepared;
use crate::tracker::{Describes, Work};

impl Session {
    /// Writes the buffered result data as a chunk and appends the `recording` entry that
    /// says which command each slice belongs to. A chunk that cannot be written is recorded
    /// as lost, with the reason, so the gap is explicit.
    pub(super) async fn flush_recording(&mut self) {
        let Some(batch) = self.recorder.take() else {
            return;
        };
        let parts: Vec<[u64; 3]> = batch
            .parts
            .iter()
            .map(|p| [p.command, p.offset, p.len])
            .collect();
        let mut event = self.event(
            EventKind::Recording,
            json!({"parts": parts, "bytes": batch.bytes.len()}),
        );
        match self.resource.ledger.put_chunk(batch.bytes).await {
            Ok(chunk) => event.chunks.push(chunk),
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "could not store result data");
                event.data["lost"] = e.to_string().into();
            }
        }
        // Not waited for, like a result: it gates nothing the client does.
        if let Err(e) = self.resource.ledger.append_detached(&event) {
            tracing::error!(session = %self.id, error = %e, "could not record result data");
        }
    }

    /// What masking needs to know of a statement about to run (nothing when off).
    pub(super) fn shape(
        &mut self,
        prepared: &Prepared,
        extended: Option<(String, Vec<i16>)>,
    ) -> Shape {
        let Some(m) = &mut self.masking else {
            return Shape::default();
        };
        let mut source = prepared.source(m.policy.has_rules());
        if let Some(lineage) = &source.lineage {
            if let Some(cursor) = &lineage.declares_cursor {
                m.cursors.insert(cursor.clone(), source.clone());
            } else if let Some(cursor) = &lineage.fetches_cursor {
                // FETCH returns the declaring query's columns; an unknown cursor (declared
                // before the gateway saw it, e.g. inside a function) has unknown lineage.
                source = m.cursors.get(cursor).cloned().unwrap_or_else(|| {
                    Arc::new(Source::new(
                        prepared.sql.clone(),
                        Some(gatehouse_sql::lineage::Lineage {
                            opaque: true,
                            ..Default::default()
                        }),
                        Vec::new(),
                    ))
                });
            }
        }
        let (statement, formats) = match extended {
            Some((statement, formats)) => (Some(statement), Some(formats)),
            None => (None, None),
        };
        Shape {
            source: Some(source),
            statement,
            formats,
            ddl: prepared.is_ddl(),
            ..Shape::default()
        }
    }

    /// Whether a server frame needs a masking plan made first: a result's description, or
    /// its first row when it was described earlier (a prepared statement), or the start of
    /// COPY. Every other frame is masked without waiting on anything.
    pub(super) fn needs_planning(&mut self, frame: &[u8]) -> bool {
        match frame[0] {
            b'T' | b'H' => true,
            b'D' => self
                .tracker
                .front_work()
                .is_some_and(|w| w.shape.plan.is_none()),
            // Whether a statement's messages may quote masked values needs the catalog.
            b'E' | b'N' => {
                self.masking.as_ref().is_some_and(|m| m.policy.has_rules())
                    && self
                        .tracker
                        .front_work()
                        .is_some_and(|w| w.shape.texts_tainted.is_none())
            }
            _ => false,
        }
    }

    /// Makes the plan [`Session::needs_planning`] asked for (reading the catalog if need be).
    pub(super) async fn plan_masking(&mut self, frame: &[u8]) {
        match frame[0] {
            b'T' => self.describe(frame).await,
            b'D' => self.plan_from_statement().await,
            b'H' => self.plan_copy(frame).await,
            b'E' | b'N' => self.plan_texts().await,
            _ => {}
        }
    }

    /// Reads what the catalog must say of the relations a statement names and the
    /// functions it calls; a failure is logged with what follows from it (`then`).
    async fn load_statement_catalog(&self, source: Option<&Source>, then: &str) {
        let needs = crate::masking::CatalogNeeds::of_statement(source);
        if let Err(e) = self
            .resource
            .catalog
            .load(&self.resource, &[], &[], &needs.names, &needs.functions)
            .await
        {
            tracing::warn!(session = %self.id, error = %e, "catalog lookup failed; {then}");
        }
    }

    /// Decides whether the front statement's error and notice texts are masked whole
    /// ([`crate::masking::texts_tainted`]), reading what the catalog must say first.
    async fn plan_texts(&mut self) {
        let Some(m) = &self.masking else {
            return;
        };
        let policy = m.policy.clone();
        let Some(work) = self.tracker.front_work() else {
            return;
        };
        let source = work.shape.source.clone();
        self.load_statement_catalog(
            source.as_deref(),
            "the statement's messages are masked whole",
        )
        .await;
        let tainted =
            crate::masking::texts_tainted(&policy, &self.resource.catalog, source.as_deref());
        if let Some(work) = self.tracker.front_work() {
            work.shape.texts_tainted = Some(tainted);
        }
    }

    /// One server frame with masking on, its plan made: the frame is masked, the masked
    /// bytes are recorded, and the client gets them (or the clear bytes when policy lets it
    /// see clear values). Not async: most frames are rows, and a row waits on nothing.
    pub(super) fn on_server_masked(
        &mut self,
        frame: &[u8],
        to_client: &mut Vec<u8>,
        done: &mut Vec<Work>,
    ) {
        let Some(m) = &mut self.masking else {
            return;
        };
        let rewriter = Rewriter {
            policy: &m.policy,
            catalog: &self.resource.catalog,
            encoding: self.lexicon.encoding,
        };
        let work = self.tracker.front_work();
        let (plan, copy, first, tainted, counts) = match work {
            Some(w) => {
                let first = w.shape.copy_rows == 0;
                if frame[0] == b'd' {
                    w.shape.copy_rows += 1;
                }
                (
                    w.shape.plan.as_deref(),
                    w.shape.copy.as_deref(),
                    first,
                    w.shape.texts_tainted == Some(true),
                    &mut w.shape.counts,
                )
            }
            None => {
                m.unowned = crate::masking::MaskCounts::default();
                (None, None, true, false, &mut m.unowned)
            }
        };
        m.row.clear();
        let row_changed =
            frame[0] == b'D' && rewriter.data_row_into(frame, plan, counts, &mut m.row);
        let other = match frame[0] {
            // Without a plan (the CopyOutResponse could not be read) nothing is known of
            // the rows: they are looked at whole.
            b'd' => rewriter.copy_data(frame, copy.unwrap_or(&CopyPlan::default()), first, counts),
            b'E' | b'N' => rewriter.fields_message(frame, tainted, counts),
            b'A' => rewriter.notification(frame, counts),
            _ => None,
        };
        let recorded: &[u8] = if row_changed {
            &m.row
        } else {
            other.as_deref().unwrap_or(frame)
        };
        to_client.extend_from_slice(if m.clear_client { frame } else { recorded });
        self.tracker
            .on_server(recorded, done, to_client, &mut self.recorder);
    }

    /// A RowDescription: the plan of the result it describes, or (for a prepared
    /// statement described ahead) the description kept for its executions.
    async fn describe(&mut self, frame: &[u8]) {
        match self.tracker.describes() {
            Describes::Work(at, statement) => {
                let Some(work) = self.tracker.work_at(at) else {
                    return;
                };
                let (source, formats) = (work.shape.source.clone(), work.shape.formats.clone());
                // A Describe of a portal reports the real formats, and so does a simple
                // query; a statement's description has placeholders the Bind replaces.
                let formats = if statement { formats } else { None };
                let plan = self.build_plan(&frame[5..], formats, source).await;
                if let Some(work) = self.tracker.work_at(at) {
                    work.shape.plan = plan;
                }
            }
            Describes::Statement(name) => {
                if let Some(m) = &mut self.masking {
                    m.statements.insert(name, frame[5..].into());
                }
            }
            Describes::Nothing => {}
        }
    }

    /// The plan of an Execute whose statement was described earlier, with the Bind's formats.
    async fn plan_from_statement(&mut self) {
        let Some(work) = self.tracker.front_work() else {
            return;
        };
        // Taken, not copied: they are wanted for this plan only.
        let (source, formats, statement) = (
            work.shape.source.clone(),
            work.shape.formats.take(),
            work.shape.statement.take(),
        );
        let body = match (&self.masking, statement) {
            (Some(m), Some(name)) => m.statements.get(&name).cloned(),
            _ => None,
        };
        // Unknown shape: the plan stays empty and every value is masked whole.
        let Some(body) = body else {
            return;
        };
        let plan = self.build_plan(&body, formats, source).await;
        if let Some(work) = self.tracker.front_work() {
            work.shape.plan = plan;
        }
    }

    /// A result's plan, kept with its statement or built after loading what the catalog
    /// must say about it. A catalog that cannot be read leaves origins unresolved, which
    /// masks them (see [`crate::masking::plan`]); such a plan is not kept, so the next
    /// result tries the catalog again.
    async fn build_plan(
        &mut self,
        body: &[u8],
        formats: Option<Vec<i16>>,
        source: Option<Arc<Source>>,
    ) -> Option<Arc<ResultPlan>> {
        let policy = self.masking.as_ref()?.policy.clone();
        let generation = self.resource.catalog.generation();
        if let Some(plan) = source
            .as_ref()
            .and_then(|s| s.plan(body, formats.as_deref(), generation))
        {
            return Some(plan);
        }
        let fields = gatehouse_wire_pg::rows::row_description(body).ok()?;
        let needs = crate::masking::catalog_needs(&policy, &fields, source.as_deref());
        let loaded = self
            .resource
            .catalog
            .load(
                &self.resource,
                &needs.relations,
                &needs.types,
                &needs.names,
                &needs.functions,
            )
            .await;
        if let Err(e) = &loaded {
            tracing::warn!(session = %self.id, error = %e, "catalog lookup failed; unresolved columns are masked");
        }
        let plan = Arc::new(crate::masking::plan(
            &policy,
            &self.resource.catalog,
            &fields,
            formats.as_deref(),
            source.as_deref(),
        ));
        if let (Ok(()), Some(source)) = (loaded, &source) {
            source.keep(body, formats, generation, plan.clone());
        }
        Some(plan)
    }

    /// A CopyOutResponse: how the rows of this COPY are masked.
    async fn plan_copy(&mut self, frame: &[u8]) {
        let Some(m) = &self.masking else {
            return;
        };
        let policy = m.policy.clone();
        let Ok((overall, columns)) = gatehouse_wire_pg::backend::copy_response(&frame[5..]) else {
            return;
        };
        let Some(work) = self.tracker.front_work() else {
            return;
        };
        let source = work.shape.source.clone();
        // The columns' types tell how each value is masked (a token where the type is text,
        // NULL where it is not, bytea as its bytes), rules or not.
        self.load_statement_catalog(source.as_deref(), "unresolved columns are masked")
            .await;
        let copy = crate::masking::copy_plan(
            &policy,
            &self.resource.catalog,
            source.as_deref(),
            (overall, columns.len()),
        );
        if let Some(work) = self.tracker.front_work() {
            work.shape.copy = Some(Arc::new(copy));
        }
    }

    pub(super) fn record_results(&mut self, done: &mut Vec<Work>) {
        for work in done.drain(..) {
            self.record_result(work);
        }
    }

    /// The after-the-fact summary of a statement; nobody waits for it.
    fn record_result(&mut self, work: Work) {
        if work.error.is_some() {
            self.totals.errors += 1;
        }
        if let Some(decided) = &work.decided
            && let Some((tag, why)) =
                crate::integrity::unaccounted_tag(&decided.analysis, &work.tags)
        {
            // The server ran something that was not decided: the gateway's reading and the
            // server's diverged. Recorded, counted, and the session ends.
            metrics::counter!("gatehouse_integrity_mismatches_total").increment(1);
            tracing::error!(session = %self.id, tag, why, "integrity mismatch: the target ran a command that was not decided");
            if self.stop.is_none() {
                let event = self.event(
                    EventKind::IntegrityMismatch,
                    json!({
                        "command": work.command,
                        "decided": decided.summary.get("commands"),
                        "tags": work.tags,
                        "tag": tag,
                        "reason": why,
                    }),
                );
                self.stop = Some(Stop {
                    code: "XX000",
                    message: format!(
                        "gatehouse: the server ran a command that was not decided ({why}); the session is ended"
                    ),
                    event: Some(event),
                });
            }
        }
        let mut data = json!({
            "command": work.command,
            "tags": work.tags,
            "rows": work.rows,
            "bytes": work.bytes,
            "duration_us": work.started.elapsed().as_micros() as u64,
            "error": work.error,
            "skipped": work.skipped,
        });
        // The recorded bytes themselves follow in `recording` entries; the hash here ties
        // them to this result the moment it ends.
        if let Some(sha256) = work.output.sha256() {
            data["recorded"] = json!({"sha256": sha256, "bytes": work.output.len});
        }
        if work.output.truncated > 0 {
            data["truncated_bytes"] = work.output.truncated.into();
        }
        if !work.shape.counts.is_empty() {
            data["masked"] = work.shape.counts.to_json();
        }
        if work.shape.ddl {
            // The catalog may have changed under the masking plans.
            self.resource.catalog.invalidate();
        }
        let event = self.event(EventKind::Result, data);
        if let Err(e) = self
            .resource
            .ledger
            // Not waited for, even on `sync` resources: a result gates nothing, and the
            // next command's fsync (or the batched window) makes it durable; an fsync of
            // its own would double the syncs per statement.
            .append_detached(&event)
        {
            tracing::error!(session = %self.id, error = %e, "could not record a result");
        }
    }
}
