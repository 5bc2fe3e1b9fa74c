//! The proxy's configuration file: its model and its loading, with every problem reported at
//! its file, line and column, and any problem refusing the whole file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use axum::http::HeaderName;
use ipnet::IpNet;
use reqwest::Url;
use saphyr::MarkedYaml;

use super::route::Route;
use crate::config::RateLimitConfig;
use crate::config::error::ConfigErrors;
use crate::config::yaml::{self, Fields, Reader};

const TOP_KEYS: &[&str] = &[
    "listen",
    "enabled",
    "upstream",
    "upstream_ca_file",
    "api_key_env",
    "hash_key_env",
    "organization",
    "project",
    "domain",
    "descriptors",
    "routes",
    "allow_account_routes",
    "trusted_proxies",
    "client_header",
    "client_token_header",
    "ipv6_prefix",
    "cors",
    "max_body_bytes",
    "body_timeout_ms",
    "on_limiter_error",
    "limiter_timeout_ms",
    "models",
    "max_output_tokens",
    "max_choices",
    "allow_store",
    "allow_hosted_tools",
    "safety_identifier",
    "max_streams_per_client",
    "upstream_connect_timeout_ms",
    "upstream_response_timeout_ms",
    "upstream_idle_timeout_ms",
    "tokens",
];
const ENTRY_KEYS: &[&str] = &["key", "value"];
const CORS_KEYS: &[&str] = &["allowed_origins", "max_age_secs"];
const TOKEN_KEYS: &[&str] = &["descriptors", "bytes_per_token", "attachment_tokens"];

/// Where the proxy listens without `listen:` (or `--proxy-addr`).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8090);

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// `false` answers every call 503 without asking anyone: the kill switch.
    pub enabled: bool,
    /// The upstream base URL; a route's path is appended to it.
    pub upstream: Url,
    /// Roots trusted for an HTTPS upstream besides the bundled Mozilla ones (a private CA, a
    /// TLS-inspecting egress proxy).
    pub upstream_roots: Vec<reqwest::Certificate>,
    /// The environment variable holding the upstream API key.
    pub api_key_env: String,
    /// The environment variable holding the key of the hashes sent upstream and used in
    /// `{client}`; without it, the API key (rotating that then starts every install afresh).
    pub hash_key_env: Option<String>,
    /// Sent upstream as `OpenAI-Organization` / `OpenAI-Project`, in place of the client's.
    pub organization: Option<String>,
    pub project: Option<String>,
    /// The rate-limit domain the proxy asks about.
    pub domain: String,
    /// One descriptor per list, charged one request per call.
    pub descriptors: Vec<DescriptorTemplate>,
    pub routes: Vec<Route>,
    pub trusted_proxies: Vec<IpNet>,
    pub client_header: HeaderName,
    pub client_token_header: Option<HeaderName>,
    pub ipv6_prefix: u8,
    pub cors: Cors,
    pub max_body_bytes: usize,
    /// Longest wait for a request body to arrive.
    pub body_timeout: Duration,
    pub on_limiter_error: OnLimiterError,
    pub limiter_timeout: Duration,
    /// Models a call may name; empty allows any.
    pub models: Vec<String>,
    /// The most output tokens one choice may ask for; requests asking more are clamped.
    pub max_output_tokens: Option<u64>,
    /// The most choices (`n`) one chat call may ask for.
    pub max_choices: u64,
    /// Let clients store completions and responses at the provider (`store`), else forced off.
    pub allow_store: bool,
    /// Let calls use the provider's hosted tools (web search, file search, ...).
    pub allow_hosted_tools: bool,
    /// Send a keyed hash of the client as `safety_identifier`.
    pub safety_identifier: bool,
    /// Concurrent streamed calls per client; 0 is no cap.
    pub max_streams_per_client: u32,
    pub upstream_connect_timeout: Duration,
    /// Longest wait for the upstream's response headers.
    pub upstream_response_timeout: Duration,
    /// Longest silence while a response body is streaming.
    pub upstream_idle_timeout: Duration,
    pub tokens: Option<TokenBudget>,
}

impl ProxyConfig {
    /// Whether the rate-limit config `rules` has the proxy's domain; see [`check_domain`].
    pub fn check_domain(&self, rules: &RateLimitConfig) -> Result<(), DomainNotLoaded> {
        check_domain(&self.domain, rules)
    }
}

/// A proxy domain missing from the rate-limit config: every call would be an unknown domain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the proxy's domain '{0}' is not in the rate-limit config: it would limit nothing")]
pub struct DomainNotLoaded(pub String);

/// Refuses a proxy asking about `domain` with rules that do not have it: it would limit nothing.
pub fn check_domain(domain: &str, rules: &RateLimitConfig) -> Result<(), DomainNotLoaded> {
    if rules.domains.contains_key(domain) {
        Ok(())
    } else {
        Err(DomainNotLoaded(domain.to_owned()))
    }
}

/// What the proxy answers when the decision service fails or answers nonsense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLimiterError {
    Deny,
    Allow,
}

#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// Exact `Origin` values allowed, e.g. `chrome-extension://<id>`.
    pub allowed_origins: Vec<String>,
    pub max_age_secs: u64,
}

/// Token limits: descriptors charged the worst case of a call before it is forwarded and
/// settled to the upstream's reported usage afterwards.
#[derive(Clone, Debug)]
pub struct TokenBudget {
    pub descriptors: Vec<DescriptorTemplate>,
    /// The prompt estimate is the request body's size divided by this (1 is an upper bound for
    /// text: no token is shorter than a byte).
    pub bytes_per_token: u64,
    /// What each image part is reserved as (its bytes, a URL, say nothing of its cost).
    pub attachment_tokens: u64,
}

/// One descriptor's entries, with placeholders filled per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorTemplate {
    pub entries: Vec<(String, Template)>,
}

/// A value with `{client}`, `{ip}`, `{route}` and `{model}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// The client: its address, with its install token when one is configured and sent.
    Client,
    /// The client's address alone.
    Ip,
    Route,
    Model,
}

/// The values a template is filled with for one call.
pub struct Vars<'a> {
    pub client: &'a str,
    pub ip: &'a str,
    pub route: &'a str,
    pub model: &'a str,
}

impl Template {
    pub fn fill(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(Var::Client) => out.push_str(vars.client),
                Piece::Var(Var::Ip) => out.push_str(vars.ip),
                Piece::Var(Var::Route) => out.push_str(vars.route),
                Piece::Var(Var::Model) => out.push_str(vars.model),
            }
        }
        out
    }

    pub fn uses(&self, var: Var) -> bool {
        self.0.contains(&Piece::Var(var))
    }

    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("'{text}' has a '{{' that is never closed"));
            };
            let var = match &rest[open + 1..open + close] {
                "client" => Var::Client,
                "ip" => Var::Ip,
                "route" => Var::Route,
                "model" => Var::Model,
                other => {
                    return Err(format!(
                        "unknown placeholder '{{{other}}}' (expected {{client}}, {{ip}}, {{route}} or {{model}})"
                    ));
                }
            };
            pieces.push(Piece::Var(var));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }
}

impl DescriptorTemplate {
    /// The descriptor's entries for one call.
    pub fn fill(&self, vars: &Vars<'_>) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.clone(), value.fill(vars)))
            .collect()
    }

    pub fn uses(&self, var: Var) -> bool {
        self.entries.iter().any(|(_, value)| value.uses(var))
    }
}

/// Reads and checks the proxy config file.
pub fn load_proxy_config(path: &Path) -> Result<ProxyConfig, ConfigErrors> {
    let text = yaml::read_file(path).map_err(|e| ConfigErrors(vec![e]))?;
    parse_proxy_config(&path.display().to_string(), &text)
}

/// Checks a proxy config given as text; `file` names it in errors.
pub fn parse_proxy_config(file: &str, text: &str) -> Result<ProxyConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let config = yaml::read_document(
        file,
        text,
        &mut errors,
        "a mapping",
        "the proxy config is one document",
        |reader, top| reader.proxy(top),
    );
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }
}

/// The proxy's format, read on top of the generic [`Reader`].
impl Reader<'_, '_> {
    fn proxy(&mut self, top: &MarkedYaml<'_>) -> Option<ProxyConfig> {
        let f = self.fields(top, TOP_KEYS, "the proxy config")?;
        let example = format!("an address such as {DEFAULT_LISTEN}");
        let listen = self.parsed(&f, "listen", &example);
        let upstream = self.upstream(&f);
        let domain = self.required_text(&f, "domain", "the proxy config");
        let descriptors = match f.get("descriptors") {
            Some(node) => self.descriptor_lists(node, "descriptors"),
            None => {
                self.error(
                    top,
                    "the proxy config has no 'descriptors': nothing would be limited",
                );
                Vec::new()
            }
        };
        let routes = match f.get("routes") {
            Some(node) => self.routes(node),
            None => Route::defaults(),
        };
        let trusted_proxies = self.list_of(&f, "trusted_proxies", |text| {
            parse_cidr(text).ok_or_else(|| format!("'{text}' is not an address or a CIDR"))
        });
        let client_header = self.header(&f, "client_header");
        let client_token_header = self.header(&f, "client_token_header");
        let ipv6_prefix: Option<u8> = self.parsed(&f, "ipv6_prefix", "a prefix length");
        let cors = f
            .get("cors")
            .map(|node| self.cors(node))
            .unwrap_or_default();
        let on_limiter_error = match self.optional_text(&f, "on_limiter_error").as_deref() {
            None | Some("deny") => OnLimiterError::Deny,
            Some("allow") => OnLimiterError::Allow,
            Some(other) => {
                let node = f.get("on_limiter_error").unwrap_or(top);
                let message = format!("'on_limiter_error' must be deny or allow, found '{other}'");
                self.error(node, message);
                OnLimiterError::Deny
            }
        };
        let tokens = f.get("tokens").and_then(|node| self.tokens(node));
        let max_output_tokens: Option<u64> = self.parsed(&f, "max_output_tokens", "a count");
        let models = self.list_of(&f, "models", |text| Ok(text.to_owned()));
        let max_streams: Option<u32> = self.parsed(&f, "max_streams_per_client", "a count");
        let config = ProxyConfig {
            listen: listen.unwrap_or(DEFAULT_LISTEN),
            enabled: self.flag_or(&f, "enabled", true),
            upstream: upstream?,
            upstream_roots: self.ca_file(&f),
            api_key_env: self
                .optional_text(&f, "api_key_env")
                .unwrap_or_else(|| "OPENAI_API_KEY".to_owned()),
            hash_key_env: self.optional_text(&f, "hash_key_env"),
            organization: self.optional_text(&f, "organization"),
            project: self.optional_text(&f, "project"),
            domain: domain?.0,
            descriptors,
            routes,
            trusted_proxies,
            client_header: client_header
                .unwrap_or_else(|| HeaderName::from_static("x-forwarded-for")),
            client_token_header,
            ipv6_prefix: ipv6_prefix.unwrap_or(64),
            cors,
            max_body_bytes: self
                .parsed(&f, "max_body_bytes", "a size in bytes")
                .unwrap_or(2 << 20),
            body_timeout: self.millis(&f, "body_timeout_ms", 30_000),
            on_limiter_error,
            limiter_timeout: self.millis(&f, "limiter_timeout_ms", 50),
            models,
            max_output_tokens,
            max_choices: self.parsed(&f, "max_choices", "a count").unwrap_or(1),
            allow_store: self.flag_or(&f, "allow_store", false),
            allow_hosted_tools: self.flag_or(&f, "allow_hosted_tools", false),
            safety_identifier: self.flag_or(&f, "safety_identifier", true),
            max_streams_per_client: max_streams.unwrap_or(4),
            upstream_connect_timeout: self.millis(&f, "upstream_connect_timeout_ms", 10_000),
            upstream_response_timeout: self.millis(&f, "upstream_response_timeout_ms", 600_000),
            upstream_idle_timeout: self.millis(&f, "upstream_idle_timeout_ms", 300_000),
            tokens,
        };
        self.cross_checks(&f, top, &config);
        Some(config)
    }

    /// What no single key can check alone.
    fn cross_checks(&mut self, f: &Fields<'_, '_>, top: &MarkedYaml<'_>, config: &ProxyConfig) {
        if !self.flag_or(f, "allow_account_routes", false) {
            let node = f.get("routes").unwrap_or(top);
            for route in config.routes.iter().filter(|r| !r.is_model_call()) {
                let message = format!(
                    "route '{} {}' is not a model call: it may read or change what the whole \
                     account holds (stored completions, files, ...) or mint credentials; set \
                     'allow_account_routes: true' to serve it",
                    route.method, route.pattern
                );
                self.error(node, message);
            }
        }
        if config.ipv6_prefix > 128 {
            let node = f.get("ipv6_prefix").unwrap_or(top);
            self.error(node, "'ipv6_prefix' must be from 0 to 128");
        }
        if config.max_choices == 0 {
            let node = f.get("max_choices").unwrap_or(top);
            self.error(node, "'max_choices' must be at least 1");
        }
        let limits_ip =
            |descriptors: &[DescriptorTemplate]| descriptors.iter().any(|d| d.uses(Var::Ip));
        if config.client_token_header.is_some() {
            let node = f.key_node("client_token_header").unwrap_or(top);
            if !limits_ip(&config.descriptors) {
                let message = "'client_token_header' is set but no descriptor limits '{ip}': \
                               a client could rotate tokens past every limit";
                self.error(node, message);
            }
            if let Some(tokens) = &config.tokens
                && !limits_ip(&tokens.descriptors)
            {
                let message = "'client_token_header' is set but no token descriptor limits \
                               '{ip}': a client could rotate tokens past every token budget";
                self.error(node, message);
            }
        }
        let uses_model = config
            .descriptors
            .iter()
            .chain(config.tokens.iter().flat_map(|t| &t.descriptors))
            .any(|d| d.uses(Var::Model));
        if uses_model && config.models.is_empty() {
            let node = f.key_node("descriptors").unwrap_or(top);
            let message = "'{model}' needs a 'models' list: a client could otherwise make up a \
                           new counter, and a new budget, with every call";
            self.error(node, message);
        }
        if let Some(tokens) = &config.tokens {
            if config.max_output_tokens.is_none() {
                let node = f.key_node("tokens").unwrap_or(top);
                let message = "'tokens' needs 'max_output_tokens': without it a call's worst \
                               case is unbounded";
                self.error(node, message);
            }
            let node = f.get("routes").unwrap_or(top);
            let unbudgeted = config
                .routes
                .iter()
                .filter(|r| r.method == axum::http::Method::POST && !r.kind.has_token_cost());
            for route in unbudgeted {
                let message = format!(
                    "route 'POST {}' has no token accounting here, so with 'tokens' its cost \
                     would go uncounted",
                    route.pattern
                );
                self.error(node, message);
            }
            if tokens.bytes_per_token == 0 {
                let node = f.key_node("tokens").unwrap_or(top);
                self.error(node, "'tokens.bytes_per_token' must be at least 1");
            }
        }
        if !config.upstream.username().is_empty() || config.upstream.password().is_some() {
            let node = f.get("upstream").unwrap_or(top);
            self.error(
                node,
                "'upstream' must not carry credentials: use api_key_env",
            );
        }
    }

    fn upstream(&mut self, f: &Fields<'_, '_>) -> Option<Url> {
        let (text, node) = self.required_text(f, "upstream", "the proxy config")?;
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                if url.query().is_some() || url.fragment().is_some() {
                    self.error(node, "'upstream' must be a base URL without a query");
                    return None;
                }
                Some(url)
            }
            Ok(_) => {
                self.error(
                    node,
                    format!("'upstream' must be an http(s) URL, found '{text}'"),
                );
                None
            }
            Err(e) => {
                self.error(node, format!("'upstream' is not a URL ({e}): '{text}'"));
                None
            }
        }
    }

    /// The certificates of a PEM file, read now so a bad file is an error at its line here.
    fn ca_file(&mut self, f: &Fields<'_, '_>) -> Vec<reqwest::Certificate> {
        let Some(path) = self.optional_text(f, "upstream_ca_file") else {
            return Vec::new();
        };
        let Some(node) = f.get("upstream_ca_file") else {
            return Vec::new();
        };
        let read = std::fs::read(&path).map_err(|e| format!("cannot read '{path}': {e}"));
        let parsed = read.and_then(|pem| {
            reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("'{path}' is not a PEM certificate bundle: {e}"))
        });
        match parsed {
            Ok(roots) if !roots.is_empty() => roots,
            Ok(_) => {
                self.error(node, format!("'{path}' holds no certificate"));
                Vec::new()
            }
            Err(message) => {
                self.error(node, message);
                Vec::new()
            }
        }
    }

    /// A list of descriptors, each a list of `{key, value}` entries.
    fn descriptor_lists(&mut self, node: &MarkedYaml<'_>, what: &str) -> Vec<DescriptorTemplate> {
        let items = self.list(node, what);
        if items.is_empty() {
            self.error(node, format!("'{what}' is empty"));
        }
        let mut out = Vec::new();
        for item in items {
            let written = self.list(item, "a descriptor");
            if written.is_empty() {
                self.error(item, format!("a descriptor in '{what}' has no entries"));
                continue;
            }
            let entries: Vec<_> = written.iter().filter_map(|e| self.entry(e)).collect();
            // An entry that failed is reported already; the descriptor is dropped with it.
            if entries.len() == written.len() {
                out.push(DescriptorTemplate { entries });
            }
        }
        out
    }

    fn entry(&mut self, node: &MarkedYaml<'_>) -> Option<(String, Template)> {
        let f = self.fields(node, ENTRY_KEYS, "a descriptor entry")?;
        let key = self.required_text(&f, "key", "a descriptor entry");
        let value = self.required_text(&f, "value", "a descriptor entry");
        let (key, _) = key?;
        let (value, value_node) = value?;
        match Template::parse(&value) {
            Ok(template) => Some((key, template)),
            Err(message) => {
                self.error(value_node, message);
                None
            }
        }
    }

    fn routes(&mut self, node: &MarkedYaml<'_>) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        for item in self.list(node, "routes") {
            let Some(text) = self.text(item, "routes") else {
                continue;
            };
            match Route::parse(&text) {
                Ok(route) if routes.iter().any(|r| r.same_as(&route)) => {
                    self.error(item, format!("route '{text}' is listed twice"));
                }
                Ok(route) => routes.push(route),
                Err(message) => self.error(item, message),
            }
        }
        routes
    }

    fn cors(&mut self, node: &MarkedYaml<'_>) -> Cors {
        let Some(f) = self.fields(node, CORS_KEYS, "'cors'") else {
            return Cors::default();
        };
        let allowed_origins = self.list_of(&f, "allowed_origins", |text| {
            if text == "*" || text == "null" {
                Err(format!(
                    "origin '{text}' would let any page spend the budget"
                ))
            } else if text.ends_with('/') || !text.contains("://") {
                Err(format!(
                    "'{text}' is not an origin (scheme://host[:port], no path)"
                ))
            } else {
                Ok(text.to_owned())
            }
        });
        Cors {
            allowed_origins,
            max_age_secs: self.parsed(&f, "max_age_secs", "seconds").unwrap_or(600),
        }
    }

    fn tokens(&mut self, node: &MarkedYaml<'_>) -> Option<TokenBudget> {
        let f = self.fields(node, TOKEN_KEYS, "'tokens'")?;
        let descriptors = match f.get("descriptors") {
            Some(node) => self.descriptor_lists(node, "tokens.descriptors"),
            None => {
                self.error(node, "'tokens' has no 'descriptors'");
                Vec::new()
            }
        };
        Some(TokenBudget {
            descriptors,
            bytes_per_token: self.parsed(&f, "bytes_per_token", "a count").unwrap_or(1),
            attachment_tokens: self
                .parsed(&f, "attachment_tokens", "a count")
                .unwrap_or(2000),
        })
    }

    /// A list of strings, each checked by `parse`.
    fn list_of<T>(
        &mut self,
        f: &Fields<'_, '_>,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let Some(node) = f.get(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in self.list(node, key) {
            if let Some(text) = self.text(item, key) {
                match parse(&text) {
                    Ok(value) => out.push(value),
                    Err(message) => self.error(item, message),
                }
            }
        }
        out
    }

    fn header(&mut self, f: &Fields<'_, '_>, key: &str) -> Option<HeaderName> {
        let text = self.optional_text(f, key)?;
        match HeaderName::from_str(&text.to_ascii_lowercase()) {
            Ok(name) => Some(name),
            Err(_) => {
                let node = f.get(key)?;
                self.error(node, format!("'{key}' is not a header name: '{text}'"));
                None
            }
        }
    }

    /// A value given as text and parsed as `T`; absent is `None`.
    fn parsed<T: FromStr>(&mut self, f: &Fields<'_, '_>, key: &str, expected: &str) -> Option<T> {
        let node = f.get(key)?;
        let text = self.text(node, key)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.error(node, format!("'{key}' must be {expected}, found '{text}'"));
                None
            }
        }
    }

    fn millis(&mut self, f: &Fields<'_, '_>, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.parsed(f, key, "milliseconds").unwrap_or(default))
    }

    fn flag_or(&mut self, f: &Fields<'_, '_>, key: &str, default: bool) -> bool {
        if f.get(key).is_none() {
            return default;
        }
        self.flag(f, key)
    }
}

/// `10.0.0.0/8`, or a single address as its /32 or /128.
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests;
