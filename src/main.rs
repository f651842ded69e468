//! The `aha` binary: parse the command line and hand over to one function per subcommand.

use clap::Parser;

fn main() {
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
