//! Policies from a remote Git repository (`https://`, `http://`, `git://`,
//! `ssh://`): the gateway asks the remote which commit the ref points at (a
//! ref advertisement, no objects), and fetches into a bare mirror of its own
//! only when that commit is new. Policies are then read from the mirror's
//! objects like those of a local repository.
//!
//! Credentials may be part of the URL (`https://x-access-token:${TOKEN}@...`);
//! they never appear in an error: every message shows the URL without them.
//! For `ssh://` and `user@host:path`, the system's `ssh` client runs with the
//! gateway user's keys and `known_hosts`.

use crate::error::PolicyError;
use gix::remote::Direction;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// What a mirror fetches: every branch and tag, under the same names, and
/// the remote's HEAD.
const REFSPECS: &[&str] = &[
    "+refs/heads/*:refs/heads/*",
    "+refs/tags/*:refs/tags/*",
    "+HEAD:refs/remote-head",
];

/// The commit `reference` points at on the remote, asked without fetching.
pub(crate) fn remote_commit(
    url: &str,
    mirror: &Path,
    reference: &str,
) -> Result<gix::ObjectId, PolicyError> {
    if let Some(id) = commit_id(reference) {
        return Ok(id);
    }
    let repository = open_mirror(url, mirror)?;
    let remote = remote(&repository, url)?;
    let connection = remote
        .connect(Direction::Fetch)
        .map_err(|e| fetch_error(url, e.to_string()))?;
    let (ref_map, _handshake) = connection
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(|e| fetch_error(url, e.to_string()))?;
    let ref_error = |message: String| PolicyError::GitRef {
        repo: shown(url).into(),
        reference: reference.to_string(),
        message,
    };
    resolve_advertised(&ref_map.remote_refs, reference)
        .map_err(ref_error)?
        .ok_or_else(|| ref_error("the remote has no such branch, tag or ref".to_string()))
}

/// Fetches the remote into the mirror and opens it.
pub(crate) fn fetch(url: &str, mirror: &Path) -> Result<gix::Repository, PolicyError> {
    let repository = open_mirror(url, mirror)?;
    {
        let remote = remote(&repository, url)?;
        remote
            .connect(Direction::Fetch)
            .map_err(|e| fetch_error(url, e.to_string()))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| fetch_error(url, e.to_string()))?
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .map_err(|e| fetch_error(url, e.to_string()))?;
    }
    Ok(repository)
}

/// A full commit id, which names itself.
fn commit_id(reference: &str) -> Option<gix::ObjectId> {
    (reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| gix::ObjectId::from_hex(reference.as_bytes()).ok())
        .flatten()
}

/// The commit a ref name points at among the refs a remote advertises:
/// `HEAD`, a full ref name, a branch, or a tag (peeled to its commit). A
/// short name that several refs answer to is refused (`Err`), as it is in a
/// local repository.
fn resolve_advertised(
    refs: &[gix::protocol::handshake::Ref],
    reference: &str,
) -> Result<Option<gix::ObjectId>, String> {
    let found: Vec<(String, gix::ObjectId)> = crate::source::ref_candidates(reference)
        .into_iter()
        .filter_map(|wanted| {
            refs.iter().find_map(|r| {
                let (name, target, peeled) = r.unpack();
                (name == wanted.as_str())
                    .then(|| peeled.or(target).map(|id| (wanted.clone(), id.to_owned())))
                    .flatten()
            })
        })
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [(_, id)] => Ok(Some(*id)),
        several => Err(crate::source::ambiguous(
            several.iter().map(|(name, _)| name.as_str()),
        )),
    }
}

fn open_mirror(url: &str, mirror: &Path) -> Result<gix::Repository, PolicyError> {
    let mirror_error = |message: String| PolicyError::GitRepository {
        repo: mirror.to_path_buf(),
        message: format!("the mirror of `{}`: {message}", shown(url)),
    };
    if mirror.join("HEAD").exists() {
        gix::open_opts(mirror, gix::open::Options::isolated())
            .map_err(|e| mirror_error(e.to_string()))
    } else {
        if let Some(parent) = mirror.parent() {
            std::fs::create_dir_all(parent).map_err(|e| mirror_error(e.to_string()))?;
        }
        gix::init_bare(mirror).map_err(|e| mirror_error(e.to_string()))
    }
}

fn remote<'repo>(
    repository: &'repo gix::Repository,
    url: &str,
) -> Result<gix::Remote<'repo>, PolicyError> {
    repository
        .remote_at(url)
        .map_err(|e| fetch_error(url, e.to_string()))?
        .with_refspecs(REFSPECS.iter().copied(), Direction::Fetch)
        .map_err(|e| fetch_error(url, e.to_string()))
}

/// An error about the remote, with the URL's credentials taken out of the
/// message wherever they appear.
fn fetch_error(url: &str, message: String) -> PolicyError {
    let mut message = message;
    if let Some(userinfo) = userinfo(url).filter(|u| !u.is_empty()) {
        message = message.replace(userinfo, "***");
    }
    PolicyError::GitFetch {
        url: shown(url),
        message,
    }
}

/// The URL without credentials: `https://user:password@host/x` is
/// `https://***@host/x`.
pub fn shown(url: &str) -> String {
    match userinfo(url) {
        Some(userinfo) => url.replacen(&format!("{userinfo}@"), "***@", 1),
        None => url.to_string(),
    }
}

/// The `user:password` part of a `scheme://user:password@host/...` URL, or
/// of `user:password@host:path`: all before the last `@` (a token may hold
/// `/`, `?` or `#`; taking too much only hides more).
fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.rsplit_once('@').map(|(userinfo, _)| userinfo)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            shown("https://x-access-token:s3cret@github.com/acme/p.git"),
            "https://***@github.com/acme/p.git"
        );
        assert_eq!(shown("git://example.com/p.git"), "git://example.com/p.git");
        assert_eq!(
            shown("https://tok:S3CRETab/cd@127.0.0.1:1/p.git"),
            "https://***@127.0.0.1:1/p.git"
        );
        assert_eq!(shown("tok:S3CRET@127.0.0.1:p.git"), "***@127.0.0.1:p.git");
        let error = fetch_error(
            "https://u:s3cret@example.com/p.git",
            "cannot reach https://u:s3cret@example.com/p.git (user u:s3cret)".into(),
        );
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn a_full_commit_id_names_itself() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(commit_id(id).unwrap().to_string(), id);
        assert!(commit_id("main").is_none());
    }
}
