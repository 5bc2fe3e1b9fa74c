//! The matching tree: each domain's descriptor rules compiled for lookup.
//!
//! At every level a request entry is matched by its key, then by an exact value (a hash
//! lookup), then by the wildcard values of that key in file order, then by the key-only rule.
//! Exact and key-only rules cost one hash lookup each whatever their number; only wildcard
//! siblings of one key are tried in turn.
//!
//! The layout is for the cache as much as for the count of steps: a domain of 10,000 rules
//! must decide as fast as one of 2, and each matched rule is a fresh, cold part of memory. So
//! what matching and deciding read of a rule is packed: a small [`Node`] per rule in one
//! array, every rule's limits ([`RuleLimit`]) in another, and every exact value, wildcard
//! literal and limit name in one string; what only metric names need lives apart, in
//! [`RuleNaming`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;

use hashbrown::HashTable;

// Lookups hash client-supplied strings, but only the config ever inserts: a fast hash is safe.
type FastState = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, FastState>;

use super::model::{
    DescriptorRule, Domain, FailMode, GlobalCap, Limit, LimitPolicy, RateLimitConfig,
};

/// The compiled form of a whole configuration.
#[derive(Debug, Default)]
pub struct RuleTree {
    domains: FastMap<String, DomainRules>,
}

/// One domain's rules.
#[derive(Debug)]
pub struct DomainRules {
    pub name: String,
    /// This domain's place among the tree's domains (`0..RuleTree::len()`).
    pub index: usize,
    pub global: Vec<GlobalCap>,
    /// Whether any limit names others in `replaces` (else matching needs no second pass).
    pub has_replaces: bool,
    root: Level,
    /// The levels under rules, by [`Node`]'s `children`.
    levels: Vec<Level>,
    nodes: Vec<Node>,
    /// Every rule's limits, each rule's together, by [`Node`]'s `limits`.
    limits: Vec<RuleLimit>,
    naming: Vec<RuleNaming>,
    /// Every exact value, wildcard literal and limit name of the domain, end to end (`Span`
    /// ranges).
    text: String,
    /// The middle parts of every wildcard pattern (a [`Pattern`]'s `middles`).
    middles: Vec<Span>,
    /// Hashes exact values for the levels' tables.
    values: FastState,
}

/// A rule reached by matching: where its limits and children are, and how it is counted.
#[derive(Debug)]
pub struct Node {
    /// This rule's place among its domain's rules (`0..DomainRules::metric_names().len()`).
    pub id: usize,
    /// Metrics for this rule name the request's values (`detailed_metric` here, or
    /// `value_to_metric` on a level of its path): see [`DomainRules::metric_name`].
    pub metric_has_values: bool,
    /// The rule's wildcard is a `share_threshold` one: see [`RuleNaming::shared_value`].
    shares_counter: bool,
    limits: Span,
    /// The exact value this rule matches (empty for a key-only or wildcard rule).
    value: Span,
    children: Option<u32>,
}

/// A limit as deciding reads it: the config's [`Limit`] less its place in the file, its name
/// in the domain's text. A domain of 10,000 rules has 10,000 names: one allocation each, a call
/// on a random rule missed the cache to report its limit's name (4% of the CPU per call in
/// `bench/run.sh`'s 10,000-rule workload, A/B); side by side they share cache lines.
#[derive(Debug)]
pub struct RuleLimit {
    pub policy: LimitPolicy,
    pub shadow_mode: bool,
    pub postpaid: bool,
    pub fail: FailMode,
    /// Names of other limits that this one replaces when both match one call.
    pub replaces: Box<[String]>,
    name: Option<Span>,
}

/// What naming a rule in metrics needs, and its `share_threshold` pattern: read for the rare
/// call that needs them, so kept out of the way of matching.
#[derive(Debug)]
struct RuleNaming {
    /// The rule's name in metrics, as the reference service forms it from the config:
    /// `domain.key1_value1.subkey1` (a key-only level is just its key).
    metric_name: Arc<str>,
    /// The wildcard pattern every matching value is counted under (`share_threshold`).
    shared_value: Option<String>,
    /// This level's part of the metric name, and whether it shows the request's value instead
    /// (`value_to_metric`, unless the level shares a counter under `share_threshold`).
    segment: String,
    shows_value: bool,
    detailed_metric: bool,
    /// The rule one level up, if any.
    parent: Option<usize>,
}

/// A range of [`DomainRules`]' `text`, `limits` or `middles`: two `u32`s where a `String` would
/// be three words and a pointer to follow.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }

    /// The part of `text` this span covers.
    fn of(self, text: &str) -> &str {
        text.get(self.range()).unwrap_or_default()
    }
}

/// Appends `s` to `text`, returning where it is.
fn push_span(text: &mut String, s: &str) -> Span {
    let start = text.len();
    text.push_str(s);
    Span {
        start: to_u32(start),
        len: to_u32(s.len()),
    }
}

#[derive(Debug, Default)]
struct Level {
    by_key: FastMap<String, KeyRules>,
}

#[derive(Debug, Default)]
struct KeyRules {
    /// Rules by exact value: node ids, hashed by [`DomainRules`]' `values`.
    exact: HashTable<u32>,
    wildcards: Vec<Pattern>,
    key_only: Option<u32>,
}

/// The outcome of matching one descriptor's entries.
#[derive(Debug)]
pub struct Match<'t> {
    pub node: &'t Node,
    /// The limits of the rule, in file order (never empty); their names through
    /// [`DomainRules::limit_name`].
    pub limits: &'t [RuleLimit],
    /// For each entry (by index) that matched a `share_threshold` wildcard: the pattern its
    /// counter is keyed by instead of the request's value. Usually empty.
    pub shared_values: Vec<(usize, &'t str)>,
}

impl RuleTree {
    pub fn build(config: &RateLimitConfig) -> RuleTree {
        let domains = config
            .domains
            .values()
            .enumerate()
            .map(|(index, d)| (d.name.clone(), DomainRules::build(d, index)))
            .collect();
        RuleTree { domains }
    }

    /// Every domain, in no particular order (see [`DomainRules::index`]).
    pub fn domains(&self) -> impl Iterator<Item = &DomainRules> {
        self.domains.values()
    }

    pub fn domain(&self, name: &str) -> Option<&DomainRules> {
        self.domains.get(name)
    }
}

impl DomainRules {
    fn build(domain: &Domain, index: usize) -> DomainRules {
        let mut rules = DomainRules {
            name: domain.name.clone(),
            index,
            global: domain.global.clone(),
            has_replaces: false,
            root: Level::default(),
            levels: Vec::new(),
            nodes: Vec::new(),
            limits: Vec::new(),
            naming: Vec::new(),
            text: String::new(),
            middles: Vec::new(),
            values: FastState::default(),
        };
        rules.root = rules.build_level(&domain.descriptors, &domain.name, false);
        rules.has_replaces = rules.limits.iter().any(|l| !l.replaces.is_empty());
        rules
    }

    /// Every rule's name in metrics as the config forms it (see [`DomainRules::metric_name`]
    /// for the names with request values), by [`Node::id`].
    pub fn metric_names(&self) -> impl ExactSizeIterator<Item = &Arc<str>> {
        self.naming.iter().map(|n| &n.metric_name)
    }

    fn text(&self, text: Span) -> &str {
        text.of(&self.text)
    }

    fn limits(&self, rule: &Node) -> &[RuleLimit] {
        self.limits.get(rule.limits.range()).unwrap_or_default()
    }

    /// The configured name of `limit`, one of this domain's.
    pub fn limit_name(&self, limit: &RuleLimit) -> Option<&str> {
        limit.name.map(|name| self.text(name))
    }

    /// Matches one descriptor's entries, as the reference service does: a limit applies only
    /// when the last entry lands on a rule that has one; a request deeper than the rules, or an
    /// entry no rule matches, matches nothing.
    pub fn find<'a>(
        &self,
        entries: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> Option<Match<'_>> {
        let last = entries.len().checked_sub(1)?;
        let mut level = &self.root;
        let mut shared_values = Vec::new();
        for (i, (key, value)) in entries.enumerate() {
            let rules = level.by_key.get(key)?;
            let (node, wildcard) = self.find_value(rules, value)?;
            if wildcard
                && node.shares_counter
                && let Some(pattern) = &self.naming[node.id].shared_value
            {
                shared_values.push((i, pattern.as_str()));
            }
            if i == last {
                let limits = self.limits(node);
                return (!limits.is_empty()).then_some(Match {
                    node,
                    limits,
                    shared_values,
                });
            }
            level = &self.levels[node.children? as usize];
        }
        None
    }

    /// The rule of `rules` for `value`, and whether it was reached by a wildcard.
    fn find_value(&self, rules: &KeyRules, value: &str) -> Option<(&Node, bool)> {
        // A key with only a key-only rule (a limit per client address, say) is common: its
        // values are not hashed for a table that holds nothing.
        if !rules.exact.is_empty() {
            let hash = self.values.hash_one(value);
            let exact = rules.exact.find(hash, |&id| {
                self.text(self.nodes[id as usize].value) == value
            });
            if let Some(&id) = exact {
                return Some((&self.nodes[id as usize], false));
            }
        }
        let matches = |p: &&Pattern| p.matches(&self.text, &self.middles, value);
        if let Some(p) = rules.wildcards.iter().find(matches) {
            return Some((&self.nodes[p.node as usize], true));
        }
        rules.key_only.map(|id| (&self.nodes[id as usize], false))
    }
}

impl DomainRules {
    /// The metric name of `rule`, matched by `entries`, with the request's values where the
    /// config asks for them: every level under `detailed_metric`, a `value_to_metric` level
    /// otherwise (unless it shares a counter under `share_threshold`, which names the pattern).
    pub fn metric_name<'a>(
        &self,
        rule: &Node,
        entries: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> String {
        let naming = &self.naming[rule.id];
        let mut path = vec![naming];
        while let Some(parent) = path.last().and_then(|n| n.parent) {
            path.push(&self.naming[parent]);
        }
        let mut name = self.name.clone();
        for (level, (key, value)) in path.iter().rev().zip(entries) {
            name.push('.');
            if naming.detailed_metric || level.shows_value {
                name.push_str(key);
                name.push('_');
                name.push_str(value);
            } else {
                name.push_str(&level.segment);
            }
        }
        name
    }

    fn rule_limit(&mut self, limit: &Limit) -> RuleLimit {
        RuleLimit {
            policy: limit.policy,
            shadow_mode: limit.shadow_mode,
            postpaid: limit.postpaid,
            fail: limit.fail,
            replaces: limit.replaces.clone().into_boxed_slice(),
            name: limit.name.as_deref().map(|name| self.push_text(name)),
        }
    }

    /// Appends `s` to the domain's text.
    fn push_text(&mut self, s: &str) -> Span {
        push_span(&mut self.text, s)
    }

    fn build_level(
        &mut self,
        rules: &[DescriptorRule],
        parent_name: &str,
        parent_has_values: bool,
    ) -> Level {
        let mut level = Level::default();
        for rule in rules {
            let pattern = rule.value.as_deref().filter(|v| v.contains('*'));
            let shared_value = pattern.filter(|_| rule.share_threshold).map(str::to_owned);
            let segment = match &rule.value {
                Some(value) => format!("{}_{value}", rule.key),
                None => rule.key.clone(),
            };
            let metric_name: Arc<str> = format!("{parent_name}.{segment}").into();
            let shows_value = rule.value_to_metric && shared_value.is_none();
            let has_values = parent_has_values || shows_value;
            let first_descendant = self.nodes.len();
            let children = (!rule.descriptors.is_empty()).then(|| {
                let children = self.build_level(&rule.descriptors, &metric_name, has_values);
                self.levels.push(children);
                to_u32(self.levels.len() - 1)
            });
            let id = self.nodes.len();
            // Children are built first: the descendants still without a parent are this rule's.
            for naming in &mut self.naming[first_descendant..] {
                naming.parent.get_or_insert(id);
            }
            let limits_start = self.limits.len();
            for limit in &rule.limits {
                let rule_limit = self.rule_limit(limit);
                self.limits.push(rule_limit);
            }
            let value = match (&rule.value, pattern) {
                (Some(v), None) => self.push_text(v),
                _ => Span::default(),
            };
            self.nodes.push(Node {
                id,
                metric_has_values: has_values || rule.detailed_metric,
                shares_counter: shared_value.is_some(),
                limits: Span {
                    start: to_u32(limits_start),
                    len: to_u32(rule.limits.len()),
                },
                value,
                children,
            });
            self.naming.push(RuleNaming {
                metric_name,
                shared_value,
                segment,
                shows_value,
                detailed_metric: rule.detailed_metric,
                parent: None,
            });
            let entry = level.by_key.entry(rule.key.clone()).or_default();
            // The loader refuses duplicate rules, so no slot is ever overwritten here.
            match (&rule.value, pattern) {
                (None, _) => entry.key_only = Some(to_u32(id)),
                (Some(_), Some(p)) => {
                    let pattern = Pattern::new(p, to_u32(id), &mut self.text, &mut self.middles);
                    entry.wildcards.push(pattern);
                }
                (Some(v), None) => {
                    let values = &self.values;
                    let nodes = &self.nodes;
                    let text = &self.text;
                    entry
                        .exact
                        .insert_unique(values.hash_one(v.as_str()), to_u32(id), |&n| {
                            values.hash_one(nodes[n as usize].value.of(text))
                        });
                }
            }
        }
        level
    }
}

/// Spans are `u32`s to keep the tree small. A domain whose values and names came to more than
/// 4 GiB would saturate here and match as if those rules were not there; never panic, since
/// spans are read with `get`.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A value pattern where each `*` matches any run of characters, the empty one included. Its
/// literal parts are ranges of [`DomainRules`]' `text`: the siblings of one key are tried one
/// after the other, so they are read from two compact arrays, not from a string each.
#[derive(Debug)]
struct Pattern {
    /// The rule it leads to.
    node: u32,
    /// Before the first `*` and after the last.
    prefix: Span,
    suffix: Span,
    /// The parts between stars, in order: a range of [`DomainRules`]' `middles`.
    middles: Span,
    /// The shortest value that can match: every part's length together.
    min_len: u32,
    /// The pattern's first and last bytes, which are the prefix's and the suffix's when those
    /// are not empty: most siblings are refused on them, without reading their text.
    first: u8,
    last: u8,
}

impl Pattern {
    fn new(pattern: &str, node: u32, text: &mut String, middles: &mut Vec<Span>) -> Pattern {
        // A pattern always has at least one `*`, so at least a prefix and a suffix.
        let mut parts: Vec<Span> = pattern.split('*').map(|s| push_span(text, s)).collect();
        let suffix = parts.pop().unwrap_or_default();
        let prefix = if parts.is_empty() {
            Span::default()
        } else {
            parts.remove(0)
        };
        let first_middle = middles.len();
        middles.extend(&parts);
        Pattern {
            node,
            prefix,
            suffix,
            middles: Span {
                start: to_u32(first_middle),
                len: to_u32(parts.len()),
            },
            min_len: to_u32(pattern.len() - (parts.len() + 1)),
            // Checked only for a non-empty prefix or suffix, whose end the pattern's is.
            first: pattern.as_bytes().first().copied().unwrap_or(0),
            last: pattern.as_bytes().last().copied().unwrap_or(0),
        }
    }

    fn matches(&self, text: &str, middles: &[Span], value: &str) -> bool {
        let part = |t: Span| t.of(text);
        // Cheap refusals first: most siblings fail on length or on their ends.
        let bytes = value.as_bytes();
        if bytes.len() < self.min_len as usize
            || (self.prefix.len > 0 && bytes.first() != Some(&self.first))
            || (self.suffix.len > 0 && bytes.last() != Some(&self.last))
            || !value.ends_with(part(self.suffix))
        {
            return false;
        }
        let Some(mut remaining) = value.strip_prefix(part(self.prefix)) else {
            return false;
        };
        for &middle in middles.get(self.middles.range()).unwrap_or_default() {
            let middle = part(middle);
            match remaining.find(middle) {
                Some(at) => remaining = &remaining[at + middle.len()..],
                None => return false,
            }
        }
        // The suffix must follow the last middle, not overlap it (or the prefix).
        remaining.len() >= self.suffix.len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::{LoadOptions, load_sources};
    use crate::config::model::LimitPolicy;

    fn tree(yaml: &str) -> RuleTree {
        let sources = [("rules.yaml".to_owned(), yaml.to_owned())];
        RuleTree::build(&load_sources(&sources, &LoadOptions::default()).unwrap())
    }

    /// The volume of the limit `entries` match in domain `d`, if any.
    fn volume(tree: &RuleTree, entries: &[(&str, &str)]) -> Option<u32> {
        let found = tree.domain("d")?.find(entries.iter().copied())?;
        match found.limits.first()?.policy {
            LimitPolicy::PerUnit {
                requests_per_unit, ..
            } => Some(requests_per_unit),
            LimitPolicy::Unlimited => None,
        }
    }

    #[test]
    fn many_exact_siblings_are_each_found_beside_wildcards_and_a_key_only_rule() {
        let mut yaml = String::from("domain: d\ndescriptors:\n");
        for i in 1..=2_000 {
            yaml += &format!(
                "  - {{key: k, value: v{i}, rate_limit: {{unit: day, requests_per_unit: {i}}}}}\n"
            );
        }
        yaml +=
            "  - {key: k, value: \"v1*\", rate_limit: {unit: day, requests_per_unit: 100001}}\n";
        yaml += "  - {key: k, value: \"*9\", rate_limit: {unit: day, requests_per_unit: 100002}}\n";
        yaml += "  - {key: k, rate_limit: {unit: day, requests_per_unit: 100003}}\n";
        let tree = tree(&yaml);
        for i in 1..=2_000 {
            let value = format!("v{i}");
            assert_eq!(volume(&tree, &[("k", &value)]), Some(i), "{value}");
        }
        // Exact first, then wildcards in file order, then the key-only rule.
        assert_eq!(volume(&tree, &[("k", "v19999")]), Some(100_001));
        assert_eq!(volume(&tree, &[("k", "x9")]), Some(100_002));
        assert_eq!(volume(&tree, &[("k", "v0")]), Some(100_003));
        assert_eq!(volume(&tree, &[("other", "v1")]), None);
    }

    #[test]
    fn nested_levels_match_through_their_parents_and_name_shared_patterns() {
        let tree = tree(
            r#"
domain: d
descriptors:
  - key: a
    value: x
    descriptors:
      - {key: b, value: "p*q", share_threshold: true, rate_limit: {unit: day, requests_per_unit: 7}}
      - {key: b, value: y, rate_limit: {unit: day, requests_per_unit: 8}}
  - key: a
    descriptors:
      - {key: b, rate_limit: {unit: day, requests_per_unit: 9}}
"#,
        );
        assert_eq!(volume(&tree, &[("a", "x"), ("b", "y")]), Some(8));
        assert_eq!(volume(&tree, &[("a", "z"), ("b", "y")]), Some(9));
        assert_eq!(volume(&tree, &[("a", "x")]), None, "a rule without limits");
        assert_eq!(volume(&tree, &[("a", "x"), ("b", "y"), ("c", "1")]), None);
        let domain = tree.domain("d").unwrap();
        let shared = domain
            .find([("a", "x"), ("b", "p12q")].into_iter())
            .unwrap();
        assert_eq!(shared.shared_values, [(1, "p*q")]);
        assert_eq!(
            domain.metric_name(shared.node, [("a", "x"), ("b", "p12q")].into_iter()),
            "d.a_x.b_p*q"
        );
        let exact = domain.find([("a", "x"), ("b", "y")].into_iter()).unwrap();
        assert!(exact.shared_values.is_empty());
    }

    #[test]
    fn patterns_match_as_the_reference_fixtures_say() {
        let cases = [
            ("foo*", "foo1", true),
            ("foo*", "foo", true),
            ("foo*", "bar", false),
            ("bar*b", "barab", true),
            ("bar*b", "bar123b", true),
            ("bar*b", "barb", true),
            ("bar*b", "bara", false),
            ("bar*b", "xbarb", false),
            ("foo*bar*baz", "foo123bar456baz", true),
            ("foo*bar*baz", "foobarbaz", true),
            ("foo*bar*baz", "foo123baz", false),
            ("foo*bar*baz", "bar456baz", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*", "", true),
            ("*x*", "abxcd", true),
            ("a*", "", false),
            ("*b", "ab", true),
            ("*b", "ba", false),
            ("x*y", "xy", true),
            ("x*y", "yax", false),
            ("é*", "é", true),
        ];
        for (pattern, value, expected) in cases {
            let (mut text, mut middles) = (String::new(), Vec::new());
            let compiled = Pattern::new(pattern, 0, &mut text, &mut middles);
            assert_eq!(
                compiled.matches(&text, &middles, value),
                expected,
                "{pattern} vs {value}"
            );
        }
    }
}
