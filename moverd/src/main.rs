//! `moverd`: parse arguments, set up logging and the runtime, run, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    moverd::limit_malloc_arenas();
    let cli = moverd::cli::Cli::parse();
    moverd::cli::init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("moverd-io").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("moverd: cannot start the async runtime: {e}");
            return moverd::cli::EXIT_FAILURE.into();
        }
    };
    let code = runtime.block_on(moverd::cli::run(cli));
    std::process::ExitCode::from(code)
}
