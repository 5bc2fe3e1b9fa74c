//! The configuration `tollgate serve` enforces when no `--config` is given.

use super::load::{ConfigErrors, LoadOptions, load_sources};
use super::model::RateLimitConfig;

/// The name errors and `/rlconfig` give the embedded file.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default.yaml>";
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/default.yaml");

pub fn default_config() -> Result<RateLimitConfig, ConfigErrors> {
    load_sources(
        &[(
            DEFAULT_CONFIG_NAME.to_owned(),
            DEFAULT_CONFIG_YAML.to_owned(),
        )],
        &LoadOptions::default(),
    )
}
