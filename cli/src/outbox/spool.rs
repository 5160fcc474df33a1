//! `switchboard send --spool DIR`: send now if the broker takes the message, spool it otherwise.
//!
//! The command chooses the message's send id at once, then tries the broker. If the broker cannot be
//! reached (the connection is refused or times out), or the connection ends before the broker
//! answers, the message goes into `DIR` as one file (`spooled.rs`), written atomically, and the
//! command exits 0 saying `spooled to DIR/<file> (<why>)` on stderr (stdout, where a sent message's
//! broker id goes, stays empty). The daemon run as the same client id with `--outbox DIR` sends it
//! later (`sender.rs`); the stored id makes every attempt the same send, which the broker stores
//! once.
//!
//! While a daemon serves the outbox it holds the directory's lock file (`.lock`, which names its id)
//! and `send --spool` writes the file for it without connecting: a second connection with the
//! daemon's id would take its session over (see "Takeover" in `PROTOCOL.md`). Otherwise the command
//! holds the lock shared while it tries the broker, so a daemon starting meanwhile waits for it.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use bytes::Bytes;
use switchboard_client::{ClientError, ClientOptions, SendOptions};
use switchboard_proto::{max_body_len, ClientId, DEFAULT_MAX_FRAME};

use crate::deadline::{connect, Deadline};
use crate::files::{ensure_dir, DirLock, Locked};
use crate::outbox::spooled::{spool, Spooled, LOCK_FILE, OWNER_PREFIX};
use crate::stdio::print_line;

/// `switchboard send --spool DIR`: sends now if the broker takes it, spools it otherwise.
pub(crate) async fn send_or_spool(
    mut opts: ClientOptions,
    to: &str,
    body: Bytes,
    options: SendOptions,
    dir: &Path,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    // A message the broker would refuse must not wait in the outbox to be refused later.
    if let Err(e) = ClientId::new(to) {
        anyhow::bail!("cannot send to {to:?}: {e}");
    }
    ensure_dir(dir, "outbox")?;
    let message = Spooled::new(
        &opts.id,
        to,
        switchboard_client::next_send_id(),
        options,
        &body,
    );
    let lock = DirLock::try_shared(dir, LOCK_FILE)
        .map_err(|e| anyhow!("cannot open the lock of the outbox {}: {e}", dir.display()))?;
    let _lock = match lock {
        Locked::Held(holder) => {
            if let Some(daemon) = holder.strip_prefix(OWNER_PREFIX) {
                if daemon != opts.id {
                    anyhow::bail!(
                        "{} is the outbox of the daemon running as {daemon}; messages from {} need an outbox of their own",
                        dir.display(),
                        opts.id
                    );
                }
            }
            check_size(&body, opts.max_frame)?;
            return spooled(dir, &message, "the daemon serving this outbox sends it").await;
        }
        Locked::Taken(lock) => lock,
    };

    let max_frame = opts.max_frame;
    let deadline = Deadline::after(timeout);
    if let Some(timeout) = timeout {
        opts.connect_timeout = opts.connect_timeout.min(timeout);
    }
    let (client, _events) = match connect(opts).await {
        Ok(connected) => connected,
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(client_error) if !client_error.is_retryable() => return Err(e),
            _ => {
                check_size(&body, max_frame)?;
                return spooled(dir, &message, &e.to_string()).await;
            }
        },
    };
    let sent = deadline
        .bound(
            "the broker to accept the message",
            client.send_with_id(to, body, message.send_id, options),
        )
        .await;
    let why = match sent {
        Ok(Ok(sent)) => {
            print_line(&sent.message_id.to_string())?;
            client.close().await?;
            return Ok(());
        }
        Ok(Err(e @ (ClientError::Rejected { .. } | ClientError::Codec(_)))) => return Err(e.into()),
        // Whether the broker stored it is unknown; the same id makes a second send harmless.
        Ok(Err(e)) => e.to_string(),
        Err(timed_out) => timed_out.to_string(),
    };
    client.close().await?;
    spooled(dir, &message, &why).await
}

/// Refuses to spool a body no broker with this frame limit (`--max-frame`, or the default) takes.
/// Online, the broker itself says; offline, this is the limit the daemon will send under.
fn check_size(body: &[u8], max_frame: Option<usize>) -> anyhow::Result<()> {
    let limit = max_body_len(max_frame.unwrap_or(DEFAULT_MAX_FRAME));
    if body.len() > limit {
        anyhow::bail!(
            "the body is {} bytes; a broker with a {}-byte frame limit takes at most {limit} (--max-frame sets the limit), so it is not spooled",
            body.len(),
            max_frame.unwrap_or(DEFAULT_MAX_FRAME)
        );
    }
    Ok(())
}

async fn spooled(dir: &Path, message: &Spooled, why: &str) -> anyhow::Result<()> {
    spool(dir, message).await.map_err(|e| {
        anyhow!(
            "cannot write the message into the outbox {}: {e}",
            dir.display()
        )
    })?;
    eprintln!(
        "spooled to {} ({why})",
        dir.join(message.file_name()).display()
    );
    Ok(())
}
