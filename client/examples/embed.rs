//! A service that embeds the client library: an echo service that answers every message.
//!
//! It shows what a long-running program needs from the library: a client that reconnects by itself
//! (with backoff) and reports each change of connection state, acknowledgements given only once the
//! work is done, and a clean `Bye` on Ctrl-C or SIGTERM.
//!
//! Each reply is sent with a send id of the service's choosing, the id of the message it
//! answers. Broker message ids are unique broker-wide, and far below the ids the library picks
//! itself (microseconds since 1970), so they are unique among this service's sends; and if the
//! service dies after replying and before acknowledging, the message comes again, the reply goes
//! out again with the same id, and the broker stores it once. The sender gets exactly one echo, with
//! one exception: after a broker crash, a message the broker had handed out early (before it was on
//! disk; see "Early delivery" in `PROTOCOL.md`) comes again under a new message id, with the same
//! `from` and `send_id`, and is echoed again. A service that must not answer twice would remember
//! `(from, send_id)`, as the client daemon's journal does.
//!
//! ```sh
//! cargo run --bin switchboard-broker &
//! cargo run -p switchboard-client --example embed -- 127.0.0.1:7878 echo
//! switchboard --id alice send --to echo "hello"
//! switchboard --id alice poll     # {"type":"message",...,"from":"echo",...,"body":"hello"}
//! ```

use std::time::Duration;

use switchboard_client::{
    Client, ClientError, ClientOptions, Event, Events, Message, Reconnect, SendOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:7878".into());
    let id = args.next().unwrap_or_else(|| "echo".into());

    let mut opts = ClientOptions::new(server, id);
    opts.reconnect = Some(Reconnect::new(
        Duration::from_millis(200),
        Duration::from_secs(30),
    ));
    // The first connection is not retried by the library: a wrong address should be an error at
    // start-up. A service that must wait for its broker loops here, pacing itself with the policy.
    let (client, mut events) = connect(opts).await?;
    tracing::info!(pending = client.welcome().pending, "echo service up");

    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Message(message)) => echo(&client, &message).await?,
                // Receipts for the echoes: nothing to do but let the broker forget them.
                Some(Event::Receipt(receipt)) => client.ack(receipt.receipt_id).await?,
                // Datagrams are not echoed: nothing to acknowledge, nothing kept.
                Some(Event::Datagram(d)) => tracing::debug!(from = %d.from, "datagram ignored"),
                Some(Event::Disconnected(reason)) => tracing::warn!(%reason, "broker lost; reconnecting"),
                Some(Event::Reconnected(welcome)) => tracing::info!(pending = welcome.pending, "reconnected"),
                Some(Event::Closed(reason)) => return Err(reason.to_string().into()),
                None => return Ok(()),
            },
            () = &mut stop => {
                tracing::info!("stopping");
                client.close().await?;
                return Ok(());
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what a service manager sends).
async fn shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Connects, trying again with backoff while the broker cannot be reached.
async fn connect(opts: ClientOptions) -> Result<(Client, Events), ClientError> {
    let policy = opts.reconnect.unwrap_or_default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match Client::connect(opts.clone()).await {
            Err(e) if e.is_retryable() => {
                let delay = policy.delay(attempt);
                tracing::info!(attempt, ?delay, error = %e, "broker unreachable; trying again");
                tokio::time::sleep(delay).await;
            }
            connected => return connected,
        }
    }
}

/// Replies with the same body, then acknowledges: the message is handled once the reply is stored
/// (or refused for good, which no retry would change).
async fn echo(client: &Client, message: &Message) -> Result<(), ClientError> {
    let reply = client
        .send_with_id(
            &message.from,
            message.body.clone(),
            message.message_id,
            SendOptions::default(),
        )
        .await;
    match reply {
        Ok(sent) => tracing::info!(to = %message.from, message_id = sent.message_id, "echoed"),
        Err(ClientError::Rejected { reason, text }) => {
            tracing::warn!(to = %message.from, %reason, %text, "the echo was refused");
        }
        Err(e) => return Err(e),
    }
    client.ack(message.message_id).await
}
