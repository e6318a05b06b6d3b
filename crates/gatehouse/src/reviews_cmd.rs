//! `gatehouse reviews` and `gatehouse access`: held statements listed, shown, approved and
//! denied, and access asked for, through the admin API of a running gateway.
//!
//! Every call carries the identity's key (HTTP Basic), so the client talks https with a
//! verified certificate — the system's authorities, `--ca`, or the `[admin] tls` certificate
//! of `--config` — and sends a key over plain http:// only to this host. There is no way
//! to skip the verification.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{AccessArgs, AccessCommand, ApiArgs, ReviewsArgs, ReviewsCommand};

/// The admin API, signed in as one identity.
struct Api {
    base: String,
    user: String,
    key: String,
    client: reqwest::Client,
}

impl Api {
    async fn new(args: &ApiArgs) -> anyhow::Result<Api> {
        let target = admin_target(args)?;
        let base = target.base;
        key_may_travel(&base, target.trust.is_some())?;
        let user = args.user.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "say who you are: --as NAME (or GATEHOUSE_USER), with your key in GATEHOUSE_KEY"
            )
        })?;
        let key = match std::env::var("GATEHOUSE_KEY") {
            Ok(key) if !key.is_empty() => key,
            _ => crate::login_cmd::current_token().await.map_err(|e| {
                anyhow::anyhow!(
                    "no key: set GATEHOUSE_KEY to your API key or token, or run `gatehouse login` ({e})"
                )
            })?,
        };
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(trust) = &target.trust {
            builder = builder.tls_certs_only(trust.certificates()?);
        }
        let client = builder.build()?;
        Ok(Api {
            base,
            user,
            key,
            client,
        })
    }

    fn call(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.key))
    }

    /// Sends `request`: the JSON body of a success, or (the API's error said on stderr)
    /// the exit code to end with.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Result<Value, ExitCode>> {
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the admin API at {}: {}",
                self.base,
                causes(&e)
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(body));
        }
        let message = body["error"].as_str().unwrap_or("no reason given");
        eprintln!(
            "gatehouse: could not {what}: {message} (HTTP {})",
            status.as_u16()
        );
        Ok(Err(ExitCode::from(1)))
    }
}

/// `gatehouse access request`.
pub(crate) async fn access(args: AccessArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.api).await?;
    let AccessCommand::Request {
        resource,
        duration,
        reason,
        wait,
    } = args.command;
    let request = api
        .call(Method::POST, "/api/access")
        .json(&json!({"resource": resource, "for": duration, "reason": reason}));
    let review = match api.send(request, "ask for access").await? {
        Ok(review) => review,
        Err(code) => return Ok(code),
    };
    let id = review["id"].as_str().unwrap_or("?").to_string();
    outln!("access request {id} is waiting for approval (gatehouse reviews approve {id})");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let follow = api.call(Method::GET, &format!("/api/reviews/{id}"));
        let now = match api.send(follow, "follow the request").await? {
            Ok(now) => now,
            Err(code) => return Ok(code),
        };
        match now["state"].as_str() {
            Some("pending") => continue,
            Some("approved") => {
                outln!("access to {resource} granted for {duration}");
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                let by = now["denial"]["by"]
                    .as_str()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default();
                outln!("access request {id} {}{by}", other.unwrap_or("ended"));
                return Ok(ExitCode::from(1));
            }
        }
    }
}

/// `gatehouse reviews`.
pub(crate) async fn run(args: ReviewsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.api).await?;
    let (request, what) = match &args.command {
        ReviewsCommand::List { .. } => (api.call(Method::GET, "/api/reviews"), "list reviews"),
        ReviewsCommand::Show { id } => (
            api.call(Method::GET, &format!("/api/reviews/{id}")),
            "show the review",
        ),
        ReviewsCommand::Approve { id, reason, grant } => (
            api.call(Method::POST, &format!("/api/reviews/{id}/approve"))
                .json(&json!({"reason": reason, "for": grant})),
            "approve",
        ),
        ReviewsCommand::Deny { id, reason } => (
            api.call(Method::POST, &format!("/api/reviews/{id}/deny"))
                .json(&json!({"reason": reason})),
            "deny",
        ),
    };
    let body = match api.send(request, what).await? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    match args.command {
        ReviewsCommand::List { all, json } => {
            let reviews = body["reviews"].as_array().cloned().unwrap_or_default();
            let shown: Vec<&Value> = reviews
                .iter()
                .filter(|r| all || r["state"] == "pending")
                .collect();
            if json {
                for r in shown {
                    outln!("{r}");
                }
            } else if shown.is_empty() {
                outln!("no reviews{}", if all { "" } else { " pending" });
            } else {
                outln!(
                    "{:<13} {:<9} {:<12} {:<12} {:<9} STATEMENT",
                    "ID",
                    "STATE",
                    "RESOURCE",
                    "REQUESTER",
                    "APPROVALS"
                );
                for r in shown {
                    let approvals = format!(
                        "{}/{}",
                        r["approvals"].as_array().map_or(0, Vec::len),
                        r["required"]
                    );
                    let sql: String = r["statement"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(60)
                        .collect();
                    outln!(
                        "{:<13} {:<9} {:<12} {:<12} {:<9} {}",
                        r["id"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        r["resource"].as_str().unwrap_or(""),
                        r["requester"].as_str().unwrap_or(""),
                        approvals,
                        sql.replace('\n', " ")
                    );
                }
            }
        }
        ReviewsCommand::Show { .. } => outln!("{}", serde_json::to_string_pretty(&body)?),
        ReviewsCommand::Approve { id, .. } | ReviewsCommand::Deny { id, .. } => {
            let approvals = body["approvals"].as_array().map_or(0, Vec::len);
            outln!(
                "review {id} is {} ({approvals} of {} approvals)",
                body["state"].as_str().unwrap_or("?"),
                body["required"]
            );
            if let Some(until) = body["grant_until"].as_u64() {
                let left =
                    Duration::from_millis(until.saturating_sub(gatehouse_approvals::now_ms()));
                outln!(
                    "granted: the same rule lets this identity's statements through for {}",
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the admin API is, and which certificates to trust for it (none: the system's).
struct AdminTarget {
    base: String,
    trust: Option<Trust>,
}

/// A PEM file of certificates to trust, and the option or key that named it (for errors).
struct Trust {
    file: PathBuf,
    named_by: &'static str,
}

impl Trust {
    fn certificates(&self) -> anyhow::Result<Vec<reqwest::Certificate>> {
        let at = format!("{} {}", self.named_by, self.file.display());
        let pem = std::fs::read(&self.file).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("{at}: not PEM certificates ({})", causes(&e)))?;
        if certs.is_empty() {
            anyhow::bail!("{at}: holds no PEM certificate");
        }
        Ok(certs)
    }
}

/// `--admin` (trusting `--ca`, if given), else the config's `[admin] listen`: https
/// trusting `--ca` or its `tls.cert` when it has `tls`, http otherwise.
fn admin_target(args: &ApiArgs) -> anyhow::Result<AdminTarget> {
    let ca = args.ca.clone().map(|file| Trust {
        file,
        named_by: "--ca",
    });
    if let Some(url) = &args.admin {
        return Ok(AdminTarget {
            base: url.trim_end_matches('/').to_string(),
            trust: ca,
        });
    }
    let config = gatehouse_config::Config::load(&args.config).map_err(|e| {
        anyhow::anyhow!("no admin address: pass --admin URL (or GATEHOUSE_ADMIN_URL), or a readable --config ({e})")
    })?;
    let listen = reachable(config.admin.listen);
    Ok(match config.admin.tls {
        Some(tls) => AdminTarget {
            base: format!("https://{listen}"),
            trust: ca.or(Some(Trust {
                file: tls.cert,
                named_by: "admin.tls.cert",
            })),
        },
        None => AdminTarget {
            base: format!("http://{listen}"),
            trust: ca,
        },
    })
}

/// A listen address as a client on this host reaches it: one on every address
/// (`0.0.0.0`, `[::]`) is reached on loopback.
fn reachable(mut listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        let loopback: std::net::IpAddr = match listen {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        listen.set_ip(loopback);
    }
    listen
}

/// Whether the key may be sent to `base`: over https, or over http to this host only (the
/// gateway refuses it from elsewhere too, but by then it has crossed the network).
fn key_may_travel(base: &str, trusting: bool) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(base)
        .map_err(|e| anyhow::anyhow!("--admin {base:?} is not a URL ({e})"))?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" => Ok(()),
        "http" if trusting => anyhow::bail!(
            "--ca is for an https:// admin API, and {base} is plain http://; use https:// (the gateway's [admin] tls)"
        ),
        "http" if is_loopback(host) => Ok(()),
        "http" => anyhow::bail!(
            "not sending your key over plain http:// to {host}: anyone on the way could read it. \
             Use https:// (the gateway's [admin] tls) or run this on the gateway's host"
        ),
        other => anyhow::bail!("--admin {base:?}: use an https:// URL, not {other}://"),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error and its causes, one after the other: a client error says only "error sending
/// request"; the certificate problem is further down.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_over_https_or_to_this_host() {
        for ok in [
            "https://gatehouse.internal:8443",
            "https://192.0.2.7:8443",
            "http://127.0.0.1:8080",
            "http://127.1.2.3:8080",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            assert!(key_may_travel(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://gatehouse.internal:8080",
            "http://192.0.2.7:8080",
            "http://[2001:db8::1]:8080",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            assert!(key_may_travel(bad, false).is_err(), "{bad}");
        }
        let err = key_may_travel("http://192.0.2.7:8080", false).unwrap_err();
        assert!(err.to_string().contains("not sending your key"), "{err}");
        let err = key_may_travel("http://127.0.0.1:8080", true).unwrap_err();
        assert!(
            err.to_string().starts_with("--ca is for an https://"),
            "{err}"
        );
    }

    #[test]
    fn an_address_on_every_interface_is_reached_on_loopback() {
        let at = |s: &str| reachable(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:8443"), "127.0.0.1:8443");
        assert_eq!(at("[::]:8443"), "[::1]:8443");
        assert_eq!(at("192.0.2.7:8443"), "192.0.2.7:8443");
    }
}
