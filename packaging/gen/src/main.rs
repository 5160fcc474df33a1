//! `switchboard-gen OUT_DIR`: the man pages (`OUT_DIR/man/*.1`) and the bash, zsh and fish
//! completions (`OUT_DIR/completions/`) of both binaries, written from their clap definitions so they
//! cannot drift from `--help`. `packaging/build-deb.sh` runs it before `cargo deb`.
//!
//! The broker's definitions live in its binary, not its library: this includes the one file that
//! holds them (`broker/src/args.rs`, definitions only), rather than making the library carry clap
//! types it never uses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

#[path = "../../../broker/src/args.rs"]
#[allow(dead_code, unreachable_pub)]
mod broker_args;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: switchboard-gen OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}: {error}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// The two commands as clap builds them; the broker's `about` named here because its crate
/// description (which `#[command(about)]` reads) is not this crate's.
fn commands() -> [Command; 2] {
    [
        broker_args::Args::command()
            .name("switchboard-broker")
            .about("The Switchboard message broker"),
        switchboard_cli::Cli::command().name("switchboard"),
    ]
}

fn generate(out: &Path) -> std::io::Result<()> {
    let (man, completions) = (out.join("man"), out.join("completions"));
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    for command in commands() {
        // One page per command and subcommand: switchboard-broker.1, switchboard-broker-passwd.1, …
        clap_mangen::generate_to(command.clone(), &man)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let name = command.get_name().to_string();
            clap_complete::generate_to(shell, &mut command.clone(), name, &completions)?;
        }
    }
    Ok(())
}
