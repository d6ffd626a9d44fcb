//! Verifier tests with hand-made keys, against a key set served by a tiny
//! HTTP server on 127.0.0.1. Each test tries one way to get a bad token
//! accepted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::token::{base64url, now_seconds};
use crate::{DevIssuer, DevIssuerSettings, IdentityError, OidcIssuerSettings, Verifier};

fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A signing key and its public JWK.
struct TestKey {
    kid: Option<String>,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    public_bytes: Vec<u8>,
}

impl TestKey {
    fn es256(kid: &str) -> TestKey {
        let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&signing).unwrap();
        let point = signing.verifying_key().to_encoded_point(false);
        let x = base64url(point.x().unwrap());
        let y = base64url(point.y().unwrap());
        TestKey {
            kid: Some(kid.to_owned()),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"}),
            public_bytes: point.as_bytes().to_vec(),
        }
    }

    fn ed25519(kid: Option<&str>) -> TestKey {
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let der = signing.to_pkcs8_der().unwrap();
        let public = signing.verifying_key().to_bytes();
        let mut jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": base64url(&public)});
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        TestKey {
            kid: kid.map(str::to_owned),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk,
            public_bytes: public.to_vec(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()})
}

/// Serves a discovery document and a key set, and counts the requests.
struct IdpServer {
    issuer: String,
    jwks: Arc<Mutex<Value>>,
    requests: Arc<AtomicUsize>,
    jwks_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IdpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IdpServer {
    async fn start(jwks: Value) -> IdpServer {
        Self::start_claiming(jwks, None).await
    }

    /// `claimed_issuer` is what the discovery document says, to test a
    /// provider that names another issuer.
    async fn start_claiming(jwks: Value, claimed_issuer: Option<&str>) -> IdpServer {
        install_crypto_provider();
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({
            "issuer": claimed_issuer.unwrap_or(&issuer),
            "jwks_uri": format!("{issuer}/jwks"),
        });
        let jwks = Arc::new(Mutex::new(jwks));
        let requests = Arc::new(AtomicUsize::new(0));
        let jwks_requests = Arc::new(AtomicUsize::new(0));
        let task = {
            let (jwks, requests, jwks_requests) =
                (jwks.clone(), requests.clone(), jwks_requests.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("");
                    let (status, body) = match path {
                        "/.well-known/openid-configuration" => ("200 OK", discovery.to_string()),
                        "/jwks" => {
                            jwks_requests.fetch_add(1, Ordering::SeqCst);
                            ("200 OK", jwks.lock().unwrap().to_string())
                        }
                        _ => ("404 Not Found", "{}".to_owned()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            })
        };
        IdpServer {
            issuer,
            jwks,
            requests,
            jwks_requests,
            task,
        }
    }

    fn settings(&self) -> OidcIssuerSettings {
        OidcIssuerSettings::new(self.issuer.clone(), vec!["portcullis".to_owned()])
    }

    fn verifier(&self) -> Verifier {
        Verifier::new(vec![self.settings()], None).unwrap()
    }

    fn set_jwks(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn jwks_requests(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }

    /// Claims that pass every check.
    fn claims(&self) -> Value {
        let now = now_seconds();
        json!({
            "iss": self.issuer,
            "aud": "portcullis",
            "sub": "user-1",
            "email": "alice@example.com",
            "groups": ["eng", "dba"],
            "iat": now,
            "exp": now + 300,
        })
    }
}

/// Asserts that no error message ever quotes the token or its signature.
fn assert_does_not_leak(error: &IdentityError, token: &str) {
    let message = error.to_string();
    assert!(!message.contains(token), "{message}");
    if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 8) {
        assert!(!message.contains(signature), "{message}");
    }
}

async fn refused(verifier: &Verifier, token: &str) -> IdentityError {
    let error = verifier.verify(token).await.unwrap_err();
    assert_does_not_leak(&error, token);
    error
}

#[tokio::test]
async fn accepts_a_valid_token_and_builds_the_principal() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let claims = idp.claims();
    let token = key.sign(&claims);
    let principal = idp.verifier().verify(&token).await.unwrap();
    assert_eq!(principal.id, "alice@example.com");
    assert_eq!(principal.subject, "user-1");
    assert_eq!(principal.email.as_deref(), Some("alice@example.com"));
    assert_eq!(principal.groups, vec!["eng", "dba"]);
    assert_eq!(principal.issuer, idp.issuer);
    assert_eq!(principal.expires_at, claims["exp"].as_u64().unwrap());
}

#[tokio::test]
async fn refuses_an_expired_token_beyond_the_leeway() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    claims["exp"] = json!(1_795_507_200u64 - 86_400 * 365 * 2);
    let token = key.sign(&claims);
    let error = refused(&idp.verifier(), &token).await;
    assert_eq!(error.to_string(), "token expired at 2024-11-24T08:00:00Z");

    claims["exp"] = json!(now_seconds() - 45);
    let token = key.sign(&claims);
    assert!(matches!(
        refused(&idp.verifier(), &token).await,
        IdentityError::Expired { .. }
    ));
}

#[tokio::test]
async fn accepts_a_token_expired_within_the_leeway() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    claims["exp"] = json!(now_seconds() - 10);
    let token = key.sign(&claims);
    idp.verifier().verify(&token).await.unwrap();

    let mut strict = idp.settings();
    strict.leeway = Duration::ZERO;
    let verifier = Verifier::new(vec![strict], None).unwrap();
    assert!(matches!(
        refused(&verifier, &token).await,
        IdentityError::Expired { .. }
    ));
}

#[tokio::test]
async fn refuses_a_token_without_exp() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    claims.as_object_mut().unwrap().remove("exp");
    let error = refused(&idp.verifier(), &key.sign(&claims)).await;
    assert_eq!(error.to_string(), "token has no `exp` claim");
}

#[tokio::test]
async fn refuses_a_token_not_yet_valid() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    claims["nbf"] = json!(now_seconds() + 300);
    let error = refused(&idp.verifier(), &key.sign(&claims)).await;
    assert!(
        matches!(error, IdentityError::NotYetValid { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("token is not valid before 20"),
        "{error}"
    );

    claims["nbf"] = json!(now_seconds() + 10);
    idp.verifier().verify(&key.sign(&claims)).await.unwrap();
}

#[tokio::test]
async fn refuses_a_token_for_another_audience() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    claims["aud"] = json!("other-app");
    let error = refused(&idp.verifier(), &key.sign(&claims)).await;
    assert_eq!(
        error.to_string(),
        format!(
            "token audience `other-app` is not accepted for issuer `{}` (expected one of `portcullis`)",
            idp.issuer
        )
    );

    claims["aud"] = json!(["other-app", "portcullis"]);
    idp.verifier().verify(&key.sign(&claims)).await.unwrap();

    claims.as_object_mut().unwrap().remove("aud");
    let error = refused(&idp.verifier(), &key.sign(&claims)).await;
    assert_eq!(error.to_string(), "token has no `aud` claim");
}

#[tokio::test]
async fn refuses_an_unknown_issuer_without_fetching_anything() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    claims["iss"] = json!("https://evil.example");
    let error = refused(&idp.verifier(), &key.sign(&claims)).await;
    assert_eq!(
        error.to_string(),
        "unknown token issuer `https://evil.example`"
    );

    // A trailing slash is another issuer: `iss` is compared exactly.
    claims["iss"] = json!(format!("{}/", idp.issuer));
    let error = refused(&idp.verifier(), &key.sign(&claims)).await;
    assert!(
        matches!(error, IdentityError::UnknownIssuer { .. }),
        "{error}"
    );
    assert_eq!(idp.requests(), 0);
}

#[tokio::test]
async fn refuses_alg_none_before_any_key_lookup() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let payload = base64url(idp.claims().to_string().as_bytes());
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"none","kid":"k1"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
    ] {
        let token = format!("{}.{payload}.", base64url(header.as_bytes()));
        let error = refused(&idp.verifier(), &token).await;
        assert!(
            matches!(error, IdentityError::AlgorithmNotAccepted { .. }),
            "{header}: {error}"
        );
    }
    let token = format!("{}.{payload}.", base64url(br#"{"alg":"none"}"#));
    assert_eq!(
        refused(&idp.verifier(), &token).await.to_string(),
        "token algorithm `none` is not accepted (use an asymmetric algorithm such as RS256, ES256 or EdDSA)"
    );
    assert_eq!(idp.requests(), 0, "the key set must not even be fetched");
}

#[tokio::test]
async fn refuses_hs256_signed_with_the_public_key_as_secret() {
    // The classic key-confusion attack: a verifier that lets the token pick
    // HMAC would check the MAC with the (public) key bytes as the secret.
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let verifier = idp.verifier();
    verifier.warm_up().await;
    let requests_after_warm_up = idp.requests();

    let secrets: Vec<Vec<u8>> = vec![
        key.public_bytes.clone(),
        key.jwk.to_string().into_bytes(),
        key.jwk["x"].as_str().unwrap().as_bytes().to_vec(),
    ];
    for (alg, secret) in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        .into_iter()
        .flat_map(|alg| secrets.iter().map(move |secret| (alg, secret)))
    {
        let mut header = Header::new(alg);
        header.kid = Some("k1".to_owned());
        let token = jsonwebtoken::encode(&header, &idp.claims(), &EncodingKey::from_secret(secret))
            .unwrap();
        let error = refused(&verifier, &token).await;
        assert!(
            matches!(error, IdentityError::AlgorithmNotAccepted { .. }),
            "{error}"
        );
    }
    assert_eq!(idp.requests(), requests_after_warm_up);
}

#[tokio::test]
async fn refuses_a_token_signed_by_another_key_with_the_same_kid() {
    let key = TestKey::es256("k1");
    let impostor = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let token = impostor.sign(&idp.claims());
    let error = refused(&idp.verifier(), &token).await;
    assert_eq!(
        error.to_string(),
        format!("token signature is not valid for issuer `{}`", idp.issuer)
    );
}

#[tokio::test]
async fn refuses_a_tampered_payload() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let token = key.sign(&idp.claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut claims = idp.claims();
    claims["groups"] = json!(["admin"]);
    let forged_payload = base64url(claims.to_string().as_bytes());
    parts[1] = &forged_payload;
    let error = refused(&idp.verifier(), &parts.join(".")).await;
    assert!(
        matches!(error, IdentityError::InvalidSignature { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_kid_triggers_exactly_one_refetch() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let verifier = idp.verifier();
    verifier.warm_up().await;
    assert_eq!(idp.jwks_requests(), 1);

    let stranger = TestKey::es256("k-unknown");
    for _ in 0..5 {
        let error = refused(&verifier, &stranger.sign(&idp.claims())).await;
        assert_eq!(
            error.to_string(),
            format!(
                "token signing key `k-unknown` is not among the keys of issuer `{}`",
                idp.issuer
            )
        );
    }
    assert_eq!(idp.jwks_requests(), 2, "one re-fetch, then the rate limit");
    // Known keys keep working without any fetch.
    verifier.verify(&key.sign(&idp.claims())).await.unwrap();
    assert_eq!(idp.jwks_requests(), 2);
}

#[tokio::test]
async fn picks_up_a_key_rotation() {
    let old = TestKey::es256("2025");
    let new = TestKey::es256("2026");
    let idp = IdpServer::start(jwks(&[&old])).await;
    let verifier = idp.verifier();
    verifier.verify(&old.sign(&idp.claims())).await.unwrap();
    assert_eq!(idp.jwks_requests(), 1);

    idp.set_jwks(jwks(&[&new]));
    let principal = verifier.verify(&new.sign(&idp.claims())).await.unwrap();
    assert_eq!(principal.id, "alice@example.com");
    assert_eq!(idp.jwks_requests(), 2);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_refetch() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let verifier = idp.verifier();
    verifier.warm_up().await;
    let stranger = TestKey::es256("k-unknown");
    let token = stranger.sign(&idp.claims());
    let attempts: Vec<_> = (0..10)
        .map(|_| {
            let (verifier, token) = (verifier.clone(), token.clone());
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for attempt in attempts {
        assert!(attempt.await.unwrap().is_err());
    }
    assert_eq!(idp.jwks_requests(), 2);
}

#[tokio::test]
async fn accepts_a_token_without_kid_only_when_one_key_fits() {
    let key = TestKey::ed25519(None);
    let idp = IdpServer::start(jwks(&[&key])).await;
    let principal = idp
        .verifier()
        .verify(&key.sign(&idp.claims()))
        .await
        .unwrap();
    assert_eq!(principal.id, "alice@example.com");

    // An EC key does not count as a candidate for an EdDSA token.
    let ec = TestKey::es256("ec");
    idp.set_jwks(jwks(&[&key, &ec]));
    idp.verifier()
        .verify(&key.sign(&idp.claims()))
        .await
        .unwrap();

    let second = TestKey::ed25519(Some("second"));
    idp.set_jwks(jwks(&[&key, &second]));
    let error = refused(&idp.verifier(), &key.sign(&idp.claims())).await;
    assert!(
        matches!(error, IdentityError::AmbiguousKey { candidates: 2, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn refuses_a_token_whose_alg_differs_from_the_key_alg() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    // Same kid, but the token claims EdDSA: the key says ES256.
    let other = TestKey::ed25519(Some("k1"));
    let error = refused(&idp.verifier(), &other.sign(&idp.claims())).await;
    assert_eq!(
        error.to_string(),
        format!(
            "signing key `k1` of issuer `{}` cannot verify `EdDSA` tokens (the key is for `ES256`)",
            idp.issuer
        )
    );
}

#[tokio::test]
async fn reads_groups_from_the_configured_claim() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut settings = idp.settings();
    settings.groups_claim = "roles".to_owned();
    let verifier = Verifier::new(vec![settings], None).unwrap();

    let mut claims = idp.claims();
    claims["roles"] = json!(["ops"]);
    assert_eq!(
        verifier.verify(&key.sign(&claims)).await.unwrap().groups,
        vec!["ops"]
    );

    claims["roles"] = json!("single");
    assert_eq!(
        verifier.verify(&key.sign(&claims)).await.unwrap().groups,
        vec!["single"]
    );

    claims.as_object_mut().unwrap().remove("roles");
    assert!(verifier
        .verify(&key.sign(&claims))
        .await
        .unwrap()
        .groups
        .is_empty());

    for bad in [json!({"a": 1}), json!([1, 2]), json!(true)] {
        claims["roles"] = bad;
        let error = refused(&verifier, &key.sign(&claims)).await;
        assert_eq!(
            error.to_string(),
            "token claim `roles` is not valid: expected a string or an array of strings"
        );
    }
}

#[tokio::test]
async fn names_the_user_by_the_configured_claim() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    // By default, `email`: a token without one is refused, not named by its
    // `sub` (the same person twice, picked by the login's scopes).
    assert_eq!(
        idp.verifier().verify(&key.sign(&claims)).await.unwrap().id,
        "alice@example.com"
    );
    claims.as_object_mut().unwrap().remove("email");
    let error = refused(&idp.verifier(), &key.sign(&claims)).await;
    assert!(
        error
            .to_string()
            .starts_with("token has no `email` claim, which names the user"),
        "{error}"
    );
    let mut settings = idp.settings();
    settings.user_claim = Some("sub".to_owned());
    let principal = Verifier::new(vec![settings], None)
        .unwrap()
        .verify(&key.sign(&claims))
        .await
        .unwrap();
    assert_eq!(principal.id, "user-1");
    assert_eq!(principal.email, None);

    let mut settings = idp.settings();
    settings.user_claim = Some("preferred_username".to_owned());
    let verifier = Verifier::new(vec![settings], None).unwrap();
    claims["preferred_username"] = json!("alice");
    assert_eq!(
        verifier.verify(&key.sign(&claims)).await.unwrap().id,
        "alice"
    );
    claims.as_object_mut().unwrap().remove("preferred_username");
    let error = refused(&verifier, &key.sign(&claims)).await;
    assert_eq!(error.to_string(), "token has no `preferred_username` claim");

    // A name unique only at its provider, with another provider trusted:
    // one's `alice` could be the other's.
    let mut by_name = idp.settings();
    by_name.user_claim = Some("preferred_username".to_owned());
    let other = OidcIssuerSettings::new("https://other.example.com", vec!["portcullis".into()]);
    let error = Verifier::new(vec![other.clone(), by_name], None).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("names its users by `preferred_username`"),
        "{error}"
    );
    let mut by_email = idp.settings();
    by_email.user_claim = Some("email".to_owned());
    assert!(Verifier::new(vec![other, by_email.clone()], None).is_ok());
    // The dev issuer is another: its `svc-deploy` would be the provider's.
    let dir = tempfile::tempdir().unwrap();
    let mut by_sub = idp.settings();
    by_sub.user_claim = Some("sub".to_owned());
    let error = Verifier::new(vec![by_sub], Some(dev_issuer(dir.path()))).unwrap_err();
    assert!(
        error.to_string().contains("names its users by `sub`"),
        "{error}"
    );
    assert!(Verifier::new(vec![by_email], Some(dev_issuer(dir.path()))).is_ok());
}

#[tokio::test]
async fn refuses_an_unverified_email_as_the_user_id() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    let mut claims = idp.claims();
    for unverified in [
        json!(false),
        json!("false"),
        json!("False"),
        json!("no"),
        json!(0),
        json!(null),
    ] {
        claims["email_verified"] = unverified;
        let error = refused(&idp.verifier(), &key.sign(&claims)).await;
        assert_eq!(
            error.to_string(),
            "token email `alice@example.com` is not verified (`email_verified` is false)"
        );
        assert_eq!(error.side(), crate::ErrorSide::Client);
    }
    for verified in [json!(true), json!("true"), json!("TRUE")] {
        claims["email_verified"] = verified;
        idp.verifier().verify(&key.sign(&claims)).await.unwrap();
    }
}

#[tokio::test]
async fn refuses_names_and_groups_with_control_or_invisible_characters() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start(jwks(&[&key])).await;
    for (claim, value) in [
        ("sub", json!("mallory\n2026-12-01T15:00:00Z INFO fake line")),
        ("email", json!("mal\u{1b}[2Jlory@example.com")),
        ("email", json!("alice@example.com\u{202e}")),
        ("groups", json!(["eng", "d\rba"])),
        ("groups", json!("ops\u{200b}")),
    ] {
        let mut claims = idp.claims();
        claims[claim] = value;
        let error = refused(&idp.verifier(), &key.sign(&claims)).await;
        assert!(
            error
                .to_string()
                .contains("control or invisible characters"),
            "{claim}: {error}"
        );
    }
    // A space at either end reads as the name without it.
    for (claim, value) in [
        ("email", json!("alice@example.com ")),
        ("sub", json!(" alice")),
        ("groups", json!(["dba "])),
    ] {
        let mut claims = idp.claims();
        claims[claim] = value;
        let error = refused(&idp.verifier(), &key.sign(&claims)).await;
        assert!(
            error.to_string().contains("begins or ends with a space"),
            "{claim}: {error}"
        );
    }
    // Letters of any script are fine, and spaces inside a name.
    let mut claims = idp.claims();
    claims["groups"] = json!(["équipe", "開発", "on call"]);
    idp.verifier().verify(&key.sign(&claims)).await.unwrap();
}

#[tokio::test]
async fn trusts_several_issuers_at_once() {
    let key_a = TestKey::es256("a");
    let key_b = TestKey::ed25519(Some("b"));
    let idp_a = IdpServer::start(jwks(&[&key_a])).await;
    let idp_b = IdpServer::start(jwks(&[&key_b])).await;
    let verifier = Verifier::new(vec![idp_a.settings(), idp_b.settings()], None).unwrap();
    assert_eq!(
        verifier
            .verify(&key_a.sign(&idp_a.claims()))
            .await
            .unwrap()
            .issuer,
        idp_a.issuer
    );
    assert_eq!(
        verifier
            .verify(&key_b.sign(&idp_b.claims()))
            .await
            .unwrap()
            .issuer,
        idp_b.issuer
    );

    // Issuer A's key cannot sign for issuer B, even with B's kid.
    let mut forged = TestKey::es256("b");
    forged.encoding = key_a.encoding.clone();
    let error = refused(&verifier, &forged.sign(&idp_b.claims())).await;
    assert!(
        matches!(error, IdentityError::KeyAlgorithmMismatch { .. }),
        "{error}"
    );
    let error = refused(&verifier, &key_a.sign(&idp_b.claims())).await;
    assert!(
        matches!(error, IdentityError::UnknownKeyId { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn reports_an_unreachable_provider() {
    install_crypto_provider();
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let verifier = Verifier::new(
        vec![OidcIssuerSettings::new(
            issuer.clone(),
            vec!["p".to_owned()],
        )],
        None,
    )
    .unwrap();
    verifier.warm_up().await;
    let key = TestKey::es256("k1");
    let now = now_seconds();
    let token = key.sign(&json!({"iss": issuer, "aud": "p", "sub": "s", "exp": now + 60}));
    let error = refused(&verifier, &token).await;
    assert_eq!(error.side(), crate::ErrorSide::Internal);
    assert!(
        error.to_string().starts_with(&format!(
            "could not fetch the signing keys of issuer `{issuer}`: "
        )),
        "{error}"
    );
}

#[tokio::test]
async fn refuses_a_provider_whose_discovery_names_another_issuer() {
    let key = TestKey::es256("k1");
    let idp = IdpServer::start_claiming(jwks(&[&key]), Some("https://evil.example")).await;
    let error = refused(&idp.verifier(), &key.sign(&idp.claims())).await;
    assert!(
        matches!(error, IdentityError::KeysUnavailable { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("names the issuer `https://evil.example`"),
        "{error}"
    );
}

#[test]
fn refuses_bad_settings() {
    install_crypto_provider();
    let no_audience = OidcIssuerSettings::new("https://a", vec![]);
    assert!(matches!(
        Verifier::new(vec![no_audience], None),
        Err(IdentityError::InvalidSettings { .. })
    ));
    let twice = OidcIssuerSettings::new("https://a", vec!["p".to_owned()]);
    let error = Verifier::new(vec![twice.clone(), twice], None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid identity settings: issuer `https://a` is configured twice"
    );
    let mut lax = OidcIssuerSettings::new("https://a", vec!["p".to_owned()]);
    lax.leeway = Duration::from_secs(3600);
    assert!(Verifier::new(vec![lax], None).is_err());
}

fn dev_issuer(dir: &std::path::Path) -> DevIssuer {
    DevIssuer::load_or_create(DevIssuerSettings {
        issuer: "portcullis-dev".to_owned(),
        audience: "portcullis".to_owned(),
        key_path: dir.join("dev.key"),
    })
    .unwrap()
}

#[tokio::test]
async fn verifies_dev_tokens_only_when_the_dev_issuer_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev_issuer(dir.path());
    let token = dev
        .issue(
            "dba@example.com",
            &["eng".to_owned(), "dba".to_owned()],
            Duration::from_secs(60),
        )
        .unwrap();

    let with_dev = Verifier::new(vec![], Some(dev.clone())).unwrap();
    let principal = with_dev.verify(&token).await.unwrap();
    assert_eq!(principal.id, "dba@example.com");
    assert_eq!(principal.groups, vec!["eng", "dba"]);
    assert_eq!(principal.issuer, "portcullis-dev");

    let without_dev = Verifier::new(vec![], None).unwrap();
    let error = refused(&without_dev, &token).await;
    assert_eq!(error.to_string(), "unknown token issuer `portcullis-dev`");

    // Another dev key (another gateway's, say) is not trusted either.
    let other_dir = tempfile::tempdir().unwrap();
    let other = dev_issuer(other_dir.path());
    let foreign = other
        .issue("dba@example.com", &[], Duration::from_secs(60))
        .unwrap();
    let error = refused(&with_dev, &foreign).await;
    assert!(
        matches!(error, IdentityError::UnknownKeyId { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn refuses_a_dev_token_with_a_tampered_payload() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev_issuer(dir.path());
    let verifier = Verifier::new(vec![], Some(dev.clone())).unwrap();
    let token = dev
        .issue("bob@example.com", &[], Duration::from_secs(60))
        .unwrap();
    let mut claims = crate::token::insecure_claims(&token).unwrap();
    claims.insert("groups".to_owned(), json!(["dba"]));
    let forged_payload = base64url(Value::Object(claims).to_string().as_bytes());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let error = refused(&verifier, &forged).await;
    assert_eq!(
        error.to_string(),
        "token signature is not valid for issuer `portcullis-dev`"
    );

    let expired = dev.issue("bob@example.com", &[], Duration::ZERO).unwrap();
    // Still within the default leeway: accepted.
    verifier.verify(&expired).await.unwrap();
}
