//! `gatehouse reviews` and `gatehouse access`: held statements listed, shown, approved and
//! denied, and access asked for, through the admin API of a running gateway.

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
        let base = admin_url(args)?;
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
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
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
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {}: {e}", self.base))?;
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
pub async fn access(args: AccessArgs) -> anyhow::Result<ExitCode> {
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
pub async fn run(args: ReviewsArgs) -> anyhow::Result<ExitCode> {
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

/// `--admin`, else `http://` and the config's `[admin] listen`.
fn admin_url(args: &ApiArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.admin {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let config = gatehouse_config::Config::load(&args.config).map_err(|e| {
        anyhow::anyhow!("no admin address: pass --admin URL (or GATEHOUSE_ADMIN_URL), or a readable --config ({e})")
    })?;
    Ok(format!("http://{}", config.admin.listen))
}
