//! Content detectors: the built-in ones and those a rules file defines.
//!
//! Every detector is a byte regex that finds candidates, plus, for the
//! built-in ones, a check of the candidate (Luhn for cards, mod-97 for IBANs,
//! octet ranges, word edges). All detectors in use are also compiled into one
//! [`RegexSet`], so a value in which nothing can match is dismissed in one
//! pass without allocating; only the detectors the set reports are then run
//! one by one.

mod builtin;
#[cfg(test)]
mod tests;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use builtin::Kind;
pub use builtin::BUILTIN_DETECTORS;

/// Index of a detector in [`Detectors`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DetectorId(pub(crate) usize);

/// One detector.
#[derive(Debug)]
pub(crate) struct Detector {
    name: String,
    kind: Kind,
    regex: Regex,
    /// Whether a match inside a JSON token is also a match in the whole
    /// JSON text: true unless the pattern has anchors (`^`, `$`, `\A`,
    /// `\z`), which match at the edges of a token but not inside the
    /// document. Word boundaries are fine: JSON delimits tokens with
    /// non-word characters.
    context_free: bool,
}

impl Detector {
    /// The built-in detector called `name`, if there is one.
    pub(crate) fn builtin(name: &str) -> Option<Result<Detector, regex::Error>> {
        let (kind, pattern) = builtin::pattern(name)?;
        // The private key's `\z` only lets a block run to the end of the
        // text; it still matches from the BEGIN line inside a document.
        Some(compile(pattern).map(|regex| Detector {
            name: name.to_owned(),
            kind,
            regex,
            context_free: true,
        }))
    }

    /// A detector from a rules file's `[[detector]]`.
    pub(crate) fn custom(name: &str, pattern: &str) -> Result<Detector, regex::Error> {
        let regex = compile(pattern)?;
        let context_free = regex_syntax::parse(pattern)
            .is_ok_and(|hir| !hir.properties().look_set().contains_anchor());
        Ok(Detector {
            name: name.to_owned(),
            kind: Kind::Custom,
            regex,
            context_free,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the pattern matches the empty string, which would make it
    /// "find" nothing at every position.
    pub(crate) fn matches_empty(&self) -> bool {
        self.regex.is_match(b"")
    }

    /// Every span this detector finds and accepts, in order.
    fn find_into(&self, hay: &[u8], out: &mut Vec<(usize, usize)>) {
        match self.kind {
            Kind::PaymentCard => builtin::find_cards(&self.regex, hay, out),
            Kind::Iban => builtin::find_ibans(&self.regex, hay, out),
            kind => {
                let mut at = 0;
                while at <= hay.len() {
                    let Some(found) = self.regex.find_at(hay, at) else {
                        break;
                    };
                    if found.is_empty() {
                        at = found.end() + 1;
                    } else if builtin::accept(kind, hay, found.start(), found.end()) {
                        out.push((found.start(), found.end()));
                        at = found.end();
                    } else {
                        // A rejected candidate may hide a good one that starts
                        // inside it; candidates are short, so this stays linear
                        // in practice.
                        at = found.start() + 1;
                    }
                }
            }
        }
    }
}

/// Room for the lazy DFA of every detector together, so that it does not
/// give up on long mixed text.
const DFA_SIZE_LIMIT: usize = 16 << 20;

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).build()
}

/// A substring some detector found: `entry` is the index of the detector in
/// the list the caller asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) entry: usize,
}

/// Every detector the rules use, compiled once when the rules are loaded.
#[derive(Debug, Default)]
pub(crate) struct Detectors {
    list: Vec<Detector>,
    /// All of `list` at once, as a prefilter; `None` when `list` is empty.
    set: Option<RegexSet>,
    /// All of `list` as one alternation, to find where in a JSON document
    /// anything may be found; `None` when `list` is empty or a detector is
    /// not context-free.
    any: Option<Regex>,
}

impl Detectors {
    pub(crate) fn new(list: Vec<Detector>) -> Result<Detectors, regex::Error> {
        let set = if list.is_empty() {
            None
        } else {
            let patterns = list.iter().map(|detector| detector.regex.as_str());
            Some(
                RegexSetBuilder::new(patterns)
                    .dfa_size_limit(DFA_SIZE_LIMIT)
                    .build()?,
            )
        };
        let any = if list.is_empty() || !list.iter().all(|detector| detector.context_free) {
            None
        } else {
            let alternation: Vec<String> = list
                .iter()
                .map(|d| format!("(?:{})", d.regex.as_str()))
                .collect();
            Some(
                RegexBuilder::new(&alternation.join("|"))
                    .dfa_size_limit(DFA_SIZE_LIMIT)
                    .build()?,
            )
        };
        Ok(Detectors { list, set, any })
    }

    /// Spans of `hay` outside which no detector can find anything in a
    /// substring of `hay` (sorted, not overlapping): every substring holding
    /// a finding overlaps one of them. `None` when that cannot be known (a
    /// detector with anchors), so every substring must be scanned.
    ///
    /// Why it holds: the alternation reports, leftmost first, a span at the
    /// earliest position where any detector matches, then continues after
    /// it. A match of any detector either starts inside a reported span or
    /// starts at or after its end and is found later; none starts before the
    /// first span, or it would have been leftmost.
    pub(crate) fn candidate_spans(&self, hay: &[u8]) -> Option<Vec<(usize, usize)>> {
        let Some(any) = &self.any else {
            return if self.list.is_empty() {
                Some(Vec::new())
            } else {
                None
            };
        };
        Some(
            any.find_iter(hay)
                .map(|m| (m.start(), m.end().max(m.start() + 1)))
                .collect(),
        )
    }

    pub(crate) fn id(&self, name: &str) -> Option<DetectorId> {
        self.list
            .iter()
            .position(|detector| detector.name == name)
            .map(DetectorId)
    }

    pub(crate) fn name(&self, id: DetectorId) -> &str {
        self.list
            .get(id.0)
            .map_or("unknown", |detector| detector.name())
    }

    /// What the detectors in `wanted` find in `hay`. Spans that overlap are
    /// merged into one (counted for the detector of the first), so that no
    /// part of anything a detector found survives. Allocates nothing when
    /// nothing matches.
    pub(crate) fn find(&self, hay: &[u8], wanted: &[DetectorId]) -> Vec<Found> {
        let Some(set) = &self.set else {
            return Vec::new();
        };
        // The alternation, when there is one, is the faster first test: unlike
        // the set it can use literal prefilters (`@` for emails).
        let any_match = match &self.any {
            Some(any) => any.is_match(hay),
            None => set.is_match(hay),
        };
        if wanted.is_empty() || !any_match {
            return Vec::new();
        }
        let matched = set.matches(hay);
        let mut spans = Vec::new();
        let mut found = Vec::new();
        for (entry, id) in wanted.iter().enumerate() {
            let Some(detector) = self.list.get(id.0) else {
                continue;
            };
            if id.0 >= matched.len() || !matched.matched(id.0) {
                continue;
            }
            spans.clear();
            detector.find_into(hay, &mut spans);
            found.extend(
                spans
                    .iter()
                    .map(|&(start, end)| Found { start, end, entry }),
            );
        }
        merge_overlapping(found)
    }
}

fn merge_overlapping(mut found: Vec<Found>) -> Vec<Found> {
    found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end), f.entry));
    let mut merged: Vec<Found> = Vec::with_capacity(found.len());
    for f in found {
        match merged.last_mut() {
            Some(last) if f.start < last.end => last.end = last.end.max(f.end),
            _ => merged.push(f),
        }
    }
    merged
}
