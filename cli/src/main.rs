//! `switchboard`: send, listen for and poll Switchboard messages from the command line, and run the
//! daemon that keeps a mailbox drained. The commands live in the library beside this file
//! (`lib.rs`); this is only the process around them.
//!
//! Errors print one line, `error: …`, on stderr and exit 1; usage errors exit 2.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use switchboard_cli::{exit, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.validate();
    init_logging(cli.default_log_level());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(switchboard_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let status = exit::status(&e);
            match exit::hint(status) {
                Some(hint) => fail(&format!("{e}; {hint}")),
                None => fail(&e.to_string()),
            };
            ExitCode::from(status)
        }
    }
}

/// Prints `error: <message>` as a single line and returns the failure status.
fn fail(message: &str) -> ExitCode {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {one_line}");
    ExitCode::FAILURE
}

/// Logs go to stderr, at `level` unless `RUST_LOG` says otherwise.
fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
