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
        // The chain of causes, each said once (an OS error is often in its context already).
        let mut message = e.to_string();
        for cause in e.chain().skip(1).map(|c| c.to_string()) {
            if !message.contains(&cause) {
                message = format!("{message}: {cause}");
            }
        }
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
