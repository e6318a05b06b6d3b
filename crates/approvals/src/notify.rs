//! Telling approvers a review is waiting: a generic JSON webhook, or a Slack incoming
//! webhook message, each POSTed with retries. Sending never holds up the session, and a
//! notification that fails in the end is logged; the review itself is unaffected.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Review;

/// The shape a webhook wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"event": "review.requested", "review": {...}, "approve_url": ..., "cli": ...}`.
    Json,
    /// A Slack incoming-webhook message: `{"text": ...}`.
    Slack,
}

/// One webhook to tell.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub format: Format,
}

/// Attempts per webhook; the waits between them double from half a second.
const ATTEMPTS: u32 = 4;

/// The body sent for `review` in `format`; `admin_url` is where approvers reach the API.
pub fn body(review: &Review, format: Format, admin_url: &str) -> Value {
    let approve_url = format!("{admin_url}/api/reviews/{}/approve", review.id);
    let cli = format!("gatehouse reviews approve {}", review.id);
    match format {
        Format::Json => json!({
            "event": "review.requested",
            "review": review,
            "approve_url": approve_url,
            "cli": cli,
        }),
        Format::Slack => {
            let statement: String = review.statement.chars().take(500).collect();
            json!({
                "text": format!(
                    "Gatehouse: {} asks to run on *{}*: ```{}```\nRule {}: {}\nNeeds {} approval(s) from {}. Approve with `{}` or POST {}",
                    review.requester,
                    review.resource,
                    statement,
                    review.rule.as_deref().unwrap_or("-"),
                    review.reason,
                    review.required,
                    review.approvers.join(", "),
                    cli,
                    approve_url,
                ),
            })
        }
    }
}

/// Sends the notifications of a new review, each in its own task.
pub fn review_requested(webhooks: &[Webhook], review: &Review, admin_url: &str) {
    for hook in webhooks {
        let body = body(review, hook.format, admin_url);
        let url = hook.url.clone();
        let id = review.id.clone();
        tokio::spawn(async move {
            if let Err(e) = post_with_retries(&url, &body).await {
                tracing::warn!(review = %id, %url, error = %e, "a review notification could not be delivered");
            }
        });
    }
}

async fn post_with_retries(url: &str, body: &Value) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut wait = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match client.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    Err(format!("{ATTEMPTS} attempts, the last: {last}"))
}
