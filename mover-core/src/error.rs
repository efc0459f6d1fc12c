//! The one public error type of mover-core.
//!
//! Modules keep their own detail, but everything that crosses the crate boundary is an [`Error`]: a
//! [`ErrorKind`] that says what went wrong and whether trying again can help, plus a message that names what was
//! being done and on what (path, byte offset, object key, mailbox).

use std::fmt;

/// What went wrong, coarsely: enough for a caller to decide whether to retry, quarantine or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An object or file that was asked for does not exist.
    NotFound,
    /// A conditional write found the object already there.
    AlreadyExists,
    /// A transient fault (timeout, throttling, connection reset, 5xx): trying again may succeed.
    Transient,
    /// Input that mover cannot use as it is (malformed file, changed while read).
    BadInput,
    /// Stored data does not match what was recorded (hash mismatch, truncated object).
    Corrupt,
    /// A local I/O error that is not one of the above.
    Io,
    /// Invalid configuration or arguments.
    Config,
    /// The operation was cancelled by a shutdown request.
    Cancelled,
    /// Anything else; a bug if it happens.
    Other,
}

impl ErrorKind {
    /// Whether repeating the same operation may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient)
    }
}

/// An error from mover-core, with what was being done and on what.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message saying what was being done and on what.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether repeating the operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// An I/O error while doing `what` (a sentence fragment naming the file or object).
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => ErrorKind::Transient,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{what}: {err}")).with_source(err)
    }

    /// Stored data does not match what was recorded.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// Bad input (names file and offset in the message).
    pub fn bad_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::BadInput, message)
    }

    /// Invalid configuration or arguments.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// Prefix the message with more context ("while restoring mailbox X").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}
