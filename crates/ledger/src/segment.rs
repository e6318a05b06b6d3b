//! Segment files: reading entry lines back (scan) and appending them (writer).
//!
//! A segment is named after the index of its first entry and holds entry lines, each
//! `<canonical JSON>\n`. New segments are filled with zeros up front, so an fdatasync after
//! an append only flushes data blocks, never a size change; the first zero byte at a line
//! start marks the end of the data. A segment that fills up is trimmed to its data and
//! the next one begins. Only the last segment may end in zeros or a torn line. Segment
//! files are created 0600: they hold the audit trail itself.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use gatehouse_core::EntryHeader;

use crate::error::{IoContext, LedgerError};
use crate::fsutil::{FILE_MODE, sync_dir};
use crate::layout::{Layout, pruned_first_index, segment_first_index};

/// One segment file on disk.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub path: PathBuf,
    pub first_index: u64,
    /// Retention pruned it: only its entries' leaf hashes are left ([`crate::pruned`]).
    pub pruned: bool,
}

/// Lists segment files in index order; other files in the folder are ignored.
pub fn list_segments(layout: &Layout) -> Result<Vec<SegmentFile>, LedgerError> {
    let dir = layout.segments();
    let mut out = Vec::new();
    let read = match fs::read_dir(&dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LedgerError::io(dir, e)),
    };
    for item in read {
        let path = item.at(&dir)?.path();
        if let Some(first_index) = segment_first_index(&path) {
            out.push(SegmentFile {
                path,
                first_index,
                pruned: false,
            });
        } else if let Some(first_index) = pruned_first_index(&path) {
            out.push(SegmentFile {
                path,
                first_index,
                pruned: true,
            });
        }
    }
    // A crash while pruning can leave a segment beside its hashes; the entries win.
    out.sort_by_key(|s| (s.first_index, s.pruned));
    out.dedup_by_key(|s| s.first_index);
    Ok(out)
}

/// An entry line as found on disk.
#[derive(Debug)]
pub struct RawEntry<'a> {
    pub index: u64,
    /// The entry's bytes without the newline: exactly what is hashed.
    pub line: &'a [u8],
    pub header: EntryHeader,
    pub segment: &'a Path,
    pub offset: u64,
}

/// Why the data of a segment stops being a valid continuation of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefectKind {
    /// Bytes that do not end in a newline before zeros or the end of the file.
    PartialLine,
    /// A complete line that is not a readable entry.
    Unreadable(String),
    /// A readable entry whose index is not the next one.
    WrongIndex { found: u64 },
    /// An entry whose schema version this reader does not know.
    UnknownVersion(u32),
    /// A timestamp earlier than its predecessor's.
    TimeWentBack { previous: u64, found: u64 },
    /// Non-zero bytes after the zero padding that ends the data.
    DataAfterEnd,
}

/// The first place where a segment's bytes stop being valid log data.
#[derive(Debug, Clone)]
pub struct Defect {
    pub segment: PathBuf,
    /// Byte offset of the first invalid byte (the end of the valid data).
    pub offset: u64,
    /// The index the log expected at that point.
    pub index: u64,
    pub kind: DefectKind,
    /// Whether more newline-terminated data follows the defect. A crash leaves at most
    /// one partial line behind; anything more is damage, never a crash tail.
    pub more_lines_follow: bool,
    pub is_last_segment: bool,
    /// Bytes from `offset` to the last non-zero byte of the segment: what a repair cuts.
    pub tail_bytes: u64,
}

impl Defect {
    /// True when this looks like what a crash leaves: one partial or unreadable line at
    /// the very end of the last segment, followed only by zeros.
    pub fn is_crash_tail(&self) -> bool {
        self.is_last_segment
            && !self.more_lines_follow
            && matches!(
                self.kind,
                DefectKind::PartialLine | DefectKind::Unreadable(_) | DefectKind::DataAfterEnd
            )
    }
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = format!(
            "{} offset {} (index {})",
            self.segment.display(),
            self.offset,
            self.index
        );
        match &self.kind {
            DefectKind::PartialLine => write!(
                f,
                "{at}: partial entry at the end of the data (truncated segment or crash tail)"
            ),
            DefectKind::Unreadable(why) => write!(f, "{at}: not a valid entry line: {why}"),
            DefectKind::WrongIndex { found } => write!(
                f,
                "{at}: found entry index {found} where index {} belongs (entries deleted, inserted or reordered)",
                self.index
            ),
            DefectKind::UnknownVersion(v) => write!(f, "{at}: unknown entry schema version {v}"),
            DefectKind::TimeWentBack { previous, found } => write!(
                f,
                "{at}: timestamp {found} is earlier than the previous entry's {previous}"
            ),
            DefectKind::DataAfterEnd => {
                write!(
                    f,
                    "{at}: unexpected non-zero bytes after the end of the data"
                )
            }
        }
    }
}

/// Where the valid data of the log ends.
#[derive(Debug, Clone)]
pub struct ScanEnd {
    /// Number of valid entries (the next index).
    pub entries: u64,
    /// Timestamp of the last valid entry.
    pub last_ts: Option<u64>,
    /// The last segment, its first index, the end of its valid data, and its file length.
    pub last_segment: Option<(SegmentFile, u64, u64)>,
    /// Set when the data stops being valid before the end of the last segment.
    pub defect: Option<Defect>,
}

/// Reads every segment in order, calling `visit` for each valid entry; entries retention
/// has pruned are skipped (see [`scan_with`] for a scan that needs their hashes).
///
/// Stops at the first defect. A defect in a segment that is not the last one, or a gap
/// between segments, is returned as [`LedgerError::Corrupt`]; a defect in the last segment
/// is reported in [`ScanEnd::defect`] so the caller decides whether it is a crash tail.
pub fn scan(
    layout: &Layout,
    mut visit: impl FnMut(&RawEntry<'_>) -> Result<(), LedgerError>,
) -> Result<ScanEnd, LedgerError> {
    scan_with(layout, |v| match v {
        Visit::Entry(e) => visit(e),
        Visit::Pruned(..) => Ok(()),
    })
}

/// What [`scan_with`] finds at each index: an entry, or the leaf hash of one that
/// retention has pruned.
#[derive(Debug)]
pub enum Visit<'s, 'a> {
    Entry(&'s RawEntry<'a>),
    Pruned(u64, crate::merkle::Hash),
}

/// [`scan`] that also visits the entries retention has pruned, in order with the others:
/// what rebuilding the tree needs.
pub fn scan_with(
    layout: &Layout,
    mut visit: impl FnMut(Visit<'_, '_>) -> Result<(), LedgerError>,
) -> Result<ScanEnd, LedgerError> {
    let segments = list_segments(layout)?;
    let mut next_index = 0u64;
    let mut last_ts: Option<u64> = None;
    let mut buf = Vec::new();
    let count = segments.len();
    for (n, seg) in segments.iter().enumerate() {
        let is_last = n + 1 == count;
        if seg.first_index != next_index {
            return Err(LedgerError::Corrupt(format!(
                "{}: segment starts at index {} but the segments before it end at index {} \
                 (a segment was deleted, renamed or truncated)",
                seg.path.display(),
                seg.first_index,
                next_index
            )));
        }
        if seg.pruned {
            let p = crate::pruned::read_pruned(&seg.path)?;
            if p.header.first != seg.first_index {
                return Err(LedgerError::Corrupt(format!(
                    "{}: says it holds entries from {} but is named for {}",
                    seg.path.display(),
                    p.header.first,
                    seg.first_index
                )));
            }
            for leaf in p.leaves {
                visit(Visit::Pruned(next_index, leaf))?;
                next_index += 1;
            }
            last_ts = Some(p.header.last_ts);
            if is_last {
                return Ok(ScanEnd {
                    entries: next_index,
                    last_ts,
                    last_segment: None,
                    defect: None,
                });
            }
            continue;
        }
        buf.clear();
        File::open(&seg.path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .at(&seg.path)?;
        let (end, defect) = scan_segment(
            &buf,
            seg,
            is_last,
            &mut next_index,
            &mut last_ts,
            &mut visit,
        )?;
        if let Some(defect) = defect {
            if !is_last {
                return Err(LedgerError::Corrupt(defect.to_string()));
            }
            return Ok(ScanEnd {
                entries: next_index,
                last_ts,
                last_segment: Some((seg.clone(), end, buf.len() as u64)),
                defect: Some(defect),
            });
        }
        if is_last {
            return Ok(ScanEnd {
                entries: next_index,
                last_ts,
                last_segment: Some((seg.clone(), end, buf.len() as u64)),
                defect: None,
            });
        }
    }
    Ok(ScanEnd {
        entries: next_index,
        last_ts,
        last_segment: None,
        defect: None,
    })
}

/// Scans one segment's bytes; returns the end of valid data and the defect, if any.
fn scan_segment(
    buf: &[u8],
    seg: &SegmentFile,
    is_last: bool,
    next_index: &mut u64,
    last_ts: &mut Option<u64>,
    visit: &mut impl FnMut(Visit<'_, '_>) -> Result<(), LedgerError>,
) -> Result<(u64, Option<Defect>), LedgerError> {
    let mut pos = 0usize;
    let defect_at = |pos: usize, index: u64, kind: DefectKind| {
        let rest = &buf[pos..];
        // Skip the offending line itself; any non-zero byte after it is more data.
        let after_line = match memchr::memchr(b'\n', rest) {
            Some(i) => &rest[i + 1..],
            None => &[][..],
        };
        let more_lines_follow = after_line.iter().any(|&b| b != 0);
        let tail_bytes = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
        Defect {
            segment: seg.path.clone(),
            offset: pos as u64,
            index,
            kind,
            more_lines_follow,
            is_last_segment: is_last,
            tail_bytes,
        }
    };
    while pos < buf.len() {
        if buf[pos] == 0 {
            // Zero padding: the data ends here, and nothing but zeros may follow.
            if let Some(i) = buf[pos..].iter().position(|&b| b != 0) {
                return Ok((
                    pos as u64,
                    Some(defect_at(pos + i, *next_index, DefectKind::DataAfterEnd)),
                ));
            }
            return Ok((pos as u64, None));
        }
        let Some(len) = memchr::memchr(b'\n', &buf[pos..]) else {
            return Ok((
                pos as u64,
                Some(defect_at(pos, *next_index, DefectKind::PartialLine)),
            ));
        };
        let line = &buf[pos..pos + len];
        if memchr::memchr(0, line).is_some() {
            return Ok((
                pos as u64,
                Some(defect_at(pos, *next_index, DefectKind::PartialLine)),
            ));
        }
        let header: EntryHeader = match serde_json::from_slice(line) {
            Ok(h) => h,
            Err(e) => {
                let kind = DefectKind::Unreadable(e.to_string());
                return Ok((pos as u64, Some(defect_at(pos, *next_index, kind))));
            }
        };
        if header.v != gatehouse_core::SCHEMA_VERSION {
            let kind = DefectKind::UnknownVersion(header.v);
            return Ok((pos as u64, Some(defect_at(pos, *next_index, kind))));
        }
        if header.i != *next_index {
            let kind = DefectKind::WrongIndex { found: header.i };
            return Ok((pos as u64, Some(defect_at(pos, *next_index, kind))));
        }
        if let Some(prev) = *last_ts
            && header.ts < prev
        {
            let kind = DefectKind::TimeWentBack {
                previous: prev,
                found: header.ts,
            };
            return Ok((pos as u64, Some(defect_at(pos, *next_index, kind))));
        }
        let entry = RawEntry {
            index: header.i,
            line,
            header,
            segment: &seg.path,
            offset: pos as u64,
        };
        visit(Visit::Entry(&entry))?;
        *last_ts = Some(entry.header.ts);
        *next_index += 1;
        pos += len + 1;
    }
    Ok((pos as u64, None))
}

/// Creates zero-filled segment files ahead of need on a background thread, so that a
/// rollover does not stall appends while 64 MiB of zeros are written.
struct Preparer {
    ready: mpsc::Receiver<Result<PathBuf, LedgerError>>,
    request: mpsc::Sender<()>,
}

impl Preparer {
    fn start(dir: PathBuf, size: u64) -> Self {
        let (ready_tx, ready) = mpsc::channel();
        let (request, request_rx) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("ledger-prealloc".into())
            .spawn(move || {
                let mut n = 0u64;
                while request_rx.recv().is_ok() {
                    n += 1;
                    let path = dir.join(format!(".prep-{n}.tmp"));
                    let result = zero_fill(&path, size).map(|()| path);
                    if ready_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the segment preallocation thread");
        // Prepare the first spare right away.
        let _ = request.send(());
        Preparer { ready, request }
    }

    /// Takes the prepared file (waiting if it is not ready) and orders the next one.
    fn take(&self) -> Result<PathBuf, LedgerError> {
        match self.receive() {
            Ok(path) => Ok(path),
            // The failure may be stale (a disk that was full when the spare was prepared
            // and has room now): one fresh attempt before giving up.
            Err(_) => self.receive(),
        }
    }

    fn receive(&self) -> Result<PathBuf, LedgerError> {
        let result = self
            .ready
            .recv()
            .map_err(|_| LedgerError::Unavailable("segment preallocation thread stopped".into()))?;
        let _ = self.request.send(());
        result
    }
}

/// Writes `size` zero bytes to a new file at `path`, durably.
///
/// Writes and syncs 1 MiB at a time with a short pause between steps: one fsync of
/// 64 MiB of fresh data held up the ledger's small fdatasyncs for 50–300 ms in our
/// measurements, while paced 1 MiB steps keep each stall to a few milliseconds.
fn zero_fill(path: &Path, size: u64) -> Result<(), LedgerError> {
    let result = zero_fill_inner(path, size);
    if result.is_err() {
        // A half-written spare (a full disk) would only hold on to the space.
        let _ = fs::remove_file(path);
    }
    result
}

fn zero_fill_inner(path: &Path, size: u64) -> Result<(), LedgerError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .at(path)?;
    // The spare becomes a segment by rename, keeping this mode; a leftover file of the
    // same name would keep its own mode through the open above.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .at(path)?;
    let block = vec![0u8; ZERO_STEP];
    let mut written = 0u64;
    while written < size {
        let n = block.len().min((size - written) as usize);
        file.write_all_at(&block[..n], written).at(path)?;
        file.sync_data().at(path)?;
        written += n as u64;
        thread::sleep(ZERO_PAUSE);
    }
    file.sync_all().at(path)
}

const ZERO_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

const ZERO_STEP: usize = 1 << 20;

/// Removes leftover preallocation files of an earlier run.
pub fn remove_spares(layout: &Layout) -> Result<(), LedgerError> {
    let dir = layout.segments();
    for item in fs::read_dir(&dir).at(&dir)? {
        let path = item.at(&dir)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(".prep-") && name.ends_with(".tmp") {
            fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// Appends entry lines to the current segment, rolling over to a new one when full, and
/// remembers how far the segment is known to be durable.
pub struct SegmentWriter {
    layout: Layout,
    file: File,
    path: PathBuf,
    /// Where the next byte goes.
    offset: u64,
    /// Length of the current file; writes never go past it.
    capacity: u64,
    /// Index of the next entry to be written.
    next_index: u64,
    /// Everything before this offset of the current file (entries before `synced_index`)
    /// is durable.
    synced_offset: u64,
    synced_index: u64,
    /// End of the furthest write attempted in this file: after a failed write, bytes up to
    /// here may hold a torn line.
    dirty_end: u64,
    preparer: Preparer,
}

impl SegmentWriter {
    /// Continues the last segment at `offset`, or starts the first segment when there is none.
    pub fn open(
        layout: &Layout,
        last: Option<(SegmentFile, u64, u64)>,
        next_index: u64,
        segment_size: u64,
    ) -> Result<Self, LedgerError> {
        let preparer = Preparer::start(layout.segments(), segment_size);
        let (path, offset, capacity) = match last {
            Some((seg, end, len)) => (seg.path, end, len),
            None => {
                let path = layout.segment(next_index);
                let spare = preparer.take()?;
                fs::rename(&spare, &path).at(&path)?;
                sync_dir(&layout.segments())?;
                (path, 0, segment_size)
            }
        };
        let file = OpenOptions::new().write(true).open(&path).at(&path)?;
        let mut writer = SegmentWriter {
            layout: layout.clone(),
            file,
            path,
            offset,
            capacity,
            next_index,
            synced_offset: 0,
            synced_index: next_index,
            dirty_end: offset,
            preparer,
        };
        // What the scan read may still sit in the page cache after a crash of this
        // process; make it durable before anything is built on it.
        writer.sync()?;
        Ok(writer)
    }

    /// Writes whole lines from `buf`; `line_ends[k]` is the end offset in `buf` of the k-th
    /// line (its newline included). Rolls over to new segments at line boundaries.
    pub fn write(&mut self, buf: &[u8], line_ends: &[usize]) -> Result<(), LedgerError> {
        let mut start = 0usize;
        let mut k = 0usize;
        while k < line_ends.len() {
            // Take as many whole lines as fit in the current segment.
            let room = self.capacity - self.offset;
            let mut end = start;
            let mut taken = 0usize;
            while k + taken < line_ends.len() && (line_ends[k + taken] - start) as u64 <= room {
                end = line_ends[k + taken];
                taken += 1;
            }
            if taken == 0 {
                if self.offset == 0 {
                    return Err(LedgerError::EntryTooLarge {
                        size: line_ends[k] - start,
                        limit: self.capacity as usize,
                    });
                }
                self.roll_over()?;
                continue;
            }
            self.dirty_end = self.dirty_end.max(self.offset + (end - start) as u64);
            self.file
                .write_all_at(&buf[start..end], self.offset)
                .at(&self.path)?;
            self.offset += (end - start) as u64;
            self.next_index += taken as u64;
            start = end;
            k += taken;
        }
        Ok(())
    }

    /// Entries before this index are durable.
    pub fn synced_index(&self) -> u64 {
        self.synced_index
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        self.file.sync_data().at(&self.path)?;
        self.synced_offset = self.offset;
        self.synced_index = self.next_index;
        Ok(())
    }

    /// After a failed write or sync: forgets everything after the durable point, zeroing
    /// it on disk, so the next line continues the last durable one. Returns the index the
    /// next entry will have.
    pub fn rollback(&mut self) -> Result<u64, LedgerError> {
        if self.dirty_end > self.synced_offset {
            zero_range(&self.file, &self.path, self.synced_offset, self.dirty_end)?;
        }
        self.file.sync_data().at(&self.path)?;
        self.offset = self.synced_offset;
        self.dirty_end = self.synced_offset;
        self.next_index = self.synced_index;
        Ok(self.next_index)
    }

    /// Trims the full segment to its data, makes it durable, and starts the next one.
    ///
    /// Everything written so far is durable afterwards, even if starting the next segment
    /// fails (then the trimmed segment has no room and the next write tries again).
    fn roll_over(&mut self) -> Result<(), LedgerError> {
        if self.capacity != self.offset {
            self.file.set_len(self.offset).at(&self.path)?;
            self.capacity = self.offset;
        }
        self.file.sync_all().at(&self.path)?;
        self.synced_offset = self.offset;
        self.synced_index = self.next_index;
        self.dirty_end = self.offset;
        let path = self.layout.segment(self.next_index);
        let spare = self.preparer.take()?;
        fs::rename(&spare, &path).at(&path)?;
        sync_dir(&self.layout.segments())?;
        let file = OpenOptions::new().write(true).open(&path).at(&path)?;
        self.capacity = file.metadata().at(&path)?.len();
        self.file = file;
        self.path = path;
        self.offset = 0;
        self.synced_offset = 0;
        self.dirty_end = 0;
        Ok(())
    }
}

fn zero_range(file: &File, path: &Path, offset: u64, end: u64) -> Result<(), LedgerError> {
    let block = vec![0u8; 1 << 16];
    let mut at = offset;
    while at < end {
        let n = block.len().min((end - at) as usize);
        file.write_all_at(&block[..n], at).at(path)?;
        at += n as u64;
    }
    Ok(())
}

/// Zeroes `[offset, end)` of a segment so that a torn crash tail disappears, and syncs.
pub fn zero_tail(path: &Path, offset: u64, end: u64) -> Result<(), LedgerError> {
    let file = OpenOptions::new().write(true).open(path).at(path)?;
    zero_range(&file, path, offset, end)?;
    file.sync_data().at(path)
}
