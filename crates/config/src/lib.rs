//! `gatehouse-config`: the typed `gatehouse.toml` — its types and defaults, loading with errors
//! that name the file, line and key, one `validate()` for every semantic check, and password
//! lookup that keeps secrets out of every printed form.

mod duration;
mod error;
mod model;
mod secret;
mod size;
mod validate;

pub use validate::TOKEN_ALGORITHMS;

pub use error::{ConfigError, Problem};
pub use gatehouse_core::Durability;
pub use model::{
    AdminConfig, AdminTlsConfig, ClaimRule, ColumnMaskConfig, Config, CredentialsConfig,
    DetectorSelection, IdentityConfig, IdentityKind, IssuerConfig, LedgerConfig, LimitsConfig,
    LogConfig, LogFormat, MaskStrategy, MaskingConfig, NotifyConfig, NotifyFormat, PatternConfig,
    PolicyConfig, RecordingConfig, ResourceConfig, ResourceKind, ReviewsConfig, TargetTlsConfig,
    TlsConfig,
};
pub use secret::{EnvLookup, Secret, process_env};
pub use size::{ByteSize, ParseByteSizeError};

/// The config file's name when none is given on the command line.
pub const DEFAULT_FILE: &str = "gatehouse.toml";
