//! The masking of one session: the rules in force, ready to apply.

use std::sync::Arc;

use crate::counts::{MaskCounts, COLUMN, JSON_KEY};
use crate::detect::{DetectorId, Detectors};
use crate::error::MaskError;
use crate::json::{self, JsonError, ValueMasker};
use crate::rules::{ColumnMeta, MaskRule, MaskRules};
use crate::strategy::{self, HashKey, Hasher, Masked, REDACTED};

#[cfg(test)]
pub(crate) mod tests;

/// Index of a rule among a [`Masker`]'s rules in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleIdx(pub usize);

/// The masking of one session: the rules in force (those the principal may
/// not unmask), with the detectors compiled when the rules were loaded, so
/// that building one only selects rules.
#[derive(Debug)]
pub struct Masker {
    rules: Arc<Vec<MaskRule>>,
    /// Position in `rules` of each rule in force, in file order; a
    /// [`RuleIdx`] indexes this.
    in_force: Vec<usize>,
    detectors: Arc<Detectors>,
    hasher: Hasher,
    /// Every content rule's detectors, for free text.
    message_plan: ContentPlan,
}

/// Which content rules apply to a value: the detectors to run (each with the
/// rule whose strategy masks what it finds) and the json_keys rules.
#[derive(Clone, Debug, Default)]
pub struct ContentPlan {
    detectors: Vec<DetectorId>,
    /// For each of `detectors`, the first rule in force that uses it.
    detector_rules: Vec<RuleIdx>,
    json_rules: Vec<RuleIdx>,
}

impl ContentPlan {
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty() && self.json_rules.is_empty()
    }

    fn rule_indexes(&self) -> impl Iterator<Item = RuleIdx> + '_ {
        self.detector_rules.iter().chain(&self.json_rules).copied()
    }
}

impl Masker {
    /// The masker for the rules `in_force` (rule ids; ids that no rule has
    /// are ignored) of `rules`.
    pub fn new(rules: &MaskRules, in_force: &[&str], key: HashKey) -> Masker {
        let shared = rules.shared_rules();
        let in_force = shared
            .iter()
            .enumerate()
            .filter(|(_, rule)| in_force.contains(&rule.id.as_str()))
            .map(|(position, _)| position)
            .collect();
        let mut masker = Masker {
            rules: Arc::clone(shared),
            in_force,
            detectors: Arc::clone(rules.detectors()),
            hasher: Hasher::new(&key),
            message_plan: ContentPlan::default(),
        };
        let mut message_plan = masker.content_plan(None);
        message_plan.json_rules.clear();
        masker.message_plan = message_plan;
        masker
    }

    pub fn is_empty(&self) -> bool {
        self.in_force.is_empty()
    }

    /// Whether a rule in force names columns: a column rule, or a JSON key
    /// or content rule limited to named columns. Such columns are guarded
    /// as a whole (their rows are not chosen by them, nothing computes over
    /// them, errors over them are withheld), whichever part of their
    /// values the rule masks.
    pub fn covers_columns(&self) -> bool {
        self.rules_in_force()
            .any(|(_, rule)| !rule.columns.is_empty())
    }

    pub fn has_content_rules(&self) -> bool {
        self.rules_in_force()
            .any(|(_, rule)| rule.is_content_rule())
    }

    /// The id of a rule; `unknown` for an index this masker did not give.
    pub fn rule_id(&self, rule: RuleIdx) -> &str {
        self.rule(rule).map_or("unknown", |rule| rule.id.as_str())
    }

    /// The first column rule (in file order) covering this column.
    pub fn column_rule(&self, column: &ColumnMeta<'_>) -> Option<RuleIdx> {
        self.rules_in_force()
            .find(|(_, rule)| rule.is_column_rule() && rule.covers_column(column))
            .map(|(idx, _)| idx)
    }

    /// The rule that masks, whole, a value computed from this column
    /// (`upper(email)`, `profile->>'ssn'`): its column rule, or else a
    /// json_keys rule covering it when it is JSON, since what is extracted
    /// from a JSON value can be what the rule's keys hold.
    pub fn derived_rule(&self, column: &ColumnMeta<'_>) -> Option<RuleIdx> {
        self.column_rule(column).or_else(|| {
            let json = ["json", "jsonb"]
                .iter()
                .any(|t| column.type_name.eq_ignore_ascii_case(t));
            // A content rule that names its columns covers what is computed
            // from them whole: `replace(notes, '@', ' at ')` defeats any
            // detector. (One without columns scans every value, and cannot
            // cover every computed value whole.)
            self.rules_in_force()
                .find(|(_, rule)| {
                    rule.covers_column(column)
                        && ((json && !rule.json_keys.is_empty())
                            || (!rule.columns.is_empty() && !rule.detectors.is_empty()))
                })
                .map(|(idx, _)| idx)
        })
    }

    /// The rule for a value that may derive from a covered column but whose
    /// source is not known: the first column rule in force, or else the
    /// first json_keys rule.
    pub fn any_column_rule(&self) -> Option<RuleIdx> {
        self.rules_in_force()
            .find(|(_, rule)| rule.is_column_rule())
            .or_else(|| {
                self.rules_in_force()
                    .find(|(_, rule)| !rule.json_keys.is_empty())
            })
            .map(|(idx, _)| idx)
    }

    /// Which content rules apply to a column; `None` when its source is
    /// unknown: then every content rule applies.
    pub fn content_plan(&self, column: Option<&ColumnMeta<'_>>) -> ContentPlan {
        let mut plan = ContentPlan::default();
        for (idx, rule) in self.rules_in_force() {
            if !rule.is_content_rule() || column.is_some_and(|column| !rule.covers_column(column)) {
                continue;
            }
            for &detector in &rule.detectors {
                if !plan.detectors.contains(&detector) {
                    plan.detectors.push(detector);
                    plan.detector_rules.push(idx);
                }
            }
            if !rule.json_keys.is_empty() {
                plan.json_rules.push(idx);
            }
        }
        plan
    }

    /// Masks a whole value with a column rule's strategy. `derived`: the
    /// value is computed from a covered column, and `partial` redacts. An
    /// index this masker did not give redacts (fail closed).
    pub fn mask_whole(
        &self,
        rule: RuleIdx,
        value: &[u8],
        derived: bool,
        counts: &mut MaskCounts,
    ) -> Masked {
        let Some(rule) = self.rule(rule) else {
            return Masked::Value(REDACTED.to_vec());
        };
        counts.record(&rule.id, COLUMN);
        strategy::mask_value(rule.strategy, value, derived, &self.hasher)
    }

    /// Masks what the plan's detectors find in a value. For `json`, the
    /// value is JSON text: strings (decoded), keys and numbers are scanned,
    /// and values under the plan's json_keys are masked whole.
    ///
    /// `Ok(None)`: nothing found, send the original bytes. `Err`: the value
    /// could not be masked and must not be sent: JSON that does not parse
    /// while a json_keys rule applies (without one, the text is scanned as
    /// text), or JSON nested too deeply to walk.
    pub fn mask_content(
        &self,
        plan: &ContentPlan,
        value: &[u8],
        json: bool,
        counts: &mut MaskCounts,
    ) -> Result<Option<Vec<u8>>, MaskError> {
        if let Some(unknown) = plan.rule_indexes().find(|&idx| self.rule(idx).is_none()) {
            return Err(MaskError::UnknownRule {
                rule_idx: unknown.0,
            });
        }
        if plan.is_empty() || (!json && plan.detectors.is_empty()) {
            return Ok(None);
        }
        if !json {
            return Ok(self.mask_text(plan, value, counts));
        }
        // Count into a scratch copy so that a value that fails half-way
        // counts nothing.
        let mut value_counts = MaskCounts::default();
        let mut masker = PlanMasker {
            masker: self,
            plan,
            counts: &mut value_counts,
        };
        match json::mask_json(value, &mut masker) {
            Ok(masked) => {
                counts.add(&value_counts);
                Ok(masked)
            }
            Err(JsonError::TooDeep) => Err(MaskError::JsonTooDeep {
                max_depth: json::MAX_DEPTH,
            }),
            Err(JsonError::Invalid { offset, reason }) => {
                if plan.json_rules.is_empty() {
                    Ok(self.mask_text(plan, value, counts))
                } else {
                    Err(MaskError::InvalidJson { offset, reason })
                }
            }
        }
    }

    /// For error and notice messages: every content rule's detectors over
    /// free text, whatever their columns. `None`: unchanged.
    pub fn mask_message(&self, text: &str, counts: &mut MaskCounts) -> Option<String> {
        let masked = self.mask_text(&self.message_plan, text.as_bytes(), counts)?;
        Some(
            String::from_utf8(masked)
                .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned()),
        )
    }

    fn rule(&self, idx: RuleIdx) -> Option<&MaskRule> {
        self.in_force
            .get(idx.0)
            .and_then(|&position| self.rules.get(position))
    }

    fn rules_in_force(&self) -> impl Iterator<Item = (RuleIdx, &MaskRule)> + '_ {
        self.in_force
            .iter()
            .enumerate()
            .filter_map(|(idx, &position)| Some((RuleIdx(idx), self.rules.get(position)?)))
    }

    /// Masks what the plan's detectors find in `value`, scanned as text.
    fn mask_text(
        &self,
        plan: &ContentPlan,
        value: &[u8],
        counts: &mut MaskCounts,
    ) -> Option<Vec<u8>> {
        let found = self.detectors.find(value, &plan.detectors);
        if found.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(value.len() + 16);
        let mut copied = 0;
        for f in &found {
            out.extend_from_slice(value.get(copied..f.start).unwrap_or_default());
            let substring = value.get(f.start..f.end).unwrap_or_default();
            let rule = plan
                .detector_rules
                .get(f.entry)
                .and_then(|&idx| self.rule(idx));
            let detector = plan
                .detectors
                .get(f.entry)
                .map_or("unknown", |&id| self.detectors.name(id));
            match rule {
                Some(rule) => {
                    out.extend(strategy::mask_substring(
                        rule.strategy,
                        substring,
                        &self.hasher,
                    ));
                    counts.record(&rule.id, detector);
                }
                // Checked by `mask_content`; redact all the same.
                None => out.extend_from_slice(REDACTED),
            }
            copied = f.end;
        }
        out.extend_from_slice(value.get(copied..).unwrap_or_default());
        Some(out)
    }
}

/// What the JSON walker uses: a masker with one plan and the counts.
struct PlanMasker<'a> {
    masker: &'a Masker,
    plan: &'a ContentPlan,
    counts: &'a mut MaskCounts,
}

impl ValueMasker for PlanMasker<'_> {
    fn candidate_spans(&self, document: &[u8]) -> Option<Vec<(usize, usize)>> {
        if self.plan.detectors.is_empty() {
            return Some(Vec::new());
        }
        self.masker.detectors.candidate_spans(document)
    }

    fn scan(&mut self, text: &[u8]) -> Option<Vec<u8>> {
        self.masker.mask_text(self.plan, text, self.counts)
    }

    fn key_rule(&self, key: &str) -> Option<usize> {
        self.plan
            .json_rules
            .iter()
            .find(|&&idx| {
                self.masker
                    .rule(idx)
                    .is_some_and(|rule| rule.json_keys.iter().any(|glob| glob.matches(key)))
            })
            .map(|idx| idx.0)
    }

    fn mask_under_key(&mut self, rule: usize, value: &[u8]) -> Masked {
        let Some(rule) = self.masker.rule(RuleIdx(rule)) else {
            return Masked::Value(REDACTED.to_vec());
        };
        self.counts.record(&rule.id, JSON_KEY);
        strategy::mask_value(rule.strategy, value, false, &self.masker.hasher)
    }
}
