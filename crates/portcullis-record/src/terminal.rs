//! What of a terminal's output may be played to another person's terminal.
//!
//! An asciicast is played by writing its output to a real terminal
//! (`asciinema play`): what the recorded session printed then acts on the
//! auditor's terminal. Drawing is what a replay is for; the rest is left out:
//! operating system commands (window titles, hyperlinks, clipboard writes,
//! colour changes and queries), device control strings (settings queries,
//! graphics) and the other strings, and the queries a terminal answers by
//! typing into its input (device status and attributes, DECID, window
//! reports, mode and parameter requests, the answerback). Everything else
//! goes through unchanged:
//! text, colours, cursor movement, erasing, modes.

/// A filter over a stream of output: a sequence may span pieces.
#[derive(Debug, Default)]
pub struct Drawing {
    state: State,
    /// The control sequence being read, until its final character says
    /// whether it goes out.
    pending: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// In a control sequence (`ESC [` or CSI), in `pending`.
    Control,
    /// In a string (OSC, DCS, APC, PM, SOS), left out to its end.
    String,
    /// After ESC inside a string: `\` ends it.
    StringEscape,
}

const ESC: char = '\u{1b}';
const BEL: char = '\u{07}';
const ENQ: char = '\u{05}';
/// The C1 forms: CSI, string terminator, and the string introducers.
const C1_CSI: char = '\u{9b}';
const C1_ST: char = '\u{9c}';
const C1_STRINGS: [char; 5] = ['\u{90}', '\u{98}', '\u{9d}', '\u{9e}', '\u{9f}'];

/// A control sequence longer than this is no sequence a terminal draws by.
const MAX_CONTROL: usize = 64;

impl Drawing {
    /// The part of `text` that goes out, given what came before it.
    pub fn filter(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match self.state {
                State::Text => match c {
                    ESC => self.state = State::Escape,
                    C1_CSI => {
                        self.pending.clear();
                        self.pending.push(c);
                        self.state = State::Control;
                    }
                    c if C1_STRINGS.contains(&c) => self.state = State::String,
                    // ENQ asks for the terminal's answerback.
                    C1_ST | ENQ => {}
                    c => out.push(c),
                },
                State::Escape => match c {
                    '[' => {
                        self.pending.clear();
                        self.pending.push(ESC);
                        self.pending.push(c);
                        self.state = State::Control;
                    }
                    ']' | 'P' | '_' | '^' | 'X' => self.state = State::String,
                    // DECID: answered as device attributes are.
                    'Z' => self.state = State::Text,
                    // An intermediate or a final: drawing (a character set,
                    // saving the cursor, a reset).
                    '\u{20}'..='\u{7e}' => {
                        out.push(ESC);
                        out.push(c);
                        self.state = State::Text;
                    }
                    // Anything else (another ESC, a C1 introducer) ends
                    // the escape, and is read as text again.
                    c => {
                        self.state = State::Text;
                        out.push_str(&self.filter(&c.to_string()));
                    }
                },
                State::Control => match c {
                    // Parameters and intermediates.
                    '\u{20}'..='\u{3f}' if self.pending.len() < MAX_CONTROL => self.pending.push(c),
                    '\u{40}'..='\u{7e}' => {
                        if draws(&self.pending, c) {
                            out.push_str(&self.pending);
                            out.push(c);
                        }
                        self.pending.clear();
                        self.state = State::Text;
                    }
                    // Malformed or too long: left out, and the character
                    // read as text again.
                    c => {
                        self.pending.clear();
                        self.state = State::Text;
                        out.push_str(&self.filter(&c.to_string()));
                    }
                },
                State::String => match c {
                    BEL | C1_ST => self.state = State::Text,
                    ESC => self.state = State::StringEscape,
                    _ => {}
                },
                State::StringEscape => {
                    self.state = if c == '\\' {
                        State::Text
                    } else {
                        State::String
                    }
                }
            }
        }
        out
    }
}

/// Whether the control sequence `sequence` (its introducer, parameters and
/// intermediates) ending in `last` only draws: not one a terminal answers.
fn draws(sequence: &str, last: char) -> bool {
    let intermediates = |c: char| sequence.contains(c);
    match last {
        // Device status report, device attributes, window operations and
        // reports, terminal parameters.
        'n' | 'c' | 't' | 'x' => false,
        // A mode request (DECRQM: `CSI ? Ps $ p`).
        'p' if intermediates('$') => false,
        // Presentation state and other reports (`CSI Ps $ w`, `CSI ... $ u`).
        'w' | 'u' if intermediates('$') => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_goes_through_and_the_rest_does_not() {
        let mut drawing = Drawing::default();
        let printed = "a\u{1b}[1;31mred\u{1b}[0m\u{1b}[2J\u{1b}[H\u{1b}[?1049h\u{1b}(B\r\n\
            \u{1b}]52;c;cm0gLXJmIH4K\u{7}\u{1b}]0;title\u{7}\
            \u{1b}]8;;http://evil.example/\u{1b}\\click\u{1b}]8;;\u{1b}\\\
            \u{1b}P$qm\u{1b}\\\u{1b}[c\u{1b}[6n\u{1b}[21t\u{1b}]10;?\u{7}\u{1b}[?2026$p\
            \u{9b}6n\u{9d}0;c1 title\u{9c}end";
        assert_eq!(
            drawing.filter(printed),
            "a\u{1b}[1;31mred\u{1b}[0m\u{1b}[2J\u{1b}[H\u{1b}[?1049h\u{1b}(B\r\nclickend"
        );
    }

    /// A C1 introducer or another ESC right after ESC starts its own
    /// sequence, and is judged as one.
    #[test]
    fn an_escape_cut_short_does_not_carry_what_follows() {
        let mut drawing = Drawing::default();
        assert_eq!(
            drawing.filter("a\u{1b}\u{9b}6nb\u{1b}\u{1b}]52;c;aGk=\u{7}c\u{1b}Zd\u{5}e"),
            "abcde"
        );
    }

    #[test]
    fn a_sequence_split_between_pieces_is_still_seen() {
        let mut drawing = Drawing::default();
        let pieces = [
            "x\u{1b}",
            "]52;c;",
            "aGk=",
            "\u{7}y\u{1b}[",
            "6",
            "n\u{1b}[",
            "1m",
        ];
        let out: String = pieces.iter().map(|p| drawing.filter(p)).collect();
        assert_eq!(out, "xy\u{1b}[1m");
    }

    #[test]
    fn a_malformed_or_endless_sequence_does_not_swallow_text() {
        let mut drawing = Drawing::default();
        assert_eq!(drawing.filter("\u{1b}[12\u{7}after"), "\u{7}after");
        let long = format!("\u{1b}[{}mafter", "1;".repeat(100));
        let out = Drawing::default().filter(&long);
        assert!(out.ends_with("after") && !out.contains('\u{1b}'), "{out:?}");
    }
}
