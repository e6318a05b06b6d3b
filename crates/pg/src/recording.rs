//! The session's recording of result data: which bytes of each result are kept, up to the
//! per-session cap, and how they are cut into chunks. Pure bookkeeping; the session writes
//! the chunks and their `recording` entries.
//!
//! Result bytes are kept as the protocol frames that left the gateway for the client
//! (RowDescription, DataRow, CopyData), so a replay decodes them with the same codec. Once
//! masking exists, the frames recorded are the masked ones: recording sees exactly what the
//! client saw. A result's bytes may span several chunks; each `recording` entry lists its
//! parts as `[command index, offset in the chunk, length]`, and the `result` entry carries
//! the SHA-256 and length of all of its parts together, so the verifier can tie every
//! stored byte to the result that produced it.

use sha2::{Digest, Sha256};

/// A chunk is cut once this much is buffered: large enough that the file per chunk costs
/// little per byte, small enough that a session never holds much in memory.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// What of one result was recorded, carried by its [`crate::tracker::Work`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Output {
    hasher: Sha256,
    /// Bytes recorded.
    pub len: u64,
    /// Bytes not recorded because the session reached its cap.
    pub truncated: u64,
}

impl Output {
    /// Hex SHA-256 of the recorded bytes, or `None` when nothing was recorded.
    pub(crate) fn sha256(&self) -> Option<String> {
        (self.len > 0).then(|| hex::encode(self.hasher.clone().finalize()))
    }
}

/// One slice of a chunk: `len` bytes at `offset`, of the result of the command entry at
/// index `command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub command: u64,
    pub offset: u64,
    pub len: u64,
}

/// Bytes ready to become one chunk, and what they are.
#[derive(Debug)]
pub(crate) struct Batch {
    pub bytes: Vec<u8>,
    pub parts: Vec<Part>,
}

/// A session's recorder.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// `None` when result data is not recorded for this resource.
    cap: Option<u64>,
    /// Bytes recorded so far in this session (in chunks or still buffered).
    recorded: u64,
    /// Bytes not recorded because of the cap.
    truncated: u64,
    buf: Vec<u8>,
    parts: Vec<Part>,
}

impl Recorder {
    /// A recorder keeping at most `cap` bytes per session; `None` keeps nothing.
    pub(crate) fn new(cap: Option<u64>) -> Recorder {
        Recorder {
            cap,
            recorded: 0,
            truncated: 0,
            buf: Vec::new(),
            parts: Vec::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.cap.is_some()
    }

    /// Records one frame of the result of `command`. Frames are kept whole: the first one
    /// that does not fit under the cap, and everything after it, is counted as truncated.
    pub(crate) fn record(&mut self, command: u64, output: &mut Output, frame: &[u8]) {
        let Some(cap) = self.cap else {
            return;
        };
        let len = frame.len() as u64;
        if self.truncated > 0 || self.recorded + len > cap {
            self.truncated += len;
            output.truncated += len;
            return;
        }
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(frame);
        match self.parts.last_mut() {
            Some(last) if last.command == command && last.offset + last.len == offset => {
                last.len += len;
            }
            _ => self.parts.push(Part {
                command,
                offset,
                len,
            }),
        }
        output.hasher.update(frame);
        output.len += len;
        self.recorded += len;
    }

    /// Whether enough is buffered to cut a chunk.
    pub(crate) fn ready(&self) -> bool {
        self.buf.len() >= CHUNK_BYTES
    }

    /// Everything buffered, to be written as a chunk; `None` when nothing is.
    pub(crate) fn take(&mut self) -> Option<Batch> {
        if self.buf.is_empty() {
            return None;
        }
        let bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        Some(Batch {
            bytes,
            parts: std::mem::take(&mut self.parts),
        })
    }

    /// Bytes recorded and bytes truncated in this session.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.recorded, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_sliced_by_command_and_hashed_whole() {
        let mut r = Recorder::new(Some(1 << 20));
        let (mut a, mut b) = (Output::default(), Output::default());
        r.record(1, &mut a, b"Tcols");
        r.record(1, &mut a, b"Drow1");
        r.record(2, &mut b, b"Drow2");
        r.record(2, &mut b, b"Drow3");
        assert_eq!(a.len, 10);
        assert_eq!(a.sha256(), Some(hex::encode(Sha256::digest(b"TcolsDrow1"))));
        let batch = r.take().unwrap();
        assert_eq!(batch.bytes, b"TcolsDrow1Drow2Drow3");
        assert_eq!(
            batch.parts,
            vec![
                Part {
                    command: 1,
                    offset: 0,
                    len: 10
                },
                Part {
                    command: 2,
                    offset: 10,
                    len: 10
                }
            ]
        );
        assert!(r.take().is_none());
        // A result continuing after a cut starts a new part at offset 0 of the next chunk.
        r.record(2, &mut b, b"Drow4");
        assert_eq!(r.take().unwrap().parts[0].offset, 0);
        assert_eq!(
            b.sha256(),
            Some(hex::encode(Sha256::digest(b"Drow2Drow3Drow4")))
        );
    }

    #[test]
    fn the_cap_keeps_whole_frames_and_counts_the_rest() {
        let mut r = Recorder::new(Some(12));
        let (mut a, mut b) = (Output::default(), Output::default());
        r.record(1, &mut a, b"Drow1");
        r.record(1, &mut a, b"Drow2");
        r.record(1, &mut a, b"Drow3");
        // Fits by size, but the recording has been cut: nothing after a cut is kept, so
        // what is stored is always a prefix of the session's output.
        r.record(2, &mut b, b"D");
        assert_eq!((a.len, a.truncated), (10, 5));
        assert_eq!((b.len, b.truncated), (0, 1));
        assert_eq!(b.sha256(), None);
        assert_eq!(r.totals(), (10, 6));
    }

    #[test]
    fn a_disabled_recorder_keeps_and_counts_nothing() {
        let mut r = Recorder::new(None);
        let mut a = Output::default();
        r.record(1, &mut a, b"Drow1");
        assert!(!r.enabled());
        assert_eq!((a.len, a.truncated), (0, 0));
        assert!(r.take().is_none());
        assert_eq!(r.totals(), (0, 0));
    }

    #[test]
    fn a_chunk_is_ready_at_the_cut_size() {
        let mut r = Recorder::new(Some(u64::MAX));
        let mut a = Output::default();
        let frame = vec![b'D'; 1000];
        while !r.ready() {
            r.record(1, &mut a, &frame);
        }
        let batch = r.take().unwrap();
        assert!(batch.bytes.len() >= CHUNK_BYTES && batch.bytes.len() < CHUNK_BYTES + 1000);
        assert_eq!(batch.parts.len(), 1);
    }
}
