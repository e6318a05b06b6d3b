//! The configuration types as they appear in `gatehouse.toml`, their defaults, and loading.
//!
//! Every struct denies unknown keys: a misspelt key that is silently ignored leaves a default in
//! force that the operator believes they changed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_core::Durability;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, parse_error};
use crate::size::ByteSize;

/// The whole `gatehouse.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Ledger, keys and state. After loading, a relative path has been made relative to the
    /// config file's folder, so the gateway does not depend on the directory it was started in.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub ledger: LedgerConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceConfig>,
    /// People and machines that may sign in with an API key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityConfig>,
    /// OpenID Providers whose tokens the gateway accepts (Okta, Azure AD, Google,
    /// Keycloak, a CI system: each is just an issuer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IssuerConfig>,
    /// Cedar policies deciding who may connect and run which statement classes. Without
    /// it, everyone signed in may connect and only the resources' guardrails decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
}

/// `[policy]`: where the Cedar policies (and optionally a schema) are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A Cedar policy file. Relative to the config file's folder once loaded.
    pub policies: PathBuf,
    /// A Cedar schema file (default: the built-in `Gatehouse` schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<PathBuf>,
}

/// One `[[issuers]]` entry: an OpenID Provider and how its tokens map to identities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// A short name, recorded as the identity provider of everyone it vouches for.
    pub name: String,
    /// The issuer URL; tokens must carry exactly this `iss`, and its discovery document is
    /// `<issuer>/.well-known/openid-configuration`. https, or http on loopback only.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted (never `none`, never HMAC).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "crate::duration")]
    pub leeway: Duration,
    /// The claim holding the user name clients sign in with.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim holding the groups (an array of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// What this issuer's principals are (human for a company IdP, service for CI).
    #[serde(default = "default_issuer_kind")]
    pub kind: IdentityKind,
    /// How often the signing keys are fetched again even when no unknown key was seen.
    #[serde(default = "default_jwks_refresh", with = "crate::duration")]
    pub jwks_refresh: Duration,
    /// For machine issuers (CI): the first rule whose claims all match names the identity
    /// and its groups; a token no rule matches is refused. Empty: `username_claim` and
    /// `groups_claim` name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_rules: Vec<ClaimRule>,
}

/// `[[issuers.claim_rules]]`: e.g. tokens of repository `acme/api` on `refs/heads/main`
/// sign in as `ci:api-deploy` in group `deployers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Claim name → expected value; `*` in a value matches any run of characters. Every
    /// claim listed must be a string in the token and match.
    pub claims: std::collections::BTreeMap<String, String>,
    /// The identity such tokens sign in as (the user name clients give).
    pub identity: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_username_claim() -> String {
    "sub".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_issuer_kind() -> IdentityKind {
    IdentityKind::Human
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(3600)
}

/// One `[[identities]]` entry: a principal and the hash of its API key.
///
/// Only the hash is configured (`sha256:<hex>`, made by `gatehouse keys hash`); API keys
/// are long random strings, so a fast hash is enough and the key itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The user name clients sign in with (e.g. `alice@example.com`, `agent:reporting`).
    pub name: String,
    pub kind: IdentityKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub key_hash: String,
}

/// What sort of principal an identity is; recorded on every ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    Human,
    Agent,
    Service,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive. It is checked for being non-empty here and
    /// parsed by the binary, which is the crate that depends on `tracing-subscriber`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin HTTP API: healthz, checkpoint, metrics, reviews.
    pub listen: SocketAddr,
    /// Serve the API over TLS with this certificate. Without it the API speaks plain HTTP
    /// and refuses credentials from any host but its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<AdminTlsConfig>,
}

/// `[admin] tls = { cert = "...", key = "..." }`: the admin API's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    /// PEM certificate chain, the server's own certificate first. Relative to the config
    /// file's folder once loaded. The CLI trusts this file when it takes the admin
    /// address from the config.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
}

/// `[ledger]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// Checkpoint origin line and signing key name.
    pub origin: String,
    #[serde(with = "crate::duration")]
    pub checkpoint_interval: Duration,
    #[serde(with = "crate::duration")]
    pub heartbeat_interval: Duration,
    /// How long batched-durability appends may wait for their fsync.
    #[serde(with = "crate::duration")]
    pub batched_window: Duration,
    /// Size each segment file is preallocated to.
    pub segment_size: ByteSize,
    /// After the ledger failed to write, how often it tries to recover.
    #[serde(with = "crate::duration")]
    pub retry_interval: Duration,
    /// Larger payloads must be stored as chunks.
    pub max_entry_size: ByteSize,
    /// Keep entry bodies and recorded data this many days; older segments are pruned to
    /// their leaf hashes (the tree, checkpoints and proofs still verify) and each pruning
    /// is recorded. Unset: keep everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// One `[[resources]]` entry: a target reachable through the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub name: String,
    pub kind: ResourceKind,
    #[serde(default)]
    pub durability: Durability,
    /// Where the gateway listens for this resource's clients. Optional here; a protocol driver
    /// that needs it says so when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `host:port` of the real target; the host may be a DNS name, resolved when connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsConfig>,
    /// Guardrails: statements to deny or hold for review, decided on parsed SQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<gatehouse_sql::Rule>,
    /// What to do with a statement the SQL parser cannot read (default: deny).
    #[serde(default)]
    pub on_unparsed: gatehouse_sql::OnUnparsed,
    /// TLS towards clients. Without it, clients may sign in from loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// TLS towards the target, always verified. Without it the gateway speaks plaintext to
    /// the target, which suits loopback or a private network only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tls: Option<TargetTlsConfig>,
    /// What of each session is kept beside its entries (result data).
    #[serde(default)]
    pub recording: RecordingConfig,
    /// Sensitive values masked in results before they reach the client or the recording.
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Statements held for review: who may approve them, how many must, how long to wait.
    #[serde(default)]
    pub reviews: ReviewsConfig,
    /// For access policy: `resource.environment` (e.g. "production").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// For access policy: `resource.tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// What unauthenticated clients may cost this listener.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Startup parameters clients may set beyond the built-in safe list (PostgreSQL).
    /// Parameters that change the role, the session authorization or how SQL is read
    /// (`options`, `role`, `session_authorization`, ...) cannot be allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_parameters: Vec<String>,
}

/// `[resources.limits]`: connections a listener holds, and how many may still be signing
/// in (in total and from one source address), so a flood of clients that never sign in
/// cannot exhaust the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_connections: u32,
    pub max_startups: u32,
    pub max_startups_per_source: u32,
    /// Failed sign-ins a source address, or a claimed user name, may have in a minute
    /// before each further one makes it wait (1 s, doubling, up to 5 minutes).
    pub free_failed_sign_ins: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            max_startups: 1024,
            max_startups_per_source: 128,
            free_failed_sign_ins: 5,
        }
    }
}

/// `[resources.reviews]`: the approval of statements a rule (or a Cedar `@review` policy)
/// holds. Without approvers no one can approve, so held statements are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewsConfig {
    /// Groups whose members may approve or deny (never their own requests).
    pub approvers: Vec<String>,
    /// Approvals needed for a statement to run; any denial rejects it.
    pub approvals: u32,
    /// How long a held statement waits for its decision before it is refused.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// The admin API's address as approvers reach it, for the link in the client's notice
    /// (default: `http://` and `[admin] listen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// Webhooks told of each new review (with retries; a failure never loses the review).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyConfig>,
}

/// `[[resources.reviews.notify]]`: one webhook.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `https://` URL to POST to (`http://` only to a loopback host). A secret: whoever
    /// knows a chat webhook's URL can post to the channel, so it is never printed — not
    /// by `Debug`, not in a validation problem.
    pub url: String,
    /// `json` (the review as JSON) or `slack` (an incoming-webhook message).
    #[serde(default)]
    pub format: NotifyFormat,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("url", &"<secret>")
            .field("format", &self.format)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    #[default]
    Json,
    Slack,
}

impl Default for ReviewsConfig {
    fn default() -> Self {
        ReviewsConfig {
            approvers: Vec::new(),
            approvals: 1,
            timeout: Duration::from_secs(600),
            admin_url: None,
            notify: Vec::new(),
        }
    }
}

/// `[resources.recording]`: result data kept as content-addressed chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Store the data of each result (the rows as they left the gateway), not only its summary.
    pub results: bool,
    /// At most this much result data is stored per session; what comes after is counted in
    /// the `result` entries as truncated, never silently dropped.
    pub max_session_bytes: ByteSize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            results: true,
            max_session_bytes: ByteSize::mib(16),
        }
    }
}

/// `[resources.masking]`: what is masked in results. On by default with every built-in
/// detector, so a resource added without thinking about masking still masks what looks
/// sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskingConfig {
    pub enabled: bool,
    /// Built-in content detectors run over every text value: `"default"` (every one but
    /// the IP addresses), `"all"` or a list of names (`email`, `phone`, `payment_card`,
    /// `iban`, `us_ssn`, `ipv4`, `ipv6`, `jwt`, `private_key`, `aws_access_key`,
    /// `aws_secret_key`, `github_token`, `gitlab_token`, `slack_token`, `stripe_key`,
    /// `password`); `[]` for none.
    pub detectors: DetectorSelection,
    /// Strategy per detector kind (`email = "hash"`); the rest are redacted.
    pub strategies: BTreeMap<String, MaskStrategy>,
    /// Columns masked whole, whatever they contain.
    pub columns: Vec<ColumnMaskConfig>,
    /// User-defined detectors.
    pub patterns: Vec<PatternConfig>,
    /// Environment variable holding the key of the `hash` strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// File holding that key (relative to the config file's folder once loaded). Without
    /// either, a random key is created in the data directory on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            enabled: true,
            detectors: DetectorSelection::Default,
            strategies: BTreeMap::new(),
            columns: Vec::new(),
            patterns: Vec::new(),
            key_env: None,
            key_file: None,
        }
    }
}

/// `detectors = "default"`, `"all"` or `["email", ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DetectorWords", into = "DetectorWords")]
pub enum DetectorSelection {
    /// Every built-in detector but `ipv4` and `ipv6`: addresses in a database are mostly
    /// the operational data of `inet` columns, which masking could only turn into NULL.
    Default,
    All,
    Only(Vec<String>),
}

impl DetectorSelection {
    /// The built-in detectors `Default` leaves out.
    pub const NOT_BY_DEFAULT: [&'static str; 2] = ["ipv4", "ipv6"];
}

/// How [`DetectorSelection`] is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DetectorWords {
    Word(String),
    List(Vec<String>),
}

impl TryFrom<DetectorWords> for DetectorSelection {
    type Error = String;
    fn try_from(words: DetectorWords) -> Result<Self, String> {
        match words {
            DetectorWords::Word(w) if w == "all" => Ok(DetectorSelection::All),
            DetectorWords::Word(w) if w == "default" => Ok(DetectorSelection::Default),
            DetectorWords::Word(w) => Err(format!(
                "{w:?}: write \"default\", \"all\" or a list of detector names"
            )),
            DetectorWords::List(names) => Ok(DetectorSelection::Only(names)),
        }
    }
}

impl From<DetectorSelection> for DetectorWords {
    fn from(s: DetectorSelection) -> DetectorWords {
        match s {
            DetectorSelection::Default => DetectorWords::Word("default".into()),
            DetectorSelection::All => DetectorWords::Word("all".into()),
            DetectorSelection::Only(names) => DetectorWords::List(names),
        }
    }
}

/// A masking strategy as written: `redact`, `hash`, `null`, `partial` or `partial:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MaskStrategy(pub gatehouse_mask::Strategy);

impl TryFrom<String> for MaskStrategy {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse().map(MaskStrategy)
    }
}

impl From<MaskStrategy> for String {
    fn from(s: MaskStrategy) -> String {
        s.0.to_string()
    }
}

/// `[[resources.masking.columns]]`: one column (or a pattern of them) masked whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMaskConfig {
    /// `table.column` or `schema.table.column`; `*` and `?` match any run or one character.
    pub column: String,
    #[serde(default = "redact")]
    pub strategy: MaskStrategy,
    /// The name in redaction tokens and the ledger (default: the column part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// `[[resources.masking.patterns]]`: a user-defined detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub name: String,
    pub regex: String,
    #[serde(default = "redact")]
    pub strategy: MaskStrategy,
}

fn redact() -> MaskStrategy {
    MaskStrategy(gatehouse_mask::Strategy::Redact)
}

/// `[resources.target_tls]`: how the gateway checks the target's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTlsConfig {
    /// PEM file of the certificate authorities that may sign the target's certificate.
    /// Relative to the config file's folder once loaded.
    pub ca: PathBuf,
    /// The name the target's certificate must carry (DNS name or IP address); default:
    /// the host part of `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// `[resources.tls]`: the certificate the gateway presents to this resource's clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. Relative to the config file's folder once loaded.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Refuse clients that do not switch to TLS (default true once TLS is configured).
    #[serde(default = "yes")]
    pub require: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Postgres,
    Mysql,
    Ssh,
    Http,
    Kubernetes,
}

/// `[resources.credentials]`: how the gateway logs in to the target.
///
/// Only *where* the password is kept is configured, never the password itself, so the config
/// (and its `Debug` output) never holds a secret. See [`CredentialsConfig::password`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    pub user: String,
    /// Name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the password (trailing newlines are ignored). Relative to the config file's
    /// folder once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("gatehouse-data"),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            ledger: LedgerConfig::default(),
            resources: Vec::new(),
            identities: Vec::new(),
            issuers: Vec::new(),
            policy: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
            tls: None,
        }
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            origin: "gatehouse.local/ledger".to_owned(),
            checkpoint_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(60),
            batched_window: Duration::from_millis(5),
            segment_size: ByteSize::mib(64),
            retry_interval: Duration::from_secs(1),
            max_entry_size: ByteSize::MIB,
            retention_days: None,
        }
    }
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Human => "human",
            IdentityKind::Agent => "agent",
            IdentityKind::Service => "service",
        }
    }
}

impl std::str::FromStr for IdentityKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "human" => Ok(IdentityKind::Human),
            "agent" => Ok(IdentityKind::Agent),
            "service" => Ok(IdentityKind::Service),
            other => Err(format!(
                "{other:?} is not an identity kind (human, agent or service)"
            )),
        }
    }
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Postgres => "postgres",
            ResourceKind::Mysql => "mysql",
            ResourceKind::Ssh => "ssh",
            ResourceKind::Http => "http",
            ResourceKind::Kubernetes => "kubernetes",
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths in it are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates config text as if it had been read from `origin`: `origin` names the
    /// file in error messages, and its parent folder anchors relative paths.
    ///
    /// Validation looks at the real environment and file system (password sources must exist);
    /// use [`Config::parse_toml_str`] and [`Config::validate_with_env`] to control that.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse_toml_str(text, origin)?;
        config.validate().map_err(|problems| ConfigError::Invalid {
            file: origin.to_path_buf(),
            problems,
        })?;
        Ok(config)
    }

    /// Parses config text and resolves relative paths against `origin`'s folder, without the
    /// semantic checks of [`Config::validate`].
    pub fn parse_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|err| parse_error(origin, text, &err))?;
        config.resolve_paths(origin.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// The configuration `gatehouse demo` runs with: all defaults, no resources, and the given
    /// data folder (the demo picks a scratch folder so it never touches a real ledger).
    pub fn demo(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            ..Config::default()
        }
    }

    /// The resource called `name`, if any.
    pub fn resource(&self, name: &str) -> Option<&ResourceConfig> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// Makes relative paths relative to `base` (the config file's folder). Absolute paths, and
    /// everything when `base` is empty, stay as they are.
    fn resolve_paths(&mut self, base: &Path) {
        let anchor = |path: &mut PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        };
        anchor(&mut self.data_dir);
        if let Some(tls) = self.admin.tls.as_mut() {
            anchor(&mut tls.cert);
            anchor(&mut tls.key);
        }
        if let Some(policy) = self.policy.as_mut() {
            anchor(&mut policy.policies);
            if let Some(schema) = policy.schema.as_mut() {
                anchor(schema);
            }
        }
        for resource in &mut self.resources {
            if let Some(file) = resource
                .credentials
                .as_mut()
                .and_then(|c| c.password_file.as_mut())
            {
                anchor(file);
            }
            if let Some(tls) = resource.tls.as_mut() {
                anchor(&mut tls.cert);
                anchor(&mut tls.key);
            }
            if let Some(tls) = resource.target_tls.as_mut() {
                anchor(&mut tls.ca);
            }
            if let Some(file) = resource.masking.key_file.as_mut() {
                anchor(file);
            }
        }
    }
}
