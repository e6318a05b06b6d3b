//! Telling approvers a review is waiting: a generic JSON webhook, or a Slack incoming
//! webhook message, each POSTed with retries. Sending never holds up the session, and a
//! notification that fails in the end is logged; the review itself is unaffected.
//!
//! A webhook's URL is a secret: for Slack (and most chat tools) whoever knows it can post
//! to the channel. It is never logged or printed — not in `Debug`, not in an error (a
//! client error names its URL, so it is described without it). A failure is logged with
//! the review's resource and the webhook's place in `[[resources.reviews.notify]]`.

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
#[derive(Clone)]
pub struct Webhook {
    /// Secret (see the module's documentation): never log it.
    pub url: String,
    pub format: Format,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &"<secret>")
            .field("format", &self.format)
            .finish()
    }
}

/// How often, and how patiently, a webhook is tried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub attempts: u32,
    /// The wait after the first failure; each later wait doubles.
    pub first_wait: Duration,
    /// Per attempt.
    pub timeout: Duration,
}

/// Four attempts, waiting half a second, then one, then two.
const RETRY: Retry = Retry {
    attempts: 4,
    first_wait: Duration::from_millis(500),
    timeout: Duration::from_secs(10),
};

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
    for (index, hook) in webhooks.iter().enumerate() {
        let body = body(review, hook.format, admin_url);
        let url = hook.url.clone();
        let (id, resource) = (review.id.clone(), review.resource.clone());
        tokio::spawn(async move { deliver(&url, index, &resource, &id, &body, RETRY).await });
    }
}

/// POSTs `body` to `url` with retries; a final failure is logged with `resource` and the
/// webhook's `index`, never its URL. Returns whether it was delivered.
pub(crate) async fn deliver(
    url: &str,
    index: usize,
    resource: &str,
    review: &str,
    body: &Value,
    retry: Retry,
) -> bool {
    match post_with_retries(url, body, retry).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                review,
                resource,
                webhook = index,
                error = %e,
                "a review notification could not be delivered"
            );
            false
        }
    }
}

async fn post_with_retries(url: &str, body: &Value, retry: Retry) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(retry.timeout)
        // A redirect could lead to a plain http:// address, which the configuration
        // refuses for webhooks; a webhook that redirects is a mistake to see, not follow.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| describe(&e))?;
    let mut wait = retry.first_wait;
    let mut last = String::new();
    for attempt in 1..=retry.attempts {
        match client.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = describe(&e),
        }
        if attempt < retry.attempts {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    Err(format!("{} attempts, the last: {last}", retry.attempts))
}

/// What went wrong, without the URL: a client error's `Display` names the URL it was for.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_redirect() {
        "redirected (webhooks are not followed to another address)".into()
    } else if e.is_builder() {
        "not a usable URL".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tracing::instrument::WithSubscriber;

    /// A log sink the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A webhook receiver on loopback that answers every request with `status`, counting
    /// the requests.
    async fn receiver(status: u16) -> (std::net::SocketAddr, Arc<Mutex<u32>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(Mutex::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                *seen.lock().unwrap() += 1;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (addr, count)
    }

    const QUICK: Retry = Retry {
        attempts: 2,
        first_wait: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn a_failed_webhook_is_logged_by_resource_and_index_never_by_url() {
        let (addr, count) = receiver(500).await;
        let secret = "T000/B000/very-secret-token";
        let url = format!("http://127.0.0.1:{}/services/{secret}", addr.port());
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let delivered = deliver(&url, 1, "pg-prod", "r-0123456789", &json!({}), QUICK)
            .with_subscriber(subscriber)
            .await;
        assert!(!delivered);
        assert_eq!(*count.lock().unwrap(), 2, "retried once");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("resource=\"pg-prod\"")
                && text.contains("webhook=1")
                && text.contains("HTTP 500"),
            "{text}"
        );
        assert!(
            !text.contains(secret) && !text.contains("/services/"),
            "{text}"
        );

        // Nothing listening: the client's error names the URL; the log does not.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/services/{secret}");
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        assert!(
            !deliver(&url, 0, "pg-prod", "r-0123456789", &json!({}), QUICK)
                .with_subscriber(subscriber)
                .await
        );
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("could not connect"), "{text}");
        assert!(
            !text.contains(secret) && !text.contains("/services/"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_delivered_webhook_is_sent_once() {
        let (addr, count) = receiver(200).await;
        let url = format!("http://127.0.0.1:{}/hook", addr.port());
        assert!(deliver(&url, 0, "pg-prod", "r-0123456789", &json!({}), QUICK).await);
        assert_eq!(*count.lock().unwrap(), 1);
    }

    #[test]
    fn debug_never_shows_the_url() {
        let hook = Webhook {
            url: "https://hooks.slack.com/services/T000/B000/XXXXSECRET".into(),
            format: Format::Slack,
        };
        let shown = format!("{hook:?} {:?}", vec![hook.clone()]);
        assert!(!shown.contains("XXXXSECRET") && !shown.contains("hooks.slack.com"));
        assert!(shown.contains("Slack"), "{shown}");
    }
}
