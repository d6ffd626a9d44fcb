//! Reading a compact JWS before its signature is checked.
//!
//! Only two things are taken from an unverified token: the header (to refuse a
//! bad `alg` and to find the key) and the `iss` claim (to find the issuer).
//! Everything else is read again from the verified payload.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::error::{quote, IdentityError};

/// Tokens longer than this are refused before anything is decoded.
pub const MAX_TOKEN_LENGTH: usize = 16 * 1024;

/// The algorithms a token may be signed with: asymmetric ones only, so a
/// public key can never be used as an HMAC secret, and never `none`.
pub const ACCEPTED_ALGORITHMS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// The name of an accepted algorithm, as written in a JWT header.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    ACCEPTED_ALGORITHMS
        .iter()
        .find(|(_, candidate)| *candidate == alg)
        .map(|(name, _)| *name)
        .unwrap_or("unsupported")
}

/// Looks an algorithm name up among the accepted ones.
pub fn accepted_algorithm(name: &str) -> Option<Algorithm> {
    ACCEPTED_ALGORITHMS
        .iter()
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, alg)| *alg)
}

/// A token split and decoded, nothing verified yet.
#[derive(Debug)]
pub struct UnverifiedToken {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

impl UnverifiedToken {
    /// Splits the token and checks what can be checked without a key: the
    /// shape, the `alg` against [`ACCEPTED_ALGORITHMS`], `crit`.
    pub fn parse(token: &str) -> Result<Self, IdentityError> {
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(IdentityError::TokenTooLong {
                length: token.len(),
                limit: MAX_TOKEN_LENGTH,
            });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three base64url parts separated by `.`"));
        };

        let header = decode_json_object(header, "header")?;
        let alg = match header.get("alg") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(malformed("header `alg` is not a string")),
            None => return Err(malformed("header has no `alg`")),
        };
        let Some(alg) = accepted_algorithm(alg) else {
            return Err(IdentityError::AlgorithmNotAccepted { alg: quote(alg) });
        };
        // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` names
        // extensions it does not understand, and this verifier understands none.
        if let Some(crit) = header.get("crit") {
            return Err(IdentityError::CriticalHeader {
                extensions: quote(&crit.to_string()),
            });
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(malformed("header `kid` is not a string")),
        };

        let claims = decode_json_object(payload, "payload")?;
        Ok(UnverifiedToken { alg, kid, claims })
    }

    /// The `iss` claim, which must be a single string.
    pub fn issuer(&self) -> Result<&str, IdentityError> {
        match self.claims.get("iss") {
            Some(Value::String(issuer)) => Ok(issuer),
            None | Some(Value::Null) => Err(IdentityError::MissingClaim {
                claim: "iss".to_owned(),
            }),
            Some(_) => Err(IdentityError::InvalidClaim {
                claim: "iss".to_owned(),
                reason: "expected a string".to_owned(),
            }),
        }
    }
}

/// Decodes the payload of a token without checking anything. Used by the
/// login client for tokens it just received from the token endpoint over TLS
/// (OpenID Connect Core §3.1.3.7 lets such a client skip the signature); the
/// gateway always goes through [`crate::Verifier`].
pub fn insecure_claims(token: &str) -> Result<Map<String, Value>, IdentityError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three base64url parts separated by `.`"));
    };
    decode_json_object(payload, "payload")
}

fn decode_json_object(part: &str, what: &str) -> Result<Map<String, Value>, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(&format!("{what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(&format!("{what} is not a JSON object"))),
        Err(_) => Err(malformed(&format!("{what} is not JSON"))),
    }
}

fn malformed(reason: &str) -> IdentityError {
    IdentityError::MalformedToken {
        reason: reason.to_owned(),
    }
}

/// A numeric date claim (`exp`, `nbf`) as whole seconds, when present and
/// well-formed.
pub fn numeric_date(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    match claims.get(name)? {
        Value::Number(number) => number.as_u64().or_else(|| {
            number
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f.round() as u64)
        }),
        _ => None,
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Formats seconds since the Unix epoch as RFC 3339 in UTC, e.g.
/// `2026-11-24T08:00:00Z`.
pub fn rfc3339(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Howard Hinnant's `civil_from_days`, for days since 1970-01-01 (never
/// negative here).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// base64url without padding, as JOSE wants it.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            base64url(header.as_bytes()),
            base64url(payload.as_bytes())
        )
    }

    #[test]
    fn formats_dates_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_507_200), "2026-11-24T08:00:00Z");
    }

    #[test]
    fn refuses_none_and_hmac_before_anything_else() {
        for alg in ["none", "None", "HS256", "HS384", "HS512", "RSA-OAEP", ""] {
            let token = encode(&format!(r#"{{"alg":"{alg}"}}"#), r#"{"iss":"x"}"#);
            let error = UnverifiedToken::parse(&token).unwrap_err();
            assert!(
                matches!(error, IdentityError::AlgorithmNotAccepted { .. }),
                "{alg}: {error}"
            );
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        let cases = [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",
            "!!!.e30.c2ln",
            "bnVsbA.e30.c2ln",
        ];
        for case in cases {
            let error = UnverifiedToken::parse(case).unwrap_err();
            assert!(
                matches!(error, IdentityError::MalformedToken { .. }),
                "{case}: {error}"
            );
            assert!(!error.to_string().contains(case) || case.len() < 4);
        }
        let long = "a".repeat(MAX_TOKEN_LENGTH + 1);
        assert!(matches!(
            UnverifiedToken::parse(&long),
            Err(IdentityError::TokenTooLong { .. })
        ));
    }

    #[test]
    fn refuses_critical_extensions() {
        let token = encode(
            r#"{"alg":"ES256","crit":["exp"],"exp":1}"#,
            r#"{"iss":"x"}"#,
        );
        assert!(matches!(
            UnverifiedToken::parse(&token),
            Err(IdentityError::CriticalHeader { .. })
        ));
    }

    #[test]
    fn reads_alg_kid_and_issuer() {
        let token = encode(r#"{"alg":"EdDSA","kid":"k1"}"#, r#"{"iss":"https://idp"}"#);
        let parsed = UnverifiedToken::parse(&token).unwrap();
        assert_eq!(parsed.alg, Algorithm::EdDSA);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.issuer().unwrap(), "https://idp");

        let token = encode(r#"{"alg":"ES256"}"#, r#"{"iss":["a","b"]}"#);
        let parsed = UnverifiedToken::parse(&token).unwrap();
        assert!(matches!(
            parsed.issuer(),
            Err(IdentityError::InvalidClaim { .. })
        ));
    }
}
