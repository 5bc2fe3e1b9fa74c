//! The loader against inline YAML (every rule of the format, good and bad) and against the
//! project's fixtures in `tests/fixtures/config/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use std::{env, fs, io, process};

use serde_json::json;

use super::{ConfigError, ConfigErrors, LoadOptions, load_path, load_sources};
use crate::config::model::{
    DescriptorRule, Domain, FailMode, Limit, LimitPolicy, RateLimitConfig, Unit,
};

// ---- helpers ----

/// `text` without its leading line break and the indentation common to its lines, so YAML can sit
/// indented in a test: line 1 is the line after the opening quote.
fn yaml(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect();
    lines.join("\n") + "\n"
}

fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(name, text)| (name.to_string(), yaml(text)))
        .collect()
}

fn loaded_sources(files: &[(&str, &str)], opts: &LoadOptions) -> RateLimitConfig {
    match load_sources(&sources(files), opts) {
        Ok(config) => config,
        Err(e) => panic!("expected the config to load, got:\n{e}"),
    }
}

fn errors_of_sources(files: &[(&str, &str)], opts: &LoadOptions) -> Vec<ConfigError> {
    match load_sources(&sources(files), opts) {
        Ok(config) => panic!("expected errors, loaded:\n{}", config.summary()),
        Err(ConfigErrors(errors)) => errors,
    }
}

fn loaded(text: &str) -> RateLimitConfig {
    loaded_sources(&[("test.yaml", text)], &LoadOptions::default())
}

/// The one domain of `text`.
fn domain_of(text: &str) -> Domain {
    let config = loaded(text);
    let summary = config.summary();
    let mut domains = config.domains.into_values();
    match (domains.next(), domains.next()) {
        (Some(domain), None) => domain,
        _ => panic!("expected one domain, loaded:\n{summary}"),
    }
}

/// The errors of `text` loaded as `test.yaml`, as (line, message).
fn errors_of(text: &str) -> Vec<(usize, String)> {
    let errors = errors_of_sources(&[("test.yaml", text)], &LoadOptions::default());
    for e in &errors {
        assert_eq!(e.file, "test.yaml", "{e}");
    }
    errors.into_iter().map(|e| (e.line, e.message)).collect()
}

#[track_caller]
fn assert_errors(text: &str, expected: &[(usize, &str)]) {
    let expected: Vec<(usize, String)> = expected
        .iter()
        .map(|&(line, message)| (line, message.to_owned()))
        .collect();
    assert_eq!(errors_of(text), expected);
}

fn rule<'a>(rules: &'a [DescriptorRule], key: &str, value: Option<&str>) -> &'a DescriptorRule {
    match rules
        .iter()
        .find(|r| r.key == key && r.value.as_deref() == value)
    {
        Some(rule) => rule,
        None => panic!("no rule {key}={value:?}"),
    }
}

fn only_limit(rule: &DescriptorRule) -> &Limit {
    match rule.limits.as_slice() {
        [limit] => limit,
        other => panic!("expected one limit on {}, found {}", rule.key, other.len()),
    }
}

fn per_unit(requests_per_unit: u32, unit: Unit) -> LimitPolicy {
    LimitPolicy::PerUnit {
        requests_per_unit,
        unit,
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = env::temp_dir().join(format!("tollgate-load-{}-{nanos}-{n}", process::id()));
        fs::create_dir(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const MERGE: LoadOptions = LoadOptions {
    merge_domains: true,
};

// ---- what loads ----

#[test]
fn loads_nested_rules_values_and_limits() {
    let d = domain_of(
        r#"
        domain: test-domain
        descriptors:
          - key: key1
            value: value1
            descriptors:
              - key: subkey1
                rate_limit:
                  unit: second
                  requests_per_unit: 5
              - key: subkey1
                value: subvalue1
                rate_limit:
                  name: sub
                  unit: minute
                  requests_per_unit: 10
          - key: key2
            value: value3
    "#,
    );
    assert_eq!(d.name, "test-domain");
    assert_eq!(d.files.len(), 1);
    assert_eq!(&*d.files[0], "test.yaml");
    assert!(d.global.is_empty());
    assert_eq!(d.descriptors.len(), 2);

    let key1 = rule(&d.descriptors, "key1", Some("value1"));
    assert!(key1.limits.is_empty());
    assert_eq!((key1.pos.line, key1.pos.column), (3, 5));
    assert_eq!(&*key1.pos.file, "test.yaml");

    let any_sub = only_limit(rule(&key1.descriptors, "subkey1", None));
    assert_eq!(any_sub.policy, per_unit(5, Unit::Second));
    assert_eq!(any_sub.name, None);
    assert_eq!(any_sub.pos.line, 8);

    let sub = only_limit(rule(&key1.descriptors, "subkey1", Some("subvalue1")));
    assert_eq!(sub.policy, per_unit(10, Unit::Minute));
    assert_eq!(sub.name.as_deref(), Some("sub"));
    assert!(!sub.shadow_mode && !sub.postpaid);
    assert_eq!(sub.fail, FailMode::Open);
    assert!(sub.replaces.is_empty());

    let exempt = rule(&d.descriptors, "key2", Some("value3"));
    assert!(exempt.limits.is_empty() && exempt.descriptors.is_empty());
}

#[test]
fn scalar_values_and_keys_are_read_as_written() {
    let d = domain_of(
        r#"
        domain: 2024
        descriptors:
          - {key: status, value: 429}
          - {key: status, value: 007}
          - {key: status, value: 1.50}
          - {key: status, value: true}
          - {key: status, value: "quoted"}
          - {key: status, value: !!str 12}
          - {key: 404, value: 0x1F}
          - {key: empty, value: ""}
          - {key: null-value, value: ~}
    "#,
    );
    assert_eq!(d.name, "2024");
    let values: Vec<(&str, Option<&str>)> = d
        .descriptors
        .iter()
        .map(|r| (r.key.as_str(), r.value.as_deref()))
        .collect();
    assert_eq!(
        values,
        [
            ("status", Some("429")),
            ("status", Some("007")),
            ("status", Some("1.50")),
            ("status", Some("true")),
            ("status", Some("quoted")),
            ("status", Some("12")),
            ("404", Some("0x1F")),
            ("empty", None),
            ("null-value", None),
        ]
    );
}

#[test]
fn units_are_case_insensitive() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - {key: a, rate_limit: {unit: SECOND, requests_per_unit: 1}}
          - {key: b, rate_limit: {unit: Minute, requests_per_unit: 1}}
          - {key: c, rate_limit: {unit: hour, requests_per_unit: 1}}
          - {key: d, rate_limit: {unit: DaY, requests_per_unit: 1}}
          - {key: e, rate_limit: {unit: week, requests_per_unit: 1}}
          - {key: f, rate_limit: {unit: MONTH, requests_per_unit: 1}}
          - {key: g, rate_limit: {unit: Year, requests_per_unit: 1}}
    "#,
    );
    let units: Vec<LimitPolicy> = d.descriptors.iter().map(|r| only_limit(r).policy).collect();
    let expected: Vec<LimitPolicy> = Unit::ALL.iter().map(|&u| per_unit(1, u)).collect();
    assert_eq!(units, expected);
}

#[test]
fn requests_per_unit_defaults_to_zero_and_reaches_u32_max() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - key: deny-all
            rate_limit:
              unit: minute
          - key: most
            rate_limit:
              unit: minute
              requests_per_unit: 4294967295
    "#,
    );
    let deny = only_limit(rule(&d.descriptors, "deny-all", None));
    assert_eq!(deny.policy, per_unit(0, Unit::Minute));
    let most = only_limit(rule(&d.descriptors, "most", None));
    assert_eq!(most.policy, per_unit(u32::MAX, Unit::Minute));
}

#[test]
fn unlimited_has_no_unit() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - key: free
            rate_limit:
              name: free-pass
              unlimited: true
          - key: counted
            rate_limit:
              unlimited: false
              unit: hour
              requests_per_unit: 3
    "#,
    );
    let free = only_limit(rule(&d.descriptors, "free", None));
    assert_eq!(free.policy, LimitPolicy::Unlimited);
    assert_eq!(free.name.as_deref(), Some("free-pass"));
    let counted = only_limit(rule(&d.descriptors, "counted", None));
    assert_eq!(counted.policy, per_unit(3, Unit::Hour));
}

#[test]
fn rate_limits_list_and_per_limit_extensions() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - key: client
            rate_limits:
              - name: minute
                unit: minute
                requests_per_unit: 5
              - name: tokens
                unit: day
                requests_per_unit: 1000
                postpaid: true
                fail: closed
                shadow_mode: true
              - {name: open, unit: day, requests_per_unit: 1, fail: OPEN}
    "#,
    );
    let limits = &rule(&d.descriptors, "client", None).limits;
    assert_eq!(limits.len(), 3);
    assert_eq!(limits[0].name.as_deref(), Some("minute"));
    assert_eq!(limits[0].policy, per_unit(5, Unit::Minute));
    assert!(!limits[0].postpaid && !limits[0].shadow_mode);
    assert_eq!(limits[0].fail, FailMode::Open);
    assert_eq!(limits[1].policy, per_unit(1000, Unit::Day));
    assert!(limits[1].postpaid && limits[1].shadow_mode);
    assert_eq!(limits[1].fail, FailMode::Closed);
    assert_eq!(limits[2].fail, FailMode::Open);
    assert_eq!((limits[1].pos.line, limits[1].pos.column), (8, 9));
}

#[test]
fn descriptor_shadow_mode_covers_each_of_its_limits() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - key: shadowed
            shadow_mode: true
            rate_limits:
              - {unit: minute, requests_per_unit: 1}
              - {unit: hour, requests_per_unit: 2, shadow_mode: false}
            descriptors:
              - key: child
                rate_limit: {unit: second, requests_per_unit: 1}
          - key: enforced
            shadow_mode: false
            rate_limit: {unit: minute, requests_per_unit: 1}
    "#,
    );
    let shadowed = rule(&d.descriptors, "shadowed", None);
    assert!(shadowed.limits.iter().all(|l| l.shadow_mode));
    // Descriptor-level shadow mode is the rule's own, not its children's.
    assert!(!only_limit(rule(&shadowed.descriptors, "child", None)).shadow_mode);
    assert!(!only_limit(rule(&d.descriptors, "enforced", None)).shadow_mode);
}

#[test]
fn replaces_names_are_kept() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - key: k
            rate_limit:
              name: specific
              unit: minute
              requests_per_unit: 1
              replaces:
                - name: general
                - name: other
    "#,
    );
    let limit = only_limit(rule(&d.descriptors, "k", None));
    assert_eq!(limit.replaces, ["general", "other"]);
}

#[test]
fn descriptor_flags_and_metadata() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - key: path
            value: files/*
            share_threshold: true
            detailed_metric: true
            value_to_metric: true
            metadata:
              name: service_1
              nested: {list: [1, 2.5, null, yes], ok: true}
              7: seven
          - key: plain
    "#,
    );
    let path = rule(&d.descriptors, "path", Some("files/*"));
    assert!(path.share_threshold && path.detailed_metric && path.value_to_metric);
    assert_eq!(
        path.metadata,
        Some(json!({
            "name": "service_1",
            "nested": {"list": [1, 2.5, null, "yes"], "ok": true},
            "7": "seven",
        }))
    );
    let plain = rule(&d.descriptors, "plain", None);
    assert!(!plain.share_threshold && !plain.detailed_metric && !plain.value_to_metric);
    assert_eq!(plain.metadata, None);
}

#[test]
fn global_caps() {
    let d = domain_of(
        r#"
        domain: d
        global:
          - name: all-day
            unit: Day
            requests_per_unit: 100000
          - name: all-second
            unit: second
    "#,
    );
    assert_eq!(d.global.len(), 2);
    assert_eq!(d.global[0].name, "all-day");
    assert_eq!(d.global[0].unit, Unit::Day);
    assert_eq!(d.global[0].requests_per_unit, 100_000);
    assert_eq!(d.global[0].pos.line, 3);
    assert_eq!(d.global[1].requests_per_unit, 0);
    assert!(d.descriptors.is_empty());
}

#[test]
fn a_domain_may_have_no_descriptors() {
    for body in [
        "domain: d\n",
        "domain: d\ndescriptors:\n",
        "domain: d\ndescriptors: []\n",
    ] {
        let d = domain_of(body);
        assert!(d.descriptors.is_empty() && d.global.is_empty(), "{body}");
    }
}

#[test]
fn key_only_and_valued_siblings_are_not_duplicates() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - {key: k}
          - {key: k, value: a}
          - {key: k, value: b}
          - {key: other, value: a}
          - key: k2
            descriptors: [{key: k}]
          - key: k3
            descriptors: [{key: k}]
    "#,
    );
    assert_eq!(d.descriptors.len(), 6);
}

#[test]
fn anchors_and_aliases_are_resolved() {
    let d = domain_of(
        r#"
        domain: d
        descriptors:
          - key: a
            rate_limit: &per-minute {unit: minute, requests_per_unit: 9}
          - key: b
            rate_limit: *per-minute
    "#,
    );
    let b = only_limit(rule(&d.descriptors, "b", None));
    assert_eq!(b.policy, per_unit(9, Unit::Minute));
}

#[test]
fn a_byte_order_mark_and_non_ascii_text_are_fine() {
    let d = domain_of("\u{feff}domain: dé\ndescriptors:\n  - {key: ключ, value: 0050}\n");
    assert_eq!(d.name, "dé");
    assert_eq!(d.descriptors[0].key, "ключ");
    assert_eq!(d.descriptors[0].value.as_deref(), Some("0050"));
}

#[test]
fn several_domains_load_side_by_side() {
    let config = loaded_sources(
        &[("a.yaml", "domain: zeta"), ("b.yaml", "domain: alpha")],
        &LoadOptions::default(),
    );
    let names: Vec<&String> = config.domains.keys().collect();
    assert_eq!(names, ["alpha", "zeta"]);
}

#[test]
fn merged_domains_concatenate_in_file_order() {
    let config = loaded_sources(
        &[
            (
                "one.yaml",
                r#"
                domain: shared
                global: [{name: day, unit: day, requests_per_unit: 10}]
                descriptors:
                  - {key: key1, value: value1, rate_limit: {unit: minute, requests_per_unit: 10}}
            "#,
            ),
            ("other.yaml", "domain: other"),
            (
                "two.yaml",
                r#"
                domain: shared
                global: [{name: hour, unit: hour, requests_per_unit: 5}]
                descriptors:
                  - {key: key2, value: value2, rate_limit: {unit: minute, requests_per_unit: 20}}
                  - {key: key1}
            "#,
            ),
        ],
        &MERGE,
    );
    let shared = &config.domains["shared"];
    let files: Vec<&str> = shared.files.iter().map(|f| &**f).collect();
    assert_eq!(files, ["one.yaml", "two.yaml"]);
    let keys: Vec<(&str, Option<&str>)> = shared
        .descriptors
        .iter()
        .map(|r| (r.key.as_str(), r.value.as_deref()))
        .collect();
    assert_eq!(
        keys,
        [
            ("key1", Some("value1")),
            ("key2", Some("value2")),
            ("key1", None)
        ]
    );
    assert_eq!(
        only_limit(&shared.descriptors[1]).policy,
        per_unit(20, Unit::Minute)
    );
    assert_eq!(&*shared.descriptors[1].pos.file, "two.yaml");
    let caps: Vec<&str> = shared.global.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(caps, ["day", "hour"]);
    assert_eq!(config.domains["other"].files.len(), 1);
}

#[test]
fn summary_counts_nested_rules_and_limits() {
    let config = loaded_sources(
        &[
            (
                "a.yaml",
                r#"
                domain: b-domain
                global: [{name: g, unit: day, requests_per_unit: 1}]
                descriptors:
                  - key: k
                    rate_limits: [{unit: day}, {unit: hour}]
                    descriptors:
                      - key: k2
                        rate_limit: {unlimited: true}
                        descriptors: [{key: k3}]
            "#,
            ),
            ("b.yaml", "domain: b-domain"),
            ("c.yaml", "domain: a-domain"),
        ],
        &MERGE,
    );
    assert_eq!(
        config.summary(),
        "domain a-domain: 0 rules, 0 limits, 0 global caps (files: c.yaml)\n\
         domain b-domain: 3 rules, 3 limits, 1 global caps (files: a.yaml, b.yaml)\n"
    );
}

// ---- what is refused ----

#[test]
fn yaml_syntax_errors_name_the_parsers_line() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
           value: b
    "#,
        &[(
            4,
            "invalid YAML: while parsing a block collection, did not find expected '-' indicator",
        )],
    );
    assert_errors(
        "'''\n",
        &[(
            1,
            "invalid YAML: while scanning a quoted scalar, found unexpected end of stream",
        )],
    );
}

#[test]
fn a_key_given_twice_in_one_mapping_is_a_yaml_error() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
            key: b
    "#,
        &[(4, "invalid YAML: duplicated key in mapping")],
    );
}

#[test]
fn the_top_level_must_be_one_mapping() {
    assert_errors(
        "- domain: d\n",
        &[(1, "the top level must be a mapping, found a list")],
    );
    assert_errors(
        "just text\n",
        &[(
            1,
            "the top level must be a mapping, found string 'just text'",
        )],
    );
    assert_errors(
        "",
        &[(
            1,
            "no YAML document: expected a mapping with a 'domain' key",
        )],
    );
    assert_errors(
        "# nothing but a comment\n",
        &[(
            1,
            "no YAML document: expected a mapping with a 'domain' key",
        )],
    );
    assert_errors(
        "domain: a\n---\ndomain: b\n",
        &[(3, "a second YAML document: a file holds one domain")],
    );
}

#[test]
fn the_domain_must_be_named() {
    assert_errors("descriptors:\n", &[(1, "the top level has no 'domain'")]);
    assert_errors(
        "domain:\ndescriptors:\n",
        &[(1, "the top level has no 'domain'")],
    );
    assert_errors(
        "domain: ''\n",
        &[(1, "the top level has an empty 'domain'")],
    );
    assert_errors(
        "domain: [a]\n",
        &[(1, "'domain' must be a string, found a list")],
    );
}

#[test]
fn unknown_keys_are_refused_at_every_level() {
    assert_errors(
        r#"
        domain: d
        descriptor: []
        globals: []
        descriptors:
          - key: a
            ratelimit: {unit: day}
            rate_limit:
              unit: day
              requestsperunit: 5
              replaces: [{name: x, why: y}]
          - key: b
            Shadow-Mode: true
        global:
          - {name: g, unit: day, limit: 5}
    "#,
        &[
            (
                2,
                "unknown key 'descriptor' in the top level (expected one of: domain, global, descriptors)",
            ),
            (
                3,
                "unknown key 'globals' in the top level (expected one of: domain, global, descriptors)",
            ),
            (
                6,
                "unknown key 'ratelimit' in the descriptor (did you mean 'rate_limit'?)",
            ),
            (
                9,
                "unknown key 'requestsperunit' in the rate limit (did you mean 'requests_per_unit'?)",
            ),
            (
                10,
                "unknown key 'why' in the replaces entry (expected one of: name)",
            ),
            (
                12,
                "unknown key 'Shadow-Mode' in the descriptor (did you mean 'shadow_mode'?)",
            ),
            (
                14,
                "unknown key 'limit' in the global cap (expected one of: name, unit, requests_per_unit)",
            ),
        ],
    );
}

#[test]
fn keys_must_be_strings() {
    assert_errors(
        r#"
        0.25: test-domain
        domain: d
        descriptors:
          - key: a
            true: 1
            [x]: 2
    "#,
        &[
            (1, "a key must be a string, found number 0.25"),
            (5, "a key must be a string, found boolean true"),
            (6, "a key must be a string, found a list"),
        ],
    );
}

#[test]
fn wrong_types_are_refused() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - a
          - key: b
            descriptors: {key: c}
          - key: c
            rate_limits: {unit: day}
          - key: d
            detailed_metric: yes
            share_threshold: 1
            metadata: [a]
            rate_limit:
              unit: day
              unlimited: "true"
              replaces: {name: x}
          - key: e
            rate_limit: daily
          - key: {k: v}
    "#,
        &[
            (3, "the descriptor must be a mapping, found string 'a'"),
            (5, "'descriptors' must be a list, found a mapping"),
            (7, "'rate_limits' must be a list, found a mapping"),
            (
                9,
                "'detailed_metric' must be true or false, found string 'yes'",
            ),
            (
                10,
                "'share_threshold' must be true or false, found integer 1",
            ),
            (11, "'metadata' must be a mapping, found a list"),
            (14, "'unlimited' must be true or false, found string 'true'"),
            (15, "'replaces' must be a list, found a mapping"),
            (17, "the rate limit must be a mapping, found string 'daily'"),
            (18, "'key' must be a string, found a mapping"),
        ],
    );
    assert_errors(
        "domain: d\ndescriptors: all\n",
        &[(2, "'descriptors' must be a list, found string 'all'")],
    );
}

#[test]
fn requests_per_unit_must_be_a_u32() {
    let message = |found: &str| {
        format!("'requests_per_unit' must be a whole number from 0 to 4294967295, found {found}")
    };
    let (negative, too_big, fraction, text, huge) = (
        message("integer -1"),
        message("integer 4294967296"),
        message("number 2.5"),
        message("string '5'"),
        message("number 12345678901234567890"),
    );
    assert_errors(
        r#"
        domain: d
        global: [{name: g, unit: day, requests_per_unit: -1}]
        descriptors:
          - {key: a, rate_limit: {unit: day, requests_per_unit: 4294967296}}
          - {key: b, rate_limit: {unit: day, requests_per_unit: 2.5}}
          - {key: c, rate_limit: {unit: day, requests_per_unit: "5"}}
          - {key: d, rate_limit: {unit: day, requests_per_unit: 12345678901234567890}}
    "#,
        &[
            (2, &negative),
            (4, &too_big),
            (5, &fraction),
            (6, &text),
            (7, &huge),
        ],
    );
}

#[test]
fn descriptor_keys_must_be_given_and_not_empty() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - value: v
          - key: ""
          - key:
            value: w
    "#,
        &[
            (3, "the descriptor has no 'key'"),
            (4, "the descriptor has an empty 'key'"),
            (5, "the descriptor has no 'key'"),
        ],
    );
}

#[test]
fn units_must_be_known_and_given() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
            rate_limit:
              unit: foo
              requests_per_unit: 5
          - key: b
            rate_limit:
              requests_per_unit: 5
          - key: c
            rate_limit: {unit: 60}
    "#,
        &[
            (
                5,
                "invalid rate limit unit 'foo' (expected one of: second, minute, hour, day, week, month, year)",
            ),
            (9, "the rate limit has no 'unit'"),
            (
                11,
                "invalid rate limit unit '60' (expected one of: second, minute, hour, day, week, month, year)",
            ),
        ],
    );
}

#[test]
fn unlimited_takes_no_unit_or_count() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: foo
            rate_limit:
              unlimited: true
              unit: day
              requests_per_unit: 25
    "#,
        &[
            (6, "'unit' given with unlimited: true (it has no counter)"),
            (
                7,
                "'requests_per_unit' given with unlimited: true (it has no counter)",
            ),
        ],
    );
}

#[test]
fn rate_limit_and_rate_limits_exclude_each_other() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
            rate_limit: {unit: day}
            rate_limits:
              - {unit: hour}
    "#,
        &[(5, "give 'rate_limit' or 'rate_limits', not both")],
    );
}

#[test]
fn fail_mode_is_open_or_closed() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
            rate_limit: {unit: day, fail: maybe}
    "#,
        &[(4, "invalid fail mode 'maybe' (expected open or closed)")],
    );
}

#[test]
fn replaces_entries_name_another_limit() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
            rate_limit:
              name: self
              unit: second
              replaces:
                - name:
                - name: ""
                - name: self
                - other
    "#,
        &[
            (8, "the replaces entry has no 'name'"),
            (9, "the replaces entry has an empty 'name'"),
            (10, "the rate limit 'self' replaces itself"),
            (
                11,
                "the replaces entry must be a mapping, found string 'other'",
            ),
        ],
    );
}

#[test]
fn sibling_rules_must_be_unique() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: key1
            value: value1
          - key: key1
            value: value1
          - key: key2
            descriptors:
              - key: sub
              - key: sub
              - key: sub
                value: 1
              - key: sub
                value: "1"
    "#,
        &[
            (5, "duplicate descriptor 'key1=value1' (first at line 3)"),
            (10, "duplicate descriptor 'sub' (first at line 9)"),
            (13, "duplicate descriptor 'sub=1' (first at line 11)"),
        ],
    );
}

#[test]
fn global_caps_are_checked() {
    assert_errors(
        r#"
        domain: d
        global:
          - name: cap
            unit: day
          - name: cap
            unit: hour
          - unit: day
          - name: no-unit
          - name: bad-unit
            unit: fortnight
          - just-a-name
        descriptors: []
    "#,
        &[
            (5, "duplicate global cap 'cap' (first at line 3)"),
            (7, "the global cap has no 'name'"),
            (8, "the global cap has no 'unit'"),
            (
                10,
                "invalid rate limit unit 'fortnight' (expected one of: second, minute, hour, day, week, month, year)",
            ),
            (
                11,
                "the global cap must be a mapping, found string 'just-a-name'",
            ),
        ],
    );
    assert_errors(
        "domain: d\nglobal: {name: g}\n",
        &[(2, "'global' must be a list, found a mapping")],
    );
}

#[test]
fn metadata_must_fit_in_json() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
            metadata:
              ratio: .nan
              list: [1, .inf]
              ok: fine
              [complex]: key
              ~: null key
    "#,
        &[
            (5, "JSON cannot hold number .nan"),
            (6, "JSON cannot hold number .inf"),
            (8, "a key must be a string, found a list"),
            (9, "a key must be a string, found null"),
        ],
    );
}

#[test]
fn tags_the_format_does_not_know_are_refused() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: !secret a
          - key: b
            rate_limit: {unit: day, requests_per_unit: !!int x}
    "#,
        &[
            (3, "'key' must be a string, found a value tagged !secret"),
            (
                5,
                "'requests_per_unit' must be a whole number from 0 to 4294967295, found an empty or invalid value",
            ),
        ],
    );
}

#[test]
fn independent_errors_are_all_reported_in_order() {
    assert_errors(
        r#"
        domain: d
        descriptors:
          - key: a
            rate_limit: {unit: foo}
          - key: a
          - key: a
          - value: x
            ratelimit: 5
    "#,
        &[
            (
                4,
                "invalid rate limit unit 'foo' (expected one of: second, minute, hour, day, week, month, year)",
            ),
            (5, "duplicate descriptor 'a' (first at line 3)"),
            (6, "duplicate descriptor 'a' (first at line 3)"),
            (7, "the descriptor has no 'key'"),
            (
                8,
                "unknown key 'ratelimit' in the descriptor (did you mean 'rate_limit'?)",
            ),
        ],
    );
}

#[test]
fn nesting_too_deep_is_an_error_not_a_crash() {
    let deep = format!("domain: d\ndescriptors:\n{}x\n", "- ".repeat(20_000));
    assert_errors(&deep, &[(3, "invalid YAML: nested deeper than 128 levels")]);
    let flow = format!("domain: d\nmetadata: {}", "[".repeat(200));
    assert_errors(&flow, &[(2, "invalid YAML: nested deeper than 128 levels")]);
}

#[test]
fn errors_display_file_line_and_column() {
    let errors = errors_of_sources(
        &[(
            "cfg/a.yaml",
            "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: foo}\n",
        )],
        &LoadOptions::default(),
    );
    assert_eq!(
        errors,
        [ConfigError {
            file: "cfg/a.yaml".into(),
            line: 4,
            column: 24,
            message: "invalid rate limit unit 'foo' (expected one of: second, minute, hour, day, week, month, year)".into(),
        }]
    );
    assert_eq!(
        errors[0].to_string(),
        "cfg/a.yaml:4:24: invalid rate limit unit 'foo' (expected one of: second, minute, hour, day, week, month, year)"
    );
    let unreadable = ConfigError::whole_file("gone.yaml", "cannot read: no such file");
    assert_eq!(
        unreadable.to_string(),
        "gone.yaml: cannot read: no such file"
    );
    let both = ConfigErrors(vec![errors[0].clone(), unreadable]);
    assert_eq!(
        both.to_string(),
        format!("{}\ngone.yaml: cannot read: no such file", errors[0])
    );
}

// ---- several files ----

#[test]
fn a_domain_in_two_files_is_refused_unless_merging() {
    let files = [
        (
            "basic.yaml",
            "domain: test-domain\ndescriptors:\n  - key: a\n",
        ),
        ("again.yaml", "# again\ndomain: test-domain\ndescriptors:\n"),
    ];
    let errors = errors_of_sources(&files, &LoadOptions::default());
    assert_eq!(
        errors,
        [ConfigError {
            file: "again.yaml".into(),
            line: 2,
            column: 9,
            message: "duplicate domain 'test-domain' (also in basic.yaml)".into(),
        }]
    );
    let merged = loaded_sources(&files, &MERGE);
    assert_eq!(merged.domains["test-domain"].descriptors.len(), 1);
}

#[test]
fn merged_domains_keep_rules_and_caps_unique() {
    let files = [
        (
            "one.yaml",
            "domain: d\nglobal: [{name: g, unit: day}]\ndescriptors:\n  - {key: k, value: v}\n",
        ),
        (
            "two.yaml",
            "domain: d\nglobal: [{name: g, unit: hour}]\ndescriptors:\n  - {key: k, value: v}\n",
        ),
    ];
    let errors = errors_of_sources(&files, &MERGE);
    let shown: Vec<String> = errors.iter().map(ConfigError::to_string).collect();
    assert_eq!(
        shown,
        [
            "two.yaml:2:10: duplicate global cap 'g' (first at one.yaml:2)",
            "two.yaml:4:5: duplicate descriptor 'k=v' (first at one.yaml:4)",
        ]
    );
}

#[test]
fn one_bad_file_refuses_the_whole_config() {
    let errors = errors_of_sources(
        &[
            ("good.yaml", "domain: good\n"),
            ("bad.yaml", "domain: bad\ndescriptors: [{key: ''}]\n"),
            ("worse.yaml", "domain: [worse]\n"),
        ],
        &LoadOptions::default(),
    );
    let shown: Vec<String> = errors.iter().map(ConfigError::to_string).collect();
    assert_eq!(
        shown,
        [
            "bad.yaml:2:21: the descriptor has an empty 'key'",
            "worse.yaml:1:9: 'domain' must be a string, found a list",
        ]
    );
}

#[test]
fn no_sources_is_an_empty_config() {
    let config = loaded_sources(&[], &LoadOptions::default());
    assert!(config.domains.is_empty());
    assert_eq!(config.summary(), "");
}

// ---- files and directories ----

#[test]
fn a_directory_loads_its_yaml_files_in_name_order() -> io::Result<()> {
    let dir = TempDir::new()?;
    let write = |name: &str, text: &str| fs::write(dir.0.join(name), yaml(text));
    write(
        "b.yaml",
        "domain: shared\ndescriptors: [{key: from-b, rate_limit: {unit: day}}]\n",
    )?;
    write("a.yml", "domain: shared\ndescriptors: [{key: from-a}]\n")?;
    write("c.yaml", "domain: solo\n")?;
    write("notes.txt", "not: [config")?;
    write(".hidden.yaml", "not: [config")?;
    fs::create_dir(dir.0.join("nested.yaml"))?;
    write("nested.yaml/inner.yaml", "not: [config")?;

    let config = match load_path(&dir.0, &MERGE) {
        Ok(config) => config,
        Err(e) => panic!("{e}"),
    };
    let shared = &config.domains["shared"];
    let keys: Vec<&str> = shared.descriptors.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["from-a", "from-b"]);
    let a = dir.0.join("a.yml").display().to_string();
    let b = dir.0.join("b.yaml").display().to_string();
    let files: Vec<&str> = shared.files.iter().map(|f| &**f).collect();
    assert_eq!(files, [a.as_str(), b.as_str()]);
    assert_eq!(config.domains.len(), 2);

    match load_path(&dir.0, &LoadOptions::default()) {
        Ok(_) => panic!("the same domain in two files must be refused without merging"),
        Err(e) => assert_eq!(
            e.to_string(),
            format!("{b}:1:9: duplicate domain 'shared' (also in {a})")
        ),
    }
    Ok(())
}

#[test]
fn a_directory_without_yaml_files_is_an_error() -> io::Result<()> {
    let dir = TempDir::new()?;
    fs::write(dir.0.join("readme.txt"), "nothing here")?;
    match load_path(&dir.0, &LoadOptions::default()) {
        Ok(_) => panic!("an empty directory must be refused"),
        Err(e) => assert_eq!(
            e.to_string(),
            format!(
                "{}: no *.yaml or *.yml file in this directory",
                dir.0.display()
            )
        ),
    }
    Ok(())
}

#[test]
fn a_temp_dir_is_removed_when_dropped() -> io::Result<()> {
    let dir = TempDir::new()?;
    let path = dir.0.clone();
    fs::write(path.join("a.yaml"), "domain: d\n")?;
    drop(dir);
    assert!(!path.exists());
    Ok(())
}

#[test]
fn a_missing_file_is_an_error_without_position() {
    let path = fixtures().join("no-such-file.yaml");
    let errors = match load_path(&path, &LoadOptions::default()) {
        Ok(_) => panic!("a missing file must be refused"),
        Err(ConfigErrors(errors)) => errors,
    };
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].column), (0, 0));
    assert_eq!(errors[0].file, path.display().to_string());
    assert!(
        errors[0].message.starts_with("cannot read: "),
        "{}",
        errors[0]
    );
    assert!(
        errors[0]
            .to_string()
            .starts_with(&format!("{}: cannot read: ", path.display()))
    );
}

// ---- the project's fixtures ----

#[test]
fn fixture_ask_ai_loads_every_feature() {
    let config = match load_path(&fixtures().join("ask_ai.yaml"), &LoadOptions::default()) {
        Ok(config) => config,
        Err(e) => panic!("{e}"),
    };
    let d = &config.domains["ask-ai"];
    let caps: Vec<(&str, u32, Unit)> = d
        .global
        .iter()
        .map(|c| (c.name.as_str(), c.requests_per_unit, c.unit))
        .collect();
    assert_eq!(
        caps,
        [
            ("all-clients-day", 100_000, Unit::Day),
            ("all-clients-second", 50, Unit::Second)
        ]
    );

    let client = rule(&d.descriptors, "client", None);
    assert_eq!(client.limits.len(), 2);
    assert_eq!(client.limits[1].policy, per_unit(200, Unit::Day));
    assert_eq!(client.limits[1].fail, FailMode::Closed);
    let model = only_limit(rule(&client.descriptors, "model", Some("gpt-*")));
    assert_eq!(model.replaces, ["per-client-minute"]);

    let own = rule(&d.descriptors, "client", Some("10.0.0.1"));
    assert!(own.detailed_metric);
    assert_eq!(only_limit(own).policy, LimitPolicy::Unlimited);

    let tokens = rule(&d.descriptors, "tokens", None);
    let spend = only_limit(tokens);
    assert!(spend.postpaid && spend.shadow_mode);
    assert_eq!(
        tokens.metadata,
        Some(json!({"owner": "billing", "tiers": ["free", "paid"], "weight": 1.5}))
    );

    let status = only_limit(rule(&d.descriptors, "status", Some("429")));
    assert_eq!(status.policy, per_unit(0, Unit::Week));

    let path = rule(&d.descriptors, "path", Some("files/*"));
    assert!(path.share_threshold && path.value_to_metric);
    assert_eq!(only_limit(path).policy, per_unit(u32::MAX, Unit::Month));

    assert!(rule(&d.descriptors, "health", None).limits.is_empty());
    assert_eq!(
        config.summary(),
        format!(
            "domain ask-ai: 7 rules, 7 limits, 2 global caps (files: {})\n",
            fixtures().join("ask_ai.yaml").display()
        )
    );
}

#[test]
fn fixture_directory_loads_only_its_own_files() {
    // `bad/` is a directory beside ask_ai.yaml: not read.
    match load_path(&fixtures(), &LoadOptions::default()) {
        Ok(config) => assert_eq!(config.domains.keys().collect::<Vec<_>>(), ["ask-ai"]),
        Err(e) => panic!("{e}"),
    }
}

/// The errors of one bad fixture, as (line, message), after checking they name its file.
fn fixture_errors(name: &str) -> Vec<(usize, String)> {
    let path = fixtures().join("bad").join(name);
    match load_path(&path, &LoadOptions::default()) {
        Ok(_) => panic!("{name} must be refused"),
        Err(ConfigErrors(errors)) => errors
            .into_iter()
            .inspect(|e| assert_eq!(e.file, path.display().to_string()))
            .map(|e| (e.line, e.message))
            .collect(),
    }
}

#[track_caller]
fn assert_fixture_errors(name: &str, expected: &[(usize, &str)]) {
    let expected: Vec<(usize, String)> = expected
        .iter()
        .map(|&(line, message)| (line, message.to_owned()))
        .collect();
    assert_eq!(fixture_errors(name), expected);
}

#[test]
fn fixture_many_mistakes_reports_each() {
    assert_fixture_errors(
        "many_mistakes.yaml",
        &[
            (
                5,
                "invalid rate limit unit 'days' (expected one of: second, minute, hour, day, week, month, year)",
            ),
            (
                9,
                "unknown key 'ratelimit' in the descriptor (did you mean 'rate_limit'?)",
            ),
            (
                13,
                "'shadow_mode' must be true or false, found string 'yes'",
            ),
            (
                16,
                "'requests_per_unit' must be a whole number from 0 to 4294967295, found integer -1",
            ),
            (20, "'unit' given with unlimited: true (it has no counter)"),
        ],
    );
}

#[test]
fn fixture_duplicates() {
    assert_fixture_errors(
        "duplicates.yaml",
        &[
            (6, "duplicate global cap 'day-cap' (first at line 3)"),
            (14, "duplicate descriptor 'model=small' (first at line 12)"),
            (18, "duplicate descriptor 'client' (first at line 10)"),
        ],
    );
}

#[test]
fn fixture_limits() {
    assert_fixture_errors(
        "limits.yaml",
        &[
            (9, "the rate limit 'per-client' replaces itself"),
            (10, "give 'rate_limit' or 'rate_limits', not both"),
            (15, "the rate limit has no 'unit'"),
            (
                16,
                "invalid fail mode 'sometimes' (expected open or closed)",
            ),
            (18, "the replaces entry has an empty 'name'"),
        ],
    );
}

#[test]
fn fixture_unclosed_flow_mapping() {
    assert_fixture_errors(
        "unclosed.yaml",
        &[(
            5,
            "invalid YAML: while parsing a flow mapping, did not find expected ',' or '}'",
        )],
    );
}

/// Every byte-level mutation of a real file either loads or is refused; none may panic.
#[test]
fn mutated_input_never_panics() {
    let original = match fs::read(fixtures().join("ask_ai.yaml")) {
        Ok(bytes) => bytes,
        Err(e) => panic!("{e}"),
    };
    let noise: &[u8] = b"-:{}[],&*!|>'\"%@`#\n\t ?0\xc3\xa9x~";
    // A fixed linear congruential sequence: the same mutations on every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as usize % bound.max(1)
    };
    for _ in 0..1500 {
        let mut bytes = original.clone();
        for _ in 0..=next(4) {
            let at = next(bytes.len());
            match next(3) {
                0 => bytes[at] = noise[next(noise.len())],
                1 => bytes.insert(at, noise[next(noise.len())]),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = load_sources(&[("fuzz.yaml".into(), text)], &MERGE);
    }
}

/// Aliases build depth the event-level check cannot see; saphyr's alias budget bounds it, and
/// reading what it allows must fit in a test thread's stack.
#[test]
fn deep_alias_chains_load_without_overflow() {
    let mut text =
        String::from("domain: d\ndescriptors:\n  - key: k\n    metadata:\n      a0: &a0 [x]\n");
    for i in 1..440 {
        text.push_str(&format!("      a{i}: &a{i} [*a{}]\n", i - 1));
    }
    let d = domain_of(&text);
    let mut depth = 0;
    let mut node = d.descriptors[0]
        .metadata
        .as_ref()
        .and_then(|m| m.get("a439"));
    while let Some(serde_json::Value::Array(items)) = node {
        depth += 1;
        node = items.first();
    }
    assert_eq!(depth, 440);
}
