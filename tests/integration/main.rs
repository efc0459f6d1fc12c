//! Integration tests for mover: the moverd binary and the mover-core library, end to end.
//!
//! Every test that moves data restores it and compares it byte for byte with the source.

mod attachments;
mod badinput;
mod bench;
mod common;
mod corpora;
mod dedupe;
mod many;
mod memory;
mod rerun;
mod roundtrip;
mod s3;
mod s3_e2e;
