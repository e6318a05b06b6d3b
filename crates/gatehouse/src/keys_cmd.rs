//! `gatehouse keys ...`: managed API keys in the state store, and keys and hashes for the
//! config's `[[identities]]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use gatehouse_config::{Config, IdentityKind};
use gatehouse_identity::{hash_key, new_managed_key, unix_now};
use gatehouse_store::{ManagedKey, Store};

use crate::cli::{KeyKind, KeysCommand, KeysCreateArgs, StoreArgs};

pub(crate) async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => create(args).await,
        KeysCommand::List(args) => {
            let store = open_store(&args.store).await?;
            let keys = store.keys().await?;
            let now = unix_now();
            if args.json {
                let mut text = String::new();
                for key in &keys {
                    let mut value = serde_json::to_value(key)?;
                    value["status"] = status(key, now).into();
                    text.push_str(&value.to_string());
                    text.push('\n');
                }
                crate::write_stdout(&text);
            } else {
                crate::write_stdout(&table(&keys, now));
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke(args) => {
            let store = open_store(&args.store).await?;
            let key = store
                .revoke_key(&args.id, args.reason.as_deref(), unix_now(), &operator())
                .await?;
            eprintln!(
                "revoked key {} of {}; sign-ins with it are refused from now on",
                key.id, key.name
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Generate { name } => {
            let key = gatehouse_identity::generate_key().map_err(anyhow::Error::msg)?;
            let hash = hash_key(&key);
            // One write, so that a reader keeping only the first line still gets it whole.
            outln!(
                "API key (shown once; give it to its owner): {key}\n\nAdd to gatehouse.toml:\n\n\
                 [[identities]]\nname = \"{name}\"\nkind = \"human\"\ngroups = []\nkey_hash = \"{hash}\""
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut key)?;
            let key = key.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!key.is_empty(), "no key on standard input");
            outln!("{}", hash_key(key));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(args: KeysCreateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.name.trim().is_empty() && args.name.trim() == args.name && !args.name.contains('/'),
        "--name: give the identity's user name, without surrounding spaces and without '/' \
         (kept for identities from an OpenID Provider)"
    );
    let ttl = parse_ttl(&args.ttl)?;
    let kind = args
        .kind
        .map_or_else(|| kind_from_name(&args.name), to_kind);
    let groups: Vec<String> = args
        .groups
        .iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    let store = open_store(&args.store).await?;
    let (id, key) = new_managed_key().map_err(anyhow::Error::msg)?;
    let now = unix_now();
    let stored = ManagedKey {
        id,
        name: args.name.clone(),
        kind,
        groups,
        key_hash: hash_key(&key),
        created_at: now,
        expires_at: ttl.map(|t| now.saturating_add(t.as_secs() as i64)),
        revoked_at: None,
        revoked_reason: None,
    };
    store.insert_key(&stored, &operator()).await?;
    // The key alone on stdout, so `KEY=$(gatehouse keys create ...)` captures just it.
    outln!("{key}");
    eprintln!(
        "created key {} for {} ({}, groups: {}), {}; it is shown only this once",
        stored.id,
        stored.name,
        kind.as_str(),
        if stored.groups.is_empty() {
            "none".to_string()
        } else {
            stored.groups.join(",")
        },
        match stored.expires_at {
            Some(at) => format!("valid until {}", rfc3339(at)),
            None => "never expires".to_string(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Who ran the command, as the ledger will say: the operating-system user on this host.
fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("cli:{user}")
}

/// `30d`, `24h`, ... or `never` (no expiry).
fn parse_ttl(text: &str) -> anyhow::Result<Option<Duration>> {
    if text == "never" {
        return Ok(None);
    }
    let ttl = humantime::parse_duration(text)
        .with_context(|| format!("--ttl {text:?}: give a duration such as 24h or 90d, or never"))?;
    anyhow::ensure!(!ttl.is_zero(), "--ttl: a key valid for no time at all");
    Ok(Some(ttl))
}

fn kind_from_name(name: &str) -> IdentityKind {
    name.split_once(':')
        .and_then(|(prefix, _)| prefix.parse().ok())
        .unwrap_or(IdentityKind::Agent)
}

fn to_kind(kind: KeyKind) -> IdentityKind {
    match kind {
        KeyKind::Human => IdentityKind::Human,
        KeyKind::Agent => IdentityKind::Agent,
        KeyKind::Service => IdentityKind::Service,
    }
}

/// Opens the store named by `--data-dir`, or by the config's `data_dir`.
async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => data_dir_of(&args.config)?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    Ok(Store::open_in(&data_dir).await?)
}

/// The `data_dir` of a config file. Only parsed, not validated: managing keys must not need
/// the target passwords the gateway itself needs.
fn data_dir_of(config: &PathBuf) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(config).with_context(|| {
        format!(
            "reading {} (give --config FILE or --data-dir DIR)",
            config.display()
        )
    })?;
    Ok(Config::parse_toml_str(&text, config)?.data_dir)
}

fn status(key: &ManagedKey, now: i64) -> &'static str {
    if key.revoked_at.is_some() {
        "revoked"
    } else if key.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

fn rfc3339(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn table(keys: &[ManagedKey], now: i64) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "NAME".to_string(),
        "KIND".to_string(),
        "GROUPS".to_string(),
        "CREATED".to_string(),
        "EXPIRES".to_string(),
        "STATUS".to_string(),
    ]];
    for key in keys {
        rows.push([
            key.id.clone(),
            key.name.clone(),
            key.kind.as_str().to_string(),
            key.groups.join(","),
            rfc3339(key.created_at),
            key.expires_at.map_or("never".to_string(), rfc3339),
            status(key, now).to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_kind_defaults() {
        assert_eq!(parse_ttl("24h").unwrap(), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("never").unwrap(), None);
        assert!(parse_ttl("soon").unwrap_err().to_string().contains("--ttl"));
        assert!(parse_ttl("0s").is_err());
        assert_eq!(kind_from_name("service:ci"), IdentityKind::Service);
        assert_eq!(kind_from_name("human:bob"), IdentityKind::Human);
        assert_eq!(kind_from_name("agent:reporting"), IdentityKind::Agent);
        assert_eq!(kind_from_name("reporting-bot"), IdentityKind::Agent);
    }
}
