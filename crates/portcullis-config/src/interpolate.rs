//! `${VAR}` and `${VAR:-default}` interpolation over the string values of a
//! parsed TOML document. `$$` stands for a literal `$`.
//!
//! Interpolation happens after parsing, on string values only, so a value
//! taken from the environment can never change the document's structure.

use crate::error::ConfigError;
use std::path::Path;

/// Looks a variable up; the real one reads the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

pub(crate) fn interpolate_value(
    value: &mut toml::Value,
    key: &mut Vec<String>,
    file: &Path,
    env: &dyn Env,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => {
            *s = interpolate_str(s, &key.join("."), file, env)?;
        }
        toml::Value::Array(items) => {
            for (idx, item) in items.iter_mut().enumerate() {
                let last = key.pop().unwrap_or_default();
                key.push(format!("{last}[{idx}]"));
                interpolate_value(item, key, file, env)?;
                key.pop();
                key.push(last);
            }
        }
        toml::Value::Table(table) => {
            for (name, item) in table.iter_mut() {
                key.push(name.clone());
                interpolate_value(item, key, file, env)?;
                key.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn interpolate_str(
    input: &str,
    key: &str,
    file: &Path,
    env: &dyn Env,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| ConfigError::Invalid {
                file: file.to_path_buf(),
                key: key.to_string(),
                message: "unterminated `${` (write `$$` for a literal `$`)".to_string(),
            })?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::Invalid {
                    file: file.to_path_buf(),
                    key: key.to_string(),
                    message: format!("`${{{expr}}}` is not a valid variable reference"),
                });
            }
            match (env.var(name), default) {
                (Some(v), None) => out.push_str(&v),
                (Some(v), Some(_)) if !v.is_empty() => out.push_str(&v),
                (_, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ConfigError::MissingEnv {
                        file: file.to_path_buf(),
                        key: key.to_string(),
                        var: name.to_string(),
                    })
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    fn run(input: &str) -> Result<String, ConfigError> {
        let env = MapEnv(HashMap::from([("HOST", "db.internal"), ("EMPTY", "")]));
        interpolate_str(input, "a.b", Path::new("x.toml"), &env)
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(run("${HOST}:5432").unwrap(), "db.internal:5432");
        assert_eq!(run("${PORT:-15432}").unwrap(), "15432");
        assert_eq!(run("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(run("${EMPTY}").unwrap(), "");
        assert_eq!(run("cost $$5 and $x").unwrap(), "cost $5 and $x");
        assert_eq!(run("${PORT:-}").unwrap(), "");
    }

    #[test]
    fn missing_variable_names_file_key_and_variable() {
        let err = run("${NOPE}").unwrap_err().to_string();
        assert!(err.contains("x.toml"), "{err}");
        assert!(err.contains("a.b"), "{err}");
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(run("${HOST").is_err());
        assert!(run("${}").is_err());
        assert!(run("${A B}").is_err());
    }
}
