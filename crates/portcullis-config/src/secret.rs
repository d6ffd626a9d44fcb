//! Secrets are given by reference, never inline: `{ env = "VAR" }` or
//! `{ file = "PATH" }`.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Where a secret lives. Resolved when the service that needs it starts, so a
/// secret is read from its source and kept in memory only.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(var) => write!(f, "SecretRef::Env({var})"),
            SecretRef::File(path) => write!(f, "SecretRef::File({})", path.display()),
        }
    }
}

impl SecretRef {
    /// Reads the secret. A file's trailing newline is dropped.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(value),
                Ok(_) => Err(format!("environment variable `{var}` is empty")),
                Err(_) => Err(format!("environment variable `{var}` is not set")),
            },
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read `{}`: {e}", path.display())),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a secret reference: { env = \"VAR\" } or { file = \"PATH\" }")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
        Err(E::custom(
            "secrets are not accepted inline: use { env = \"VAR\" } or { file = \"PATH\" }",
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
        let mut found: Option<SecretRef> = None;
        while let Some(key) = map.next_key::<String>()? {
            let value = match key.as_str() {
                "env" => SecretRef::Env(map.next_value()?),
                "file" => SecretRef::File(map.next_value()?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown secret source `{other}`, expected `env` or `file`"
                    )))
                }
            };
            if found.replace(value).is_some() {
                return Err(de::Error::custom("give exactly one of `env` or `file`"));
            }
        }
        found.ok_or_else(|| de::Error::custom("give one of `env` or `file`"))
    }
}
