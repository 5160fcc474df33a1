//! The `--exec` sink: one run of a shell command per message, retried, then a dead letter.
//!
//! The command runs as `sh -c CMD` with the body on its standard input and, in its environment,
//! `SWITCHBOARD_FROM` (the sender), `SWITCHBOARD_MESSAGE_ID` (the broker's id, the same on a
//! redelivery), `SWITCHBOARD_SEND_ID` (the sender's send id, which with the sender names
//! the message even across a broker crash; 0 from brokers that do not send it),
//! `SWITCHBOARD_SENT_AT` (when the broker accepted it, RFC 3339 in UTC) and
//! `SWITCHBOARD_ATTEMPT` (1 for the first run of this message in this daemon process). Its standard
//! output is the daemon's; its standard error is passed through to the daemon's and the last
//! [`STDERR_TAIL`] bytes of it are kept for the failure record.
//!
//! Exit status 0 means the command has the message. Anything else (another status, a signal, a
//! command that cannot be started) is a failure: the message stays unacknowledged at the broker (so a
//! daemon that dies meanwhile loses nothing) and the command is run again after a backoff, up to
//! `--max-attempts` runs in all. Then the message goes to the dead-letter directory as
//! `<id>.json` (the message's metadata, the command and every failure) and `<id>.msg` (the body),
//! both written atomically, and only then is it acknowledged. A command running when the daemon is
//! asked to stop is left to finish; a wait between runs is cut short and the message is left
//! unacknowledged.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::SystemTime;

use serde::Serialize;
use switchboard_client::{Message, Reconnect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::daemon::delivered::{file_stem, Delivered, Metadata, SinkError};
use crate::files::{blocking, write_atomic};
use crate::output::rfc3339_millis;

/// How much of a failed run's standard error the failure record keeps (its end).
pub(crate) const STDERR_TAIL: usize = 4096;

/// The `--exec` sink's settings.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    /// The command line, for `sh -c`.
    pub command: String,
    /// How many runs a message gets before it is dead-lettered; at least 1.
    pub max_attempts: u32,
    /// The wait between runs.
    pub backoff: Reconnect,
    /// Where refused messages go.
    pub dead_letter_dir: PathBuf,
}

/// One failed run, as the dead-letter record keeps it.
#[derive(Debug, Serialize)]
pub(crate) struct Failure {
    /// Which run it was, from 1.
    pub attempt: u32,
    /// When it ended, RFC 3339.
    pub at: String,
    /// `exit status 3`, `killed by signal 9`, `cannot start sh: …`.
    pub outcome: String,
    /// The exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// The end of what it wrote to standard error, lossily decoded.
    pub stderr: String,
}

/// The dead-letter record, `<id>.json`.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    #[serde(flatten)]
    message: Metadata<'a>,
    command: &'a str,
    dead_lettered_at: String,
    attempts: &'a [Failure],
}

impl Exec {
    /// Runs the command until it takes the message or the attempts run out.
    pub(crate) async fn deliver(
        &self,
        message: &Message,
        stop: &CancellationToken,
    ) -> Result<Delivered, SinkError> {
        let max = self.max_attempts.max(1);
        let mut failures = Vec::new();
        for attempt in 1..=max {
            let failure = match self.run(message, attempt).await {
                Ok(()) => {
                    tracing::debug!(
                        message_id = message.message_id,
                        attempt,
                        "the command took the message"
                    );
                    return Ok(Delivered::Handled);
                }
                Err(failure) => failure,
            };
            tracing::warn!(
                message_id = message.message_id,
                attempt,
                max_attempts = max,
                outcome = %failure.outcome,
                "the command failed"
            );
            failures.push(failure);
            if attempt < max {
                let delay = self.backoff.delay(attempt);
                tracing::info!(
                    message_id = message.message_id,
                    ?delay,
                    "running the command again after a pause"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Err(SinkError::Interrupted),
                }
            }
        }
        let path = dead_letter(&self.dead_letter_dir, message, &self.command, &failures)
            .await
            .map_err(|e| {
                SinkError::Fatal(anyhow::anyhow!(
                    "cannot write message {} to the dead-letter directory {}: {e}",
                    message.message_id,
                    self.dead_letter_dir.display()
                ))
            })?;
        Ok(Delivered::DeadLettered(path))
    }

    /// One run; `Ok` on exit status 0.
    async fn run(&self, message: &Message, attempt: u32) -> Result<(), Failure> {
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .env("SWITCHBOARD_FROM", &message.from)
            .env("SWITCHBOARD_MESSAGE_ID", message.message_id.to_string())
            .env("SWITCHBOARD_SEND_ID", message.send_id.to_string())
            .env("SWITCHBOARD_SENT_AT", rfc3339_millis(message.sent_at))
            .env("SWITCHBOARD_ATTEMPT", attempt.to_string())
            // The daemon's credential is not the command's business.
            .env_remove("SWITCHBOARD_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Err(failure(
                    attempt,
                    format!("cannot start sh: {e}"),
                    None,
                    String::new(),
                ))
            }
        };
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let body = message.body.clone();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input closes the pipe early; that is its business.
                if let Err(e) = stdin.write_all(&body).await {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        tracing::debug!(error = %e, "cannot write the body to the command");
                    }
                }
            }
        };
        let (status, (), tail) = tokio::join!(child.wait(), feed, pass_through(stderr));
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(failure(attempt, describe(status), Some(status), tail)),
            Err(e) => Err(failure(
                attempt,
                format!("cannot wait for the command: {e}"),
                None,
                tail,
            )),
        }
    }
}

fn failure(attempt: u32, outcome: String, status: Option<ExitStatus>, stderr: String) -> Failure {
    Failure {
        attempt,
        at: rfc3339_millis(SystemTime::now()),
        outcome,
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        stderr,
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Copies the command's standard error to the daemon's, and returns its last [`STDERR_TAIL`] bytes.
async fn pass_through(stderr: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                use std::io::Write as _;
                let _ = std::io::stderr().write_all(&chunk[..n]);
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Writes the record, then the body, into the dead-letter directory; returns the body's path.
async fn dead_letter(
    dir: &Path,
    message: &Message,
    command: &str,
    failures: &[Failure],
) -> std::io::Result<PathBuf> {
    let record = DeadLetter {
        message: Metadata::of(message),
        command,
        dead_lettered_at: rfc3339_millis(SystemTime::now()),
        attempts: failures,
    };
    let record = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    let stem = file_stem(message.message_id);
    let (dir, body) = (dir.to_path_buf(), message.body.clone());
    blocking(move || {
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir, &format!("{stem}.json"), &record)?;
        write_atomic(&dir, &format!("{stem}.msg"), &body)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;

    fn message() -> Message {
        Message {
            message_id: 7,
            from: "alice".into(),
            send_id: 1_700_000_000_000_001,
            sent_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            body: Bytes::from_static(b"hello"),
        }
    }

    fn exec(command: &str, dir: &Path) -> Exec {
        Exec {
            command: command.into(),
            max_attempts: 3,
            backoff: Reconnect::new(Duration::from_millis(10), Duration::from_millis(20)),
            dead_letter_dir: dir.join("dead"),
        }
    }

    #[tokio::test]
    async fn the_command_gets_the_body_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let command = format!(
            "{{ cat; echo; echo \"$SWITCHBOARD_FROM $SWITCHBOARD_MESSAGE_ID $SWITCHBOARD_SEND_ID $SWITCHBOARD_SENT_AT $SWITCHBOARD_ATTEMPT\"; }} > '{}'",
            out.display()
        );
        let delivered = exec(&command, dir.path())
            .deliver(&message(), &CancellationToken::new())
            .await;
        assert!(matches!(delivered, Ok(Delivered::Handled)), "{delivered:?}");
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "hello\nalice 7 1700000000000001 2023-11-14T22:13:20.123Z 1\n"
        );
    }

    #[tokio::test]
    async fn a_command_that_keeps_failing_ends_in_the_dead_letter_directory() {
        let dir = tempfile::tempdir().unwrap();
        let delivered = exec("echo \"no $SWITCHBOARD_ATTEMPT\" >&2; exit 3", dir.path())
            .deliver(&message(), &CancellationToken::new())
            .await;
        let Ok(Delivered::DeadLettered(path)) = delivered else {
            panic!("{delivered:?}");
        };
        assert_eq!(path, dir.path().join("dead/00000000000000000007.msg"));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("dead/00000000000000000007.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record["message_id"], 7);
        assert_eq!(record["from"], "alice");
        assert_eq!(record["send_id"], 1_700_000_000_000_001u64);
        let attempts = record["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3);
        assert_eq!(attempts[2]["exit_code"], 3);
        assert_eq!(attempts[2]["outcome"], "exit status 3");
        assert_eq!(attempts[2]["stderr"], "no 3\n");
    }

    #[tokio::test]
    async fn stopping_between_runs_leaves_the_message_unhandled() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let delivered = exec("exit 1", dir.path()).deliver(&message(), &stop).await;
        assert!(
            matches!(delivered, Err(SinkError::Interrupted)),
            "{delivered:?}"
        );
        assert!(!dir.path().join("dead").exists());
    }
}
