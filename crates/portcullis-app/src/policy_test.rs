//! `portcullis policy test`: test cases kept beside the policies, run
//! without a gateway.
//!
//! Every `*.cases.toml` file of the policy directory holds cases: a
//! principal, a target, an action (a statement for `query`), and the
//! expected effect, optionally with a policy that must be among the deciding
//! ones. Statements are classified with the same parser and the same rules
//! as the gateway, then decided by the directory's policies. The format is
//! described in `docs/policy-tests.md`.
//!
//! Outcomes: every case ran and passed; some case failed (its expectation
//! does not match the decision); or the run could not start (a case file or
//! the policy directory is invalid), which is a [`PolicyTestError`].

use portcullis_core::{Action, Decision, Effect, Principal, Request, Target, TargetKind};
pub use portcullis_policy::Engine;
use portcullis_policy::{Policies, PolicyError};
use portcullis_sql::Classifier;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The suffix that makes a TOML file in the policy directory a case file.
pub use portcullis_policy::CASE_FILE_SUFFIX;

/// How the results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One line per case, like `cargo test`, then the failures and a summary.
    Text,
    /// A JUnit XML document, one `testsuite` per case file.
    Junit,
}

/// Why the cases could not be run at all (as opposed to a case that fails).
#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    #[error("no `*{CASE_FILE_SUFFIX}` case files in `{}`", dir.display())]
    NoCaseFiles { dir: PathBuf },
    #[error("no cases in the case files of `{}` ({}): a case is a `[[case]]` table", dir.display(), files.join(", "))]
    NoCases { dir: PathBuf, files: Vec<String> },
    #[error(transparent)]
    Policies(#[from] PolicyError),
    /// Every problem found in the case files, one per line.
    #[error("{}", lines(.0))]
    CaseFiles(Vec<CaseFileError>),
}

fn lines(errors: &[CaseFileError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem in a case file: `file:line:column: case N `name`: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseFileError {
    /// `file`, `file:line` or `file:line:column`.
    pub location: String,
    /// `case N `name`` when the problem is in a case.
    pub case: Option<String>,
    pub message: String,
}

impl fmt::Display for CaseFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.case {
            Some(case) => write!(f, "{}: {case}: {}", self.location, self.message),
            None => write!(f, "{}: {}", self.location, self.message),
        }
    }
}

/// One test case, ready to be decided.
#[derive(Clone, Debug)]
pub struct Case {
    /// The case file's name, as shown in the output.
    pub file: String,
    /// The case file's path, for `file:line` locations.
    pub path: PathBuf,
    /// The line of the case's `[[case]]` header.
    pub line: usize,
    pub name: String,
    pub principal: Principal,
    pub target: Target,
    pub action: Action,
    /// For `exec`: the line's other commands. The line is decided command by
    /// command, as the gateway does: the first denial, or else the first
    /// hold, is its decision.
    pub more: Vec<Action>,
    pub client_ip: Option<IpAddr>,
    pub expect: Effect,
    /// A policy id that must be among the deciding policies.
    pub policy: Option<String>,
    /// Set when the gateway refuses the statement before any policy decides
    /// (it changes a setting the gateway pins): the refusal's reason.
    pub refused_by_gateway: Option<String>,
}

/// The outcome of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: Case,
    pub decision: Decision,
    /// Why the case failed, one sentence per unmet expectation; empty when
    /// it passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The results of every case, grouped by case file (in file name order).
#[derive(Clone, Debug)]
pub struct TestRun {
    pub policy_version: String,
    pub n_policies: usize,
    pub files: Vec<(String, Vec<CaseResult>)>,
}

impl TestRun {
    fn results(&self) -> impl Iterator<Item = &CaseResult> {
        self.files.iter().flat_map(|(_, results)| results)
    }

    pub fn n_passed(&self) -> usize {
        self.results().filter(|r| r.passed()).count()
    }

    pub fn n_failed(&self) -> usize {
        self.results().filter(|r| !r.passed()).count()
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.render_text(),
            Format::Junit => self.render_junit(),
        }
    }

    /// `cargo test` style: a line per case, the failures in detail, and a
    /// summary line `N passed, M failed` alone on its line.
    pub fn render_text(&self) -> String {
        let n_cases = self.results().count();
        let mut out = format!(
            "running {n_cases} {} from {} {} against policy version {} ({} {})\n",
            plural(n_cases, "case", "cases"),
            self.files.len(),
            plural(self.files.len(), "file", "files"),
            self.policy_version,
            self.n_policies,
            plural(self.n_policies, "policy", "policies"),
        );
        for result in self.results() {
            let verdict = if result.passed() { "ok" } else { "FAILED" };
            let _ = writeln!(
                out,
                "test {}::{} ... {verdict}",
                result.case.file, result.case.name
            );
        }
        let failed: Vec<&CaseResult> = self.results().filter(|r| !r.passed()).collect();
        if !failed.is_empty() {
            out.push_str("\nfailures:\n");
            for result in &failed {
                let _ = write!(
                    out,
                    "\n---- {}::{} ----\n{}",
                    result.case.file,
                    result.case.name,
                    failure_details(result)
                );
            }
            out.push_str("\nfailures:\n");
            for result in &failed {
                let _ = writeln!(out, "    {}::{}", result.case.file, result.case.name);
            }
        }
        let _ = write!(
            out,
            "\n{} passed, {} failed\n",
            self.n_passed(),
            self.n_failed()
        );
        out
    }

    /// A JUnit XML document: `testsuites`, one `testsuite` per case file,
    /// one `testcase` per case with a `failure` when it failed.
    pub fn render_junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"portcullis policy test\" tests=\"{}\" failures=\"{}\" errors=\"0\">",
            self.results().count(),
            self.n_failed()
        );
        for (file, results) in &self.files {
            let n_failed = results.iter().filter(|r| !r.passed()).count();
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{n_failed}\" errors=\"0\" skipped=\"0\">",
                xml_attr(file),
                results.len()
            );
            let _ = writeln!(
                out,
                "    <properties>\n      <property name=\"policy_version\" value=\"{}\"/>\n    </properties>",
                xml_attr(&self.policy_version)
            );
            for result in results {
                let _ = write!(
                    out,
                    "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
                    xml_attr(&result.case.name),
                    xml_attr(file),
                    xml_attr(&result.case.path.display().to_string()),
                    result.case.line
                );
                if result.passed() {
                    out.push_str("/>\n");
                    continue;
                }
                let _ = write!(
                    out,
                    ">\n      <failure message=\"{}\" type=\"policy\">{}</failure>\n    </testcase>\n",
                    xml_attr(&result.failures.join("; ")),
                    xml_text(&failure_details(result))
                );
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Expected against actual, the deciding policies and the reason.
fn failure_details(result: &CaseResult) -> String {
    let case = &result.case;
    let decision = &result.decision;
    let mut out = String::new();
    let _ = writeln!(out, "  at:        {}:{}", case.path.display(), case.line);
    if let Action::Query(statement) = &case.action {
        let _ = writeln!(out, "  statement: {}", statement.text);
    }
    if let Action::Exec(command) = &case.action {
        let _ = writeln!(out, "  command: {}", command.line);
    }
    if let Action::Unmask { rule } = &case.action {
        let _ = writeln!(out, "  mask rule: {rule}");
    }
    for failure in &result.failures {
        let _ = writeln!(out, "  failure:   {failure}");
    }
    let expected = match &case.policy {
        Some(policy) => format!("{} (by `{policy}`)", case.expect.as_str()),
        None => case.expect.as_str().to_string(),
    };
    let _ = writeln!(out, "  expected:  {expected}");
    let _ = writeln!(out, "  actual:    {}", decision.effect.as_str());
    let deciding = if decision.policies.is_empty() {
        "none".to_string()
    } else {
        decision
            .policies
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "  policies:  {deciding}");
    if !decision.reason.is_empty() {
        let _ = writeln!(out, "  reason:    {}", decision.reason);
    }
    for error in &decision.errors {
        let _ = writeln!(out, "  error:     {error}");
    }
    out
}

/// Escapes text for an XML attribute value: line breaks and tabs become
/// references, since a parser turns them into spaces otherwise.
fn xml_attr(text: &str) -> String {
    xml_escape(text, true)
}

/// Escapes text for XML element content.
fn xml_text(text: &str) -> String {
    xml_escape(text, false)
}

/// Characters XML 1.0 cannot hold at all become U+FFFD.
fn xml_escape(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' | '\t' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Loads the policies of `dir` (with `engine`, or the one its files are
/// written for) and the case files beside them, and decides every case.
pub fn run(dir: &Path, engine: Option<Engine>) -> Result<TestRun, PolicyTestError> {
    let policies = Policies::load_dir_detected(dir, engine)?;
    if policies.case_files().is_empty() {
        return Err(PolicyTestError::NoCaseFiles {
            dir: dir.to_path_buf(),
        });
    }
    let cases = parse_cases(&policies).map_err(PolicyTestError::CaseFiles)?;
    if holds_no_case(&cases) {
        return Err(PolicyTestError::NoCases {
            dir: dir.to_path_buf(),
            files: case_file_names(&policies),
        });
    }
    Ok(run_cases(&policies, cases))
}

/// Whether case files, parsed, hold no case at all.
fn holds_no_case(cases: &[(String, Vec<Case>)]) -> bool {
    cases.iter().all(|(_, cases)| cases.is_empty())
}

/// The case files read with `policies`, by their path inside the directory.
fn case_file_names(policies: &Policies) -> Vec<String> {
    policies
        .case_files()
        .iter()
        .map(|file| file.name.clone())
        .collect()
}

/// The cases of every case file read with `policies`, by file; or every
/// problem found in them.
fn parse_cases(policies: &Policies) -> Result<Vec<(String, Vec<Case>)>, Vec<CaseFileError>> {
    let classifier = Classifier::new(0);
    let mut cases_by_file = Vec::new();
    let mut errors = Vec::new();
    for file in policies.case_files() {
        match parse_case_file(&file.path, &file.text, &classifier) {
            Ok(mut cases) => {
                // Named by its path inside the directory, as policies are.
                for case in &mut cases {
                    case.file.clone_from(&file.name);
                }
                cases_by_file.push((file.name.clone(), cases))
            }
            Err(mut file_errors) => errors.append(&mut file_errors),
        }
    }
    if errors.is_empty() {
        Ok(cases_by_file)
    } else {
        Err(errors)
    }
}

/// For `[policy] require_cases`: every case kept beside `policies` passes,
/// or the version is refused like an invalid one, naming each case that
/// fails (or cannot be read) and why. A version without cases is refused,
/// as is one whose case files hold none (an emptied file would otherwise
/// pass for a tested version).
///
/// Only the cases for `targets`, the gateway's own, are run (a repository
/// may serve several gateways); a case that describes one of them with
/// another kind or other labels is refused, since it would not test what
/// is enforced.
pub fn check_cases(policies: &Policies, targets: &[Target]) -> Result<(), PolicyError> {
    let invalid = |location: String, message: String| PolicyError::Invalid { location, message };
    if policies.case_files().is_empty() {
        return Err(invalid(
            "policies".into(),
            format!("no `*{CASE_FILE_SUFFIX}` test cases beside them, and `[policy] require_cases` is on"),
        ));
    }
    let cases = parse_cases(policies).map_err(|errors| {
        let problems = errors
            .into_iter()
            .map(|e| {
                let message = match e.case {
                    Some(case) => format!("{case}: {}", e.message),
                    None => e.message,
                };
                invalid(e.location, message)
            })
            .collect();
        PolicyError::from_problems(problems)
            .unwrap_or_else(|| invalid("policies".into(), "a case file cannot be read".into()))
    })?;
    if holds_no_case(&cases) {
        return Err(invalid(
            "policies".into(),
            format!(
                "no cases in the case files ({}), and `[policy] require_cases` is on: a case is a `[[case]]` table",
                case_file_names(policies).join(", ")
            ),
        ));
    }
    let mut unlike = Vec::new();
    let cases: Vec<(String, Vec<Case>)> = cases
        .into_iter()
        .map(|(file, cases)| {
            let mine = cases
                .into_iter()
                .filter(|case| {
                    let Some(target) = targets.iter().find(|t| t.name == case.target.name) else {
                        return false;
                    };
                    if target.kind != case.target.kind || target.labels != case.target.labels {
                        unlike.push(invalid(
                            format!("{}:{}", case.path.display(), case.line),
                            format!(
                                "case `{}` describes target `{}` as {} with labels {:?}, but the gateway's is {} with labels {:?}: it does not test what is enforced",
                                case.name,
                                target.name,
                                case.target.kind.as_str(),
                                case.target.labels,
                                target.kind.as_str(),
                                target.labels
                            ),
                        ));
                    }
                    true
                })
                .collect();
            (file, mine)
        })
        .collect();
    if let Some(error) = PolicyError::from_problems(unlike) {
        return Err(error);
    }
    if holds_no_case(&cases) {
        return Err(invalid(
            "policies".into(),
            "no case is for a target of this gateway, and `[policy] require_cases` is on".into(),
        ));
    }
    let run = run_cases(policies, cases);
    let failures = run
        .results()
        .filter(|result| !result.passed())
        .map(|result| {
            invalid(
                format!("{}:{}", result.case.path.display(), result.case.line),
                format!(
                    "case `{}` fails: {}",
                    result.case.name,
                    result.failures.join("; ")
                ),
            )
        })
        .collect();
    match PolicyError::from_problems(failures) {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

/// Decides every case with `policies`.
pub fn run_cases(policies: &Policies, cases_by_file: Vec<(String, Vec<Case>)>) -> TestRun {
    let files = cases_by_file
        .into_iter()
        .map(|(file, cases)| {
            let results = cases
                .into_iter()
                .map(|case| decide(policies, case))
                .collect();
            (file, results)
        })
        .collect();
    TestRun {
        policy_version: policies.version().to_string(),
        n_policies: policies.len(),
        files,
    }
}

/// One decision for the commands of a line: the first denial, or else the
/// first hold, or else an allow naming every policy that allowed.
fn combine(mut decisions: Vec<Decision>) -> Decision {
    if let Some(i) = decisions.iter().position(|d| d.effect == Effect::Deny) {
        return decisions.swap_remove(i);
    }
    if let Some(i) = decisions.iter().position(|d| d.effect == Effect::Hold) {
        return decisions.swap_remove(i);
    }
    let mut all = decisions.into_iter();
    let Some(mut first) = all.next() else {
        return Decision {
            effect: Effect::Deny,
            policies: Vec::new(),
            reason: "no command to decide".into(),
            errors: Vec::new(),
            policy_version: String::new(),
            approval: None,
        };
    };
    for other in all {
        for policy in other.policies {
            if !first.policies.contains(&policy) {
                first.policies.push(policy);
            }
        }
    }
    first
}

fn decide(policies: &Policies, case: Case) -> CaseResult {
    let decision = match &case.refused_by_gateway {
        Some(reason) => Decision {
            effect: Effect::Deny,
            policies: Vec::new(),
            reason: reason.clone(),
            errors: Vec::new(),
            policy_version: policies.version().to_string(),
            approval: None,
        },
        None => {
            let decisions: Vec<Decision> = std::iter::once(&case.action)
                .chain(&case.more)
                .map(|action| {
                    policies.decide(&Request {
                        principal: &case.principal,
                        target: &case.target,
                        action,
                        client_addr: case.client_ip,
                        grant: None,
                        reason: None,
                    })
                })
                .collect();
            combine(decisions)
        }
    };
    let mut failures = Vec::new();
    if let Action::Unmask { rule } = &case.action {
        if !policies.masks().rules().iter().any(|r| &r.id == rule) {
            failures.push(format!(
                "no mask rule `{rule}` in the policy directory's `*masks.toml` files"
            ));
        }
    }
    if decision.effect != case.expect {
        failures.push(format!(
            "expected `{}`, got `{}`",
            case.expect.as_str(),
            decision.effect.as_str()
        ));
    }
    if let Some(policy) = &case.policy {
        if !decision.policies.iter().any(|p| p == policy) {
            failures.push(format!(
                "expected policy `{policy}` among the deciding policies"
            ));
        }
    }
    CaseResult {
        case,
        decision,
        failures,
    }
}

/// A case file as written. `deny_unknown_fields` everywhere: a misspelt
/// key must not silently turn into a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    case: Vec<RawCase>,
}

/// The same file read loosely, only to know where each case is and what it
/// is called, for errors. The spans of tables are those of their headers.
#[derive(Deserialize)]
struct LooseFile {
    #[serde(default)]
    defaults: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    case: Vec<toml::Spanned<toml::Table>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    principal: Option<RawPrincipal>,
    target: Option<RawTarget>,
    action: Option<String>,
    client_ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    principal: Option<RawPrincipal>,
    target: Option<RawTarget>,
    action: Option<String>,
    statement: Option<String>,
    /// For `action = "unmask"`: the mask rule's id.
    rule: Option<String>,
    /// For `action = "exec"`: the command line.
    command: Option<String>,
    /// For `action = "sftp"`: `{ operation, path, to }`.
    sftp: Option<portcullis_core::SftpOp>,
    /// For `action = "forward"`: `{ direction, host, port }`.
    forward: Option<portcullis_core::Forward>,
    client_ip: Option<String>,
    expect: String,
    policy: Option<String>,
    /// Reserved for masked outcomes: refused until masking exists.
    mask: Option<toml::Value>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    id: String,
    #[serde(default)]
    groups: Vec<String>,
    email: Option<String>,
    subject: Option<String>,
    issuer: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    kind: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// `file:line:column` of a byte offset.
fn locate(file: &str, text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{file}:{line}:{column}")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// Parses one case file and classifies its statements. Every problem found
/// is returned, each naming the file and, inside a case, the case.
pub fn parse_case_file(
    path: &Path,
    text: &str,
    classifier: &Classifier,
) -> Result<Vec<Case>, Vec<CaseFileError>> {
    let location = path.display().to_string();
    let file = location.as_str();
    let loose: LooseFile =
        toml::from_str(text).map_err(|e| vec![toml_error(file, text, &e, &[])])?;
    // A case runs from its `[[case]]` header to the next header the loose
    // reading knows of (another case, `[defaults]`) or the end of the file.
    let headers: BTreeSet<usize> = loose
        .case
        .iter()
        .map(|case| case.span().start)
        .chain(loose.defaults.iter().map(|defaults| defaults.span().start))
        .collect();
    let case_spans: Vec<(Range<usize>, Option<String>)> = loose
        .case
        .iter()
        .map(|case| {
            let name = case
                .get_ref()
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string);
            let start = case.span().start;
            let end = headers
                .range(start + 1..)
                .next()
                .copied()
                .unwrap_or(text.len());
            (start..end, name)
        })
        .collect();
    let raw: RawFile =
        toml::from_str(text).map_err(|e| vec![toml_error(file, text, &e, &case_spans)])?;
    let defaults = raw.defaults.unwrap_or_default();
    let mut errors = Vec::new();
    let default_client_ip = match defaults.client_ip.as_deref().map(parse_ip).transpose() {
        Ok(ip) => ip,
        Err(message) => {
            errors.push(CaseFileError {
                location: file.to_string(),
                case: None,
                message: format!("`defaults.client_ip`: {message}"),
            });
            None
        }
    };
    let mut cases = Vec::new();
    let mut names = BTreeSet::new();
    for (idx, raw_case) in raw.case.into_iter().enumerate() {
        let start = case_spans.get(idx).map_or(0, |(span, _)| span.start);
        let label = format!("case {} `{}`", idx + 1, raw_case.name);
        let error = |message: String| CaseFileError {
            location: format!("{file}:{}", line_of(text, start)),
            case: Some(label.clone()),
            message,
        };
        if !names.insert(raw_case.name.clone()) {
            errors.push(error(format!(
                "another case in this file is named `{}`",
                raw_case.name
            )));
            continue;
        }
        match build_case(
            path,
            line_of(text, start),
            raw_case,
            &defaults,
            default_client_ip,
            classifier,
        ) {
            Ok(case) => cases.push(case),
            Err(message) => errors.push(error(message)),
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

/// A TOML or schema error: its position, and the case it is in when it is
/// in one.
fn toml_error(
    file: &str,
    text: &str,
    error: &toml::de::Error,
    case_spans: &[(Range<usize>, Option<String>)],
) -> CaseFileError {
    let span = error.span();
    let case = span.as_ref().and_then(|span| {
        case_spans
            .iter()
            .enumerate()
            .find(|(_, (case, _))| case.contains(&span.start))
            .map(|(idx, (_, name))| match name {
                Some(name) => format!("case {} `{name}`", idx + 1),
                None => format!("case {}", idx + 1),
            })
    });
    CaseFileError {
        location: match span {
            Some(span) => locate(file, text, span.start),
            None => file.to_string(),
        },
        case,
        message: error.message().trim_end().trim_end_matches('.').to_string(),
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an IP address"))
}

fn build_case(
    path: &Path,
    line: usize,
    raw: RawCase,
    defaults: &RawDefaults,
    default_client_ip: Option<IpAddr>,
    classifier: &Classifier,
) -> Result<Case, String> {
    let expect = match raw.expect.as_str() {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        "hold" => Effect::Hold,
        other => {
            return Err(format!(
                "`expect` must be `allow`, `deny` or `hold`, not `{other}`"
            ))
        }
    };
    if raw.mask.is_some() {
        return Err(
            "`mask` is not supported: test who sees a mask rule's values in clear with `action = \"unmask\"` and `rule = \"<rule id>\"`".to_string(),
        );
    }
    let principal = raw
        .principal
        .or_else(|| defaults.principal.clone())
        .ok_or("no `principal` (set it in the case or in `[defaults]`)")?;
    if principal.id.is_empty() {
        return Err("`principal.id` is empty".to_string());
    }
    let target = raw
        .target
        .or_else(|| defaults.target.clone())
        .ok_or("no `target` (set it in the case or in `[defaults]`)")?;
    let kind = match target.kind.as_deref().unwrap_or("postgres") {
        "postgres" => TargetKind::Postgres,
        "ssh" => TargetKind::Ssh,
        "http" => TargetKind::Http,
        "kubernetes" => TargetKind::Kubernetes,
        other => {
            return Err(format!(
                "`target.kind` must be `postgres`, `ssh`, `http` or `kubernetes`, not `{other}`"
            ))
        }
    };
    let client_ip = match raw.client_ip.as_deref() {
        Some(text) => Some(parse_ip(text).map_err(|m| format!("`client_ip`: {m}"))?),
        None => default_client_ip,
    };
    let action_name = raw
        .action
        .or_else(|| defaults.action.clone())
        .ok_or("no `action` (set it in the case or in `[defaults]`)")?;
    let mut refused_by_gateway = None;
    if raw.rule.is_some() && action_name != "unmask" {
        return Err("`rule` is only for `action = \"unmask\"`".to_string());
    }
    let mut more = Vec::new();
    let ssh_fields = [
        ("command", raw.command.is_some(), "exec"),
        ("sftp", raw.sftp.is_some(), "sftp"),
        ("forward", raw.forward.is_some(), "forward"),
    ];
    for (field, given, action) in ssh_fields {
        if given && action_name != action {
            return Err(format!("`{field}` is only for `action = \"{action}\"`"));
        }
    }
    let ssh_action = match action_name.as_str() {
        "exec" | "shell" | "sftp" | "forward" if raw.statement.is_some() => {
            return Err("`statement` is only for `action = \"query\"`".to_string())
        }
        "exec" => {
            let line = raw
                .command
                .ok_or("`action = \"exec\"` needs a `command` (a command line)")?;
            match portcullis_ssh::command::parse(&line) {
                Ok(commands) => {
                    let mut actions = commands.into_iter().map(Action::Exec);
                    let first = actions.next();
                    more = actions.collect();
                    first
                }
                Err(reason) => {
                    refused_by_gateway = Some(reason);
                    Some(Action::Exec(portcullis_core::Command {
                        line: line.clone(),
                        text: line,
                        ..Default::default()
                    }))
                }
            }
        }
        "shell" => Some(Action::Shell),
        "sftp" => {
            let mut op = raw
                .sftp
                .ok_or("`action = \"sftp\"` needs `sftp = { operation = \"...\", path = \"...\" }`")?;
            // Paths are seen as the gateway sees them.
            op.path = portcullis_ssh::sftp_path(&op.path);
            op.to = op.to.as_deref().map(portcullis_ssh::sftp_path);
            Some(Action::Sftp(op))
        }
        "forward" => Some(Action::Forward(raw.forward.ok_or(
            "`action = \"forward\"` needs `forward = { direction = \"local\", host = \"...\", port = N }`",
        )?)),
        _ => None,
    };
    let action = match (ssh_action, action_name.as_str(), raw.statement) {
        (Some(action), _, _) => action,
        (None, "unmask", Some(_)) => {
            return Err("`statement` is only for `action = \"query\"`".to_string())
        }
        (None, "unmask", None) => match raw.rule {
            Some(rule) => Action::Unmask { rule },
            None => return Err("`action = \"unmask\"` needs a `rule` (a mask rule id)".to_string()),
        },
        (None, "connect", None) => Action::Connect,
        (None, "connect", Some(_)) => {
            return Err("`statement` is only for `action = \"query\"`".to_string())
        }
        (None, "query", None) => return Err("`action = \"query\"` needs a `statement`".to_string()),
        (None, "query", Some(sql)) => {
            let statement = classify_one(classifier, &sql)?;
            refused_by_gateway = gateway_refusal(&statement);
            Action::Query(statement)
        }
        (None, other, _) => {
            return Err(format!(
                "`action` must be `connect`, `query`, `unmask`, `exec`, `shell`, `sftp` or `forward`, not `{other}`"
            ))
        }
    };
    Ok(Case {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        line,
        name: raw.name,
        principal: Principal {
            subject: principal.subject.unwrap_or_else(|| principal.id.clone()),
            id: principal.id,
            email: principal.email,
            groups: principal.groups,
            issuer: principal.issuer.unwrap_or_default(),
            expires_at: u64::MAX,
        },
        target: Target {
            name: target.name,
            kind,
            labels: target.labels,
        },
        action,
        more,
        client_ip,
        expect,
        policy: raw.policy,
        refused_by_gateway,
    })
}

/// The one statement of a case, classified as the gateway classifies it.
fn classify_one(
    classifier: &Classifier,
    sql: &str,
) -> Result<portcullis_core::StatementInfo, String> {
    let statements = classifier
        .classify(sql)
        .map_err(|e| format!("`statement`: {e}"))?;
    let statement = match &*statements {
        [one] => one.clone(),
        [] => return Err("`statement` holds no SQL statement".to_string()),
        more => {
            return Err(format!(
                "`statement` holds {} statements; a case tests one (the gateway decides each statement on its own)",
                more.len()
            ))
        }
    };
    if let Some(name) = &statement.executes {
        return Err(format!(
            "`statement` executes the prepared statement `{name}`: the gateway decides what was prepared under that name, so test that statement instead"
        ));
    }
    Ok(statement)
}

/// The gateway refuses a statement that changes a setting it pins before
/// any policy sees it; a case must see the same refusal.
fn gateway_refusal(statement: &portcullis_core::StatementInfo) -> Option<String> {
    let setting = statement.settings.iter().find(|s| {
        s.as_str() == "*"
            || portcullis_pg::PINNED_PARAMETERS
                .iter()
                .any(|(name, _)| name == s)
    })?;
    let what = if setting == "*" {
        "settings it cannot name".to_string()
    } else {
        format!("`{setting}`")
    };
    Some(format!(
        "refused by the gateway before any policy: a statement that changes {what} is refused"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
@id("eng-connect")
permit (principal in Group::"eng", action == Action::"connect", resource);

@id("eng-read")
permit (principal in Group::"eng", action == Action::"query", resource)
when { context.statement.kind == "select" };

@id("no-unbounded-writes")
@reason("UPDATE and DELETE need a WHERE clause")
forbid (principal, action == Action::"query", resource)
when { !context.statement.has_where };
"#;

    const HEADER: &str = r#"
[defaults]
target = { name = "demo", labels = { env = "dev" } }
client_ip = "127.0.0.1"
"#;

    fn parse(text: &str) -> Result<Vec<Case>, Vec<CaseFileError>> {
        parse_case_file(Path::new("demo.cases.toml"), text, &Classifier::new(0))
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(cases) => panic!("expected an error, parsed {} cases", cases.len()),
            Err(errors) => lines(&errors),
        }
    }

    fn run_text(cases: &str) -> TestRun {
        let policies: Policies =
            portcullis_policy::CedarPolicies::from_sources(&[("test.cedar", POLICIES)])
                .unwrap()
                .into();
        let cases = parse(&format!("{HEADER}{cases}")).unwrap();
        run_cases(&policies, vec![("demo.cases.toml".to_string(), cases)])
    }

    #[test]
    fn parses_a_case_with_defaults() {
        let cases = parse(&format!(
            "{HEADER}
[[case]]
name = \"engineers read\"
principal = {{ id = \"alice@example.com\", groups = [\"eng\"], email = \"alice@example.com\" }}
action = \"query\"
statement = \"with d as (delete from orders returning *) select * from d\"
expect = \"deny\"
policy = \"no-unbounded-writes\"
"
        ))
        .unwrap();
        let [case] = cases.as_slice() else {
            panic!("{cases:?}")
        };
        assert_eq!(case.name, "engineers read");
        assert_eq!(case.line, 6);
        assert_eq!(case.target.name, "demo");
        assert_eq!(case.target.kind, TargetKind::Postgres);
        assert_eq!(
            case.target.labels.get("env").map(String::as_str),
            Some("dev")
        );
        assert_eq!(case.client_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(case.principal.subject, "alice@example.com");
        assert_eq!(case.principal.groups, ["eng"]);
        assert_eq!(case.expect, Effect::Deny);
        let Action::Query(statement) = &case.action else {
            panic!("{:?}", case.action)
        };
        // Classified by what it does: the CTE deletes without a WHERE.
        assert_eq!(statement.kind, portcullis_core::StatementKind::Delete);
        assert!(!statement.has_where);
    }

    #[test]
    fn unknown_key_names_file_line_and_case() {
        let message = parse_err(&format!(
            "{HEADER}
[[case]]
name = \"first\"
principal = {{ id = \"a\" }}
action = \"connect\"
expect = \"deny\"

[[case]]
name = \"misspelt\"
principal = {{ id = \"a\" }}
action = \"query\"
statment = \"select 1\"
expect = \"allow\"
"
        ));
        assert!(
            message
                .starts_with("demo.cases.toml:16:1: case 2 `misspelt`: unknown field `statment`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_in_a_nested_table_and_at_the_top() {
        let message = parse_err(&format!(
            "{HEADER}
[[case]]
name = \"nested\"
principal = {{ id = \"a\", group = [\"eng\"] }}
action = \"connect\"
expect = \"deny\"
"
        ));
        assert!(message.contains("case 1 `nested`"), "{message}");
        assert!(message.contains("unknown field `group`"), "{message}");

        // A sub-table belongs to its case; `[defaults]` after the cases does not.
        let message = parse_err(
            "[[case]]
name = \"sub\"
action = \"connect\"
expect = \"deny\"
[case.principal]
id = \"a\"
email_address = \"a@example.com\"

[defaults]
client = \"127.0.0.1\"
",
        );
        assert!(
            message.starts_with("demo.cases.toml:7:1: case 1 `sub`: unknown field `email_address`"),
            "{message}"
        );
        let message = parse_err(
            "[[case]]\nname = \"x\"\nexpect = \"deny\"\n\n[defaults]\nclient = \"127.0.0.1\"\n",
        );
        assert!(
            message.starts_with("demo.cases.toml:6:1: unknown field `client`"),
            "{message}"
        );

        let message = parse_err("[[case]\n");
        assert!(message.starts_with("demo.cases.toml:1:"), "{message}");

        let message = parse_err("[[cases]]\nname = \"x\"\n");
        assert!(message.starts_with("demo.cases.toml:1:"), "{message}");
        assert!(message.contains("unknown field `cases`"), "{message}");
    }

    #[test]
    fn query_without_statement_is_an_error() {
        let message = parse_err(&format!(
            "{HEADER}
[[case]]
name = \"no sql\"
principal = {{ id = \"a\" }}
action = \"query\"
expect = \"allow\"
"
        ));
        assert_eq!(
            message,
            "demo.cases.toml:6: case 1 `no sql`: `action = \"query\"` needs a `statement`"
        );
    }

    #[test]
    fn statements_that_do_not_parse_or_are_several() {
        let message = parse_err(&format!(
            "{HEADER}
[[case]]
name = \"typo\"
principal = {{ id = \"a\" }}
action = \"query\"
statement = \"selec 1\"
expect = \"allow\"

[[case]]
name = \"two\"
principal = {{ id = \"a\" }}
action = \"query\"
statement = \"select 1; select 2\"
expect = \"allow\"

[[case]]
name = \"execute\"
principal = {{ id = \"a\" }}
action = \"query\"
statement = \"execute p\"
expect = \"allow\"
"
        ));
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 3, "{message}");
        assert!(
            lines[0].starts_with(
                "demo.cases.toml:6: case 1 `typo`: `statement`: cannot parse the query"
            ),
            "{message}"
        );
        assert!(
            lines[1].contains("case 2 `two`: `statement` holds 2 statements"),
            "{message}"
        );
        assert!(lines[2].contains("case 3 `execute`"), "{message}");
    }

    #[test]
    fn mask_is_refused() {
        let message = parse_err(&format!(
            "{HEADER}
[[case]]
name = \"masked\"
principal = {{ id = \"a\" }}
action = \"query\"
statement = \"select email from customers\"
expect = \"allow\"
mask = [\"customers.email\"]
"
        ));
        assert!(
            message.contains("case 1 `masked`: `mask` is not supported: test who sees"),
            "{message}"
        );
    }

    #[test]
    fn other_case_file_errors() {
        let message = parse_err(
            "[[case]]
name = \"a\"
principal = { id = \"a\" }
action = \"connect\"
expect = \"maybe\"

[[case]]
name = \"a\"
principal = { id = \"a\" }
action = \"connect\"
expect = \"deny\"

[[case]]
name = \"c\"
principal = { id = \"a\" }
target = { name = \"demo\" }
action = \"connect\"
client_ip = \"localhost\"
expect = \"deny\"
",
        );
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(
            lines,
            [
                "demo.cases.toml:1: case 1 `a`: `expect` must be `allow`, `deny` or `hold`, not `maybe`",
                "demo.cases.toml:7: case 2 `a`: another case in this file is named `a`",
                "demo.cases.toml:13: case 3 `c`: `client_ip`: `localhost` is not an IP address",
            ]
        );
        let message = parse_err("[[case]]\nname = \"x\"\nprincipal = { id = \"a\" }\naction = \"connect\"\nexpect = \"deny\"\n");
        assert!(message.contains("no `target`"), "{message}");
    }

    #[test]
    fn passing_cases_report_ok_and_the_summary() {
        let run = run_text(
            "
[[case]]
name = \"engineers connect\"
principal = { id = \"alice@example.com\", groups = [\"eng\"] }
action = \"connect\"
expect = \"allow\"
policy = \"eng-connect\"

[[case]]
name = \"strangers do not\"
principal = { id = \"mallory@example.com\" }
action = \"connect\"
expect = \"deny\"
",
        );
        assert_eq!((run.n_passed(), run.n_failed()), (2, 0));
        let text = run.render(Format::Text);
        assert!(
            text.contains("test demo.cases.toml::engineers connect ... ok\n"),
            "{text}"
        );
        assert!(
            text.contains("test demo.cases.toml::strangers do not ... ok\n"),
            "{text}"
        );
        assert!(!text.contains("failures:"), "{text}");
        assert!(text.ends_with("\n2 passed, 0 failed\n"), "{text}");
    }

    #[test]
    fn failing_cases_show_expected_actual_policies_and_reason() {
        let run = run_text(
            "
[[case]]
name = \"wrong effect\"
principal = { id = \"alice@example.com\", groups = [\"eng\"] }
action = \"query\"
statement = \"delete from orders\"
expect = \"allow\"

[[case]]
name = \"wrong policy\"
principal = { id = \"alice@example.com\", groups = [\"eng\"] }
action = \"query\"
statement = \"select 1\"
expect = \"allow\"
policy = \"dba-read\"

[[case]]
name = \"right\"
principal = { id = \"alice@example.com\", groups = [\"eng\"] }
action = \"query\"
statement = \"update orders set total = 0\"
expect = \"deny\"
policy = \"no-unbounded-writes\"
",
        );
        assert_eq!((run.n_passed(), run.n_failed()), (1, 2));
        let text = run.render(Format::Text);
        assert!(
            text.contains("test demo.cases.toml::wrong effect ... FAILED\n"),
            "{text}"
        );
        assert!(
            text.contains("test demo.cases.toml::right ... ok\n"),
            "{text}"
        );
        let details = text
            .split("---- demo.cases.toml::wrong effect ----\n")
            .nth(1)
            .unwrap();
        assert!(
            details.contains("  statement: delete from orders\n"),
            "{text}"
        );
        assert!(
            details.contains("  failure:   expected `allow`, got `deny`\n"),
            "{text}"
        );
        assert!(details.contains("  expected:  allow\n"), "{text}");
        assert!(details.contains("  actual:    deny\n"), "{text}");
        assert!(
            details.contains("  policies:  `no-unbounded-writes`\n"),
            "{text}"
        );
        assert!(
            details.contains("  reason:    UPDATE and DELETE need a WHERE clause\n"),
            "{text}"
        );
        assert!(
            text.contains("expected policy `dba-read` among the deciding policies"),
            "{text}"
        );
        assert!(
            text.contains("  expected:  allow (by `dba-read`)\n"),
            "{text}"
        );
        assert!(text.contains("  policies:  `eng-read`\n"), "{text}");
        assert!(text.ends_with("\n1 passed, 2 failed\n"), "{text}");
    }

    #[test]
    fn pinned_settings_are_refused_as_the_gateway_does() {
        let run = run_text(
            "
[[case]]
name = \"encoding\"
principal = { id = \"alice@example.com\", groups = [\"eng\"] }
action = \"query\"
statement = \"set client_encoding = 'SJIS'\"
expect = \"deny\"
",
        );
        assert_eq!(run.n_failed(), 0, "{}", run.render_text());
        let result = run.results().next().unwrap();
        assert!(result.decision.reason.contains("`client_encoding`"));
    }

    #[test]
    fn junit_has_one_suite_per_file_and_escapes() {
        let run = run_text(
            "
[[case]]
name = \"quotes \\\" & <tags>\"
principal = { id = \"alice@example.com\", groups = [\"eng\"] }
action = \"query\"
statement = \"select '<x>' & 1\"
expect = \"deny\"
",
        );
        let xml = run.render(Format::Junit);
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuite name=\"demo.cases.toml\" tests=\"1\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testcase name=\"quotes &quot; &amp; &lt;tags&gt;\" classname=\"demo.cases.toml\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"expected `deny`, got `allow`\""),
            "{xml}"
        );
        assert!(
            xml.contains("select &apos;&lt;x&gt;&apos; &amp; 1"),
            "{xml}"
        );
        assert!(xml.trim_end().ends_with("</testsuites>"), "{xml}");
        assert_eq!(xml.matches("<testcase").count(), 1);
        assert_eq!(xml.matches("</testcase>").count(), 1);
    }

    #[test]
    fn xml_escape_drops_characters_xml_cannot_hold() {
        assert_eq!(xml_attr("a\u{1}b\tc\n"), "a\u{fffd}b&#9;c&#10;");
        assert_eq!(xml_text("a\u{1}b\tc\n<"), "a\u{fffd}b\tc\n&lt;");
    }
}
