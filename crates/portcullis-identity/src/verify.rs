//! Token verification: from a bearer token to a [`Principal`].
//!
//! The order of the checks is part of the security argument:
//! 1. the token's shape and its header `alg`, against a list of asymmetric
//!    algorithms (no `none`, no HMAC), before anything else;
//! 2. the issuer, chosen by the unverified `iss` among the configured ones;
//! 3. the key, from that issuer's key set only, by `kid` and `alg`;
//! 4. the signature, then `iss`, `aud`, `exp`, `nbf` (jsonwebtoken checks the
//!    signature before it looks at any claim);
//! 5. the identity, from the verified claims.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use portcullis_core::Principal;
use serde_json::{Map, Value};

use crate::dev::DevIssuer;
use crate::error::{quote, IdentityError};
use crate::jwks::{selection_error, KeySet, RemoteKeys, Selection, VerificationKey};
use crate::settings::{OidcIssuerSettings, DEFAULT_GROUPS_CLAIM, DEFAULT_LEEWAY, MAX_LEEWAY};
use crate::token::{numeric_date, rfc3339, UnverifiedToken};

/// Verifies tokens from the configured issuers. Cheap to clone; one is shared
/// by all sessions.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: HashMap<String, Issuer>,
}

/// What the verifier knows about one issuer.
struct Issuer {
    name: String,
    audience: Vec<String>,
    groups_claim: String,
    user_claim: Option<String>,
    leeway_seconds: u64,
    keys: Keys,
}

enum Keys {
    /// The dev issuer's key, known from the start.
    Fixed(Arc<KeySet>),
    Remote(Box<RemoteKeys>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut issuers: Vec<&str> = self.inner.issuers.keys().map(String::as_str).collect();
        issuers.sort_unstable();
        f.debug_struct("Verifier")
            .field("issuers", &issuers)
            .finish()
    }
}

impl Verifier {
    /// Builds a verifier for these OpenID providers and, when given, the dev
    /// issuer. Nothing is fetched yet: see [`Verifier::warm_up`].
    pub fn new(
        oidc: Vec<OidcIssuerSettings>,
        dev: Option<DevIssuer>,
    ) -> Result<Verifier, IdentityError> {
        // An address is one person wherever it is vouched for; a `sub` or a
        // user name is only unique at its own provider. The dev issuer,
        // which names its users by `sub`, counts as another (found in
        // attack: a provider's user `svc-deploy` was the dev principal of
        // that name, its grants included).
        if oidc.len() + usize::from(dev.is_some()) > 1 {
            if let Some(local) = oidc.iter().find(|s| {
                s.user_claim
                    .as_deref()
                    .is_some_and(|claim| claim != "email")
            }) {
                return Err(IdentityError::InvalidSettings {
                    reason: format!(
                        "issuer `{}` names its users by `{}`, which is unique only at that provider, and other issuers are trusted too: one's user could be another's. Name users by `email` (the default) at every issuer, or trust that issuer alone",
                        local.issuer,
                        local.user_claim.as_deref().unwrap_or_default()
                    ),
                });
            }
        }
        let mut issuers = HashMap::new();
        let http = if oidc.is_empty() {
            None
        } else {
            Some(crate::http::client()?)
        };

        for settings in oidc {
            check_settings(&settings)?;
            let Some(http) = http.clone() else {
                return Err(IdentityError::InvalidSettings {
                    reason: "internal error: no HTTP client".to_owned(),
                });
            };
            let discovery_url = settings.discovery_url();
            let issuer = Issuer {
                name: settings.issuer.clone(),
                audience: settings.audience,
                groups_claim: settings.groups_claim,
                user_claim: settings.user_claim,
                leeway_seconds: settings.leeway.as_secs(),
                keys: Keys::Remote(Box::new(RemoteKeys::new(
                    settings.issuer.clone(),
                    discovery_url,
                    http,
                ))),
            };
            insert(&mut issuers, issuer)?;
        }

        if let Some(dev) = dev {
            let issuer = Issuer {
                name: dev.issuer().to_owned(),
                audience: vec![dev.audience().to_owned()],
                groups_claim: DEFAULT_GROUPS_CLAIM.to_owned(),
                // `sub` is the user as given to `dev token`; `email` the
                // same, when it is an address.
                user_claim: Some("sub".to_owned()),
                leeway_seconds: DEFAULT_LEEWAY.as_secs(),
                keys: Keys::Fixed(Arc::new(KeySet::new(vec![dev.verification_key()]))),
            };
            insert(&mut issuers, issuer)?;
        }

        Ok(Verifier {
            inner: Arc::new(Inner { issuers }),
        })
    }

    /// Whether tokens of `issuer` are trusted now.
    pub fn trusts(&self, issuer: &str) -> bool {
        self.inner.issuers.contains_key(issuer)
    }

    /// The issuers this verifier trusts.
    pub fn issuers(&self) -> Vec<String> {
        let mut issuers: Vec<String> = self.inner.issuers.keys().cloned().collect();
        issuers.sort_unstable();
        issuers
    }

    /// Fetches the discovery document and key set of every OpenID provider
    /// now. Failures are logged, not returned: verification tries again when
    /// a token arrives.
    pub async fn warm_up(&self) {
        for issuer in self.inner.issuers.values() {
            if let Keys::Remote(keys) = &issuer.keys {
                match keys.warm_up().await {
                    Ok(count) => {
                        tracing::debug!(issuer = %issuer.name, keys = count, "signing keys ready")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "identity provider not reachable at start-up")
                    }
                }
            }
        }
    }

    /// Verifies a token and returns who it identifies. Any doubt is a refusal.
    pub async fn verify(&self, token: &str) -> Result<Principal, IdentityError> {
        let unverified = UnverifiedToken::parse(token)?;
        let issuer_name = unverified.issuer()?;
        let Some(issuer) = self.inner.issuers.get(issuer_name) else {
            return Err(IdentityError::UnknownIssuer {
                issuer: quote(issuer_name),
            });
        };
        let kid = unverified.kid.as_deref();
        let alg = unverified.alg;

        let keys = match &issuer.keys {
            Keys::Fixed(keys) => keys.clone(),
            Keys::Remote(remote) => remote.keys_for(kid, alg).await?,
        };
        let key = match keys.select(kid, alg) {
            Selection::Found(key) => key,
            other => return Err(selection_error(other, &issuer.name, kid, alg)),
        };

        let claims = issuer.check(token, alg, key, &unverified.claims)?;
        issuer.principal(&claims)
    }
}

fn check_settings(settings: &OidcIssuerSettings) -> Result<(), IdentityError> {
    let invalid = |reason: String| Err(IdentityError::InvalidSettings { reason });
    if settings.issuer.is_empty() {
        return invalid("an OpenID issuer has an empty `issuer`".to_owned());
    }
    if settings.audience.is_empty() || settings.audience.iter().any(String::is_empty) {
        return invalid(format!(
            "issuer `{}` needs at least one non-empty audience",
            settings.issuer
        ));
    }
    if settings.groups_claim.is_empty() {
        return invalid(format!(
            "issuer `{}` has an empty groups claim name",
            settings.issuer
        ));
    }
    if settings.leeway > MAX_LEEWAY {
        return invalid(format!(
            "issuer `{}` has a leeway of {} s, more than the {} s allowed",
            settings.issuer,
            settings.leeway.as_secs(),
            MAX_LEEWAY.as_secs()
        ));
    }
    Ok(())
}

fn insert(issuers: &mut HashMap<String, Issuer>, issuer: Issuer) -> Result<(), IdentityError> {
    if issuers.contains_key(&issuer.name) {
        return Err(IdentityError::InvalidSettings {
            reason: format!("issuer `{}` is configured twice", issuer.name),
        });
    }
    issuers.insert(issuer.name.clone(), issuer);
    Ok(())
}

impl Issuer {
    /// Checks the signature and the registered claims; returns the verified
    /// claims. `unverified` (the same payload) only supplies the dates quoted
    /// in errors, once the signature is known to be good.
    fn check(
        &self,
        token: &str,
        alg: Algorithm,
        key: &VerificationKey,
        unverified: &Map<String, Value>,
    ) -> Result<Map<String, Value>, IdentityError> {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[self.name.as_str()]);
        validation.set_audience(&self.audience);

        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(error) => Err(self.explain(error.into_kind(), key, unverified)),
        }
    }

    fn explain(
        &self,
        kind: ErrorKind,
        key: &VerificationKey,
        unverified: &Map<String, Value>,
    ) -> IdentityError {
        match kind {
            ErrorKind::InvalidSignature => IdentityError::InvalidSignature {
                issuer: self.name.clone(),
            },
            ErrorKind::ExpiredSignature => IdentityError::Expired {
                at: date_claim(unverified, "exp"),
            },
            ErrorKind::ImmatureSignature => IdentityError::NotYetValid {
                at: date_claim(unverified, "nbf"),
            },
            ErrorKind::InvalidAudience => IdentityError::WrongAudience {
                issuer: self.name.clone(),
                audience: describe_audience(unverified.get("aud")),
                expected: self
                    .audience
                    .iter()
                    .map(|audience| format!("`{audience}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            ErrorKind::InvalidIssuer => IdentityError::WrongIssuer {
                issuer: self.name.clone(),
            },
            ErrorKind::MissingRequiredClaim(claim) => IdentityError::MissingClaim { claim },
            ErrorKind::InvalidClaimFormat(claim) => IdentityError::InvalidClaim {
                claim,
                reason: "expected a number of seconds".to_owned(),
            },
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => IdentityError::KeyUnusable {
                issuer: self.name.clone(),
                kid: quote(&key.kid_or_none()),
                reason: "the key material is not valid".to_owned(),
            },
            ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                IdentityError::KeyAlgorithmMismatch {
                    issuer: self.name.clone(),
                    kid: quote(&key.kid_or_none()),
                    alg: "the token's algorithm".to_owned(),
                    detail: String::new(),
                }
            }
            ErrorKind::Base64(_) => IdentityError::MalformedToken {
                reason: "a part is not base64url".to_owned(),
            },
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => IdentityError::MalformedToken {
                reason: "the header or payload is not valid JSON".to_owned(),
            },
            _ => IdentityError::MalformedToken {
                reason: "the token could not be verified".to_owned(),
            },
        }
    }

    /// Builds the principal from verified claims.
    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, IdentityError> {
        let subject = string_claim(claims, "sub")?.ok_or_else(|| IdentityError::MissingClaim {
            claim: "sub".to_owned(),
        })?;
        let email = string_claim(claims, "email")?;
        // An address the provider says it has not verified must not name the
        // user: anyone could have typed it. Verified means `true` (some
        // providers send the flag as a string); a provider that sends no
        // flag at all vouches for its addresses (README, Identity).
        let email_verified = match claims.get("email_verified") {
            None => true,
            Some(Value::Bool(flag)) => *flag,
            Some(Value::String(flag)) => flag.eq_ignore_ascii_case("true"),
            Some(_) => false,
        };

        // One claim names every user of an issuer, whatever a token holds:
        // were it `email` when present and `sub` otherwise, whoever leaves
        // the `email` scope out of their login would be another user, out of
        // reach of the rules, grants and limits written for them.
        let id_claim = self.user_claim.as_deref().unwrap_or("email");
        let id = match string_claim(claims, id_claim)? {
            Some(id) => id,
            None if self.user_claim.is_none() => return Err(IdentityError::NoEmail),
            None => {
                return Err(IdentityError::MissingClaim {
                    claim: id_claim.to_owned(),
                })
            }
        };
        if id_claim == "email" && !email_verified {
            return Err(IdentityError::EmailNotVerified { email: quote(&id) });
        }
        if id.is_empty() {
            return Err(IdentityError::InvalidClaim {
                claim: id_claim.to_owned(),
                reason: "it is empty".to_owned(),
            });
        }

        let groups = groups_claim(claims, &self.groups_claim)?;
        let expires_at =
            numeric_date(claims, "exp").ok_or_else(|| IdentityError::MissingClaim {
                claim: "exp".to_owned(),
            })?;
        Ok(Principal {
            id,
            subject,
            email: email.filter(|_| email_verified),
            groups,
            issuer: self.name.clone(),
            expires_at,
        })
    }
}

/// A claim that, when present, must be a string.
fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, IdentityError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => drawn_as_itself(name, value).map(|()| Some(value.clone())),
        Some(_) => Err(IdentityError::InvalidClaim {
            claim: name.to_owned(),
            reason: "expected a string".to_owned(),
        }),
    }
}

/// Names and groups reach logs, terminals, reviewers' pages and policies:
/// one with a control or invisible character (a line break that forges a
/// log line, an escape sequence, a right-to-left override) is refused, and
/// so is one with a space at either end, which reads as the name without it
/// (`alice@example.com ` is not alice, and could approve her requests).
fn drawn_as_itself(claim: &str, value: &str) -> Result<(), IdentityError> {
    if portcullis_core::text::has_unshown(value) || value.contains(['\n', '\t']) {
        return Err(IdentityError::InvalidClaim {
            claim: claim.to_owned(),
            reason: "it holds control or invisible characters".to_owned(),
        });
    }
    if value.trim() != value {
        return Err(IdentityError::InvalidClaim {
            claim: claim.to_owned(),
            reason: "it begins or ends with a space".to_owned(),
        });
    }
    Ok(())
}

/// The groups: an array of strings, or one string as a single group; absent
/// means none. Anything else is refused rather than read as "no groups", so a
/// misconfigured claim is noticed.
fn groups_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, IdentityError> {
    let invalid = || IdentityError::InvalidClaim {
        claim: name.to_owned(),
        reason: "expected a string or an array of strings".to_owned(),
    };
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(group)) => drawn_as_itself(name, group).map(|()| vec![group.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let group = item.as_str().ok_or_else(invalid)?;
                drawn_as_itself(name, group)?;
                Ok(group.to_owned())
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

fn date_claim(claims: &Map<String, Value>, name: &str) -> String {
    numeric_date(claims, name)
        .map(rfc3339)
        .unwrap_or_else(|| format!("an unreadable `{name}`"))
}

fn describe_audience(aud: Option<&Value>) -> String {
    match aud {
        Some(Value::String(audience)) => format!("`{}`", quote(audience)),
        Some(Value::Array(items)) => {
            let names: Vec<String> = items
                .iter()
                .take(5)
                .map(|item| format!("`{}`", quote(item.as_str().unwrap_or("?"))))
                .collect();
            names.join(", ")
        }
        _ => "(none)".to_owned(),
    }
}
