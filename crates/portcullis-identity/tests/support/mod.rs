//! A real OpenID provider (`tests/oidc/provider.mjs`, npm `oidc-provider`)
//! and a minimal in-test browser that walks its development login pages.
//! Shared by the identity crate's tests and the gateway's end-to-end tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use portcullis_identity::{LoginClient, OidcIssuerSettings, Verifier};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "portcullis-test-secret";
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The provider process; killed when dropped, whatever the test did.
pub struct OidcProvider {
    pub child: Child,
    pub issuer: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl OidcProvider {
    /// A gateway config's `[[identity.oidc]]` for this provider and its
    /// `[console]` at `console_url`; the client secret is written to
    /// `secret`, which the config names.
    pub fn console_config(&self, secret: &std::path::Path, console_url: &str) -> String {
        std::fs::write(secret, CLIENT_SECRET).unwrap();
        format!(
            r#"
[[identity.oidc]]
issuer = "{issuer}"
audience = ["portcullis"]
client_id = "{CLIENT_ID}"
client_secret = {{ file = "{secret}" }}

[console]
public_url = "{console_url}"
"#,
            issuer = self.issuer,
            secret = secret.display(),
        )
    }

    pub async fn start() -> OidcProvider {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the test OpenID provider is not installed: run `npm ci --prefix tests/oidc` at the repository root"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .arg("--exit-on-stdin-close")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start `node` (Node.js 20 or later is needed)");

        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.trim() == "ready" {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let _ = child.start_kill();
            let mut errors = String::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut errors))
                    .await;
            panic!("the OpenID provider did not start on port {port}:\n{errors}");
        }
        // Keep draining both pipes so the provider never blocks on a full one.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink).await;
        });

        OidcProvider {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn settings(&self) -> OidcIssuerSettings {
        let mut settings = OidcIssuerSettings::new(self.issuer.clone(), vec![CLIENT_ID.to_owned()]);
        settings.client_id = Some(CLIENT_ID.to_owned());
        settings.client_secret = Some(CLIENT_SECRET.to_owned());
        settings
    }

    pub fn verifier(&self) -> Verifier {
        Verifier::new(vec![self.settings()], None).unwrap()
    }

    pub async fn login_client(&self) -> LoginClient {
        LoginClient::discover(&self.settings()).await.unwrap()
    }
}

/// What the browser saw after a request.
pub struct Page {
    pub url: url::Url,
    pub status: u16,
    pub location: Option<url::Url>,
    pub body: String,
}

/// A minimal browser: keeps cookies, follows nothing by itself.
#[derive(Clone)]
pub struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    pub async fn get(&mut self, url: &url::Url) -> Page {
        let request = self.http.get(url.clone());
        self.send(url, request).await
    }

    pub async fn post(&mut self, url: &url::Url, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(url.clone()).form(form);
        self.send(url, request).await
    }

    pub async fn send(&mut self, url: &url::Url, mut request: reqwest::RequestBuilder) -> Page {
        if !self.cookies.is_empty() {
            let header: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request = request.header("cookie", header.join("; "));
        }
        let response = request.send().await.unwrap();
        for set_cookie in response.headers().get_all("set-cookie") {
            let set_cookie = set_cookie.to_str().unwrap();
            let pair = set_cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let expired = set_cookie
                .to_ascii_lowercase()
                .contains("expires=thu, 01 jan 1970");
            if value.is_empty() || expired {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|location| url.join(location.to_str().unwrap()).unwrap());
        let body = response.text().await.unwrap();
        Page {
            url: url.clone(),
            status,
            location,
            body,
        }
    }

    /// Follows redirects and answers the provider's login and consent pages
    /// as `login`, until a page that is neither (the loopback callback, the
    /// device flow's success page).
    pub async fn sign_in_from(&mut self, mut page: Page, login: &str) -> Page {
        for _ in 0..20 {
            if let Some(next) = page.location.clone() {
                assert!(
                    (300..400).contains(&page.status),
                    "unexpected status {} at {}",
                    page.status,
                    page.url
                );
                page = self.get(&next).await;
                continue;
            }
            assert_eq!(page.status, 200, "at {}: {}", page.url, page.body);
            if page.body.contains(r#"name="prompt" value="login""#) {
                let url = page.url.clone();
                page = self
                    .post(
                        &url,
                        &[("prompt", "login"), ("login", login), ("password", "x")],
                    )
                    .await;
            } else if page.body.contains(r#"name="prompt" value="consent""#) {
                let url = page.url.clone();
                page = self.post(&url, &[("prompt", "consent")]).await;
            } else {
                return page;
            }
        }
        panic!("the login did not finish within 20 pages");
    }
}

/// The value of a hidden form field, read from the HTML.
pub fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no `{name}` field in:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}
