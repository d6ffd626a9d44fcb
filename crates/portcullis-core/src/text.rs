//! Text that people read to decide: what a reviewer sees must be what runs.

/// Characters that are not drawn but change how the text around them is
/// drawn, or are drawn as nothing: bidirectional controls (U+202E makes
/// `delete from t <U+202E>-- 1 = di erehw` read as `delete from t where id
/// = 1 --`), zero-width and other format characters, blank letters, and
/// the line and paragraph separators.
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether `c` is drawn as something other than itself: a control character
/// other than tab and newline, or a hidden one.
pub fn is_unshown(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || is_hidden(c)
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
            '\u{E0041}',
        ] {
            assert!(is_hidden(c), "{:?}", c);
        }
        for c in ['a', 'é', 'Я', '中', ' ', '-', '\u{00A0}'] {
            assert!(!is_hidden(c), "{:?}", c);
        }
        assert!(has_unshown("delete from t \u{202E}-- 1 = di erehw"));
        assert!(has_unshown("select 1\r-- x"));
        assert!(!has_unshown("select 1\n\twhere x = 'é'"));
    }
}
