//! Positive and negative cases for every built-in detector.

use super::*;

/// What the built-in detector `name` finds in `text`.
fn found(name: &str, text: &str) -> Vec<String> {
    let detector = Detector::builtin(name).unwrap().unwrap();
    let detectors = Detectors::new(vec![detector]).unwrap();
    detectors
        .find(text.as_bytes(), &[DetectorId(0)])
        .iter()
        .map(|f| text[f.start..f.end].to_owned())
        .collect()
}

fn check(name: &str, cases: &[(&str, &[&str])]) {
    for (text, expected) in cases {
        assert_eq!(found(name, text), *expected, "{name} in {text:?}");
    }
}

#[test]
fn every_builtin_compiles() {
    for name in BUILTIN_DETECTORS {
        let detector = Detector::builtin(name).unwrap().unwrap();
        assert!(!detector.matches_empty(), "{name}");
    }
    assert!(Detector::builtin("nope").is_none());
}

#[test]
fn email() {
    check(
        "email",
        &[
            (
                "write to jane.doe+x@example.co.uk today",
                &["jane.doe+x@example.co.uk"],
            ),
            ("mailto:jane@example.com.", &["jane@example.com"]),
            ("a@b.io and c@d.org", &["a@b.io", "c@d.org"]),
            ("no at sign here", &[]),
            ("user@localhost", &[]),
            ("@example.com", &[]),
        ],
    );
}

#[test]
fn phone() {
    check(
        "phone",
        &[
            ("call +1 (555) 123-4567 now", &["+1 (555) 123-4567"]),
            ("+44 20 7946 0958", &["+44 20 7946 0958"]),
            ("+4915112345678", &["+4915112345678"]),
            ("+33 6 12 34 56 78", &["+33 6 12 34 56 78"]),
            ("(555) 123-4567", &["(555) 123-4567"]),
            ("555-123-4567", &["555-123-4567"]),
            ("555.123.4567", &["555.123.4567"]),
            ("1-555-123-4567", &["1-555-123-4567"]),
            ("030 1234 5678", &["030 1234 5678"]),
            ("06 12 34 56 78", &["06 12 34 56 78"]),
            ("0171/1234567", &["0171/1234567"]),
        ],
    );
    // Dates, timestamps, short and plain numbers, versions.
    check(
        "phone",
        &[
            ("2024-01-15", &[]),
            ("on 01-15-2024 at", &[]),
            ("15.01.2024 10:30", &[]),
            ("01/15/2024", &[]),
            ("2024-01-15T10:30:00+01:00", &[]),
            ("2024-01-15 10:30:00.123456+00", &[]),
            ("+1 555", &[]),
            ("555-1234", &[]),
            ("order 4915112345678", &[]),
            ("v0.12.3", &[]),
            ("555-123-4567-89", &[]),
            ("x555-123-4567", &[]),
        ],
    );
}

#[test]
fn payment_card() {
    check(
        "payment_card",
        &[
            ("card 4242424242424242 ok", &["4242424242424242"]),
            ("4242 4242 4242 4242", &["4242 4242 4242 4242"]),
            ("4242-4242-4242-4242", &["4242-4242-4242-4242"]),
            ("amex 3782 822463 10005.", &["3782 822463 10005"]),
            ("x4242424242424242y", &["4242424242424242"]),
            // A card followed by its expiry month, or after a short number.
            ("4242 4242 4242 4242 12 26", &["4242 4242 4242 4242"]),
            ("12 4242424242424242", &["4242424242424242"]),
            (
                "4242424242424242,5555555555554444",
                &["4242424242424242", "5555555555554444"],
            ),
        ],
    );
    check(
        "payment_card",
        &[
            // Fails Luhn.
            ("card 4242424242424241 ok", &[]),
            ("4242 4242 4242 4241", &[]),
            // Inside a longer digit string: left whole, not half-masked.
            ("424242424242424242424242", &[]),
            ("94242424242424242", &[]),
            // Too short, or separated by more than one character.
            ("424242424242", &[]),
            ("4242  4242  4242  4242", &[]),
        ],
    );
}

#[test]
fn iban() {
    check(
        "iban",
        &[
            ("iban DE89370400440532013000.", &["DE89370400440532013000"]),
            (
                "DE89 3704 0044 0532 0130 00 FROM ACME",
                &["DE89 3704 0044 0532 0130 00"],
            ),
            (
                "GB82 WEST 1234 5698 7654 32",
                &["GB82 WEST 1234 5698 7654 32"],
            ),
            ("pay to gb82west12345698765432", &["gb82west12345698765432"]),
            (
                "XX12 DE89 3704 0044 0532 0130 00",
                &["DE89 3704 0044 0532 0130 00"],
            ),
        ],
    );
    check(
        "iban",
        &[
            // Fails mod-97.
            ("DE89370400440532013001", &[]),
            ("DE00 3704 0044 0532 0130 00", &[]),
            ("AB12CDEFGHIJKLMN", &[]),
        ],
    );
}

#[test]
fn us_ssn() {
    check(
        "us_ssn",
        &[
            ("ssn 123-45-6789.", &["123-45-6789"]),
            ("078-05-1120", &["078-05-1120"]),
        ],
    );
    check(
        "us_ssn",
        &[
            ("000-12-3456", &[]),
            ("666-12-3456", &[]),
            ("900-12-3456", &[]),
            ("999-12-3456", &[]),
            ("123-00-4567", &[]),
            ("123-45-0000", &[]),
            ("1123-45-6789", &[]),
            ("123-45-67890", &[]),
            ("2024-123-45-6789", &[]),
        ],
    );
}

#[test]
fn ipv4() {
    check(
        "ipv4",
        &[
            ("from 192.168.1.10 port", &["192.168.1.10"]),
            (
                "0.0.0.0 and 255.255.255.255",
                &["0.0.0.0", "255.255.255.255"],
            ),
            ("[10.0.0.1]:5432", &["10.0.0.1"]),
        ],
    );
    check(
        "ipv4",
        &[
            ("256.1.1.1", &[]),
            ("1.2.3.999", &[]),
            ("192.168.1.1000", &[]),
            ("1.2.3.4.5", &[]),
            ("15.01.2024", &[]),
        ],
    );
}

#[test]
fn ipv6() {
    check(
        "ipv6",
        &[
            (
                "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                &["2001:0db8:85a3:0000:0000:8a2e:0370:7334"],
            ),
            ("from fe80::1 on", &["fe80::1"]),
            ("[::1]:5432", &["::1"]),
            ("::ffff:192.168.1.1", &["::ffff:192.168.1.1"]),
            ("2001:db8::8a2e:370:7334", &["2001:db8::8a2e:370:7334"]),
        ],
    );
    check(
        "ipv6",
        &[
            ("10:30:00", &[]),
            ("2024-01-15T10:30:00Z", &[]),
            ("00:1a:2b:3c:4d:5e", &[]),
            ("Vec::new()", &[]),
            ("a :: b", &[]),
            ("1:2:3:4:5:6:7:8:9", &[]),
        ],
    );
}

#[test]
fn jwt_aws_and_private_key() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    check(
        "jwt",
        &[
            (&format!("Bearer {jwt}"), &[jwt]),
            ("eyJhbGciOi", &[]),
            ("xeyJa.b.c", &[]),
        ],
    );
    check(
        "aws_access_key",
        &[
            ("key AKIAIOSFODNN7EXAMPLE.", &["AKIAIOSFODNN7EXAMPLE"]),
            ("ASIAIOSFODNN7EXAMPLE", &["ASIAIOSFODNN7EXAMPLE"]),
            ("AKIAIOSFODNN7EXAMPLEX", &[]),
            ("AKIAiosfodnn7example", &[]),
        ],
    );
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
    check(
        "private_key",
        &[
            (&format!("x {key} y"), &[key]),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIE",
                &["-----BEGIN PRIVATE KEY-----\nMIIE"],
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
                &[],
            ),
        ],
    );
}

#[test]
fn overlapping_findings_merge() {
    let detectors = Detectors::new(vec![
        Detector::builtin("email").unwrap().unwrap(),
        Detector::builtin("payment_card").unwrap().unwrap(),
    ])
    .unwrap();
    let text = b"4242424242424242@example.com";
    let found = detectors.find(text, &[DetectorId(1), DetectorId(0)]);
    assert_eq!(
        found,
        vec![Found {
            start: 0,
            end: text.len(),
            entry: 1
        }]
    );
}

#[test]
fn scans_invalid_utf8() {
    let text = b"\xff\xfejane@example.com\xff 4242424242424242\xc3";
    let detectors = Detectors::new(vec![
        Detector::builtin("email").unwrap().unwrap(),
        Detector::builtin("payment_card").unwrap().unwrap(),
    ])
    .unwrap();
    let found = detectors.find(text, &[DetectorId(0), DetectorId(1)]);
    assert_eq!(found.len(), 2);
}
