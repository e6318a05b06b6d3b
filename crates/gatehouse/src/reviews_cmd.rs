//! `gatehouse reviews`: held statements listed, shown, approved and denied through the
//! admin API of a running gateway.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::cli::{ReviewsArgs, ReviewsCommand};

pub async fn run(args: ReviewsArgs) -> anyhow::Result<ExitCode> {
    let base = admin_url(&args)?;
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
    let call = |method: reqwest::Method, path: String| {
        client
            .request(method, format!("{base}{path}"))
            .basic_auth(&user, Some(&key))
    };
    let (request, what) = match &args.command {
        ReviewsCommand::List { .. } => (
            call(reqwest::Method::GET, "/api/reviews".into()),
            "list reviews",
        ),
        ReviewsCommand::Show { id } => (
            call(reqwest::Method::GET, format!("/api/reviews/{id}")),
            "show the review",
        ),
        ReviewsCommand::Approve { id, reason, grant } => (
            call(reqwest::Method::POST, format!("/api/reviews/{id}/approve"))
                .json(&serde_json::json!({"reason": reason, "for": grant})),
            "approve",
        ),
        ReviewsCommand::Deny { id, reason } => (
            call(reqwest::Method::POST, format!("/api/reviews/{id}/deny"))
                .json(&serde_json::json!({"reason": reason})),
            "deny",
        ),
    };
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {base}: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no reason given");
        eprintln!(
            "gatehouse reviews: could not {what}: {message} (HTTP {})",
            status.as_u16()
        );
        return Ok(ExitCode::from(1));
    }
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
fn admin_url(args: &ReviewsArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.admin {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let config = gatehouse_config::Config::load(&args.config).map_err(|e| {
        anyhow::anyhow!("no admin address: pass --admin URL (or GATEHOUSE_ADMIN_URL), or a readable --config ({e})")
    })?;
    Ok(format!("http://{}", config.admin.listen))
}
