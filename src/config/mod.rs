//! Configuration: the YAML model, its loading and validation (file:line errors), and the
//! matching tree compiled from it. Read by every other module; depends on none of them.

pub mod default;
pub(crate) mod error;
pub mod listing;
pub mod load;
pub mod model;
pub mod tree;
pub(crate) mod yaml;

pub use load::{ConfigError, ConfigErrors, LoadOptions};
pub use model::*;
pub use tree::{DomainRules, Match, Node, RuleLimit, RuleTree};
