//! A tiny case-insensitive glob: `*` is any run of characters, `?` is one
//! character, everything else is itself.

/// A compiled glob pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Glob {
    /// The pattern as written.
    text: String,
    /// Lowercase, as characters, for text that is not ASCII.
    chars: Vec<char>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        Glob {
            text: pattern.to_owned(),
            chars: pattern.chars().flat_map(char::to_lowercase).collect(),
        }
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the glob matches the whole of `text`, ignoring case.
    pub(crate) fn matches(&self, text: &str) -> bool {
        // Names are nearly always ASCII: compare bytes without allocating.
        if self.text.is_ascii() && text.is_ascii() {
            return matches(
                self.text.as_bytes(),
                text.as_bytes(),
                b'*',
                b'?',
                u8::eq_ignore_ascii_case,
            );
        }
        let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
        matches(&self.chars, &text, '*', '?', |a, b| a == b)
    }
}

/// The classic linear matcher: on a mismatch, go back to the last `*` and let
/// it swallow one more character. No recursion, so no blow-up on `a*a*a*b`.
fn matches<T: Copy + PartialEq>(
    pattern: &[T],
    text: &[T],
    star: T,
    any: T,
    same: impl Fn(&T, &T) -> bool,
) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it swallowed up to.
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(&pc), _) if pc == star => {
                last_star = Some((p, t));
                p += 1;
            }
            (Some(pc), Some(tc)) if *pc == any || same(pc, tc) => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    last_star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern.iter().skip(p).all(|&c| c == star)
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn matches_literals_stars_and_question_marks() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("prod-*", "prod-eu", true),
            ("prod-*", "prod-", true),
            ("prod-*", "staging", false),
            ("*.email", "customers.email", true),
            ("*.email", "email", false),
            ("contact_*", "contact_phone", true),
            ("c?t", "cat", true),
            ("c?t", "ct", false),
            ("c?t", "cart", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("*x", "xyx", true),
            ("**", "ab", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn ignores_case() {
        assert!(Glob::new("Prod-*").matches("PROD-EU"));
        assert!(Glob::new("*.EMAIL").matches("Customers.Email"));
        assert!(Glob::new("Straße_*").matches("STRAßE_1"));
        assert!(Glob::new("ÄRZTE").matches("ärzte"));
        assert!(Glob::new("?rzte").matches("Ärzte"));
    }
}
