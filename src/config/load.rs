//! Loading YAML into the model (to be written).
