//! The `switchboard` command line, as a library: its arguments ([`Cli`]) and [`run`], which runs
//! the command they name. The binary (`main.rs`) only parses, sets up logging and prints errors.
//!
//! Every command but `daemon` connects once, does its job and leaves with `Bye`; `daemon`
//! (`daemon/`) runs until stopped. Errors come back as `anyhow` errors whose top-level message is
//! complete on its own; `main` prints it as one line.
//!
//! Output is for scripts: `send` prints the broker's message id, `listen`, `poll` and the daemon's
//! default sink print one JSON line per message or receipt (`output.rs`).
//!
//! The modules, bottom-up (each uses only those before it): `duration.rs` (how durations are
//! written), `output.rs` (the JSON lines), `stdio.rs` (stdout, stdin, signals), `files.rs` (atomic
//! files, directory locks), `deadline.rs` (a bound on a whole command), `exit.rs` (what the exit status says), `outbox/` (spooled messages:
//! the file, `send --spool`, and the daemon's `SpoolSender`), `commands.rs` (`send`, `listen`,
//! `poll`), `daemon/` (`switchboard daemon`), and this file.

mod commands;
mod daemon;
mod deadline;
mod duration;
pub mod exit;
mod files;
mod outbox;
mod output;
mod stdio;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use switchboard_client::{ClientOptions, Receipts, SendOptions, Tls};

use crate::daemon::args::DaemonArgs;
use crate::duration::{limit, parse_positive, parse_timeout, parse_ttl};

/// Send and receive Switchboard messages.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// The broker's address.
    #[arg(
        long,
        value_name = "ADDR",
        env = "SWITCHBOARD_SERVER",
        default_value = "127.0.0.1:7878",
        global = true
    )]
    server: String,
    /// The client id to connect as (required).
    #[arg(long, value_name = "ID", env = "SWITCHBOARD_ID", global = true)]
    id: Option<String>,
    /// A credential for brokers that require one.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SWITCHBOARD_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Speak TLS to the broker, trusting the system's certificate authorities (or `--ca`).
    /// `SWITCHBOARD_TLS` takes the usual spellings: 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        env = "SWITCHBOARD_TLS",
        global = true,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    tls: bool,
    /// Trust only the certificate authorities in this PEM file (implies --tls).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CA", global = true)]
    ca: Option<PathBuf>,
    /// Present this client certificate (PEM) to brokers that ask for one (with --key).
    #[arg(
        long,
        value_name = "FILE",
        env = "SWITCHBOARD_CERT",
        global = true,
        requires = "key"
    )]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "SWITCHBOARD_KEY",
        global = true,
        requires = "cert"
    )]
    key: Option<PathBuf>,
    /// The largest frame to read or write, in bytes. By default the limit the broker announces
    /// (so whatever it accepted can be received), or 1 MiB with brokers too old to announce one.
    #[arg(long, value_name = "BYTES", global = true, value_parser = clap::value_parser!(u64).range(64..=(64 << 20)))]
    max_frame: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one message; prints the broker's message id once it is stored.
    Send(SendArgs),
    /// Stay connected; print each message and receipt as a JSON line, then acknowledge it.
    Listen(ListenArgs),
    /// Print and acknowledge what is waiting in the mailbox, then exit.
    Poll(PollArgs),
    /// Keep the mailbox drained, handing each message to stdout, a directory or a command; send
    /// what `send --spool` left in an outbox.
    Daemon(DaemonArgs),
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The recipient's client id.
    #[arg(long, value_name = "ID")]
    to: String,
    /// The message; read from standard input when absent.
    text: Option<String>,
    /// After the id, wait for the receipt and print its status (`delivered`, or `expired` when the
    /// time to live ran out first).
    #[arg(long, conflicts_with = "spool")]
    wait_delivered: bool,
    /// Send a datagram instead: fire and forget, delivered only if the recipient is connected now,
    /// never stored. Exits 0 once it is sent and says nothing of delivery.
    #[arg(long, conflicts_with_all = ["spool", "wait_delivered", "ttl", "receipts"])]
    datagram: bool,
    /// If the broker cannot be reached now, write the message into this outbox directory instead
    /// (exit 0, `spooled to DIR/FILE` on stderr, nothing on stdout); `switchboard daemon --outbox
    /// DIR`, run with the same --id, sends it later, exactly once.
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Let the broker drop the message if it is still undelivered this long after accepting it
    /// (seconds, or a duration such as `1m30s`); without it the broker's default applies.
    #[arg(long, value_name = "SECS", value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// Which receipts to ask the broker for: `all`, `delivered` or `none`. By default `all` with
    /// --wait-delivered (it waits for one) or --spool (the daemon of this id that sends it reads
    /// them), and `none` otherwise, so receipts nobody reads do not pile up in this id's mailbox; ask
    /// for them when a `listen`, `poll` or daemon of this id reads them.
    #[arg(long, value_name = "WHICH", value_parser = parse_receipts)]
    receipts: Option<Receipts>,
    /// Give up after this long (seconds, or a duration such as `1m30s`; 0 waits forever).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    timeout: Duration,
}

impl SendArgs {
    /// The options the message goes with: the receipts default to what this command will read. A
    /// usage error when the flags contradict each other.
    fn options(&self) -> Result<SendOptions, String> {
        let receipts = match (self.receipts, self.wait_delivered) {
            (None, true) | (Some(Receipts::All), _) => Receipts::All,
            (Some(_), true) => return Err(
                "--wait-delivered waits for the receipt, so it needs --receipts all (the default)"
                    .into(),
            ),
            (None, false) if self.spool.is_some() => Receipts::All,
            (None, false) => Receipts::None,
            (Some(other), false) => other,
        };
        Ok(SendOptions {
            ttl: self.ttl,
            receipts,
        })
    }
}

/// `all`, `delivered` or `none`.
fn parse_receipts(text: &str) -> Result<Receipts, String> {
    Receipts::from_wire(text.as_bytes())
        .ok_or_else(|| format!("{text:?} is not one of all, delivered, none"))
}

#[derive(Debug, Args)]
struct ListenArgs {
    /// Leave after printing (and acknowledging) this many messages and receipts. Safer than piping
    /// into `head -n N`, which cannot stop the acknowledgement of lines it never reads.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Listen for at most this long (seconds, or a duration such as `1m30s`). With --count, time
    /// running out before N entries is an error.
    #[arg(long, value_name = "SECS", value_parser = parse_positive)]
    timeout: Option<Duration>,
}

#[derive(Debug, Args)]
struct PollArgs {
    /// Give up after this long (seconds, or a duration such as `1m30s`; 0 waits forever).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    timeout: Duration,
}

impl Cli {
    /// Checks what clap cannot express (a required global flag); exits with a usage error, status 2.
    pub fn validate(&self) {
        if self.id.is_none() {
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "the following required argument was not provided: --id <ID> (or SWITCHBOARD_ID)",
                )
                .exit();
        }
        let checked = match &self.command {
            Command::Daemon(args) => args.check(),
            Command::Send(args) => args.options().map(|_| ()),
            _ => Ok(()),
        };
        if let Err(message) = checked {
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
    }

    /// The log level when `RUST_LOG` does not say: the daemon reports its connection and each
    /// message at `info`; the one-shot commands only warn.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Daemon(_) => "info",
            _ => "warn",
        }
    }

    fn options(&self) -> anyhow::Result<ClientOptions> {
        let mut opts = ClientOptions::new(self.server.clone(), self.id.clone().unwrap_or_default());
        opts.token = self.token.clone();
        opts.max_frame = self.max_frame.and_then(|n| usize::try_from(n).ok());
        if self.tls || self.ca.is_some() || self.cert.is_some() {
            let tls = match &self.ca {
                Some(ca) => Tls::with_ca_file(ca)?,
                None => Tls::system_roots()?,
            };
            opts.tls = Some(match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => tls.with_client_certificate(cert, key)?,
                _ => tls,
            });
        }
        Ok(opts)
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = cli.options()?;
    match cli.command {
        Command::Send(args) if args.datagram => {
            commands::send_datagram(opts, &args.to, args.text, limit(args.timeout)).await
        }
        Command::Send(args) => {
            let options = args.options().map_err(anyhow::Error::msg)?;
            match args.spool {
                Some(dir) => {
                    let body = match args.text {
                        Some(text) => text.into(),
                        None => stdio::read_stdin().await?,
                    };
                    let timeout = limit(args.timeout);
                    outbox::spool::send_or_spool(opts, &args.to, body, options, &dir, timeout).await
                }
                None => {
                    commands::send(
                        opts,
                        &args.to,
                        args.text,
                        options,
                        args.wait_delivered,
                        limit(args.timeout),
                    )
                    .await
                }
            }
        }
        Command::Listen(args) => commands::listen(opts, args.count, args.timeout).await,
        Command::Poll(args) => commands::poll(opts, limit(args.timeout)).await,
        Command::Daemon(args) => daemon::start::run(opts, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_takes_a_ttl() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["switchboard", "--id", "alice", "send", "--to", "bob"];
            args.extend_from_slice(extra);
            args.push("hi");
            match Cli::try_parse_from(args).map(|cli| cli.command) {
                Ok(Command::Send(send)) => Ok(send.ttl),
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["--ttl", "90s"]), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse(&["--ttl", "45"]), Ok(Some(Duration::from_secs(45))));
        assert_eq!(
            parse(&["--ttl", "0"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
    }

    #[test]
    fn send_asks_for_receipts_only_when_something_will_read_them() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["switchboard", "--id", "alice", "send", "--to", "bob"];
            args.extend_from_slice(extra);
            args.push("hi");
            match Cli::try_parse_from(args).map(|cli| cli.command) {
                Ok(Command::Send(send)) => send.options().map(|o| o.receipts),
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => Err(e.kind().to_string()),
            }
        };
        assert_eq!(parse(&[]), Ok(Receipts::None));
        assert_eq!(parse(&["--wait-delivered"]), Ok(Receipts::All));
        assert_eq!(parse(&["--spool", "out"]), Ok(Receipts::All));
        assert_eq!(parse(&["--receipts", "delivered"]), Ok(Receipts::Delivered));
        assert_eq!(
            parse(&["--spool", "out", "--receipts", "none"]),
            Ok(Receipts::None)
        );
        assert_eq!(
            parse(&["--wait-delivered", "--receipts", "all"]),
            Ok(Receipts::All)
        );
        assert!(parse(&["--wait-delivered", "--receipts", "none"])
            .is_err_and(|e| e.contains("--wait-delivered")));
        assert!(parse(&["--receipts", "some"]).is_err());
        assert!(
            parse(&["--datagram", "--receipts", "all"]).is_err(),
            "datagrams have none"
        );
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli = Cli::try_parse_from([
            "switchboard",
            "--server",
            "10.0.0.1:1",
            "send",
            "--id",
            "alice",
            "--to",
            "bob",
            "hi",
        ])
        .unwrap();
        assert_eq!(cli.server, "10.0.0.1:1");
        assert_eq!(cli.id.as_deref(), Some("alice"));
        assert!(matches!(cli.command, Command::Send(SendArgs { ref to, .. }) if to == "bob"));
    }
}
