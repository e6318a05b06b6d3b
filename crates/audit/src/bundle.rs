//! The evidence bundle: an export an auditor can check offline for completeness. It holds
//! every ledger entry of the index range that covers a time window (plus the entry on
//! each side that shows where the window starts and ends), the recorded data of the
//! entries the filter takes, the signed checkpoint the range belongs to and the Merkle
//! hashes that link the range to that checkpoint's root.
//!
//! Building ([`Builder`]) and checking ([`verify`]) are pure: the caller scans the ledger
//! and reads chunks. The file is JSON lines, one record each:
//!
//! ```text
//! {"bundle":"gatehouse-audit-bundle","version":1,"manifest":{...}}   the query and counts
//! {"checkpoint":"<signed note>"}
//! {"left":["<hex>",...]}        compact range of the entries before the range
//! {"entry":"<line>","leaf":"<hex>"}                      an entry exactly as stored
//! {"hashed":{"i":7,"leaf":"<hex>","why":"pruned"|"withheld"}}   an entry without its body
//! {"right":["<hex>",...]}       roots of the aligned subtrees after the range
//! {"chunk":{"sha256":"<hex>","size":123,"data":"<base64>"}}
//! ```
//!
//! Entries of the window the filter does not take are kept whole by default, so the
//! verifier can re-apply the filter and prove nothing matching was left out. With
//! `withhold_others` they are reduced to their leaf hash: their place in the log is still
//! proven, but the verifier says it cannot re-apply the filter to them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use gatehouse_core::{ChunkRef, EntryHeader};
use gatehouse_ledger::Checkpoint;
use gatehouse_ledger::merkle::{CompactRange, Hash, aligned_subtrees, leaf_hash};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AuditError;
use crate::export::Filter;

/// The tag on a bundle's first line.
pub const TAG: &str = "gatehouse-audit-bundle";
const VERSION: u32 = 1;

/// What a bundle says about itself: the query it answers and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub query: Filter,
    /// When the bundle was made (unix microseconds).
    pub created: u64,
    pub generator: String,
    /// Ledger index of the first entry held.
    pub first: u64,
    /// One past the last entry held.
    pub end: u64,
    /// The size of the signed tree the range is proven against.
    pub checkpoint_size: u64,
    pub counts: Counts,
}

/// Entries of the window by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Entries the filter takes.
    pub matched: u64,
    /// Entries of the window the filter does not take (held whole).
    pub excluded: u64,
    /// Entries of the window the filter does not take, reduced to their hash.
    pub withheld: u64,
    /// Entries of the window whose body retention has pruned.
    pub pruned: u64,
    /// Recorded data chunks of the matching entries.
    pub chunks: u64,
}

impl std::fmt::Display for Counts {
    /// `12 match, 30 do not, 2 withheld as hashes, 5 pruned by retention; 3 recorded data chunks`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} match, {} do not", self.matched, self.excluded)?;
        if self.withheld > 0 {
            write!(f, ", {} withheld as hashes", self.withheld)?;
        }
        if self.pruned > 0 {
            write!(f, ", {} pruned by retention", self.pruned)?;
        }
        write!(f, "; {} recorded data chunks", self.chunks)
    }
}

/// One entry of the range as the builder keeps it.
#[derive(Debug, Clone)]
enum Item {
    Whole {
        line: String,
        leaf: Hash,
    },
    Hashed {
        index: u64,
        leaf: Hash,
        why: &'static str,
    },
}

/// Collects a bundle while the caller scans the ledger in index order. The range's entry
/// records are written to `items` as they come (a file for a large window), so memory
/// does not grow with the window; [`Plan::write_head`], those records, then
/// [`Plan::write_tail`] make the bundle.
#[derive(Debug)]
pub struct Builder<W> {
    query: Filter,
    withhold_others: bool,
    size: u64,
    next: u64,
    /// Compact range of the entries before `held`'s first.
    left: CompactRange,
    /// The last entry seen before the window: the range's first if the window follows.
    before: Option<(u64, Item)>,
    items: W,
    first: Option<u64>,
    /// Set once the entry showing the window's end is held.
    end: Option<u64>,
    right: RightHashes,
    counts: Counts,
    chunks: Vec<ChunkRef>,
}

/// Roots of the aligned subtrees after the range, computed as their leaves stream past.
#[derive(Debug, Default)]
struct RightHashes {
    plan: Vec<(u64, u32)>,
    current: CompactRange,
    roots: Vec<Hash>,
}

impl RightHashes {
    fn push(&mut self, leaf: Hash) {
        self.current.push(leaf);
        if let Some(&(_, height)) = self.plan.get(self.roots.len())
            && self.current.size() == 1 << height
        {
            self.roots.push(self.current.root());
            self.current = CompactRange::new();
        }
    }
}

/// A finished bundle, ready to write once its chunks are read.
#[derive(Debug)]
pub struct Plan {
    pub manifest: Manifest,
    /// The chunks of the matching entries, each once, in first-use order.
    pub chunks: Vec<ChunkRef>,
    left: Vec<Hash>,
    right: Vec<Hash>,
}

impl<W: Write> Builder<W> {
    /// A bundle of `query` proven against a checkpoint of `checkpoint_size` entries; only
    /// entries below that size may be fed. The range's records go to `items`.
    pub fn new(query: Filter, withhold_others: bool, checkpoint_size: u64, items: W) -> Self {
        Builder {
            query,
            withhold_others,
            size: checkpoint_size,
            next: 0,
            left: CompactRange::new(),
            before: None,
            items,
            first: None,
            end: None,
            right: RightHashes::default(),
            counts: Counts::default(),
            chunks: Vec::new(),
        }
    }

    /// Feeds the entry at `index` exactly as stored. Entries must come in order from 0.
    pub fn entry(&mut self, index: u64, line: &[u8]) -> Result<(), AuditError> {
        self.expect(index)?;
        let leaf = leaf_hash(line);
        if self.end.is_some() {
            // After the range only the hash counts: nothing to read.
            self.right.push(leaf);
            return Ok(());
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| AuditError::Ledger(format!("entry {index} is not UTF-8")))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| AuditError::Ledger(format!("entry {index} is not JSON: {e}")))?;
        let ts = value["ts"].as_u64().unwrap_or(0);
        let whole = Item::Whole {
            line: text.to_string(),
            leaf,
        };
        self.place(index, leaf, Some(ts), whole, Some(value))
    }

    /// Feeds an entry whose body retention has pruned: only its leaf hash is left.
    pub fn pruned(&mut self, index: u64, leaf: Hash) -> Result<(), AuditError> {
        self.expect(index)?;
        let item = Item::Hashed {
            index,
            leaf,
            why: "pruned",
        };
        self.place(index, leaf, None, item, None)
    }

    fn expect(&mut self, index: u64) -> Result<(), AuditError> {
        if index != self.next || index >= self.size {
            return Err(AuditError::Ledger(format!(
                "entry {index} came out of order (expected {} below {})",
                self.next, self.size
            )));
        }
        self.next += 1;
        Ok(())
    }

    /// Puts one entry where it belongs: before the window, in it, as its end boundary, or
    /// after. `ts` is `None` for a pruned entry, which counts as inside the window once
    /// the window has started (its time is gone with its body).
    fn place(
        &mut self,
        index: u64,
        leaf: Hash,
        ts: Option<u64>,
        item: Item,
        value: Option<Value>,
    ) -> Result<(), AuditError> {
        if self.end.is_some() {
            self.right.push(leaf);
            return Ok(());
        }
        let before = match (ts, self.query.since) {
            (Some(ts), Some(since)) => ts < since,
            // A pruned entry's time is gone with its body. Before the window has started it
            // counts as before it; if it ends up as the range's first entry, the verifier
            // says the window's start cannot be shown.
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if before && self.first.is_none() {
            if let Some((_, prev)) = self.before.take() {
                self.left.push(item_leaf(&prev));
            }
            self.before = Some((index, item));
            return Ok(());
        }
        if self.first.is_none() {
            // The window starts here; the entry before it shows where.
            match self.before.take() {
                Some((i, prev)) => self.hold_first(i, prev)?,
                None => self.first = Some(index),
            }
        }
        let after = ts.is_some_and(|ts| self.query.until.is_some_and(|u| ts >= u));
        if after {
            self.hold(&item)?;
            self.end = Some(index + 1);
            self.right.plan = aligned_subtrees(index + 1, self.size);
            return Ok(());
        }
        match (item, value) {
            (Item::Whole { line, leaf }, Some(value)) => {
                if self.query.matches(&value) {
                    self.counts.matched += 1;
                    for c in value["chunks"].as_array().into_iter().flatten() {
                        if let Ok(c) = serde_json::from_value::<ChunkRef>(c.clone())
                            && !self.chunks.contains(&c)
                        {
                            self.chunks.push(c);
                        }
                    }
                    self.hold(&Item::Whole { line, leaf })?;
                } else if self.withhold_others {
                    self.counts.withheld += 1;
                    self.hold(&Item::Hashed {
                        index,
                        leaf,
                        why: "withheld",
                    })?;
                } else {
                    self.counts.excluded += 1;
                    self.hold(&Item::Whole { line, leaf })?;
                }
            }
            (it, _) => {
                self.counts.pruned += 1;
                self.hold(&it)?;
            }
        }
        Ok(())
    }

    /// Ends the scan; every entry below the checkpoint size must have been fed. Returns
    /// the plan and the sink holding the range's records.
    pub fn finish(mut self, created: u64, generator: &str) -> Result<(Plan, W), AuditError> {
        if self.next != self.size {
            return Err(AuditError::Ledger(format!(
                "the checkpoint covers {} entries but only {} were read",
                self.size, self.next
            )));
        }
        if self.first.is_none() {
            // Nothing in the window: the bundle holds the last entry before it, which shows
            // that the signed log has nothing later.
            if let Some((i, prev)) = self.before.take() {
                self.hold_first(i, prev)?;
            } else {
                self.first = Some(self.size);
            }
        }
        let first = self.first.unwrap_or(0);
        let end = self.end.unwrap_or(self.size);
        self.counts.chunks = self.chunks.len() as u64;
        let plan = Plan {
            manifest: Manifest {
                query: self.query,
                created,
                generator: generator.to_string(),
                first,
                end,
                checkpoint_size: self.size,
                counts: self.counts,
            },
            chunks: self.chunks,
            left: self.left.hashes().to_vec(),
            right: self.right.roots,
        };
        self.items
            .flush()
            .map_err(|e| AuditError::Io(e.to_string()))?;
        Ok((plan, self.items))
    }

    /// Makes the last entry before the window the range's first.
    fn hold_first(&mut self, index: u64, item: Item) -> Result<(), AuditError> {
        if matches!(item, Item::Hashed { .. }) {
            self.counts.pruned += 1;
        }
        self.first = Some(index);
        self.hold(&item)
    }

    /// Writes one record of the range.
    fn hold(&mut self, item: &Item) -> Result<(), AuditError> {
        let record = match item {
            Item::Whole { line, leaf } => json!({"entry": line, "leaf": hex::encode(leaf)}),
            Item::Hashed { index, leaf, why } => {
                json!({"hashed": {"i": index, "leaf": hex::encode(leaf), "why": why}})
            }
        };
        serde_json::to_writer(&mut self.items, &record)
            .map_err(|e| AuditError::Io(e.to_string()))?;
        self.items
            .write_all(b"\n")
            .map_err(|e| AuditError::Io(e.to_string()))
    }
}

fn item_leaf(item: &Item) -> Hash {
    match item {
        Item::Whole { leaf, .. } | Item::Hashed { leaf, .. } => *leaf,
    }
}

impl Plan {
    /// The bundle's first records: the manifest, the checkpoint note and the hashes
    /// before the range.
    pub fn write_head(&self, note: &str, out: &mut impl Write) -> Result<(), AuditError> {
        record(
            out,
            &json!({"bundle": TAG, "version": VERSION, "manifest": self.manifest}),
        )?;
        record(out, &json!({ "checkpoint": note }))?;
        record(out, &json!({ "left": hexes(&self.left) }))
    }

    /// The bundle's last records: the hashes after the range and the matching entries'
    /// recorded data. `chunk` reads a chunk's bytes; one that cannot be read fails the
    /// export, since the bundle would not verify without it.
    pub fn write_tail(
        &self,
        mut chunk: impl FnMut(&ChunkRef) -> Result<Vec<u8>, String>,
        out: &mut impl Write,
    ) -> Result<(), AuditError> {
        record(out, &json!({ "right": hexes(&self.right) }))?;
        for c in &self.chunks {
            let data = chunk(c).map_err(|e| {
                AuditError::Ledger(format!("chunk {} cannot be read: {e}", c.sha256))
            })?;
            record(
                out,
                &json!({"chunk": {"sha256": c.sha256, "size": c.size, "data": B64.encode(data)}}),
            )?;
        }
        Ok(())
    }

    /// The whole bundle, with the range's records held in memory.
    pub fn write(
        &self,
        note: &str,
        items: &[u8],
        chunk: impl FnMut(&ChunkRef) -> Result<Vec<u8>, String>,
        out: &mut impl Write,
    ) -> Result<(), AuditError> {
        self.write_head(note, out)?;
        out.write_all(items)
            .map_err(|e| AuditError::Io(e.to_string()))?;
        self.write_tail(chunk, out)
    }
}

fn record(out: &mut impl Write, value: &Value) -> Result<(), AuditError> {
    serde_json::to_writer(&mut *out, value).map_err(|e| AuditError::Io(e.to_string()))?;
    out.write_all(b"\n")
        .map_err(|e| AuditError::Io(e.to_string()))
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// What a bundle proved.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub query: Filter,
    pub origin: String,
    pub checkpoint_size: u64,
    pub root: String,
    pub first: u64,
    pub end: u64,
    pub counts: Counts,
    /// Whether entries are shown on both sides of the window (or the log's ends).
    pub window_complete: bool,
    /// What the verifier could not prove, in words (pruned or withheld entries, a window
    /// reaching past the checkpoint).
    pub notes: Vec<String>,
    /// The matching entries with their leaf hashes, in ledger order.
    #[serde(skip)]
    pub entries: Vec<(Value, String)>,
    /// The matching entries' recorded data by chunk hash.
    #[serde(skip)]
    pub chunks: BTreeMap<String, Vec<u8>>,
}

#[derive(Deserialize)]
struct Head {
    bundle: String,
    version: u32,
    manifest: Manifest,
}

#[derive(Deserialize)]
struct HashedRecord {
    i: u64,
    leaf: String,
    why: String,
}

#[derive(Deserialize)]
struct ChunkRecord {
    sha256: String,
    size: u64,
    data: String,
}

/// Checks a bundle against the ledger's verifier key, offline: the checkpoint's signature,
/// that the entries are contiguous and lead with the proof hashes to the signed root, that
/// the range covers the window, the filter re-applied, and every matching entry's data.
/// The error names the first thing that is wrong.
pub fn verify(input: impl BufRead, vkey: &str) -> Result<Verified, AuditError> {
    verify_with(input, vkey, true)
}

/// [`verify`]; without `keep`, the matching entries and their data are checked and
/// counted but not kept, so a bundle of any size verifies in little memory.
pub fn verify_with(input: impl BufRead, vkey: &str, keep: bool) -> Result<Verified, AuditError> {
    let bad = AuditError::Bundle;
    let mut records = Records {
        lines: input.lines(),
        at: 0,
    };
    let mut next_line = |what: &str| records.expect(what);

    let (_, head) = next_line("manifest")?;
    let head: Head = serde_json::from_value(head).map_err(|e| {
        bad(format!(
            "line 1 is not a Gatehouse audit bundle manifest: {e}"
        ))
    })?;
    if head.bundle != TAG || head.version != VERSION {
        return Err(bad(format!(
            "line 1: not a Gatehouse audit bundle of version {VERSION} ({} {})",
            head.bundle, head.version
        )));
    }
    let manifest = head.manifest;
    let query = manifest.query.clone();

    let (_, cp) = next_line("checkpoint")?;
    let note = cp["checkpoint"]
        .as_str()
        .ok_or_else(|| bad("line 2: expected the signed checkpoint".into()))?;
    let checkpoint: Checkpoint = gatehouse_ledger::verify_note(note, vkey).map_err(|e| {
        bad(format!(
            "the checkpoint does not verify with the given key: {e}"
        ))
    })?;
    if checkpoint.size != manifest.checkpoint_size {
        return Err(bad(format!(
            "the checkpoint was swapped: the manifest is for a tree of {} entries, the checkpoint signs {}",
            manifest.checkpoint_size, checkpoint.size
        )));
    }
    if manifest.first > manifest.end || manifest.end > checkpoint.size {
        return Err(bad(format!(
            "the manifest's range {}..{} does not fit a tree of {} entries",
            manifest.first, manifest.end, checkpoint.size
        )));
    }

    let (n, left) = next_line("left proof")?;
    let left = hash_list(&left["left"], n)?;
    let mut range = CompactRange::from_parts(manifest.first, left).map_err(|e| {
        bad(format!(
            "line {n}: the hashes before the range are wrong: {e}"
        ))
    })?;

    let mut counts = Counts::default();
    let mut entries = Vec::new();
    let mut notes = Vec::new();
    let mut wanted_chunks: Vec<(u64, ChunkRef)> = Vec::new();
    let mut last_ts = 0u64;
    // The first and last records of the range, for the window's edges.
    let mut first_seen: Option<(u64, Option<u64>)> = None;
    let mut last_seen: Option<(u64, Option<u64>)> = None;
    let mut index = manifest.first;
    let right = loop {
        let (n, record) = next_line("right proof")?;
        if let Some(right) = record.get("right") {
            break hash_list(right, n)?;
        }
        if index >= manifest.end {
            return Err(bad(format!(
                "line {n}: more entries than the manifest's range {}..{} (an entry was added)",
                manifest.first, manifest.end
            )));
        }
        let (leaf, ts) = if let Some(text) = record["entry"].as_str() {
            let leaf = leaf_hash(text.as_bytes());
            let value: Value = serde_json::from_str(text)
                .map_err(|e| bad(format!("line {n}: not an entry line ({e})")))?;
            let header = EntryHeader::deserialize(&value)
                .map_err(|e| bad(format!("line {n}: not an entry line ({e})")))?;
            if header.i != index {
                return Err(bad(if header.i > index {
                    format!(
                        "entry {index} is missing (line {n} holds entry {})",
                        header.i
                    )
                } else {
                    format!("line {n} holds entry {} again or out of order", header.i)
                }));
            }
            if record["leaf"].as_str() != Some(hex::encode(leaf).as_str()) {
                return Err(bad(format!(
                    "entry {index} was changed: it no longer hashes to its leaf"
                )));
            }
            if header.ts < last_ts {
                return Err(bad(format!(
                    "entry {index} is older than the one before it"
                )));
            }
            last_ts = header.ts;
            let edge = index == manifest.first && query.since.is_some_and(|s| header.ts < s)
                || index + 1 == manifest.end && query.until.is_some_and(|u| header.ts >= u);
            if query.in_window(header.ts) && !edge {
                if query.matches(&value) {
                    counts.matched += 1;
                    for c in value["chunks"].as_array().into_iter().flatten() {
                        if let Ok(c) = serde_json::from_value::<ChunkRef>(c.clone()) {
                            wanted_chunks.push((index, c));
                        }
                    }
                    if keep {
                        entries.push((value, hex::encode(leaf)));
                    }
                } else {
                    counts.excluded += 1;
                }
            } else if !edge {
                return Err(bad(format!(
                    "entry {index} lies outside the window but inside the range"
                )));
            }
            (leaf, Some(header.ts))
        } else if let Some(h) = record.get("hashed") {
            let h: HashedRecord = serde_json::from_value(h.clone())
                .map_err(|e| bad(format!("line {n}: bad hashed entry ({e})")))?;
            if h.i != index {
                return Err(bad(format!(
                    "entry {index} is missing (line {n} holds entry {})",
                    h.i
                )));
            }
            match h.why.as_str() {
                "pruned" => counts.pruned += 1,
                "withheld" => counts.withheld += 1,
                other => return Err(bad(format!("line {n}: unknown reason {other:?}"))),
            }
            (parse_hash(&h.leaf, n)?, None)
        } else {
            return Err(bad(format!(
                "line {n}: expected an entry or the right proof"
            )));
        };
        range.push(leaf);
        first_seen.get_or_insert((index, ts));
        last_seen = Some((index, ts));
        index += 1;
    };
    if index != manifest.end {
        return Err(bad(format!(
            "entries {index}..{} are missing (the bundle stops early)",
            manifest.end
        )));
    }
    let plan = aligned_subtrees(manifest.end, checkpoint.size);
    if right.len() != plan.len() {
        return Err(bad(format!(
            "the right proof has {} hashes, a tree of {} entries needs {} after entry {}",
            right.len(),
            checkpoint.size,
            plan.len(),
            manifest.end
        )));
    }
    for (hash, (_, height)) in right.iter().zip(&plan) {
        range
            .push_subtree(*hash, *height)
            .map_err(|e| bad(format!("the right proof: {e}")))?;
    }
    if range.root() != checkpoint.root {
        return Err(bad(format!(
            "the entries do not lead to the checkpoint's root: an entry or proof hash was \
             changed, dropped or inserted (range {}..{}, tree of {})",
            manifest.first, manifest.end, checkpoint.size
        )));
    }

    // The window's edges: an entry before `since` and one at or after `until` must be
    // held, unless the range reaches the log's start or the checkpoint's end.
    let mut window_complete = true;
    if let Some(since) = query.since
        && manifest.first > 0
    {
        match first_seen {
            Some((_, Some(ts))) if ts < since => {}
            Some((i, None)) => {
                window_complete = false;
                notes.push(format!(
                    "where the window starts cannot be shown: entry {i} was pruned"
                ));
            }
            _ => {
                return Err(bad(format!(
                    "the range starts inside the window: entries before index {} may belong to it",
                    manifest.first
                )));
            }
        }
    }
    let past_checkpoint = format!(
        "the window reaches past the checkpoint: entries from index {} on are not in this bundle",
        checkpoint.size
    );
    if let Some(until) = query.until {
        match last_seen {
            Some((_, Some(ts))) if ts >= until => {}
            _ if manifest.end == checkpoint.size => notes.push(past_checkpoint),
            Some((i, None)) => {
                window_complete = false;
                notes.push(format!(
                    "where the window ends cannot be shown: entry {i} was pruned"
                ));
            }
            _ => {
                return Err(bad(format!(
                    "the range ends inside the window: entries from index {} may belong to it",
                    manifest.end
                )));
            }
        }
    } else {
        notes.push(past_checkpoint);
    }
    if counts.withheld > 0 {
        notes.push(format!(
            "{} entries of the window were reduced to their hashes by the exporter: their place is proven, but the filter cannot be re-applied to them",
            counts.withheld
        ));
    }
    if counts.pruned > 0 {
        notes.push(format!(
            "{} entries of the window were pruned by retention: their place is proven, their content is gone",
            counts.pruned
        ));
    }

    // The recorded data of the matching entries.
    let mut chunks = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    while let Some((n, record)) = records.next()? {
        let c: ChunkRecord = serde_json::from_value(record["chunk"].clone())
            .map_err(|e| bad(format!("line {n}: expected a chunk ({e})")))?;
        let data = B64
            .decode(&c.data)
            .map_err(|e| bad(format!("line {n}: chunk {} is not base64 ({e})", c.sha256)))?;
        if hex::encode(Sha256::digest(&data)) != c.sha256 || data.len() as u64 != c.size {
            return Err(bad(format!(
                "chunk {} was changed: its data no longer hashes to its name",
                c.sha256
            )));
        }
        sizes.insert(c.sha256.clone(), c.size);
        if keep {
            chunks.insert(c.sha256, data);
        }
    }
    let mut distinct = BTreeSet::new();
    for (i, c) in &wanted_chunks {
        match sizes.get(&c.sha256) {
            Some(size) if *size == c.size => {
                distinct.insert(c.sha256.clone());
            }
            _ => {
                return Err(bad(format!(
                    "the recorded data of entry {i} (chunk {}) is missing",
                    c.sha256
                )));
            }
        }
    }
    counts.chunks = distinct.len() as u64;
    if counts != manifest.counts {
        return Err(bad(format!(
            "the manifest does not match the entries: it claims {:?}, the entries show {:?}",
            manifest.counts, counts
        )));
    }
    Ok(Verified {
        query,
        origin: checkpoint.origin,
        checkpoint_size: checkpoint.size,
        root: hex::encode(checkpoint.root),
        first: manifest.first,
        end: manifest.end,
        counts,
        window_complete,
        notes,
        entries,
        chunks,
    })
}

/// The bundle's records, one JSON value a line, numbered from 1 for messages.
struct Records<L> {
    lines: L,
    at: usize,
}

impl<L: Iterator<Item = std::io::Result<String>>> Records<L> {
    fn next(&mut self) -> Result<Option<(usize, Value)>, AuditError> {
        let Some(line) = self.lines.next() else {
            return Ok(None);
        };
        self.at += 1;
        let line = line.map_err(|e| AuditError::Io(e.to_string()))?;
        let value = serde_json::from_str(&line)
            .map_err(|e| AuditError::Bundle(format!("line {}: not JSON ({e})", self.at)))?;
        Ok(Some((self.at, value)))
    }

    fn expect(&mut self, what: &str) -> Result<(usize, Value), AuditError> {
        self.next()?
            .ok_or_else(|| AuditError::Bundle(format!("the bundle ends before its {what}")))
    }
}

fn hash_list(v: &Value, line: usize) -> Result<Vec<Hash>, AuditError> {
    v.as_array()
        .ok_or_else(|| AuditError::Bundle(format!("line {line}: expected a list of hashes")))?
        .iter()
        .map(|h| parse_hash(h.as_str().unwrap_or(""), line))
        .collect()
}

fn parse_hash(text: &str, line: usize) -> Result<Hash, AuditError> {
    hex::decode(text)
        .ok()
        .and_then(|b| Hash::try_from(b).ok())
        .ok_or_else(|| AuditError::Bundle(format!("line {line}: {text:?} is not a SHA-256 hash")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::Layout;
    use gatehouse_ledger::checkpoint::LedgerKey;
    use gatehouse_ledger::merkle::root_from_leaves;

    /// A small signed log: entries at ts 100, 110, 120 ... alternating users and
    /// resources; every fourth one carries a recorded-data chunk.
    struct Log {
        lines: Vec<String>,
        chunks: BTreeMap<String, Vec<u8>>,
        note: String,
        vkey: String,
        _dir: tempfile::TempDir,
    }

    fn log(n: u64) -> Log {
        let mut lines = Vec::new();
        let mut chunks = BTreeMap::new();
        for i in 0..n {
            let user = ["alice", "bob"][i as usize % 2];
            let resource = ["pg", "pg-prod", "pg"][i as usize % 3];
            let mut body = json!({"kind": "command", "actor": {"id": user, "kind": "human"},
                "resource": {"name": resource, "kind": "postgres"}, "session": format!("s-{}", i / 5),
                "data": {"sql": format!("SELECT {i}"), "decision": {"outcome": "allow"}}});
            if i % 4 == 2 {
                let data = format!("rows of {i}").into_bytes();
                let sha = hex::encode(Sha256::digest(&data));
                body["kind"] = json!("recording");
                body["chunks"] = json!([{"sha256": sha, "size": data.len()}]);
                chunks.insert(sha, data);
            }
            let mut line = Vec::new();
            gatehouse_core::write_entry_line(
                i,
                100 + 10 * i,
                body.to_string().as_bytes(),
                &mut line,
            );
            lines.push(String::from_utf8(line).unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let key = LedgerKey::load_or_create(&Layout::new(dir.path()), None).unwrap();
        let leaves: Vec<Hash> = lines.iter().map(|l| leaf_hash(l.as_bytes())).collect();
        let cp = Checkpoint {
            origin: key.name().to_string(),
            size: n,
            root: root_from_leaves(&leaves),
        };
        Log {
            lines,
            chunks,
            note: key.sign(&cp).unwrap().note,
            vkey: key.verifier_key().to_string(),
            _dir: dir,
        }
    }

    fn export(log: &Log, query: &Filter, withhold: bool, pruned_below: u64) -> String {
        let mut b = Builder::new(query.clone(), withhold, log.lines.len() as u64, Vec::new());
        for (i, line) in log.lines.iter().enumerate() {
            let i = i as u64;
            if i < pruned_below {
                b.pruned(i, leaf_hash(line.as_bytes())).unwrap();
            } else {
                b.entry(i, line.as_bytes()).unwrap();
            }
        }
        let (plan, items) = b.finish(1, "test").unwrap();
        let mut out = Vec::new();
        plan.write(
            &log.note,
            &items,
            |c| log.chunks.get(&c.sha256).cloned().ok_or("gone".into()),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn check(log: &Log, bundle: &str) -> Result<Verified, AuditError> {
        verify(bundle.as_bytes(), &log.vkey)
    }

    /// What the filter takes, counted straight from the log.
    fn expected(log: &Log, q: &Filter) -> (u64, u64) {
        let f = q;
        let values: Vec<Value> = log
            .lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let in_window = values
            .iter()
            .filter(|v| q.in_window(v["ts"].as_u64().unwrap()));
        let matched = in_window.clone().filter(|v| f.matches(v)).count() as u64;
        (matched, in_window.count() as u64 - matched)
    }

    #[test]
    fn every_window_and_filter_exports_and_verifies_with_the_right_counts() {
        let log = log(23);
        let users = [None, Some("alice".to_string())];
        let resources = [None, Some("pg-prod".to_string())];
        for since in [None, Some(100), Some(105), Some(150), Some(400)] {
            for until in [None, Some(101), Some(200), Some(330), Some(1000)] {
                for user in &users {
                    for resource in &resources {
                        let q = Filter {
                            since,
                            until,
                            user: user.clone(),
                            resource: resource.clone(),
                        };
                        if since.zip(until).is_some_and(|(s, u)| s >= u) {
                            continue;
                        }
                        let v = check(&log, &export(&log, &q, false, 0))
                            .unwrap_or_else(|e| panic!("{q:?}: {e}"));
                        let (matched, excluded) = expected(&log, &q);
                        assert_eq!(
                            (v.counts.matched, v.counts.excluded),
                            (matched, excluded),
                            "{q:?}"
                        );
                        assert_eq!(v.entries.len() as u64, matched);
                        assert!(v.window_complete, "{q:?}");
                        for (e, _) in &v.entries {
                            assert!(q.matches(e));
                            for c in e["chunks"].as_array().into_iter().flatten() {
                                let sha = c["sha256"].as_str().unwrap();
                                assert_eq!(v.chunks.get(sha), log.chunks.get(sha));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn withheld_and_pruned_entries_are_proven_and_said() {
        let log = log(16);
        let q = Filter {
            user: Some("bob".into()),
            ..Filter::default()
        };
        let v = check(&log, &export(&log, &q, true, 0)).unwrap();
        assert_eq!(
            (v.counts.matched, v.counts.withheld, v.counts.excluded),
            (8, 8, 0)
        );
        assert!(v.notes.iter().any(|n| n.contains("cannot be re-applied")));

        let v = check(&log, &export(&log, &Filter::default(), false, 5)).unwrap();
        assert_eq!((v.counts.pruned, v.counts.matched), (5, 11));
        assert!(v.notes.iter().any(|n| n.contains("pruned by retention")));

        // A window starting among pruned entries cannot show its start.
        let q = Filter {
            since: Some(130),
            ..Filter::default()
        };
        let v = check(&log, &export(&log, &q, false, 6)).unwrap();
        assert!(!v.window_complete);
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("where the window starts"))
        );
    }

    /// Each tampering fails with a message naming what.
    #[test]
    fn tampering_is_detected_and_named() {
        let log = log(20);
        let q = Filter {
            since: Some(150),
            until: Some(300),
            user: Some("alice".into()),
            ..Filter::default()
        };
        let good = export(&log, &q, false, 0);
        check(&log, &good).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let with = |f: &dyn Fn(&mut Vec<String>)| {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            f(&mut l);
            l.join("\n") + "\n"
        };
        let entry_at = |l: &Vec<String>, i: u64| {
            l.iter()
                .position(|s| s.contains(&format!("\\\"i\\\":{i},")))
                .unwrap()
        };
        let fails = |bundle: String, words: &str| {
            let e = check(&log, &bundle).expect_err(words).to_string();
            assert!(e.contains(words), "expected {words:?} in {e:?}");
        };

        // A dropped entry.
        fails(
            with(&|l| {
                let at = entry_at(l, 9);
                l.remove(at);
            }),
            "entry 9 is missing",
        );
        // A changed field, with and without its stated leaf fixed up.
        fails(
            with(&|l| {
                let at = entry_at(l, 10);
                l[at] = l[at].replace("SELECT 10", "SELECT 11");
            }),
            "entry 10 was changed",
        );
        fails(
            with(&|l| {
                let at = entry_at(l, 10);
                let rec: Value = serde_json::from_str(&l[at]).unwrap();
                let text = rec["entry"]
                    .as_str()
                    .unwrap()
                    .replace("SELECT 10", "SELECT 11");
                l[at] = json!({"entry": text, "leaf": hex::encode(leaf_hash(text.as_bytes()))})
                    .to_string();
            }),
            "do not lead to the checkpoint's root",
        );
        // A matching entry passed off as withheld.
        fails(
            with(&|l| {
                let at = entry_at(l, 10);
                let rec: Value = serde_json::from_str(&l[at]).unwrap();
                l[at] = json!({"hashed": {"i": 10, "leaf": rec["leaf"], "why": "withheld"}})
                    .to_string();
            }),
            "manifest does not match",
        );
        // A swapped checkpoint: another valid one of the same key, and a forged one.
        let other = log_with_key(&log, 19);
        fails(
            with(&|l| l[1] = json!({"checkpoint": other}).to_string()),
            "checkpoint was swapped",
        );
        fails(
            with(&|l| l[1] = l[1].replace(&log.lines.len().to_string(), "21")),
            "does not verify",
        );
        // A chunk changed, and one dropped.
        let chunk_at =
            |l: &Vec<String>| l.iter().position(|s| s.starts_with("{\"chunk\"")).unwrap();
        fails(
            with(&|l| {
                let at = chunk_at(l);
                let mut rec: Value = serde_json::from_str(&l[at]).unwrap();
                rec["chunk"]["data"] = json!(B64.encode(b"rows of 99"));
                l[at] = rec.to_string();
            }),
            "was changed",
        );
        fails(
            with(&|l| {
                let at = chunk_at(l);
                l.remove(at);
            }),
            "is missing",
        );
        // The range cut so it starts inside the window: the manifest and left proof redone.
        fails(
            with(&|l| {
                let mut head: Value = serde_json::from_str(&l[0]).unwrap();
                head["manifest"]["first"] = json!(head["manifest"]["first"].as_u64().unwrap() + 1);
                l[0] = head.to_string();
                l.remove(3);
            }),
            "hashes before the range are wrong",
        );
        // The same cut with the left proof recomputed: the proof holds, the edge does not.
        fails(
            with(&|l| {
                let mut head: Value = serde_json::from_str(&l[0]).unwrap();
                let first = head["manifest"]["first"].as_u64().unwrap() + 1;
                head["manifest"]["first"] = json!(first);
                l[0] = head.to_string();
                let mut left = CompactRange::new();
                for line in &log.lines[..first as usize] {
                    left.push(leaf_hash(line.as_bytes()));
                }
                l[2] = json!({ "left": hexes(left.hashes()) }).to_string();
                l.remove(3);
            }),
            "starts inside the window",
        );
        // Not a bundle at all.
        fails("{\"hello\":1}\n".into(), "not a Gatehouse audit bundle");
    }

    /// A checkpoint of the first `size` entries of `log`, signed with a fresh key of the
    /// same name would fail the signature; this re-signs with the log's own key.
    fn log_with_key(log: &Log, size: usize) -> String {
        let key = LedgerKey::load_or_create(&Layout::new(log._dir.path()), None).unwrap();
        let leaves: Vec<Hash> = log.lines[..size]
            .iter()
            .map(|l| leaf_hash(l.as_bytes()))
            .collect();
        key.sign(&Checkpoint {
            origin: key.name().to_string(),
            size: size as u64,
            root: root_from_leaves(&leaves),
        })
        .unwrap()
        .note
    }
}
