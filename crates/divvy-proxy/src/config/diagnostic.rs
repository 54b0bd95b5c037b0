//! One problem found in a config file, with where it is.

use std::fmt;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given.
    pub file: String,
    /// 1-based line; 0 when the problem is the file itself (unreadable).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The field's path, e.g. `upstream.app.server[1].weight`; empty for syntax errors.
    pub field: String,
    /// What is wrong, lower case.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}
