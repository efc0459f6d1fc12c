//! `cargo bench -p mover-benches`: the `mover-bench` runner with cargo's bench arguments dropped.
//!
//! Extra runner options go after `--`: `cargo bench -p mover-benches -- --smoke --json`.

fn main() -> std::process::ExitCode {
    // cargo passes `--bench` (and test-harness filters) to harness = false targets: not ours to interpret.
    let args = std::env::args_os().filter(|a| a != "--bench");
    mover_benches::main(args)
}
