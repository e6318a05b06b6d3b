//! Small durable-file helpers: atomic replace, directory fsync, private files and
//! directories, and tightening the modes of a ledger written by an older version.
//!
//! Everything under the ledger directory is for the gateway's user alone: files are 0600
//! and directories 0700, so another local user can neither read recorded data nor tell
//! from file names and sizes what was recorded.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LedgerError};

/// Mode of every file the ledger creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Mode of every directory the ledger creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Permission bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// Fsyncs a directory so that a rename or create inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Replaces `path` with `bytes` (mode 0600) so that a crash leaves either the old or the
/// new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .at(&tmp)?;
        // The mode above applies only to a file created now; a temporary file a crash
        // left behind keeps its own, and the rename would carry it over.
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .at(&tmp)?;
        file.write_all(bytes).at(&tmp)?;
        file.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)?;
    sync_dir(dir)
}

/// Creates `path` with `bytes`, readable only by the owner, failing if it exists.
pub(crate) fn create_private(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .at(path)?;
    file.write_all(bytes).at(path)?;
    file.sync_all().at(path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Creates `dir` and any missing parents inside the ledger directory `ledger_root` with
/// mode 0700. Parents above the ledger directory (the gateway's data directory) are
/// created with the default mode: they are not the ledger's to restrict.
pub(crate) fn create_private_dirs(ledger_root: &Path, dir: &Path) -> Result<(), LedgerError> {
    if let Some(outside) = ledger_root.parent()
        && !outside.as_os_str().is_empty()
    {
        fs::create_dir_all(outside).at(outside)?;
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .at(dir)
}

/// What [`tighten_modes`] changed.
#[derive(Debug, Default)]
pub(crate) struct Tightened {
    pub files: u64,
    pub dirs: u64,
    /// The first few paths changed, for the log.
    pub examples: Vec<PathBuf>,
}

/// Takes group and other permissions away from every file and directory under `root`
/// (and `root` itself), except the paths in `skip`. A ledger written by an older version
/// has 0644 files and 0755 directories.
///
/// Symbolic links are left alone: changing the mode would change what they point to.
pub(crate) fn tighten_modes(root: &Path, skip: &[PathBuf]) -> Result<Tightened, LedgerError> {
    let mut done = Tightened::default();
    tighten(root, true, &mut done)?;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for item in fs::read_dir(&dir).at(&dir)? {
            let path = item.at(&dir)?.path();
            if skip.contains(&path) {
                continue;
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Removed meanwhile (a spare segment being replaced); nothing to tighten.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LedgerError::io(path, e)),
            };
            if meta.is_dir() {
                tighten(&path, true, &mut done)?;
                dirs.push(path);
            } else if meta.is_file() {
                tighten(&path, false, &mut done)?;
            }
        }
    }
    Ok(done)
}

fn tighten(path: &Path, is_dir: bool, done: &mut Tightened) -> Result<(), LedgerError> {
    let mode = fs::symlink_metadata(path).at(path)?.permissions().mode();
    if mode & OTHERS == 0 {
        return Ok(());
    }
    fs::set_permissions(path, Permissions::from_mode(mode & !OTHERS)).at(path)?;
    if is_dir {
        done.dirs += 1;
    } else {
        done.files += 1;
    }
    if done.examples.len() < 5 {
        done.examples.push(path.to_path_buf());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn loose_modes_are_tightened_but_skipped_paths_and_link_targets_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ledger");
        let sub = root.join("chunks").join("ab");
        create_private_dirs(&root, &sub).unwrap();
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&sub), DIR_MODE);

        let loose = sub.join("file");
        fs::write(&loose, b"x").unwrap();
        fs::set_permissions(&loose, Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&sub, Permissions::from_mode(0o755)).unwrap();
        let skipped = root.join("skipped");
        fs::write(&skipped, b"x").unwrap();
        fs::set_permissions(&skipped, Permissions::from_mode(0o644)).unwrap();
        // A link to a file outside the ledger: following it would change someone else's file.
        let outside = dir.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        let done = tighten_modes(&root, std::slice::from_ref(&skipped)).unwrap();
        assert_eq!((done.files, done.dirs), (1, 1));
        assert_eq!(mode(&loose), 0o600);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&skipped), 0o644);
        assert_eq!(mode(&outside), 0o644);
        let again = tighten_modes(&root, &[skipped]).unwrap();
        assert_eq!((again.files, again.dirs), (0, 0));
    }

    #[test]
    fn an_atomic_replace_is_private_even_over_a_loose_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, b"left by a crash").unwrap();
        fs::set_permissions(&tmp, Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(mode(&path), FILE_MODE);
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }
}
