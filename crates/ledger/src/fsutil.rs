//! Small durable-file helpers: atomic replace, directory fsync, private files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{IoContext, LedgerError};

/// Fsyncs a directory so that a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LedgerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .at(&tmp)?;
        file.write_all(bytes).at(&tmp)?;
        file.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)?;
    sync_dir(dir)
}

/// Creates `path` with `bytes`, readable only by the owner, failing if it exists.
pub fn create_private(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .at(path)?;
    file.write_all(bytes).at(path)?;
    file.sync_all().at(path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
