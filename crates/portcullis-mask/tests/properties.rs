//! Properties of masking that must hold for any input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_mask::{ColumnMeta, HashKey, MaskCounts, MaskRules, Masked, Masker};
use proptest::prelude::*;

const STRATEGIES: [&str; 4] = ["redact", "partial", "hash", "null"];

fn masker(rules: &str) -> Masker {
    let rules = MaskRules::from_files(&[("p.masks.toml".to_owned(), rules.to_owned())]).unwrap();
    let ids: Vec<&str> = rules.rules().iter().map(|rule| rule.id.as_str()).collect();
    Masker::new(&rules, &ids, HashKey::new([3; 32]))
}

fn column_rule_masker(strategy: &str) -> Masker {
    masker(&format!(
        "[[rule]]\nid = \"c\"\ncolumns = [\"secret\"]\nstrategy = \"{strategy}\"\n"
    ))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A card number of 13 to 19 digits with a valid Luhn check digit, written
/// whole or in groups of four separated by spaces or dashes.
fn card_number() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(0u8..10, 12..=18),
        prop::sample::select(vec!["", " ", "-"]),
    )
        .prop_map(|(mut digits, separator)| {
            // The check digit makes the Luhn sum of all digits a multiple of 10.
            let sum: u32 = digits
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &d)| {
                    let d = u32::from(d);
                    if i % 2 == 0 {
                        let doubled = d * 2;
                        if doubled > 9 {
                            doubled - 9
                        } else {
                            doubled
                        }
                    } else {
                        d
                    }
                })
                .sum();
            digits.push(u8::try_from((10 - sum % 10) % 10).unwrap());
            let digits: Vec<String> = digits.iter().map(u8::to_string).collect();
            digits
                .chunks(4)
                .map(|chunk| chunk.concat())
                .collect::<Vec<_>>()
                .join(separator)
        })
}

proptest! {
    /// A value of a column covered by a column rule never comes out whole,
    /// whatever the strategy and whether or not it is derived.
    ///
    /// The bound is five characters: `redact` writes `****`, so a value of up
    /// to four characters (`*`, `**`, `****`) can be a substring of a correct
    /// output. From five on only the 16 hex digits of `hash` could hold a
    /// value by chance (about one in a million for a hex-only value, never
    /// for the rest), which arbitrary strings practically never hit.
    #[test]
    fn a_column_value_never_survives(value in "\\PC{5,40}", derived in any::<bool>()) {
        let column = ColumnMeta { schema: "public", table: "t", column: "secret", type_name: "text" };
        for strategy in STRATEGIES {
            let masker = column_rule_masker(strategy);
            let rule = masker.column_rule(&column).unwrap();
            let mut counts = MaskCounts::default();
            match masker.mask_whole(rule, value.as_bytes(), derived, &mut counts) {
                Masked::Value(masked) => prop_assert!(
                    !contains(&masked, value.as_bytes()),
                    "{strategy}: {value:?} -> {:?}", String::from_utf8_lossy(&masked)
                ),
                Masked::Null => prop_assert_eq!(strategy, "null"),
            }
            prop_assert_eq!(counts.total(), 1);
        }
    }

    /// The same for values that are not UTF-8.
    #[test]
    fn a_column_value_of_any_bytes_never_survives(value in prop::collection::vec(any::<u8>(), 5..40)) {
        let column = ColumnMeta { schema: "public", table: "t", column: "secret", type_name: "bytea" };
        for strategy in STRATEGIES {
            let masker = column_rule_masker(strategy);
            let rule = masker.column_rule(&column).unwrap();
            if let Masked::Value(masked) = masker.mask_whole(rule, &value, false, &mut MaskCounts::default()) {
                prop_assert!(!contains(&masked, &value), "{strategy}: {value:?}");
            }
        }
    }

    /// A card number with a valid checksum never survives `mask_content`,
    /// whatever text surrounds it. The text next to the card is not a digit:
    /// a card glued to more digits is a longer number, which the detector
    /// deliberately leaves whole.
    #[test]
    fn a_card_in_any_text_never_survives(
        card in card_number(),
        before in "\\PC{0,30}[^0-9]",
        after in "[^0-9]\\PC{0,30}",
        at_start in any::<bool>(),
        at_end in any::<bool>(),
        strategy in prop::sample::select(vec!["redact", "partial", "hash"]),
    ) {
        let masker = masker(&format!("[[rule]]\nid = \"cards\"\ndetectors = [\"payment_card\"]\nstrategy = \"{strategy}\"\n"));
        let plan = masker.content_plan(None);
        let text = format!(
            "{}{card}{}",
            if at_start { "" } else { before.as_str() },
            if at_end { "" } else { after.as_str() },
        );
        let mut counts = MaskCounts::default();
        let masked = masker.mask_content(&plan, text.as_bytes(), false, &mut counts).unwrap();
        let masked = masked.expect("a card was found");
        prop_assert!(!contains(&masked, card.as_bytes()), "{text:?} -> {:?}", String::from_utf8_lossy(&masked));
        prop_assert!(counts.get("cards", "payment_card") >= 1);

        // Inside JSON too, as a string.
        let json = serde_json::to_string(&serde_json::json!({ "note": text })).unwrap();
        let masked = masker.mask_content(&plan, json.as_bytes(), true, &mut counts).unwrap().unwrap();
        prop_assert!(!contains(&masked, card.as_bytes()));
        serde_json::from_slice::<serde_json::Value>(&masked).unwrap();
    }
}

/// Pieces of text: findings, near misses, JSON specials and escapes' targets.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("jane@example.com".to_owned()),
        Just("4242 4242 4242 4242".to_owned()),
        Just("4242424242424242".to_owned()),
        Just("+44 20 7946 0958".to_owned()),
        Just("2024-01-15T10:30:00Z".to_owned()),
        Just("\"quoted\"\\".to_owned()),
        Just("\n\t".to_owned()),
        "[a-z@. 0-9-]{0,12}",
        "\\PC{0,8}",
    ]
}

proptest! {
    /// Masking a JSON array of strings gives, string by string, what masking
    /// each string as text gives: the document-wide prefilter skips nothing
    /// it should scan, escapes are decoded before scanning and masked text is
    /// re-encoded as valid JSON.
    #[test]
    fn json_strings_mask_like_text(strings in prop::collection::vec(prop::collection::vec(fragment(), 0..4), 0..6), escape_all in any::<bool>()) {
        let masker = masker("[[rule]]\nid = \"f\"\ndetectors = [\"email\", \"payment_card\", \"phone\"]\nstrategy = \"partial\"\n");
        let plan = masker.content_plan(None);
        let strings: Vec<String> = strings.iter().map(|pieces| pieces.concat()).collect();
        let mut document = serde_json::to_string(&strings).unwrap();
        if escape_all {
            // `@` written as `\u0040`: only decoding can reveal the address.
            document = document.replace('@', "\\u0040");
        }
        let mut counts = MaskCounts::default();
        let masked = masker.mask_content(&plan, document.as_bytes(), true, &mut counts).unwrap();
        let masked: Vec<String> = match masked {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap(),
            None => strings.clone(),
        };
        let expected: Vec<String> = strings
            .iter()
            .map(|s| match masker.mask_content(&plan, s.as_bytes(), false, &mut counts).unwrap() {
                Some(bytes) => String::from_utf8(bytes).unwrap(),
                None => s.clone(),
            })
            .collect();
        prop_assert_eq!(masked, expected);
    }
}
