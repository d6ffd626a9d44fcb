//! Validating one `[[rule]]` or `[[detector]]` table, field by field, with
//! every problem reported at its field.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::{one_line, Document, Problems, RawDetector, RawRule};
use crate::detect::{Detector, BUILTIN_DETECTORS};
use crate::glob::Glob;
use crate::rules::{canonical_type, ColumnGlob, MaskRule};
use crate::strategy::{Strategy, DEFAULT_KEEP_LAST};

const STRATEGIES: &str = "`redact`, `partial`, `hash` or `null`";

/// Reports the problems of one table, remembering whether there were any.
struct Reporter<'r, 's> {
    document: &'r Document<'s>,
    problems: &'r mut Problems,
    ok: bool,
}

impl Reporter<'_, '_> {
    fn report(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.ok = false;
        self.problems.at(
            self.document.file,
            &self.document.source,
            Some(span),
            message,
        );
    }

    /// The entries of a list field; an empty list or entry is a problem.
    fn list(
        &mut self,
        key: &str,
        field: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Vec<Spanned<String>> {
        let Some(items) = field else {
            return Vec::new();
        };
        if items.get_ref().is_empty() {
            self.report(
                items.span(),
                format!("`{key}` is empty; leave it out instead"),
            );
        }
        let mut entries = Vec::new();
        for item in items.get_ref() {
            if item.get_ref().trim().is_empty() {
                self.report(item.span(), format!("an entry of `{key}` is empty"));
            } else {
                entries.push(item.clone());
            }
        }
        entries
    }
}

pub(super) fn validate_detector(
    document: &Document<'_>,
    raw: &RawDetector,
    earlier: &[Detector],
    problems: &mut Problems,
) -> Option<Detector> {
    let mut reporter = Reporter {
        document,
        problems,
        ok: true,
    };
    let name = raw.name.get_ref();
    let name_is_valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let problem = if !name_is_valid {
        Some(format!(
            "invalid detector name `{name}`: use lowercase letters, digits and `_`"
        ))
    } else if BUILTIN_DETECTORS.contains(&name.as_str()) {
        Some(format!(
            "detector `{name}` is built in; choose another name"
        ))
    } else if earlier.iter().any(|detector| detector.name() == name) {
        Some(format!("duplicate detector `{name}`"))
    } else {
        None
    };
    if let Some(problem) = problem {
        reporter.report(raw.name.span(), problem);
        return None;
    }
    match Detector::custom(name, raw.pattern.get_ref()) {
        Ok(detector) if detector.matches_empty() => {
            let message = format!("the pattern of detector `{name}` matches the empty string");
            reporter.report(raw.pattern.span(), message);
            None
        }
        Ok(detector) => Some(detector),
        Err(error) => {
            let message = format!(
                "invalid pattern for detector `{name}`: {}",
                one_line(&error)
            );
            reporter.report(raw.pattern.span(), message);
            None
        }
    }
}

/// `first_location`: where each rule id seen so far was defined.
pub(super) fn validate_rule(
    document: &Document<'_>,
    raw: &RawRule,
    known_detector: &dyn Fn(&str) -> bool,
    first_location: &mut HashMap<String, String>,
    problems: &mut Problems,
) -> Option<MaskRule> {
    let mut reporter = Reporter {
        document,
        problems,
        ok: true,
    };
    let id = raw.id.get_ref();
    let location = document.source.location(raw.id.span().start);
    check_id(&mut reporter, &raw.id, &location, first_location);

    let targets = reporter.list("targets", &raw.targets);
    let columns = reporter.list("columns", &raw.columns);
    let types = reporter.list("types", &raw.types);
    let detectors = reporter.list("detectors", &raw.detectors);
    let json_keys = reporter.list("json_keys", &raw.json_keys);
    if raw.columns.is_none() && raw.detectors.is_none() && raw.json_keys.is_none() {
        let message =
            format!("rule `{id}` masks nothing: give it `columns`, `detectors` or `json_keys`");
        reporter.report(raw.id.span(), message);
    }

    let mut column_globs = Vec::new();
    for column in &columns {
        match ColumnGlob::parse(column.get_ref()) {
            Some(glob) => column_globs.push(glob),
            None => reporter.report(
                column.span(),
                format!(
                    "invalid column pattern `{}`: use `column`, `table.column` or `schema.table.column`",
                    column.get_ref()
                ),
            ),
        }
    }
    for detector in detectors
        .iter()
        .filter(|detector| !known_detector(detector.get_ref()))
    {
        let message = format!(
            "unknown detector `{}`; the built-in ones are `{}`, others need a `[[detector]]`",
            detector.get_ref(),
            BUILTIN_DETECTORS.join("`, `")
        );
        reporter.report(detector.span(), message);
    }
    let strategy = check_strategy(&mut reporter, raw);

    let strategy = strategy.filter(|_| reporter.ok)?;
    let globs = |items: &[Spanned<String>]| {
        items
            .iter()
            .map(|item| Glob::new(item.get_ref()))
            .collect::<Vec<_>>()
    };
    Some(MaskRule {
        id: id.clone(),
        description: raw.description.clone(),
        strategy,
        location,
        targets: if targets.is_empty() {
            vec![Glob::new("*")]
        } else {
            globs(&targets)
        },
        columns: column_globs,
        types: types.iter().map(|t| canonical_type(t.get_ref())).collect(),
        detector_names: detectors.iter().map(|d| d.get_ref().clone()).collect(),
        // Resolved once every detector is compiled.
        detectors: Vec::new(),
        json_keys: globs(&json_keys),
    })
}

fn check_id(
    reporter: &mut Reporter<'_, '_>,
    id: &Spanned<String>,
    location: &str,
    first_location: &mut HashMap<String, String>,
) {
    let text = id.get_ref();
    let first_is_valid = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_is_valid = text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !(first_is_valid && rest_is_valid) {
        let message = format!(
            "invalid rule id `{text}`: use lowercase letters, digits, `_`, `.` and `-`, starting with a letter or digit"
        );
        reporter.report(id.span(), message);
    } else if let Some(first) = first_location.get(text) {
        let message = format!("duplicate rule id `{text}`, first defined at {first}");
        reporter.report(id.span(), message);
    } else {
        first_location.insert(text.clone(), location.to_owned());
    }
}

/// The strategy, with `keep_last` for `partial`; `None` after a problem.
fn check_strategy(reporter: &mut Reporter<'_, '_>, raw: &RawRule) -> Option<Strategy> {
    let Some(strategy) = &raw.strategy else {
        let message = format!(
            "rule `{}` has no `strategy`; expected {STRATEGIES}",
            raw.id.get_ref()
        );
        reporter.report(raw.id.span(), message);
        return None;
    };
    let strategy = match strategy.get_ref().as_str() {
        "redact" => Strategy::Redact,
        "partial" => Strategy::Partial {
            keep_last: DEFAULT_KEEP_LAST,
        },
        "hash" => Strategy::Hash,
        "null" => Strategy::Null,
        other => {
            let message = format!("unknown strategy `{other}`; expected {STRATEGIES}");
            reporter.report(strategy.span(), message);
            return None;
        }
    };
    match (strategy, &raw.keep_last) {
        (strategy, None) => Some(strategy),
        (Strategy::Partial { .. }, Some(keep_last)) => {
            match usize::try_from(*keep_last.get_ref()) {
                Ok(keep_last) if keep_last >= 1 => Some(Strategy::Partial { keep_last }),
                _ => {
                    let message = format!(
                        "`keep_last` must be at least 1, not {}",
                        keep_last.get_ref()
                    );
                    reporter.report(keep_last.span(), message);
                    None
                }
            }
        }
        (_, Some(keep_last)) => {
            reporter.report(
                keep_last.span(),
                "`keep_last` applies only to the `partial` strategy",
            );
            None
        }
    }
}
