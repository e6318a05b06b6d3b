//! Structured logging setup: text or JSON lines on stderr, filtered like `RUST_LOG`.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `RUST_LOG` wins over `default_filter`.
pub(crate) fn init(
    format: LogFormat,
    default_filter: &str,
    with_target: bool,
) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(&value).context("RUST_LOG")?,
        _ => EnvFilter::try_new(default_filter)
            .with_context(|| format!("log.level {default_filter:?} is not a valid filter"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(with_target);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
