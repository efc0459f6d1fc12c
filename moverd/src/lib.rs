//! moverd: the daemon and command line that runs mover on a mail server.
//!
//! The binary is a thin layer: [`cli::Cli`] is the argument grammar, [`cli::run`] does the work through
//! `mover-core` and returns the process exit code. Everything here is testable without spawning the binary.

/// `println!` for what moverd prints on stdout: when stdout is a pipe whose reader has gone (`moverd ls | head`),
/// moverd ends quietly with status 141, as a Unix tool killed by SIGPIPE does, instead of panicking with a
/// backtrace (Rust ignores SIGPIPE, so the write fails with EPIPE). Any other error writing stdout is reported on
/// stderr and ends moverd with status 1. Everything moverd prints on stdout comes after its work is done, but for
/// `migrate-many`'s line per mailbox, which goes through [`try_print_line`]: a wave whose reader has gone stops
/// after the mailbox it could not report (committed) and ends with 141 too.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

pub mod bench;
pub mod cli;
pub mod display;
pub mod many;

/// The exit status of a process killed by SIGPIPE (128 + 13), used when stdout's reader has gone.
pub const EXIT_BROKEN_PIPE: i32 = 141;

#[doc(hidden)]
pub fn print_line(args: std::fmt::Arguments<'_>) {
    match try_print_line(args) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(EXIT_BROKEN_PIPE),
        Err(e) => {
            eprintln!("moverd: error: writing to stdout: {e}");
            std::process::exit(i32::from(cli::EXIT_FAILURE));
        }
    }
}

pub use mover_core::limit_malloc_arenas;

/// One line on stdout, flushed; the error as it is (`migrate-many` reports mailboxes while it works, and stops the
/// wave when its reader has gone instead of ending mid-mailbox).
#[doc(hidden)]
pub fn try_print_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush())
}
