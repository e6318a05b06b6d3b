//! A real OpenID Provider for tests: the `oidc-provider` npm package under node, from the
//! project in `crates/testkit/oidc` (`npm install` there; the test script does it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a starting provider may take to say it listens (it takes a second or two).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts tried before giving up.
const START_ATTEMPTS: usize = 3;

/// The node project holding the provider script and its `node_modules`.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// A running provider on a loopback port; stopped when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    pub port: u16,
    /// The provider's private signing keys (a JWKS), for forging tokens in tests.
    pub keys_file: PathBuf,
    child: Child,
}

impl OidcProvider {
    /// Starts a provider with the keys in `keys_file` (generated and written there when the
    /// file does not exist) on `port` (0: a free one).
    pub fn start(keys_file: &Path, port: u16) -> Result<OidcProvider, String> {
        let dir = oidc_dir();
        if !dir.join("node_modules/oidc-provider").is_dir() {
            return Err(format!(
                "oidc-provider is not installed: run `npm install` in {} (scripts/test does)",
                dir.display()
            ));
        }
        // node has been seen to hang while starting, before it listens (its main thread
        // waiting on a lock, nothing printed): a start that says nothing in time is ended
        // and tried again, as is one that failed (a free port taken meanwhile).
        let mut failed = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = if port == 0 { crate::free_port() } else { port };
            match OidcProvider::start_once(&dir, keys_file, port) {
                Ok(provider) => return Ok(provider),
                Err(e) => failed.push(e),
            }
        }
        Err(format!(
            "the provider did not start in {START_ATTEMPTS} attempts: {}",
            failed.join("; ")
        ))
    }

    fn start_once(dir: &Path, keys_file: &Path, port: u16) -> Result<OidcProvider, String> {
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .arg(port.to_string())
            .arg(keys_file)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting node: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (said, first_line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let ready = matches!(&read, Ok(line) if line.trim() == "ready");
            let _ = said.send(read);
            // Keep reading: the provider logs as it serves, and node exits when a write
            // to a closed pipe fails.
            if ready {
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            }
        });
        let failure = match first_line.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) if line.trim() == "ready" => {
                return Ok(OidcProvider {
                    port,
                    keys_file: keys_file.to_path_buf(),
                    child,
                });
            }
            Ok(Ok(line)) => format!("it said {line:?}"),
            Ok(Err(e)) => format!("reading its output: {e}"),
            Err(_) => format!("nothing said in {} s", START_TIMEOUT.as_secs()),
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(failure)
    }

    /// The issuer URL tokens carry.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An access token (a JWT for audience `gatehouse`) for a configured client (`ci`,
    /// `reporting`, or `gha` with `repository` and `ref` claims like a CI job's), by the
    /// client-credentials grant.
    pub fn token(&self, client: &str) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--fail-with-body", "-u"])
            .arg(format!("{client}:{client}-secret"))
            .args(["-d", "grant_type=client_credentials", "-d", "scope=db"])
            .arg(format!("{}/token", self.issuer()))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(format!("token request failed: {body}"));
        }
        let answer: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
        answer["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no access_token in {body}"))
    }

    /// A token made outside the provider (see `forge.mjs` for the modes) with `claims`.
    pub fn forge(&self, mode: &str, claims: &str) -> Result<String, String> {
        let out = Command::new("node")
            .arg(oidc_dir().join("forge.mjs"))
            .arg(&self.keys_file)
            .arg(mode)
            .arg(claims)
            .output()
            .map_err(|e| format!("node: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
