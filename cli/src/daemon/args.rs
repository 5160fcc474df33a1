//! The flags of `switchboard daemon`, and the rules between them that clap cannot check.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::duration::{parse_positive, parse_timeout};

/// How the daemon keeps in touch with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Stay connected (pinging to keep the connection up) and receive at once.
    Stay,
    /// Connect every `--interval`, drain the mailbox, disconnect.
    Poll,
}

/// The daemon's flags.
#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// How to keep in touch with the broker.
    #[arg(long, value_enum, default_value = "stay")]
    pub(crate) mode: Mode,
    /// Poll mode: the time between polls (seconds, or a duration such as `5m`). Also the polling
    /// interval of stay mode once idle (see --idle-timeout).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_positive)]
    pub(crate) interval: Duration,
    /// Stay mode: after this long without traffic, disconnect and poll every --interval until a
    /// poll finds traffic, then stay connected again.
    #[arg(long, value_name = "SECS", value_parser = parse_positive)]
    pub(crate) idle_timeout: Option<Duration>,
    /// The shortest wait before reconnecting, and before running a failed --exec command again.
    #[arg(long, value_name = "SECS", default_value = "0.1", value_parser = parse_timeout)]
    pub(crate) backoff_base: Duration,
    /// The longest such wait; waits double from the base up to this, with jitter.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    pub(crate) backoff_cap: Duration,
    /// The keepalive to ask the broker for; the daemon pings after half of it without traffic.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_positive)]
    pub(crate) keepalive: Duration,
    /// Sink: run `sh -c CMD` once per message, body on stdin; acknowledge on exit status 0.
    #[arg(long, value_name = "CMD", conflicts_with = "out_dir")]
    pub(crate) exec: Option<String>,
    /// Sink: write each message into DIR as ID.msg (the body) beside ID.json (its metadata), ID
    /// being the broker message id zero-padded to 20 digits.
    #[arg(long, value_name = "DIR")]
    pub(crate) out_dir: Option<PathBuf>,
    /// With --exec: runs per message before it goes to the dead-letter directory.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..),
        requires = "exec"
    )]
    pub(crate) max_attempts: u32,
    /// With --exec: where refused messages go [default: STATE_DIR/dead-letter].
    #[arg(long, value_name = "DIR", requires = "exec")]
    pub(crate) dead_letter_dir: Option<PathBuf>,
    /// Where the journal of handled messages lives [default: $XDG_STATE_HOME/switchboard/ID, or
    /// ~/.local/state/switchboard/ID, or ./.switchboard-state/ID].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Drop datagrams instead of handing them to the sink (stdout prints them as lines, --out-dir
    /// writes each to `datagram-<time>-<n>.json`, --exec logs and drops them).
    #[arg(long)]
    pub(crate) no_datagrams: bool,
    /// Send the messages `send --spool DIR` left in DIR, oldest first, once connected.
    #[arg(long, value_name = "DIR")]
    pub(crate) outbox: Option<PathBuf>,
}

impl DaemonArgs {
    /// What clap cannot check; the message is for a usage error.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.mode == Mode::Poll && self.idle_timeout.is_some() {
            return Err("--idle-timeout is for --mode stay; in poll mode the daemon is never connected for long".into());
        }
        if self.backoff_base > self.backoff_cap {
            return Err(format!(
                "--backoff-base ({:?}) is longer than --backoff-cap ({:?}); waits grow from the base up to the cap",
                self.backoff_base, self.backoff_cap
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The daemon's flags as `switchboard daemon` takes them.
    #[derive(Debug, Parser)]
    struct Daemon {
        #[command(flatten)]
        args: DaemonArgs,
    }

    fn parse(flags: &[&str]) -> Result<DaemonArgs, clap::error::ErrorKind> {
        let mut args = vec!["daemon"];
        args.extend_from_slice(flags);
        Daemon::try_parse_from(args)
            .map(|daemon| daemon.args)
            .map_err(|e| e.kind())
    }

    #[test]
    fn daemon_flags_have_their_defaults_and_their_rules() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.mode, Mode::Stay);
        assert_eq!(args.interval, Duration::from_secs(60));
        assert_eq!(args.backoff_base, Duration::from_millis(100));
        assert_eq!(args.backoff_cap, Duration::from_secs(30));
        assert_eq!(args.max_attempts, 5);
        assert!(args.exec.is_none() && args.out_dir.is_none() && args.idle_timeout.is_none());

        let args = parse(&["--mode", "poll", "--interval", "5m"]).unwrap();
        assert_eq!(
            (args.mode, args.interval),
            (Mode::Poll, Duration::from_secs(300))
        );
        assert!(args.check().is_ok());
        let args = parse(&["--mode", "poll", "--idle-timeout", "10"]).unwrap();
        assert!(args.check().is_err(), "idle timeout is for stay mode");

        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--exec", "true", "--out-dir", "x"]).err(),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            parse(&["--dead-letter-dir", "x"]).err(),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            parse(&["--max-attempts", "0"]).err(),
            Some(ErrorKind::ValueValidation)
        );
        assert_eq!(
            parse(&["--max-attempts", "3"]).err(),
            Some(ErrorKind::MissingRequiredArgument),
            "attempts are --exec's"
        );
        assert!(parse(&["--exec", "true", "--max-attempts", "3"]).is_ok());
        let args = parse(&["--backoff-base", "10", "--backoff-cap", "1"]).unwrap();
        assert!(args.check().is_err(), "a base above the cap");
        assert_eq!(
            parse(&["--interval", "0"]).err(),
            Some(ErrorKind::ValueValidation)
        );
    }
}
