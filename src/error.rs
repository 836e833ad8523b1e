//! The error type shared by the Rust API, the C ABI and (through it) Python.

use std::fmt;
use std::io;

/// Everything that can go wrong with a queue.
///
/// The first seven variants keep the names of the original design note; the rest
/// make failures precise enough to act on. Every variant that concerns a named queue
/// carries the name, and system failures carry the `io::Error` (with its errno).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The segment could not be created (a system call failed).
    CreationFailed { name: String, source: io::Error },
    /// The segment exists but could not be opened or mapped.
    AccessFailed { name: String, source: io::Error },
    /// `send` on a full queue with no time to wait.
    QueueFull,
    /// `receive` on an empty queue with no time to wait (the note's `try` form returns
    /// `Ok(None)` instead; this variant is used where a `Result` must say it).
    QueueEmpty,
    /// A typed value could not be encoded.
    SerializationFailed(String),
    /// A typed value could not be decoded from the received bytes.
    DeserializationFailed(String),
    /// The segment or one message in it failed an integrity check.
    CorruptedData(String),
    /// A blocking call reached its deadline.
    Timeout,
    /// The queue was shut down for sending (and, for receivers, has been drained).
    Closed,
    /// The message is longer than the queue's `message_size`.
    MessageTooLarge { len: usize, max: usize },
    /// The caller's buffer cannot hold the next message; nothing was dequeued.
    BufferTooSmall { needed: usize, got: usize },
    /// A queue of that name already exists (create is exclusive).
    AlreadyExists { name: String },
    /// No queue of that name exists.
    NotFound { name: String },
    /// The process may not open the queue (the segment's mode forbids it).
    PermissionDenied { name: String, source: io::Error },
    /// An argument was out of range or malformed.
    InvalidArgument(String),
    /// The segment was made by an incompatible version of shmq.
    IncompatibleVersion { found: u32, expected: u32 },
    /// A single-producer/single-consumer queue's sending (or receiving) role is held by
    /// another live handle, `holder` (a participant id, as `shmq info` lists them).
    RoleTaken {
        name: String,
        role: &'static str,
        holder: u32,
    },
}

impl Error {
    /// Short stable name of the variant (used by the C ABI and the CLI).
    pub fn kind_str(&self) -> &'static str {
        match self {
            Error::CreationFailed { .. } => "creation failed",
            Error::AccessFailed { .. } => "access failed",
            Error::QueueFull => "queue full",
            Error::QueueEmpty => "queue empty",
            Error::SerializationFailed(_) => "serialization failed",
            Error::DeserializationFailed(_) => "deserialization failed",
            Error::CorruptedData(_) => "corrupted data",
            Error::Timeout => "timed out",
            Error::Closed => "queue closed",
            Error::MessageTooLarge { .. } => "message too large",
            Error::BufferTooSmall { .. } => "buffer too small",
            Error::AlreadyExists { .. } => "already exists",
            Error::NotFound { .. } => "not found",
            Error::PermissionDenied { .. } => "permission denied",
            Error::InvalidArgument(_) => "invalid argument",
            Error::IncompatibleVersion { .. } => "incompatible version",
            Error::RoleTaken { .. } => "role taken",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CreationFailed { name, source } => {
                write!(f, "cannot create queue '{name}': {source}")
            }
            Error::AccessFailed { name, source } => {
                write!(f, "cannot open queue '{name}': {source}")
            }
            Error::QueueFull => f.write_str("queue is full"),
            Error::QueueEmpty => f.write_str("queue is empty"),
            Error::SerializationFailed(m) => write!(f, "cannot serialize message: {m}"),
            Error::DeserializationFailed(m) => write!(f, "cannot deserialize message: {m}"),
            Error::CorruptedData(m) => write!(f, "corrupted data: {m}"),
            Error::Timeout => f.write_str("operation timed out"),
            Error::Closed => f.write_str("queue is shut down"),
            Error::MessageTooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the queue's message size of {max} bytes"
                )
            }
            Error::BufferTooSmall { needed, got } => {
                write!(
                    f,
                    "buffer of {got} bytes is too small for the next message of {needed} bytes"
                )
            }
            Error::AlreadyExists { name } => write!(
                f,
                "queue '{name}' already exists (left by an earlier run? remove it with \
                 `shmq rm {name}` or create with replace)"
            ),
            Error::NotFound { name } => write!(f, "queue '{name}' does not exist"),
            Error::PermissionDenied { name, source } => {
                write!(f, "permission denied for queue '{name}': {source}")
            }
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::IncompatibleVersion { found, expected } => write!(
                f,
                "segment has layout version {found}, this library reads version {expected}"
            ),
            Error::RoleTaken { name, role, holder } => write!(
                f,
                "queue '{name}' is single-producer/single-consumer and its {role} role is held \
                 by live participant {holder}; close that handle first"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::CreationFailed { source, .. }
            | Error::AccessFailed { source, .. }
            | Error::PermissionDenied { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;
