//! The PostgreSQL wire protocol (version 3.0), as much of it as the gateway
//! reads or writes. Frames keep their raw bytes; only the messages the gateway
//! acts on are decoded, and only when it acts on them.
//!
//! - [`frame`]: splitting a byte stream into messages; `Incomplete` is not an error.
//! - [`startup`]: the untagged messages a connection starts with.
//! - [`message`]: decoding the few messages the gateway inspects.
//! - [`build`]: encoding the messages the gateway writes itself.
//! - [`result`]: the messages of a result (row description, rows, COPY
//!   out, error fields), decoded and re-encoded for masking.

pub mod build;
pub mod frame;
pub mod message;
pub mod result;
pub mod startup;

pub use frame::{Frame, FrameError};
