//! The loaded rules as text: the listing served at `/rlconfig`, one line per limit, in the
//! reference service's spirit (`domain.key_value.subkey: 5/second name=... flags`), and the
//! one-line-per-domain summary that `validate`, start-up and reloads print.

use std::fmt::Write;

use super::model::{DescriptorRule, Domain, LimitPolicy, RateLimitConfig};

pub fn listing(config: &RateLimitConfig) -> String {
    let mut out = String::new();
    for domain in config.domains.values() {
        list_domain(domain, &mut out);
    }
    out
}

fn list_domain(domain: &Domain, out: &mut String) {
    for cap in &domain.global {
        let _ = writeln!(
            out,
            "{}.global: {}/{} name={}",
            domain.name, cap.requests_per_unit, cap.unit, cap.name
        );
    }
    for rule in &domain.descriptors {
        list_rule(&domain.name, rule, out);
    }
}

fn list_rule(prefix: &str, rule: &DescriptorRule, out: &mut String) {
    let path = match &rule.value {
        Some(value) => format!("{prefix}.{}_{value}", rule.key),
        None => format!("{prefix}.{}", rule.key),
    };
    for limit in &rule.limits {
        let mut line = match limit.policy {
            LimitPolicy::Unlimited => format!("{path}: unlimited"),
            LimitPolicy::PerUnit {
                requests_per_unit,
                unit,
            } => format!("{path}: {requests_per_unit}/{unit}"),
        };
        if let Some(name) = &limit.name {
            let _ = write!(line, " name={name}");
        }
        for (flag, on) in [
            ("shadow_mode", limit.shadow_mode),
            ("postpaid", limit.postpaid),
            ("fail_closed", limit.fail == super::model::FailMode::Closed),
            ("share_threshold", rule.share_threshold),
        ] {
            if on {
                let _ = write!(line, " {flag}");
            }
        }
        if !limit.replaces.is_empty() {
            let _ = write!(line, " replaces={}", limit.replaces.join(","));
        }
        out.push_str(&line);
        out.push('\n');
    }
    for child in &rule.descriptors {
        list_rule(&path, child, out);
    }
}

impl RateLimitConfig {
    /// One line per domain, each ending in a line break:
    /// "domain NAME: N rules, M limits, G global caps (files: a.yaml, b.yaml)", counting nested
    /// rules and their limits.
    pub fn summary(&self) -> String {
        self.domains
            .values()
            .map(|d| {
                let (rules, limits) = count_rules(&d.descriptors);
                format!(
                    "domain {}: {rules} rules, {limits} limits, {} global caps (files: {})\n",
                    d.name,
                    d.global.len(),
                    d.files.join(", ")
                )
            })
            .collect()
    }
}

/// Rules and limits in `rules` and everything nested under them.
fn count_rules(rules: &[DescriptorRule]) -> (usize, usize) {
    rules.iter().fold((0, 0), |(n_rules, n_limits), rule| {
        let (nested_rules, nested_limits) = count_rules(&rule.descriptors);
        (
            n_rules + 1 + nested_rules,
            n_limits + rule.limits.len() + nested_limits,
        )
    })
}
