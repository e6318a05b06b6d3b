//! Command-line syntax: every subcommand, its flags and its help text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Gatehouse: an identity-aware access gateway that records every session in a
/// tamper-evident, offline-verifiable ledger.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Log format on stderr [default: `log.format` from the config, else text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway from a configuration file until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Run the gateway on a built-in configuration with a local data directory.
    Demo(DemoArgs),
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect, verify, prove and benchmark the audit ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Sign in at an OpenID Provider (device flow, or `--browser` for the authorization code
    /// with PKCE); the token is kept (mode 0600) for `gatehouse token`.
    Login(LoginArgs),
    /// Print a valid token for scripts (refreshed first when it nears expiry):
    /// `PGPASSWORD=$(gatehouse token) psql ...`.
    Token,
    /// Check Cedar policies and explain decisions offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage API keys: keys kept in the state store (create, list, revoke), and keys and
    /// hashes for `[[identities]]` in the config (generate, hash).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// List, show, approve or deny statements held for review, through a running gateway's
    /// admin API. Signs in as `--as NAME` with the key in GATEHOUSE_KEY (an API key or an
    /// OIDC token), else with the token kept by `gatehouse login`.
    Reviews(ReviewsArgs),
    /// Ask for access to a resource you may not connect to, for a while: it goes to the
    /// resource's approvers as a review and, approved, ends by itself.
    Access(AccessArgs),
    /// Replay a recorded session from the ledger, offline: who connected, each statement
    /// with its decision and timing, the rows the client saw (masked as recorded),
    /// approvals, the end. Without a session id, list the sessions.
    Replay(ReplayArgs),
    /// Evidence for auditors, offline from the ledger.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Export the entries of a time window, filtered by identity or resource. The default
    /// format, `bundle`, can be checked offline for completeness with `verify-export`;
    /// JSON lines, OCSF and CSV rows carry each entry's ledger index and leaf hash.
    Export(ExportArgs),
    /// Check an evidence bundle offline against the ledger's public key: the signed
    /// checkpoint, the proof linking the entries to it, the window's edges, the filter
    /// re-applied and the recorded data. Exits 1 and names what is wrong if anything is.
    VerifyExport(VerifyExportArgs),
    /// Write the auditor's report of a window as one self-contained HTML file: the
    /// ledger's verification, a summary per SOC 2 criterion, activity charts, sessions,
    /// privileged commands with their approval chains, denials, masking and changes.
    Report(ReportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExportFormat {
    /// Evidence bundle: the window's entries with the proof of their completeness, the
    /// signed checkpoint and the matching entries' recorded data.
    Bundle,
    /// One JSON object per line: the entry as recorded, plus `leaf`.
    Jsonl,
    /// OCSF 1.3.0 events, one per line (Authentication, Datastore Activity, User Access
    /// Management, Account Change, ...), each carrying its ledger index and leaf hash.
    Ocsf,
    /// index, time, kind, identity, resource, session, summary, leaf.
    Csv,
}

/// The entries an export or report takes.
#[derive(Debug, Args)]
pub(crate) struct WindowArgs {
    /// The gateway's data directory (the one holding `ledger/`).
    #[arg(long, default_value = "gatehouse-data")]
    pub data_dir: PathBuf,
    /// From (inclusive): RFC 3339 (`2026-11-01T00:00:00Z`) or a duration ago (`24h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Until (exclusive): RFC 3339 or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// Only entries by this identity.
    #[arg(long)]
    pub user: Option<String>,
    /// Only entries about this resource.
    #[arg(long)]
    pub resource: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    #[arg(long, value_enum, default_value = "bundle")]
    pub format: ExportFormat,
    /// Bundle only: reduce the window's entries that the filter does not take to their
    /// hashes. Their place stays proven, but the filter can no longer be re-applied to
    /// them, so completeness rests on the exporter's word for those.
    #[arg(long)]
    pub withhold_others: bool,
    /// Write here (replaced only once the export is complete) instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// The ledger's verifier key (`name+id+key`) or `@FILE`, for an independent check.
    /// Default: the key in the data directory, which cannot catch a forger who replaced it.
    #[arg(long)]
    pub pubkey: Option<String>,
    /// The report's title.
    #[arg(long, default_value = "Gatehouse access evidence")]
    pub title: String,
    /// The HTML file to write.
    #[arg(long, short, default_value = "report.html")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyExportArgs {
    /// The bundle written by `gatehouse audit export`.
    pub file: PathBuf,
    /// The ledger's verifier key (`name+id+key`, as printed by `gatehouse ledger pubkey`),
    /// or `@FILE`. Take it from the gateway's operator, not from the bundle's sender.
    #[arg(long)]
    pub pubkey: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The session (`s-...`, as in the ledger's entries and the gateway's log).
    pub session: Option<String>,
    /// The gateway's data directory (the one holding `ledger/`).
    #[arg(long, default_value = "gatehouse-data")]
    pub data_dir: PathBuf,
    /// Replay in time: wait between steps as the session did, this many times faster
    /// (1 = real time). Default: print at once.
    #[arg(long)]
    pub speed: Option<f64>,
}

/// Where the admin API is and who signs in to it.
#[derive(Debug, Args)]
pub(crate) struct ApiArgs {
    /// The admin API, e.g. https://gatehouse.internal:8443 or http://127.0.0.1:8080
    /// [default: `[admin] listen` of --config, https when it has `tls`]. Your key is sent
    /// over http:// only to this host (loopback).
    #[arg(long, env = "GATEHOUSE_ADMIN_URL", global = true)]
    pub admin: Option<String>,
    /// The configuration file to take the admin address (and, with `[admin] tls`, the
    /// certificate to trust) from.
    #[arg(long, short, default_value = "gatehouse.toml", global = true)]
    pub config: PathBuf,
    /// PEM certificates to trust for an https:// admin API, instead of the system's
    /// [default: `[admin] tls.cert` of --config when the address comes from it].
    #[arg(long, value_name = "FILE", env = "GATEHOUSE_ADMIN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Your identity's name.
    #[arg(
        long = "as",
        value_name = "NAME",
        env = "GATEHOUSE_USER",
        global = true
    )]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AccessArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: AccessCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AccessCommand {
    /// Ask for access: `gatehouse access request pg-prod --for 2h --reason "incident 4711"`.
    Request {
        /// The resource's name, as in the gateway's config.
        resource: String,
        /// How long (e.g. 2h; at most 7days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why; the approvers see it.
        #[arg(long)]
        reason: String,
        /// Wait for the decision and exit 0 only if access was granted.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ReviewsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: ReviewsCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReviewsCommand {
    /// Reviews waiting for a decision (`--all`: decided ones of the last hour too).
    List {
        #[arg(long)]
        all: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One review in full, as JSON.
    Show { id: String },
    /// Approve a held statement (never your own).
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Also let later statements of the same rule, from the same identity on the same
        /// resource, run without a review for this long (e.g. 2h; at most 7days).
        #[arg(long = "for", value_name = "DURATION")]
        grant: Option<String>,
    },
    /// Deny a held statement; the client gets your name and reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The provider: its issuer URL, or the name of an `[[issuers]]` entry in the config.
    #[arg(long)]
    pub issuer: String,
    /// The configuration file to look an issuer name up in.
    #[arg(long, short, default_value = "gatehouse.toml")]
    pub config: PathBuf,
    /// The public client registered at the provider for Gatehouse's CLI.
    #[arg(long, default_value = "gatehouse-cli")]
    pub client_id: String,
    /// Scopes to ask for; `offline_access` gets a refresh token.
    #[arg(long, default_value = "openid offline_access")]
    pub scope: String,
    /// Sign in in a browser on this machine (authorization code with PKCE, redirected to a
    /// loopback port) instead of the device flow.
    #[arg(long)]
    pub browser: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Parse and validate a policy file against its schema; exit 1 naming the file, the
    /// policy and the problem.
    Check(PolicyFiles),
    /// Decide one request offline and say which policies decided it (JSON).
    Eval(PolicyEvalArgs),
}

/// Which policy and schema files: given directly, or the `[policy]` of a config.
#[derive(Debug, Args)]
pub(crate) struct PolicyFiles {
    /// A Cedar policy file [default: `policy.policies` of the config].
    pub policies: Option<PathBuf>,
    /// A Cedar schema file [default: `policy.schema` of the config, else the built-in one].
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// The configuration file whose `[policy]` to use when no file is given.
    #[arg(long, short, default_value = "gatehouse.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct PolicyEvalArgs {
    /// Who asks: an identity name.
    #[arg(long)]
    pub principal: String,
    /// Its groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// What it is.
    #[arg(long, value_enum, default_value = "human")]
    pub kind: KeyKind,
    /// `connect`; leave out with --sql (each statement's class is the action).
    #[arg(long, required_unless_present = "sql", conflicts_with = "sql")]
    pub action: Option<String>,
    /// The resource's name.
    #[arg(long)]
    pub resource: String,
    /// The resource's kind.
    #[arg(long, default_value = "postgres")]
    pub resource_kind: String,
    /// SQL to decide (parsed and classified as the gateway does).
    #[arg(long)]
    pub sql: Option<String>,
    #[command(flatten)]
    pub files: PolicyFiles,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a managed API key (for an agent, a service or a person) in the state store.
    /// Prints the key once on standard output; only its hash is kept. The gateway accepts
    /// it from the next sign-in, without a restart.
    Create(KeysCreateArgs),
    /// List the managed API keys: id, identity, kind, groups, creation, expiry and status
    /// (never the keys).
    List(KeysListArgs),
    /// Revoke a managed API key: sign-ins with it are refused from the next connection.
    Revoke(KeysRevokeArgs),
    /// Create a new random API key and print it with its hash and a config snippet.
    Generate {
        /// The identity the key is for (used in the printed config snippet).
        #[arg(long, default_value = "someone@example.com")]
        name: String,
    },
    /// Hash an API key read from standard input (so it stays out of shell history).
    Hash,
}

/// Where the state store is: the `data_dir` of a config file, or a data directory given
/// directly.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The gateway's configuration file; its `data_dir` holds the state store.
    #[arg(long, short, default_value = "gatehouse.toml")]
    pub config: PathBuf,
    /// The gateway's data directory (instead of reading it from the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct KeysCreateArgs {
    /// The identity the key signs in as: the user name its clients give
    /// (e.g. `agent:reporting`, `ci:deploy`).
    #[arg(long)]
    pub name: String,
    /// What the identity is [default: the part of the name before `:` if that is human,
    /// agent or service, else agent].
    #[arg(long, value_enum)]
    pub kind: Option<KeyKind>,
    /// Groups the identity belongs to, comma-separated (guardrails and policy use them).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// How long the key is valid (`24h`, `90d`), or `never`.
    #[arg(long, default_value = "30d")]
    pub ttl: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyKind {
    Human,
    Agent,
    Service,
}

#[derive(Debug, Args)]
pub(crate) struct KeysListArgs {
    /// One JSON object per key instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct KeysRevokeArgs {
    /// The key's id (as `keys list` shows it, or the part after `ghk_` in the key).
    pub id: String,
    /// Why, kept with the key.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "gatehouse.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Data directory for the demo's ledger and keys (created if missing).
    #[arg(long, default_value = "gatehouse-demo")]
    pub data_dir: PathBuf,
    /// Address of the admin API; if taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub admin: SocketAddr,
    /// Where the demo PostgreSQL resource listens; if taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub postgres: SocketAddr,
    /// Stop by itself after this long (e.g. `10s`) instead of waiting for Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a configuration file; exits non-zero and lists every problem if invalid.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
    /// Print the public verifier key of a ledger (give it to auditors).
    Pubkey(DataDirArg),
    /// Check a ledger offline: every entry, the Merkle tree, every checkpoint signature,
    /// checkpoint consistency and chunk hashes. Prints a JSON summary; exit 0 if intact.
    Verify(VerifyArgs),
    /// Append synthetic events through the real durable path and report throughput and
    /// acknowledgement latency as a JSON line.
    Bench(BenchArgs),
    /// Print an inclusion proof for one entry against the newest checkpoint (JSON).
    Proof(ProofArgs),
    /// Check an inclusion proof made by `ledger proof`, offline, with a trusted key.
    VerifyProof(VerifyProofArgs),
    /// Open and close a ledger: repairs a crash tail and records the recovery, like a
    /// gateway start would.
    Recover(DataDirArg),
    /// Prune entries older than a duration to their leaf hashes (what `[ledger]
    /// retention_days` does in a running gateway, every hour): their bodies and recorded
    /// data go, the tree stays, so checkpoints, proofs and exports still verify. The
    /// pruning is recorded in the ledger. Needs the gateway stopped (it holds the ledger).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// The gateway's data directory (the one holding `ledger/`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Keep this much history: `90d`, `2weeks`, `36h`. Whole segments older than this go.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: std::time::Duration,
}

#[derive(Debug, Args)]
pub(crate) struct DataDirArg {
    /// The gateway's data directory (the one holding `ledger/`).
    #[arg(long)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The gateway's data directory (the one holding `ledger/`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Trusted verifier key (`name+id+key`, as printed by `ledger pubkey`), or `@FILE`.
    /// Without it the key stored in the data directory is used, which cannot detect a
    /// forger who also replaced that key.
    #[arg(long)]
    pub pubkey: Option<String>,
    /// A checkpoint note kept from earlier (e.g. saved from `/api/ledger/checkpoint`) that
    /// the entries must still match; catches a history rewritten with the key. Repeatable.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Data directory to write into (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Number of events to append.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Number of concurrent writers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Approximate size of each entry line in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Durability of every append.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    pub durability: DurabilityArg,
    /// Offered load in events per second (open loop); unlimited when absent.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Write `index leaf_hash` of every acknowledged append to this file as it happens
    /// (used by the crash tests).
    #[arg(long)]
    pub ack_log: Option<PathBuf>,
    /// Segment size in bytes for a new ledger.
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DurabilityArg {
    Sync,
    Batched,
}

#[derive(Debug, Args)]
pub(crate) struct ProofArgs {
    /// The gateway's data directory (the one holding `ledger/`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Index of the entry to prove.
    #[arg(long)]
    pub index: u64,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyProofArgs {
    /// The proof file made by `ledger proof`; `-` reads standard input.
    #[arg(default_value = "-")]
    pub proof: PathBuf,
    /// Trusted verifier key (`name+id+key`), or `@FILE`.
    #[arg(long)]
    pub pubkey: String,
}
