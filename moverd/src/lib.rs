//! moverd: the daemon and command line that runs mover on a mail server.
//!
//! The binary is a thin layer: [`cli::Cli`] is the argument grammar, [`cli::run`] does the work through
//! `mover-core` and returns the process exit code. Everything here is testable without spawning the binary.

pub mod bench;
pub mod cli;
pub mod display;

pub use mover_core::limit_malloc_arenas;
