//! Retention: old segments give up their entry bodies and recorded data, keeping only
//! their leaf hashes, so the tree — and every checkpoint, proof and export made before —
//! still verifies.
//!
//! A pruned segment `NNN.seg` becomes `NNN.pruned`: one JSON header line saying which
//! entries it held and when, then each entry's 32-byte leaf hash. Only whole segments
//! that are entirely older than the cutoff, signed by a checkpoint, and not the segment
//! being written are pruned. Chunks go only when no kept entry refers to them (chunks are
//! content-addressed, so two entries may share one).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::error::{IoContext, LedgerError};
use crate::fsutil::{sync_dir, write_atomic};
use crate::layout::Layout;
use crate::merkle::leaf_hash;
pub use crate::pruned::{PrunedHeader, PrunedSegment, read_pruned};
use crate::segment::{self, SegmentFile};

/// What one pruning will do, worked out before anything is changed (and recorded in the
/// ledger before it is done).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrunePlan {
    /// Entries before this time are old enough to go.
    pub cutoff_ts: u64,
    /// Index range pruned: `first..end`.
    pub first: u64,
    pub end: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    /// Segment files that become `.pruned`.
    pub segments: Vec<String>,
    /// Chunk files that no kept entry refers to.
    pub chunks: Vec<String>,
    /// Bytes the segments and chunks take now.
    pub bytes: u64,
    #[serde(skip)]
    work: Vec<(SegmentFile, PrunedSegment)>,
}

impl PrunePlan {
    pub fn is_empty(&self) -> bool {
        self.work.is_empty()
    }
}

/// Works out which segments to prune: whole segments whose entries are all older than
/// `cutoff_ts`, below `signed_size` (covered by a checkpoint), never the last segment.
/// `now` (unix microseconds) is recorded as when the segments were pruned.
pub fn plan(
    layout: &Layout,
    cutoff_ts: u64,
    signed_size: u64,
    now: u64,
) -> Result<PrunePlan, LedgerError> {
    let segments = segment::list_segments(layout)?;
    let mut planner = Planner {
        plan: PrunePlan {
            cutoff_ts,
            ..PrunePlan::default()
        },
        signed_size,
        last: segments.last().map(|s| s.first_index),
        now,
        open: None,
        pruning: true,
        doomed_chunks: BTreeSet::new(),
        kept_chunks: BTreeSet::new(),
    };
    segment::scan(layout, |e| {
        let starts = planner
            .open
            .as_ref()
            .is_none_or(|(seg, _, _)| seg.path.as_path() != e.segment);
        if starts {
            planner.close();
            let seg = segments
                .iter()
                .find(|s| s.path.as_path() == e.segment)
                .cloned()
                .expect("scanned segments are listed");
            planner.open(seg, e.index, e.header.ts);
        }
        planner.entry(e);
        Ok(())
    })?;
    planner.close();
    let Planner {
        mut plan,
        doomed_chunks,
        kept_chunks,
        ..
    } = planner;
    for chunk in doomed_chunks.difference(&kept_chunks) {
        let path = layout.chunk(chunk);
        if let Ok(meta) = path.metadata() {
            plan.bytes += meta.len();
            plan.chunks.push(chunk.clone());
        }
    }
    Ok(plan)
}

/// The scan behind [`plan`]: one segment open at a time, decided when it closes.
struct Planner {
    plan: PrunePlan,
    signed_size: u64,
    /// The segment being written (never pruned).
    last: Option<u64>,
    now: u64,
    /// The segment being read, what it would become, and the chunks its entries use.
    open: Option<(SegmentFile, PrunedSegment, Vec<String>)>,
    /// Segments are in time order: once one must stay, all later ones stay too, and their
    /// leaves need not be kept.
    pruning: bool,
    doomed_chunks: BTreeSet<String>,
    kept_chunks: BTreeSet<String>,
}

impl Planner {
    fn open(&mut self, seg: SegmentFile, first: u64, ts: u64) {
        let header = PrunedHeader {
            pruned: 1,
            first,
            count: 0,
            first_ts: ts,
            last_ts: ts,
            pruned_at: self.now,
        };
        let pruned = PrunedSegment {
            header,
            leaves: Vec::new(),
        };
        self.open = Some((seg, pruned, Vec::new()));
    }

    fn entry(&mut self, e: &segment::RawEntry<'_>) {
        let Some((_, p, chunks)) = self.open.as_mut() else {
            return;
        };
        p.header.count += 1;
        p.header.last_ts = e.header.ts;
        if self.pruning {
            p.leaves.push(leaf_hash(e.line));
        }
        chunks.extend(e.header.chunks.iter().map(|c| c.sha256.clone()));
    }

    fn close(&mut self) {
        let Some((seg, p, chunks)) = self.open.take() else {
            return;
        };
        let end = p.header.first + p.header.count;
        self.pruning = self.pruning
            && Some(seg.first_index) != self.last
            && p.header.last_ts < self.plan.cutoff_ts
            && end <= self.signed_size;
        if !self.pruning {
            self.kept_chunks.extend(chunks);
            return;
        }
        let plan = &mut self.plan;
        if plan.work.is_empty() {
            plan.first = p.header.first;
            plan.first_ts = p.header.first_ts;
        }
        plan.end = end;
        plan.last_ts = p.header.last_ts;
        plan.bytes += seg.path.metadata().map_or(0, |m| m.len());
        plan.segments.push(file_name(&seg.path));
        self.doomed_chunks.extend(chunks);
        plan.work.push((seg, p));
    }
}

/// Carries out a plan: each segment's `.pruned` file is written and synced before the
/// segment is removed, so a crash leaves either the segment or its hashes (or both, which
/// the scan accepts, preferring the entries).
pub fn apply(layout: &Layout, plan: &PrunePlan) -> Result<(), LedgerError> {
    for (seg, pruned) in &plan.work {
        let mut bytes = serde_json::to_vec(&pruned.header)
            .map_err(|e| LedgerError::Corrupt(format!("pruned header: {e}")))?;
        bytes.push(b'\n');
        for leaf in &pruned.leaves {
            bytes.extend_from_slice(leaf);
        }
        write_atomic(&layout.pruned(seg.first_index), &bytes)?;
        fs::remove_file(&seg.path).at(&seg.path)?;
    }
    sync_dir(&layout.segments())?;
    for chunk in &plan.chunks {
        let path = layout.chunk(chunk);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LedgerError::io(path, e)),
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
