//! Content-addressed chunk files for payloads too large for an entry line.
//!
//! A chunk is stored once under its SHA-256 and made durable before the entry that
//! references it is appended, so a durable entry never points at a missing chunk. Chunks
//! hold recorded query results: they and their fan-out directories are private to the
//! gateway's user (0600 files, 0700 directories).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use gatehouse_core::ChunkRef;
use sha2::{Digest, Sha256};

use crate::error::LedgerError;
use crate::fsutil::{create_private_dirs, write_atomic};
use crate::layout::Layout;

/// Stores `bytes` as a chunk (once per content) and returns its reference.
pub fn put_chunk(layout: &Layout, bytes: &[u8]) -> Result<ChunkRef, LedgerError> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let path = layout.chunk(&sha256);
    let chunk = ChunkRef {
        sha256,
        size: bytes.len() as u64,
    };
    if let Ok(meta) = fs::metadata(&path)
        && meta.len() == chunk.size
    {
        return Ok(chunk);
    }
    let dir = path.parent().unwrap_or(layout.root());
    create_private_dirs(layout.root(), dir)?;
    write_atomic(&path, bytes)?;
    Ok(chunk)
}

/// Reads a chunk back, checking its size and hash.
pub fn read_chunk(layout: &Layout, chunk: &ChunkRef) -> Result<Vec<u8>, String> {
    let path = layout.chunk(&chunk.sha256);
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("chunk {}: {e}", path.display()))?;
    check_bytes(&path, chunk, &bytes)?;
    Ok(bytes)
}

fn check_bytes(path: &Path, chunk: &ChunkRef, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() as u64 != chunk.size {
        return Err(format!(
            "chunk {}: {} bytes on disk, the entry says {}",
            path.display(),
            bytes.len(),
            chunk.size
        ));
    }
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != chunk.sha256 {
        return Err(format!(
            "chunk {}: content hashes to {actual}, not to its name",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_stored_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let a = put_chunk(&layout, b"hello").unwrap();
        let again = put_chunk(&layout, b"hello").unwrap();
        assert_eq!(a, again);
        assert_eq!(
            a.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(read_chunk(&layout, &a).unwrap(), b"hello");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = layout.chunk(&a.sha256);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&layout.chunks()), 0o700);
        fs::write(layout.chunk(&a.sha256), b"hellO").unwrap();
        let err = read_chunk(&layout, &a).unwrap_err();
        assert!(err.contains("hashes to"), "{err}");
    }
}
