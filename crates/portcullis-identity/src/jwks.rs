//! Signing keys: parsing a JWKS, choosing the key for a token, and the cache
//! of each OpenID provider's keys.
//!
//! The cache fetches the discovery document once (for `jwks_uri`), then the
//! key set. A token whose `kid` is not in the cache triggers one re-fetch, at
//! most once per [`REFETCH_INTERVAL`] per issuer, so a stream of tokens with
//! invented `kid`s cannot make the gateway hammer the provider.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{quote, IdentityError};
use crate::http;
use crate::token::{accepted_algorithm, algorithm_name};

/// Re-fetches for an unknown `kid` happen at most this often per issuer.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// After a failed first fetch, verifications report the failure without
/// trying again for this long.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Keys older than this are re-fetched (so a key the provider withdrew stops
/// being trusted); if that fails, the old keys stay in use, up to
/// [`MAX_KEPT_KEY_AGE`].
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// Keys that could not be re-fetched for this long are no longer used: a
/// provider that cannot be asked which keys it still signs with for a day is
/// not taken at its word of yesterday (a withdrawn key, leaked, would be
/// trusted for as long as someone kept the key set out of reach).
pub const MAX_KEPT_KEY_AGE: Duration = Duration::from_secs(24 * 3600);

/// RSA keys shorter than this are ignored.
const MIN_RSA_BITS: usize = 2048;

/// The kind of key, which decides the algorithms it can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyFamily {
    fn verifies(self, alg: Algorithm) -> bool {
        match self {
            KeyFamily::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyFamily::P256 => alg == Algorithm::ES256,
            KeyFamily::P384 => alg == Algorithm::ES384,
            KeyFamily::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyFamily::Rsa => "an RSA key",
            KeyFamily::P256 => "a P-256 key",
            KeyFamily::P384 => "a P-384 key",
            KeyFamily::Ed25519 => "an Ed25519 key",
        }
    }
}

/// One public key that may verify tokens.
#[derive(Clone, Debug)]
pub struct VerificationKey {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it names one.
    pub alg: Option<Algorithm>,
    pub family: KeyFamily,
    pub key: DecodingKey,
}

impl VerificationKey {
    /// Whether this key may verify a token signed with `alg`: the key type
    /// fits, and the key's own `alg` (when present) is the same.
    pub fn verifies(&self, alg: Algorithm) -> bool {
        self.family.verifies(alg) && self.alg.is_none_or(|own| own == alg)
    }

    pub fn kid_or_none(&self) -> String {
        self.kid.clone().unwrap_or_else(|| "(no kid)".to_owned())
    }

    /// Parses one JWK. `Ok(None)` for a key that is well-formed but not for
    /// verifying signatures (an encryption key, a symmetric key, an unknown
    /// type): such keys are skipped, never used.
    pub fn from_jwk(jwk: &Value) -> Result<Option<VerificationKey>, String> {
        let Some(jwk) = jwk.as_object() else {
            return Err("a key is not a JSON object".to_owned());
        };
        let text = |name: &str| -> Result<Option<&str>, String> {
            match jwk.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(value)) => Ok(Some(value.as_str())),
                Some(_) => Err(format!("a key's `{name}` is not a string")),
            }
        };
        if text("use")?.is_some_and(|usage| usage != "sig") {
            return Ok(None);
        }
        if let Some(operations) = jwk.get("key_ops").and_then(Value::as_array) {
            if !operations.iter().any(|op| op.as_str() == Some("verify")) {
                return Ok(None);
            }
        }
        let alg = match text("alg")? {
            None => None,
            Some(name) => match accepted_algorithm(name) {
                Some(alg) => Some(alg),
                // An HMAC, encryption or unknown algorithm: not a key this
                // verifier may use.
                None => return Ok(None),
            },
        };
        let kid = text("kid")?.map(str::to_owned);
        let required = |name: &str| -> Result<&str, String> {
            text(name)?.ok_or_else(|| format!("a key has no `{name}`"))
        };

        let (family, key) = match text("kty")? {
            Some("RSA") => {
                let n = decode(required("n")?, "n")?;
                let e = decode(required("e")?, "e")?;
                let significant = n.iter().skip_while(|byte| **byte == 0).count();
                if significant * 8 < MIN_RSA_BITS {
                    return Err(format!(
                        "key `{}` is an RSA key shorter than {MIN_RSA_BITS} bits",
                        quote(kid.as_deref().unwrap_or("(no kid)"))
                    ));
                }
                (KeyFamily::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
            }
            Some("EC") => {
                let (family, length) = match required("crv")? {
                    "P-256" => (KeyFamily::P256, 32),
                    "P-384" => (KeyFamily::P384, 48),
                    _ => return Ok(None),
                };
                let x = required("x")?;
                let y = required("y")?;
                if decode(x, "x")?.len() != length || decode(y, "y")?.len() != length {
                    return Err("an EC key has coordinates of the wrong length".to_owned());
                }
                let key =
                    DecodingKey::from_ec_components(x, y).map_err(|error| error.to_string())?;
                (family, key)
            }
            Some("OKP") => {
                if required("crv")? != "Ed25519" {
                    return Ok(None);
                }
                let x = required("x")?;
                // INVARIANT: jsonwebtoken slices the first 32 bytes of an
                // Ed25519 key; a shorter one would make it panic.
                if decode(x, "x")?.len() != 32 {
                    return Err("an Ed25519 key is not 32 bytes long".to_owned());
                }
                let key = DecodingKey::from_ed_components(x).map_err(|error| error.to_string())?;
                (KeyFamily::Ed25519, key)
            }
            // Symmetric (`oct`) keys are never trusted: a JWKS is public.
            _ => return Ok(None),
        };
        if let Some(alg) = alg {
            if !family.verifies(alg) {
                return Err(format!(
                    "key `{}` is {} but names `{}`",
                    quote(kid.as_deref().unwrap_or("(no kid)")),
                    family.describe(),
                    algorithm_name(alg)
                ));
            }
        }
        Ok(Some(VerificationKey {
            kid,
            alg,
            family,
            key,
        }))
    }
}

fn decode(value: &str, name: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("a key's `{name}` is not base64url"))
}

/// The outcome of looking a key up for one token.
#[derive(Debug)]
pub enum Selection<'a> {
    Found(&'a VerificationKey),
    /// No key has the token's `kid`: maybe the provider rotated its keys.
    UnknownKid,
    /// Keys with the token's `kid` exist, none for its `alg`.
    WrongAlgorithm(&'a VerificationKey),
    /// The token has no `kid` and no key fits its `alg`.
    NoCandidate,
    /// The token has no `kid` and several keys fit its `alg`.
    Ambiguous(usize),
}

impl Selection<'_> {
    /// Whether fetching the keys again could change the answer.
    fn may_need_new_keys(&self) -> bool {
        matches!(self, Selection::UnknownKid | Selection::NoCandidate)
    }
}

/// A key set as fetched at one moment.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
    fetched_at: Instant,
}

impl KeySet {
    pub fn new(keys: Vec<VerificationKey>) -> Self {
        KeySet {
            keys,
            fetched_at: Instant::now(),
        }
    }

    /// Parses a JWKS document (`{"keys": [...]}`). A malformed key is skipped
    /// with a warning rather than failing the whole set: one bad entry must
    /// not lock every user out.
    pub fn from_jwks(document: &Value, issuer: &str) -> Result<Self, String> {
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err("the key set has no `keys` array".to_owned());
        };
        let mut keys = Vec::new();
        for entry in entries {
            match VerificationKey::from_jwk(entry) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(issuer, %reason, "ignoring a signing key of the issuer");
                }
            }
        }
        if keys.is_empty() {
            return Err("the key set has no usable signing key".to_owned());
        }
        Ok(KeySet::new(keys))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_stale(&self) -> bool {
        self.fetched_at.elapsed() > MAX_KEY_AGE
    }

    fn too_old_to_keep(&self) -> bool {
        self.fetched_at.elapsed() > MAX_KEPT_KEY_AGE
    }

    /// Chooses the key for a token with this `kid` (if any) and `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection<'_> {
        match kid {
            Some(kid) => {
                let mut same_kid = self
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .peekable();
                let Some(first) = same_kid.peek().copied() else {
                    return Selection::UnknownKid;
                };
                match same_kid.find(|key| key.verifies(alg)) {
                    Some(key) => Selection::Found(key),
                    None => Selection::WrongAlgorithm(first),
                }
            }
            None => {
                let mut usable = self.keys.iter().filter(|key| key.verifies(alg));
                match (usable.next(), usable.count()) {
                    (None, _) => Selection::NoCandidate,
                    (Some(key), 0) => Selection::Found(key),
                    (Some(_), others) => Selection::Ambiguous(others + 1),
                }
            }
        }
    }
}

/// Turns an unsuccessful [`Selection`] into the error to report.
pub fn selection_error(
    selection: Selection<'_>,
    issuer: &str,
    kid: Option<&str>,
    alg: Algorithm,
) -> IdentityError {
    let alg_name = algorithm_name(alg).to_owned();
    match selection {
        Selection::Found(_) => IdentityError::KeysUnavailable {
            issuer: issuer.to_owned(),
            reason: "internal error in key selection".to_owned(),
        },
        Selection::UnknownKid => IdentityError::UnknownKeyId {
            issuer: issuer.to_owned(),
            kid: quote(kid.unwrap_or_default()),
        },
        Selection::WrongAlgorithm(key) => IdentityError::KeyAlgorithmMismatch {
            issuer: issuer.to_owned(),
            kid: quote(&key.kid_or_none()),
            alg: alg_name,
            detail: match key.alg {
                Some(own) => format!(" (the key is for `{}`)", algorithm_name(own)),
                None => format!(" (it is {})", key.family.describe()),
            },
        },
        Selection::NoCandidate => IdentityError::AmbiguousKey {
            issuer: issuer.to_owned(),
            alg: alg_name,
            candidates: 0,
        },
        Selection::Ambiguous(candidates) => IdentityError::AmbiguousKey {
            issuer: issuer.to_owned(),
            alg: alg_name,
            candidates,
        },
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Default)]
struct FetchState {
    jwks_uri: Option<String>,
    /// When the first fetch last failed, and why.
    last_failure: Option<(Instant, String)>,
    /// When a fetch was last attempted, whatever the reason.
    last_attempt: Option<Instant>,
    /// When an unknown `kid` last caused a re-fetch.
    last_unknown_kid_refetch: Option<Instant>,
}

/// The cached keys of one OpenID provider.
pub struct RemoteKeys {
    issuer: String,
    discovery_url: String,
    http: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent verifications wait for one fetch
    /// instead of starting their own.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl RemoteKeys {
    pub fn new(issuer: String, discovery_url: String, http: reqwest::Client) -> Self {
        RemoteKeys {
            issuer,
            discovery_url,
            http,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, keys: Arc<KeySet>) {
        match self.current.write() {
            Ok(mut guard) => *guard = Some(keys),
            Err(poisoned) => *poisoned.into_inner() = Some(keys),
        }
    }

    /// Fetches the keys now, whatever the cache holds (start-up).
    pub async fn warm_up(&self) -> Result<usize, IdentityError> {
        let mut state = self.fetch.lock().await;
        match self.fetch_now(&mut state).await {
            Ok(keys) => Ok(keys.len()),
            Err(reason) => {
                state.last_failure = Some((Instant::now(), reason.clone()));
                Err(self.unavailable(reason))
            }
        }
    }

    /// The key set to look a token's key up in, fetched or re-fetched when the
    /// cache cannot answer (and the rate limits allow).
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeySet>, IdentityError> {
        if let Some(keys) = self.current() {
            if !keys.is_stale() && !keys.select(kid, alg).may_need_new_keys() {
                return Ok(keys);
            }
        }

        let mut state = self.fetch.lock().await;
        // Another verification may have fetched while this one waited.
        let Some(keys) = self.current() else {
            if let Some((at, reason)) = &state.last_failure {
                if at.elapsed() < FAILURE_BACKOFF {
                    return Err(self.unavailable(reason.clone()));
                }
            }
            return match self.fetch_now(&mut state).await {
                Ok(keys) => Ok(keys),
                Err(reason) => {
                    state.last_failure = Some((Instant::now(), reason.clone()));
                    Err(self.unavailable(reason))
                }
            };
        };

        let wants_new_key = keys.select(kid, alg).may_need_new_keys();
        if wants_new_key {
            let recently = state
                .last_unknown_kid_refetch
                .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL);
            if recently {
                return Ok(keys);
            }
            state.last_unknown_kid_refetch = Some(Instant::now());
        } else {
            // Only age brought us here: refresh, unless a fetch was tried
            // recently (the provider may be down).
            let tried_recently = state
                .last_attempt
                .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL);
            if !keys.is_stale() {
                return Ok(keys);
            }
            if tried_recently {
                return match (&state.last_failure, keys.too_old_to_keep()) {
                    (Some((_, reason)), true) => Err(self.too_old(reason.clone())),
                    _ => Ok(keys),
                };
            }
        }

        match self.fetch_now(&mut state).await {
            Ok(fresh) => {
                state.last_failure = None;
                Ok(fresh)
            }
            Err(reason) if keys.too_old_to_keep() => {
                state.last_failure = Some((Instant::now(), reason.clone()));
                Err(self.too_old(reason))
            }
            Err(reason) => {
                tracing::warn!(
                    issuer = %self.issuer,
                    %reason,
                    "could not re-fetch the signing keys; keeping the cached ones"
                );
                Ok(keys)
            }
        }
    }

    /// Why keys kept past [`MAX_KEPT_KEY_AGE`] are not used.
    fn too_old(&self, reason: String) -> IdentityError {
        self.unavailable(format!(
            "{reason}; the keys fetched last are over {} hours old, and no longer trusted",
            MAX_KEPT_KEY_AGE.as_secs() / 3600
        ))
    }

    fn unavailable(&self, reason: String) -> IdentityError {
        IdentityError::KeysUnavailable {
            issuer: self.issuer.clone(),
            reason,
        }
    }

    async fn fetch_now(&self, state: &mut FetchState) -> Result<Arc<KeySet>, String> {
        state.last_attempt = Some(Instant::now());
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let discovery: Discovery = http::get_json(&self.http, &self.discovery_url).await?;
                if discovery.issuer != self.issuer {
                    return Err(format!(
                        "the discovery document names the issuer `{}`",
                        quote(&discovery.issuer)
                    ));
                }
                state.jwks_uri = Some(discovery.jwks_uri.clone());
                discovery.jwks_uri
            }
        };
        let document: Value = match http::get_json(&self.http, &jwks_uri).await {
            Ok(document) => document,
            Err(reason) => {
                // The provider may have moved its keys: discover again next time.
                state.jwks_uri = None;
                return Err(reason);
            }
        };
        let keys = Arc::new(KeySet::from_jwks(&document, &self.issuer)?);
        tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched the signing keys");
        self.replace(keys.clone());
        state.last_failure = None;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Keys that cannot be re-fetched are used on for a while, not for ever.
    #[tokio::test]
    async fn keys_that_cannot_be_fetched_again_are_kept_a_day_at_most() {
        let keys = |age: Duration| {
            let mut set =
                KeySet::from_jwks(&json!({"keys": [ed25519_jwk(Some("k1"), None)]}), "i").unwrap();
            set.fetched_at = Instant::now().checked_sub(age).unwrap();
            Arc::new(set)
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Nothing listens there: every fetch fails.
        let remote = RemoteKeys::new(
            "http://127.0.0.1:9".into(),
            "http://127.0.0.1:9/.well-known/openid-configuration".into(),
            crate::http::client().unwrap(),
        );
        remote.replace(keys(MAX_KEY_AGE * 2));
        assert!(remote.keys_for(Some("k1"), Algorithm::EdDSA).await.is_ok());
        remote.replace(keys(MAX_KEPT_KEY_AGE + MAX_KEY_AGE));
        let mut state = remote.fetch.lock().await;
        state.last_attempt = None;
        drop(state);
        let error = remote
            .keys_for(Some("k1"), Algorithm::EdDSA)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no longer trusted"), "{error}");
        // And again, within the re-fetch interval.
        let error = remote
            .keys_for(Some("k1"), Algorithm::EdDSA)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no longer trusted"), "{error}");
    }

    fn ed25519_jwk(kid: Option<&str>, alg: Option<&str>) -> Value {
        let mut jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": crate::token::base64url(&[7u8; 32]),
        });
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    #[test]
    fn skips_keys_that_are_not_for_signatures() {
        let document = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "x"},
            ed25519_jwk(Some("ok"), Some("HS256")),
            ed25519_jwk(Some("ok"), None),
        ]});
        let set = KeySet::from_jwks(&document, "issuer").unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn refuses_short_or_inconsistent_keys() {
        let short = json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"});
        assert!(VerificationKey::from_jwk(&short).is_err());
        let short_rsa =
            json!({"kty": "RSA", "n": crate::token::base64url(&[0xff; 128]), "e": "AQAB"});
        assert!(VerificationKey::from_jwk(&short_rsa).is_err());
        let mislabelled = ed25519_jwk(Some("k"), Some("RS256"));
        assert!(VerificationKey::from_jwk(&mislabelled).is_err());
        let empty = json!({"keys": []});
        assert!(KeySet::from_jwks(&empty, "issuer").is_err());
    }

    #[test]
    fn selects_by_kid_and_algorithm() {
        let document =
            json!({"keys": [ed25519_jwk(Some("a"), None), ed25519_jwk(Some("b"), Some("EdDSA"))]});
        let set = KeySet::from_jwks(&document, "issuer").unwrap();
        assert!(matches!(
            set.select(Some("a"), Algorithm::EdDSA),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Some("c"), Algorithm::EdDSA),
            Selection::UnknownKid
        ));
        assert!(matches!(
            set.select(Some("a"), Algorithm::ES256),
            Selection::WrongAlgorithm(_)
        ));
        assert!(matches!(
            set.select(None, Algorithm::EdDSA),
            Selection::Ambiguous(2)
        ));
        assert!(matches!(
            set.select(None, Algorithm::RS256),
            Selection::NoCandidate
        ));

        let single = json!({"keys": [ed25519_jwk(None, None)]});
        let set = KeySet::from_jwks(&single, "issuer").unwrap();
        assert!(matches!(
            set.select(None, Algorithm::EdDSA),
            Selection::Found(_)
        ));
    }
}
