use super::*;
use crate::cedar::{Field, STATEMENT_FIELDS};
use crate::RegoPolicies;
use portcullis_core::{
    Action, Effect, Principal, Request, StatementInfo, StatementKind, Target, TargetKind,
};
use std::collections::BTreeMap;
use std::path::Path;

fn quickstart() -> CedarPolicies {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/policies");
    CedarPolicies::load_dir(&dir).unwrap()
}

fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        subject: id.into(),
        email: Some(id.into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        issuer: "test".into(),
        expires_at: u64::MAX,
    }
}

fn demo() -> Target {
    Target {
        name: "demo".into(),
        kind: TargetKind::Postgres,
        labels: BTreeMap::from([("env".to_string(), "dev".to_string())]),
    }
}

fn statement(kind: StatementKind, command: &str, has_where: bool) -> StatementInfo {
    StatementInfo {
        kind,
        kinds: vec![kind],
        command: command.into(),
        tables: vec!["t".into()],
        functions: vec![],
        has_where,
        writes: kind != StatementKind::Select,
        text: "...".into(),
        prepares: None,
        executes: None,
        prepared_text: None,
        settings: vec![],
        lineage: Default::default(),
        shape: None,
        objects: Default::default(),
    }
}

/// `name args...` as an SSH command, run as written.
fn command(name: &str, args: &[&str]) -> portcullis_core::Command {
    let text = std::iter::once(name)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    portcullis_core::Command {
        program: name.into(),
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        text: text.clone(),
        line: text,
        wrappers: vec![],
        dynamic: false,
        redirects: vec![],
    }
}

fn decide(policies: &CedarPolicies, p: &Principal, action: Action) -> portcullis_core::Decision {
    let target = demo();
    policies.decide(&Request {
        principal: p,
        target: &target,
        action: &action,
        client_addr: "127.0.0.1".parse().ok(),
        grant: None,
        reason: None,
    })
}

#[test]
fn connect_is_for_eng_and_dba_only() {
    let policies = quickstart();
    let allowed = decide(
        &policies,
        &principal("alice@example.com", &["eng"]),
        Action::Connect,
    );
    assert!(allowed.is_allowed(), "{allowed:?}");
    assert_eq!(allowed.policies, vec!["eng-connect"]);
    let denied = decide(
        &policies,
        &principal("mallory@example.com", &["sales"]),
        Action::Connect,
    );
    assert!(!denied.is_allowed());
    assert!(denied.policies.is_empty());
    assert!(
        denied.reason.contains("no policy permits `connect`"),
        "{}",
        denied.reason
    );
    assert!(denied.policy_version.starts_with("sha256:"));
}

#[test]
fn guardrails_name_the_policy_and_the_reason() {
    let policies = quickstart();
    let dba = principal("dba@example.com", &["eng", "dba"]);
    let cases = [
        (
            statement(StatementKind::Delete, "DELETE", false),
            Some("no-unbounded-writes"),
        ),
        (statement(StatementKind::Delete, "DELETE", true), None),
        (
            statement(StatementKind::Ddl, "DROP DATABASE", true),
            Some("no-drop-database"),
        ),
        (statement(StatementKind::Ddl, "CREATE TABLE", true), None),
        (
            statement(StatementKind::Copy, "COPY FROM PROGRAM", true),
            Some("no-copy-program"),
        ),
        (statement(StatementKind::Copy, "COPY TO STDOUT", true), None),
        (
            statement(StatementKind::Ddl, "ALTER SYSTEM", true),
            Some("no-alter-system"),
        ),
        (
            statement(StatementKind::Dcl, "CREATE ROLE", true),
            Some("no-role-changes"),
        ),
        (statement(StatementKind::Dcl, "GRANT", true), None),
    ];
    for (statement, forbidden_by) in cases {
        let command = statement.command.clone();
        let decision = decide(&policies, &dba, Action::Query(statement));
        match forbidden_by {
            Some(id) => {
                assert!(!decision.is_allowed(), "{command} should be denied");
                assert_eq!(decision.policies, vec![id.to_string()], "{command}");
                assert!(!decision.reason.is_empty());
            }
            None => assert!(decision.is_allowed(), "{command}: {decision:?}"),
        }
    }
}

#[test]
fn eng_cannot_run_ddl_or_opaque_code() {
    let policies = quickstart();
    let alice = principal("alice@example.com", &["eng"]);
    for kind in [StatementKind::Ddl, StatementKind::Dcl, StatementKind::Other] {
        let decision = decide(&policies, &alice, Action::Query(statement(kind, "X", true)));
        assert!(!decision.is_allowed(), "{kind}");
    }
    let select = decide(
        &policies,
        &alice,
        Action::Query(statement(StatementKind::Select, "SELECT", true)),
    );
    assert!(select.is_allowed());
}

#[test]
fn labels_are_tags() {
    let policies = CedarPolicies::from_sources(&[(
        "tags.cedar",
        r#"permit (principal, action == Action::"connect", resource)
           when { resource.hasTag("env") && resource.getTag("env") == "dev" };"#,
    )])
    .unwrap();
    assert!(decide(&policies, &principal("a", &[]), Action::Connect).is_allowed());
}

#[test]
fn invalid_policies_give_file_line_and_column() {
    let err = CedarPolicies::from_sources(&[(
        "bad.cedar",
        "permit (principal, action, resource)\nwhen { context.nope == 1 };",
    )])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("bad.cedar:2:"), "{err}");
    let err =
        CedarPolicies::from_sources(&[("syntax.cedar", "permit (principal,\n action resource);")])
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("syntax.cedar:2:"), "{err}");
}

/// Found in attack: a template was parsed, never linked, and so never
/// applied, without a word.
#[test]
fn templates_are_refused() {
    let err = CedarPolicies::from_sources(&[(
        "guard.cedar",
        "permit (principal, action, resource);\n\
         @id(\"no-truncate\")\nforbid (principal == ?principal, action == Action::\"query\", resource)\n\
         when { context.statement.command == \"TRUNCATE\" };",
    )])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("guard.cedar") && err.contains("`no-truncate` is a template"),
        "{err}"
    );
}

#[test]
fn evaluation_error_fails_closed() {
    // An overflow errors at run time: an erroring forbid must not be skipped
    // into an allow.
    let policies = CedarPolicies::from_sources(&[(
        "p.cedar",
        r#"permit (principal, action == Action::"connect", resource);
           forbid (principal, action == Action::"connect", resource) when { 9223372036854775807 + 1 > 0 };"#,
    )])
    .unwrap();
    let decision = decide(&policies, &principal("a", &[]), Action::Connect);
    assert!(!decision.is_allowed(), "{decision:?}");
    assert!(!decision.errors.is_empty());
}

fn quickstart_rego() -> RegoPolicies {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/rego");
    RegoPolicies::load_dir(&dir).unwrap()
}

/// One table of cases, both engines: the same effect, the same deciding
/// policies, the same reason.
#[test]
fn cedar_and_rego_agree_on_the_quickstart() {
    let cedar = quickstart();
    let rego = quickstart_rego();
    assert_eq!(cedar.policy_names(), rego.policy_names());
    let alice = principal("alice@example.com", &["eng"]);
    let dana = principal("dana@example.com", &["eng", "dba"]);
    let mallory = principal("mallory@example.com", &["sales"]);
    let q = |kind, command: &str, has_where| Action::Query(statement(kind, command, has_where));
    let cases = [
        (&alice, Action::Connect),
        (&dana, Action::Connect),
        (&mallory, Action::Connect),
        (&alice, q(StatementKind::Select, "SELECT", true)),
        (&alice, q(StatementKind::Delete, "DELETE", false)),
        (&alice, q(StatementKind::Delete, "DELETE", true)),
        (&alice, q(StatementKind::Ddl, "CREATE TABLE", true)),
        (&alice, q(StatementKind::Other, "DO", true)),
        (&dana, q(StatementKind::Ddl, "CREATE TABLE", true)),
        (&dana, q(StatementKind::Ddl, "DROP DATABASE", true)),
        (&dana, q(StatementKind::Copy, "COPY TO PROGRAM", true)),
        (&dana, q(StatementKind::Copy, "COPY TO STDOUT", true)),
        (&dana, q(StatementKind::Ddl, "ALTER SYSTEM", true)),
        (&dana, q(StatementKind::Dcl, "CREATE ROLE", true)),
        (&dana, q(StatementKind::Dcl, "GRANT", true)),
        (&mallory, q(StatementKind::Select, "SELECT", true)),
    ];
    let target = demo();
    for (who, action) in cases {
        let request = Request {
            principal: who,
            target: &target,
            action: &action,
            client_addr: "127.0.0.1".parse().ok(),
            grant: None,
            reason: None,
        };
        let (c, r) = (cedar.decide(&request), rego.decide(&request));
        let case = format!("{} {:?}", who.id, action);
        assert_eq!(c.effect, r.effect, "{case}");
        assert_eq!(c.policies, r.policies, "{case}");
        assert_eq!(c.reason, r.reason, "{case}");
        assert!(r.errors.is_empty(), "{case}: {:?}", r.errors);
    }
}

#[test]
fn rego_errors_fail_closed_and_bad_files_are_refused() {
    let err = RegoPolicies::from_sources(&[(
        "bad.rego",
        "package portcullis\npermit contains \"x\" if {",
    )])
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.rego"), "{err}");
    // Found in attack: a `forbid` in another package was counted, and
    // never asked.
    let err = RegoPolicies::from_sources(&[
        ("main.rego", "package portcullis\npermit contains \"all\" if { true }\n"),
        (
            "guard.rego",
            "package portcullis.guard\nforbid contains \"no-truncate\" if { input.action == \"query\" }\n",
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("guard.rego") && err.contains("package portcullis.guard"),
        "{err}"
    );
    // Helpers elsewhere are fine.
    RegoPolicies::from_sources(&[
        (
            "main.rego",
            "package portcullis\nimport data.helpers\npermit contains \"all\" if { helpers.yes }\n",
        ),
        ("helpers.rego", "package helpers\nyes := true\n"),
    ])
    .unwrap();
    // `permit` that is not a set cannot give a decision: refused at load.
    let err = RegoPolicies::from_sources(&[("odd.rego", "package portcullis\npermit := 7\n")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("set of rule ids"), "{err}");
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let err = CedarPolicies::from_sources(&[
        ("a.cedar", "permit (principal, action, resource)\nwhen { context.nope == 1 };\nforbid (principal, action, resource) when { context.nada };"),
        ("b.cedar", "permit (principal,\n action resource);"),
    ])
    .unwrap_err()
    .to_string();
    // Parse errors first (validation needs every file to parse).
    assert!(err.lines().any(|l| l.starts_with("b.cedar:2:")), "{err}");
    let err = CedarPolicies::from_sources(&[(
        "a.cedar",
        "permit (principal, action, resource)\nwhen { context.nope == 1 };\nforbid (principal, action, resource) when { context.nada };",
    )])
    .unwrap_err()
    .to_string();
    // Each problem on its own line, in the order of the file (the
    // validator reports each once per action it applies to).
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(lines[0].starts_with("a.cedar:2:"), "{err}");
    assert!(lines.last().unwrap().starts_with("a.cedar:3:"), "{err}");
    assert!(
        lines.iter().any(|l| l.contains("`nope`")) && lines.iter().any(|l| l.contains("`nada`")),
        "{err}"
    );
}

const APPROVABLE: &str = r#"
permit (principal in Group::"eng", action == Action::"query", resource);
@id("deletes-need-a-dba")
@approval("dba")
@reason("deletes need a DBA")
forbid (principal, action == Action::"query", resource)
when { context.statement.kind == "delete" };
@id("two-for-ddl")
@approval("dba")
@approvals("2")
forbid (principal, action == Action::"query", resource)
when { context.statement.kind == "ddl" };
@id("no-truncate")
forbid (principal, action == Action::"query", resource)
when { context.statement.command == "TRUNCATE" };
"#;

#[test]
fn an_approvable_forbid_holds_only_what_a_permit_allows() {
    let policies = CedarPolicies::from_sources(&[("p.cedar", APPROVABLE)]).unwrap();
    let eng = principal("alice", &["eng"]);
    let held = decide(
        &policies,
        &eng,
        Action::Query(statement(StatementKind::Delete, "DELETE", true)),
    );
    assert_eq!(held.effect, Effect::Hold);
    assert_eq!(held.reason, "deletes need a DBA");
    assert_eq!(
        held.approval,
        Some(portcullis_core::Approval {
            groups: vec!["dba".into()],
            min_approvals: 1
        })
    );
    let ddl = decide(
        &policies,
        &eng,
        Action::Query(statement(StatementKind::Ddl, "CREATE TABLE", true)),
    );
    assert_eq!(ddl.effect, Effect::Hold);
    assert_eq!(ddl.approval.map(|a| a.min_approvals), Some(2));

    // Nothing permits it: a reviewer cannot grant what no policy allows.
    let outsider = principal("mallory", &["sales"]);
    let denied = decide(
        &policies,
        &outsider,
        Action::Query(statement(StatementKind::Delete, "DELETE", true)),
    );
    assert_eq!(denied.effect, Effect::Deny);
    assert_eq!(denied.approval, None);

    // A forbid that is not approvable decides, whatever else applies.
    let truncate = decide(
        &policies,
        &eng,
        Action::Query(statement(StatementKind::Delete, "TRUNCATE", false)),
    );
    assert_eq!(truncate.effect, Effect::Deny);
    assert!(truncate.policies.contains(&"no-truncate".to_string()));
}

#[test]
fn approval_annotations_are_checked_at_load() {
    for (text, message) in [
        (
            r#"@approval("dba") permit (principal, action, resource);"#,
            "it means nothing on a `permit`",
        ),
        (
            r#"@approval("") forbid (principal, action, resource);"#,
            "must name the group",
        ),
        (
            r#"@approval("dba") @approvals("0") forbid (principal, action, resource);"#,
            "from 1 to 10",
        ),
        (
            r#"@approvals("2") forbid (principal, action, resource);"#,
            "needs `@approval",
        ),
    ] {
        let error = CedarPolicies::from_sources(&[("p.cedar", text)]).unwrap_err();
        assert!(error.to_string().contains(message), "{text}: {error}");
    }
}

#[test]
fn rego_holds_like_cedar() {
    let rego = RegoPolicies::from_sources(&[(
        "p.rego",
        r#"package portcullis
import rego.v1
permit contains "eng" if { "eng" in input.principal.groups }
forbid contains "deletes-need-a-dba" if { input.context.statement.kind == "delete" }
forbid contains "no-truncate" if { input.context.statement.command == "TRUNCATE" }
approvals := {"deletes-need-a-dba": "dba"}
"#,
    )])
    .unwrap();
    let request = |p: &Principal, s: StatementInfo| {
        let action = Action::Query(s);
        let target = demo();
        rego.decide(&Request {
            principal: p,
            target: &target,
            action: &action,
            client_addr: None,
            grant: None,
            reason: None,
        })
    };
    let eng = principal("alice", &["eng"]);
    let held = request(&eng, statement(StatementKind::Delete, "DELETE", true));
    assert_eq!(held.effect, Effect::Hold);
    assert_eq!(
        held.approval.map(|a| a.groups),
        Some(vec!["dba".to_string()])
    );
    let outsider = principal("mallory", &[]);
    assert_eq!(
        request(&outsider, statement(StatementKind::Delete, "DELETE", true)).effect,
        Effect::Deny
    );
    assert_eq!(
        request(&eng, statement(StatementKind::Delete, "TRUNCATE", false)).effect,
        Effect::Deny
    );
}

/// `principal` runs `statement` on the demo target, decided by `rego`.
fn rego_query(
    rego: &RegoPolicies,
    principal: &Principal,
    statement: StatementInfo,
) -> portcullis_core::Decision {
    let action = Action::Query(statement);
    let target = demo();
    rego.decide(&Request {
        principal,
        target: &target,
        action: &action,
        client_addr: None,
        grant: None,
        reason: None,
    })
}

#[test]
fn a_rego_forbid_in_another_shape_denies_and_says_why() {
    // OPA's usual deny shape: entries that are objects, not rule ids.
    let rego = RegoPolicies::from_sources(&[(
        "p.rego",
        r#"package portcullis
import rego.v1
permit contains "all" if { true }
forbid contains {"id": "no-drop-table", "msg": "no"} if { input.context.statement.command == "DROP TABLE" }
"#,
    )])
    .unwrap();
    let decision = rego_query(
        &rego,
        &principal("dana", &["dba"]),
        statement(StatementKind::Ddl, "DROP TABLE", false),
    );
    assert_eq!(decision.effect, Effect::Deny);
    assert!(
        decision.reason.contains("set of rule ids"),
        "{}",
        decision.reason
    );
}

#[test]
fn deeply_nested_policies_are_refused_before_any_parser_sees_them() {
    let deep = |n: usize| format!("{}true{}", "(".repeat(n), ")".repeat(n));
    let cedar = format!(
        "permit (principal, action, resource) when {{ {} }};",
        deep(300)
    );
    let err = CedarPolicies::from_sources(&[("team-x.cedar", &cedar)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("team-x.cedar") && err.contains("nest 301 deep"),
        "{err}"
    );
    let rego = format!(
        "package portcullis\nx := {}1{}\n",
        "[".repeat(22),
        "]".repeat(22)
    );
    let err = RegoPolicies::from_sources(&[("team-x.rego", &rego)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("team-x.rego") && err.contains("nest 22 deep"),
        "{err}"
    );
    // Brackets inside strings do not count; a policy as people write them loads.
    let fine = format!(
        "@note(\"{}\")\npermit (principal, action, resource) when {{ (true || (false)) }};",
        "(".repeat(40)
    );
    if let Err(e) = CedarPolicies::from_sources(&[("fine.cedar", &fine)]) {
        panic!("{e}");
    }
}

#[test]
fn a_rego_decision_that_runs_too_long_is_stopped_and_denies() {
    let rego = RegoPolicies::from_sources(&[(
        "p.rego",
        r#"package portcullis
import rego.v1
permit contains "all" if { true }
forbid contains "slow-check" if {
    contains(input.context.statement.text, "slowpoke")
    n := count([x | some x in numbers.range(1, 3000000); x % 7 == 0])
    n < 0
}
"#,
    )])
    .unwrap();
    let mut slow = statement(StatementKind::Select, "SELECT", false);
    slow.text = "select 1 as slowpoke".into();
    let started = std::time::Instant::now();
    let decision = rego_query(&rego, &principal("alice", &["eng"]), slow);
    assert_eq!(decision.effect, Effect::Deny);
    assert!(
        decision.reason.contains("time limit"),
        "{}",
        decision.reason
    );
    // Without the limit, this decision takes seconds.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn rego_errors_say_what_is_wrong() {
    let err = RegoPolicies::from_sources(&[(
        "broken.rego",
        "package portcullis
permit contains \"x\" if { input.action == }\n",
    )])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("expecting expression (at broken.rego:2:42)"),
        "{err}"
    );
}

#[test]
fn the_context_carries_a_grant_and_a_reason() {
    let policies = CedarPolicies::from_sources(&[(
        "p.cedar",
        r#"permit (principal, action == Action::"connect", resource)
when { context has grant && context.grant.until > 100 && context has reason && context.reason == "INC-1" };"#,
    )])
    .unwrap();
    let p = principal("alice", &[]);
    let target = demo();
    let grant = portcullis_core::Grant {
        id: 7,
        reason: "INC-1".into(),
        until: 200,
    };
    let decide_with = |grant: Option<&portcullis_core::Grant>, reason: Option<&str>| {
        policies
            .decide(&Request {
                principal: &p,
                target: &target,
                action: &Action::Connect,
                client_addr: None,
                grant,
                reason,
            })
            .effect
    };
    assert_eq!(decide_with(Some(&grant), Some("INC-1")), Effect::Allow);
    assert_eq!(decide_with(None, Some("INC-1")), Effect::Deny);
    assert_eq!(decide_with(Some(&grant), None), Effect::Deny);
}

#[test]
fn policies_that_may_read_a_statements_text_are_told_apart() {
    let reads = |body: &str| {
        let action = if body.contains("command.") {
            "exec"
        } else {
            "query"
        };
        let policy = format!(
            "permit (principal, action == Action::\"{action}\", resource) when {{ {body} }};"
        );
        CedarPolicies::from_sources(&[("p.cedar", policy.as_str())])
            .unwrap()
            .reads_statement_text()
    };
    for body in [
        r#"context.statement.text like "*x*""#,
        r#"context.statement["text"] == "x""#,
        r#"context.statement has text"#,
        r#"(if context.statement.writes then context.statement else context.statement).text == "x""#,
        r#"context has statement.text"#,
    ] {
        assert!(reads(body), "{body}");
    }
    for body in [
        r#"context.statement.command == "DROP DATABASE""#,
        r#"context.command.text == "ls""#,
        r#"context.statement.tables.contains("text")"#,
        r#"{"text": "x"} == {"text": "y"}"#,
    ] {
        assert!(!reads(body), "{body}");
    }
    let quickstart = Policies::load_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/policies"),
        Engine::Cedar,
    )
    .unwrap();
    assert!(!quickstart.reads_statement_text());
}

#[test]
fn a_context_holds_the_statement_fields_the_policies_read() {
    let names = |fields: &Option<Vec<Field<StatementInfo>>>| -> Vec<&str> {
        fields.iter().flatten().map(|(name, _)| *name).collect()
    };
    assert_eq!(
        names(&quickstart().read.statement),
        ["kind", "kinds", "command", "has_where"]
    );
    let with = |body: &str| {
        let policy =
            format!("permit (principal, action == Action::\"query\", resource) when {{ {body} }};");
        CedarPolicies::from_sources(&[("p.cedar", policy.as_str())]).unwrap()
    };
    assert_eq!(
        names(
            &with(r#"context.statement["tables"].contains("t")"#)
                .read
                .statement
        ),
        ["tables"]
    );
    assert_eq!(
        names(&with("context has statement.settings").read.statement),
        ["settings"]
    );
    // The statement as a value: every field.
    let whole = with(
        "(if context.statement.writes then context.statement else context.statement).text == \"x\"",
    );
    assert_eq!(names(&whole.read.statement).len(), STATEMENT_FIELDS.len());
    assert!(whole.read.command.is_none());
    // Tested for, not read: there, without a field.
    assert_eq!(
        names(&with("context has statement").read.statement),
        Vec::<&str>::new()
    );
    assert!(with("context has statement").read.statement.is_some());
}

#[test]
fn each_statement_field_a_policy_reads_decides() {
    let mut target = statement(StatementKind::Delete, "DELETE", false);
    target.kinds = vec![StatementKind::Delete, StatementKind::Ddl];
    target.tables = vec!["secrets".into()];
    target.functions = vec!["pg_read_file".into()];
    target.settings = vec!["role".into()];
    target.text = "delete from secrets".into();
    let harmless = statement(StatementKind::Select, "SELECT", true);
    let alice = principal("alice@example.com", &["eng"]);
    for condition in [
        r#"context.statement.kind == "delete""#,
        r#"context.statement.kinds.contains("ddl")"#,
        r#"context.statement.command == "DELETE""#,
        r#"context.statement.tables.contains("secrets")"#,
        r#"context.statement.functions.contains("pg_read_file")"#,
        "!context.statement.has_where",
        "context.statement.writes",
        r#"context.statement.settings.contains("role")"#,
        r#"context.statement.text like "*secrets*""#,
    ] {
        let source = format!(
            "permit (principal, action, resource);\n\
             forbid (principal, action == Action::\"query\", resource) when {{ {condition} }};"
        );
        let policies = CedarPolicies::from_sources(&[("p.cedar", source.as_str())]).unwrap();
        let denied = decide(&policies, &alice, Action::Query(target.clone()));
        assert_eq!(denied.effect, Effect::Deny, "{condition}: {denied:?}");
        let allowed = decide(&policies, &alice, Action::Query(harmless.clone()));
        assert!(allowed.is_allowed(), "{condition}: {allowed:?}");
    }
}

#[test]
fn a_statement_compared_whole_is_built_whole() {
    // Equal only to the whole record: a context holding only the fields the
    // policy names (none, through `.`) would never be equal to it.
    let source = r#"
        permit (principal, action, resource);
        forbid (principal, action == Action::"query", resource) when {
          context.statement == {
            kind: "select", kinds: ["select"], command: "SELECT", tables: ["t"],
            functions: ["now"], has_where: true, writes: false, settings: ["role"],
            text: "select now() from t"
          }
        };"#;
    let policies = CedarPolicies::from_sources(&[("p.cedar", source)]).unwrap();
    let mut exact = statement(StatementKind::Select, "SELECT", true);
    exact.functions = vec!["now".into()];
    exact.settings = vec!["role".into()];
    exact.text = "select now() from t".into();
    let alice = principal("alice@example.com", &["eng"]);
    let denied = decide(&policies, &alice, Action::Query(exact.clone()));
    assert_eq!(denied.effect, Effect::Deny, "{denied:?}");
    exact.text = "select now() from t where true".into();
    let allowed = decide(&policies, &alice, Action::Query(exact));
    assert!(allowed.is_allowed(), "{allowed:?}");
}

#[test]
fn each_context_attribute_a_policy_reads_decides() {
    use portcullis_core::{Command, Forward, Grant, SftpOp};
    let alice = principal("alice@example.com", &["eng"]);
    let target = demo();
    let grant = Grant {
        id: 7,
        reason: "INC-1".into(),
        until: i64::MAX,
    };
    let rm = Command {
        program: "/bin/rm".into(),
        wrappers: vec!["sudo".into()],
        ..command("rm", &["-rf", "/"])
    };
    let ls = command("ls", &[]);
    let forward = |port| {
        Action::Forward(Forward {
            direction: "local".into(),
            host: "db".into(),
            port,
        })
    };
    let sftp = |path: &str| {
        Action::Sftp(SftpOp {
            operation: "write".into(),
            path: path.into(),
            to: None,
        })
    };
    let unmask = |rule: &str| Action::Unmask { rule: rule.into() };
    let actions = [
        Action::Connect,
        unmask("pii"),
        unmask("cards"),
        forward(22),
        forward(5432),
        sftp("/etc/passwd"),
        sftp("/tmp/x"),
        Action::Exec(rm),
        Action::Exec(ls),
    ];
    let [connect, pii, cards, ssh, pg, etc, tmp, rm, ls] = &actions;
    let request = |action| Request {
        principal: &alice,
        target: &target,
        action,
        client_addr: "10.0.0.1".parse().ok(),
        grant: None,
        reason: None,
    };
    // The forbidding condition, a request it forbids, and one it does not.
    let cases = [
        (
            "context.client_ip.isLoopback()",
            Request {
                client_addr: "127.0.0.1".parse().ok(),
                ..request(connect)
            },
            request(connect),
        ),
        (
            "context has grant && context.grant.reason == \"INC-1\"",
            Request {
                grant: Some(&grant),
                ..request(connect)
            },
            request(connect),
        ),
        (
            "context has reason && context.reason like \"*prod*\"",
            Request {
                reason: Some("fixing prod"),
                ..request(connect)
            },
            Request {
                reason: Some("reading"),
                ..request(connect)
            },
        ),
        (
            "context has rule && context.rule == \"pii\"",
            request(pii),
            request(cards),
        ),
        (
            "context has forward && context.forward.port == 22",
            request(ssh),
            request(pg),
        ),
        (
            "context has sftp && context.sftp.path like \"/etc/*\"",
            request(etc),
            request(tmp),
        ),
        (
            "context has command && context.command.wrappers.contains(\"sudo\")",
            request(rm),
            request(ls),
        ),
    ];
    for (condition, forbidden, allowed) in cases {
        let source = format!(
            "permit (principal, action, resource);\n\
             forbid (principal, action, resource) when {{ {condition} }};"
        );
        let policies = CedarPolicies::from_sources(&[("p.cedar", source.as_str())]).unwrap();
        let denied = policies.decide(&forbidden);
        assert_eq!(denied.effect, Effect::Deny, "{condition}: {denied:?}");
        let decided = policies.decide(&allowed);
        assert!(decided.is_allowed(), "{condition}: {decided:?}");
    }
}

#[test]
fn the_rego_input_is_the_documented_document() {
    use portcullis_core::Grant;
    let alice = principal("alice@example.com", &["eng"]);
    let target = demo();
    let mut delete = statement(StatementKind::Delete, "SELECT", false);
    delete.kinds = vec![StatementKind::Delete, StatementKind::Select];
    delete.tables = vec!["orders".into()];
    delete.text = "with d as (delete from orders returning *) select * from d".into();
    let query = Action::Query(delete);
    let grant = Grant {
        id: 7,
        reason: "INC-1".into(),
        until: 1_900_000_000,
    };
    let request = Request {
        principal: &alice,
        target: &target,
        action: &query,
        client_addr: "10.1.2.3".parse().ok(),
        grant: Some(&grant),
        reason: Some("cleanup"),
    };
    let expected = serde_json::json!({
        "principal": { "id": "alice@example.com", "subject": "alice@example.com",
                       "email": "alice@example.com", "groups": ["eng"], "issuer": "test" },
        "target": { "name": "demo", "kind": "postgres", "labels": { "env": "dev" } },
        "action": "query",
        "context": {
            "client_ip": "10.1.2.3",
            "grant": { "id": 7, "reason": "INC-1", "until": 1_900_000_000 },
            "reason": "cleanup",
            "statement": { "kind": "delete", "kinds": ["delete", "select"], "command": "SELECT",
                           "tables": ["orders"], "functions": [], "has_where": false,
                           "writes": true, "settings": [],
                           "text": "with d as (delete from orders returning *) select * from d" }
        }
    });
    assert_eq!(crate::rego::input(&request), regorus::Value::from(expected));

    let mut nobody = principal("svc", &[]);
    nobody.email = None;
    let ls = Action::Exec(command("ls", &["-l"]));
    let request = Request {
        principal: &nobody,
        target: &target,
        action: &ls,
        client_addr: None,
        grant: None,
        reason: None,
    };
    let expected = serde_json::json!({
        "principal": { "id": "svc", "subject": "svc", "email": null, "groups": [], "issuer": "test" },
        "target": { "name": "demo", "kind": "postgres", "labels": { "env": "dev" } },
        "action": "exec",
        "context": {
            "client_ip": "0.0.0.0",
            "command": { "program": "ls", "name": "ls", "args": ["-l"], "text": "ls -l",
                         "line": "ls -l", "wrappers": [], "dynamic": false, "redirects": [] }
        }
    });
    assert_eq!(crate::rego::input(&request), regorus::Value::from(expected));
}

#[test]
fn cutting_policies_by_scope_decides_as_the_whole_set() {
    let source = r#"
        @id("p-any") permit (principal, action == Action::"unmask", resource);
        @id("p-user") permit (principal == User::"alice@example.com", action == Action::"query", resource);
        @id("p-in-user") permit (principal in User::"bob@example.com", action, resource == Target::"demo");
        @id("p-group") permit (principal in Group::"eng", action == Action::"connect", resource in Target::"demo");
        @id("p-is") permit (principal is User, action == Action::"exec", resource is Target)
          when { context.command.name == "ls" };
        @id("p-is-in") permit (principal is User in Group::"ops", action, resource is Target in Target::"other");
        @id("p-shell") permit (principal in Group::"eng", action == Action::"shell", resource);
        @id("f-group") @reason("contractors stay off demo")
        forbid (principal in Group::"contractors", action, resource == Target::"demo");
        @id("f-user") @approval("dba") @reason("carol's queries wait for a DBA")
        forbid (principal == User::"carol@example.com", action == Action::"query", resource);
        @id("f-target") @reason("no shells on other")
        forbid (principal, action == Action::"shell", resource == Target::"other");
        @id("f-is-in") @reason("ops do not connect to demo")
        forbid (principal is User in Group::"ops", action == Action::"connect", resource is Target in Target::"demo");
    "#;
    let sliced = CedarPolicies::from_sources(&[("p.cedar", source)]).unwrap();
    let whole = CedarPolicies::from_sources(&[("p.cedar", source)])
        .unwrap()
        .unsliced();
    let people = [
        principal("alice@example.com", &["eng"]),
        principal("bob@example.com", &["contractors"]),
        principal("carol@example.com", &["ops", "eng"]),
        principal("dave@example.com", &[]),
    ];
    let targets = [
        demo(),
        Target {
            name: "other".into(),
            kind: TargetKind::Ssh,
            labels: BTreeMap::new(),
        },
    ];
    let actions = [
        Action::Connect,
        Action::Query(statement(StatementKind::Select, "SELECT", true)),
        Action::Exec(command("ls", &[])),
        Action::Shell,
        Action::Unmask { rule: "pii".into() },
    ];
    let mut effects = std::collections::BTreeSet::new();
    for person in &people {
        for target in &targets {
            for action in &actions {
                let request = Request {
                    principal: person,
                    target,
                    action,
                    client_addr: "127.0.0.1".parse().ok(),
                    grant: None,
                    reason: None,
                };
                let decided = sliced.decide(&request);
                assert_eq!(
                    decided,
                    whole.decide(&request),
                    "{} {} {}",
                    person.id,
                    target.name,
                    action.name()
                );
                effects.insert(format!("{:?}", decided.effect));
            }
        }
    }
    // The table reaches every outcome, so agreeing means something.
    assert_eq!(effects.len(), 3, "{effects:?}");
}

#[test]
fn a_scope_says_which_principals_and_targets_it_can_match() {
    let source = r#"
        @id("a") permit (principal in Group::"eng", action, resource == Target::"demo");
        @id("b") permit (principal == User::"alice@example.com", action, resource);
        @id("c") permit (principal is User in Group::"ops", action, resource is Target in Target::"other");
    "#;
    let policies = CedarPolicies::from_sources(&[("p.cedar", source)]).unwrap();
    let scoped = policies.scoped("connect");
    let kept = |p: &Principal, target: &str| -> Vec<String> {
        let target = Target {
            name: target.into(),
            kind: TargetKind::Postgres,
            labels: BTreeMap::new(),
        };
        let mut ids = scoped.cut(p, &target).ids();
        ids.sort();
        ids
    };
    let alice = principal("alice@example.com", &["eng"]);
    let olga = principal("olga@example.com", &["ops"]);
    assert_eq!(kept(&alice, "demo"), ["a", "b"]);
    assert_eq!(kept(&alice, "other"), ["b"]);
    assert_eq!(kept(&olga, "other"), ["c"]);
    assert!(kept(&olga, "demo").is_empty());
}

#[test]
fn a_kept_context_is_found_only_by_all_it_holds() {
    use portcullis_core::Grant;
    // Denied only when every attribute is exactly as below: a context kept
    // for that request and found again for one that differs in a single
    // field would deny it too.
    let source = r#"
        permit (principal, action, resource);
        forbid (principal, action == Action::"query", resource) when {
          context.client_ip == ip("10.0.0.1") &&
          context has grant && context.grant == { id: 7, reason: "INC-1", until: 99 } &&
          context has reason && context.reason == "why" &&
          context.statement == {
            kind: "delete", kinds: ["ddl", "delete"], command: "DELETE", tables: ["a", "bc"],
            functions: ["f"], has_where: true, writes: true, settings: ["role"],
            text: "delete from a"
          }
        };"#;
    let policies = CedarPolicies::from_sources(&[("p.cedar", source)]).unwrap();
    let alice = principal("alice@example.com", &["eng"]);
    let target = demo();
    let mut exact = statement(StatementKind::Delete, "DELETE", true);
    exact.kinds = vec![StatementKind::Ddl, StatementKind::Delete];
    exact.tables = vec!["a".into(), "bc".into()];
    exact.functions = vec!["f".into()];
    exact.settings = vec!["role".into()];
    exact.text = "delete from a".into();
    let grant = Grant {
        id: 7,
        reason: "INC-1".into(),
        until: 99,
    };
    let decide_on = |policies: &CedarPolicies,
                     statement: &StatementInfo,
                     ip: &str,
                     grant: Option<&Grant>,
                     reason: Option<&str>| {
        policies
            .decide(&Request {
                principal: &alice,
                target: &target,
                action: &Action::Query(statement.clone()),
                client_addr: ip.parse().ok(),
                grant,
                reason,
            })
            .effect
    };
    let denied = decide_on(&policies, &exact, "10.0.0.1", Some(&grant), Some("why"));
    assert_eq!(denied, Effect::Deny);

    let other_grant = |change: fn(&mut Grant)| {
        let mut grant = grant.clone();
        change(&mut grant);
        grant
    };
    let grants = [
        other_grant(|g| g.id = 8),
        other_grant(|g| g.reason = "INC-2".into()),
        other_grant(|g| g.until = 100),
    ];
    let mut requests: Vec<(StatementInfo, &str, Option<&Grant>, Option<&str>)> = vec![
        (exact.clone(), "10.0.0.2", Some(&grant), Some("why")),
        (exact.clone(), "10.0.0.10", Some(&grant), Some("why")),
        (exact.clone(), "10.0.0.1", None, Some("why")),
        (exact.clone(), "10.0.0.1", Some(&grant), None),
        (exact.clone(), "10.0.0.1", Some(&grant), Some("why not")),
    ];
    for grant in &grants {
        requests.push((exact.clone(), "10.0.0.1", Some(grant), Some("why")));
    }
    let statements: [fn(&mut StatementInfo); 9] = [
        |s| s.kind = StatementKind::Ddl,
        |s| s.kinds = vec![StatementKind::Delete],
        |s| s.command = "DELETE ".into(),
        // The same letters, split another way.
        |s| s.tables = vec!["ab".into(), "c".into()],
        |s| s.functions = vec![],
        |s| s.has_where = false,
        |s| s.writes = false,
        |s| s.settings = vec!["rol".into(), "e".into()],
        |s| s.text = "delete from b".into(),
    ];
    for change in statements {
        let mut statement = exact.clone();
        change(&mut statement);
        requests.push((statement, "10.0.0.1", Some(&grant), Some("why")));
    }
    for (statement, ip, grant, reason) in &requests {
        // Twice: the second is decided with the context kept by the first.
        for _ in 0..2 {
            let effect = decide_on(&policies, statement, ip, *grant, *reason);
            assert_eq!(
                effect,
                Effect::Allow,
                "{statement:?} {ip} {grant:?} {reason:?}"
            );
        }
    }
    let again = decide_on(&policies, &exact, "10.0.0.1", Some(&grant), Some("why"));
    assert_eq!(again, Effect::Deny);
}

#[test]
fn a_kept_command_context_is_found_only_by_all_it_holds() {
    let source = r#"
        permit (principal, action, resource);
        forbid (principal, action == Action::"exec", resource) when {
          context.command == {
            program: "/bin/rm", name: "rm", args: ["-rf", "/"], text: "rm -rf /",
            line: "sudo rm -rf /", wrappers: ["sudo"], dynamic: false, redirects: ["/dev/null"]
          }
        };"#;
    let policies = CedarPolicies::from_sources(&[("p.cedar", source)]).unwrap();
    let alice = principal("alice@example.com", &["eng"]);
    let exact = portcullis_core::Command {
        program: "/bin/rm".into(),
        line: "sudo rm -rf /".into(),
        wrappers: vec!["sudo".into()],
        redirects: vec!["/dev/null".into()],
        ..command("rm", &["-rf", "/"])
    };
    assert_eq!(
        decide(&policies, &alice, Action::Exec(exact.clone())).effect,
        Effect::Deny
    );
    let changes: [fn(&mut portcullis_core::Command); 8] = [
        |c| c.program = "rm".into(),
        |c| c.name = "/bin/rm".into(),
        |c| c.args = vec!["-r".into(), "f/".into()],
        |c| c.text = "rm -rf  /".into(),
        |c| c.line = "rm -rf /".into(),
        |c| c.wrappers = vec![],
        |c| c.dynamic = true,
        |c| c.redirects = vec!["/tmp/x".into()],
    ];
    for change in changes {
        let mut command = exact.clone();
        change(&mut command);
        for _ in 0..2 {
            let decision = decide(&policies, &alice, Action::Exec(command.clone()));
            assert!(decision.is_allowed(), "{command:?}: {decision:?}");
        }
    }
}

/// Every decision of a test build is also made by Cedar's own `Authorizer`
/// and compared (`Scoped::check`): a difference is a denial that says so.
/// Here over the quickstart's policies, people of every group and none, and
/// statements, commands and SFTP requests of each kind.
#[test]
fn decisions_are_cedars_own() {
    let policies = quickstart();
    let people = [
        principal("alice@example.com", &["eng"]),
        principal("dana@example.com", &["dba", "eng"]),
        principal("olga@example.com", &["ops", "pii-readers"]),
        principal("mallory@example.com", &[]),
    ];
    let kinds = [
        StatementKind::Select,
        StatementKind::Insert,
        StatementKind::Update,
        StatementKind::Delete,
        StatementKind::Merge,
        StatementKind::Ddl,
        StatementKind::Dcl,
        StatementKind::Copy,
        StatementKind::Call,
        StatementKind::Set,
        StatementKind::Transaction,
        StatementKind::Utility,
        StatementKind::Other,
    ];
    let commands = [
        "SELECT",
        "DROP DATABASE",
        "COPY TO PROGRAM",
        "ALTER SYSTEM",
        "CREATE ROLE",
    ];
    let mut actions = vec![
        Action::Connect,
        Action::Shell,
        Action::Unmask { rule: "pii".into() },
    ];
    for kind in kinds {
        for command in commands {
            for has_where in [true, false] {
                actions.push(Action::Query(statement(kind, command, has_where)));
            }
        }
    }
    for (name, args) in [
        ("ls", &["-la"][..]),
        ("systemctl", &["restart", "app"]),
        ("systemctl", &["status", "app"]),
        ("rm", &["-rf", "/"]),
        ("date", &["-s", "now"]),
    ] {
        actions.push(Action::Exec(command(name, args)));
    }
    let mut seen = std::collections::BTreeSet::new();
    for person in &people {
        for action in &actions {
            for target in [
                demo(),
                Target {
                    name: "demo-ssh".into(),
                    kind: TargetKind::Ssh,
                    labels: BTreeMap::new(),
                },
            ] {
                let decision = policies.decide(&Request {
                    principal: person,
                    target: &target,
                    action,
                    client_addr: "127.0.0.1".parse().ok(),
                    grant: None,
                    reason: None,
                });
                assert!(
                    !decision.reason.contains("Cedar's own"),
                    "{} {action:?}: {}",
                    person.id,
                    decision.reason
                );
                seen.insert(format!("{:?}", decision.effect));
            }
        }
    }
    // The grid reaches every outcome.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

/// A chain of terms needs no bracket and nests a level per term; parts of
/// the parser, the evaluator and Rust's freeing of the policy recurse once
/// per level. Long chains are refused when loaded, with what to do, and
/// never crash the process.
#[test]
fn long_chains_are_refused_when_loaded() {
    let terms = |n: usize| vec![r#"principal.subject == "a""#; n];
    let policy = |condition: String| {
        format!(
            r#"permit (principal, action == Action::"connect", resource) when {{ {condition} }};"#
        )
    };
    let load = |text: String| CedarPolicies::from_sources(&[("p.cedar", &text)]);
    // 150 terms: parsed, and refused for its depth.
    let err = load(policy(terms(150).join(" || ")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.cedar"), "{err}");
    assert!(err.contains("levels deep; at most 100"), "{err}");
    assert!(err.contains("group terms in brackets"), "{err}");
    // Grouped in brackets, the same 150 terms load and decide.
    let grouped: Vec<String> = terms(150)
        .chunks(15)
        .map(|group| format!("({})", group.join(" || ")))
        .collect();
    let policies = load(policy(grouped.join(" || "))).unwrap();
    assert!(decide(&policies, &principal("a", &[]), Action::Connect).is_allowed());
    // 5000 terms, or 101 `if`s: refused before any parser sees them.
    let err = load(policy(terms(5000).join(" || ")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 2000 are read"), "{err}");
    let ifs = r#"if principal.subject == "a" then false else "#.repeat(101);
    let err = load(policy(format!("{ifs} true"))).unwrap_err().to_string();
    assert!(
        err.contains("101 `if`s") && err.contains("at most 100"),
        "{err}"
    );
    // The longest chains the count lets through are parsed, refused for
    // their depth, and freed, on a test's small stack; of literals alone,
    // Cedar folds them into one.
    let err = load(policy(vec!["principal has email"; 999].join(" || ")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("levels deep"), "{err}");
    let policies = load(policy(vec!["true"; 1999].join(" || "))).unwrap();
    assert!(decide(&policies, &principal("a", &[]), Action::Connect).is_allowed());
    let ifs = "if principal has email then false else ".repeat(100);
    let err = load(policy(format!("{ifs} true"))).unwrap_err().to_string();
    assert!(err.contains("levels deep"), "{err}");
    // Each policy is counted on its own.
    let many = vec![policy(terms(40).join(" || ")); 100].join("\n");
    assert!(load(many).is_ok());
}

/// The same for Rego: a chain of a few hundred terms overflows regorus's
/// stack when parsed or evaluated; each rule is counted on its own.
#[test]
fn long_rego_chains_are_refused_when_loaded() {
    let rule = |name: &str, terms: usize| {
        let sum = vec!["1"; terms].join(" +\n\t\t");
        format!(
            "permit contains \"{name}\" if {{\n\tinput.action == \"connect\"\n\tx := ({sum})\n\tx > 0\n}}\n"
        )
    };
    let module =
        |rules: &[String]| format!("package portcullis\nimport rego.v1\n{}", rules.concat());
    let err = RegoPolicies::from_sources(&[("p.rego", &module(&[rule("a", 5000)]))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p.rego") && err.contains("a statement holds 5000 operators; at most 300"),
        "{err}"
    );
    // Many rules of 200 terms each load, and decide.
    let rules: Vec<String> = (0..10).map(|n| rule(&format!("r{n}"), 200)).collect();
    let policies = RegoPolicies::from_sources(&[("p.rego", &module(&rules))]).unwrap();
    let target = demo();
    let decision = policies.decide(&Request {
        principal: &principal("a", &[]),
        target: &target,
        action: &Action::Connect,
        client_addr: None,
        grant: None,
        reason: None,
    });
    assert_eq!(decision.effect, Effect::Allow, "{decision:?}");
}

/// Comments and strings are skipped by the text checks, whatever they
/// hold, and what they hold counts for nothing: a quote or a bracket in a
/// comment does not hide the chain after it.
#[test]
fn comments_and_strings_neither_hide_nor_count() {
    let cedar = |text: String| CedarPolicies::from_sources(&[("p.cedar", &text)]).map(|_| ());
    let rego = |text: String| RegoPolicies::from_sources(&[("p.rego", &text)]).map(|_| ());
    let refused = |result: Result<(), PolicyError>, what: &str| {
        let err = result.unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    };
    let permit = r#"permit (principal, action == Action::"connect", resource) when"#;
    refused(
        cedar(format!(
            "// a \"quote\n{permit} {{ {}true{} }};",
            "(".repeat(150),
            ")".repeat(150)
        )),
        "brackets nest 151 deep",
    );
    refused(
        cedar(format!(
            "{permit} {{\n{}true\n{}}};",
            "( // )\n".repeat(300),
            ") // (\n".repeat(300)
        )),
        "brackets nest 301 deep",
    );
    let chain = vec!["context.statement.writes"; 5000].join(" ||\n// } ; {\n");
    refused(cedar(format!("{permit} {{ {chain} }};")), "operators");
    let index = r#"context["a"]"#.repeat(12000);
    refused(cedar(format!("{permit} {{ {index} }};")), "operators");
    // A comment header that says `if` and `;` a hundred times is no policy.
    let header = "// if this, if that; (or {not})\n".repeat(120);
    cedar(format!("{header}{permit} {{ true }};")).unwrap();

    let module = |before: &str, body: &str| {
        format!("package portcullis\nimport rego.v1\n{before}\npermit contains \"a\" if {{\n\tinput.action == \"connect\"\n\t{body}\n}}\n")
    };
    let sum = vec!["1"; 600].join(" +\n\t\t");
    refused(
        rego(module("# a \"quote", &format!("x := ({sum})"))),
        "operators",
    );
    refused(
        rego(module("q := `\"`", &format!("x := ({sum})"))),
        "operators",
    );
    let union = vec!["{1}"; 1000].join(" |\n");
    refused(rego(module(&format!("u := {union}"), "true")), "operators");
    let header = "# if this, then that: x.y.z + 1 | 2 & 3\n".repeat(100);
    rego(module(&header, "true")).unwrap();
}

/// Found in attack: a one-letter typo in a mask rule's `targets` returned
/// its columns in clear, with nothing said.
#[test]
fn rules_for_targets_not_configured_are_named() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/policies");
    let policies = Policies::load_dir(&dir, Engine::Cedar).unwrap();
    let configured = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        policies.unconfigured_targets(&configured(&["demo", "demo-ssh"])),
        Vec::<String>::new()
    );
    let found = policies.unconfigured_targets(&configured(&["dmeo", "demo-ssh"]));
    assert!(
        found.iter().any(|line| line.starts_with("mask rule `")
            && line.contains("masks.toml:")
            && line.contains("`targets = [\"demo\"]`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|line| line.contains("names target `demo`, which is not configured")),
        "{found:#?}"
    );
    // Found in attack: a target named in a condition was not looked at.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("in-condition")
forbid (principal, action, resource) when { resource in [Target::"demo", Target::"dmeo"] };
@id("in-scope")
permit (principal, action, resource in Target::"demo-ssh");"#,
    )
    .unwrap();
    let policies = Policies::load_dir(dir.path(), Engine::Cedar).unwrap();
    assert_eq!(
        policies.unconfigured_targets(&configured(&["demo", "demo-ssh"])),
        ["policy `in-condition` names target `dmeo`, which is not configured: nothing here is that target"]
    );
    assert!(
        !found.iter().any(|line| line.contains("demo-ssh")),
        "{found:#?}"
    );
}

/// Found in attack: a direction change inside a string made a reviewer see
/// it closed, with a comment after it (Trojan Source).
#[test]
fn hidden_characters_in_rule_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("guard.cedar"),
        "@id(\"no-copy-program\")\nforbid (principal, action, resource)\n\
         when { context.statement.command like \"COPY * PROGRAM\u{202e} \u{2066}// legacy\u{2069} \u{2066}\" };\n",
    )
    .unwrap();
    let err = Policies::load_dir(dir.path(), Engine::Cedar)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("guard.cedar:3:") && err.contains("U+202E"),
        "{err}"
    );
    // Found in attack round 35c: breaks that draw a comment's rest on a
    // line of its own, zero-width characters in a pattern, escapes.
    for hidden in [
        '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}', '\u{200b}', '\u{ad}', '\u{2060}',
        '\u{feff}', '\u{7f}', '\u{1b}',
    ] {
        std::fs::write(
            dir.path().join("guard.cedar"),
            format!("// legacy{hidden}forbid (principal, action, resource);\npermit (principal, action, resource);\n"),
        )
        .unwrap();
        let err = Policies::load_dir(dir.path(), Engine::Cedar)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("guard.cedar:1:10:")
                && err.contains(&format!("U+{:04X}", u32::from(hidden))),
            "{hidden:?}: {err}"
        );
    }
}
