//! `ConfigError` and `Problem`: what went wrong with a config file, said in terms of the file, the
//! line and the key so the operator can go straight to it.
//!
//! toml reports a byte span and serde's wording ("unknown field `x`"); this module turns the span
//! into `line:column`, finds the key path at that span, and rewords the common serde messages.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One thing wrong with a config: where (`resources[1].credentials.password_env`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem seen from an enclosing table: `password_env` within
    /// `resources[1].credentials` becomes `resources[1].credentials.password_env`.
    /// An empty key means the enclosing table itself.
    pub fn within(mut self, prefix: &str) -> Self {
        self.key = match (prefix.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{}", self.key),
        };
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for Problem {}

/// Loading a config failed. `Display` starts every line with the file name.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },

    /// The text is not TOML, or does not fit the config's shape (unknown key, wrong type, bad
    /// duration or size). `line`/`column` are 1-based; `column` counts characters.
    #[error("{}", render_parse(file, *line, *column, key.as_deref(), message))]
    Parse {
        file: PathBuf,
        key: Option<String>,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// The file parsed but some values make no sense together; all problems found are listed.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Parse { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }
}

fn render_parse(
    file: &Path,
    line: Option<usize>,
    column: Option<usize>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
        if let Some(column) = column {
            out.push_str(&format!(":{column}"));
        }
    }
    out.push_str(": ");
    if let Some(key) = key {
        out.push_str(key);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

fn render_problems(file: &Path, problems: &[Problem]) -> String {
    let file = file.display();
    problems
        .iter()
        .map(|p| format!("{file}: {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Converts toml's error into [`ConfigError::Parse`] for `text`, read from `file`.
pub(crate) fn parse_error(file: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span();
    let (line, column) = match &span {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let mut key = span.as_ref().and_then(|span| key_at(text, span));
    // toml messages are single line today; keep ours one line per error even if that changes.
    let raw = err.message().trim().replace('\n', "; ");
    let message = match missing_field(&raw) {
        // The span of a missing key is its table, so name the missing key itself.
        Some(field) => {
            key = Some(match key {
                Some(table) => format!("{table}.{field}"),
                None => field.to_owned(),
            });
            "required key is missing".to_owned()
        }
        None => reword(&raw),
    };
    ConfigError::Parse {
        file: file.to_path_buf(),
        key,
        line,
        column,
        message,
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key path (`resources[1].credentials.user`) of the smallest key or value whose span
/// holds the error's start. The tree is re-parsed with recovery so that even syntax errors
/// usually get a key.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let (root, _) = DeTable::parse_recoverable(text);
    let mut best: Option<(usize, String)> = None;
    visit_table(root.get_ref(), "", span.start, &mut best);
    best.map(|(_, path)| path)
}

/// Visits every table, whether or not its own span holds the offset: a table opened by a
/// `[header]` does not span the keys below the header.
fn visit_table(
    table: &DeTable<'_>,
    prefix: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        consider(&key.span(), &path, offset, best);
        visit_value(value, path, offset, best);
    }
}

fn visit_value(
    value: &Spanned<DeValue<'_>>,
    path: String,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    consider(&value.span(), &path, offset, best);
    match value.get_ref() {
        DeValue::Table(table) => visit_table(table, &path, offset, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                visit_value(item, format!("{path}[{i}]"), offset, best);
            }
        }
        _ => {}
    }
}

/// Keeps `path` if its span holds `offset` and is smaller than the best so far; on a tie the
/// later (deeper) path wins, since it was visited inside the earlier one.
fn consider(span: &Range<usize>, path: &str, offset: usize, best: &mut Option<(usize, String)>) {
    let holds =
        span.start <= offset && (offset < span.end || span.is_empty() && offset == span.start);
    if !holds {
        return;
    }
    let len = span.end - span.start;
    if best.as_ref().is_none_or(|(best_len, _)| len <= *best_len) {
        *best = Some((len, path.to_owned()));
    }
}

/// `missing field `user`` → `user`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

/// Rewords serde's messages into the config's vocabulary ("key" rather than "field"), dropping
/// the backticks around alternatives so the list reads like the file.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected = rest.split_once("`, ").map_or("", |(_, tail)| tail);
        return format!("unknown key; {}", expected_list(expected));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, tail) = rest
            .split_once("`, ")
            .unwrap_or((rest.trim_end_matches('`'), ""));
        return format!("unknown value {value:?}; {}", expected_list(tail));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!("wrong type: expected {}, found {found}", plain(expected));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!("invalid value {found}; expected {}", plain(expected));
    }
    if message == "invalid socket address syntax" {
        // std's SocketAddr parser takes no host names; say so, since "localhost:80" is the
        // first thing people try.
        return format!("{message}; write ip:port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"");
    }
    message.to_owned()
}

/// Serde names Rust types ("usize", "struct LogConfig"); say what to write in TOML instead.
fn plain(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer".to_owned(),
        "a sequence" => "an array".to_owned(),
        "path string" => "a path string".to_owned(),
        _ if expected.starts_with("struct ") => "a table".to_owned(),
        _ => expected.to_owned(),
    }
}

/// `expected one of `a`, `b`` → `expected one of a, b`; serde's "there are no fields" → "this
/// table takes no keys".
fn expected_list(tail: &str) -> String {
    if tail.is_empty() || tail.starts_with("there are no") {
        return "this table takes no keys".to_owned();
    }
    tail.replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn rewords_serde_messages() {
        assert_eq!(
            reword("unknown field `segment_sise`, expected one of `origin`, `max_batch`"),
            "unknown key; expected one of origin, max_batch"
        );
        assert_eq!(
            reword("unknown field `x`, expected `listen`"),
            "unknown key; expected listen"
        );
        assert_eq!(
            reword("unknown variant `pg`, expected one of `postgres`, `mysql`"),
            "unknown value \"pg\"; expected one of postgres, mysql"
        );
        assert_eq!(
            reword("invalid type: string \"x\", expected usize"),
            "wrong type: expected a non-negative integer, found string \"x\""
        );
        assert_eq!(
            reword("invalid type: integer `3`, expected struct LogConfig"),
            "wrong type: expected a table, found integer `3`"
        );
        assert_eq!(
            reword("invalid value: integer `-1`, expected usize"),
            "invalid value integer `-1`; expected a non-negative integer"
        );
        assert_eq!(missing_field("missing field `user`"), Some("user"));
    }

    #[test]
    fn renders_one_line_per_problem() {
        let err = ConfigError::Invalid {
            file: PathBuf::from("gatehouse.toml"),
            problems: vec![Problem::new("a", "bad"), Problem::new("b.c", "worse")],
        };
        assert_eq!(
            err.to_string(),
            "gatehouse.toml: a: bad\ngatehouse.toml: b.c: worse"
        );
    }
}
