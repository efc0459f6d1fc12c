//! `mover-bench`: the benchmark runner (see `mover_benches` and `docs/PERFORMANCE.md`).

fn main() -> std::process::ExitCode {
    mover_benches::main(std::env::args_os())
}
