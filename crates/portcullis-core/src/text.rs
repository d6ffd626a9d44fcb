//! Text that people read to decide: what a reviewer sees must be what runs.

/// Characters that are not drawn but change how the text around them is
/// drawn, or are drawn as nothing or as a plain space: bidirectional
/// controls (U+202E makes `delete from t <U+202E>-- 1 = di erehw` read as
/// `delete from t where id = 1 --`), zero-width and other format
/// characters, blank letters, the line and paragraph separators, and blanks
/// other than the space (after U+00A0, a shell's `#` is no comment, but
/// looks like one).
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{00A0}' | '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
        | '\u{1680}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{2000}'..='\u{200F}'
        | '\u{2028}'..='\u{202F}'
        | '\u{205F}'..='\u{206F}'
        | '\u{2800}' | '\u{3000}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{110BD}' | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Letters written right to left (Hebrew, Arabic, Syriac and their kin).
/// Drawn by the Unicode bidirectional algorithm, they turn the neutral
/// characters around them around too: `"tmp א --", ב, t` shows as
/// `"tmp ב ,"-- א, t`, the live part drawn as a comment. Where text is not
/// drawn in its stored order (terminals, chat), they are written as escapes.
pub fn is_right_to_left(c: char) -> bool {
    matches!(c,
        '\u{0590}'..='\u{08FF}'
        | '\u{FB1D}'..='\u{FDFF}'
        | '\u{FE70}'..='\u{FEFE}'
        | '\u{10800}'..='\u{10FFF}'
        | '\u{1E800}'..='\u{1EFFF}')
}

/// `value` as an SQL string literal on one line: quotes doubled, and
/// control characters, hidden ones and right-to-left letters written as
/// escapes in an `E'...'` string, so that one bound parameter cannot pass
/// for several, and prints as what it holds.
pub fn sql_literal(value: &str) -> String {
    let escaped = |c: char| c.is_control() || is_unshown(c) || is_right_to_left(c);
    if !value.chars().any(escaped) {
        return format!("'{}'", value.replace('\'', "''"));
    }
    let mut out = String::from("E'");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) && u32::from(c) > 0xFFFF => {
                out.push_str(&format!("\\U{:08X}", u32::from(c)))
            }
            c if escaped(c) => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Whether `c` is drawn as something other than itself: a control character
/// other than tab and newline, or a hidden one.
pub fn is_unshown(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || is_hidden(c)
}

/// How a display names a character it does not draw: `[U+202E]`.
pub fn named(c: char) -> String {
    format!("[U+{:04X}]", u32::from(c))
}

/// Whether `text` holds a character [`is_unshown`].
pub fn has_unshown(text: &str) -> bool {
    text.chars().any(is_unshown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_controls_and_blanks_are_hidden_and_text_is_not() {
        for c in [
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{3164}',
            '\u{110BD}',
            '\u{13430}',
            '\u{E0041}',
        ] {
            assert!(is_hidden(c), "{:?}", c);
        }
        for c in ['a', 'é', 'Я', '中', ' ', '-'] {
            assert!(!is_hidden(c), "{:?}", c);
        }
        // Blanks that are not the space look like one.
        for c in ['\u{00A0}', '\u{2007}', '\u{202F}', '\u{3000}', '\u{2800}'] {
            assert!(is_hidden(c), "{:?}", c);
        }
        assert!(is_right_to_left('א') && is_right_to_left('ب'));
        assert!(!is_right_to_left('a') && !is_right_to_left('Я'));
        assert_eq!(sql_literal("it's"), "'it''s'");
        assert_eq!(sql_literal("7'\n--"), "E'7\\'\\n--'");
        assert_eq!(sql_literal("1 \u{202E}x"), "E'1 \\u202Ex'");
        assert_eq!(sql_literal("\u{E0041}"), "E'\\U000E0041'");
        assert_eq!(named('\u{202E}'), "[U+202E]");
        assert_eq!(named('\u{E0041}'), "[U+E0041]");
        assert!(has_unshown("delete from t \u{202E}-- 1 = di erehw"));
        assert!(has_unshown("select 1\r-- x"));
        assert!(!has_unshown("select 1\n\twhere x = 'é'"));
    }
}
