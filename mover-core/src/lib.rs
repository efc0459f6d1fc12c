//! mover-core (work in progress: see the crate docs once the pipeline lands).
#![allow(missing_docs)]
pub mod corpus;
pub mod error;
pub mod id;
pub mod store;
pub use error::{Error, ErrorKind, Result};
