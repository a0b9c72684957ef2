//! Error type of the harness. Every fallible step returns [`Error`]; the binary prints it and
//! exits non-zero.

use std::io;

/// Everything that can go wrong while driving a load test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket, pipe or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A JSON document (worker message, result file, server reply) did not parse.
    #[error("{context}: {source}")]
    Json {
        /// What was being parsed.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The server under test misbehaved (did not start, rejected a publish, …).
    #[error("server: {0}")]
    Server(String),
    /// A worker process failed or broke the coordinator protocol.
    #[error("worker {worker}: {msg}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What happened.
        msg: String,
    },
    /// A wait ran past its bound.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Bad command-line input or an impossible combination of options.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// A system call wrapped by nix failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Histogram (de)serialisation or recording failed.
    #[error("histogram: {0}")]
    Histogram(String),
    /// Writing a plot failed.
    #[error("plot: {0}")]
    Plot(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a context string to `io::Error`, `serde_json::Error` and `nix::Error` results.
pub trait Context<T> {
    /// Wraps the error with `what` as its context.
    fn context(self, what: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Io { context: what.into(), source })
    }
}

impl<T> Context<T> for std::result::Result<T, serde_json::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Json { context: what.into(), source })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Sys { context: what.into(), source })
    }
}
