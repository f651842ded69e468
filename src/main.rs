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
    let code = match aha::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
