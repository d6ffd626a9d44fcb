//! Where policies come from: a directory, or a commit of a Git repository.
//!
//! A source answers two questions: which version it holds now (cheap, asked
//! on every poll) and the validated policies of that version. A directory's
//! version is a content hash of its `*.cedar` files; a Git source's version is
//! the full id of the commit its ref points at, and its files are read from
//! that commit's tree in the object database: no checkout, no worktree, no
//! `git` process. What is in the worktree but not committed is never seen.

use crate::engine::{is_case_file, is_mask_file, Engine, Policies};
use crate::error::PolicyError;
use crate::remote;
use std::path::{Path, PathBuf};

/// Characters of a commit id used to name files read from it.
const SHORT_COMMIT: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// Every `*.cedar` file of a directory.
    Directory(PathBuf),
    /// Every `*.cedar` file of `subdir` (empty: the root) in the commit that
    /// `reference` points at. `repo` is a local repository, bare or not;
    /// `reference` is a ref name as `git` accepts it (`main`, `HEAD`,
    /// `refs/heads/main`, `origin/main`, a tag) or a full commit id.
    Git {
        repo: PathBuf,
        reference: String,
        subdir: String,
    },
    /// The same, from a remote repository (`url`, which may carry
    /// credentials and is never shown), fetched into the bare repository
    /// `mirror` when its ref moves.
    Remote {
        url: String,
        mirror: PathBuf,
        reference: String,
        subdir: String,
    },
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Directory(dir) => write!(f, "directory `{}`", dir.display()),
            PolicySource::Git {
                repo,
                reference,
                subdir,
            } => {
                write!(f, "git repository `{}` at `{reference}`", repo.display())?;
                if !subdir.is_empty() {
                    write!(f, ", directory `{subdir}`")?;
                }
                Ok(())
            }
            PolicySource::Remote {
                url,
                reference,
                subdir,
                ..
            } => {
                write!(
                    f,
                    "git repository `{}` at `{reference}`",
                    remote::shown(url)
                )?;
                if !subdir.is_empty() {
                    write!(f, ", directory `{subdir}`")?;
                }
                Ok(())
            }
        }
    }
}

/// How a new Git version of the policies relates to the one enforced
/// before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum History {
    /// The new commit descends from the old one: the ref moved forward.
    Forward,
    /// The new commit is an ancestor of the old one: the ref went back (a
    /// force-push, a tag moved to an older commit), and rules taken out
    /// since are enforced again.
    Back,
    /// Neither descends from the other: the history was rewritten.
    Diverged,
    /// The old commit is no longer in the repository (a force-push, then a
    /// garbage collection), or telling would walk more than 200,000
    /// commits: it may be a step back as well as forward.
    Unknown,
}

impl History {
    pub fn as_str(self) -> &'static str {
        match self {
            History::Forward => "forward",
            History::Back => "back",
            History::Diverged => "diverged",
            History::Unknown => "unknown",
        }
    }
}

/// The most commits walked to tell how two versions relate.
const MAX_HISTORY_WALK: usize = 200_000;

impl PolicySource {
    /// How commit `new` relates to commit `previous`, for a Git source;
    /// `None` for a directory, when the two are the same, or when either is
    /// not a commit id. [`History::Unknown`] when the two cannot be related
    /// (`previous` is gone from the repository, or its mirror).
    pub fn history(&self, previous: &str, new: &str) -> Option<History> {
        let repo = match self {
            PolicySource::Directory(_) => return None,
            PolicySource::Git { repo, .. } => repo,
            PolicySource::Remote { mirror, .. } => mirror,
        };
        let previous = gix::ObjectId::from_hex(previous.as_bytes()).ok()?;
        let new = gix::ObjectId::from_hex(new.as_bytes()).ok()?;
        if previous == new {
            return None;
        }
        let Ok(repository) = open(repo) else {
            return Some(History::Unknown);
        };
        // A walk from `new` that never meets a missing `previous` would
        // call a step back onto a commit before it a rewrite, or forward.
        if repository.find_commit(previous).is_err() {
            return Some(History::Unknown);
        }
        Some(match reaches(&repository, new, previous) {
            Some(true) => History::Forward,
            Some(false) => match reaches(&repository, previous, new) {
                Some(true) => History::Back,
                Some(false) => History::Diverged,
                None => History::Unknown,
            },
            None => History::Unknown,
        })
    }

    /// The version the source holds now, without parsing any policy: a
    /// content hash for a directory, the full commit id for Git.
    pub fn current_version(&self, engine: Engine) -> Result<String, PolicyError> {
        match self {
            PolicySource::Directory(dir) => Policies::dir_version(dir, engine),
            PolicySource::Git {
                repo, reference, ..
            } => {
                let repository = open(repo)?;
                Ok(resolve(&repository, repo, reference)?.to_string())
            }
            PolicySource::Remote {
                url,
                mirror,
                reference,
                ..
            } => Ok(remote::remote_commit(url, mirror, reference)?.to_string()),
        }
    }

    /// Reads, parses and validates the version the source holds now. A Git
    /// version is named by its commit id (see [`CedarPolicies::version`]).
    pub fn load(&self, engine: Engine) -> Result<Policies, PolicyError> {
        match self {
            PolicySource::Directory(dir) => Policies::load_dir(dir, engine),
            PolicySource::Git {
                repo,
                reference,
                subdir,
            } => {
                let repository = open(repo)?;
                let commit = resolve(&repository, repo, reference)?;
                load_commit(&repository, repo, commit, subdir, engine)
            }
            PolicySource::Remote {
                url,
                mirror,
                reference,
                subdir,
            } => {
                let commit = remote::remote_commit(url, mirror, reference)?;
                let repository = remote::fetch(url, mirror)?;
                let shown = PathBuf::from(remote::shown(url));
                load_commit(&repository, &shown, commit, subdir, engine)
            }
        }
    }
}

/// The policies and mask rules of `subdir` in `commit`.
fn load_commit(
    repository: &gix::Repository,
    repo: &Path,
    commit: gix::ObjectId,
    subdir: &str,
    engine: Engine,
) -> Result<Policies, PolicyError> {
    let ref_error = |message: String| PolicyError::GitRef {
        repo: repo.to_path_buf(),
        reference: commit.to_string(),
        message,
    };
    // A commit id named in the config must be a commit of this repository.
    repository
        .try_find_object(commit)
        .map_err(|e| ref_error(e.to_string()))?
        .ok_or_else(|| ref_error("no such commit".to_string()))?
        .peel_to_commit()
        .map_err(|e| ref_error(e.to_string()))?;
    let files = read_commit(repository, repo, commit, subdir, engine.extension())?;
    let mask_files = read_commit_mask_files(repository, repo, commit, subdir)?;
    // Errors name a file `<commit>:<path in the repository>`.
    let mut prefix = format!("{}:", commit.to_hex_with_len(SHORT_COMMIT));
    for component in subdir_components(subdir).unwrap_or_default() {
        prefix.push_str(component);
        prefix.push('/');
    }
    let case_files = read_commit_files(repository, repo, commit, subdir, &is_case_file)?;
    Policies::from_commit_files(
        [files, mask_files, case_files],
        &prefix,
        commit.to_string(),
        engine,
    )
}

impl PolicySource {
    /// Whether reading the source needs the network.
    pub fn is_remote(&self) -> bool {
        matches!(self, PolicySource::Remote { .. })
    }
}

/// Whether `ancestor` is `from` or a commit it descends from; `None` when
/// `from` cannot be walked, or past [`MAX_HISTORY_WALK`] commits.
fn reaches(
    repository: &gix::Repository,
    from: gix::ObjectId,
    ancestor: gix::ObjectId,
) -> Option<bool> {
    let walk = repository.rev_walk([from]).all().ok()?;
    for (n, commit) in walk.enumerate() {
        if n >= MAX_HISTORY_WALK {
            return None;
        }
        if commit.ok()?.id == ancestor {
            return Some(true);
        }
    }
    Some(false)
}

fn open(repo: &Path) -> Result<gix::Repository, PolicyError> {
    // Isolated: the repository's own config only, not the environment's
    // `GIT_*` variables or the user's and system's config, so the gateway
    // reads the same commit whoever starts it.
    gix::open_opts(repo, gix::open::Options::isolated()).map_err(|e| PolicyError::GitRepository {
        repo: repo.to_path_buf(),
        message: e.to_string(),
    })
}

/// The commit `reference` points at, through any annotated tag.
fn resolve(
    repository: &gix::Repository,
    repo: &Path,
    reference: &str,
) -> Result<gix::ObjectId, PolicyError> {
    let ref_error = |message: String| PolicyError::GitRef {
        repo: repo.to_path_buf(),
        reference: reference.to_string(),
        message,
    };
    let is_commit_id = reference.len() == repository.object_hash().len_in_hex()
        && reference.bytes().all(|b| b.is_ascii_hexdigit());
    if is_commit_id {
        let id =
            gix::ObjectId::from_hex(reference.as_bytes()).map_err(|e| ref_error(e.to_string()))?;
        let object = repository
            .try_find_object(id)
            .map_err(|e| ref_error(e.to_string()))?
            .ok_or_else(|| ref_error("no such commit".to_string()))?;
        let commit = object
            .peel_to_commit()
            .map_err(|e| ref_error(e.to_string()))?;
        return Ok(commit.id);
    }
    let mut found = Vec::new();
    for name in ref_candidates(reference) {
        if let Some(one) = repository
            .try_find_reference(name.as_str())
            .map_err(|e| ref_error(e.to_string()))?
        {
            found.push((name, one));
        }
    }
    let mut found = match found.len() {
        0 => return Err(ref_error("no such branch, tag or ref".to_string())),
        1 => found.remove(0).1,
        _ => {
            return Err(ref_error(ambiguous(
                found.iter().map(|(name, _)| name.as_str()),
            )))
        }
    };
    let commit = found
        .peel_to_commit()
        .map_err(|e| ref_error(e.to_string()))?;
    Ok(commit.id)
}

/// The refs a configured `ref` may name: itself when it is `HEAD` or a full
/// ref name, else a branch, a tag, a remote-tracking branch, or a ref
/// directly under `refs/`. More than one of them existing is refused: which
/// one is meant is for the configuration to say, not for whoever can push a
/// tag named like the branch.
pub(crate) fn ref_candidates(reference: &str) -> Vec<String> {
    if reference == "HEAD" || reference.starts_with("refs/") {
        return vec![reference.to_string()];
    }
    vec![
        format!("refs/heads/{reference}"),
        format!("refs/tags/{reference}"),
        format!("refs/remotes/{reference}"),
        format!("refs/remotes/{reference}/HEAD"),
        format!("refs/{reference}"),
    ]
}

/// Why a short ref name several refs answer to is refused.
pub(crate) fn ambiguous<'a>(names: impl Iterator<Item = &'a str>) -> String {
    format!(
        "it names more than one ref ({}): set `ref` to the one meant, in full",
        names.collect::<Vec<_>>().join(", ")
    )
}

/// The components of a sub-directory: `policies/`, `./policies` and
/// `policies` are the same; the root is empty. `..` is refused (`None`).
fn subdir_components(subdir: &str) -> Option<Vec<&str>> {
    let mut components = Vec::new();
    for part in subdir.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => components.push(part),
        }
    }
    Some(components)
}

/// `(path, text)` of every `*.<extension>` file under `subdir` in `commit`,
/// sorted by path; the path is the file's inside `subdir`.
fn read_commit(
    repository: &gix::Repository,
    repo: &Path,
    commit: gix::ObjectId,
    subdir: &str,
    extension: &str,
) -> Result<Vec<(String, String)>, PolicyError> {
    let files = read_commit_files(repository, repo, commit, subdir, &|name: &str| {
        Path::new(name).extension().is_some_and(|e| e == extension)
    })?;
    if files.is_empty() {
        let short = commit.to_hex_with_len(SHORT_COMMIT).to_string();
        let prefix = subdir_components(subdir).unwrap_or_default().join("/");
        return Err(PolicyError::GitEmpty {
            repo: repo.to_path_buf(),
            location: format!("{short}:{prefix}"),
            extension: extension.to_string(),
        });
    }
    Ok(files)
}

/// The mask rule files (`*masks.toml`) of `subdir` in `commit`; none is fine.
fn read_commit_mask_files(
    repository: &gix::Repository,
    repo: &Path,
    commit: gix::ObjectId,
    subdir: &str,
) -> Result<Vec<(String, String)>, PolicyError> {
    read_commit_files(repository, repo, commit, subdir, &is_mask_file)
}

/// `(path, text)` of every regular file under `subdir` in `commit` whose
/// name `wanted` accepts, sorted by path; the path is the file's inside
/// `subdir`.
fn read_commit_files(
    repository: &gix::Repository,
    repo: &Path,
    commit: gix::ObjectId,
    subdir: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, PolicyError> {
    let short = commit.to_hex_with_len(SHORT_COMMIT).to_string();
    let read_error = |path: &str, message: String| PolicyError::GitRead {
        repo: repo.to_path_buf(),
        location: format!("{short}:{path}"),
        message,
    };
    let no_subdir = || PolicyError::GitNoSubdir {
        repo: repo.to_path_buf(),
        commit: short.clone(),
        subdir: subdir.to_string(),
    };
    let mut tree = repository
        .find_commit(commit)
        .map_err(|e| read_error("", e.to_string()))?
        .tree()
        .map_err(|e| read_error("", e.to_string()))?;
    let components = subdir_components(subdir).ok_or_else(no_subdir)?;
    let prefix = components.join("/");
    // Down to the sub-directory, one level at a time: a level that lists
    // its name twice (a malformed tree) is refused, as a file listed twice
    // is below.
    for component in &components {
        let mut found = None;
        for entry in tree.iter() {
            let entry = entry.map_err(|e| read_error(&prefix, e.to_string()))?;
            if entry.filename() != component.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(read_error(
                    &prefix,
                    format!("`{component}` is listed twice in its directory (a malformed tree, which `git fsck` reports)"),
                ));
            }
            found = Some((entry.mode(), entry.object_id()));
        }
        let (mode, id) = found.ok_or_else(no_subdir)?;
        if !mode.is_tree() {
            return Err(no_subdir());
        }
        tree = repository
            .find_tree(id)
            .map_err(|e| read_error(&prefix, e.to_string()))?;
    }
    let mut files = Vec::new();
    let walk = TreeWalk {
        repository,
        root: &tree,
        wanted,
        read_error: &read_error,
    };
    walk.tree(&tree, &prefix, "", 0, &mut files)?;
    files.sort();
    Ok(files)
}

/// The files of a commit's policy directory, in its sub-directories too,
/// read as a directory source reads them (see [`crate::files`]).
struct TreeWalk<'a> {
    repository: &'a gix::Repository,
    /// The policy directory's tree, where links are resolved.
    root: &'a gix::Tree<'a>,
    wanted: &'a dyn Fn(&str) -> bool,
    read_error: &'a dyn Fn(&str, String) -> PolicyError,
}

impl TreeWalk<'_> {
    /// Adds `(path inside the policy directory, text)` of each wanted file
    /// of `tree`, which is at `path` in the repository and at `inner` in the
    /// policy directory.
    fn tree(
        &self,
        tree: &gix::Tree<'_>,
        path: &str,
        inner: &str,
        depth: usize,
        files: &mut Vec<(String, String)>,
    ) -> Result<(), PolicyError> {
        let read_error = self.read_error;
        let join = |base: &str, name: &str| {
            if base.is_empty() {
                name.to_string()
            } else {
                format!("{base}/{name}")
            }
        };
        let mut names = std::collections::HashSet::new();
        for entry in tree.iter() {
            let entry = entry.map_err(|e| read_error(path, e.to_string()))?;
            let raw_name: &[u8] = entry.filename();
            // A tree that lists a name twice is malformed (`git fsck` says so),
            // and each tool reads it its own way: `git show` the first, a
            // checkout the last. Which one counts cannot be told.
            if !names.insert(raw_name.to_vec()) {
                return Err(read_error(
                    &join(path, &String::from_utf8_lossy(raw_name)),
                    "listed twice in its directory (a malformed tree, which `git fsck` reports): refused, since what it holds depends on which copy is read".to_string(),
                ));
            }
            let is_tree = entry.mode().is_tree();
            if is_tree && raw_name.first() == Some(&b'.') {
                continue;
            }
            // The same files a directory source reads: `.cedar` alone is a
            // hidden file without an extension.
            let Ok(name) = std::str::from_utf8(raw_name) else {
                // Skipping it could silently drop a `forbid`: as a
                // directory, a link or a submodule may stand for one.
                let lossy = String::from_utf8_lossy(raw_name);
                let mode = entry.mode();
                if is_tree || mode.is_link() || mode.is_commit() || (self.wanted)(&lossy) {
                    return Err(read_error(
                        &join(path, &lossy),
                        "the name is not UTF-8".to_string(),
                    ));
                }
                continue;
            };
            let file_path = join(path, name);
            let hidden = name.starts_with('.');
            let wanted = (self.wanted)(name);
            // Every entry but a plain file or a directory, before anything
            // is left out: a checkout reads what it stands for.
            match entry.kind() {
                // Its files are in another repository, which a checkout
                // (`git submodule update`) shows and the commit does not
                // hold: left out, its rules would silently not apply.
                gix::object::tree::EntryKind::Commit if !hidden || wanted => {
                    return Err(read_error(
                        &file_path,
                        "a submodule: policy files in git must be committed in the policy repository itself".to_string(),
                    ))
                }
                // By a rule file's name: skipping it could silently drop a
                // `forbid`; following it could read outside the commit.
                gix::object::tree::EntryKind::Link if wanted => {
                    return Err(read_error(
                        &file_path,
                        "a symbolic link: policy files in git must be regular files".to_string(),
                    ))
                }
                // A checkout follows a link to a directory, and a directory
                // source reads it; left out here, what CI tested on a
                // checkout and what is enforced would differ.
                gix::object::tree::EntryKind::Link
                    if !hidden && !self.leads_to_a_file(&entry, inner)? =>
                {
                    return Err(read_error(
                        &file_path,
                        "a symbolic link to a directory, or out of the policy directory, or nowhere: commit the files themselves".to_string(),
                    ))
                }
                _ => {}
            }
            if is_tree {
                if depth + 1 > crate::files::MAX_DEPTH {
                    return Err(read_error(
                        &file_path,
                        format!(
                            "sub-directories nest more than {} deep",
                            crate::files::MAX_DEPTH
                        ),
                    ));
                }
                let subtree = self
                    .repository
                    .find_tree(entry.object_id())
                    .map_err(|e| read_error(&file_path, e.to_string()))?;
                self.tree(&subtree, &file_path, &join(inner, name), depth + 1, files)?;
                continue;
            }
            if !wanted {
                if let Some(why) = crate::files::near_miss(name, self.wanted) {
                    return Err(read_error(&file_path, why.to_string()));
                }
                continue;
            }
            let size = self
                .repository
                .find_header(entry.object_id())
                .map_err(|e| read_error(&file_path, e.to_string()))?
                .size();
            if size > crate::cedar::MAX_FILE_BYTES {
                return Err(read_error(&file_path, crate::cedar::too_large(size)));
            }
            let mut blob = self
                .repository
                .find_blob(entry.object_id())
                .map_err(|e| read_error(&file_path, e.to_string()))?;
            let text = String::from_utf8(blob.take_data())
                .map_err(|_| read_error(&file_path, "the file is not UTF-8".to_string()))?;
            files.push((join(inner, name), text));
        }
        Ok(())
    }

    /// Whether the link `entry`, in the directory at `inner` inside the
    /// policy directory, names a file (not a link, nor a directory) of the
    /// policy directory in this commit. Its target is walked a component at
    /// a time, as the kernel does in a checkout: a component that is itself
    /// a link is not followed (`a/..` is not the directory `a` is in when
    /// `a` is a link), and the answer is no.
    fn leads_to_a_file(
        &self,
        entry: &gix::object::tree::EntryRef<'_, '_>,
        inner: &str,
    ) -> Result<bool, PolicyError> {
        let target = self
            .repository
            .find_blob(entry.object_id())
            .map_err(|e| (self.read_error)(inner, e.to_string()))?
            .take_data();
        let Ok(target) = std::str::from_utf8(&target) else {
            return Ok(false);
        };
        if target.starts_with('/') {
            return Ok(false);
        }
        // Every component of `inner` is a directory the walk came through.
        let mut parts: Vec<&str> = inner.split('/').filter(|p| !p.is_empty()).collect();
        let mut is_file = false;
        for part in target.split('/') {
            if is_file {
                // `file/...`: no such path in a checkout.
                return Ok(false);
            }
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Ok(false);
                    }
                }
                part => {
                    parts.push(part);
                    let found = self
                        .root
                        .lookup_entry(parts.iter().map(|p| p.as_bytes()))
                        .map_err(|e| (self.read_error)(inner, e.to_string()))?;
                    match found.map(|found| found.mode()) {
                        Some(mode) if mode.is_tree() => {}
                        Some(mode) if mode.is_blob() => is_file = true,
                        // Missing, a link, or a submodule.
                        _ => return Ok(false),
                    }
                }
            }
        }
        // A trailing `/` after a file is no file either.
        Ok(is_file && !target.ends_with('/'))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::process::Command;

    const PERMIT: &str =
        "@id(\"eng-connects\")\npermit (principal in Group::\"eng\", action == Action::\"connect\", resource);\n";
    const FORBID: &str =
        "@id(\"no-drop\")\nforbid (principal, action == Action::\"query\", resource)\nwhen { context.statement.kind == \"ddl\" };\n";
    /// `kindd` is not in the schema: parses, does not validate.
    const INVALID: &str =
        "permit (principal, action == Action::\"query\", resource)\nwhen { context.statement.kindd == \"select\" };\n";

    /// A repository made with the `git` command line, as people make them;
    /// the code under test never runs `git`.
    struct Repo {
        dir: tempfile::TempDir,
    }

    impl Repo {
        fn new() -> Repo {
            let repo = Repo {
                dir: tempfile::tempdir().unwrap(),
            };
            repo.git(&["init", "-q", "-b", "main"]);
            repo
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn git(&self, args: &[&str]) -> String {
            let out = Command::new("git")
                .args([
                    "-c",
                    "commit.gpgsign=false",
                    "-c",
                    "core.hooksPath=/dev/null",
                ])
                .args(args)
                .current_dir(self.path())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "Policy Author")
                .env("GIT_AUTHOR_EMAIL", "author@example.com")
                .env("GIT_COMMITTER_NAME", "Policy Author")
                .env("GIT_COMMITTER_EMAIL", "author@example.com")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        /// Writes the files, commits everything, and returns the commit id.
        fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
            for (path, text) in files {
                self.write(path, text);
            }
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "--allow-empty", "-m", message]);
            self.git(&["rev-parse", "HEAD"])
        }

        fn source(&self, reference: &str, subdir: &str) -> PolicySource {
            PolicySource::Git {
                repo: self.path().to_path_buf(),
                reference: reference.to_string(),
                subdir: subdir.to_string(),
            }
        }
    }

    #[test]
    fn git_version_is_the_commit_id_of_the_ref() {
        let repo = Repo::new();
        let first = repo.commit(&[("access.cedar", PERMIT)], "first");
        let source = repo.source("main", "");
        assert_eq!(first.len(), 40);
        assert_eq!(source.current_version(Engine::Cedar).unwrap(), first);
        let policies = source.load(Engine::Cedar).unwrap();
        assert_eq!(policies.version(), first);
        assert_eq!(policies.len(), 1);

        let second = repo.commit(&[("guardrails.cedar", FORBID)], "second");
        assert_ne!(first, second);
        assert_eq!(source.current_version(Engine::Cedar).unwrap(), second);
        assert_eq!(source.load(Engine::Cedar).unwrap().len(), 2);
        // Other spellings of a ref, and a pinned commit.
        assert_eq!(
            repo.source("HEAD", "")
                .current_version(Engine::Cedar)
                .unwrap(),
            second
        );
        assert_eq!(
            repo.source("refs/heads/main", "")
                .current_version(Engine::Cedar)
                .unwrap(),
            second
        );
        let pinned = repo.source(&first, "");
        assert_eq!(pinned.current_version(Engine::Cedar).unwrap(), first);
        assert_eq!(pinned.load(Engine::Cedar).unwrap().len(), 1);
        // An annotated tag is peeled to its commit.
        repo.git(&["tag", "-a", "-m", "release", "v1", &first]);
        assert_eq!(
            repo.source("v1", "").load(Engine::Cedar).unwrap().version(),
            first
        );
    }

    #[test]
    fn git_files_come_from_the_commit_not_the_worktree() {
        let repo = Repo::new();
        let commit = repo.commit(&[("access.cedar", PERMIT)], "first");
        // Changed and added in the worktree, even staged: not committed.
        repo.write("access.cedar", INVALID);
        repo.write("extra.cedar", FORBID);
        repo.git(&["add", "extra.cedar"]);
        let source = repo.source("main", "");
        assert_eq!(source.current_version(Engine::Cedar).unwrap(), commit);
        let policies = source.load(Engine::Cedar).unwrap();
        assert_eq!(policies.version(), commit);
        assert_eq!(policies.len(), 1);
    }

    #[test]
    fn git_subdir_is_respected() {
        let repo = Repo::new();
        repo.commit(
            &[
                ("policies/access.cedar", PERMIT),
                ("policies/guardrails.cedar", FORBID),
                ("policies/README.md", "not a policy"),
                ("broken.cedar", INVALID),
            ],
            "layout",
        );
        for subdir in ["policies", "policies/", "./policies"] {
            let policies = repo.source("main", subdir).load(Engine::Cedar).unwrap();
            assert_eq!(policies.len(), 2, "{subdir}");
        }
        // The root holds the invalid file; its error names commit and path.
        let commit = repo.git(&["rev-parse", "HEAD"]);
        let err = repo
            .source("main", "")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:broken.cedar:2:", &commit[..12])),
            "{err}"
        );
        // A policy without an `@id` is named after its file, not the commit.
        assert!(err.contains("policy `broken.cedar#0`"), "{err}");
    }

    #[test]
    fn git_invalid_policy_names_commit_and_path() {
        let repo = Repo::new();
        let commit = repo.commit(
            &[
                ("policies/access.cedar", PERMIT),
                ("policies/bad.cedar", INVALID),
            ],
            "bad",
        );
        let err = repo
            .source("main", "policies")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:policies/bad.cedar:2:", &commit[..12])),
            "{err}"
        );
        assert!(err.contains("kindd"), "{err}");
    }

    #[test]
    fn git_missing_ref_subdir_or_files_are_clear_errors() {
        let repo = Repo::new();
        let commit = repo.commit(&[("policies/README.md", "no policies yet")], "empty");
        let short = &commit[..12];

        let err = repo
            .source("nope", "")
            .current_version(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot resolve ref `nope`"), "{err}");
        assert!(err.contains("no such branch, tag or ref"), "{err}");
        let missing_commit = "0123456789abcdef0123456789abcdef01234567";
        let err = repo
            .source(missing_commit, "")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("cannot resolve ref `{missing_commit}`")),
            "{err}"
        );
        assert!(err.ends_with("no such commit"), "{err}");

        let err = repo
            .source("main", "rules")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("no directory `rules` in commit `{short}`")),
            "{err}"
        );
        let err = repo
            .source("main", "policies/README.md")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no directory `policies/README.md`"), "{err}");
        let err = repo
            .source("main", "../elsewhere")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no directory `../elsewhere`"), "{err}");

        let err = repo
            .source("main", "policies")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "no `*.cedar` policy files under `{short}:policies`"
            )),
            "{err}"
        );

        let not_a_repo = tempfile::tempdir().unwrap();
        let err = PolicySource::Git {
            repo: not_a_repo.path().to_path_buf(),
            reference: "main".into(),
            subdir: String::new(),
        }
        .current_version(Engine::Cedar)
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("cannot read git repository"), "{err}");
    }

    #[test]
    fn git_symbolic_link_policy_is_refused() {
        let repo = Repo::new();
        repo.write("shared/access.cedar", PERMIT);
        std::os::unix::fs::symlink("shared/access.cedar", repo.path().join("access.cedar"))
            .unwrap();
        repo.commit(&[], "link");
        let err = repo
            .source("main", "")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(err.contains("access.cedar"), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn git_submodules_are_refused() {
        // By a policy file's name, and (found in attack) by any other: a
        // directory of rules moved to a submodule was left out without a
        // word.
        for name in ["guardrails.cedar", "guard"] {
            let repo = Repo::new();
            repo.commit(&[("access.cedar", PERMIT)], "first");
            repo.git(&[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,1111111111111111111111111111111111111111,{name}"),
            ]);
            repo.git(&["commit", "-q", "-m", "rules from a submodule"]);
            let err = repo
                .source("main", "")
                .load(Engine::Cedar)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(":{name}`")) && err.contains("submodule"),
                "{err}"
            );
        }
    }

    /// Found in attack: a link to a directory was left out of a Git source
    /// while a checkout (what `policy test` in CI reads) followed it.
    #[test]
    fn git_links_are_refused_unless_they_name_a_file() {
        let repo = Repo::new();
        repo.commit(
            &[
                ("policies/access.cedar", PERMIT),
                ("policies/.shared/guard/guard.cedar", FORBID),
                ("policies/docs/README.md", "read me"),
            ],
            "first",
        );
        let source = repo.source("main", "policies");
        let link = |name: &str, target: &str| {
            let path = repo.path().join("policies").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
            repo.git(&["add", "-A"]);
            repo.git(&["commit", "-q", "-m", name]);
        };
        // To a file: as a checkout reads it (the name is no policy's).
        link("teams/README.md", "../docs/README.md");
        assert_eq!(source.load(Engine::Cedar).unwrap().len(), 1);
        // Hidden: left out, as a directory source leaves it out.
        link(".current", ".shared/guard");
        assert_eq!(source.load(Engine::Cedar).unwrap().len(), 1);
        for (name, target) in [
            ("guard", ".shared/guard"),
            ("up", "../../elsewhere"),
            ("nowhere", "gone"),
            ("absolute", "/etc"),
            ("teams/chain", "../guard"),
            // Found in attack: `.current/..` is where `.current` leads, not `.`,
            // in a checkout; read lexically, `x` was taken for the file.
            ("g", ".current/../docs/README.md"),
            ("slash", "../docs/README.md/"),
        ] {
            link(name, target);
            let err = source.load(Engine::Cedar).unwrap_err().to_string();
            assert!(
                err.contains(&format!(":policies/{name}`")) && err.contains("symbolic link"),
                "{name}: {err}"
            );
            repo.git(&["rm", "-q", &format!("policies/{name}")]);
            repo.git(&["commit", "-q", "-m", "gone"]);
        }
        // Found in attack: one whose name is not UTF-8 was left out; a
        // directory source refuses it.
        use std::os::unix::ffi::OsStrExt;
        let odd = repo
            .path()
            .join("policies")
            .join(std::ffi::OsStr::from_bytes(b"g\xff"));
        std::os::unix::fs::symlink(".shared/guard", odd).unwrap();
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "odd"]);
        let err = source.load(Engine::Cedar).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    /// Found in attack: a tree listing `access.cedar` twice was enforced as
    /// both files, though `git show` shows the first and a checkout the last.
    #[test]
    fn git_tree_listing_a_name_twice_is_refused() {
        let repo = Repo::new();
        repo.commit(&[("policies/access.cedar", PERMIT)], "first");
        let blob = |text: &str| {
            let file = repo.path().join("blob");
            std::fs::write(&file, text).unwrap();
            repo.git(&["hash-object", "-w", "blob"])
        };
        let tree_of = |entries: &[(&str, &str, &str)]| {
            let mut raw = Vec::new();
            for (mode, name, id) in entries {
                raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
                raw.extend_from_slice(gix::ObjectId::from_hex(id.as_bytes()).unwrap().as_bytes());
            }
            std::fs::write(repo.path().join("tree"), raw).unwrap();
            repo.git(&["hash-object", "-t", "tree", "-w", "--literally", "tree"])
        };
        let (permit, forbid) = (blob(PERMIT), blob(FORBID));
        let twice = tree_of(&[
            ("100644", "access.cedar", &permit),
            ("100644", "access.cedar", &forbid),
        ]);
        let once = tree_of(&[("100644", "access.cedar", &permit)]);
        for root in [
            tree_of(&[("40000", "policies", &twice)]),
            tree_of(&[("40000", "policies", &once), ("40000", "policies", &twice)]),
        ] {
            let commit = repo.git(&["commit-tree", &root, "-m", "twice"]);
            repo.git(&["update-ref", "refs/heads/main", &commit]);
            let err = repo
                .source("main", "policies")
                .load(Engine::Cedar)
                .unwrap_err()
                .to_string();
            assert!(err.contains("listed twice"), "{err}");
        }
    }

    #[test]
    fn a_policy_file_over_the_size_limit_is_refused_unread() {
        let big = format!("{PERMIT}{}", "// a comment\n".repeat(400_000));
        let repo = Repo::new();
        repo.commit(&[("access.cedar", &big)], "big");
        let err = repo
            .source("main", "")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the 4 MiB"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("access.cedar"), &big).unwrap();
        let source = PolicySource::Directory(dir.path().to_path_buf());
        let err = source.load(Engine::Cedar).err().unwrap().to_string();
        assert!(err.contains("over the 4 MiB"), "{err}");
    }

    /// A link in a policy directory is followed inside it (a mounted config
    /// map's files are links), never out of it.
    #[test]
    fn a_link_out_of_the_policy_directory_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.cedar"), PERMIT).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("..data/access.cedar"), PERMIT).unwrap();
        std::os::unix::fs::symlink("..data/access.cedar", dir.path().join("access.cedar")).unwrap();
        let source = PolicySource::Directory(dir.path().to_path_buf());
        assert!(source.load(Engine::Cedar).is_ok());
        std::os::unix::fs::symlink(
            outside.path().join("secret.cedar"),
            dir.path().join("zz.cedar"),
        )
        .unwrap();
        let err = source.load(Engine::Cedar).err().unwrap().to_string();
        assert!(
            err.contains("zz.cedar") && err.contains("out of the policy directory"),
            "{err}"
        );
    }

    /// Found in attack: with `ref = "main"`, a tag `main` (or a ref
    /// `refs/main`) had been enforced instead of the branch.
    #[test]
    fn a_ref_name_that_several_refs_answer_to_is_refused() {
        let repo = Repo::new();
        let branch = repo.commit(&[("access.cedar", PERMIT)], "branch");
        assert_eq!(
            repo.source("main", "")
                .load(Engine::Cedar)
                .unwrap()
                .version(),
            branch
        );
        repo.git(&["checkout", "-q", "-b", "weak"]);
        repo.commit(&[("access.cedar", FORBID)], "weak");
        repo.git(&["checkout", "-q", "main"]);
        for (make, name) in [
            (vec!["tag", "main", "weak"], "refs/tags/main"),
            (vec!["update-ref", "refs/main", "weak"], "refs/main"),
        ] {
            repo.git(&make);
            let err = repo
                .source("main", "")
                .load(Engine::Cedar)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("names more than one ref") && err.contains(name),
                "{err}"
            );
            // Named in full, the branch is read.
            assert_eq!(
                repo.source("refs/heads/main", "")
                    .load(Engine::Cedar)
                    .unwrap()
                    .version(),
                branch
            );
            if name == "refs/tags/main" {
                repo.git(&["tag", "-d", "main"]);
            }
        }
    }

    #[test]
    fn git_bare_repository_is_read() {
        let repo = Repo::new();
        let commit = repo.commit(&[("access.cedar", PERMIT)], "first");
        let bare = tempfile::tempdir().unwrap();
        let bare_path = bare.path().join("policies.git");
        repo.git(&["clone", "-q", "--bare", ".", bare_path.to_str().unwrap()]);
        let source = PolicySource::Git {
            repo: bare_path,
            reference: "HEAD".into(),
            subdir: String::new(),
        };
        assert_eq!(source.load(Engine::Cedar).unwrap().version(), commit);
    }

    #[test]
    fn a_policy_or_mask_file_that_cannot_be_read_fails_the_version() {
        for name in ["guardrails.cedar", "masks.toml"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("access.cedar"), PERMIT).unwrap();
            // A shared file linked in, whose target went away.
            std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join(name)).unwrap();
            let source = PolicySource::Directory(dir.path().to_path_buf());
            let error = source.load(Engine::Cedar).err().unwrap().to_string();
            assert!(error.contains(name), "{error}");
            // A directory by that name is a directory: what it holds is read.
            std::fs::remove_file(dir.path().join(name)).unwrap();
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(
                dir.path().join(name).join("inner.cedar"),
                "permit (principal, action, resource);\n",
            )
            .unwrap();
            let policies = source.load(Engine::Cedar).unwrap();
            assert!(
                policies
                    .policy_names()
                    .contains(&format!("{name}/inner.cedar#0")),
                "{:?}",
                policies.policy_names()
            );
        }
    }

    #[test]
    fn history_tells_forward_back_and_rewritten() {
        let repo = Repo::new();
        let first = repo.commit(&[("access.cedar", PERMIT)], "first");
        let second = repo.commit(&[("guardrails.cedar", FORBID)], "second");
        let source = repo.source("main", "");
        assert_eq!(source.history(&first, &second), Some(History::Forward));
        assert_eq!(source.history(&second, &first), Some(History::Back));
        assert_eq!(source.history(&second, &second), None);
        repo.git(&["checkout", "-q", "-b", "other", &first]);
        let other = repo.commit(&[("other.cedar", PERMIT)], "elsewhere");
        assert_eq!(source.history(&second, &other), Some(History::Diverged));
        assert_eq!(source.history(&second, "not a commit"), None);
        // Found in attack: the enforced commit gone (a force-push, then a
        // garbage collection) made a step back look like none.
        let gone = "1111111111111111111111111111111111111111";
        assert_eq!(source.history(gone, &first), Some(History::Unknown));
        let dir = PolicySource::Directory(repo.path().to_path_buf());
        assert_eq!(dir.history(&first, &second), None);
    }

    #[test]
    fn sub_directories_are_read_in_git_as_in_a_directory() {
        let repo = Repo::new();
        let files = [
            ("policies/access.cedar", PERMIT),
            ("policies/guardrails/ddl.cedar", FORBID),
            ("policies/teams/eng/more.cedar", "permit (principal, action, resource);\n"),
            ("policies/.github/ignored.cedar", INVALID),
            (
                "policies/teams/masks.toml",
                "[[rule]]\nid = \"email\"\ntargets = [\"demo\"]\ncolumns = [\"customers.email\"]\nstrategy = \"redact\"\n",
            ),
            ("other/outside.cedar", INVALID),
        ];
        repo.commit(&files, "nested");
        let from_git = repo.source("main", "policies").load(Engine::Cedar).unwrap();
        let dir = PolicySource::Directory(repo.path().join("policies"));
        let from_dir = dir.load(Engine::Cedar).unwrap();
        for policies in [&from_git, &from_dir] {
            assert_eq!(
                policies.policy_names(),
                ["eng-connects", "no-drop", "teams/eng/more.cedar#0"]
            );
            assert_eq!(policies.masks().rules().len(), 1);
        }
        // An error names the file by its full path.
        repo.commit(&[("policies/teams/bad.cedar", INVALID)], "bad");
        let error = repo
            .source("main", "policies")
            .load(Engine::Cedar)
            .unwrap_err();
        assert!(
            error.to_string().contains(":policies/teams/bad.cedar:"),
            "{error}"
        );
        let error = dir.load(Engine::Cedar).unwrap_err().to_string();
        assert!(error.contains("policies/teams/bad.cedar:"), "{error}");
        // A rule file whose name is a policy file's but for its case.
        repo.git(&["rm", "-q", "policies/teams/bad.cedar"]);
        repo.commit(&[("policies/teams/Guard.CEDAR", FORBID)], "miscased");
        let error = repo
            .source("main", "policies")
            .load(Engine::Cedar)
            .unwrap_err();
        assert!(error.to_string().contains("not exactly"), "{error}");
        assert!(
            error.to_string().contains("policies/teams/Guard.CEDAR"),
            "{error}"
        );
        // One that only looks like one (a Cyrillic e).
        repo.git(&["rm", "-q", "policies/teams/Guard.CEDAR"]);
        repo.commit(
            &[("policies/teams/guard.c\u{435}dar", FORBID)],
            "look-alike",
        );
        let error = repo
            .source("main", "policies")
            .load(Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("look-alike") && error.contains("policies/teams/guard.c\u{435}dar"),
            "{error}"
        );
    }

    #[test]
    fn directory_version_is_a_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("access.cedar"), PERMIT).unwrap();
        let source = PolicySource::Directory(dir.path().to_path_buf());
        let version = source.current_version(Engine::Cedar).unwrap();
        // The whole digest: two sets of rules must not pass for each other.
        assert!(
            version.starts_with("sha256:") && version.len() == "sha256:".len() + 64,
            "{version}"
        );
        assert_eq!(source.load(Engine::Cedar).unwrap().version(), version);
        // Found in attack: one file holding another's name and text between
        // NULs had the version of the two files.
        let two = tempfile::tempdir().unwrap();
        std::fs::write(two.path().join("a.cedar"), "// notes\n//").unwrap();
        std::fs::write(two.path().join("b.cedar"), FORBID).unwrap();
        let one = tempfile::tempdir().unwrap();
        std::fs::write(
            one.path().join("a.cedar"),
            format!("// notes\n//\0b.cedar\0{FORBID}"),
        )
        .unwrap();
        let version = |dir: &Path| {
            PolicySource::Directory(dir.to_path_buf())
                .current_version(Engine::Cedar)
                .unwrap()
        };
        assert_ne!(version(one.path()), version(two.path()));
    }
}
