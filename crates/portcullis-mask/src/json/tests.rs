use crate::masker::tests::masker;
use crate::{MaskCounts, MaskError, Masker};

const RULES: &str = r#"
[[rule]]
id = "by-key"
json_keys = ["ssn", "card*"]
strategy = "redact"

[[rule]]
id = "found"
detectors = ["email", "payment_card"]
strategy = "partial"
"#;

fn mask_with(masker: &Masker, json: &str) -> Result<Option<String>, MaskError> {
    let plan = masker.content_plan(None);
    let mut counts = MaskCounts::default();
    let masked = masker.mask_content(&plan, json.as_bytes(), true, &mut counts)?;
    Ok(masked.map(|bytes| String::from_utf8(bytes).unwrap()))
}

fn mask(json: &str) -> String {
    let masked = mask_with(&masker(RULES), json)
        .unwrap()
        .unwrap_or_else(|| json.to_owned());
    // Whatever it masked, the result is still JSON.
    serde_json::from_str::<serde_json::Value>(&masked).unwrap();
    masked
}

#[test]
fn masks_values_under_keys_whole() {
    assert_eq!(
        mask(r#"{"name":"Jane","ssn":"123-45-6789"}"#),
        r#"{"name":"Jane","ssn":"****"}"#
    );
    assert_eq!(mask(r#"{"SSN": 123456789}"#), r#"{"SSN": "****"}"#);
    assert_eq!(
        mask(r#"{"card_number":{"pan":"4242","exp":"12/26"}}"#),
        r#"{"card_number":"****"}"#
    );
    assert_eq!(
        mask(r#"{"cards":[1,2,3],"ok":true}"#),
        r#"{"cards":"****","ok":true}"#
    );
    assert_eq!(
        mask(r#"{"ssn":null,"card":false}"#),
        r#"{"ssn":null,"card":"****"}"#
    );
}

#[test]
fn masks_nested_keys_and_array_values() {
    assert_eq!(
        mask(r#"{"a":{"b":[{"ssn":"1"},{"x":"jane@example.com"}]},"c":["4242424242424242", 7]}"#),
        r#"{"a":{"b":[{"ssn":"****"},{"x":"j***@example.com"}]},"c":["************4242", 7]}"#
    );
}

#[test]
fn masks_numbers_holding_a_card_as_strings() {
    assert_eq!(
        mask(r#"{"n":4242424242424242,"m":42}"#),
        r#"{"n":"************4242","m":42}"#
    );
    assert_eq!(mask("[4242424242424242]"), r#"["************4242"]"#);
}

#[test]
fn keeps_key_order_and_spacing() {
    let json = "{ \"z\" : 1,\n  \"a\" : \"jane@example.com\" ,\"m\":[ 2 , 3 ] }";
    assert_eq!(
        mask(json),
        "{ \"z\" : 1,\n  \"a\" : \"j***@example.com\" ,\"m\":[ 2 , 3 ] }"
    );
    assert_eq!(
        mask_with(&masker(RULES), r#"{"z":1,"a":[true,null,-1.5e3]}"#).unwrap(),
        None
    );
}

#[test]
fn scans_keys_and_escaped_strings() {
    assert_eq!(
        mask(r#"{"jane@example.com":1}"#),
        r#"{"j***@example.com":1}"#
    );
    assert_eq!(
        mask(r#"{"e":"jane\u0040example.com"}"#),
        r#"{"e":"j***@example.com"}"#
    );
    assert_eq!(
        mask(r#"{"e":"say \"hi\" to jane@example.com\n"}"#),
        r#"{"e":"say \"hi\" to j***@example.com\n"}"#
    );
    // Escaped key names are matched decoded.
    assert_eq!(mask(r#"{"s\u0073n":"x"}"#), r#"{"s\u0073n":"****"}"#);
}

#[test]
fn null_and_hash_under_keys() {
    let null = masker("[[rule]]\nid = \"k\"\njson_keys = [\"ssn\"]\nstrategy = \"null\"\n");
    assert_eq!(
        mask_with(&null, r#"{"ssn":{"a":1}}"#).unwrap().unwrap(),
        r#"{"ssn":null}"#
    );
    let hash = masker("[[rule]]\nid = \"k\"\njson_keys = [\"ssn\"]\nstrategy = \"hash\"\n");
    let string = mask_with(&hash, r#"{"ssn":"123"}"#).unwrap().unwrap();
    let number = mask_with(&hash, r#"{"ssn":123}"#).unwrap().unwrap();
    // A string is hashed by its text, so "123" and 123 hash alike.
    assert_eq!(string, number);
    assert!(string.starts_with(r#"{"ssn":"h:"#), "{string}");
}

#[test]
fn counts_keys_and_findings() {
    let masker = masker(RULES);
    let plan = masker.content_plan(None);
    let mut counts = MaskCounts::default();
    let json = br#"{"ssn":"1","card":"2","note":"a@b.io, c@d.io"}"#;
    masker
        .mask_content(&plan, json, true, &mut counts)
        .unwrap()
        .unwrap();
    assert_eq!(counts.get("by-key", "json_key"), 2);
    assert_eq!(counts.get("found", "email"), 2);
}

#[test]
fn invalid_json_with_json_keys_is_an_error() {
    let masker = masker(RULES);
    for invalid in [
        r#"{"ssn":"1""#,
        r#"{"ssn" "1"}"#,
        "{ssn: 1}",
        r#"{"a":01}"#,
        r#"["\x"]"#,
        "",
        "[1] x",
    ] {
        let result = mask_with(&masker, invalid);
        assert!(
            matches!(result, Err(MaskError::InvalidJson { .. })),
            "{invalid}: {result:?}"
        );
    }
}

#[test]
fn invalid_json_without_json_keys_is_scanned_as_text() {
    let masker = masker("[[rule]]\nid = \"f\"\ndetectors = [\"email\"]\nstrategy = \"redact\"\n");
    assert_eq!(
        mask_with(&masker, "not json jane@example.com")
            .unwrap()
            .unwrap(),
        "not json ****"
    );
    assert_eq!(mask_with(&masker, "not json").unwrap(), None);
}

#[test]
fn too_deep_is_an_error() {
    let deep = format!("{}{}", "[".repeat(600), "]".repeat(600));
    let result = mask_with(&masker(RULES), &deep);
    assert!(
        matches!(result, Err(MaskError::JsonTooDeep { .. })),
        "{result:?}"
    );
    let fine = format!("{}\"jane@example.com\"{}", "[".repeat(100), "]".repeat(100));
    assert!(mask_with(&masker(RULES), &fine)
        .unwrap()
        .unwrap()
        .contains("j***@example.com"));
}

#[test]
fn strings_are_reencoded_safely() {
    let masker = masker(
        "[[rule]]\nid = \"k\"\njson_keys = [\"k\"]\nstrategy = \"partial\"\nkeep_last = 1\n",
    );
    // The masked text of an object keeps its quotes, escaped.
    let masked = mask_with(&masker, r#"{"k":{"a":"bcdefgh"}}"#)
        .unwrap()
        .unwrap();
    assert_eq!(masked, r#"{"k":"{\"*\":\"******h\"}"}"#);
    serde_json::from_str::<serde_json::Value>(&masked).unwrap();
}

#[test]
fn anchored_custom_detectors_are_scanned_per_token() {
    // `^...$` matches a whole string value but nowhere in the document text,
    // so the document-wide prefilter must not be used.
    let masker = masker(
        "[[rule]]\nid = \"ids\"\ndetectors = [\"whole_id\"]\nstrategy = \"redact\"\n\n\
         [[detector]]\nname = \"whole_id\"\npattern = '^EMP-[0-9]+$'\n",
    );
    assert_eq!(
        mask_with(&masker, r#"{"id":"EMP-123","x":"EMP-1 "}"#)
            .unwrap()
            .unwrap(),
        r#"{"id":"****","x":"EMP-1 "}"#
    );
}

#[test]
fn json_keys_only_plans_do_not_scan() {
    let masker = masker("[[rule]]\nid = \"k\"\njson_keys = [\"ssn\"]\nstrategy = \"redact\"\n");
    assert_eq!(
        mask_with(&masker, r#"{"mail":"jane@example.com"}"#).unwrap(),
        None
    );
}

#[test]
fn decodes_surrogate_pairs_and_lone_surrogates() {
    // "😀 jane@example.com" with the emoji as a surrogate pair, and a lone
    // surrogate before the address.
    assert_eq!(
        mask(r#"["\ud83d\ude00 jane@example.com"]"#),
        "[\"😀 j***@example.com\"]"
    );
    assert_eq!(
        mask(r#"["\ud83d jane@example.com"]"#),
        "[\"\u{FFFD} j***@example.com\"]"
    );
}
