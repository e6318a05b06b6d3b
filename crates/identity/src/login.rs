//! Signing in on a user's machine: the OAuth 2.0 device authorization grant (RFC 8628), or
//! the authorization code with PKCE (RFC 7636) on a loopback redirect (RFC 8252), against
//! an OpenID Provider, the token file the result is kept in (mode 0600), and
//! refreshing it when it nears expiry, so scripts can run
//! `PGPASSWORD=$(gatehouse token) psql ...`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a sign-in leaves behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    pub issuer: String,
    pub client_id: String,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The device flow's first answer: what the person must do, and what to poll with.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    #[serde(default = "default_interval")]
    pub interval: u64,
    pub expires_in: u64,
}

fn default_interval() -> u64 {
    5
}

/// A provider's endpoints for a public client.
#[derive(Debug, Clone)]
pub struct LoginClient {
    http: reqwest::Client,
    issuer: String,
    client_id: String,
    device_endpoint: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: String,
}

/// A browser sign-in in progress: the link to open, and the loopback listener waiting for
/// the provider's redirect.
#[derive(Debug)]
pub struct BrowserLogin {
    pub url: String,
    listener: tokio::net::TcpListener,
    redirect_uri: String,
    verifier: String,
    state: String,
}

impl LoginClient {
    /// Reads the provider's discovery document.
    pub async fn discover(issuer: &str, client_id: &str) -> Result<LoginClient, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = get_json(&http, &url).await?;
        let endpoint = |key: &str| {
            doc[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{url}: the provider has no {key}"))
        };
        Ok(LoginClient {
            issuer: doc["issuer"].as_str().unwrap_or(issuer).to_string(),
            client_id: client_id.to_string(),
            device_endpoint: endpoint("device_authorization_endpoint").ok(),
            authorization_endpoint: endpoint("authorization_endpoint").ok(),
            token_endpoint: endpoint("token_endpoint")?,
            http,
        })
    }

    /// Starts a browser sign-in: a loopback listener on a free port, a PKCE verifier and a
    /// state, and the provider link carrying their challenge.
    pub async fn start_browser(&self, scope: &str) -> Result<BrowserLogin, String> {
        let endpoint = self
            .authorization_endpoint
            .as_deref()
            .ok_or("the provider has no authorization endpoint; use the device flow")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen on loopback for the redirect: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let verifier = random_token()?;
        let state = random_token()?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let url = reqwest::Url::parse_with_params(
            endpoint,
            &[
                ("response_type", "code"),
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("scope", scope),
                ("state", state.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| format!("{endpoint}: {e}"))?;
        Ok(BrowserLogin {
            url: url.to_string(),
            listener,
            redirect_uri,
            verifier,
            state,
        })
    }

    /// Waits (up to `wait`) for the provider's redirect to the loopback listener, checks its
    /// state, and trades the code (with the PKCE verifier) for tokens.
    pub async fn finish_browser(
        &self,
        login: BrowserLogin,
        wait: Duration,
        now: i64,
    ) -> Result<TokenSet, String> {
        let params = tokio::time::timeout(wait, accept_redirect(&login.listener))
            .await
            .map_err(|_| "no sign-in arrived in time; run login again".to_string())??;
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let Some(error) = param("error") {
            return Err(format!(
                "the provider refused: {error} {}",
                param("error_description").unwrap_or_default()
            ));
        }
        // A redirect without our state did not come from the sign-in we started.
        if param("state").as_deref() != Some(login.state.as_str()) {
            return Err("the redirect carried the wrong state; not signed in".into());
        }
        let code = param("code").ok_or("the redirect carried no code")?;
        match self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", login.redirect_uri.as_str()),
                ("client_id", self.client_id.as_str()),
                ("code_verifier", login.verifier.as_str()),
            ])
            .await?
        {
            Ok(body) => self.token_set(&body, None, now),
            Err((error, description)) => Err(format!("{error}: {description}")),
        }
    }

    /// Starts a device-flow sign-in.
    pub async fn start_device(&self, scope: &str) -> Result<DeviceStart, String> {
        let endpoint = self
            .device_endpoint
            .as_deref()
            .ok_or("the provider has no device authorization endpoint; use --browser")?;
        let body = self
            .post_form(
                endpoint,
                &[("client_id", self.client_id.as_str()), ("scope", scope)],
            )
            .await?
            .map_err(|(error, description)| format!("{endpoint}: {error} {description}"))?;
        serde_json::from_value(body.clone())
            .map_err(|e| format!("unexpected device authorization answer ({e}): {body}"))
    }

    /// Polls until the person has approved (or denied, or the code expired).
    pub async fn wait_for_approval(
        &self,
        start: &DeviceStart,
        now: i64,
    ) -> Result<TokenSet, String> {
        let mut interval = start.interval.max(1);
        let deadline = std::time::Instant::now() + Duration::from_secs(start.expires_in);
        loop {
            tokio::time::sleep(Duration::from_secs(interval)).await;
            if std::time::Instant::now() > deadline {
                return Err("the code expired before the sign-in was approved".into());
            }
            let answer = self
                .token_request(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", start.device_code.as_str()),
                    ("client_id", self.client_id.as_str()),
                ])
                .await?;
            match answer {
                Ok(body) => return self.token_set(&body, None, now + interval as i64),
                Err((error, description)) => match error.as_str() {
                    "authorization_pending" => {}
                    // RFC 8628 §3.5: wait five seconds longer from now on.
                    "slow_down" => interval += 5,
                    "access_denied" => return Err("the sign-in was denied".into()),
                    "expired_token" => return Err("the code expired; run login again".into()),
                    _ => return Err(format!("{error}: {description}")),
                },
            }
        }
    }

    /// Trades the refresh token for fresh tokens.
    pub async fn refresh(&self, tokens: &TokenSet, now: i64) -> Result<TokenSet, String> {
        let refresh = tokens
            .refresh_token
            .as_deref()
            .ok_or("the token has expired and there is no refresh token; run `gatehouse login`")?;
        match self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", self.client_id.as_str()),
            ])
            .await?
        {
            Ok(body) => self.token_set(&body, tokens.refresh_token.clone(), now),
            Err((error, description)) => Err(format!(
                "refreshing failed ({error}: {description}); run `gatehouse login`"
            )),
        }
    }

    fn token_set(
        &self,
        body: &Value,
        old_refresh: Option<String>,
        now: i64,
    ) -> Result<TokenSet, String> {
        let text = |key: &str| body[key].as_str().map(str::to_string);
        Ok(TokenSet {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            access_token: text("access_token").ok_or("the provider sent no access token")?,
            id_token: text("id_token"),
            // A provider may rotate refresh tokens, or keep the old one valid.
            refresh_token: text("refresh_token").or(old_refresh),
            expires_at: now + body["expires_in"].as_i64().unwrap_or(300),
        })
    }

    /// A form POST to the token endpoint (see [`LoginClient::post_form`]).
    async fn token_request(
        &self,
        form: &[(&str, &str)],
    ) -> Result<Result<Value, (String, String)>, String> {
        self.post_form(&self.token_endpoint, form).await
    }

    /// POSTs a form to an OAuth endpoint: `Ok(Ok(body))` on success, `Ok(Err((error,
    /// description)))` for an OAuth error answer, `Err` when there is no usable answer.
    async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Result<Value, (String, String)>, String> {
        let response = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("{url}: HTTP {status}, not JSON"))?;
        if status.is_success() {
            Ok(Ok(body))
        } else {
            let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
            Ok(Err((field("error"), field("error_description"))))
        }
    }
}

/// 32 random bytes, base64url: a PKCE verifier or a state.
fn random_token() -> Result<String, String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// Answers the first request to the loopback listener that carries a query (the browser's
/// redirect) and returns its query parameters. Other requests (a favicon) get a 404.
async fn accept_redirect(
    listener: &tokio::net::TcpListener,
) -> Result<Vec<(String, String)>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.is_err() {
            continue;
        }
        // Read the headers off so the browser sees a clean answer.
        let mut header = String::new();
        while reader.read_line(&mut header).await.is_ok_and(|n| n > 2) {
            header.clear();
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        let Some((path, query)) = target.split_once('?') else {
            let _ = reader
                .get_mut()
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let params: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x{path}?{query}"))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let page = "<!doctype html><title>Gatehouse</title><p>Signed in to Gatehouse. You can close this window.</p>";
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = reader.get_mut().write_all(answer.as_bytes()).await;
        return Ok(params);
    }
}

/// GETs `url` and reads its body as JSON; any failure is a message naming the URL.
pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let bytes = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// Where the token is kept: `$GATEHOUSE_TOKEN_FILE`, else `gatehouse/token.json` in the
/// user's config directory (`$XDG_CONFIG_HOME`, else `~/.config`).
pub fn token_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GATEHOUSE_TOKEN_FILE") {
        return Ok(PathBuf::from(path));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?).join(".config"),
    };
    Ok(base.join("gatehouse").join("token.json"))
}

/// Writes the token file, readable by its owner only, replacing any older one whole.
pub fn save(path: &Path, tokens: &TokenSet) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(tokens).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&tmp);
    // Created with mode 0600, so the token is never readable by others, not even briefly.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads the token file.
pub fn load(path: &Path) -> Result<TokenSet, String> {
    let text = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{}: not signed in; run `gatehouse login`", path.display())
        } else {
            format!("{}: {e}", path.display())
        }
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("{}: unreadable token file: {e}", path.display()))
}

/// Whether the token should be refreshed before use: it expires within a minute.
pub fn needs_refresh(tokens: &TokenSet, now: i64) -> bool {
    tokens.expires_at - now < 60
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/gatehouse/token.json");
        let tokens = TokenSet {
            issuer: "https://idp.example.com".into(),
            client_id: "gatehouse-cli".into(),
            access_token: "eyJ.a.b".into(),
            id_token: None,
            refresh_token: Some("r1".into()),
            expires_at: 1_000,
        };
        save(&path, &tokens).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(load(&path).unwrap(), tokens);
        save(
            &path,
            &TokenSet {
                access_token: "eyJ.c.d".into(),
                ..tokens.clone()
            },
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().access_token, "eyJ.c.d");
        assert!(needs_refresh(&tokens, 950) && !needs_refresh(&tokens, 900));
        let missing = load(&dir.path().join("none.json")).unwrap_err();
        assert!(missing.contains("run `gatehouse login`"), "{missing}");
    }
}
