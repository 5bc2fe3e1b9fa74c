//! Configuration: the YAML model, its loading and validation (file:line errors), and the
//! matching tree compiled from it. Read by every other module; depends on none of them.

mod error;
pub mod load;
pub mod model;

pub use load::{ConfigError, ConfigErrors, LoadOptions};
pub use model::*;
