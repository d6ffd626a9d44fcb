//! The Cedar engine: policies from a directory, validated against the
//! gateway's schema, evaluated per request.

use crate::error::PolicyError;
use cedar_policy::{
    Context, Entities, Entity, EntityUid, Policy, PolicyId, PolicySet, RestrictedExpression,
    Schema, ValidationMode, Validator,
};
use portcullis_core::{
    Action, Approval, Command, Decision, Effect, Principal, Request, StatementInfo, StatementKind,
    Target,
};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// The schema every policy is validated against.
pub const SCHEMA: &str = include_str!("portcullis.cedarschema");

/// A loaded, validated policy version. Immutable: a new version is a new
/// value, swapped in whole.
pub struct CedarPolicies {
    schema: Schema,
    /// `sha256:<64 hex>` of the files' names and contents, or a commit id.
    version: String,
    /// Policy id to the name people see (the `@id` annotation, or `file#n`).
    names: HashMap<PolicyId, String>,
    /// The `forbid` policies marked `@approval("group")`: who may lift each.
    approvable: HashMap<PolicyId, Approver>,
    /// The policies whose action scope can match each action of the schema,
    /// by action name: a request is evaluated against its action's only,
    /// which decides the same (a policy whose scope does not match is never
    /// satisfied and never evaluates its conditions) with less work.
    by_action: HashMap<String, Arc<Scoped>>,
    /// Every policy: for an action the schema does not name.
    all: Arc<Scoped>,
    /// For recent principals and targets: their entities (building them is
    /// a third of a decision, and a session asks for the same ones each
    /// time), and each action's policies cut to those whose principal and
    /// resource scopes can match them ([`Scope`]).
    pairs: quick_cache::sync::Cache<(Principal, Target), Arc<Pair>>,
    /// Off only in tests that compare decisions with and without the cut.
    slicing: bool,
    /// Recent contexts, by what they hold ([`Value::put`]): building one is
    /// a fifth of a decision.
    contexts: quick_cache::sync::Cache<Vec<u8>, Context>,
    /// What of a request's context some policy reads: the only part it is
    /// built with (see [`Reads`]).
    pub(crate) read: ContextFields,
}

/// How many principal and target pairs a policy version keeps built.
const ENTITIES_CACHED: usize = 1024;

/// How many contexts a policy version keeps built.
const CONTEXTS_CACHED: usize = 1024;

/// The policies that can apply to one action.
pub(crate) struct Scoped {
    members: Vec<Member>,
}

/// One policy of a [`Scoped`] set.
#[derive(Clone)]
struct Member {
    policy: Policy,
    /// What its scope can match.
    scope: Scope,
    forbid: bool,
    /// Its scope and conditions as one expression, built once (Cedar's
    /// `Authorizer` builds it afresh for every request and drops it after,
    /// a quarter of a decision's instructions), as [`crate::condition`]
    /// prepares it.
    condition: cedar_policy_core::ast::Expr,
    /// The same as written, when preparing changed it: evaluated where the
    /// prepared one fails, since it may fail only for the deeper stack it
    /// needs.
    written: Option<cedar_policy_core::ast::Expr>,
}

/// What the policies of a [`Scoped`] set say of one request.
struct Verdict<'s> {
    /// The satisfied `forbid`s and `permit`s, in the set's order.
    forbids: Vec<&'s Member>,
    permits: Vec<&'s Member>,
    /// The policies that could not be evaluated, with why. Cedar skips
    /// them; the gateway turns an allow with any of them into a denial.
    errors: Vec<(&'s Member, String)>,
}

impl Verdict<'_> {
    /// Cedar's decision: no forbid satisfied, and some permit.
    fn allowed(&self) -> bool {
        self.forbids.is_empty() && !self.permits.is_empty()
    }

    /// What Cedar's `Response` calls the reasons: the satisfied forbids
    /// when there are any, else the satisfied permits.
    fn deciding(&self) -> &[&Member] {
        if self.forbids.is_empty() {
            &self.permits
        } else {
            &self.forbids
        }
    }
}

impl Scoped {
    /// Every policy of `policies`, by id (Cedar keeps a set's policies in
    /// no particular order; a decision's reasons are given in this one),
    /// each condition built and prepared once.
    fn of(policies: &PolicySet) -> Scoped {
        let mut members: Vec<Member> = policies
            .policies()
            .map(|policy| {
                let core: &cedar_policy_core::ast::Policy = policy.as_ref();
                let written = core.condition();
                let condition = crate::condition::prepared(&written);
                Member {
                    forbid: policy.effect() == cedar_policy::Effect::Forbid,
                    written: (condition != written).then_some(written),
                    condition,
                    scope: Scope::of(policy),
                    policy: policy.clone(),
                }
            })
            .collect();
        members.sort_by(|a, b| a.policy.id().cmp(b.policy.id()));
        Scoped { members }
    }

    /// The members for which `keep` holds, in the same order.
    fn only(&self, keep: impl Fn(&Member) -> bool) -> Scoped {
        Scoped {
            members: self.members.iter().filter(|m| keep(m)).cloned().collect(),
        }
    }

    /// The ids of the policies.
    #[cfg(test)]
    pub(crate) fn ids(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.policy.id().to_string())
            .collect()
    }

    /// Whether Cedar's own `Authorizer`, on these policies (every policy of
    /// the version) and `request` (with the whole context), decides as
    /// [`Scoped::evaluate`] did on the policies cut for the request and
    /// the context cut to what they read: the same effect, the same
    /// deciding policies, as many errors. Run on every decision of test
    /// builds.
    fn check(
        &self,
        verdict: &Verdict<'_>,
        request: &cedar_policy::Request,
        entities: &Entities,
    ) -> Result<(), String> {
        let set = PolicySet::from_policies(self.members.iter().map(|m| m.policy.clone()))
            .map_err(|e| e.to_string())?;
        let response = cedar_policy::Authorizer::new().is_authorized(request, &set, entities);
        let mut ours: Vec<&PolicyId> = verdict.deciding().iter().map(|m| m.policy.id()).collect();
        let mut cedars: Vec<&PolicyId> = response.diagnostics().reason().collect();
        ours.sort();
        cedars.sort();
        if verdict.allowed() != (response.decision() == cedar_policy::Decision::Allow)
            || ours != cedars
            || verdict.errors.len() != response.diagnostics().errors().count()
        {
            return Err(format!(
                "the decision differs from Cedar's own: {ours:?} and {} errors against {cedars:?} and {:?}",
                verdict.errors.len(),
                response.diagnostics().errors().collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// The policies whose scope can match `principal` and `target`: the
    /// same value when that is all of them.
    pub(crate) fn cut(self: &Arc<Scoped>, principal: &Principal, target: &Target) -> Arc<Scoped> {
        let matches = |scope: &Scope| scope.matches(principal, target);
        if self.members.iter().all(|m| matches(&m.scope)) {
            return self.clone();
        }
        Arc::new(self.only(|m| matches(&m.scope)))
    }

    /// Evaluates every policy against `request` with Cedar's evaluator, as
    /// Cedar's `Authorizer` does, on the conditions built once.
    fn evaluate(&self, request: &cedar_policy::Request, entities: &Entities) -> Verdict<'_> {
        use cedar_policy_core::ast::{Literal, ValueKind};
        let request: &cedar_policy_core::ast::Request = request.as_ref();
        let evaluator = cedar_policy_core::evaluator::Evaluator::new(
            request.clone(),
            entities.as_ref(),
            cedar_policy_core::extensions::Extensions::all_available(),
        );
        let mut verdict = Verdict {
            forbids: Vec::new(),
            permits: Vec::new(),
            errors: Vec::new(),
        };
        for member in &self.members {
            let core: &cedar_policy_core::ast::Policy = member.policy.as_ref();
            let value = match (
                evaluator.interpret(&member.condition, core.env()),
                &member.written,
            ) {
                (Err(_), Some(written)) => evaluator.interpret(written, core.env()),
                (value, _) => value,
            };
            match value {
                Ok(value) => match value.value {
                    ValueKind::Lit(Literal::Bool(true)) if member.forbid => {
                        verdict.forbids.push(member)
                    }
                    ValueKind::Lit(Literal::Bool(true)) => verdict.permits.push(member),
                    ValueKind::Lit(Literal::Bool(false)) => {}
                    _ => verdict
                        .errors
                        .push((member, "its condition is not a boolean".to_string())),
                },
                Err(e) => verdict.errors.push((member, e.to_string())),
            }
        }
        verdict
    }
}

/// A principal and a target, to find their [`Pair`] without copying them.
#[derive(Hash)]
struct PairRef<'a>(&'a Principal, &'a Target);

impl quick_cache::Equivalent<(Principal, Target)> for PairRef<'_> {
    fn equivalent(&self, key: &(Principal, Target)) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

/// What a principal and a target need built, once per policy version.
struct Pair {
    entities: Entities,
    /// Each action's policies cut to those that can apply to the pair.
    by_action: HashMap<String, Arc<Scoped>>,
}

/// Which principals and targets a policy's scope can match, as far as the
/// schema tells without evaluating anything: a user is in the groups of its
/// token and nothing else, and groups and targets are in nothing. A scope
/// this does not read (another entity type) counts as `Any`: its policy is
/// kept, and Cedar decides.
#[derive(Clone, Debug)]
struct Scope {
    principal: Match,
    resource: Match,
}

#[derive(Clone, Debug)]
enum Match {
    Any,
    /// The user, or the target, of this id.
    Id(String),
    /// A user in this group.
    InGroup(String),
}

impl Scope {
    fn of(policy: &Policy) -> Scope {
        use cedar_policy::{PrincipalConstraint as P, ResourceConstraint as R};
        let principal = match policy.principal_constraint() {
            P::Any => Match::Any,
            P::Eq(uid) | P::In(uid) if is(&uid, "User") => id(&uid),
            P::In(uid) if is(&uid, "Group") => group(&uid),
            P::Is(t) if t.to_string() == "User" => Match::Any,
            P::IsIn(t, uid) if t.to_string() == "User" && is(&uid, "Group") => group(&uid),
            P::IsIn(t, uid) if t.to_string() == "User" && is(&uid, "User") => id(&uid),
            _ => Match::Any,
        };
        let resource = match policy.resource_constraint() {
            R::Any => Match::Any,
            R::Eq(uid) | R::In(uid) if is(&uid, "Target") => id(&uid),
            R::Is(t) if t.to_string() == "Target" => Match::Any,
            R::IsIn(t, uid) if t.to_string() == "Target" && is(&uid, "Target") => id(&uid),
            _ => Match::Any,
        };
        Scope {
            principal,
            resource,
        }
    }

    fn matches(&self, principal: &Principal, target: &Target) -> bool {
        let principal_matches = match &self.principal {
            Match::Id(id) => *id == principal.id,
            Match::InGroup(group) => principal.groups.iter().any(|g| g == group),
            Match::Any => true,
        };
        let resource_matches = match &self.resource {
            Match::Id(name) => *name == target.name,
            Match::InGroup(_) | Match::Any => true,
        };
        principal_matches && resource_matches
    }
}

fn is(uid: &EntityUid, type_name: &str) -> bool {
    uid.type_name().to_string() == type_name
}

fn id(uid: &EntityUid) -> Match {
    Match::Id(uid.id().unescaped().to_string())
}

fn group(uid: &EntityUid) -> Match {
    Match::InGroup(uid.id().unescaped().to_string())
}

/// Who may lift one approvable `forbid`.
#[derive(Clone, Debug)]
struct Approver {
    group: String,
    /// `@approvals("N")`, 1 when absent.
    min_approvals: u32,
}

impl std::fmt::Debug for CedarPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CedarPolicies")
            .field("version", &self.version)
            .finish()
    }
}

/// A policy or mask rule file.
pub(crate) struct SourceFile {
    /// Where it is, as errors show it.
    pub(crate) path: PathBuf,
    /// Its path inside the policy directory (`teams/eng.cedar`): it names
    /// the policies without an `@id` and enters the content version.
    pub(crate) name: String,
    pub(crate) text: String,
}

impl SourceFile {
    /// A file held in memory, shown by its name.
    pub(crate) fn in_memory(name: &str, text: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from(name),
            name: name.to_string(),
            text: text.to_string(),
        }
    }
}

/// The files under `dir` whose names end in `.<extension>`, unread.
pub(crate) fn list_rule_files(
    dir: &Path,
    extension: &str,
) -> Result<Vec<crate::files::Found>, PolicyError> {
    crate::files::list(dir, &|name: &str| {
        Path::new(name).extension().is_some_and(|e| e == extension)
    })
}

/// Every `*.<extension>` file under `dir` (see [`crate::files`]), sorted by
/// its path inside `dir`.
pub(crate) fn read_dir(dir: &Path, extension: &str) -> Result<Vec<SourceFile>, PolicyError> {
    let found = list_rule_files(dir, extension)?;
    if found.is_empty() {
        return Err(PolicyError::Empty {
            dir: dir.to_path_buf(),
            extension: extension.to_string(),
        });
    }
    read_found(found)
}

/// The text of each file found.
pub(crate) fn read_found(found: Vec<crate::files::Found>) -> Result<Vec<SourceFile>, PolicyError> {
    found
        .into_iter()
        .map(|found| {
            let text = crate::files::read(&found)?;
            Ok(SourceFile {
                path: found.path,
                name: found.name,
                text,
            })
        })
        .collect()
}

/// The largest policy or mask rule file read: far more rules than people
/// write, and small enough that a file of comments committed to bring the
/// gateway down is refused before it is read.
pub(crate) const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why a file over [`MAX_FILE_BYTES`] is refused.
pub(crate) fn too_large(bytes: u64) -> String {
    format!(
        "{bytes} bytes long, over the {} MiB a policy or mask rule file may be",
        MAX_FILE_BYTES >> 20
    )
}

/// How deep brackets may nest in a policy file. Cedar's parser recurses
/// once per level (a few hundred overflow the stack, which aborts the
/// process: no error can be reported), and regorus takes time that doubles
/// with each level of a nested literal (22 levels: over a minute). Policies
/// people write nest a handful of levels.
pub(crate) const MAX_NESTING: usize = 12;

/// How many `if`s one Cedar policy may hold: `else if` nests a level each.
/// Within these bounds, [`crate::condition::MAX_DEPTH`] then bounds the
/// parsed Cedar policy's depth.
pub(crate) const MAX_IFS: usize = 100;

/// The language of a policy file, for [`check_text`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Language {
    Cedar,
    Rego,
}

impl Language {
    /// How many operators one Cedar policy (up to a `;` outside brackets)
    /// or one Rego statement (see [`check_text`]) may hold: `||`, `&&`,
    /// comparisons, arithmetic, `.`, `[`, `!`, and Cedar's `in`,
    /// `has`, `like`, `is`, `if`. A chain of them needs no bracket (`a || b
    /// || ...`, `1 + 1 + ...`) and nests one level per term once parsed;
    /// the parsers, printers and evaluators recurse once per level, and
    /// too many levels overflow the stack, which aborts the process (for
    /// Rego, a few hundred terms on a 2 MiB stack of a debug build). The
    /// quickstart's largest Cedar policy holds about 70 operators, its
    /// largest Rego rule about 60.
    fn max_operators(self) -> usize {
        match self {
            Language::Cedar => 2000,
            Language::Rego => 300,
        }
    }

    /// What [`Language::max_operators`] counts in.
    fn unit(self) -> &'static str {
        match self {
            Language::Cedar => "policy",
            Language::Rego => "statement",
        }
    }
}

/// Refuses `text`, before any parser sees it, whose brackets nest deeper
/// than [`MAX_NESTING`], with a policy or statement of more operators than
/// [`Language::max_operators`], or a Cedar policy of more than [`MAX_IFS`]
/// `if`s. Strings (Rego's raw strings too) and comments (`//` in Cedar, `#`
/// in Rego) are skipped. A Cedar policy ends at a `;` outside brackets; a
/// Rego statement at a line end outside parentheses, unless an operator
/// ends that line or starts the next.
pub(crate) fn check_text(
    location: &str,
    text: &str,
    language: Language,
) -> Result<(), PolicyError> {
    let cedar = language == Language::Cedar;
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut operators, mut most_operators) = (0usize, 0usize);
    let (mut ifs, mut most_ifs) = (0usize, 0usize);
    // The closing quote of the string being read, if any.
    let mut string: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    // Rego: a line ended outside parentheses, after no operator.
    let mut line_ended = false;
    let mut after_operator = false;
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n';
            if comment {
                continue;
            }
        }
        if let Some(quote) = string {
            match c {
                _ if escaped => escaped = false,
                '\\' if quote == '"' => escaped = true,
                _ if c == quote => string = None,
                _ => {}
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if cedar {
            match word.as_str() {
                "if" => {
                    ifs += 1;
                    operators += 1;
                }
                "in" | "has" | "like" | "is" => operators += 1,
                _ => {}
            }
        }
        if !word.is_empty() {
            after_operator = false;
        }
        word.clear();
        if c.is_whitespace() && c != '\n' {
            continue;
        }
        let operator = match c {
            // `||`, `&&`, `==`, `<=`: one operator of two characters.
            '|' | '&' | '=' if chars.peek() == Some(&c) => {
                chars.next();
                true
            }
            '<' | '>' | '!' if chars.peek() == Some(&'=') => {
                chars.next();
                true
            }
            '/' if cedar && chars.peek() == Some(&'/') => {
                comment = true;
                continue;
            }
            '<' | '>' | '!' | '+' | '-' | '*' | '/' | '%' | '|' | '&' | '.' | '[' => true,
            _ => false,
        };
        // A Rego statement ends where its line does, unless it goes on.
        if line_ended && c != '\n' && c != '#' {
            line_ended = false;
            if !operator {
                operators = 0;
            }
        }
        match c {
            '\n' => line_ended = !cedar && depth <= 1 && !after_operator,
            '#' if !cedar => comment = true,
            '"' => string = Some('"'),
            '`' if !cedar => string = Some('`'),
            ';' if depth == 0 && cedar => {
                operators = 0;
                ifs = 0;
            }
            _ => {}
        }
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c != '\n' && c != '#' {
            after_operator = operator;
        }
        if operator {
            operators += 1;
        }
        most_operators = most_operators.max(operators);
        most_ifs = most_ifs.max(ifs);
    }
    let refuse = |message: String| {
        Err(PolicyError::Invalid {
            location: location.to_string(),
            message,
        })
    };
    let chain =
        "a longer chain exhausts the parser's stack): split it, or name the values in a set";
    let (unit, max_operators) = (language.unit(), language.max_operators());
    if deepest > MAX_NESTING {
        refuse(format!(
            "brackets nest {deepest} deep; at most {MAX_NESTING} are read (deeper nesting exhausts the parser)"
        ))
    } else if most_operators > max_operators {
        refuse(format!(
            "a {unit} holds {most_operators} operators; at most {max_operators} are read ({chain}"
        ))
    } else if most_ifs > MAX_IFS {
        refuse(format!(
            "a {unit} holds {most_ifs} `if`s; at most {MAX_IFS} are read ({chain}"
        ))
    } else {
        Ok(())
    }
}

/// `sha256:<64 hex>` over the files' names and contents. Whole: the version
/// is how a reload tells a directory changed, and what the audit log names;
/// two sets of rules with one version would pass for each other.
pub(crate) fn content_version(files: &[SourceFile]) -> String {
    // Each name and text after its length: with separators alone, a text
    // holding `\0other.cedar\0` read as two files (found in attack).
    let mut hasher = Sha256::new();
    for file in files {
        for part in [file.name.as_bytes(), file.text.as_bytes()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

impl CedarPolicies {
    /// Loads every `*.cedar` file of `dir` (sorted by name), validates them
    /// strictly against [`SCHEMA`], and refuses the whole directory on the
    /// first problem.
    pub fn load_dir(dir: &Path) -> Result<CedarPolicies, PolicyError> {
        CedarPolicies::from_files(read_dir(dir, "cedar")?)
    }

    /// The version `load_dir` would give, without parsing: a cheap way to
    /// see whether a directory changed.
    pub fn dir_version(dir: &Path) -> Result<String, PolicyError> {
        Ok(content_version(&read_dir(dir, "cedar")?))
    }

    /// Loads policies held in memory, one `(name, text)` per file.
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<CedarPolicies, PolicyError> {
        let files = sources
            .iter()
            .map(|(name, text)| SourceFile::in_memory(name, text))
            .collect();
        CedarPolicies::from_files(files)
    }

    pub(crate) fn from_files(files: Vec<SourceFile>) -> Result<CedarPolicies, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let mut policies = PolicySet::new();
        let mut names = HashMap::new();
        let mut origin: HashMap<PolicyId, usize> = HashMap::new();
        let mut approvable = HashMap::new();
        // Every problem is reported, not only the first: a CI run shows all
        // of them at once.
        let mut problems = Vec::new();
        for (file_idx, file) in files.iter().enumerate() {
            let location = file.path.display().to_string();
            if let Err(e) = check_text(&location, &file.text, Language::Cedar) {
                problems.push(e);
                continue;
            }
            let parsed = match PolicySet::from_str(&file.text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    problems.extend(errors.iter().map(|e| PolicyError::Invalid {
                        location: locate(&file.path, &file.text, e),
                        message: first_line(&e.to_string()),
                    }));
                    continue;
                }
            };
            // A template applies only once linked, and nothing links one:
            // a `forbid` written as one would never apply.
            for template in parsed.templates() {
                let named = template
                    .annotation("id")
                    .map(|id| format!("`{id}` "))
                    .unwrap_or_default();
                problems.push(PolicyError::Invalid {
                    location: location.clone(),
                    message: format!("the policy {named}is a template (`?principal` or `?resource` in its scope), which the gateway never links, so it would never apply: name the principal or resource, or use `principal in Group::\"...\"`"),
                });
            }
            let mut in_file: Vec<&Policy> = parsed.policies().collect();
            // INVARIANT: the parser names a file's policies policy0, policy1, ...
            // in order of appearance; sorting by that number keeps `file#n` stable.
            in_file.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            for (n, policy) in in_file.into_iter().enumerate() {
                let name = match policy.annotation("id") {
                    Some(id) => id.to_string(),
                    None => format!("{}#{n}", file.name),
                };
                let id = PolicyId::new(name.clone());
                if names.contains_key(&id) {
                    problems.push(PolicyError::Invalid {
                        location: file.path.display().to_string(),
                        message: format!("policy id `{name}` is used twice"),
                    });
                    continue;
                }
                let core: &cedar_policy_core::ast::Policy = policy.as_ref();
                let depth = crate::condition::depth(&core.condition());
                if depth > crate::condition::MAX_DEPTH {
                    problems.push(PolicyError::Invalid {
                        location: format!("{} (policy `{name}`)", file.path.display()),
                        message: format!(
                            "its condition nests {depth} levels deep; at most {} are evaluated \
                             (`a || b || ...` and `else if` nest a level per term): group terms \
                             in brackets, split the policy, or name the values in a set and use \
                             `contains`",
                            crate::condition::MAX_DEPTH
                        ),
                    });
                    continue;
                }
                match approver(policy) {
                    Ok(Some(approver)) => {
                        approvable.insert(id.clone(), approver);
                    }
                    Ok(None) => {}
                    Err(message) => {
                        problems.push(PolicyError::Invalid {
                            location: format!("{} (policy `{name}`)", file.path.display()),
                            message,
                        });
                        continue;
                    }
                }
                if let Err(e) = policies.add(policy.new_id(id.clone())) {
                    problems.push(PolicyError::Invalid {
                        location: file.path.display().to_string(),
                        message: e.to_string(),
                    });
                    continue;
                }
                names.insert(id.clone(), name);
                origin.insert(id, file_idx);
            }
        }
        if problems.is_empty() {
            let validation =
                Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
            problems.extend(validation.validation_errors().map(|err| {
                let location = origin
                    .get(err.policy_id())
                    .and_then(|idx| files.get(*idx))
                    .map(|file| locate(&file.path, &file.text, err))
                    .unwrap_or_else(|| err.policy_id().to_string());
                PolicyError::Invalid {
                    location,
                    message: first_line(&err.to_string()),
                }
            }));
        }
        problems.sort_by_key(PolicyError::sort_key);
        if let Some(error) = PolicyError::from_problems(problems) {
            return Err(error);
        }
        let all = Arc::new(Scoped::of(&policies));
        let by_action = scoped_by_action(&schema, &all);
        let reads = Reads::of(&policies);
        Ok(CedarPolicies {
            read: reads.context_fields(),
            schema,
            version: content_version(&files),
            names,
            approvable,
            by_action,
            all,
            pairs: quick_cache::sync::Cache::new(ENTITIES_CACHED),
            slicing: true,
            contexts: quick_cache::sync::Cache::new(CONTEXTS_CACHED),
        })
    }

    /// The version that decides: a content hash of the policy files, or the
    /// commit they were read from (see [`CedarPolicies::with_version`]).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The same policies under another version name, such as the commit id
    /// they were read from. Every decision carries this name, so it is what
    /// audit entries record as the deciding version.
    pub fn with_version(self, version: String) -> CedarPolicies {
        CedarPolicies { version, ..self }
    }

    /// The policies of one action, before any cut.
    #[cfg(test)]
    pub(crate) fn scoped(&self, action: &str) -> Arc<Scoped> {
        self.by_action
            .get(action)
            .cloned()
            .unwrap_or_else(|| self.all.clone())
    }

    /// The same policies, evaluating each action's whole set rather than
    /// the part cut for a principal and a target (to compare the two).
    #[cfg(test)]
    pub(crate) fn unsliced(self) -> CedarPolicies {
        CedarPolicies {
            slicing: false,
            ..self
        }
    }

    /// `(policy name, target)` for each target a policy names, in its scope
    /// or its conditions (`resource == Target::"x"`, `resource in
    /// [Target::"x", ...]`, `context.target == Target::"x"`), sorted and
    /// without repeats.
    pub fn named_targets(&self) -> Vec<(String, String)> {
        let mut named: Vec<(String, String)> = self
            .all
            .members
            .iter()
            .flat_map(|member| {
                let policy = self
                    .names
                    .get(member.policy.id())
                    .cloned()
                    .unwrap_or_else(|| member.policy.id().to_string());
                member
                    .policy
                    .entity_literals()
                    .into_iter()
                    .filter(|uid| uid.type_name().to_string() == "Target")
                    .map(move |uid| (policy.clone(), uid.id().unescaped().to_string()))
            })
            .collect();
        named.sort();
        named.dedup();
        named
    }

    /// The names of every policy (their `@id`, or `file#n`), sorted.
    pub fn policy_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.values().cloned().collect();
        names.sort();
        names
    }

    /// Whether a decision may depend on a statement's `text`, rather than
    /// only on what the classification says of it.
    pub fn reads_statement_text(&self) -> bool {
        self.read
            .statement
            .iter()
            .flatten()
            .any(|(name, _)| *name == "text")
    }

    /// Number of policies loaded.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Decides one request. Never fails: a request that cannot be built or a
    /// policy that errors while evaluating gives a denial that says why.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        match self.try_decide(request) {
            Ok(decision) => decision,
            Err(message) => Decision {
                effect: Effect::Deny,
                policies: Vec::new(),
                reason: message.clone(),
                errors: vec![message],
                policy_version: self.version.clone(),
                approval: None,
            },
        }
    }

    fn try_decide(&self, request: &Request<'_>) -> Result<Decision, String> {
        let principal_uid = user_uid(request.principal)?;
        let target_uid = entity_uid("Target", &request.target.name)?;
        let action_uid = entity_uid("Action", request.action.name())?;
        let pair = match self.pairs.get(&PairRef(request.principal, request.target)) {
            Some(pair) => pair,
            None => {
                let key = (request.principal.clone(), request.target.clone());
                let pair = Arc::new(self.pair(
                    request.principal,
                    principal_uid.clone(),
                    request.target,
                    target_uid.clone(),
                )?);
                self.pairs.insert(key, pair.clone());
                pair
            }
        };
        let entities = &pair.entities;
        // What is decided on holds only the fields the policies read,
        // which the schema would call incomplete: the whole context is what
        // test builds check against it, and decide on again to compare.
        let whole = match self.validating() {
            Some(schema) => Some(
                cedar_policy::Request::new(
                    principal_uid.clone(),
                    action_uid.clone(),
                    target_uid.clone(),
                    build_context(&describe(request, &ContextFields::whole()))?,
                    Some(schema),
                )
                .map_err(|e| format!("the request does not match the policy schema: {e}"))?,
            ),
            None => None,
        };
        let context = self.context(request, &self.read)?;
        let cedar_request =
            cedar_policy::Request::new(principal_uid, action_uid, target_uid, context, None)
                .map_err(|e| format!("the request cannot be built: {e}"))?;
        let by_action = if self.slicing {
            &pair.by_action
        } else {
            &self.by_action
        };
        let scoped = by_action.get(request.action.name()).unwrap_or(&self.all);
        let verdict = scoped.evaluate(&cedar_request, entities);
        if let Some(whole) = &whole {
            self.all.check(&verdict, whole, entities)?;
        }
        let approval = self.approval(&verdict);
        let mut policies: Vec<String> = verdict
            .deciding()
            .iter()
            .map(|m| self.name_of(m.policy.id()))
            .collect();
        policies.sort();
        let errors: Vec<String> = verdict
            .errors
            .iter()
            .map(|(m, error)| format!("policy `{}`: {error}", self.name_of(m.policy.id())))
            .collect();
        let action = request.action.name();
        let allowed = verdict.allowed();
        let (effect, reason) = if allowed && !errors.is_empty() {
            // Fail closed: a policy that could not be evaluated might have
            // been a `forbid`, so an error turns an allow into a deny.
            (
                Effect::Deny,
                format!("a policy could not be evaluated: {}", errors.join("; ")),
            )
        } else if allowed {
            (Effect::Allow, String::new())
        } else if verdict.forbids.is_empty() {
            (
                Effect::Deny,
                format!(
                    "no policy permits `{action}` on target `{}` for `{}`",
                    request.target.name, request.principal.id
                ),
            )
        } else {
            let reasons: Vec<&str> = verdict
                .forbids
                .iter()
                .filter_map(|m| m.policy.annotation("reason"))
                .collect();
            let reason = if reasons.is_empty() {
                format!("`{action}` is forbidden")
            } else {
                reasons.join("; ")
            };
            let effect = if approval.is_some() {
                Effect::Hold
            } else {
                Effect::Deny
            };
            (effect, reason)
        };
        Ok(Decision {
            approval: approval.filter(|_| effect == Effect::Hold),
            effect,
            policies,
            reason,
            errors,
            policy_version: self.version.clone(),
        })
    }

    /// Who may approve a denial: only when every policy that denied is an
    /// approvable `forbid`, and the request is allowed without them (a
    /// reviewer lifts a forbid, never grants what no policy permits): some
    /// permit is satisfied, and no policy failed to evaluate.
    fn approval(&self, verdict: &Verdict<'_>) -> Option<Approval> {
        if verdict.forbids.is_empty() || verdict.permits.is_empty() || !verdict.errors.is_empty() {
            return None;
        }
        let mut groups = Vec::new();
        let mut min_approvals = 1;
        for member in &verdict.forbids {
            let approver = self.approvable.get(member.policy.id())?;
            groups.push(approver.group.clone());
            min_approvals = min_approvals.max(approver.min_approvals);
        }
        groups.sort();
        groups.dedup();
        Some(Approval {
            min_approvals: min_approvals.max(u32::try_from(groups.len()).unwrap_or(u32::MAX)),
            groups,
        })
    }

    fn name_of(&self, id: &PolicyId) -> String {
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn pair(
        &self,
        principal: &Principal,
        principal_uid: EntityUid,
        target: &Target,
        target_uid: EntityUid,
    ) -> Result<Pair, String> {
        let by_action = self
            .by_action
            .iter()
            .map(|(action, scoped)| (action.clone(), scoped.cut(principal, target)))
            .collect();
        let groups = principal
            .groups
            .iter()
            .map(|g| entity_uid("Group", g))
            .collect::<Result<Vec<_>, _>>()?;
        let mut attrs = vec![
            (
                "subject".to_string(),
                RestrictedExpression::new_string(principal.subject.clone()),
            ),
            (
                "issuer".to_string(),
                RestrictedExpression::new_string(principal.issuer.clone()),
            ),
        ];
        if let Some(email) = &principal.email {
            attrs.push((
                "email".to_string(),
                RestrictedExpression::new_string(email.clone()),
            ));
        }
        let user = Entity::new(
            principal_uid,
            attrs.into_iter().collect(),
            groups.iter().cloned().collect(),
        )
        .map_err(|e| e.to_string())?;
        let target_entity = Entity::new_with_tags(
            target_uid,
            [(
                "kind".to_string(),
                RestrictedExpression::new_string(target.kind.as_str().to_string()),
            )],
            [],
            target
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .map_err(|e| e.to_string())?;
        let group_entities = groups.into_iter().map(Entity::with_uid);
        let entities = Entities::from_entities(
            [user, target_entity].into_iter().chain(group_entities),
            self.validating(),
        )
        .map_err(|e| format!("the request's entities do not match the policy schema: {e}"))?;
        Ok(Pair {
            entities,
            by_action,
        })
    }

    /// The schema that every request and its entities are checked against
    /// in test builds, where every decision is also made again by Cedar's
    /// `Authorizer` on all policies and compared ([`Scoped::check`]).
    /// Release builds skip both: requests are built only here, to the
    /// schema, which every test checks, and the checks cost more than the
    /// decision. Policies are validated against the schema when loaded
    /// either way.
    fn validating(&self) -> Option<&Schema> {
        cfg!(debug_assertions).then_some(&self.schema)
    }

    /// The context of a request, with what `read` names. Built contexts are
    /// kept by what they hold: a new statement of a kind already seen (a
    /// `SELECT` with a WHERE clause, when that is all the policies read of
    /// it) reuses its context.
    fn context(&self, request: &Request<'_>, read: &ContextFields) -> Result<Context, String> {
        let attrs = describe(request, read);
        let mut key = Vec::with_capacity(128);
        for (name, value) in &attrs {
            put_str(&mut key, name);
            value.put(&mut key);
        }
        if key.len() > CONTEXT_KEY_MAX {
            return build_context(&attrs);
        }
        if let Some(context) = self.contexts.get(&key) {
            return Ok(context);
        }
        let context = build_context(&attrs)?;
        self.contexts.insert(key, context.clone());
        Ok(context)
    }
}

/// The largest description of a context that is kept: a statement's text,
/// when a policy reads it, can be long, and is rarely seen twice.
const CONTEXT_KEY_MAX: usize = 4096;

/// A request's context attributes, with what `read` names.
fn describe<'a>(request: &Request<'a>, read: &ContextFields) -> Vec<(&'static str, Value<'a>)> {
    let mut attrs = Vec::with_capacity(2);
    if read.client_ip {
        let ip = request
            .client_addr
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        attrs.push(("client_ip", Value::Ip(ip)));
    }
    if let Some(grant) = request.grant.filter(|_| read.grant) {
        attrs.push((
            "grant",
            Value::Record(vec![
                ("id", Value::Long(grant.id)),
                ("reason", Value::Str(&grant.reason)),
                ("until", Value::Long(grant.until)),
            ]),
        ));
    }
    if let Some(reason) = request.reason.filter(|_| read.reason) {
        attrs.push(("reason", Value::Str(reason)));
    }
    match request.action {
        Action::Query(statement) => {
            if let Some(fields) = &read.statement {
                attrs.push(("statement", record(statement, fields)));
            }
        }
        Action::Unmask { rule } if read.rule => attrs.push(("rule", Value::Str(rule))),
        Action::Exec(command) => {
            if let Some(fields) = &read.command {
                attrs.push(("command", record(command, fields)));
            }
        }
        Action::Forward(forward) if read.forward => attrs.push((
            "forward",
            Value::Record(vec![
                ("direction", Value::Str(&forward.direction)),
                ("host", Value::Str(&forward.host)),
                ("port", Value::Long(i64::from(forward.port))),
            ]),
        )),
        Action::Sftp(op) if read.sftp => {
            let mut fields = vec![
                ("operation", Value::Str(&op.operation)),
                ("path", Value::Str(&op.path)),
            ];
            if let Some(to) = &op.to {
                fields.push(("to", Value::Str(to)));
            }
            attrs.push(("sftp", Value::Record(fields)));
        }
        _ => {}
    }
    attrs
}

fn build_context(attrs: &[(&'static str, Value<'_>)]) -> Result<Context, String> {
    let pairs = attrs
        .iter()
        .map(|(name, value)| Ok(((*name).to_string(), value.expression()?)))
        .collect::<Result<Vec<_>, String>>()?;
    Context::from_pairs(pairs).map_err(|e| e.to_string())
}

/// A context value as the gateway describes it: what the Cedar value, the
/// key a built context is kept under, and the Rego input's statement and
/// command are made from.
#[derive(Debug)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    Strs(&'a [String]),
    Kinds(&'a [StatementKind]),
    Bool(bool),
    Long(i64),
    Ip(IpAddr),
    Record(Vec<(&'static str, Value<'a>)>),
}

impl Value<'_> {
    fn expression(&self) -> Result<RestrictedExpression, String> {
        let string = |s: &str| RestrictedExpression::new_string(s.to_string());
        Ok(match self {
            Value::Str(s) => string(s),
            Value::Strs(items) => RestrictedExpression::new_set(items.iter().map(|s| string(s))),
            Value::Kinds(kinds) => {
                RestrictedExpression::new_set(kinds.iter().map(|k| string(k.as_str())))
            }
            Value::Bool(b) => RestrictedExpression::new_bool(*b),
            Value::Long(n) => RestrictedExpression::new_long(*n),
            Value::Ip(ip) => RestrictedExpression::new_ip(ip.to_string()),
            Value::Record(fields) => RestrictedExpression::new_record(
                fields
                    .iter()
                    .map(|(name, value)| Ok(((*name).to_string(), value.expression()?)))
                    .collect::<Result<Vec<_>, String>>()?,
            )
            .map_err(|e| e.to_string())?,
        })
    }

    /// The same value in the Rego input document.
    pub(crate) fn rego(&self) -> regorus::Value {
        use regorus::Value as V;
        match self {
            Value::Str(s) => V::from(*s),
            Value::Strs(items) => V::from(
                items
                    .iter()
                    .map(|s| V::from(s.as_str()))
                    .collect::<Vec<_>>(),
            ),
            Value::Kinds(kinds) => V::from(
                kinds
                    .iter()
                    .map(|k| V::from(k.as_str()))
                    .collect::<Vec<_>>(),
            ),
            Value::Bool(b) => V::from(*b),
            Value::Long(n) => V::from(*n),
            Value::Ip(ip) => V::from(ip.to_string()),
            Value::Record(fields) => V::from(
                fields
                    .iter()
                    .map(|(name, value)| (V::from(*name), value.rego()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
        }
    }

    /// Appends the value to a key, tagged and with every length written
    /// first, so that two different values never give the same bytes.
    fn put(&self, key: &mut Vec<u8>) {
        match self {
            Value::Str(s) => {
                key.push(0);
                put_str(key, s);
            }
            Value::Strs(items) => {
                key.push(1);
                put_len(key, items.len());
                items.iter().for_each(|s| put_str(key, s));
            }
            Value::Kinds(kinds) => {
                key.push(2);
                put_len(key, kinds.len());
                kinds.iter().for_each(|k| put_str(key, k.as_str()));
            }
            Value::Bool(b) => key.extend([3, u8::from(*b)]),
            Value::Long(n) => {
                key.push(4);
                key.extend(n.to_le_bytes());
            }
            Value::Ip(IpAddr::V4(ip)) => {
                key.push(5);
                key.extend(ip.octets());
            }
            Value::Ip(IpAddr::V6(ip)) => {
                key.push(6);
                key.extend(ip.octets());
            }
            Value::Record(fields) => {
                key.push(7);
                put_len(key, fields.len());
                for (name, value) in fields {
                    put_str(key, name);
                    value.put(key);
                }
            }
        }
    }
}

fn put_len(key: &mut Vec<u8>, len: usize) {
    key.extend(u64::try_from(len).unwrap_or(u64::MAX).to_le_bytes());
}

fn put_str(key: &mut Vec<u8>, s: &str) {
    put_len(key, s.len());
    key.extend(s.as_bytes());
}

/// For each action of the schema, the policies whose action scope can match
/// it (`action`, `action == A`, `action in [A, B]`).
fn scoped_by_action(schema: &Schema, all: &Scoped) -> HashMap<String, Arc<Scoped>> {
    // With action groups in the schema, `in [G]` would match G's members too.
    let grouped = schema.action_groups().next().is_some();
    let mut by_action = HashMap::new();
    for action in schema.actions() {
        let applies = |member: &Member| match member.policy.action_constraint() {
            cedar_policy::ActionConstraint::Any => true,
            cedar_policy::ActionConstraint::Eq(uid) => uid == *action,
            cedar_policy::ActionConstraint::In(uids) => grouped || uids.contains(action),
        };
        by_action.insert(
            action.id().unescaped().to_string(),
            Arc::new(all.only(applies)),
        );
    }
    by_action
}

/// The `@approval("group")` (and `@approvals("N")`) of a policy: only on a
/// `forbid`, naming one group.
fn approver(policy: &Policy) -> Result<Option<Approver>, String> {
    let Some(group) = policy.annotation("approval") else {
        if policy.annotation("approvals").is_some() {
            return Err("`@approvals` needs `@approval(\"group\")` on the same policy".into());
        }
        return Ok(None);
    };
    if policy.effect() != cedar_policy::Effect::Forbid {
        return Err(
            "`@approval` marks a `forbid` that a reviewer may lift; it means nothing on a `permit`"
                .into(),
        );
    }
    let group = group.trim();
    if group.is_empty() {
        return Err("`@approval` must name the group whose members approve".into());
    }
    let min_approvals = match policy.annotation("approvals") {
        None => 1,
        Some(n) => match n.trim().parse::<u32>() {
            Ok(n) if (1..=10).contains(&n) => n,
            _ => {
                return Err(format!(
                    "`@approvals(\"{n}\")` must be a number of approvals from 1 to 10"
                ))
            }
        },
    };
    Ok(Some(Approver {
        group: group.to_string(),
        min_approvals,
    }))
}

/// One field of a context record: its name, and its value.
pub(crate) type Field<T> = (&'static str, fn(&T) -> Value<'_>);

/// The fields of `context.statement`, as the schema's `Statement`.
pub(crate) const STATEMENT_FIELDS: &[Field<StatementInfo>] = &[
    ("kind", |s| Value::Str(s.kind.as_str())),
    ("kinds", |s| Value::Kinds(&s.kinds)),
    ("command", |s| Value::Str(&s.command)),
    ("tables", |s| Value::Strs(&s.tables)),
    ("functions", |s| Value::Strs(&s.functions)),
    ("has_where", |s| Value::Bool(s.has_where)),
    ("writes", |s| Value::Bool(s.writes)),
    ("settings", |s| Value::Strs(&s.settings)),
    ("text", |s| Value::Str(&s.text)),
];

/// The fields of `context.command`, as the schema's `Command`.
pub(crate) const COMMAND_FIELDS: &[Field<Command>] = &[
    ("program", |c| Value::Str(&c.program)),
    ("name", |c| Value::Str(&c.name)),
    ("args", |c| Value::Strs(&c.args)),
    ("text", |c| Value::Str(&c.text)),
    ("line", |c| Value::Str(&c.line)),
    ("wrappers", |c| Value::Strs(&c.wrappers)),
    ("dynamic", |c| Value::Bool(c.dynamic)),
    ("redirects", |c| Value::Strs(&c.redirects)),
];

pub(crate) fn record<'a, T>(value: &'a T, fields: &[Field<T>]) -> Value<'a> {
    Value::Record(
        fields
            .iter()
            .map(|(name, field)| (*name, field(value)))
            .collect(),
    )
}

/// What the policies read of the request's context, from their parsed conditions.
/// Cedar names attributes only literally (`.tables`, `["tables"]`, `has
/// tables`), so a field that no policy names cannot change a decision: a
/// context built without it decides the same, for less work (building a
/// statement's sets is a fifth of a decision).
///
/// Kept are the longest `context.a.b...` paths the policies name, cut to
/// two attributes. A path that stops short (`context`, `context.statement`
/// used as a value: compared, or chosen by an `if`) reads every field under
/// it.
#[derive(Debug, Default)]
struct Reads {
    /// The paths whose value a policy uses (`context.statement.kind`, or
    /// `context.statement` compared whole), cut to two attributes.
    values: HashSet<Vec<String>>,
    /// Those, and the paths a policy only tests (`context has grant`).
    named: HashSet<Vec<String>>,
}

impl Reads {
    /// Read from each policy's parsed condition, without recursing (its
    /// depth is bounded when loaded, but not the JSON form's: `true ||
    /// true || ...` parses to a literal).
    fn of(policies: &PolicySet) -> Reads {
        use cedar_policy_core::ast::ExprKind;
        let mut reads = Reads::default();
        for policy in policies.policies() {
            let core: &cedar_policy_core::ast::Policy = policy.as_ref();
            let condition = core.condition();
            let mut pending = vec![&condition];
            while let Some(expr) = pending.pop() {
                if let Some(path) = context_path(expr) {
                    reads.value(path);
                    continue;
                }
                // `context has a`, `context.a has b`, `context has a.b`: the
                // path is named, no value is used.
                let tested = match expr.expr_kind() {
                    ExprKind::HasAttr { expr, attr } => context_path(expr).map(|mut path| {
                        path.push(attr.to_string());
                        path
                    }),
                    ExprKind::ExtHasAttr { expr, attrs } => context_path(expr).map(|mut path| {
                        path.extend(attrs.iter().map(|attr| attr.to_string()));
                        path
                    }),
                    _ => None,
                };
                match tested {
                    Some(mut path) => {
                        path.truncate(2);
                        reads.named.insert(path);
                    }
                    None => pending.extend(crate::condition::children(expr)),
                }
            }
        }
        reads
    }

    fn value(&mut self, mut path: Vec<String>) {
        path.truncate(2);
        self.values.insert(path.clone());
        self.named.insert(path);
    }

    /// Whether `context.<attr>` is named, or the context used whole.
    fn attribute(&self, attr: &str) -> bool {
        self.values.contains(&Vec::new())
            || self
                .named
                .iter()
                .any(|path| path.first().is_some_and(|first| first == attr))
    }

    /// The record `context.<attr>`, when named, with the fields named, in
    /// schema order.
    fn fields<T>(&self, attr: &str, all: &[Field<T>]) -> Option<Vec<Field<T>>> {
        if !self.attribute(attr) {
            return None;
        }
        let whole =
            self.values.contains(&Vec::new()) || self.values.contains(&vec![attr.to_string()]);
        let named = |name: &str| {
            self.named
                .contains(&vec![attr.to_string(), name.to_string()])
        };
        Some(
            all.iter()
                .filter(|(name, _)| whole || named(name))
                .copied()
                .collect(),
        )
    }

    fn context_fields(&self) -> ContextFields {
        ContextFields {
            client_ip: self.attribute("client_ip"),
            grant: self.attribute("grant"),
            reason: self.attribute("reason"),
            rule: self.attribute("rule"),
            forward: self.attribute("forward"),
            sftp: self.attribute("sftp"),
            statement: self.fields("statement", STATEMENT_FIELDS),
            command: self.fields("command", COMMAND_FIELDS),
        }
    }
}

/// What a request's context is built with: each attribute of the schema's
/// contexts, and the fields of a statement and of a command.
#[derive(Clone, Debug)]
pub(crate) struct ContextFields {
    client_ip: bool,
    grant: bool,
    reason: bool,
    rule: bool,
    forward: bool,
    sftp: bool,
    pub(crate) statement: Option<Vec<Field<StatementInfo>>>,
    pub(crate) command: Option<Vec<Field<Command>>>,
}

impl ContextFields {
    /// Everything: the context as the schema gives it.
    fn whole() -> ContextFields {
        let mut reads = Reads::default();
        reads.value(Vec::new());
        reads.context_fields()
    }
}

/// `["a", "b"]` for `context.a.b` (and `context["a"]["b"]`), `[]` for
/// `context`; `None` for anything else.
fn context_path(mut expr: &cedar_policy_core::ast::Expr) -> Option<Vec<String>> {
    use cedar_policy_core::ast::{ExprKind, Var};
    let mut path = Vec::new();
    loop {
        match expr.expr_kind() {
            ExprKind::Var(Var::Context) => break,
            ExprKind::GetAttr { expr: of, attr } => {
                path.push(attr.to_string());
                expr = of;
            }
            _ => return None,
        }
    }
    path.reverse();
    Some(path)
}

fn user_uid(principal: &Principal) -> Result<EntityUid, String> {
    entity_uid("User", &principal.id)
}

fn entity_uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    use cedar_policy::EntityTypeName;
    // Parsed once: parsing a name runs Cedar's grammar.
    static TYPES: std::sync::LazyLock<HashMap<&'static str, EntityTypeName>> =
        std::sync::LazyLock::new(|| {
            ["User", "Group", "Target", "Action"]
                .into_iter()
                .filter_map(|name| Some((name, EntityTypeName::from_str(name).ok()?)))
                .collect()
        });
    let type_name = match TYPES.get(type_name) {
        Some(parsed) => parsed.clone(),
        None => EntityTypeName::from_str(type_name).map_err(|e| e.to_string())?,
    };
    Ok(EntityUid::from_type_name_and_id(
        type_name,
        cedar_policy::EntityId::new(id),
    ))
}

/// `file:line:column` of the first labelled span of a diagnostic.
fn locate(path: &Path, text: &str, diagnostic: &dyn miette::Diagnostic) -> String {
    let offset = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    match offset {
        Some(offset) => {
            let before = text.get(..offset).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}:{line}:{column}", path.display())
        }
        None => path.display().to_string(),
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy_core::ast::Expr;

    #[test]
    fn where_the_prepared_condition_fails_the_written_one_decides() {
        let policies = CedarPolicies::from_sources(&[(
            "p.cedar",
            r#"@id("p") permit (principal, action, resource);"#,
        )])
        .unwrap();
        let mut scoped = Scoped {
            members: policies.all.members.clone(),
        };
        let member = &mut scoped.members[0];
        member.written = Some(member.condition.clone());
        // An overflow: an error whatever the request.
        member.condition = Expr::from_str("9223372036854775807 + 1 > 0").unwrap();
        let uid = |text: &str| EntityUid::from_str(text).unwrap();
        let request = cedar_policy::Request::new(
            uid(r#"User::"a""#),
            uid(r#"Action::"connect""#),
            uid(r#"Target::"t""#),
            Context::empty(),
            None,
        )
        .unwrap();
        let entities = Entities::empty();
        let verdict = scoped.evaluate(&request, &entities);
        assert_eq!(verdict.permits.len(), 1);
        assert!(verdict.errors.is_empty());
        // Without a written condition to fall back on, the error stands.
        scoped.members[0].written = None;
        let verdict = scoped.evaluate(&request, &entities);
        assert!(verdict.permits.is_empty());
        assert_eq!(verdict.errors.len(), 1);
    }
}
