//! The `streamsgd` command: parses flags, runs one command, maps errors to exit codes.
//! All the work lives in the library; each command's glue is in `commands/`.

mod commands;

use clap::Parser;

fn main() {
    let cli = commands::Cli::parse();
    if let Err(e) = commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
