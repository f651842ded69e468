//! The `aha` binary: parse the command line and hand over to one function per subcommand.

use clap::Parser;

fn main() {
    // The sandbox launcher (`run_code`) re-executes aha; it must not go through clap or start
    // threads before it sets up its namespaces.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__sandbox") {
        std::process::exit(aha::sandbox::launch::main(&argv[2..]));
    }
    // `AHA_LOG=debug` (any tracing filter) writes diagnostics, e.g. each rendered prompt, to
    // stderr. Off by default: stderr carries the reasoning stream, and the TUI owns the terminal.
    if let Ok(filter) = std::env::var("AHA_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = aha::cli::Cli::parse();
    let code = match aha::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
