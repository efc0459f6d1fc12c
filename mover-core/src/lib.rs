//! mover-core (work in progress: see the crate docs once the pipeline lands).
#![allow(missing_docs)]
pub mod bench;
pub mod compress;
pub mod corpus;
pub mod dictionary;
pub mod error;
pub mod id;
pub mod index;
pub mod layout;
pub mod manifest;
pub mod mime;
pub mod pack;
pub mod pipeline;
pub mod report;
pub mod restore;
pub mod source;
pub mod split;
pub mod store;
pub use error::{Error, ErrorKind, Result};
