//! Tollgate reads the reference service's own configuration fixtures (envoyproxy/ratelimit,
//! `test/config/`) the way the reference does: it loads what the reference loads and refuses what
//! it refuses. The fixtures are not ours and stay outside the repository, in
//! `../shared/compat/envoy-ratelimit/` (see its EXPECTED.md). Without that folder these tests say
//! so loudly and pass, unless `TOLLGATE_REQUIRE_COMPAT=1` makes its absence a failure.
//!
//! The lookups of EXPECTED.md (which limit a request's entries match) go through the same
//! matching tree the server uses.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use tollgate::config::load::{load_path, load_sources};
use tollgate::config::{
    ConfigError, DescriptorRule, Domain, LimitPolicy, LoadOptions, RateLimitConfig, RuleTree, Unit,
};

const MUST_LOAD: &[&str] = &[
    "basic_config.yaml",
    "shadowmode_config.yaml",
    "wildcard.yaml",
    "share_threshold.yaml",
    "metadata.yaml",
];
const MERGED: [&str; 2] = ["merge_domain_key1.yaml", "merge_domain_key2.yaml"];

/// Files refused (with the files loaded before them), the file the error must name, and the gist
/// its message must contain.
const MUST_REJECT: &[(&[&str], &str, &str)] = &[
    (
        &["bad_limit_unit.yaml"],
        "bad_limit_unit.yaml",
        "invalid rate limit unit 'foo'",
    ),
    (&["bad_yaml.yaml"], "bad_yaml.yaml", "invalid YAML"),
    (
        &["basic_config.yaml", "duplicate_domain.yaml"],
        "duplicate_domain.yaml",
        "duplicate domain 'test-domain'",
    ),
    (
        &["duplicate_key.yaml"],
        "duplicate_key.yaml",
        "duplicate descriptor 'key1=value1'",
    ),
    (&["empty_domain.yaml"], "empty_domain.yaml", "'domain'"),
    (&["empty_key.yaml"], "empty_key.yaml", "'key'"),
    (
        &["misspelled_key.yaml"],
        "misspelled_key.yaml",
        "unknown key 'ratelimit'",
    ),
    (
        &["misspelled_key2.yaml"],
        "misspelled_key2.yaml",
        "unknown key 'requestsperunit'",
    ),
    (&["non_map_list.yaml"], "non_map_list.yaml", "'a'"),
    (&["non_string_key.yaml"], "non_string_key.yaml", "0.25"),
    (
        &["replaces_empty.yaml"],
        "replaces_empty.yaml",
        "replaces entry",
    ),
    (
        &["replaces_self.yaml"],
        "replaces_self.yaml",
        "replaces itself",
    ),
    (
        &["unlimited_with_unit.yaml"],
        "unlimited_with_unit.yaml",
        "'unit' given with unlimited",
    ),
];

/// The reference fixtures, or `None` after saying loudly why they are not checked.
fn compat_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/envoy-ratelimit");
    if dir.is_dir() {
        return Some(dir);
    }
    let required = std::env::var("TOLLGATE_REQUIRE_COMPAT").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "TOLLGATE_REQUIRE_COMPAT=1 but {} is absent",
        dir.display()
    );
    // Once, and straight to the stream, not `eprintln!`: the test harness captures that and shows
    // it only on failure, and this must be seen when everything passes.
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! compat_reference: {} is absent: the reference service's configs were NOT \
             checked (set TOLLGATE_REQUIRE_COMPAT=1 to make this a failure) !!!!!!!!\n",
            dir.display()
        );
    });
    None
}

fn name_of(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// `files` as sources, in the given order, named by their paths.
fn sources(dir: &Path, files: &[&str]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|file| match fs::read_to_string(dir.join(file)) {
            Ok(text) => (name_of(dir, file), text),
            Err(e) => panic!("cannot read {file}: {e}"),
        })
        .collect()
}

fn load_file(dir: &Path, file: &str) -> RateLimitConfig {
    match load_path(&dir.join(file), &LoadOptions::default()) {
        Ok(config) => config,
        Err(e) => panic!("{file} must load, got:\n{e}"),
    }
}

fn test_domain(config: &RateLimitConfig) -> &Domain {
    match config.domains.get("test-domain") {
        Some(domain) => domain,
        None => panic!("no test-domain in:\n{}", config.summary()),
    }
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

/// The policy of a rule's one limit, or `None` when it has no limit.
fn policy(rule: &DescriptorRule) -> Option<LimitPolicy> {
    match rule.limits.as_slice() {
        [] => None,
        [limit] => Some(limit.policy),
        more => panic!("{} has {} limits", rule.key, more.len()),
    }
}

fn per_unit(requests_per_unit: u32, unit: Unit) -> Option<LimitPolicy> {
    Some(LimitPolicy::PerUnit {
        requests_per_unit,
        unit,
    })
}

#[test]
fn every_reference_fixture_is_classified() {
    let Some(dir) = compat_dir() else { return };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") {
            continue;
        }
        let known = MUST_LOAD.contains(&name.as_str())
            || MERGED.contains(&name.as_str())
            || MUST_REJECT.iter().any(|(_, file, _)| *file == name);
        assert!(
            known,
            "{name} is new in the reference fixtures: classify it here"
        );
    }
}

#[test]
fn what_the_reference_loads_loads() {
    let Some(dir) = compat_dir() else { return };
    for file in MUST_LOAD {
        let config = load_file(&dir, file);
        let domain = test_domain(&config);
        assert_eq!(domain.files.len(), 1);
        assert_eq!(&*domain.files[0], name_of(&dir, file));
    }
}

#[test]
fn what_the_reference_refuses_is_refused() {
    let Some(dir) = compat_dir() else { return };
    for (files, culprit, gist) in MUST_REJECT {
        let errors = match load_sources(&sources(&dir, files), &LoadOptions::default()) {
            Ok(config) => panic!("{files:?} must be refused, loaded:\n{}", config.summary()),
            Err(e) => e.0,
        };
        let named = |e: &ConfigError| e.file == name_of(&dir, culprit) && e.message.contains(gist);
        assert!(
            errors.iter().any(named),
            "{files:?}: expected an error in {culprit} containing {gist:?}, got:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn one_domain_in_two_files_loads_only_when_merging() {
    let Some(dir) = compat_dir() else { return };
    let both = sources(&dir, &MERGED);
    match load_sources(&both, &LoadOptions::default()) {
        Ok(_) => panic!("the same domain in two files must be refused without merging"),
        Err(e) => assert!(
            e.0.iter().any(|e| e.file == name_of(&dir, MERGED[1])
                && e.message.contains("duplicate domain 'test-domain'")),
            "{e}"
        ),
    }
    let merging = LoadOptions {
        merge_domains: true,
    };
    let config = match load_sources(&both, &merging) {
        Ok(config) => config,
        Err(e) => panic!("merging must load, got:\n{e}"),
    };
    let domain = test_domain(&config);
    let files: Vec<String> = domain.files.iter().map(|f| f.to_string()).collect();
    assert_eq!(files, MERGED.map(|f| name_of(&dir, f)));
    let key1 = rule(&domain.descriptors, "key1", Some("value1"));
    assert_eq!(policy(key1), per_unit(10, Unit::Minute));
    let key2 = rule(&domain.descriptors, "key2", Some("value2"));
    assert_eq!(policy(key2), per_unit(20, Unit::Minute));
}

#[test]
fn basic_config_limits() {
    let Some(dir) = compat_dir() else { return };
    let config = load_file(&dir, "basic_config.yaml");
    let rules = &test_domain(&config).descriptors;

    let key1 = rule(rules, "key1", Some("value1"));
    assert_eq!(policy(key1), None);
    let sub = |value| policy(rule(&key1.descriptors, "subkey1", value));
    assert_eq!(sub(None), per_unit(5, Unit::Second));
    assert_eq!(sub(Some("subvalue1")), per_unit(10, Unit::Second));

    assert_eq!(
        policy(rule(rules, "key2", None)),
        per_unit(20, Unit::Minute)
    );
    assert_eq!(
        policy(rule(rules, "key2", Some("value2"))),
        per_unit(30, Unit::Minute)
    );
    assert_eq!(policy(rule(rules, "key2", Some("value3"))), None);
    assert_eq!(policy(rule(rules, "key3", None)), per_unit(1, Unit::Hour));

    let key4 = rule(rules, "key4", None);
    assert_eq!(policy(key4), per_unit(1, Unit::Day));
    assert_eq!(key4.limits[0].name.as_deref(), Some("key4_rate_limit"));

    let key5 = rule(rules, "key5", Some("value5"));
    assert_eq!(policy(key5), per_unit(15, Unit::Day));
    let subkey5 = rule(&key5.descriptors, "subkey5", Some("subvalue5"));
    assert_eq!(policy(subkey5), per_unit(25, Unit::Day));

    assert_eq!(
        policy(rule(rules, "key6", None)),
        Some(LimitPolicy::Unlimited)
    );
    let key7 = rule(rules, "key7", None);
    assert_eq!(policy(key7), per_unit(70, Unit::Minute));
    assert!(key7.detailed_metric);
    assert!(rules.iter().flat_map(|r| &r.limits).all(|l| !l.shadow_mode));
}

#[test]
fn shadow_mode_config_flags() {
    let Some(dir) = compat_dir() else { return };
    let config = load_file(&dir, "shadowmode_config.yaml");
    let rules = &test_domain(&config).descriptors;
    let shadow = |rule: &DescriptorRule| rule.limits.iter().all(|l| l.shadow_mode);

    let key1 = rule(rules, "key1", Some("value1"));
    assert!(shadow(rule(
        &key1.descriptors,
        "subkey1",
        Some("subvalue1")
    )));
    assert!(!shadow(rule(&key1.descriptors, "subkey1", None)));
    assert!(shadow(rule(rules, "key2", None)));
    assert!(!shadow(rule(rules, "key2", Some("value2"))));
}

#[test]
fn wildcard_values_are_kept_as_written() {
    let Some(dir) = compat_dir() else { return };
    let config = load_file(&dir, "wildcard.yaml");
    let rules = &test_domain(&config).descriptors;
    for (key, value) in [
        ("wild", "foo*"),
        ("noWild", "foo"),
        ("midWild", "bar*b"),
        ("multiWild", "foo*bar*baz"),
    ] {
        assert!(
            policy(rule(rules, key, Some(value))).is_some(),
            "{key}={value}"
        );
    }
    let nested = rule(rules, "nestedWild", Some("val1"));
    assert_eq!(
        policy(rule(&nested.descriptors, "wild", Some("goo*"))),
        per_unit(20, Unit::Minute)
    );
    assert_eq!(
        policy(rule(rules, "noVal", None)),
        per_unit(20, Unit::Minute)
    );
}

#[test]
fn share_threshold_and_metadata_are_kept() {
    let Some(dir) = compat_dir() else { return };
    let config = load_file(&dir, "share_threshold.yaml");
    let rules = &test_domain(&config).descriptors;
    let files = rule(rules, "files", Some("files/*"));
    assert!(files.share_threshold);
    assert_eq!(policy(files), per_unit(100, Unit::Minute));
    let route = rule(rules, "route", Some("api/*"));
    assert!(route.share_threshold && route.value_to_metric);
    let exact = rule(rules, "file", Some("test1"));
    assert!(!exact.share_threshold);
    assert_eq!(policy(exact), per_unit(50, Unit::Minute));

    let config = load_file(&dir, "metadata.yaml");
    let rules = &test_domain(&config).descriptors;
    let key1 = rule(rules, "key1", Some("value1"));
    let subkey1 = rule(&key1.descriptors, "subkey1", None);
    assert_eq!(
        subkey1.metadata,
        Some(serde_json::json!({"name": "service_1"}))
    );
    assert_eq!(
        rule(rules, "key2", None).metadata,
        Some(serde_json::json!({"service_with_quota": {"name": "service_2"}}))
    );
}

/// A matched limit: its policy and name.
type Found = Option<(LimitPolicy, Option<String>)>;

/// What the tree matches for `entries` in `test-domain`: the first limit's policy and name.
fn lookup(tree: &RuleTree, entries: &[(&str, &str)]) -> Found {
    let domain = tree.domain("test-domain").expect("test-domain is loaded");
    let found = domain.find(entries.iter().copied())?;
    let limit = found.limits.first()?;
    Some((limit.policy, domain.limit_name(limit).map(str::to_owned)))
}

#[test]
fn basic_config_lookups_match_the_reference() {
    let Some(dir) = compat_dir() else { return };
    let tree = RuleTree::build(&load_file(&dir, "basic_config.yaml"));
    let per = |n, unit| {
        Some((
            LimitPolicy::PerUnit {
                requests_per_unit: n,
                unit,
            },
            None,
        ))
    };
    let cases: &[(&[(&str, &str)], Found)] = &[
        (&[("key1", "something")], None),
        (&[("key1", "value1")], None),
        (
            &[("key1", "value1"), ("subkey1", "something")],
            per(5, Unit::Second),
        ),
        (
            &[("key1", "value1"), ("subkey1", "subvalue1")],
            per(10, Unit::Second),
        ),
        (&[("key2", "anything")], per(20, Unit::Minute)),
        (&[("key2", "value2")], per(30, Unit::Minute)),
        (&[("key2", "value3")], None),
        (&[("key2", "value2"), ("subkey", "subvalue")], None),
        (&[("key3", "x")], per(1, Unit::Hour)),
        (
            &[("key4", "x")],
            Some((
                LimitPolicy::PerUnit {
                    requests_per_unit: 1,
                    unit: Unit::Day,
                },
                Some("key4_rate_limit".to_owned()),
            )),
        ),
        (&[("key5", "value5"), ("subkey5", "subvalue")], None),
        (&[("key6", "x")], Some((LimitPolicy::Unlimited, None))),
        (&[("key7", "x")], per(70, Unit::Minute)),
    ];
    for (entries, expected) in cases {
        assert_eq!(&lookup(&tree, entries), expected, "{entries:?}");
    }
    assert!(tree.domain("foo_domain").is_none());
}

#[test]
fn wildcard_lookups_match_the_reference() {
    let Some(dir) = compat_dir() else { return };
    let tree = RuleTree::build(&load_file(&dir, "wildcard.yaml"));
    let matches: &[&[(&str, &str)]] = &[
        &[("wild", "foo1")],
        &[("wild", "foo2")],
        &[("midWild", "barab")],
        &[("midWild", "bar123b")],
        &[("midWild", "barb")],
        &[("multiWild", "foo123bar456baz")],
        &[("multiWild", "foobarbaz")],
        &[("nestedWild", "val1"), ("wild", "goo2")],
    ];
    let misses: &[&[(&str, &str)]] = &[
        &[("wild", "bar")],
        &[("noWild", "foo1")],
        &[("midWild", "bara")],
        &[("midWild", "xbarb")],
        &[("multiWild", "foo123baz")],
        &[("multiWild", "bar456baz")],
    ];
    for entries in matches {
        assert!(lookup(&tree, entries).is_some(), "{entries:?} should match");
    }
    for entries in misses {
        assert!(
            lookup(&tree, entries).is_none(),
            "{entries:?} should not match"
        );
    }
}

#[test]
fn merged_domain_lookups_match_the_reference() {
    let Some(dir) = compat_dir() else { return };
    let merged = load_sources(
        &sources(&dir, &MERGED),
        &LoadOptions {
            merge_domains: true,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tree = RuleTree::build(&merged);
    let per = |n| {
        Some((
            LimitPolicy::PerUnit {
                requests_per_unit: n,
                unit: Unit::Minute,
            },
            None,
        ))
    };
    assert_eq!(lookup(&tree, &[("key1", "value1")]), per(10));
    assert_eq!(lookup(&tree, &[("key2", "value2")]), per(20));
}

/// `tollgate validate` on one reference file (or a directory), as an operator would run it.
fn validate(path: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("validate")
        .arg(path)
        .output()
        .expect("run tollgate validate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tollgate_validate_agrees_with_the_reference_file_by_file() {
    let Some(dir) = compat_dir() else { return };
    for file in MUST_LOAD {
        let (ok, errors) = validate(&dir.join(file));
        assert!(ok, "{file} must validate:\n{errors}");
    }
    for (files, culprit, _) in MUST_REJECT {
        if files.len() != 1 {
            continue; // a pair of files: covered by loading them together above
        }
        let (ok, errors) = validate(&dir.join(culprit));
        assert!(!ok, "{culprit} must be refused");
        assert!(
            errors.contains(culprit),
            "{culprit}: the error must name the file:\n{errors}"
        );
    }
}
