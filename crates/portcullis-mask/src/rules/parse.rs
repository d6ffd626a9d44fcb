//! Reading and validating rules files.
//!
//! Each file is parsed with recovery (every syntax error is reported), then
//! each `[[rule]]` and `[[detector]]` table is deserialized on its own, so
//! that one bad table does not hide the problems of the next, and then every
//! field is validated with its span.

use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

mod validate;

use super::MaskRule;
use crate::detect::{Detector, Detectors, BUILTIN_DETECTORS};
use crate::error::MaskRuleError;
use validate::{validate_detector, validate_rule};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    description: Option<String>,
    targets: Option<Spanned<Vec<Spanned<String>>>>,
    columns: Option<Spanned<Vec<Spanned<String>>>>,
    types: Option<Spanned<Vec<Spanned<String>>>>,
    detectors: Option<Spanned<Vec<Spanned<String>>>>,
    json_keys: Option<Spanned<Vec<Spanned<String>>>>,
    strategy: Option<Spanned<String>>,
    keep_last: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    name: Spanned<String>,
    pattern: Spanned<String>,
}

/// A file's name and where each line starts, to turn byte offsets into
/// `file:line:column`.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(name: &'a str, text: &'a str) -> Source<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            name,
            text,
            line_starts,
        }
    }

    fn location(&self, offset: usize) -> String {
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let line_start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        format!("{}:{line}:{column}", self.name)
    }
}

/// Problems found so far, each with its file and offset for sorting.
#[derive(Default)]
struct Problems {
    found: Vec<(usize, usize, MaskRuleError)>,
}

impl Problems {
    fn at(
        &mut self,
        file: usize,
        source: &Source<'_>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let (offset, location) = match span {
            Some(span) => (span.start, source.location(span.start)),
            None => (0, source.name.to_owned()),
        };
        let message = message.into();
        self.found
            .push((file, offset, MaskRuleError { location, message }));
    }
}

/// A file's tables, deserialized but not yet validated.
struct Document<'a> {
    file: usize,
    source: Source<'a>,
    rules: Vec<RawRule>,
    detectors: Vec<RawDetector>,
}

pub(super) fn parse_files(
    files: &[(String, String)],
) -> Result<(Vec<MaskRule>, Detectors), Vec<MaskRuleError>> {
    let mut problems = Problems::default();
    let documents: Vec<Document<'_>> = files
        .iter()
        .enumerate()
        .map(|(file, (name, text))| read_document(file, Source::new(name, text), &mut problems))
        .collect();

    // Detectors first: a rule of any file may use a detector of any file.
    let mut custom: Vec<Detector> = Vec::new();
    for document in &documents {
        for raw in &document.detectors {
            if let Some(detector) = validate_detector(document, raw, &custom, &mut problems) {
                custom.push(detector);
            }
        }
    }

    let mut rules = Vec::new();
    let mut first_location: HashMap<String, String> = HashMap::new();
    for document in &documents {
        for raw in &document.rules {
            let known = |name: &str| {
                BUILTIN_DETECTORS.contains(&name) || custom.iter().any(|d| d.name() == name)
            };
            if let Some(rule) =
                validate_rule(document, raw, &known, &mut first_location, &mut problems)
            {
                rules.push(rule);
            }
        }
    }

    // Compile the built-in detectors the rules use, after the custom ones.
    let mut list = custom;
    for name in BUILTIN_DETECTORS {
        if rules
            .iter()
            .any(|rule| rule.detector_names.iter().any(|n| n == name))
        {
            match Detector::builtin(name) {
                Some(Ok(detector)) => list.push(detector),
                _ => problems.found.push((
                    0,
                    0,
                    internal(
                        files,
                        &format!("built-in detector `{name}` does not compile"),
                    ),
                )),
            }
        }
    }
    let detectors = match Detectors::new(list) {
        Ok(detectors) => detectors,
        Err(error) => {
            let message = format!(
                "the detectors together are too large to compile: {}",
                one_line(&error)
            );
            problems.found.push((0, 0, internal(files, &message)));
            Detectors::default()
        }
    };
    for rule in &mut rules {
        rule.detectors = rule
            .detector_names
            .iter()
            .filter_map(|name| detectors.id(name))
            .collect();
    }

    if problems.found.is_empty() {
        Ok((rules, detectors))
    } else {
        let mut found = problems.found;
        found.sort_by_key(|(file, offset, _)| (*file, *offset));
        Err(found.into_iter().map(|(_, _, error)| error).collect())
    }
}

fn internal(files: &[(String, String)], message: &str) -> MaskRuleError {
    MaskRuleError {
        location: files
            .first()
            .map_or_else(String::new, |(name, _)| name.clone()),
        message: message.to_owned(),
    }
}

fn read_document<'a>(file: usize, source: Source<'a>, problems: &mut Problems) -> Document<'a> {
    let mut document = Document {
        file,
        rules: Vec::new(),
        detectors: Vec::new(),
        source,
    };
    let (root, syntax_errors) = DeTable::parse_recoverable(document.source.text);
    if !syntax_errors.is_empty() {
        // What recovery made of the rest is not worth validating.
        for error in syntax_errors {
            problems.at(file, &document.source, error.span(), error.message());
        }
        return document;
    }
    for (key, value) in root.get_ref().iter() {
        let (what, tables) = match key.get_ref().as_ref() {
            "rule" => ("rule", array_of_tables(value)),
            "detector" => ("detector", array_of_tables(value)),
            other => {
                let message =
                    format!("unknown key `{other}`, expected `[[rule]]` or `[[detector]]` tables");
                problems.at(file, &document.source, Some(key.span()), message);
                continue;
            }
        };
        let Some(tables) = tables else {
            let message = format!("`{what}` must be an array of tables, written `[[{what}]]`");
            problems.at(file, &document.source, Some(value.span()), message);
            continue;
        };
        for table in tables {
            let deserializer = ValueDeserializer::from(table.clone());
            let result = match what {
                "rule" => RawRule::deserialize(deserializer).map(|raw| document.rules.push(raw)),
                _ => RawDetector::deserialize(deserializer).map(|raw| document.detectors.push(raw)),
            };
            if let Err(error) = result {
                let span = error.span().or_else(|| Some(table.span()));
                problems.at(file, &document.source, span, plain_words(error.message()));
            }
        }
    }
    document
}

/// The tables of an array of tables; `None` when `value` is anything else.
fn array_of_tables<'v, 'i>(value: &'v Spanned<DeValue<'i>>) -> Option<&'v [Spanned<DeValue<'i>>]> {
    match value.get_ref() {
        DeValue::Array(array) if array.iter().all(|item| item.get_ref().is_table()) => Some(array),
        _ => None,
    }
}

/// A deserializer message in the words of the file rather than of Rust
/// types.
fn plain_words(message: &str) -> String {
    message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
}

/// A regex error on one line: the crate's syntax errors draw a caret under
/// the pattern over several lines, of which the last says what is wrong.
fn one_line(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    last.trim().trim_start_matches("error: ").to_owned()
}
