//! Placeholder until the loader lands (same public API).
use super::model::RateLimitConfig;
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub merge_domains: bool,
}
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

pub fn load_path(_path: &Path, _opts: &LoadOptions) -> Result<RateLimitConfig, ConfigErrors> {
    Err(ConfigErrors(vec![]))
}
pub fn load_sources(
    _sources: &[(String, String)],
    _opts: &LoadOptions,
) -> Result<RateLimitConfig, ConfigErrors> {
    Err(ConfigErrors(vec![]))
}
