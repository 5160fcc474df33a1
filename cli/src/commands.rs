//! The one-shot commands `send`, `listen` and `poll` (`send --spool` is in `outbox/spool.rs`).

use std::time::Duration;

use anyhow::anyhow;
use bytes::Bytes;
use switchboard_client::{
    Client, ClientOptions, Event, Message, Receipt, ReceiptStatus, SendOptions,
};

use crate::deadline::{connect, Deadline};
use crate::exit::BrokerClosed;
use crate::output::{datagram_line, message_line, receipt_line};
use crate::stdio::{print_line, read_stdin, shutdown_signal};

/// Sends one message and prints its broker id; with `wait_delivered`, then waits for the receipt and
/// prints its status: `delivered`, or `expired` (then exits 1) when `options.ttl` ran out first.
pub(crate) async fn send(
    mut opts: ClientOptions,
    to: &str,
    text: Option<String>,
    options: SendOptions,
    wait_delivered: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let body = match text {
        Some(text) => Bytes::from(text),
        None => read_stdin().await?,
    };
    let deadline = Deadline::after(timeout);
    if let Some(timeout) = timeout {
        opts.connect_timeout = opts.connect_timeout.min(timeout);
    }
    // Events stay unread: whatever arrives for this id waits for `listen` or `poll`, unacknowledged.
    let (client, _events) = connect(opts).await?;
    if wait_delivered {
        let tracked = deadline
            .bound(
                "the broker to accept the message",
                client.send_and_track_with(to, body, options),
            )
            .await??;
        print_line(&tracked.sent.message_id.to_string())?;
        let receipt = deadline.bound("delivery", tracked.receipt).await??;
        print_line(receipt.status.as_str())?;
        if receipt.status != ReceiptStatus::Delivered {
            client.close().await?;
            anyhow::bail!(
                "message {} was not delivered: {}",
                receipt.message_id,
                receipt.status
            );
        }
    } else {
        let sent = deadline
            .bound(
                "the broker to accept the message",
                client.send_with(to, body, options),
            )
            .await??;
        print_line(&sent.message_id.to_string())?;
    }
    client.close().await?;
    Ok(())
}

/// Prints and acknowledges what arrives until interrupted or disconnected, or until `count` entries
/// are handled, or `timeout` has passed: with `count`, running out of time first is an error;
/// without it, the time is simply how long to listen. Leaving says `Bye` after the acks, so exactly
/// the printed entries are acknowledged.
pub(crate) async fn listen(
    opts: ClientOptions,
    count: Option<u64>,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let (client, mut events) = connect(opts).await?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let time_up = async {
        match timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(time_up);
    let mut handled = 0;
    while count.is_none_or(|count| handled < count) {
        tokio::select! {
            event = events.next() => {
                tracing::trace!(?event, "event");
                if handle(&client, event).await? {
                    handled += 1;
                }
            }
            () = &mut time_up => {
                client.close().await?;
                return match (count, timeout) {
                    (Some(count), Some(timeout)) => Err(anyhow!(
                        "timed out after {} with {handled} of {count} entries",
                        humantime::format_duration(timeout)
                    )),
                    _ => Ok(()),
                };
            }
            stopped = &mut stop => {
                stopped?;
                tracing::debug!("interrupted; saying bye");
                break;
            }
        }
    }
    client.close().await?;
    Ok(())
}

/// Sends one datagram and leaves: nothing to wait for, nothing printed.
pub(crate) async fn send_datagram(
    mut opts: ClientOptions,
    to: &str,
    text: Option<String>,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let body = match text {
        Some(text) => Bytes::from(text),
        None => read_stdin().await?,
    };
    if let Some(timeout) = timeout {
        opts.connect_timeout = opts.connect_timeout.min(timeout);
    }
    let (client, _events) = connect(opts).await?;
    client.send_datagram(to, body).await?;
    // `bye` goes out after the datagram, so closing is what sends it.
    client.close().await?;
    Ok(())
}

/// Prints and acknowledges the entries that were waiting at the handshake, then leaves.
pub(crate) async fn poll(opts: ClientOptions, timeout: Option<Duration>) -> anyhow::Result<()> {
    let deadline = Deadline::after(timeout);
    let (client, mut events) = connect(opts).await?;
    let pending = client.welcome().pending;
    let mut handled = 0;
    while handled < pending {
        let what = format!("entry {} of {pending}", handled + 1);
        let event = deadline.bound(&what, events.next()).await?;
        if handle(&client, event).await? {
            handled += 1;
        }
    }
    client.close().await?;
    Ok(())
}

/// Prints a message or receipt and acknowledges it (`true`: an entry was handled); an end of the
/// connection is an error.
async fn handle(client: &Client, event: Option<Event>) -> anyhow::Result<bool> {
    match event {
        Some(Event::Message(message)) => print_message(client, &message).await.map(|()| true),
        Some(Event::Receipt(receipt)) => print_receipt(client, &receipt).await.map(|()| true),
        // Not a mailbox entry: printed, nothing to acknowledge, not counted.
        Some(Event::Datagram(datagram)) => print_line(&datagram_line(&datagram)?).map(|()| false),
        Some(Event::Closed(reason)) => Err(BrokerClosed(reason).into()),
        // The command line does not reconnect; were it to, these are news, not errors.
        Some(Event::Disconnected(reason)) => {
            tracing::warn!(%reason, "reconnecting");
            Ok(false)
        }
        Some(Event::Reconnected(welcome)) => {
            tracing::info!(pending = welcome.pending, "reconnected");
            Ok(false)
        }
        None => Err(anyhow!("the connection to the broker is closed")),
    }
}

/// Acknowledges only once the line is out, so a message is never lost to a full disk or a closed pipe.
async fn print_message(client: &Client, message: &Message) -> anyhow::Result<()> {
    print_line(&message_line(message)?)?;
    client.ack(message.message_id).await?;
    Ok(())
}

async fn print_receipt(client: &Client, receipt: &Receipt) -> anyhow::Result<()> {
    print_line(&receipt_line(receipt)?)?;
    client.ack(receipt.receipt_id).await?;
    Ok(())
}
