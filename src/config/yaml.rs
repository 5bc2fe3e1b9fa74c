//! Reading a saphyr YAML tree with positions: typed access to mappings, lists and scalars that
//! records a positioned error for every node of the wrong shape and carries on. Knows nothing of
//! the configuration format, which `load.rs` writes on top of [`Reader`]. Also the start every
//! file format shares: reading the file and taking its one document ([`read_file`],
//! [`read_document`]).

use std::path::Path;
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Marker, Scalar, ScanError, YamlData};
use saphyr_parser::{Event, Parser};
use serde_json::Value as Json;

use super::error::ConfigError;
use crate::config::model::SourcePos;

/// The deepest YAML nesting accepted. saphyr's loader recurses once per level, so a file nested
/// deeply enough would overflow the stack; real configs stay far below (a descriptor level is two).
const MAX_DEPTH: usize = 128;

/// Every document in `text`.
pub(crate) fn parse(text: &str) -> Result<Vec<MarkedYaml<'_>>, ScanError> {
    check_depth(text)?;
    MarkedYaml::load_from_str(text)
}

/// The text of the file at `path`; an unreadable file is one error naming it, with no position.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::whole_file(path.display().to_string(), format!("cannot read: {e}"))
    })
}

/// Reads the one YAML document of `text` (the source named `file`) with `read`, after a leading
/// byte-order mark. Invalid YAML, no document (expecting `expected`) and a second document
/// (`one_document` says why not) are recorded in `errors`; `None` when there is no document
/// to read or `read` gives none.
pub(crate) fn read_document<T>(
    file: &str,
    text: &str,
    errors: &mut Vec<ConfigError>,
    expected: &str,
    one_document: &str,
    read: impl FnOnce(&mut Reader<'_, '_>, &MarkedYaml<'_>) -> Option<T>,
) -> Option<T> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::new(file, text, errors);
    let docs = match parse(text) {
        Ok(docs) => docs,
        Err(e) => {
            reader.error_at(*e.marker(), format!("invalid YAML: {}", e.info()));
            return None;
        }
    };
    let Some(top) = docs.first() else {
        let message = format!("no YAML document: expected {expected}");
        reader.error_at(Marker::new(0, 1, 0), message);
        return None;
    };
    if let Some(second) = docs.get(1) {
        reader.error(second, format!("a second YAML document: {one_document}"));
    }
    read(&mut reader, top)
}

/// Walks the parser's events once, only to refuse nesting deeper than [`MAX_DEPTH`] before
/// saphyr's recursive loader sees it.
fn check_depth(text: &str) -> Result<(), ScanError> {
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event?;
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let message = format!("nested deeper than {MAX_DEPTH} levels");
                    return Err(ScanError::new(span.start, message));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A mapping whose keys were all checked against the keys its place allows.
pub(crate) struct Fields<'n, 'i> {
    pub(crate) map: &'n MarkedYaml<'i>,
    /// (key, key node, value node), in file order.
    entries: Vec<(&'n str, &'n MarkedYaml<'i>, &'n MarkedYaml<'i>)>,
}

impl<'n, 'i> Fields<'n, 'i> {
    /// The value given for `key`. A null value (`key:` alone) is as good as absent, as in the
    /// reference service.
    pub(crate) fn get(&self, key: &str) -> Option<&'n MarkedYaml<'i>> {
        self.entry(key)
            .map(|(_, value)| value)
            .filter(|value| !matches!(value.data, YamlData::Value(Scalar::Null)))
    }

    /// Where `key` itself is written, if given.
    pub(crate) fn key_node(&self, key: &str) -> Option<&'n MarkedYaml<'i>> {
        self.entry(key).map(|(key, _)| key)
    }

    fn entry(&self, key: &str) -> Option<(&'n MarkedYaml<'i>, &'n MarkedYaml<'i>)> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|&(_, key, value)| (key, value))
    }
}

/// Reads one file's tree, recording every problem it meets in `errors`.
pub(crate) struct Reader<'t, 'e> {
    file: Arc<str>,
    source: Source<'t>,
    errors: &'e mut Vec<ConfigError>,
}

impl<'t, 'e> Reader<'t, 'e> {
    pub(crate) fn new(file: &str, text: &'t str, errors: &'e mut Vec<ConfigError>) -> Self {
        Reader {
            file: Arc::from(file),
            source: Source::new(text),
            errors,
        }
    }

    pub(crate) fn file(&self) -> &Arc<str> {
        &self.file
    }

    /// The errors recorded so far, for checks made over what was read.
    pub(crate) fn errors(&mut self) -> &mut Vec<ConfigError> {
        self.errors
    }

    /// `node` as a mapping whose keys are strings among `allowed`; every other key is reported.
    pub(crate) fn fields<'n, 'i>(
        &mut self,
        node: &'n MarkedYaml<'i>,
        allowed: &[&str],
        owner: &str,
    ) -> Option<Fields<'n, 'i>> {
        let YamlData::Mapping(map) = &node.data else {
            let message = format!("{owner} must be a mapping, found {}", self.describe(node));
            self.error(node, message);
            return None;
        };
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map {
            match &key.data {
                YamlData::Value(Scalar::String(k)) if allowed.contains(&k.as_ref()) => {
                    entries.push((k.as_ref(), key, value));
                }
                YamlData::Value(Scalar::String(k)) => {
                    self.error(key, unknown_key(k, allowed, owner));
                }
                _ => {
                    let message = format!("a key must be a string, found {}", self.describe(key));
                    self.error(key, message);
                }
            }
        }
        Some(Fields { map: node, entries })
    }

    pub(crate) fn list<'n, 'i>(
        &mut self,
        node: &'n MarkedYaml<'i>,
        key: &str,
    ) -> &'n [MarkedYaml<'i>] {
        if let YamlData::Sequence(items) = &node.data {
            return items;
        }
        let message = format!("'{key}' must be a list, found {}", self.describe(node));
        self.error(node, message);
        &[]
    }

    /// A text that must be given and not empty, with the node it was read from.
    pub(crate) fn required_text<'n, 'i>(
        &mut self,
        f: &Fields<'n, 'i>,
        key: &str,
        owner: &str,
    ) -> Option<(String, &'n MarkedYaml<'i>)> {
        let Some(node) = f.get(key) else {
            self.error(f.map, format!("{owner} has no '{key}'"));
            return None;
        };
        let text = self.text(node, key)?;
        if text.is_empty() {
            self.error(node, format!("{owner} has an empty '{key}'"));
            return None;
        }
        Some((text, node))
    }

    /// A text that may be left out; empty is the same as absent, as in the reference service.
    pub(crate) fn optional_text(&mut self, f: &Fields<'_, '_>, key: &str) -> Option<String> {
        let node = f.get(key)?;
        self.text(node, key).filter(|text| !text.is_empty())
    }

    /// The text of `key`'s value, which must be a scalar (see [`Self::scalar_text`]).
    pub(crate) fn text(&mut self, node: &MarkedYaml<'_>, key: &str) -> Option<String> {
        let text = self.scalar_text(node);
        if text.is_none() {
            let message = format!("'{key}' must be a string, found {}", self.describe(node));
            self.error(node, message);
        }
        text
    }

    /// Any scalar but null, read as the text written, as the reference service reads it:
    /// `value: 429` is "429" and `value: 007` is "007", not the integer 7.
    fn scalar_text(&self, node: &MarkedYaml<'_>) -> Option<String> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_) | Scalar::Boolean(_)) => {
                Some(self.raw(node).to_owned())
            }
            _ => None,
        }
    }

    /// A boolean that may be left out (false).
    pub(crate) fn flag(&mut self, f: &Fields<'_, '_>, key: &str) -> bool {
        let Some(node) = f.get(key) else {
            return false;
        };
        if let YamlData::Value(Scalar::Boolean(flag)) = node.data {
            return flag;
        }
        let message = format!(
            "'{key}' must be true or false, found {}",
            self.describe(node)
        );
        self.error(node, message);
        false
    }

    /// A `u32` that may be left out (0).
    pub(crate) fn count(&mut self, f: &Fields<'_, '_>, key: &str) -> u32 {
        let Some(node) = f.get(key) else {
            return 0;
        };
        if let YamlData::Value(Scalar::Integer(n)) = node.data
            && let Ok(n) = u32::try_from(n)
        {
            return n;
        }
        let message = format!(
            "'{key}' must be a whole number from 0 to {}, found {}",
            u32::MAX,
            self.describe(node)
        );
        self.error(node, message);
        0
    }

    /// A YAML value as JSON. Every element is checked, so all that JSON cannot hold is reported.
    pub(crate) fn json(&mut self, node: &MarkedYaml<'_>) -> Option<Json> {
        match &node.data {
            YamlData::Sequence(items) => {
                let items: Vec<_> = items.iter().map(|item| self.json(item)).collect();
                items.into_iter().collect::<Option<_>>().map(Json::Array)
            }
            YamlData::Mapping(map) => {
                let entries: Vec<_> = map
                    .iter()
                    .map(|(k, v)| (self.json_key(k), self.json(v)))
                    .collect();
                let entries = entries.into_iter().map(|(k, v)| Some((k?, v?)));
                entries.collect::<Option<_>>().map(Json::Object)
            }
            data => {
                let scalar = json_scalar(data);
                if scalar.is_none() {
                    let message = format!("JSON cannot hold {}", self.describe(node));
                    self.error(node, message);
                }
                scalar
            }
        }
    }

    fn json_key(&mut self, node: &MarkedYaml<'_>) -> Option<String> {
        let key = self.scalar_text(node);
        if key.is_none() {
            let message = format!("a key must be a string, found {}", self.describe(node));
            self.error(node, message);
        }
        key
    }

    /// What a node is, for an error message.
    pub(crate) fn describe(&self, node: &MarkedYaml<'_>) -> String {
        match &node.data {
            YamlData::Value(Scalar::Null) => "null".into(),
            YamlData::Value(Scalar::Boolean(_)) => format!("boolean {}", self.raw(node)),
            YamlData::Value(Scalar::Integer(_)) => format!("integer {}", self.raw(node)),
            YamlData::Value(Scalar::FloatingPoint(_)) => format!("number {}", self.raw(node)),
            YamlData::Value(Scalar::String(s)) => format!("string '{}'", shorten(s)),
            YamlData::Sequence(_) => "a list".into(),
            YamlData::Mapping(_) => "a mapping".into(),
            YamlData::Tagged(tag, _) => format!("a value tagged {}", tag.as_ref()),
            // An empty document, a scalar its tag cannot hold (`!!int x`), or what the loader
            // resolves itself (aliases, representations).
            _ => "an empty or invalid value".into(),
        }
    }

    /// A scalar node as written in the file.
    fn raw(&self, node: &MarkedYaml<'_>) -> &'t str {
        let written = self.source.slice(node.span.start, node.span.end).trim_end();
        // A tag written before the scalar (`!!int 7`) is part of the node's span.
        match written
            .strip_prefix('!')
            .and_then(|t| t.split_once(char::is_whitespace))
        {
            Some((_, scalar)) => scalar.trim_start(),
            None => written,
        }
    }

    pub(crate) fn pos(&self, node: &MarkedYaml<'_>) -> SourcePos {
        self.pos_at(node.span.start)
    }

    fn pos_at(&self, mark: Marker) -> SourcePos {
        SourcePos {
            file: Arc::clone(&self.file),
            line: mark.line(),
            column: mark.col() + 1,
        }
    }

    pub(crate) fn error(&mut self, node: &MarkedYaml<'_>, message: impl Into<String>) {
        self.error_at(node.span.start, message);
    }

    pub(crate) fn error_at(&mut self, mark: Marker, message: impl Into<String>) {
        let error = ConfigError::at(&self.pos_at(mark), message);
        self.errors.push(error);
    }
}

/// The text of a file, to read scalars as they were written.
struct Source<'t> {
    text: &'t str,
    /// The byte offset of every character, when the text is not ASCII: saphyr counts characters.
    char_offsets: Option<Vec<usize>>,
}

impl<'t> Source<'t> {
    fn new(text: &'t str) -> Self {
        let char_offsets =
            (!text.is_ascii()).then(|| text.char_indices().map(|(i, _)| i).collect());
        Source { text, char_offsets }
    }

    fn slice(&self, from: Marker, to: Marker) -> &'t str {
        let byte = |m: Marker| match &self.char_offsets {
            None => m.index(),
            Some(offsets) => offsets.get(m.index()).copied().unwrap_or(self.text.len()),
        };
        self.text.get(byte(from)..byte(to)).unwrap_or_default()
    }
}

fn json_scalar<'i>(data: &YamlData<'i, MarkedYaml<'i>>) -> Option<Json> {
    match data {
        YamlData::Value(Scalar::Null) => Some(Json::Null),
        YamlData::Value(Scalar::Boolean(b)) => Some(Json::Bool(*b)),
        YamlData::Value(Scalar::Integer(i)) => Some(Json::from(*i)),
        YamlData::Value(Scalar::FloatingPoint(f)) => {
            serde_json::Number::from_f64(f.0).map(Json::Number)
        }
        YamlData::Value(Scalar::String(s)) => Some(Json::from(s.as_ref())),
        _ => None,
    }
}

fn unknown_key(key: &str, allowed: &[&str], owner: &str) -> String {
    let squash = |k: &str| k.replace(['_', '-'], "").to_ascii_lowercase();
    match allowed.iter().find(|known| squash(known) == squash(key)) {
        Some(meant) => format!("unknown key '{key}' in {owner} (did you mean '{meant}'?)"),
        None => format!(
            "unknown key '{key}' in {owner} (expected one of: {})",
            allowed.join(", ")
        ),
    }
}

/// At most 40 characters of `text`, for an error message.
fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
