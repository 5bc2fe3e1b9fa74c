//! Loading rate-limit configuration: YAML files into a [`RateLimitConfig`].
//!
//! Owns the file format, the reference service's (envoyproxy/ratelimit) plus Tollgate's
//! extensions (`rate_limits:` lists, per-limit `shadow_mode`, `postpaid` and `fail`, domain-level
//! `global:` caps), and all of its validation. Every problem is reported with its file, line and
//! column, as many as one pass finds, and any problem refuses the whole configuration: nothing is
//! ever half-loaded. Watching files and compiling the matching tree belong elsewhere.

use std::collections::btree_map::{self, BTreeMap};
use std::collections::hash_map::{self, HashMap};
use std::fs;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use saphyr::{MarkedYaml, YamlData};
use serde_json::Value as Json;

pub use super::error::{ConfigError, ConfigErrors};
use super::model::{
    DescriptorRule, Domain, FailMode, GlobalCap, Limit, LimitPolicy, RateLimitConfig, SourcePos,
    Unit,
};
use super::yaml::{self, Fields, Reader};

#[cfg(test)]
mod tests;

const TOP_KEYS: &[&str] = &["domain", "global", "descriptors"];
const RULE_KEYS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "rate_limits",
    "shadow_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "metadata",
    "descriptors",
];
const LIMIT_KEYS: &[&str] = &[
    "name",
    "unit",
    "requests_per_unit",
    "unlimited",
    "replaces",
    "shadow_mode",
    "postpaid",
    "fail",
];
const CAP_KEYS: &[&str] = &["name", "unit", "requests_per_unit"];
const REPLACES_KEYS: &[&str] = &["name"];

/// How several files are combined.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Files naming the same domain are merged, their descriptors and global caps concatenated in
    /// file order (the reference's `MERGE_DOMAIN_CONFIG`). Otherwise that is an error.
    pub merge_domains: bool,
}

/// A file, or every *.yaml / *.yml file directly in a directory (sorted by file name; none found
/// is an error).
pub fn load_path(path: &Path, opts: &LoadOptions) -> Result<RateLimitConfig, ConfigErrors> {
    load_sources(&read_path(path)?, opts)
}

/// Several (file name, text) sources, e.g. an embedded default config or test input.
pub fn load_sources(
    sources: &[(String, String)],
    opts: &LoadOptions,
) -> Result<RateLimitConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let files: Vec<FileDomain> = sources
        .iter()
        .filter_map(|(name, text)| read_source(name, text, &mut errors))
        .collect();
    let config = assemble(files, opts, &mut errors);
    if errors.is_empty() {
        return Ok(config);
    }
    sort_by_source(&mut errors, sources);
    Err(ConfigErrors(errors))
}

fn read_path(path: &Path) -> Result<Vec<(String, String)>, ConfigErrors> {
    let files = if path.is_dir() {
        yaml_files_in(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match yaml::read_file(&file) {
            Ok(text) => sources.push((file.display().to_string(), text)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The `*.yaml` and `*.yml` entries directly in `dir` that are not directories, by file name.
/// Hidden names are skipped: editors put lock files there (`.#a.yaml`, a dangling link).
fn yaml_files_in(dir: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError::whole_file(
            dir.display().to_string(),
            message,
        )])
    };
    let unreadable = |e: std::io::Error| fail(format!("cannot read directory: {e}"));
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if yaml && !hidden && !path.is_dir() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(fail("no *.yaml or *.yml file in this directory".into()));
    }
    files.sort();
    Ok(files)
}

/// Errors in the order of the sources, and by position within each.
fn sort_by_source(errors: &mut [ConfigError], sources: &[(String, String)]) {
    let rank: HashMap<&str, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    errors.sort_by_key(|e| (rank.get(e.file.as_str()).copied(), e.line, e.column));
}

/// One file's domain, and where its name is written (for a duplicate-domain error).
struct FileDomain {
    domain: Domain,
    name_pos: SourcePos,
}

/// Builds the domains from every file's: merges or refuses a domain named twice, then checks what
/// must be unique across a whole domain.
fn assemble(
    files: Vec<FileDomain>,
    opts: &LoadOptions,
    errors: &mut Vec<ConfigError>,
) -> RateLimitConfig {
    let mut domains = BTreeMap::new();
    for FileDomain { domain, name_pos } in files {
        match domains.entry(domain.name.clone()) {
            btree_map::Entry::Vacant(slot) => {
                slot.insert(domain);
            }
            btree_map::Entry::Occupied(mut slot) if opts.merge_domains => {
                let merged: &mut Domain = slot.get_mut();
                merged.descriptors.extend(domain.descriptors);
                merged.global.extend(domain.global);
                merged.files.extend(domain.files);
            }
            btree_map::Entry::Occupied(slot) => errors.push(ConfigError::at(
                &name_pos,
                format!(
                    "duplicate domain '{}' (also in {})",
                    domain.name,
                    slot.get().files.join(", ")
                ),
            )),
        }
    }
    for domain in domains.values() {
        check_unique_rules(&domain.descriptors, errors);
        check_unique_caps(&domain.global, errors);
    }
    RateLimitConfig { domains }
}

/// Sibling rules must differ in key or value (no value is a value of its own): two alike would
/// claim the same requests.
fn check_unique_rules(rules: &[DescriptorRule], errors: &mut Vec<ConfigError>) {
    let describe = |r: &DescriptorRule| match &r.value {
        Some(value) => format!("descriptor '{}={value}'", r.key),
        None => format!("descriptor '{}'", r.key),
    };
    report_duplicates(
        rules,
        |r| ((r.key.as_str(), r.value.as_deref()), &r.pos),
        describe,
        errors,
    );
}

fn check_unique_caps(caps: &[GlobalCap], errors: &mut Vec<ConfigError>) {
    report_duplicates(
        caps,
        |c| (c.name.as_str(), &c.pos),
        |c| format!("global cap '{}'", c.name),
        errors,
    );
}

/// Reports every item whose identity an earlier item already has.
fn report_duplicates<'a, T, K: Eq + Hash>(
    items: &'a [T],
    identity: impl Fn(&'a T) -> (K, &'a SourcePos),
    describe: impl Fn(&T) -> String,
    errors: &mut Vec<ConfigError>,
) {
    let mut first_at = HashMap::new();
    for item in items {
        let (id, pos) = identity(item);
        match first_at.entry(id) {
            hash_map::Entry::Vacant(slot) => {
                slot.insert(pos);
            }
            hash_map::Entry::Occupied(first) => errors.push(ConfigError::at(
                pos,
                format!(
                    "duplicate {} (first at {})",
                    describe(item),
                    earlier(first.get(), pos)
                ),
            )),
        }
    }
}

/// Where an earlier item is: its line, with its file when that is another one.
fn earlier(first: &SourcePos, here: &SourcePos) -> String {
    if first.file == here.file {
        format!("line {}", first.line)
    } else {
        format!("{}:{}", first.file, first.line)
    }
}

/// Reads one source into its domain, recording every problem found on the way. `None` when there
/// is no domain name to file it under (the problem is recorded).
fn read_source(file: &str, text: &str, errors: &mut Vec<ConfigError>) -> Option<FileDomain> {
    yaml::read_document(
        file,
        text,
        errors,
        "a mapping with a 'domain' key",
        "a file holds one domain",
        |reader, top| reader.domain(top),
    )
}

/// The configuration format, read on top of the generic [`Reader`].
impl Reader<'_, '_> {
    fn domain(&mut self, node: &MarkedYaml<'_>) -> Option<FileDomain> {
        let f = self.fields(node, TOP_KEYS, "the top level")?;
        let name = self.required_text(&f, "domain", "the top level");
        let global = f
            .get("global")
            .map_or_else(Vec::new, |n| self.global_caps(n));
        let descriptors = self.rules(f.get("descriptors"));
        let (name, name_node) = name?;
        Some(FileDomain {
            name_pos: self.pos(name_node),
            domain: Domain {
                name,
                descriptors,
                global,
                files: vec![Arc::clone(self.file())],
            },
        })
    }

    fn global_caps(&mut self, node: &MarkedYaml<'_>) -> Vec<GlobalCap> {
        let items = self.list(node, "global");
        items.iter().filter_map(|n| self.global_cap(n)).collect()
    }

    fn global_cap(&mut self, node: &MarkedYaml<'_>) -> Option<GlobalCap> {
        let f = self.fields(node, CAP_KEYS, "the global cap")?;
        let name = self.required_text(&f, "name", "the global cap");
        let requests_per_unit = self.count(&f, "requests_per_unit");
        let unit = self.unit(&f, "the global cap");
        Some(GlobalCap {
            name: name?.0,
            requests_per_unit,
            unit: unit?,
            pos: self.pos(node),
        })
    }

    /// A `descriptors:` list; absent or null is empty.
    fn rules(&mut self, node: Option<&MarkedYaml<'_>>) -> Vec<DescriptorRule> {
        let Some(node) = node else {
            return Vec::new();
        };
        let items = self.list(node, "descriptors");
        items.iter().filter_map(|n| self.rule(n)).collect()
    }

    fn rule(&mut self, node: &MarkedYaml<'_>) -> Option<DescriptorRule> {
        let f = self.fields(node, RULE_KEYS, "the descriptor")?;
        let key = self.required_text(&f, "key", "the descriptor");
        let value = self.optional_text(&f, "value");
        let limits = self.rule_limits(&f);
        let share_threshold = self.flag(&f, "share_threshold");
        let detailed_metric = self.flag(&f, "detailed_metric");
        let value_to_metric = self.flag(&f, "value_to_metric");
        let metadata = f.get("metadata").and_then(|n| self.metadata(n));
        let descriptors = self.rules(f.get("descriptors"));
        check_unique_rules(&descriptors, self.errors());
        Some(DescriptorRule {
            key: key?.0,
            value,
            limits,
            descriptors,
            share_threshold,
            detailed_metric,
            value_to_metric,
            metadata,
            pos: self.pos(node),
        })
    }

    /// `rate_limit:` or `rate_limits:`, not both. The descriptor's `shadow_mode` covers each.
    fn rule_limits(&mut self, f: &Fields<'_, '_>) -> Vec<Limit> {
        let shadow_mode = self.flag(f, "shadow_mode");
        let one = f.get("rate_limit");
        let many = f.get("rate_limits");
        if one.is_some()
            && let Some(key) = many.and(f.key_node("rate_limits"))
        {
            self.error(key, "give 'rate_limit' or 'rate_limits', not both");
        }
        let many = many.map_or(&[][..], |n| self.list(n, "rate_limits"));
        one.into_iter()
            .chain(many)
            .filter_map(|n| self.limit(n, shadow_mode))
            .collect()
    }

    fn limit(&mut self, node: &MarkedYaml<'_>, rule_shadow_mode: bool) -> Option<Limit> {
        let f = self.fields(node, LIMIT_KEYS, "the rate limit")?;
        let name = self.optional_text(&f, "name");
        let replaces = self.replaces(&f, name.as_deref());
        let shadow_mode = self.flag(&f, "shadow_mode");
        let postpaid = self.flag(&f, "postpaid");
        let fail = self.fail_mode(&f);
        let policy = self.policy(&f)?;
        Some(Limit {
            name,
            policy,
            shadow_mode: shadow_mode || rule_shadow_mode,
            postpaid,
            fail,
            replaces,
            pos: self.pos(node),
        })
    }

    /// `unlimited: true`, or a count per unit; absent `requests_per_unit` is 0, which denies all.
    fn policy(&mut self, f: &Fields<'_, '_>) -> Option<LimitPolicy> {
        if self.flag(f, "unlimited") {
            for key in ["unit", "requests_per_unit"] {
                if let Some(node) = f.get(key) {
                    let message = format!("'{key}' given with unlimited: true (it has no counter)");
                    self.error(node, message);
                }
            }
            return Some(LimitPolicy::Unlimited);
        }
        let requests_per_unit = self.count(f, "requests_per_unit");
        let unit = self.unit(f, "the rate limit")?;
        Some(LimitPolicy::PerUnit {
            requests_per_unit,
            unit,
        })
    }

    fn replaces(&mut self, f: &Fields<'_, '_>, own_name: Option<&str>) -> Vec<String> {
        let items = f
            .get("replaces")
            .map_or(&[][..], |n| self.list(n, "replaces"));
        let mut names = Vec::new();
        for item in items {
            let Some(entry) = self.fields(item, REPLACES_KEYS, "the replaces entry") else {
                continue;
            };
            let Some((name, node)) = self.required_text(&entry, "name", "the replaces entry")
            else {
                continue;
            };
            if own_name == Some(name.as_str()) {
                self.error(node, format!("the rate limit '{name}' replaces itself"));
            } else {
                names.push(name);
            }
        }
        names
    }

    fn metadata(&mut self, node: &MarkedYaml<'_>) -> Option<Json> {
        if !matches!(node.data, YamlData::Mapping(_)) {
            let message = format!(
                "'metadata' must be a mapping, found {}",
                self.describe(node)
            );
            self.error(node, message);
            return None;
        }
        self.json(node)
    }

    fn unit(&mut self, f: &Fields<'_, '_>, owner: &str) -> Option<Unit> {
        let Some(node) = f.get("unit") else {
            self.error(f.map, format!("{owner} has no 'unit'"));
            return None;
        };
        let text = self.text(node, "unit")?;
        let unit = Unit::parse(&text);
        if unit.is_none() {
            let units = Unit::ALL.map(Unit::as_str).join(", ");
            let message = format!("invalid rate limit unit '{text}' (expected one of: {units})");
            self.error(node, message);
        }
        unit
    }

    fn fail_mode(&mut self, f: &Fields<'_, '_>) -> FailMode {
        let Some(node) = f.get("fail") else {
            return FailMode::default();
        };
        match self.text(node, "fail") {
            Some(text) if text.eq_ignore_ascii_case("open") => FailMode::Open,
            Some(text) if text.eq_ignore_ascii_case("closed") => FailMode::Closed,
            Some(text) => {
                let message = format!("invalid fail mode '{text}' (expected open or closed)");
                self.error(node, message);
                FailMode::default()
            }
            None => FailMode::default(),
        }
    }
}
