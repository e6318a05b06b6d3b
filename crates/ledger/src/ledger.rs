//! The ledger handle: opening and recovering a data directory, appending events with
//! group commit, checkpoints, heartbeats, recovery from a failed write, and shutdown.
//!
//! An append is sequenced on the caller's own thread under one short lock: it gets its
//! index, timestamp and leaf hash, and its line joins a buffer in memory. Handing work to
//! another thread and waking the caller again costs tens of microseconds on a small
//! machine, more than the work itself. Durability is group commit by leader: a `sync`
//! caller whose entry is not durable yet either waits for the write+fdatasync in progress
//! or runs the next one itself, writing the whole buffer at once. A `batched` caller
//! returns at once; the timer thread writes and syncs the buffer when its window ends
//! (the bounded loss window of that mode), signs checkpoints, appends heartbeats, and
//! recovers after a failed write.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gatehouse_core::evidence::EntryRef;
use gatehouse_core::{ChunkRef, Durability, Event, EventKind, write_entry_line};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::checkpoint::{LedgerKey, SignedCheckpoint, Signer};
use crate::chunks;
use crate::error::{IoContext, LedgerError};
use crate::fsutil::{FILE_MODE, create_private_dirs, tighten_modes, write_atomic};
use crate::layout::Layout;
use crate::merkle::{CompactRange, Hash, leaf_hash};
use crate::prune::{self, PrunePlan};
use crate::segment::{self, SegmentWriter};

/// Tunables of a ledger; the gateway fills them from the `[ledger]` config section.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// Checkpoint origin and key name for a new ledger; `None` keeps the existing key's.
    pub origin: Option<String>,
    pub segment_size: u64,
    pub max_entry_size: usize,
    /// A checkpoint is signed at least this often while the log grows.
    pub checkpoint_interval: Duration,
    /// A heartbeat entry is appended this often; `None` disables heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// Longest time a `batched` append stays unsynced.
    pub batched_window: Duration,
    /// After a failed write, how often the ledger tries to recover.
    pub retry_interval: Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            origin: None,
            segment_size: 64 << 20,
            max_entry_size: 1 << 20,
            checkpoint_interval: Duration::from_secs(1),
            heartbeat_interval: Some(Duration::from_secs(60)),
            batched_window: Duration::from_millis(5),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// Proof of a durable (or, for `batched`, sequenced) append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub leaf_hash: Hash,
    pub ts: u64,
}

/// What `open` found and repaired, for the operator's log.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub entries: u64,
    pub unclean_shutdown: bool,
    /// `(segment, offset, bytes)` of a torn tail that was cut off.
    pub truncated: Option<(String, u64, u64)>,
    pub signed_size: u64,
}

/// Live numbers for readers (admin API, metrics, tests).
#[derive(Debug, Clone, Default)]
pub struct LedgerStatus {
    /// Entries written.
    pub size: u64,
    /// Entries known to be on disk.
    pub durable_size: u64,
    pub checkpoint: Option<SignedCheckpoint>,
    /// Why appends are refused right now, if they are.
    pub failed: Option<String>,
}

/// Pending lines beyond this size are written without waiting for the batched window.
const FLUSH_AT: usize = 1 << 20;

type CheckpointResult = Result<Option<SignedCheckpoint>, LedgerError>;

/// A handle to an open ledger; clones share it. When the last clone goes without
/// [`Ledger::close`], the timer thread stops and the next open finds an unclean run.
#[derive(Clone)]
pub struct Ledger {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop_timer();
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("root", &self.handle.shared.layout.root())
            .finish_non_exhaustive()
    }
}

/// Everything the appenders, the sync leaders and the timer thread share.
///
/// Lock order: `signer` before `io` before `core` before `progress`.
struct Shared {
    core: Mutex<Core>,
    /// Wakes the timer thread early; paired with `core`.
    timer_cv: Condvar,
    /// The files, held by whoever writes and syncs the buffer: one at a time; the others
    /// wait for its result.
    io: Mutex<Io>,
    progress: Mutex<Progress>,
    /// Signalled after every sync, failure and recovery.
    synced: Notify,
    signer: Mutex<Signer>,
    checkpoint: Mutex<Option<SignedCheckpoint>>,
    layout: Layout,
    opts: LedgerOptions,
    vkey: String,
    /// Held until the ledger is closed or dropped: one writer per data directory.
    dir_lock: Mutex<Option<File>>,
}

/// The segment writer and a spare buffer to swap with the pending lines.
struct Io {
    writer: SegmentWriter,
    buf: Vec<u8>,
    ends: Vec<usize>,
}

/// The append state: what is sequenced, what is durable, what is signed.
struct Core {
    /// Tree over every sequenced entry.
    tree: CompactRange,
    /// Tree over the entries known to be durable.
    durable_tree: CompactRange,
    /// Leaves after `signed_size`, in order.
    unsigned_leaves: Vec<Hash>,
    signed_size: u64,
    last_ts: u64,
    /// Lines sequenced but not yet written, and where each ends.
    pending: Vec<u8>,
    pending_ends: Vec<usize>,
    /// When the oldest unsynced entry was sequenced.
    unsynced_since: Option<Instant>,
    /// Why appends are refused (a write or sync failed); cleared by recovery.
    failed: Option<String>,
    /// Bumped by every failure: entries of an earlier epoch that were not durable by then
    /// were discarded, and their indexes are given out again.
    epoch: u64,
    closed: bool,
    stop_timer: bool,
    /// When the sleeping timer thread wakes next; `None` while it is awake.
    timer_deadline: Option<Instant>,
}

/// How far durability got, for callers waiting on their entries.
struct Progress {
    epoch: u64,
    /// Entries before this index are durable.
    durable: u64,
    /// `durable` when the current epoch began (the previous one failed there).
    epoch_start: u64,
    failure: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RunState {
    clean: bool,
    pid: u32,
    at_us: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take auditing down with it: the data under these locks
    // is only changed in steps that leave it consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

impl Ledger {
    /// Opens (creating on first use) the ledger inside the gateway data directory,
    /// recovering from a crash if needed, and starts the timer thread.
    ///
    /// Refuses to open a ledger whose entries contradict what its signer already signed,
    /// that is damaged anywhere but in a crash tail, or whose signer state is missing,
    /// unverifiable or older than `checkpoints.log` (see [`Signer::load`]): such a ledger
    /// needs an auditor, not a writer. Makes every file and directory of the ledger
    /// owner-only (0600 / 0700), tightening what an older version left looser.
    pub fn open(data_dir: &Path, opts: LedgerOptions) -> Result<(Ledger, OpenReport), LedgerError> {
        let layout = Layout::new(data_dir);
        for dir in [
            layout.root().to_path_buf(),
            layout.segments(),
            layout.chunks(),
        ] {
            create_private_dirs(layout.root(), &dir)?;
        }
        let lock_path = layout.lock();
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&lock_path)
            .at(&lock_path)?;
        if lock.try_lock().is_err() {
            return Err(LedgerError::Locked { path: lock_path });
        }
        // Earlier versions created files 0644 and directories 0755. The key is left out: a
        // key others could read may have been copied, and loading it says so and stops.
        let tightened = tighten_modes(layout.root(), &[layout.signing_key()])?;
        if tightened.files + tightened.dirs > 0 {
            tracing::warn!(
                files = tightened.files,
                dirs = tightened.dirs,
                examples = ?tightened.examples,
                "ledger files and directories were open to other users; made them owner-only \
                 (files 0600, directories 0700)"
            );
        }
        let key = LedgerKey::load_or_create(&layout, opts.origin.as_deref())?;
        let vkey = key.verifier_key().to_string();
        let mut signer = Signer::load(&layout, key)?;
        let signed_size = signer.signed_size();
        let mut report = OpenReport {
            signed_size,
            ..OpenReport::default()
        };
        report.unclean_shutdown = match fs::read(layout.run_state()) {
            Ok(bytes) => !serde_json::from_slice::<RunState>(&bytes)
                .map(|s| s.clean)
                .unwrap_or(false),
            Err(_) => false,
        };

        // Rebuild the tree from the entries, remembering the signed prefix's root.
        let mut tree = CompactRange::new();
        let mut signed_root = (signed_size == 0).then(|| tree.root());
        let mut unsigned_leaves = Vec::new();
        let end = segment::scan_with(&layout, |visit| {
            let (index, leaf) = match visit {
                segment::Visit::Entry(entry) => (entry.index, leaf_hash(entry.line)),
                segment::Visit::Pruned(index, leaf) => (index, leaf),
            };
            tree.push(leaf);
            if index >= signed_size {
                unsigned_leaves.push(leaf);
            }
            if tree.size() == signed_size {
                signed_root = Some(tree.root());
            }
            Ok(())
        })?;
        let mut last_segment = end.last_segment.clone();
        if let Some(defect) = &end.defect {
            if !defect.is_crash_tail() || defect.index < signed_size {
                return Err(LedgerError::Corrupt(format!(
                    "{defect}; this is damage, not a crash tail, so the ledger will not truncate it \
                     (run `gatehouse ledger verify` and keep a copy of the data directory)"
                )));
            }
            if let Some((seg, valid_end, len)) = &end.last_segment {
                // The defect may sit after zero padding (DataAfterEnd); cut from the end
                // of the valid data through the last non-zero byte.
                let cut_end = (defect.offset + defect.tail_bytes).max(*valid_end);
                segment::zero_tail(&seg.path, *valid_end, cut_end)?;
                let name = seg
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let bytes = cut_end - valid_end;
                tracing::warn!(segment = %name, offset = valid_end, bytes,
                    "truncated a torn, unacknowledged tail left by a crash");
                report.truncated = Some((name, *valid_end, bytes));
                last_segment = Some((seg.clone(), *valid_end, *len));
            }
        }
        report.entries = end.entries;
        if end.entries < signed_size {
            return Err(LedgerError::Corrupt(format!(
                "the signer has signed a tree of {signed_size} entries but only {} entries are on disk \
                 (entries were removed; run `gatehouse ledger verify`)",
                end.entries
            )));
        }
        if signed_root != Some(signer.signed_range().root()) {
            return Err(LedgerError::Corrupt(format!(
                "the first {signed_size} entries no longer hash to the root the signer signed \
                 (entries were changed; run `gatehouse ledger verify`)"
            )));
        }
        if signed_size == 0 && end.entries > 0 {
            // Either the first run stopped before its first checkpoint, or checkpoints.log
            // and the signer state were both deleted; nothing on disk tells the two apart.
            tracing::warn!(
                entries = end.entries,
                "the ledger holds entries but no signed checkpoint; they will be signed as \
                 found (compare them with a checkpoint kept outside this directory)"
            );
        }
        signer.reconcile_log()?;

        let run = RunState {
            clean: false,
            pid: std::process::id(),
            at_us: gatehouse_core::clock::unix_us(),
        };
        write_atomic(
            &layout.run_state(),
            &serde_json::to_vec(&run).expect("serialises"),
        )?;
        segment::remove_spares(&layout)?;
        let writer = SegmentWriter::open(&layout, last_segment, end.entries, opts.segment_size)?;

        let now = Instant::now();
        let checkpoint = signer.last().cloned();
        let signed_size = signer.signed_size();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                durable_tree: tree.clone(),
                tree,
                unsigned_leaves,
                signed_size,
                last_ts: end.last_ts.unwrap_or(0),
                pending: Vec::with_capacity(64 << 10),
                pending_ends: Vec::new(),
                unsynced_since: None,
                failed: None,
                epoch: 0,
                closed: false,
                stop_timer: false,
                timer_deadline: None,
            }),
            timer_cv: Condvar::new(),
            io: Mutex::new(Io {
                writer,
                buf: Vec::with_capacity(64 << 10),
                ends: Vec::new(),
            }),
            progress: Mutex::new(Progress {
                epoch: 0,
                durable: end.entries,
                epoch_start: end.entries,
                failure: None,
            }),
            synced: Notify::new(),
            signer: Mutex::new(signer),
            checkpoint: Mutex::new(checkpoint),
            layout: layout.clone(),
            opts: opts.clone(),
            vkey: vkey.clone(),
            dir_lock: Mutex::new(Some(lock)),
        });
        let timer = thread::Builder::new()
            .name("ledger-timer".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run_timer(now)
            })
            .at(layout.root())?;
        let ledger = Ledger {
            handle: Arc::new(Handle {
                shared,
                timer: Mutex::new(Some(timer)),
            }),
        };

        if report.unclean_shutdown || report.truncated.is_some() {
            ledger.append_blocking(
                &recovery_event(&report, end.last_ts, &opts),
                Durability::Sync,
            )?;
        }
        let open = Event::system(
            EventKind::LedgerOpen,
            json!({
                "gatehouse": env!("CARGO_PKG_VERSION"),
                "verifier_key": vkey,
                "entries": report.entries,
            }),
        );
        ledger.append_blocking(&open, Durability::Sync)?;
        Ok((ledger, report))
    }

    /// Appends `event` durably and returns the reference other entries make to it (its
    /// index and leaf hash): how reviews record each step before it takes effect.
    pub async fn append_ref(&self, event: &Event) -> Result<EntryRef, LedgerError> {
        let receipt = self.append(event, Durability::Sync).await?;
        Ok(EntryRef {
            index: receipt.index,
            leaf: hex::encode(receipt.leaf_hash),
        })
    }

    /// Appends an event; returns once it is durable (`Sync`) or sequenced (`Batched`: it
    /// is written and synced within the batched window, and a crash inside the window
    /// loses it; the next open records that gap).
    pub async fn append(
        &self,
        event: &Event,
        durability: Durability,
    ) -> Result<Receipt, LedgerError> {
        let shared = &self.handle.shared;
        let (receipt, epoch) = shared.write(&self.body(event)?)?;
        if durability == Durability::Sync {
            shared.wait_durable(receipt.index, epoch).await?;
        }
        Ok(receipt)
    }

    /// Sequences an event without waiting for durability. For records written after the
    /// fact (a result summary) whose caller has nothing to gate on them: the next sync, or
    /// the batched window, makes them durable.
    pub fn append_detached(&self, event: &Event) -> Result<Receipt, LedgerError> {
        Ok(self.handle.shared.write(&self.body(event)?)?.0)
    }

    /// [`Ledger::append`] for plain threads (blocks the calling thread).
    pub fn append_blocking(
        &self,
        event: &Event,
        durability: Durability,
    ) -> Result<Receipt, LedgerError> {
        let shared = &self.handle.shared;
        let (receipt, epoch) = shared.write(&self.body(event)?)?;
        if durability == Durability::Sync {
            shared.wait_durable_blocking(receipt.index, epoch)?;
        }
        Ok(receipt)
    }

    fn body(&self, event: &Event) -> Result<Vec<u8>, LedgerError> {
        let body = event.to_body();
        let limit = self.handle.shared.opts.max_entry_size;
        if body.len() + 64 > limit {
            return Err(LedgerError::EntryTooLarge {
                size: body.len() + 64,
                limit,
            });
        }
        Ok(body)
    }

    /// Prunes the segments whose entries are all older than `cutoff_ts` (see
    /// [`crate::prune`]). The pruning is recorded first, as a synced `ledger.prune` entry
    /// naming the index range, times, segments and chunks; a pruning that cannot be
    /// recorded is not done. Blocks: call it from a blocking thread. Returns what was pruned, or `None` when nothing was old
    /// enough. `why` says what asked for it (e.g. `retention_days = 90`).
    pub fn prune(&self, cutoff_ts: u64, why: &str) -> Result<Option<PrunePlan>, LedgerError> {
        // Only what a checkpoint signs is pruned; sign one over everything so far first.
        let shared = &self.handle.shared;
        shared.sync_all()?;
        shared.sign()?;
        let signed = self.status().checkpoint.map_or(0, |c| c.checkpoint.size);
        let plan = prune::plan(
            self.layout(),
            cutoff_ts,
            signed,
            gatehouse_core::clock::unix_us(),
        )?;
        if plan.is_empty() {
            return Ok(None);
        }
        let mut data = serde_json::to_value(&plan)
            .map_err(|e| LedgerError::Corrupt(format!("prune plan: {e}")))?;
        data["reason"] = why.into();
        data["entries"] = (plan.end - plan.first).into();
        self.append_blocking(
            &Event::system(EventKind::LedgerPrune, data),
            Durability::Sync,
        )?;
        prune::apply(self.layout(), &plan)?;
        Ok(Some(plan))
    }

    /// Stores a large payload as a durable chunk; put its reference in the event's `chunks`.
    pub async fn put_chunk(&self, bytes: Vec<u8>) -> Result<ChunkRef, LedgerError> {
        let layout = self.handle.shared.layout.clone();
        tokio::task::spawn_blocking(move || chunks::put_chunk(&layout, &bytes))
            .await
            .map_err(|e| LedgerError::Unavailable(format!("chunk writer: {e}")))?
    }

    /// Syncs everything appended so far and signs a checkpoint over it.
    pub async fn checkpoint(&self) -> CheckpointResult {
        let shared = self.handle.shared.clone();
        tokio::task::spawn_blocking(move || {
            shared.sync_all()?;
            shared.sign()
        })
        .await
        .map_err(|e| LedgerError::Unavailable(format!("checkpoint: {e}")))?
    }

    /// Syncs, signs a final checkpoint, marks the run clean and stops the timer thread.
    /// Blocking; later appends fail with [`LedgerError::Closed`]. A second call does
    /// nothing and returns `Ok(None)`.
    pub fn close(&self) -> CheckpointResult {
        let shared = &self.handle.shared;
        let failed = {
            let mut core = lock(&shared.core);
            if core.closed {
                return Ok(None);
            }
            core.closed = true;
            core.stop_timer = true;
            shared.timer_cv.notify_one();
            core.failed.clone()
        };
        if let Some(timer) = lock(&self.handle.timer).take() {
            let _ = timer.join();
        }
        if let Some(why) = failed {
            return Err(LedgerError::Unavailable(why));
        }
        shared.sync_all()?;
        let checkpoint = shared.sign()?;
        shared.mark_clean()?;
        // Another process may open the directory now.
        lock(&shared.dir_lock).take();
        Ok(checkpoint)
    }

    /// Current size, durable size, latest checkpoint and failure state.
    pub fn status(&self) -> LedgerStatus {
        let shared = &self.handle.shared;
        let (size, failed) = {
            let core = lock(&shared.core);
            (core.tree.size(), core.failed.clone())
        };
        LedgerStatus {
            size,
            durable_size: lock(&shared.progress).durable,
            checkpoint: lock(&shared.checkpoint).clone(),
            failed,
        }
    }

    /// The public key that verifies this ledger's checkpoints.
    pub fn verifier_key(&self) -> &str {
        &self.handle.shared.vkey
    }

    pub fn layout(&self) -> &Layout {
        &self.handle.shared.layout
    }
}

impl Shared {
    /// Sequences one entry into the pending buffer. Returns its receipt and the epoch it
    /// was sequenced in.
    fn write(&self, body: &[u8]) -> Result<(Receipt, u64), LedgerError> {
        let mut core = lock(&self.core);
        let receipt = self.write_locked(&mut core, body)?;
        Ok((receipt, core.epoch))
    }

    fn write_locked(&self, core: &mut Core, body: &[u8]) -> Result<Receipt, LedgerError> {
        if core.closed {
            return Err(LedgerError::Closed);
        }
        if let Some(why) = &core.failed {
            return Err(LedgerError::Unavailable(why.clone()));
        }
        let index = core.tree.size();
        let ts = gatehouse_core::clock::unix_us().max(core.last_ts);
        let start = core.pending.len();
        write_entry_line(index, ts, body, &mut core.pending);
        let leaf = leaf_hash(&core.pending[start..]);
        core.pending.push(b'\n');
        let end = core.pending.len();
        core.pending_ends.push(end);
        core.tree.push(leaf);
        core.unsigned_leaves.push(leaf);
        core.last_ts = ts;
        let now = Instant::now();
        let due = match core.unsynced_since {
            None => {
                core.unsynced_since = Some(now);
                Some(now + self.opts.batched_window)
            }
            Some(_) if end >= FLUSH_AT => Some(now),
            Some(_) => None,
        };
        // Wake the timer only when it would otherwise sleep past the new deadline.
        if let Some(due) = due
            && core.timer_deadline.is_some_and(|at| at > due)
        {
            self.timer_cv.notify_one();
        }
        metrics::counter!("gatehouse_ledger_appends_total").increment(1);
        Ok(Receipt {
            index,
            leaf_hash: leaf,
            ts,
        })
    }

    /// Marks the ledger failed: appends are refused until recovery, and entries after the
    /// last durable point are given up. Returns the reason.
    fn fail(&self, core: &mut Core, error: &LedgerError) -> String {
        let why = format!("the ledger could not write: {error}");
        tracing::error!(error = %error, "ledger write failed; refusing appends until it recovers");
        metrics::counter!("gatehouse_ledger_failures_total").increment(1);
        core.failed = Some(why.clone());
        core.epoch += 1;
        core.pending.clear();
        core.pending_ends.clear();
        let mut progress = lock(&self.progress);
        progress.epoch = core.epoch;
        progress.epoch_start = progress.durable;
        progress.failure = Some(why.clone());
        self.timer_cv.notify_one();
        why
    }

    /// Records that entries before `durable` are on disk (within `epoch`).
    fn advance(&self, epoch: u64, durable: u64) {
        let mut progress = lock(&self.progress);
        if progress.epoch == epoch && durable > progress.durable {
            progress.durable = durable;
            metrics::gauge!("gatehouse_ledger_entries").set(durable as f64);
        }
    }

    /// Whether the entry at `index`, sequenced in `epoch`, is settled: durable, or lost to
    /// a failure. `None` while it still waits.
    fn outcome(&self, index: u64, epoch: u64) -> Option<Result<(), LedgerError>> {
        let progress = lock(&self.progress);
        if progress.epoch == epoch {
            (progress.durable > index).then_some(Ok(()))
        } else if progress.epoch == epoch + 1 && index < progress.epoch_start {
            // Durable before the failure that ended its epoch.
            Some(Ok(()))
        } else {
            let why = progress.failure.clone().unwrap_or_default();
            Some(Err(LedgerError::Unavailable(why)))
        }
    }

    async fn wait_durable(&self, index: u64, epoch: u64) -> Result<(), LedgerError> {
        loop {
            // Registered before the checks, so a sync finishing in between still wakes us.
            let notified = self.synced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome(index, epoch) {
                return outcome;
            }
            if self.try_lead() {
                continue;
            }
            notified.await;
        }
    }

    fn wait_durable_blocking(&self, index: u64, epoch: u64) -> Result<(), LedgerError> {
        loop {
            if let Some(outcome) = self.outcome(index, epoch) {
                return outcome;
            }
            self.lead_blocking();
        }
    }

    /// Writes and syncs the pending buffer unless another thread is doing so. The I/O
    /// blocks this thread (a tokio worker, for async callers) for its duration; one leader
    /// at a time means at most one worker is held, and it is one whose caller waits anyway.
    fn try_lead(&self) -> bool {
        let Some(io) = try_lock(&self.io) else {
            return false;
        };
        self.lead(io);
        true
    }

    /// Like [`Shared::try_lead`], but waits for a running write to finish first.
    fn lead_blocking(&self) {
        self.lead(lock(&self.io));
    }

    fn lead(&self, mut io: MutexGuard<'_, Io>) {
        // A failure is recorded by `flush` and reaches every waiter through `outcome`.
        let _ = self.flush(&mut io);
        // Release before waking the others, so that any of them may lead the next round.
        drop(io);
        self.synced.notify_waiters();
    }

    /// Writes every pending line and syncs. The caller holds `io`.
    fn flush(&self, io: &mut Io) -> Result<(), LedgerError> {
        let (tree, epoch) = {
            let mut core = lock(&self.core);
            if let Some(why) = &core.failed {
                return Err(LedgerError::Unavailable(why.clone()));
            }
            if core.pending_ends.is_empty() {
                return Ok(());
            }
            std::mem::swap(&mut core.pending, &mut io.buf);
            std::mem::swap(&mut core.pending_ends, &mut io.ends);
            (core.tree.clone(), core.epoch)
        };
        let started = Instant::now();
        let entries = io.ends.len();
        let result = io
            .writer
            .write(&io.buf, &io.ends)
            .and_then(|()| io.writer.sync());
        io.buf.clear();
        io.ends.clear();
        metrics::histogram!("gatehouse_ledger_fsync_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut core = lock(&self.core);
        match result {
            Ok(()) => {
                core.durable_tree = tree;
                core.unsynced_since = (!core.pending_ends.is_empty()).then(Instant::now);
                drop(core);
                metrics::histogram!("gatehouse_ledger_batch_entries").record(entries as f64);
                self.advance(epoch, io.writer.synced_index());
                Ok(())
            }
            Err(e) => Err(LedgerError::Unavailable(self.fail(&mut core, &e))),
        }
    }

    /// Makes every entry sequenced so far durable.
    fn sync_all(&self) -> Result<(), LedgerError> {
        let (size, epoch, failed) = {
            let core = lock(&self.core);
            (core.tree.size(), core.epoch, core.failed.clone())
        };
        if let Some(why) = failed {
            return Err(LedgerError::Unavailable(why));
        }
        if size == 0 {
            return Ok(());
        }
        self.wait_durable_blocking(size - 1, epoch)
    }

    /// Signs the durable tree if it grew since the last checkpoint.
    fn sign(&self) -> CheckpointResult {
        let mut signer = lock(&self.signer);
        let signed = signer.signed_size();
        let (size, root, leaves) = {
            let core = lock(&self.core);
            let durable = &core.durable_tree;
            if durable.size() <= signed {
                return Ok(signer.last().cloned());
            }
            let count = (durable.size() - signed) as usize;
            (
                durable.size(),
                durable.root(),
                core.unsigned_leaves[..count].to_vec(),
            )
        };
        let checkpoint = signer.sign(&leaves, size, root)?;
        {
            let mut core = lock(&self.core);
            core.signed_size = size;
            core.unsigned_leaves.drain(..leaves.len());
        }
        *lock(&self.checkpoint) = Some(checkpoint.clone());
        metrics::counter!("gatehouse_ledger_checkpoints_total").increment(1);
        metrics::gauge!("gatehouse_ledger_checkpoint_size").set(size as f64);
        Ok(Some(checkpoint))
    }

    /// After a failure: drops what was written after the last durable point, records what
    /// happened in a `ledger.recovery` entry, and lets appends in again once that entry is
    /// durable. On error the ledger stays failed and the timer tries again later.
    fn recover(&self) -> Result<(), LedgerError> {
        let mut io = lock(&self.io);
        let discarded = {
            let mut core = lock(&self.core);
            let Some(why) = core.failed.clone() else {
                return Ok(());
            };
            let next = io.writer.rollback()?;
            if next != core.durable_tree.size() || next < core.signed_size {
                return Err(LedgerError::Inconsistent(format!(
                    "the segment's durable point ({next}) disagrees with the durable tree ({})",
                    core.durable_tree.size()
                )));
            }
            let discarded = core.tree.size() - next;
            core.tree = core.durable_tree.clone();
            let keep = (next - core.signed_size) as usize;
            core.unsigned_leaves.truncate(keep);
            core.unsynced_since = None;
            core.failed = None;
            let event = Event::system(
                EventKind::LedgerRecovery,
                json!({
                    "unclean_shutdown": false,
                    "failure": why,
                    "discarded": {"from_index": next, "count": discarded},
                    "note": "appends were refused while the ledger could not write; entries after the last durable point were discarded (sync callers were refused, batched acknowledgements in that range are lost)",
                }),
            );
            self.write_locked(&mut core, &event.to_body())?;
            discarded
        };
        let result = self.flush(&mut io);
        drop(io);
        self.synced.notify_waiters();
        result?;
        {
            lock(&self.progress).failure = None;
        }
        tracing::warn!(discarded, "ledger recovered; appends are accepted again");
        Ok(())
    }

    fn stop_timer(&self) {
        lock(&self.core).stop_timer = true;
        self.timer_cv.notify_one();
    }

    /// The timer thread: batched-window syncs, checkpoints, heartbeats, recovery.
    fn run_timer(&self, started: Instant) {
        let opts = &self.opts;
        let mut next_checkpoint = started + opts.checkpoint_interval;
        let mut next_heartbeat = opts.heartbeat_interval.map(|i| started + i);
        let mut next_retry: Option<Instant> = None;
        let mut last_retry_error = String::new();
        loop {
            let (failed, window_over) = {
                let mut core = lock(&self.core);
                loop {
                    if core.stop_timer {
                        return;
                    }
                    let now = Instant::now();
                    let mut at = next_checkpoint;
                    if let Some(beat) = next_heartbeat {
                        at = at.min(beat);
                    }
                    if let Some(since) = core.unsynced_since {
                        at = at.min(since + opts.batched_window);
                    }
                    if core.pending.len() >= FLUSH_AT {
                        at = now;
                    }
                    if core.failed.is_some() {
                        at = at.min(next_retry.unwrap_or(now));
                    }
                    if at <= now {
                        break;
                    }
                    core.timer_deadline = Some(at);
                    core = self
                        .timer_cv
                        .wait_timeout(core, at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    core.timer_deadline = None;
                }
                let window_over = core.pending.len() >= FLUSH_AT
                    || core
                        .unsynced_since
                        .is_some_and(|since| Instant::now() >= since + opts.batched_window);
                (core.failed.is_some(), window_over)
            };
            let now = Instant::now();
            if failed {
                if next_retry.is_none_or(|at| now >= at) {
                    next_retry = Some(now + opts.retry_interval);
                    if let Err(e) = self.recover() {
                        let text = e.to_string();
                        if text != last_retry_error {
                            tracing::warn!(error = %e, "ledger recovery failed; retrying");
                            last_retry_error = text;
                        }
                    }
                }
                continue;
            }
            next_retry = None;
            last_retry_error.clear();
            if window_over {
                self.lead_blocking();
            }
            if next_heartbeat.is_some_and(|at| now >= at) {
                // The interval lets an auditor tell a quiet gateway from a stopped one: a
                // longer gap between two heartbeats means the ledger was not running.
                let interval_ms = opts.heartbeat_interval.map(|i| i.as_millis() as u64);
                let beat = Event::system(EventKind::Heartbeat, json!({"interval_ms": interval_ms}));
                if let Err(e) = self.write(&beat.to_body()) {
                    tracing::warn!(error = %e, "could not append a heartbeat");
                }
                next_heartbeat = opts.heartbeat_interval.map(|i| now + i);
            }
            if now >= next_checkpoint {
                next_checkpoint = now + opts.checkpoint_interval;
                let grew = {
                    let core = lock(&self.core);
                    core.tree.size() > core.signed_size
                };
                if grew {
                    // Sign what is durable now; the next checkpoint covers the rest.
                    if let Err(e) = self.sync_all().and_then(|()| self.sign()) {
                        tracing::error!(error = %e, "signing a checkpoint failed");
                    }
                }
            }
        }
    }

    fn mark_clean(&self) -> Result<(), LedgerError> {
        let run = RunState {
            clean: true,
            pid: std::process::id(),
            at_us: gatehouse_core::clock::unix_us(),
        };
        write_atomic(
            &self.layout.run_state(),
            &serde_json::to_vec(&run).expect("serialises"),
        )
    }
}

fn recovery_event(report: &OpenReport, last_ts: Option<u64>, opts: &LedgerOptions) -> Event {
    let mut data = json!({
        "unclean_shutdown": report.unclean_shutdown,
        "entries_recovered": report.entries,
        "last_entry_ts": last_ts,
        "batched_window_us": opts.batched_window.as_micros() as u64,
        "gap": {
            "from_ts": last_ts,
            "to_ts": gatehouse_core::clock::unix_us(),
            "note": "events acknowledged in batched durability within the window before the crash may be missing; sync events are all present",
        },
    });
    if let Some((segment, offset, bytes)) = &report.truncated {
        data["truncated"] = json!({"segment": segment, "offset": offset, "bytes": bytes});
    }
    Event::system(EventKind::LedgerRecovery, data)
}
