//! Process limits the gateway raises for itself when it starts serving.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit. Every session holds two sockets
/// (client and target), so the common default soft limit of 1024 would stop a gateway at
/// about 500 sessions with `accept` failing; the hard limit is what the administrator
/// allows. Returns the (old, new) soft limits when it changed anything.
pub(crate) fn raise_open_files() -> Result<Option<(u64, u64)>, String> {
    let mut limit = getrlimit(Resource::Nofile);
    let Some(soft) = limit.current else {
        return Ok(None); // already unlimited
    };
    let target = limit.maximum.unwrap_or(u64::MAX);
    if soft >= target {
        return Ok(None);
    }
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit)
        .map_err(|e| format!("cannot raise the open-file limit from {soft} to {target}: {e}"))?;
    Ok(Some((soft, target)))
}
