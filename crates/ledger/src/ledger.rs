//! The ledger handle: opening and recovering a data directory, appending events through
//! the single sequencer thread (group commit), checkpoints, heartbeats and shutdown.

use std::fs::{self, File};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_core::{ChunkRef, Durability, Event, EventKind, write_entry_line};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use crate::checkpoint::{LedgerKey, SignedCheckpoint, Signer, read_checkpoint_log, verify_note};
use crate::chunks;
use crate::error::{IoContext, LedgerError};
use crate::fsutil::write_atomic;
use crate::layout::Layout;
use crate::merkle::{CompactRange, Hash, leaf_hash};
use crate::segment::{self, SegmentWriter};

/// Tunables of a ledger; the gateway fills them from the `[ledger]` config section.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// Checkpoint origin and key name for a new ledger; `None` keeps the existing key's.
    pub origin: Option<String>,
    pub segment_size: u64,
    pub max_batch: usize,
    pub max_entry_size: usize,
    /// A checkpoint is signed at least this often while the log grows.
    pub checkpoint_interval: Duration,
    /// A heartbeat entry is appended this often; `None` disables heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// Longest time a `batched` append stays unsynced.
    pub batched_window: Duration,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            origin: None,
            segment_size: 64 << 20,
            max_batch: 4096,
            max_entry_size: 1 << 20,
            checkpoint_interval: Duration::from_secs(1),
            heartbeat_interval: Some(Duration::from_secs(60)),
            batched_window: Duration::from_millis(5),
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

/// Live numbers shared by the sequencer with readers (admin API, metrics).
#[derive(Debug, Clone, Default)]
pub struct LedgerStatus {
    pub size: u64,
    pub durable_size: u64,
    pub checkpoint: Option<SignedCheckpoint>,
    pub failed: Option<String>,
}

/// Where the sequencer sends an answer: to an async task, or to a blocked thread.
///
/// Two kinds because tokio's `blocking_recv` panics inside a runtime, and `open`/`close`
/// must work from anywhere.
enum Reply<T> {
    Async(oneshot::Sender<T>),
    Blocking(mpsc::SyncSender<T>),
    /// Nobody waits (records written after the fact, like a result summary).
    Detached,
}

impl<T> Reply<T> {
    fn send(self, value: T) {
        // A caller that went away no longer needs the answer.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(value);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(value);
            }
            Reply::Detached => {}
        }
    }
}

type CheckpointResult = Result<Option<SignedCheckpoint>, LedgerError>;

enum Request {
    Append {
        body: Vec<u8>,
        durability: Durability,
        reply: Reply<Result<Receipt, LedgerError>>,
    },
    /// Sync everything sequenced so far and sign a checkpoint over it.
    Checkpoint(Reply<CheckpointResult>),
    /// Like `Checkpoint`, then mark the run clean and stop.
    Shutdown(Reply<CheckpointResult>),
}

/// A handle to an open ledger; clones share the one sequencer.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("root", &self.inner.layout.root())
            .finish_non_exhaustive()
    }
}

struct Inner {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    layout: Layout,
    max_entry_size: usize,
    vkey: String,
    status: Arc<Mutex<LedgerStatus>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RunState {
    clean: bool,
    pid: u32,
    at_us: u64,
}

impl Ledger {
    /// Opens (creating on first use) the ledger inside the gateway data directory,
    /// recovering from a crash if needed, and starts the sequencer.
    ///
    /// Refuses to open a ledger whose entries contradict what its signer already signed,
    /// or that is damaged anywhere but in a crash tail: such a ledger needs an auditor,
    /// not a writer.
    pub fn open(data_dir: &Path, opts: LedgerOptions) -> Result<(Ledger, OpenReport), LedgerError> {
        let layout = Layout::new(data_dir);
        for dir in [
            layout.root().to_path_buf(),
            layout.segments(),
            layout.chunks(),
        ] {
            fs::create_dir_all(&dir).at(&dir)?;
        }
        let lock_path = layout.lock();
        let lock = File::create(&lock_path).at(&lock_path)?;
        if lock.try_lock().is_err() {
            return Err(LedgerError::Locked { path: lock_path });
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
        let end = segment::scan(&layout, |entry| {
            let leaf = leaf_hash(entry.line);
            tree.push(leaf);
            if entry.index >= signed_size {
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
        reconcile_checkpoint_log(&layout, &mut signer, &vkey)?;

        let run = RunState {
            clean: false,
            pid: std::process::id(),
            at_us: now_us(),
        };
        write_atomic(
            &layout.run_state(),
            &serde_json::to_vec(&run).expect("serialises"),
            0o644,
        )?;
        segment::remove_spares(&layout)?;
        let writer = SegmentWriter::open(&layout, last_segment, end.entries, opts.segment_size)?;

        let status = Arc::new(Mutex::new(LedgerStatus {
            size: end.entries,
            durable_size: end.entries,
            checkpoint: signer.last().cloned(),
            failed: None,
        }));
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let sequencer = Sequencer {
            rx,
            writer,
            signer,
            durable_tree: tree.clone(),
            tree,
            unsigned_leaves,
            next_index: end.entries,
            last_ts: end.last_ts.unwrap_or(0),
            unsynced_since: None,
            next_checkpoint: now + opts.checkpoint_interval,
            next_heartbeat: opts.heartbeat_interval.map(|i| now + i),
            status: status.clone(),
            layout: layout.clone(),
            opts: opts.clone(),
            failed: None,
            _lock: lock,
        };
        let thread = thread::Builder::new()
            .name("ledger-sequencer".into())
            .spawn(move || sequencer.run())
            .at(layout.root())?;
        let ledger = Ledger {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                layout: layout.clone(),
                max_entry_size: opts.max_entry_size,
                vkey: vkey.clone(),
                status,
                thread: Mutex::new(Some(thread)),
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

    /// Appends an event; returns once it is durable (`Sync`) or sequenced (`Batched`).
    pub async fn append(
        &self,
        event: &Event,
        durability: Durability,
    ) -> Result<Receipt, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(event, durability, Reply::Async(tx))?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Queues an event without waiting for its receipt. For records written after the fact
    /// (a result summary, a session end) whose caller has nothing to gate on them; a later
    /// failure shows in the ledger status, the metrics and the log.
    pub fn append_detached(
        &self,
        event: &Event,
        durability: Durability,
    ) -> Result<(), LedgerError> {
        self.submit(event, durability, Reply::Detached)
    }

    /// [`Ledger::append`] for plain threads (blocks the calling thread).
    pub fn append_blocking(
        &self,
        event: &Event,
        durability: Durability,
    ) -> Result<Receipt, LedgerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(event, durability, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| LedgerError::Closed)?
    }

    fn submit(
        &self,
        event: &Event,
        durability: Durability,
        reply: Reply<Result<Receipt, LedgerError>>,
    ) -> Result<(), LedgerError> {
        // Serialise on the caller's thread; the sequencer only splices index and time in.
        let body = event.to_body();
        if body.len() + 64 > self.inner.max_entry_size {
            return Err(LedgerError::EntryTooLarge {
                size: body.len() + 64,
                limit: self.inner.max_entry_size,
            });
        }
        self.send(Request::Append {
            body,
            durability,
            reply,
        })
    }

    fn send(&self, request: Request) -> Result<(), LedgerError> {
        let tx = self.inner.tx.lock().expect("ledger sender lock");
        tx.as_ref()
            .ok_or(LedgerError::Closed)?
            .send(request)
            .map_err(|_| LedgerError::Closed)
    }

    /// Stores a large payload as a durable chunk; put its reference in the event's `chunks`.
    pub async fn put_chunk(&self, bytes: Vec<u8>) -> Result<ChunkRef, LedgerError> {
        let layout = self.inner.layout.clone();
        tokio::task::spawn_blocking(move || chunks::put_chunk(&layout, &bytes))
            .await
            .map_err(|e| LedgerError::Unavailable(format!("chunk writer: {e}")))?
    }

    /// Syncs everything appended so far and signs a checkpoint over it.
    pub async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Checkpoint(Reply::Async(tx)))?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Flushes, signs a final checkpoint, marks the run clean and stops the sequencer.
    /// Blocking; later appends fail with [`LedgerError::Closed`].
    pub fn close(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = self.send(Request::Shutdown(Reply::Blocking(tx)));
        // Dropping the sender makes the sequencer stop even if the request was not sent.
        self.inner.tx.lock().expect("ledger sender lock").take();
        let result = match sent {
            Ok(()) => rx.recv().map_err(|_| LedgerError::Closed)?,
            Err(_) => Ok(None),
        };
        if let Some(thread) = self.inner.thread.lock().expect("ledger thread lock").take() {
            let _ = thread.join();
        }
        result
    }

    /// Current size, durable size, latest checkpoint and failure state.
    pub fn status(&self) -> LedgerStatus {
        self.inner
            .status
            .lock()
            .expect("ledger status lock")
            .clone()
    }

    /// The public key that verifies this ledger's checkpoints.
    pub fn verifier_key(&self) -> &str {
        &self.inner.vkey
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }
}

/// Makes `checkpoints.log` agree with the signer: cut a torn last line, and re-append the
/// last signed note if a crash came between committing the signer state and the append.
fn reconcile_checkpoint_log(
    layout: &Layout,
    signer: &mut Signer,
    vkey: &str,
) -> Result<(), LedgerError> {
    let path = layout.checkpoints();
    let (notes, torn) = read_checkpoint_log(&path)?;
    if let Some(valid_len) = torn {
        tracing::warn!(file = %path.display(), "cutting a torn checkpoint line left by a crash");
        let file = fs::OpenOptions::new().write(true).open(&path).at(&path)?;
        file.set_len(valid_len as u64).at(&path)?;
        file.sync_all().at(&path)?;
    }
    let last =
        match notes.last() {
            Some((line, note)) => Some(verify_note(note, vkey).map_err(|e| {
                LedgerError::Corrupt(format!("{} line {line}: {e}", path.display()))
            })?),
            None => None,
        };
    let signed = signer.signed_size();
    match last {
        Some(cp) if cp.size == signed => {
            if cp.root != signer.signed_range().root() {
                return Err(LedgerError::Corrupt(format!(
                    "{}: the newest checkpoint's root differs from the signer's state",
                    path.display()
                )));
            }
            let note = notes.last().map(|(_, n)| n.clone()).unwrap_or_default();
            signer.set_last(SignedCheckpoint {
                checkpoint: cp,
                note,
            });
        }
        Some(cp) if cp.size > signed => {
            return Err(LedgerError::Corrupt(format!(
                "{}: holds a checkpoint of size {} but the signer state only reached {signed} \
                 (signer.json was rolled back)",
                path.display(),
                cp.size
            )));
        }
        _ if signed > 0 => {
            signer.rewrite_last()?;
        }
        _ => {}
    }
    Ok(())
}

fn recovery_event(report: &OpenReport, last_ts: Option<u64>, opts: &LedgerOptions) -> Event {
    let mut data = json!({
        "unclean_shutdown": report.unclean_shutdown,
        "entries_recovered": report.entries,
        "last_entry_ts": last_ts,
        "batched_window_us": opts.batched_window.as_micros() as u64,
        "gap": {
            "from_ts": last_ts,
            "to_ts": now_us(),
            "note": "events acknowledged in batched durability within the window before the crash may be missing; sync events are all present",
        },
    });
    if let Some((segment, offset, bytes)) = &report.truncated {
        data["truncated"] = json!({"segment": segment, "offset": offset, "bytes": bytes});
    }
    Event::system(EventKind::LedgerRecovery, data)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The single writer: owns the segment files, the tree and the signer.
struct Sequencer {
    rx: mpsc::Receiver<Request>,
    writer: SegmentWriter,
    signer: Signer,
    /// Tree over every sequenced entry.
    tree: CompactRange,
    /// Tree over the entries known to be on disk.
    durable_tree: CompactRange,
    /// Leaves after the last signed size, in order (sequenced, maybe not yet durable).
    unsigned_leaves: Vec<Hash>,
    next_index: u64,
    last_ts: u64,
    /// When the oldest unsynced (batched) entry was written.
    unsynced_since: Option<Instant>,
    next_checkpoint: Instant,
    next_heartbeat: Option<Instant>,
    status: Arc<Mutex<LedgerStatus>>,
    layout: Layout,
    opts: LedgerOptions,
    failed: Option<String>,
    /// Held for the life of the sequencer: one writer per data directory.
    _lock: File,
}

/// Work gathered for one group commit.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    line_ends: Vec<usize>,
    leaves: Vec<Hash>,
    receipts: Vec<Receipt>,
    /// Callers to answer after the fsync, with their position in `receipts`.
    after_sync: Vec<(usize, Reply<Result<Receipt, LedgerError>>)>,
    /// Callers to answer as soon as the batch is written.
    after_write: Vec<(usize, Reply<Result<Receipt, LedgerError>>)>,
    checkpoint_waiters: Vec<Reply<CheckpointResult>>,
    shutdown: Option<Reply<CheckpointResult>>,
}

impl Sequencer {
    fn run(mut self) {
        loop {
            let mut batch = Batch::default();
            let stop = self.gather(&mut batch);
            let now = Instant::now();
            if self.failed.is_none() && self.next_heartbeat.is_some_and(|at| now >= at) {
                // The interval lets an auditor tell a quiet gateway from a stopped one: a
                // longer gap between two heartbeats means the ledger was not running.
                let interval_ms = self.opts.heartbeat_interval.map(|i| i.as_millis() as u64);
                let beat = Event::system(EventKind::Heartbeat, json!({"interval_ms": interval_ms}));
                self.sequence(&mut batch, &beat.to_body());
                self.next_heartbeat = self.opts.heartbeat_interval.map(|i| now + i);
            }
            self.commit(batch);
            if stop {
                break;
            }
        }
    }

    /// Waits for work (or a deadline) and drains up to `max_batch` requests.
    /// Returns true when the ledger should stop after this batch.
    fn gather(&mut self, batch: &mut Batch) -> bool {
        let timeout = self
            .next_deadline()
            .saturating_duration_since(Instant::now());
        let first = match self.rx.recv_timeout(timeout) {
            Ok(req) => req,
            Err(mpsc::RecvTimeoutError::Timeout) => return false,
            Err(mpsc::RecvTimeoutError::Disconnected) => return true,
        };
        let mut appends = 0usize;
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                Request::Append {
                    body,
                    durability,
                    reply,
                } => {
                    appends += 1;
                    if let Some(why) = &self.failed {
                        reply.send(Err(LedgerError::Unavailable(why.clone())));
                    } else {
                        let at = self.sequence(batch, &body);
                        match durability {
                            Durability::Sync => batch.after_sync.push((at, reply)),
                            Durability::Batched => batch.after_write.push((at, reply)),
                        }
                    }
                }
                Request::Checkpoint(reply) => batch.checkpoint_waiters.push(reply),
                Request::Shutdown(reply) => {
                    batch.shutdown = Some(reply);
                    return true;
                }
            }
            if appends < self.opts.max_batch {
                match self.rx.try_recv() {
                    Ok(req) => next = Some(req),
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => return true,
                }
            }
        }
        false
    }

    fn next_deadline(&self) -> Instant {
        let mut at = Instant::now() + Duration::from_secs(3600);
        if let Some(since) = self.unsynced_since {
            at = at.min(since + self.opts.batched_window);
        }
        if self.tree.size() > self.signer.signed_size() {
            at = at.min(self.next_checkpoint);
        }
        if let Some(beat) = self.next_heartbeat {
            at = at.min(beat);
        }
        at
    }

    /// Gives the entry its index and timestamp and adds its line to the batch.
    fn sequence(&mut self, batch: &mut Batch, body: &[u8]) -> usize {
        let index = self.next_index;
        let ts = now_us().max(self.last_ts);
        let start = batch.buf.len();
        write_entry_line(index, ts, body, &mut batch.buf);
        let leaf = leaf_hash(&batch.buf[start..]);
        batch.buf.push(b'\n');
        batch.line_ends.push(batch.buf.len());
        batch.leaves.push(leaf);
        batch.receipts.push(Receipt {
            index,
            leaf_hash: leaf,
            ts,
        });
        self.next_index += 1;
        self.last_ts = ts;
        batch.receipts.len() - 1
    }

    /// Writes the batch, syncs when someone waits for durability or the batched window
    /// has run out, answers callers, and signs a checkpoint when one is due.
    fn commit(&mut self, mut batch: Batch) {
        let wrote = !batch.buf.is_empty();
        if wrote {
            if let Err(e) = self.writer.write(&batch.buf, &batch.line_ends) {
                self.fail(&mut batch, e);
                return;
            }
            for leaf in &batch.leaves {
                self.tree.push(*leaf);
            }
            self.unsigned_leaves.extend_from_slice(&batch.leaves);
            for (at, reply) in batch.after_write.drain(..) {
                reply.send(Ok(batch.receipts[at]));
            }
            if self.unsynced_since.is_none() {
                self.unsynced_since = Some(Instant::now());
            }
            metrics::counter!("gatehouse_ledger_appends_total")
                .increment(batch.receipts.len() as u64);
            metrics::histogram!("gatehouse_ledger_batch_entries")
                .record(batch.receipts.len() as f64);
        }
        let now = Instant::now();
        let window_over = self
            .unsynced_since
            .is_some_and(|since| now >= since + self.opts.batched_window);
        let checkpoint_due = (now >= self.next_checkpoint
            && self.tree.size() > self.signer.signed_size())
            || !batch.checkpoint_waiters.is_empty()
            || batch.shutdown.is_some();
        if self.unsynced_since.is_some()
            && (!batch.after_sync.is_empty() || window_over || checkpoint_due)
        {
            let started = Instant::now();
            if let Err(e) = self.writer.sync() {
                self.fail(&mut batch, e);
                return;
            }
            metrics::histogram!("gatehouse_ledger_fsync_seconds")
                .record(started.elapsed().as_secs_f64());
            self.durable_tree = self.tree.clone();
            self.unsynced_since = None;
            // Publish before answering, so a caller never sees a status older than its receipt.
            self.publish();
            for (at, reply) in batch.after_sync.drain(..) {
                reply.send(Ok(batch.receipts[at]));
            }
        }
        if checkpoint_due && self.failed.is_none() {
            let result = self.sign();
            if let Err(e) = &result {
                tracing::error!(error = %e, "signing a checkpoint failed");
            }
            for reply in batch.checkpoint_waiters.drain(..) {
                reply.send(clone_result(&result));
            }
            if let Some(reply) = batch.shutdown.take() {
                let result = result.and_then(|cp| self.mark_clean().map(|()| cp));
                reply.send(result);
            }
        } else if let Some(reply) = batch.shutdown.take() {
            reply.send(Err(LedgerError::Unavailable(
                self.failed.clone().unwrap_or_default(),
            )));
        }
    }

    /// Signs the durable tree if it grew since the last checkpoint.
    fn sign(&mut self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        self.next_checkpoint = Instant::now() + self.opts.checkpoint_interval;
        let durable = self.durable_tree.size();
        let signed = self.signer.signed_size();
        if durable <= signed {
            return Ok(self.signer.last().cloned());
        }
        let count = (durable - signed) as usize;
        let cp = self.signer.sign(
            &self.unsigned_leaves[..count],
            durable,
            self.durable_tree.root(),
        )?;
        self.unsigned_leaves.drain(..count);
        metrics::counter!("gatehouse_ledger_checkpoints_total").increment(1);
        self.publish();
        Ok(Some(cp))
    }

    fn mark_clean(&self) -> Result<(), LedgerError> {
        let run = RunState {
            clean: true,
            pid: std::process::id(),
            at_us: now_us(),
        };
        write_atomic(
            &self.layout.run_state(),
            &serde_json::to_vec(&run).expect("serialises"),
            0o644,
        )
    }

    fn publish(&self) {
        let mut status = self.status.lock().expect("ledger status lock");
        status.size = self.tree.size();
        status.durable_size = self.durable_tree.size();
        status.checkpoint = self.signer.last().cloned();
        status.failed = self.failed.clone();
        metrics::gauge!("gatehouse_ledger_entries").set(status.durable_size as f64);
        metrics::gauge!("gatehouse_ledger_checkpoint_size").set(self.signer.signed_size() as f64);
    }

    /// A write or fsync failed: nothing in this batch is acknowledged as durable, and the
    /// ledger refuses all further appends (fail closed) until it is reopened, which
    /// recovers from the files and records the gap.
    fn fail(&mut self, batch: &mut Batch, error: LedgerError) {
        let why = format!("the ledger could not write: {error}");
        tracing::error!(error = %error, "ledger write failed; refusing appends until restart");
        metrics::counter!("gatehouse_ledger_failures_total").increment(1);
        for (_, reply) in batch
            .after_sync
            .drain(..)
            .chain(batch.after_write.drain(..))
        {
            reply.send(Err(LedgerError::Unavailable(why.clone())));
        }
        for reply in batch.checkpoint_waiters.drain(..) {
            reply.send(Err(LedgerError::Unavailable(why.clone())));
        }
        if let Some(reply) = batch.shutdown.take() {
            reply.send(Err(LedgerError::Unavailable(why.clone())));
        }
        self.failed = Some(why);
        self.publish();
    }
}

fn clone_result(result: &CheckpointResult) -> CheckpointResult {
    match result {
        Ok(cp) => Ok(cp.clone()),
        Err(e) => Err(LedgerError::Unavailable(e.to_string())),
    }
}
