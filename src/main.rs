//! The `streamsgd` command: parses flags, runs one command, maps errors to exit codes.
//! All the work lives in the library; each command's glue is in `commands/`.

mod commands;

use clap::Parser;

fn main() {
    commands::signals::default_sigpipe();
    let cli = commands::Cli::parse();
    if let Err(e) = commands::run(cli) {
        if let Some(stopped) = e.downcast_ref::<commands::signals::Interrupted>() {
            std::process::exit(stopped.code);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
