//! The `aha` binary: parse the command line and hand over to one function per subcommand.

use clap::Parser;

fn main() {
    // The sandbox launcher (`run_code`) re-executes aha; it must not go through clap or start
    // threads before it sets up its namespaces.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__sandbox") {
        std::process::exit(aha::sandbox::launch::main(&argv[2..]));
    }
    let cli = aha::cli::Cli::parse();
    // Diagnostics (`AHA_LOG`, any tracing filter): the workbench appends them to
    // `<data dir>/logs/aha.log` (default filter `info`), since it owns the terminal; other
    // subcommands write them to stderr, only when `AHA_LOG` is set (stderr carries the
    // reasoning stream).
    aha::cli::logs::init(&aha::cli::logs::target(
        cli.command.is_none(),
        std::env::var("AHA_LOG").ok(),
        &aha::session::data_dir(),
    ));
    let code = match aha::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
