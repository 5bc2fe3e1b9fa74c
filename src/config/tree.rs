//! The matching tree: each domain's descriptor rules compiled for lookup.
//!
//! At every level a request entry is matched by its key, then by an exact value (a hash
//! lookup), then by the wildcard values of that key in file order, then by the key-only rule.
//! Exact and key-only rules cost one hash lookup each whatever their number; only wildcard
//! siblings of one key are tried in turn.

use std::collections::HashMap;
use std::sync::Arc;

// Lookups hash client-supplied strings, but only the config ever inserts: a fast hash is safe.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use super::model::{DescriptorRule, Domain, GlobalCap, Limit, RateLimitConfig};

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
    nodes: Vec<Node>,
}

/// A rule reached by matching: the limits it carries and what its counters are keyed by.
#[derive(Debug)]
pub struct Node {
    /// This rule's place among its domain's rules (`0..DomainRules::rules().len()`).
    pub id: usize,
    pub limits: Vec<Limit>,
    /// The wildcard pattern every matching value is counted under (`share_threshold`).
    pub shared_value: Option<String>,
    /// The rule's name in metrics, as the reference service forms it from the config:
    /// `domain.key1_value1.subkey1` (a key-only level is just its key).
    pub metric_name: Arc<str>,
    /// Metrics for this rule name the request's values (`detailed_metric` here, or
    /// `value_to_metric` on a level of its path): see [`DomainRules::metric_name`].
    pub metric_has_values: bool,
    /// This level's part of the metric name, and whether it shows the request's value instead
    /// (`value_to_metric`, unless the level shares a counter under `share_threshold`).
    segment: String,
    shows_value: bool,
    detailed_metric: bool,
    /// The rule one level up, if any.
    parent: Option<NodeId>,
    children: Level,
}

type NodeId = usize;

#[derive(Debug, Default)]
struct Level {
    by_key: FastMap<String, KeyRules>,
}

#[derive(Debug, Default)]
struct KeyRules {
    exact: FastMap<String, NodeId>,
    wildcards: Vec<(Pattern, NodeId)>,
    key_only: Option<NodeId>,
}

/// The outcome of matching one descriptor's entries.
#[derive(Debug)]
pub struct Match<'t> {
    pub node: &'t Node,
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
        let mut nodes = Vec::new();
        let root = build_level(&domain.descriptors, &domain.name, false, &mut nodes);
        let has_replaces = nodes
            .iter()
            .any(|n| n.limits.iter().any(|l| !l.replaces.is_empty()));
        DomainRules {
            name: domain.name.clone(),
            index,
            global: domain.global.clone(),
            has_replaces,
            root,
            nodes,
        }
    }

    /// Every rule of the domain, by [`Node::id`].
    pub fn rules(&self) -> &[Node] {
        &self.nodes
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
            let (id, wildcard) = rules.find(value)?;
            let node = &self.nodes[id];
            if wildcard && let Some(pattern) = &node.shared_value {
                shared_values.push((i, pattern.as_str()));
            }
            if i == last {
                return (!node.limits.is_empty()).then_some(Match {
                    node,
                    shared_values,
                });
            }
            level = &node.children;
        }
        None
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
        let mut path = vec![rule];
        while let Some(parent) = path.last().and_then(|n| n.parent) {
            path.push(&self.nodes[parent]);
        }
        let mut name = self.name.clone();
        for (node, (key, value)) in path.iter().rev().zip(entries) {
            name.push('.');
            if rule.detailed_metric || node.shows_value {
                name.push_str(key);
                name.push('_');
                name.push_str(value);
            } else {
                name.push_str(&node.segment);
            }
        }
        name
    }
}

impl KeyRules {
    /// The rule for `value`, and whether it was reached by a wildcard.
    fn find(&self, value: &str) -> Option<(NodeId, bool)> {
        if let Some(&id) = self.exact.get(value) {
            return Some((id, false));
        }
        if let Some((_, id)) = self.wildcards.iter().find(|(p, _)| p.matches(value)) {
            return Some((*id, true));
        }
        self.key_only.map(|id| (id, false))
    }
}

fn build_level(
    rules: &[DescriptorRule],
    parent_name: &str,
    parent_has_values: bool,
    nodes: &mut Vec<Node>,
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
        let first_descendant = nodes.len();
        let children = build_level(&rule.descriptors, &metric_name, has_values, nodes);
        let id = nodes.len();
        // Children are built first: the descendants still without a parent are this rule's.
        for node in &mut nodes[first_descendant..] {
            node.parent.get_or_insert(id);
        }
        nodes.push(Node {
            id,
            limits: rule.limits.clone(),
            shared_value,
            metric_name,
            metric_has_values: has_values || rule.detailed_metric,
            segment,
            shows_value,
            detailed_metric: rule.detailed_metric,
            parent: None,
            children,
        });
        let entry = level.by_key.entry(rule.key.clone()).or_default();
        // The loader refuses duplicate rules, so no slot is ever overwritten here.
        match (&rule.value, pattern) {
            (None, _) => entry.key_only = Some(id),
            (Some(_), Some(p)) => entry.wildcards.push((Pattern::new(p), id)),
            (Some(v), None) => {
                entry.exact.insert(v.clone(), id);
            }
        }
    }
    level
}

/// A value pattern where each `*` matches any run of characters, the empty one included.
#[derive(Debug)]
struct Pattern {
    parts: Vec<String>,
}

impl Pattern {
    fn new(pattern: &str) -> Pattern {
        Pattern {
            parts: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    fn matches(&self, value: &str) -> bool {
        // parts = [prefix, middle..., suffix]; a pattern always has at least one `*`.
        let (Some((prefix, rest)), Some(suffix)) = (self.parts.split_first(), self.parts.last())
        else {
            return false;
        };
        let middles = &rest[..rest.len().saturating_sub(1)];
        let Some(mut remaining) = value.strip_prefix(prefix.as_str()) else {
            return false;
        };
        for middle in middles {
            match remaining.find(middle.as_str()) {
                Some(at) => remaining = &remaining[at + middle.len()..],
                None => return false,
            }
        }
        remaining.len() >= suffix.len() && remaining.ends_with(suffix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(value),
                expected,
                "{pattern} vs {value}"
            );
        }
    }
}
