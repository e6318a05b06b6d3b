//! `Secret` and password resolution: credentials are looked up when asked for, from an
//! environment variable or a file, and the value never reaches a `Debug`, `Display` or error text.
//!
//! Environment access goes through an [`EnvLookup`] so tests (which run in parallel, and in an
//! edition where `std::env::set_var` is `unsafe`) can supply their own environment; the plain
//! methods use the process environment.

use std::env::VarError;
use std::fmt;
use std::path::Path;

use crate::error::Problem;
use crate::model::{CredentialsConfig, MaskingConfig};

/// Looks up an environment variable; `std::env::var` is the real one.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// The process environment, as an [`EnvLookup`].
pub fn process_env(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

/// A secret string. It prints as `[redacted]` and is deliberately not `Serialize`, so it cannot
/// leak through logs, `{:?}` of a containing struct, or a config dump; `expose` is the one way in.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl CredentialsConfig {
    /// Reads the password now, from the process environment or the file. Problem keys are
    /// relative to the credentials table (`password_env`, or empty for the table itself); use
    /// [`Problem::within`] to place them.
    pub fn password(&self) -> Result<Secret, Problem> {
        self.password_with_env(&process_env)
    }

    /// [`CredentialsConfig::password`] with the environment supplied by the caller.
    pub fn password_with_env(&self, env: EnvLookup<'_>) -> Result<Secret, Problem> {
        match (&self.password_env, &self.password_file) {
            (Some(name), None) => from_env("password_env", name, env),
            (None, Some(path)) => from_file("password_file", path),
            // Keyed on the credentials table itself (empty key): neither key alone is wrong.
            (Some(_), Some(_)) => Err(Problem::new(
                "",
                "has both password_env and password_file; keep exactly one",
            )),
            (None, None) => Err(Problem::new(
                "",
                "has neither password_env nor password_file; set exactly one",
            )),
        }
    }
}

impl MaskingConfig {
    /// The key of the `hash` strategy from `key_env` or `key_file`; `None` when neither is
    /// set (the gateway then keeps a generated key in its data directory). Problem keys are
    /// relative to the masking table.
    pub fn key_with_env(&self, env: EnvLookup<'_>) -> Result<Option<Secret>, Problem> {
        match (&self.key_env, &self.key_file) {
            (Some(name), None) => from_env("key_env", name, env).map(Some),
            (None, Some(path)) => from_file("key_file", path).map(Some),
            (Some(_), Some(_)) => Err(Problem::new(
                "",
                "has both key_env and key_file; keep at most one",
            )),
            (None, None) => Ok(None),
        }
    }

    /// [`MaskingConfig::key_with_env`] with the process environment.
    pub fn key(&self) -> Result<Option<Secret>, Problem> {
        self.key_with_env(&process_env)
    }
}

fn from_env(key: &str, name: &str, env: EnvLookup<'_>) -> Result<Secret, Problem> {
    let problem = |message: String| Problem::new(key, message);
    // Checked first because the platform may refuse or misread such names.
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(problem(format!(
            "{name:?} is not a valid environment variable name"
        )));
    }
    match env(name) {
        Ok(value) if value.is_empty() => {
            Err(problem(format!("environment variable {name} is empty")))
        }
        Ok(value) => Ok(Secret(value)),
        Err(VarError::NotPresent) => {
            Err(problem(format!("environment variable {name} is not set")))
        }
        Err(VarError::NotUnicode(_)) => Err(problem(format!(
            "environment variable {name} is not valid UTF-8"
        ))),
    }
}

fn from_file(key: &str, path: &Path) -> Result<Secret, Problem> {
    let problem = |message: String| Problem::new(key, message);
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| problem(format!("cannot read {shown}: {e}")))?;
    // Not `from_utf8`'s error text: it is harmless today, but nothing derived from the bytes
    // belongs in a message.
    let mut value =
        String::from_utf8(bytes).map_err(|_| problem(format!("{shown} is not valid UTF-8")))?;
    // Files written by `echo` or editors end in a newline that is not part of the password.
    let trimmed = value.trim_end_matches(['\n', '\r']).len();
    value.truncate(trimmed);
    if value.is_empty() {
        return Err(problem(format!("{shown} is empty")));
    }
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(env: Option<&str>, file: Option<&Path>) -> CredentialsConfig {
        CredentialsConfig {
            user: "gatehouse".to_owned(),
            password_env: env.map(str::to_owned),
            password_file: file.map(Path::to_path_buf),
        }
    }

    fn fake_env(name: &str) -> Result<String, VarError> {
        match name {
            "FAKE_PASSWORD" => Ok("hunter2-from-env".to_owned()),
            "FAKE_EMPTY" => Ok(String::new()),
            _ => Err(VarError::NotPresent),
        }
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn password_from_injected_env() {
        let secret = creds(Some("FAKE_PASSWORD"), None)
            .password_with_env(&fake_env)
            .unwrap();
        assert_eq!(secret.expose(), "hunter2-from-env");

        let err = creds(Some("FAKE_EMPTY"), None)
            .password_with_env(&fake_env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "password_env: environment variable FAKE_EMPTY is empty"
        );
        let err = creds(Some("NOPE"), None)
            .password_with_env(&fake_env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "password_env: environment variable NOPE is not set"
        );
        let err = creds(Some("A=B"), None)
            .password_with_env(&fake_env)
            .unwrap_err();
        assert!(
            err.message
                .contains("not a valid environment variable name"),
            "{err}"
        );
    }

    #[test]
    fn password_from_file_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret file value\r\n").unwrap();
        let secret = creds(None, Some(&path)).password().unwrap();
        assert_eq!(secret.expose(), "s3cret file value");

        std::fs::write(&path, "\n").unwrap();
        let err = creds(None, Some(&path)).password().unwrap_err();
        assert_eq!(err.key, "password_file");
        assert!(err.message.ends_with("is empty"), "{err}");

        let err = creds(None, Some(&dir.path().join("missing")))
            .password()
            .unwrap_err();
        assert!(err.message.starts_with("cannot read"), "{err}");
    }

    #[test]
    fn needs_exactly_one_source() {
        let both = creds(Some("FAKE_PASSWORD"), Some(Path::new("/x")));
        let err = both.password_with_env(&fake_env).unwrap_err();
        assert_eq!(err.key, "");
        assert!(err.message.starts_with("has both"), "{err}");

        let err = creds(None, None).password_with_env(&fake_env).unwrap_err();
        assert!(err.message.starts_with("has neither"), "{err}");
        assert_eq!(
            err.within("resources[0].credentials").key,
            "resources[0].credentials"
        );
    }
}
