use super::*;
use crate::rules::ColumnMeta;

pub(crate) fn rules(text: &str) -> MaskRules {
    MaskRules::from_files(&[("t.masks.toml".to_owned(), text.to_owned())]).unwrap()
}

/// A masker with every rule of `text` in force.
pub(crate) fn masker(text: &str) -> Masker {
    let rules = rules(text);
    let ids: Vec<&str> = rules.rules().iter().map(|r| r.id.as_str()).collect();
    Masker::new(&rules, &ids, HashKey::new([9; 32]))
}

fn column<'a>(table: &'a str, name: &'a str, type_name: &'a str) -> ColumnMeta<'a> {
    ColumnMeta {
        schema: "public",
        table,
        column: name,
        type_name,
    }
}

fn text(masked: Masked) -> String {
    match masked {
        Masked::Value(bytes) => String::from_utf8(bytes).unwrap(),
        Masked::Null => "NULL".to_owned(),
    }
}

const RULES: &str = r#"
[[rule]]
id = "emails"
columns = ["*.email"]
strategy = "partial"

[[rule]]
id = "secrets"
columns = ["secret*", "customers.email"]
strategy = "null"

[[rule]]
id = "card-hash"
columns = ["cards.number"]
strategy = "hash"

[[rule]]
id = "notes"
columns = ["notes", "payload"]
detectors = ["email", "payment_card"]
json_keys = ["ssn"]
strategy = "redact"

[[rule]]
id = "everywhere"
detectors = ["payment_card", "us_ssn"]
strategy = "partial"
"#;

#[test]
fn masker_is_send_sync_and_cheap_to_share() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Masker>();
    send_sync::<MaskRules>();
    send_sync::<ContentPlan>();
}

#[test]
fn column_rules_first_in_file_order() {
    let masker = masker(RULES);
    assert!(masker.covers_columns() && masker.has_content_rules() && !masker.is_empty());
    let rule = masker
        .column_rule(&column("customers", "email", "text"))
        .unwrap();
    assert_eq!(masker.rule_id(rule), "emails");
    let rule = masker
        .column_rule(&column("vault", "secret_key", "text"))
        .unwrap();
    assert_eq!(masker.rule_id(rule), "secrets");
    assert_eq!(
        masker.column_rule(&column("customers", "name", "text")),
        None
    );
    // Content rules are not column rules.
    assert_eq!(masker.column_rule(&column("t", "notes", "text")), None);
    assert_eq!(
        masker.any_column_rule().map(|r| masker.rule_id(r)),
        Some("emails")
    );
    assert_eq!(masker.rule_id(RuleIdx(99)), "unknown");
}

#[test]
fn only_rules_in_force_apply() {
    let rules = rules(RULES);
    let masker = Masker::new(&rules, &["secrets", "no-such-rule"], HashKey::new([0; 32]));
    let rule = masker
        .column_rule(&column("customers", "email", "text"))
        .unwrap();
    assert_eq!(masker.rule_id(rule), "secrets");
    assert_eq!(rule, RuleIdx(0));
    assert!(!masker.has_content_rules());
    assert!(masker.content_plan(None).is_empty());

    let none = Masker::new(&rules, &[], HashKey::new([0; 32]));
    assert!(none.is_empty() && !none.covers_columns());
    assert_eq!(none.any_column_rule(), None);
}

#[test]
fn mask_whole_counts_and_applies_the_strategy() {
    let masker = masker(RULES);
    let mut counts = MaskCounts::default();
    let emails = masker
        .column_rule(&column("leads", "email", "text"))
        .unwrap();
    let secrets = masker.column_rule(&column("t", "secret", "text")).unwrap();
    let cards = masker
        .column_rule(&column("cards", "number", "text"))
        .unwrap();
    assert_eq!(
        text(masker.mask_whole(emails, b"jane@example.com", false, &mut counts)),
        "j***@example.com"
    );
    assert_eq!(
        text(masker.mask_whole(emails, b"jane@example.com", true, &mut counts)),
        "****"
    );
    assert_eq!(
        masker.mask_whole(secrets, b"x", false, &mut counts),
        Masked::Null
    );
    let hashed = text(masker.mask_whole(cards, b"4242424242424242", false, &mut counts));
    assert!(hashed.starts_with("h:"), "{hashed}");
    // Derived values are redacted, not hashed: no hash oracle.
    assert_eq!(
        text(masker.mask_whole(cards, b"4242424242424242", true, &mut counts)),
        "****"
    );
    assert_eq!(counts.get("emails", "column"), 2);
    assert_eq!(counts.get("card-hash", "column"), 2);
    assert_eq!(counts.total(), 5);
    // An index the masker did not give still masks.
    assert_eq!(
        text(masker.mask_whole(RuleIdx(42), b"secret", false, &mut counts)),
        "****"
    );
}

#[test]
fn content_plans_follow_columns() {
    let masker = masker(RULES);
    let notes = masker.content_plan(Some(&column("t", "notes", "text")));
    let other = masker.content_plan(Some(&column("t", "comment", "text")));
    let unknown = masker.content_plan(None);
    assert_eq!(notes.detectors.len(), 3);
    assert_eq!(notes.json_rules.len(), 1);
    assert_eq!(other.detectors.len(), 2);
    assert!(other.json_rules.is_empty());
    assert_eq!(unknown.detectors.len(), 3);

    let mut counts = MaskCounts::default();
    let value = b"card 4242 4242 4242 4242, ssn 123-45-6789, mail jane@example.com";
    let masked = masker
        .mask_content(&notes, value, false, &mut counts)
        .unwrap()
        .unwrap();
    // `notes` comes first, so its `redact` masks the card and the email;
    // the SSN is only `everywhere`'s.
    assert_eq!(
        String::from_utf8(masked).unwrap(),
        "card ****, ssn ***-**-6789, mail ****"
    );
    let masked = masker
        .mask_content(&other, value, false, &mut counts)
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(masked).unwrap(),
        "card **** **** **** 4242, ssn ***-**-6789, mail jane@example.com"
    );
    assert_eq!(counts.get("notes", "payment_card"), 1);
    assert_eq!(counts.get("notes", "email"), 1);
    assert_eq!(counts.get("everywhere", "us_ssn"), 2);
    assert_eq!(counts.get("everywhere", "payment_card"), 1);
}

#[test]
fn clean_values_are_left_alone() {
    let masker = masker(RULES);
    let plan = masker.content_plan(None);
    let mut counts = MaskCounts::default();
    let clean = b"order 12345 shipped on 2024-01-15, total 99.90 EUR";
    assert_eq!(
        masker
            .mask_content(&plan, clean, false, &mut counts)
            .unwrap(),
        None
    );
    assert_eq!(
        masker
            .mask_content(
                &ContentPlan::default(),
                b"4242424242424242",
                false,
                &mut counts
            )
            .unwrap(),
        None
    );
    assert!(counts.is_empty());
}

#[test]
fn a_plan_from_another_masker_is_an_error() {
    let big = masker(RULES);
    let small = Masker::new(&rules(RULES), &["everywhere"], HashKey::new([0; 32]));
    let plan = big.content_plan(None);
    let result = small.mask_content(
        &plan,
        b"4242424242424242",
        false,
        &mut MaskCounts::default(),
    );
    assert!(
        matches!(result, Err(MaskError::UnknownRule { .. })),
        "{result:?}"
    );
}

#[test]
fn messages_are_masked_with_every_content_rule() {
    let masker = masker(RULES);
    let mut counts = MaskCounts::default();
    let message = r#"duplicate key value violates unique constraint: Key (email)=(jane@example.com) already exists"#;
    assert_eq!(
        masker.mask_message(message, &mut counts).unwrap(),
        "duplicate key value violates unique constraint: Key (email)=(****) already exists"
    );
    assert_eq!(
        masker.mask_message("relation \"x\" does not exist", &mut counts),
        None
    );
    assert_eq!(counts.total(), 1);
}

#[test]
fn custom_detectors_mask_with_their_rule() {
    let masker = masker(
        r#"
[[rule]]
id = "staff"
detectors = ["employee_id"]
strategy = "hash"

[[detector]]
name = "employee_id"
pattern = 'EMP-[0-9]{6}'
"#,
    );
    let plan = masker.content_plan(None);
    let mut counts = MaskCounts::default();
    let once = masker
        .mask_content(&plan, b"by EMP-123456.", false, &mut counts)
        .unwrap()
        .unwrap();
    let twice = masker
        .mask_content(&plan, b"EMP-123456", false, &mut counts)
        .unwrap()
        .unwrap();
    let once = String::from_utf8(once).unwrap();
    assert!(once.starts_with("by h:") && once.ends_with('.'), "{once}");
    assert_eq!(once.get(3..21), std::str::from_utf8(&twice).ok());
    assert_eq!(counts.get("staff", "employee_id"), 2);
}
