//! `portcullis requests | approve | deny | request | revoke`: the approval
//! workflow from a terminal, through the gateway's REST API.

use anyhow::{anyhow, bail, Context, Result};
use portcullis_config::Config;
use portcullis_gate::approval::{model, Request, Status, Subject};
use serde_json::{json, Value};

/// Where the API is and who calls it.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// `gateway` wins over the config's console URL (or admin listener);
    /// the token is required (`--token` or `PORTCULLIS_TOKEN`).
    pub fn new(
        config: Option<&Config>,
        gateway: Option<&str>,
        token: Option<String>,
    ) -> Result<ApiClient> {
        crate::tls::install_crypto_provider();
        let base = match (gateway, config) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(config)) => match (&config.console, &config.admin) {
                (Some(console), _) => console.public_url.trim_end_matches('/').to_string(),
                (None, Some(admin)) => format!("http://{}", admin.listen),
                (None, None) => {
                    bail!("the config has no [admin] listener to reach; pass --gateway URL")
                }
            },
            (None, None) => bail!("say which gateway: --config FILE or --gateway URL"),
        };
        let token = token
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| anyhow!("no token: pass --token or set PORTCULLIS_TOKEN (from `portcullis login` or your identity provider)"))?;
        let url = reqwest::Url::parse(&base)
            .with_context(|| format!("`{base}` is not a URL: pass --gateway https://..."))?;
        if !portcullis_config::credentials_may_go_to(&url) {
            bail!(
                "refusing to send your token to `{base}` in clear: reach the gateway over https (TLS in front of its admin listener), or over http on this machine only"
            );
        }
        // A redirect could lead the token elsewhere.
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ApiClient { base, token, http })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let value: Value = response
            .json()
            .await
            .with_context(|| format!("the gateway answered {status} without JSON"))?;
        if !status.is_success() {
            let message = value["error"].as_str().unwrap_or("no reason given");
            bail!("{message}");
        }
        Ok(value)
    }

    /// Pending requests this caller may see, or decided ones.
    pub async fn list(&self, decided: bool) -> Result<String> {
        let status = if decided { "decided" } else { "pending" };
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/requests?status={status}"),
                None,
            )
            .await?;
        let requests: Vec<Request> = serde_json::from_value(value["requests"].clone())
            .context("the gateway's answer is not a list of requests")?;
        if requests.is_empty() {
            return Ok(format!("no {status} requests\n"));
        }
        let mut out = String::new();
        for request in &requests {
            out.push_str(&render_line(request));
        }
        Ok(out)
    }

    pub async fn review(&self, id: i64, approve: bool, comment: &str) -> Result<String> {
        let verb = if approve { "approve" } else { "deny" };
        let value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/requests/{id}/{verb}"),
                Some(json!({ "comment": comment })),
            )
            .await?;
        let request: Request = serde_json::from_value(value)?;
        Ok(match request.status {
            Status::Pending => format!(
                "request {id}: your approval is recorded; it needs {} approval(s) in all, from {}\n",
                request.approval.min_approvals,
                model::groups_list(&request.approval.groups)
            ),
            status => format!("request {id}: {}\n", status.as_str()),
        })
    }

    pub async fn request_access(
        &self,
        target: &str,
        duration: &str,
        reason: &str,
    ) -> Result<String> {
        let value = self
            .call(
                reqwest::Method::POST,
                "/api/v1/requests",
                Some(json!({ "target": target, "duration": duration, "reason": reason })),
            )
            .await?;
        let request: Request = serde_json::from_value(value["request"].clone())?;
        Ok(format!(
            "request {}: access to `{target}` for {duration}, waiting for {} — {}\n",
            request.id,
            model::groups_list(&request.approval.groups),
            value["url"].as_str().unwrap_or_default()
        ))
    }

    /// Has the gateway sign an SSH user certificate for the public key at
    /// `key` (`id_ed25519.pub`) and writes it beside it
    /// (`id_ed25519-cert.pub`), where `ssh` finds it by itself.
    pub async fn ssh_certificate(&self, key: &std::path::Path) -> Result<String> {
        let public_key = std::fs::read_to_string(key)
            .map_err(|e| anyhow::anyhow!("cannot read the public key `{}`: {e}", key.display()))?;
        let value = self
            .call(
                reqwest::Method::POST,
                "/api/v1/ssh/certificate",
                Some(json!({ "public_key": public_key.trim() })),
            )
            .await?;
        let certificate = value["certificate"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the gateway sent no certificate"))?;
        let name = key.to_string_lossy();
        let path = std::path::PathBuf::from(format!(
            "{}-cert.pub",
            name.strip_suffix(".pub").unwrap_or(&name)
        ));
        std::fs::write(&path, format!("{certificate}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))?;
        Ok(format!(
            "wrote {} for {}, valid until {} (Unix time); `ssh -p PORT TARGET@GATEWAY` uses it\n",
            path.display(),
            value["principal"].as_str().unwrap_or_default(),
            value["valid_before"]
        ))
    }

    pub async fn revoke(&self, id: i64, comment: &str) -> Result<String> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{id}/revoke"),
            Some(json!({ "comment": comment })),
        )
        .await?;
        Ok(format!("grant {id}: revoked\n"))
    }
}

fn render_line(request: &Request) -> String {
    use crate::commands::printable;
    let what = match &request.subject {
        Subject::Statement {
            text,
            prepared: Some(prepared),
            ..
        } => format!("{} (runs: {})", printable(text), printable(prepared)),
        Subject::Statement { text, .. } => printable(text),
        Subject::Access { seconds } => format!("access for {}", model::duration(*seconds)),
    };
    let reason = request
        .reason
        .as_deref()
        .map(|r| format!(" (reason: {})", printable(r)))
        .unwrap_or_default();
    // What an Execute binds runs as much as its text: each value is shown.
    let mut parameters = String::new();
    if let Subject::Statement {
        parameters: bound, ..
    } = &request.subject
    {
        for (n, value) in bound.iter().enumerate() {
            let shown = value
                .as_deref()
                .map_or_else(|| "NULL".into(), portcullis_core::text::sql_literal);
            // An SQL literal with everything that would not print as
            // itself escaped: shown as it is.
            parameters.push_str(&format!("       ${} = {shown}\n", n + 1));
        }
    }
    // Approved, the whole query a statement came in runs.
    if let Subject::Statement {
        batch: Some(batch), ..
    } = &request.subject
    {
        parameters.push_str(&format!("       sent in one query: {}\n", printable(batch)));
    }
    // Why it is held: what the reviewer is asked to judge.
    if let Subject::Statement {
        policies,
        policy_reason,
        ..
    } = &request.subject
    {
        if !policy_reason.is_empty() {
            parameters.push_str(&format!(
                "       held by {}: {}\n",
                printable(&policies.join(", ")),
                printable(policy_reason)
            ));
        }
    }
    format!(
        "{:>5}  {:<9} {:<9} {} on {} for {}{reason}\n       {what}\n{parameters}",
        request.id,
        request.status.as_str(),
        request.kind(),
        printable(&request.requester.id),
        printable(&request.target),
        model::groups_list(&request.approval.groups),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_in_clear_only_to_this_machine() {
        let token = || Some("t".to_string());
        for url in [
            "http://192.0.2.2:9090",
            "http://gateway.example.com",
            "ftp://127.0.0.1",
        ] {
            let error = ApiClient::new(None, Some(url), token()).err().unwrap();
            assert!(
                error.to_string().contains("refusing to send your token"),
                "{url}: {error}"
            );
        }
        for url in [
            "https://gateway.example.com",
            "http://127.0.0.1:9090",
            "http://[::1]:9090",
            "http://localhost:9090",
        ] {
            assert!(ApiClient::new(None, Some(url), token()).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_reviewer_on_the_cli_sees_every_bound_value_and_every_line_break() {
        let request: Request = serde_json::from_value(json!({
            "id": 12, "status": "pending", "target": "demo",
            "requester": {"id": "alice@example.com", "subject": "alice", "issuer": "test", "groups": ["eng"]},
            "kind": "statement", "session": "s1", "client_addr": "127.0.0.1:1",
            "text": "update orders set note = $1 -- harmless\n, total = $2",
            "parameters": ["card 4111 1111 1111 1111", null, "7'\n-- done"],
            "policies": ["no-unbounded-writes"], "policy_reason": "why", "policy_version": "v1",
            "approval": {"groups": ["dba"], "min_approvals": 1},
            "created_at": 0, "expires_at": 60,
        }))
        .unwrap();
        let line = render_line(&request);
        assert!(
            line.contains("update orders set note = $1 -- harmless\\n, total = $2\n"),
            "{line}"
        );
        assert!(
            line.contains("       $1 = 'card 4111 1111 1111 1111'\n"),
            "{line}"
        );
        assert!(line.contains("       $2 = NULL\n"), "{line}");
        assert!(line.contains("       $3 = E'7\\'\\n-- done'\n"), "{line}");
        assert!(
            line.contains("       held by no-unbounded-writes: why\n"),
            "{line}"
        );
    }
}
