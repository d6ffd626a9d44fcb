//! The policy engines behind one type: what the Gate holds and asks.

use crate::cedar::{content_version, read_dir, read_found, CedarPolicies, SourceFile};
use crate::error::PolicyError;
use crate::rego::RegoPolicies;
use portcullis_core::{Decision, Request};
use portcullis_mask::MaskRules;
use std::path::{Path, PathBuf};

/// Which language the policies are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    #[default]
    Cedar,
    Rego,
}

impl Engine {
    /// The extension of its policy files.
    pub fn extension(self) -> &'static str {
        match self {
            Engine::Cedar => "cedar",
            Engine::Rego => "rego",
        }
    }
}

/// A loaded, validated policy version: the rules of either engine, the
/// mask rules kept beside them (`*masks.toml`), and the text of the test
/// cases kept beside them (`*.cases.toml`), read from the same version.
#[derive(Debug)]
pub struct Policies {
    rules: Rules,
    masks: MaskRules,
    cases: Vec<CaseFile>,
}

/// A test case file of a policy version, as read: cases are parsed and run
/// by whoever runs them (`portcullis policy test`, or the gateway when
/// `[policy] require_cases` is on).
#[derive(Clone, Debug)]
pub struct CaseFile {
    /// Its path inside the policy directory (`teams/eng.cases.toml`).
    pub name: String,
    /// Where it is, as errors show it.
    pub path: PathBuf,
    pub text: String,
}

/// The name test case files end with.
pub const CASE_FILE_SUFFIX: &str = ".cases.toml";

/// Whether a file name is a test case file.
pub(crate) fn is_case_file(name: &str) -> bool {
    name.ends_with(CASE_FILE_SUFFIX)
}

// One per policy version, behind the gateway's shared reference to it: the
// size of either variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Rules {
    Cedar(CedarPolicies),
    Rego(RegoPolicies),
}

impl From<CedarPolicies> for Policies {
    fn from(policies: CedarPolicies) -> Self {
        Policies {
            rules: Rules::Cedar(policies),
            masks: MaskRules::default(),
            cases: Vec::new(),
        }
    }
}

impl From<RegoPolicies> for Policies {
    fn from(policies: RegoPolicies) -> Self {
        Policies {
            rules: Rules::Rego(policies),
            masks: MaskRules::default(),
            cases: Vec::new(),
        }
    }
}

/// Whether a file name is a mask rules file: `masks.toml`, `pii.masks.toml`.
pub(crate) fn is_mask_file(name: &str) -> bool {
    name == MASK_FILE || name.ends_with(&format!(".{MASK_FILE}"))
}

/// The stack policies are parsed and validated on.
const LOAD_STACK: usize = 64 << 20;

/// Runs `load` on a thread of its own with a [`LOAD_STACK`] stack (the
/// caller may be a runtime worker with 2 MiB): parsers and validators
/// recurse once per level of a policy's nesting, which the text checks
/// (`check_text`) bound with a margin this stack keeps wide, and an
/// overflow would end the process.
fn on_large_stack<T: Send>(
    load: impl FnOnce() -> Result<T, PolicyError> + Send,
) -> Result<T, PolicyError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("portcullis-policy-load".into())
            .stack_size(LOAD_STACK)
            .spawn_scoped(scope, load)
            .map_err(|e| failed(format!("cannot start a thread to read them: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(failed("reading them failed".into())))
    })
}

fn failed(message: String) -> PolicyError {
    PolicyError::Invalid {
        location: "policies".into(),
        message,
    }
}

/// The name mask rule files end with.
pub const MASK_FILE: &str = "masks.toml";

impl Policies {
    /// Loads the `*.cedar` or `*.rego` files of `dir`, its mask rules and
    /// its test cases. The version is a content hash of all of them.
    pub fn load_dir(dir: &Path, engine: Engine) -> Result<Policies, PolicyError> {
        let rule_files = read_dir(dir, engine.extension())?;
        let mask_files = read_mask_files(dir)?;
        let case_files = read_case_files(dir)?;
        let version = dir_content_version(&rule_files, &mask_files, &case_files);
        Policies::build(rule_files, mask_files, case_files, version, engine)
    }

    /// Loads `dir` with `engine`, or with the engine its files are written
    /// for: Cedar when it holds `*.cedar` files, Rego when it holds `*.rego`
    /// files; refused when it holds both, since what a tool checked could
    /// then be the files the gateway does not read. For tools that run
    /// without a config (`policy validate`, `policy test`).
    pub fn load_dir_detected(dir: &Path, engine: Option<Engine>) -> Result<Policies, PolicyError> {
        let engine = match engine {
            Some(engine) => engine,
            None => detect_engine(dir)?,
        };
        Policies::load_dir(dir, engine)
    }

    /// The version a directory holds for `engine`, without parsing.
    pub fn dir_version(dir: &Path, engine: Engine) -> Result<String, PolicyError> {
        Ok(dir_content_version(
            &read_dir(dir, engine.extension())?,
            &read_mask_files(dir)?,
            &read_case_files(dir)?,
        ))
    }

    /// Policies read from a commit: `(path, text)` pairs of rule files, mask
    /// rule files and test case files, each path inside the policy
    /// directory; errors name a file `<commit_prefix><path>`.
    pub(crate) fn from_commit_files(
        [files, mask_files, case_files]: [Vec<(String, String)>; 3],
        commit_prefix: &str,
        version: String,
        engine: Engine,
    ) -> Result<Policies, PolicyError> {
        let named = |files: Vec<(String, String)>| -> Vec<SourceFile> {
            files
                .into_iter()
                .map(|(name, text)| SourceFile {
                    path: format!("{commit_prefix}{name}").into(),
                    name,
                    text,
                })
                .collect()
        };
        Policies::build(
            named(files),
            named(mask_files),
            named(case_files),
            version,
            engine,
        )
    }

    /// Parses and validates the rules and mask rules, and keeps the cases.
    fn build(
        rule_files: Vec<SourceFile>,
        mask_files: Vec<SourceFile>,
        case_files: Vec<SourceFile>,
        version: String,
        engine: Engine,
    ) -> Result<Policies, PolicyError> {
        let turned: Vec<PolicyError> = rule_files
            .iter()
            .chain(&mask_files)
            .chain(&case_files)
            .filter_map(crate::files::hidden_character)
            .collect();
        if let Some(error) = PolicyError::from_problems(turned) {
            return Err(error);
        }
        let rules = on_large_stack(|| match engine {
            Engine::Cedar => {
                CedarPolicies::from_files(rule_files).map(|p| Rules::Cedar(p.with_version(version)))
            }
            Engine::Rego => RegoPolicies::from_files(rule_files, version).map(Rules::Rego),
        });
        let masks = parse_masks(
            mask_files
                .into_iter()
                .map(|f| (f.path.display().to_string(), f.text))
                .collect(),
        );
        let cases = case_files
            .into_iter()
            .map(|f| CaseFile {
                name: f.name,
                path: f.path,
                text: f.text,
            })
            .collect();
        Ok(Policies::combine(rules, masks)?.with_cases(cases))
    }

    /// Both halves, or every problem of both, in file order.
    fn combine(
        rules: Result<Rules, PolicyError>,
        masks: Result<MaskRules, Vec<PolicyError>>,
    ) -> Result<Policies, PolicyError> {
        match (rules, masks) {
            (Ok(rules), Ok(masks)) => Ok(Policies {
                rules,
                masks,
                cases: Vec::new(),
            }),
            (rules, masks) => {
                let mut problems = Vec::new();
                match rules.err() {
                    Some(PolicyError::Several(several)) => problems.extend(several),
                    Some(error) => problems.push(error),
                    None => {}
                }
                problems.extend(masks.err().unwrap_or_default());
                problems.sort_by_key(PolicyError::sort_key);
                Err(PolicyError::from_problems(problems)
                    .unwrap_or_else(|| PolicyError::Schema("no problem reported".into())))
            }
        }
    }

    /// The same rules with these mask rules.
    pub fn with_masks(self, masks: MaskRules) -> Policies {
        Policies { masks, ..self }
    }

    /// The test case files read with this version.
    pub fn case_files(&self) -> &[CaseFile] {
        &self.cases
    }

    /// The same rules with these test case files.
    pub(crate) fn with_cases(self, cases: Vec<CaseFile>) -> Policies {
        Policies { cases, ..self }
    }

    pub fn engine(&self) -> Engine {
        match &self.rules {
            Rules::Cedar(_) => Engine::Cedar,
            Rules::Rego(_) => Engine::Rego,
        }
    }

    /// The mask rules of this version.
    pub fn masks(&self) -> &MaskRules {
        &self.masks
    }

    /// What of this version names a target not in `configured`: a mask
    /// rule whose `targets` match none of them (its values would go out in
    /// clear wherever it was meant to apply), a Cedar policy that names a
    /// target that is not (in its scope or its conditions: misspelt, it
    /// applies to nothing). One line each, for the log. Not refused: one
    /// policy repository may serve gateways with different targets.
    pub fn unconfigured_targets(&self, configured: &[String]) -> Vec<String> {
        let mut found: Vec<String> = self
            .masks
            .rules()
            .iter()
            .filter(|rule| !configured.iter().any(|t| rule.applies_to_target(t)))
            .map(|rule| {
                let targets: Vec<&str> = rule.targets().collect();
                format!(
                    "mask rule `{}` ({}) applies to no configured target (`targets = {:?}`): it masks nothing here",
                    rule.id, rule.location, targets
                )
            })
            .collect();
        if let Rules::Cedar(cedar) = &self.rules {
            found.extend(
                cedar
                    .named_targets()
                    .into_iter()
                    .filter(|(_, target)| !configured.contains(target))
                    .map(|(policy, target)| {
                        format!("policy `{policy}` names target `{target}`, which is not configured: nothing here is that target")
                    }),
            );
        }
        found
    }

    pub fn decide(&self, request: &Request<'_>) -> Decision {
        match &self.rules {
            Rules::Cedar(p) => p.decide(request),
            Rules::Rego(p) => p.decide(request),
        }
    }

    /// Whether a decision on a statement may depend on its exact text. When
    /// not, statements of one shape (see `StatementInfo::shape`) are decided
    /// alike. Rego can read any field by a computed name, so it always may.
    pub fn reads_statement_text(&self) -> bool {
        match &self.rules {
            Rules::Cedar(p) => p.reads_statement_text(),
            Rules::Rego(_) => true,
        }
    }

    pub fn version(&self) -> &str {
        match &self.rules {
            Rules::Cedar(p) => p.version(),
            Rules::Rego(p) => p.version(),
        }
    }

    pub fn policy_names(&self) -> Vec<String> {
        match &self.rules {
            Rules::Cedar(p) => p.policy_names(),
            Rules::Rego(p) => p.policy_names(),
        }
    }

    pub fn len(&self) -> usize {
        self.policy_names().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The engine `dir`'s rule files are written for, by their names; refused
/// when it holds both kinds. A listing that fails is an error, not "none":
/// taken for none, a file that stops the listing would pick the other
/// engine.
fn detect_engine(dir: &Path) -> Result<Engine, PolicyError> {
    let has = |engine: Engine| -> Result<bool, PolicyError> {
        Ok(!crate::cedar::list_rule_files(dir, engine.extension())?.is_empty())
    };
    match (has(Engine::Cedar)?, has(Engine::Rego)?) {
        (true, true) => Err(PolicyError::Invalid {
            location: dir.display().to_string(),
            message: "holds both `*.cedar` and `*.rego` files: say which the gateway reads with `--engine cedar` or `--engine rego` (its `[policy] engine`)".into(),
        }),
        (false, true) => Ok(Engine::Rego),
        (_, false) => Ok(Engine::Cedar),
    }
}

/// The mask rule files under `dir`, sorted by path; none is fine.
fn read_mask_files(dir: &Path) -> Result<Vec<SourceFile>, PolicyError> {
    read_found(crate::files::list(dir, &is_mask_file)?)
}

/// The test case files under `dir`, sorted by path; none is fine.
fn read_case_files(dir: &Path) -> Result<Vec<SourceFile>, PolicyError> {
    read_found(crate::files::list(dir, &is_case_file)?)
}

/// The content version of a directory: its rule files, then its mask files,
/// then its test case files (a fix to a case alone is a new version, which
/// `[policy] require_cases` checks again). Without mask or case files it is
/// the version the rule files alone give.
fn dir_content_version(
    rule_files: &[SourceFile],
    mask_files: &[SourceFile],
    case_files: &[SourceFile],
) -> String {
    if mask_files.is_empty() && case_files.is_empty() {
        return content_version(rule_files);
    }
    let all: Vec<SourceFile> = rule_files
        .iter()
        .chain(mask_files)
        .chain(case_files)
        .map(|f| SourceFile {
            path: f.path.clone(),
            name: f.name.clone(),
            text: f.text.clone(),
        })
        .collect();
    content_version(&all)
}

fn parse_masks(files: Vec<(String, String)>) -> Result<MaskRules, Vec<PolicyError>> {
    MaskRules::from_files(&files).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| PolicyError::Invalid {
                location: e.location,
                message: e.message,
            })
            .collect()
    })
}
