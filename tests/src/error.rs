//! Harness errors.

use std::path::PathBuf;

/// Anything that can go wrong while setting up or driving an end-to-end test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A helper command (`ip`, `ss`, `tshark`, ...) failed.
    #[error("command `{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    /// Spawning or talking to a process failed at the OS level.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A required binary is not installed or built.
    #[error("missing binary {path}: {hint}")]
    MissingBinary { path: PathBuf, hint: String },
    /// A process under test exited when it should be running.
    #[error("{name} exited early ({status}); stderr tail:\n{stderr}")]
    ExitedEarly {
        name: String,
        status: String,
        stderr: String,
    },
    /// Output could not be understood.
    #[error("parse error: {0}")]
    Parse(String),
}

/// Result alias for the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}
