//! The verifier's check of recorded result data: every slice that `recording` entries
//! attribute to a command must add up to the hash and length its `result` entry committed
//! to when the result ended.
//!
//! A result's slices may sit in recording entries before its result entry (a large result
//! cut into several chunks) or after it (small results buffered until the next chunk), so
//! both sides are collected by command index until they meet.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::LedgerError;

/// What a `result` entry says about its recorded data.
#[derive(Debug, Deserialize)]
struct ResultLine {
    data: ResultData,
}

#[derive(Debug, Deserialize)]
struct ResultData {
    #[serde(default)]
    command: Option<u64>,
    #[serde(default)]
    recorded: Option<Recorded>,
}

#[derive(Debug, Deserialize)]
struct Recorded {
    sha256: String,
    bytes: u64,
}

/// What a `recording` entry says: its parts, and whether its chunk was lost.
#[derive(Debug, Deserialize)]
struct RecordingLine {
    data: RecordingData,
}

#[derive(Debug, Deserialize)]
struct RecordingData {
    parts: Vec<[u64; 3]>,
    #[serde(default)]
    lost: Option<String>,
}

/// Slices seen so far for one command.
#[derive(Default)]
struct Collected {
    hasher: Sha256,
    len: u64,
    /// A recording entry says some of this command's data could not be stored.
    lost: bool,
}

/// The check, fed entry by entry in ledger order.
#[derive(Default)]
pub(crate) struct OutputCheck {
    collected: HashMap<u64, Collected>,
    /// Result entry index, hash and length, by command index, until their slices are in.
    claimed: HashMap<u64, (u64, String, u64)>,
    /// Results whose recorded data matched.
    pub matched: u64,
    /// Results whose data a recording entry declared lost.
    pub lost: u64,
}

/// Counts of results whose data never fully arrived (the gateway stopped before writing
/// the last chunk of a session) and of slices that no result claimed (the gateway stopped
/// before writing the result entry).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsettled {
    pub incomplete: u64,
    pub unclaimed: u64,
}

fn corrupt(index: u64, why: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(format!("entry {index}: {why}"))
}

impl OutputCheck {
    /// Takes note of a `result` entry.
    pub(crate) fn result(&mut self, index: u64, line: &[u8]) -> Result<(), LedgerError> {
        let parsed: ResultLine = serde_json::from_slice(line)
            .map_err(|e| corrupt(index, format!("unreadable result entry: {e}")))?;
        if let Some(recorded) = parsed.data.recorded {
            let command = parsed
                .data
                .command
                .ok_or_else(|| corrupt(index, "recorded data but no command index"))?;
            if self.claimed.contains_key(&command) {
                return Err(corrupt(
                    index,
                    format!("a second result claims the recorded data of command {command}"),
                ));
            }
            self.claimed
                .insert(command, (index, recorded.sha256, recorded.bytes));
            self.settle(command)?;
        }
        Ok(())
    }

    /// Takes note of a `recording` entry whose chunk (already checked against its hash) is
    /// `chunk`; `None` when the entry references no chunk.
    pub(crate) fn recording(
        &mut self,
        index: u64,
        line: &[u8],
        chunk: Option<&[u8]>,
    ) -> Result<(), LedgerError> {
        let parsed: RecordingLine = serde_json::from_slice(line)
            .map_err(|e| corrupt(index, format!("unreadable recording entry: {e}")))?;
        let data = parsed.data;
        let bytes = match (chunk, &data.lost) {
            (_, Some(_)) => None,
            (Some(bytes), None) => Some(bytes),
            (None, None) => {
                return Err(corrupt(
                    index,
                    "a recording entry without a chunk that does not say it was lost",
                ));
            }
        };
        for [command, offset, len] in data.parts {
            let collected = self.collected.entry(command).or_default();
            match bytes {
                Some(bytes) => {
                    let slice = offset
                        .checked_add(len)
                        .and_then(|end| bytes.get(offset as usize..end as usize))
                        .ok_or_else(|| {
                            corrupt(
                                index,
                                format!(
                                    "part [{command}, {offset}, {len}] lies outside its chunk of {} bytes",
                                    bytes.len()
                                ),
                            )
                        })?;
                    collected.hasher.update(slice);
                }
                None => collected.lost = true,
            }
            collected.len += len;
            self.settle(command)?;
        }
        Ok(())
    }

    /// Compares a command's slices with its result once all of them are in.
    fn settle(&mut self, command: u64) -> Result<(), LedgerError> {
        let (Some((result, sha256, bytes)), Some(collected)) =
            (self.claimed.get(&command), self.collected.get(&command))
        else {
            return Ok(());
        };
        if collected.len < *bytes {
            return Ok(());
        }
        if collected.len > *bytes {
            return Err(corrupt(
                *result,
                format!(
                    "recording entries hold {} bytes for command {command}, its result says {bytes}",
                    collected.len
                ),
            ));
        }
        if collected.lost {
            self.lost += 1;
        } else {
            let actual = hex::encode(collected.hasher.clone().finalize());
            if &actual != sha256 {
                return Err(corrupt(
                    *result,
                    format!(
                        "the recorded data of command {command} hashes to {actual}, its result says {sha256}"
                    ),
                ));
            }
            self.matched += 1;
        }
        self.claimed.remove(&command);
        self.collected.remove(&command);
        Ok(())
    }

    /// What is left once every entry was seen.
    pub(crate) fn finish(&self) -> Unsettled {
        Unsettled {
            incomplete: self.claimed.len() as u64,
            unclaimed: self
                .collected
                .keys()
                .filter(|c| !self.claimed.contains_key(c))
                .count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(command: u64, data: &[u8]) -> Vec<u8> {
        let sha = hex::encode(Sha256::digest(data));
        json!({"data": {"command": command, "recorded": {"sha256": sha, "bytes": data.len()}}})
            .to_string()
            .into_bytes()
    }

    fn recording(parts: &[[u64; 3]]) -> Vec<u8> {
        json!({"data": {"parts": parts}}).to_string().into_bytes()
    }

    #[test]
    fn slices_before_and_after_their_result_both_match() {
        let mut check = OutputCheck::default();
        // Command 1's data spans two chunks, the second written after its result entry;
        // command 2's data is all in the second chunk.
        check
            .recording(10, &recording(&[[1, 0, 3]]), Some(b"abc"))
            .unwrap();
        check.result(11, &result(1, b"abcdef")).unwrap();
        check.result(12, &result(2, b"xy")).unwrap();
        check
            .recording(13, &recording(&[[1, 0, 3], [2, 3, 2]]), Some(b"defxy"))
            .unwrap();
        assert_eq!(check.matched, 2);
        assert_eq!(check.finish(), Unsettled::default());
    }

    #[test]
    fn altered_or_misattributed_data_is_named() {
        let mut check = OutputCheck::default();
        check.result(5, &result(1, b"abc")).unwrap();
        let err = check
            .recording(6, &recording(&[[1, 0, 3]]), Some(b"abd"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("entry 5") && err.contains("command 1"),
            "{err}"
        );

        let mut check = OutputCheck::default();
        check.result(5, &result(1, b"abc")).unwrap();
        let err = check
            .recording(6, &recording(&[[1, 0, 4]]), Some(b"abcd"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("4 bytes"), "{err}");

        let mut check = OutputCheck::default();
        let err = check
            .recording(6, &recording(&[[1, 2, 4]]), Some(b"abcd"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside its chunk"), "{err}");
    }

    #[test]
    fn lost_and_unfinished_data_are_counted_not_failed() {
        let mut check = OutputCheck::default();
        check.result(1, &result(1, b"abc")).unwrap();
        let lost = json!({"data": {"parts": [[1, 0, 3]], "lost": "disk full"}}).to_string();
        check.recording(2, lost.as_bytes(), None).unwrap();
        check.result(3, &result(2, b"never stored")).unwrap();
        check
            .recording(4, &recording(&[[3, 0, 2]]), Some(b"zz"))
            .unwrap();
        assert_eq!((check.matched, check.lost), (0, 1));
        assert_eq!(
            check.finish(),
            Unsettled {
                incomplete: 1,
                unclaimed: 1
            }
        );
        let no_chunk = recording(&[[4, 0, 1]]);
        assert!(check.recording(5, &no_chunk, None).is_err());
    }
}
