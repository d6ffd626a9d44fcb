//! Notifications of requests and decisions: a generic JSON webhook, or a
//! Slack-compatible incoming webhook. Sent in the background with retries;
//! a notification that cannot be delivered is logged and counted, and the
//! request stands (it was stored before anyone was told).

use crate::model::Request;
use serde::Deserialize;
use std::time::Duration;

/// Where to send notifications, and in which shape.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    pub url: String,
    #[serde(default)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"event": ..., "request": {...}, "url": ...}`
    #[default]
    Json,
    /// `{"text": ...}`, what Slack (and Mattermost, Rocket.Chat, ...) take.
    Slack,
}

#[derive(Clone)]
pub(crate) struct Notifier {
    sinks: Vec<Sink>,
    /// Built only when there is somewhere to send to.
    http: Option<reqwest::Client>,
    attempts: u32,
    first_backoff: Duration,
}

impl Notifier {
    pub(crate) fn new(sinks: Vec<Sink>, attempts: u32, first_backoff: Duration) -> Notifier {
        let http = if sinks.is_empty() {
            None
        } else {
            match reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            {
                Ok(http) => Some(http),
                Err(e) => {
                    tracing::error!(error = %e, "no HTTP client: approval notifications are off");
                    None
                }
            }
        };
        Notifier {
            sinks,
            http,
            attempts: attempts.max(1),
            first_backoff,
        }
    }

    /// Sends `event` about `request` to every sink, each in its own task.
    pub(crate) fn send(&self, event: &'static str, request: &Request, link: &str) {
        for sink in &self.sinks {
            let body = match sink.format {
                Format::Json => serde_json::json!({
                    "event": event,
                    "url": link,
                    "request": request,
                }),
                Format::Slack => serde_json::json!({ "text": slack_text(event, request, link) }),
            };
            let notifier = self.clone();
            let url = sink.url.clone();
            tokio::spawn(async move { notifier.deliver(&url, &body).await });
        }
    }

    async fn deliver(&self, url: &str, body: &serde_json::Value) {
        let Some(http) = &self.http else {
            return;
        };
        let mut backoff = self.first_backoff;
        for attempt in 1..=self.attempts {
            let result = http.post(url).json(body).send().await;
            let failure = match result {
                Ok(response) if response.status().is_success() => {
                    metrics::counter!("portcullis_notifications_total", "outcome" => "sent")
                        .increment(1);
                    return;
                }
                Ok(response) => format!("answered {}", response.status()),
                Err(e) => format!("could not be reached: {}", without_url(&e)),
            };
            if attempt == self.attempts {
                tracing::error!(sink = %shown(url), attempts = attempt, "a notification was not delivered: the webhook {failure}; the request stands, and is in the console");
                metrics::counter!("portcullis_notifications_total", "outcome" => "failed")
                    .increment(1);
                return;
            }
            tracing::warn!(sink = %shown(url), attempt, "a notification failed (the webhook {failure}); retrying");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(Duration::from_secs(60));
        }
    }
}

/// A webhook URL carries its secret in the path: only the host is shown.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => format!(
            "{}://{}/…",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ),
        Err(_) => "(invalid url)".into(),
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(url.as_str(), &shown(url.as_str()));
    }
    message
}

/// Text from a requester made plain in Slack's markup: `&`, `<` and `>`
/// escaped as Slack asks (no `<!channel>` mention, no link of the
/// requester's own), backticks replaced so that no code block is left,
/// and characters that are not drawn as themselves or that turn the text
/// around them (right-to-left letters) named.
fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\u{2018}'),
            '\n' | '\t' => out.push(c),
            c if portcullis_core::text::is_unshown(c)
                || portcullis_core::text::is_right_to_left(c) =>
            {
                out.push_str(&portcullis_core::text::named(c))
            }
            c => out.push(c),
        }
    }
    out
}

fn slack_text(event: &str, request: &Request, link: &str) -> String {
    // A console link, or the CLI command to run.
    let link = if link.starts_with("http") {
        format!("<{link}|request {}>", request.id)
    } else {
        format!("`{link}`")
    };
    let who = slack_escape(&request.requester.id);
    let what = slack_escape(&request.summary());
    match event {
        "requested" => format!(
            "*{who}* asks for approval on `{}`: ```{what}``` Reviewers: {}. Review: {link}",
            request.target,
            crate::model::groups_list(&request.approval.groups),
        ),
        _ => format!(
            "Request {} by *{who}* on `{}` is *{}*: ```{what}``` {link}",
            request.id,
            request.target,
            request.status.as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Person, Status, Subject};

    #[test]
    fn a_requester_cannot_mention_the_channel_link_elsewhere_or_leave_the_code_block() {
        let request = Request {
            id: 3,
            status: Status::Pending,
            requester: Person {
                id: "alice@example.com".into(),
                subject: "alice".into(),
                issuer: "test".into(),
                email: None,
                groups: vec!["eng".into()],
            },
            target: "demo".into(),
            subject: Subject::Statement {
                session: "s1".into(),
                client_addr: "127.0.0.1:1".into(),
                text: "delete from t /* ``` <!channel> confirm at <https://evil.example|request 3> & \u{202E}x ``` */".into(),
                prepared: None,
                batch: None,
                parameters: Vec::new(),
                policies: vec!["p".into()],
                policy_reason: "why".into(),
                policy_version: "v1".into(),
            },
            reason: None,
            approval: portcullis_core::Approval {
                groups: vec!["dba".into()],
                min_approvals: 1,
            },
            created_at: 0,
            expires_at: 60,
            decided_at: None,
            outcome: None,
            grant_until: None,
            reviews: Vec::new(),
        };
        let text = slack_text("requested", &request, "https://gw.example/requests/3");
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<https://evil"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert!(text.contains("&amp; [U+202E]x"), "{text}");
        // One code block, the gateway's own, and one link, the gateway's.
        assert_eq!(text.matches("```").count(), 2, "{text}");
        assert_eq!(text.matches('<').count(), 1, "{text}");
        assert!(
            text.ends_with("<https://gw.example/requests/3|request 3>"),
            "{text}"
        );
    }
}
