//! Logs in for real against `oidc-provider` (tests/oidc/provider.mjs, run with
//! Node), and verifies what it issues.
//!
//! An in-test "browser" (reqwest, a small cookie jar, no automatic redirects)
//! walks the provider's development login pages the way a person would: the
//! login form, the consent form, the device code form.
//!
//! Needs `npm ci --prefix tests/oidc` once (the project's test script does it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_identity::{
    DeviceCode, IdentityError, LoginClient, OidcIssuerSettings, TokenCache, Tokens, Verifier,
};
use tokio::sync::oneshot;

mod support;
use support::*;

/// Runs the authorization code flow through `LoginClient`, with the browser
/// signing in as `login`.
async fn log_in_with_browser(client: &LoginClient, login: &'static str) -> Tokens {
    let (url_sender, url_receiver) = oneshot::channel::<String>();
    let browser = tokio::spawn(async move {
        let url = url_receiver.await.unwrap();
        let mut browser = Browser::new();
        let first = browser.get(&url::Url::parse(&url).unwrap()).await;
        browser.sign_in_from(first, login).await
    });
    let tokens = client
        .authorization_code(
            move |url| {
                url_sender.send(url.to_owned()).unwrap();
            },
            LOGIN_TIMEOUT,
        )
        .await
        .unwrap();
    let last_page = browser.await.unwrap();
    assert_eq!(last_page.url.path(), "/callback");
    assert!(
        last_page
            .body
            .contains("login complete, you can close this window"),
        "{}",
        last_page.body
    );
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_then_refresh() {
    let provider = OidcProvider::start().await;
    let client = provider.login_client().await;
    let tokens = log_in_with_browser(&client, "alice@example.com").await;

    let verifier = provider.verifier();
    verifier.warm_up().await;
    let principal = verifier.verify(&tokens.id_token).await.unwrap();
    assert_eq!(principal.id, "alice@example.com");
    assert_eq!(principal.subject, "alice@example.com");
    assert_eq!(principal.groups, vec!["eng"]);
    assert_eq!(principal.issuer, provider.issuer);
    assert_eq!(principal.expires_at, tokens.expires_at);

    // (b) refresh: a new ID token that verifies too.
    let refresh_token = tokens.refresh_token.clone().expect("a refresh token");
    let refreshed = client.refresh(&refresh_token).await.unwrap();
    assert!(refreshed.refresh_token.is_some());
    let principal = verifier.verify(&refreshed.id_token).await.unwrap();
    assert_eq!(principal.id, "alice@example.com");
    assert_eq!(principal.groups, vec!["eng"]);

    // The token cache refreshes an expired entry by itself.
    let dir = tempfile::tempdir().unwrap();
    let cache = TokenCache::new(dir.path().join("portcullis/tokens.json"));
    let stale = Tokens {
        expires_at: 0,
        ..refreshed.clone()
    };
    cache.store(&client.cache_key(), &stale).unwrap();
    let fresh = cache
        .get_fresh(&client, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("refreshed tokens");
    assert!(fresh.expires_at > 0);
    verifier.verify(&fresh.id_token).await.unwrap();
    assert_eq!(cache.get(&client.cache_key()).unwrap(), Some(fresh.clone()));

    // Another client of the same provider neither gets these tokens nor
    // spends (and loses) their refresh token.
    let mut other_settings = provider.settings();
    other_settings.client_id = Some("other-client".to_owned());
    let other = LoginClient::discover(&other_settings).await.unwrap();
    assert_eq!(
        cache
            .get_fresh(&other, Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
    assert_eq!(cache.get(&client.cache_key()).unwrap(), Some(fresh));

    // A refresh token the provider does not know is refused, and forgotten.
    let bogus = Tokens {
        refresh_token: Some("not-a-refresh-token".to_owned()),
        ..stale
    };
    cache.store(&client.cache_key(), &bogus).unwrap();
    assert_eq!(
        cache
            .get_fresh(&client, Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
    assert_eq!(cache.get(&client.cache_key()).unwrap(), None);
    let error = client.refresh("not-a-refresh-token").await.unwrap_err();
    assert!(
        matches!(error, IdentityError::TokenEndpoint { ref error, .. } if error == "invalid_grant"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_authorization_grant() {
    let provider = OidcProvider::start().await;
    let client = provider.login_client().await;

    let (code_sender, code_receiver) = oneshot::channel::<DeviceCode>();
    let browser = tokio::spawn(async move {
        let code = code_receiver.await.unwrap();
        let mut browser = Browser::new();
        let verification = url::Url::parse(&code.verification_uri).unwrap();
        let form = browser.get(&verification).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let xsrf = hidden_field(&form.body, "xsrf");
        let confirm = browser
            .post(
                &verification,
                &[("xsrf", &xsrf), ("user_code", &code.user_code)],
            )
            .await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        let xsrf = hidden_field(&confirm.body, "xsrf");
        let after_confirm = browser
            .post(
                &verification,
                &[
                    ("xsrf", &xsrf),
                    ("user_code", &code.user_code),
                    ("confirm", "yes"),
                ],
            )
            .await;
        browser.sign_in_from(after_confirm, "dba@example.com").await
    });

    let tokens = client
        .device(
            move |code| {
                assert!(!code.user_code.is_empty());
                code_sender.send(code.clone()).unwrap();
            },
            LOGIN_TIMEOUT,
        )
        .await
        .unwrap();
    let success = browser.await.unwrap();
    assert!(success.body.contains("Sign-in Success"), "{}", success.body);

    let principal = provider.verifier().verify(&tokens.id_token).await.unwrap();
    assert_eq!(principal.id, "dba@example.com");
    assert_eq!(principal.groups, vec!["eng", "dba"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_reports_a_refusal() {
    let provider = OidcProvider::start().await;
    let client = provider.login_client().await;
    let (code_sender, code_receiver) = oneshot::channel::<DeviceCode>();
    let browser = tokio::spawn(async move {
        let code = code_receiver.await.unwrap();
        let mut browser = Browser::new();
        let verification = url::Url::parse(&code.verification_uri).unwrap();
        let form = browser.get(&verification).await;
        let xsrf = hidden_field(&form.body, "xsrf");
        let confirm = browser
            .post(
                &verification,
                &[("xsrf", &xsrf), ("user_code", &code.user_code)],
            )
            .await;
        let xsrf = hidden_field(&confirm.body, "xsrf");
        browser
            .post(
                &verification,
                &[
                    ("xsrf", &xsrf),
                    ("user_code", &code.user_code),
                    ("abort", "yes"),
                ],
            )
            .await
    });
    let error = client
        .device(
            move |code| code_sender.send(code.clone()).unwrap(),
            LOGIN_TIMEOUT,
        )
        .await
        .unwrap_err();
    browser.await.unwrap();
    assert!(
        error
            .to_string()
            .starts_with("the identity provider refused the login: `access_denied`"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_by_other_audiences_and_issuers() {
    let provider = OidcProvider::start().await;
    let client = provider.login_client().await;
    let tokens = log_in_with_browser(&client, "bob").await;
    let principal = provider.verifier().verify(&tokens.id_token).await.unwrap();
    assert_eq!(principal.id, "bob@example.com");
    assert_eq!(principal.subject, "bob");
    assert!(principal.groups.is_empty());

    let other_audience =
        OidcIssuerSettings::new(provider.issuer.clone(), vec!["another-app".to_owned()]);
    let verifier = Verifier::new(vec![other_audience], None).unwrap();
    let error = verifier.verify(&tokens.id_token).await.unwrap_err();
    assert!(
        matches!(error, IdentityError::WrongAudience { .. }),
        "{error}"
    );
    assert!(!error.to_string().contains(&tokens.id_token));

    let other_issuer =
        OidcIssuerSettings::new("http://127.0.0.1:9/other", vec![CLIENT_ID.to_owned()]);
    let verifier = Verifier::new(vec![other_issuer], None).unwrap();
    let error = verifier.verify(&tokens.id_token).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("unknown token issuer `{}`", provider.issuer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_the_callback_times_out() {
    let provider = OidcProvider::start().await;
    let client = provider.login_client().await;
    let error = client
        .authorization_code(|_url| {}, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(error, IdentityError::LoginTimeout { .. }),
        "{error}"
    );
}
