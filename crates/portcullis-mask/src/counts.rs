//! How many values and substrings each rule masked, for the audit log and
//! metrics.

use std::collections::BTreeMap;

/// Masking counts per rule id and per what matched: a detector's name,
/// `column` (a whole value) or `json_key` (a value under a JSON key).
///
/// Serializes as `{"<rule id>": {"<detector|column|json_key>": n}}`, keys in
/// sorted order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct MaskCounts {
    by_rule: BTreeMap<String, BTreeMap<String, u64>>,
}

/// What a whole masked value counts under.
pub(crate) const COLUMN: &str = "column";
/// What a value under a matching JSON key counts under.
pub(crate) const JSON_KEY: &str = "json_key";

impl MaskCounts {
    /// Whether nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.by_rule.is_empty()
    }

    /// Everything masked, all rules together.
    pub fn total(&self) -> u64 {
        self.by_rule
            .values()
            .flat_map(|by_what| by_what.values())
            .sum()
    }

    /// How many `what` (a detector name, `column` or `json_key`) rule
    /// `rule_id` masked.
    pub fn get(&self, rule_id: &str, what: &str) -> u64 {
        self.by_rule
            .get(rule_id)
            .and_then(|by_what| by_what.get(what))
            .copied()
            .unwrap_or(0)
    }

    /// Every count as `(rule id, what, n)`, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u64)> + '_ {
        self.by_rule.iter().flat_map(|(rule_id, by_what)| {
            by_what
                .iter()
                .map(move |(what, n)| (rule_id.as_str(), what.as_str(), *n))
        })
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &MaskCounts) {
        for (rule_id, what, n) in other.iter() {
            self.record_n(rule_id, what, n);
        }
    }

    /// Forgets every count.
    pub fn clear(&mut self) {
        self.by_rule.clear();
    }

    pub(crate) fn record(&mut self, rule_id: &str, what: &str) {
        self.record_n(rule_id, what, 1);
    }

    fn record_n(&mut self, rule_id: &str, what: &str, n: u64) {
        // Look up before inserting, so that counting a known pair allocates
        // nothing.
        let by_what = match self.by_rule.get_mut(rule_id) {
            Some(by_what) => by_what,
            None => self.by_rule.entry(rule_id.to_owned()).or_default(),
        };
        match by_what.get_mut(what) {
            Some(count) => *count = count.saturating_add(n),
            None => {
                by_what.insert(what.to_owned(), n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MaskCounts;

    #[test]
    fn counts_add_and_serialize_in_sorted_order() {
        let mut counts = MaskCounts::default();
        assert!(counts.is_empty());
        counts.record("b-rule", "email");
        counts.record("a-rule", "column");
        counts.record("b-rule", "email");
        let mut more = MaskCounts::default();
        more.record("b-rule", "payment_card");
        more.record("a-rule", "column");
        counts.add(&more);
        assert_eq!(counts.total(), 5);
        assert_eq!(counts.get("b-rule", "email"), 2);
        assert_eq!(counts.get("nope", "email"), 0);
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"a-rule":{"column":2},"b-rule":{"email":2,"payment_card":1}}"#
        );
        counts.clear();
        assert!(counts.is_empty());
        assert_eq!(counts.total(), 0);
    }
}
