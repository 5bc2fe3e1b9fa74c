//! Configuration errors: each one names the file, the line and column, and the problem.

use super::model::SourcePos;

/// One problem in one configuration source. `line` and `column` are 1-based; both are 0 when the
/// problem is the file as a whole (it could not be read), and then the display has no position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", location(.file, *.line, *.column))]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    pub fn at(pos: &SourcePos, message: impl Into<String>) -> Self {
        ConfigError {
            file: pos.file.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// A problem with no position in the file, such as a file that cannot be read.
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

fn location(file: &str, line: usize, column: usize) -> String {
    if line == 0 {
        file.to_owned()
    } else {
        format!("{file}:{line}:{column}")
    }
}

/// Every problem found in one load, in file order and, within a file, in position order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(&self.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ConfigError::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
