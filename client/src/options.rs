//! How to reach the broker and who to be once there.

use std::time::Duration;

use crate::reconnect::Reconnect;
use crate::tls::Tls;

/// Everything [`Client::connect`](crate::Client::connect) needs. Build it with [`ClientOptions::new`]
/// and change the public fields as needed.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The broker's address, `host:port`. Every address the name resolves to is tried in turn.
    pub server: String,
    /// The client id to connect as; checked against the client id rules before connecting.
    pub id: String,
    /// The keepalive to ask for in `Hello`, rounded down to whole seconds, at least 1. The broker may
    /// clamp it; the agreed value is in [`Welcome::keepalive`](crate::Welcome::keepalive).
    pub keepalive: Duration,
    /// A credential for brokers that require one. Protocol version 1 defines none.
    pub token: Option<String>,
    /// The largest frame body read or written. `None` (the default) follows the broker: the limit it
    /// announces in `hi`, so whatever it accepted from a sender this client can receive (1 MiB until
    /// then, and with brokers too old to announce one). `Some(n)` fixes it at `n` both ways; with a
    /// broker whose `max_frame_bytes` is larger, a large delivery then ends the connection.
    pub max_frame: Option<usize>,
    /// The bound on opening the TCP connection and receiving `Hi`, together; it applies to each
    /// reconnect attempt too.
    pub connect_timeout: Duration,
    /// Whether, and how fast, to reconnect when a connection is lost. `None` (the default): the first
    /// loss ends the client with [`Event::Closed`](crate::Event::Closed) and pending sends fail with
    /// [`ClientError::Closed`](crate::ClientError::Closed).
    ///
    /// `Some`: after a network failure, a hang-up, or a broker `Error` that is passing
    /// (`shutting-down`, `keepalive-timeout`, `internal`), the client reports
    /// [`Event::Disconnected`](crate::Event::Disconnected), connects again with backoff, says `Hello`
    /// with the same id, reports [`Event::Reconnected`](crate::Event::Reconnected), and sends again
    /// every send not yet answered, in order and before any newer one. Pending send and receipt
    /// futures keep waiting. Only [`Client::connect`](crate::Client::connect)'s own connection is not
    /// retried: its failure is its error. Errors that reconnecting cannot cure end the client as
    /// without this option: `session-taken-over` (another process holds the id now),
    /// `invalid-client-id`, `unsupported-version`, and protocol disagreements.
    pub reconnect: Option<Reconnect>,
    /// Speak TLS to the broker (`None`, the default: plain TCP).
    pub tls: Option<Tls>,
    /// The size asked for the UDP socket's receive and send buffers, in bytes (the kernel caps it at
    /// `net.core.rmem_max`/`wmem_max`). UDP has no flow control: a burst larger than the buffer
    /// while the library is not scheduled is lost in the kernel. Default 2 MiB.
    pub udp_socket_buffer: usize,
    /// How many events wait for the program to read them (at least 1). When it is full the
    /// connection stops reading its socket (messages wait at the broker, within its window), and a
    /// datagram arriving is dropped, counted in
    /// [`DatagramStats::dropped_slow_reader`](crate::DatagramStats::dropped_slow_reader): a program
    /// that reads in bursts beside a fast datagram stream asks for more. Default 1,024.
    pub events_capacity: usize,
}

impl ClientOptions {
    /// The default keepalive: 30 seconds.
    pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
    /// The default bound on connecting and the handshake: 10 seconds.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default UDP socket buffer size: 2 MiB.
    pub const DEFAULT_UDP_SOCKET_BUFFER: usize = 2 * 1024 * 1024;
    /// The default number of events waiting to be read: 1,024, four times the broker's default
    /// window of unacknowledged entries, so answers to sends are never held up behind unread
    /// deliveries.
    pub const DEFAULT_EVENTS_CAPACITY: usize = 1024;

    /// Options for connecting to `server` as `id`, with every other field at its default.
    pub fn new(server: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            id: id.into(),
            keepalive: Self::DEFAULT_KEEPALIVE,
            token: None,
            max_frame: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            reconnect: None,
            tls: None,
            udp_socket_buffer: Self::DEFAULT_UDP_SOCKET_BUFFER,
            events_capacity: Self::DEFAULT_EVENTS_CAPACITY,
        }
    }

    /// The keepalive as `Hello` carries it: whole seconds, at least 1.
    pub(crate) fn keepalive_secs(&self) -> u32 {
        u32::try_from(self.keepalive.as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_is_whole_seconds_and_never_zero() {
        let mut opts = ClientOptions::new("x:1", "a");
        assert_eq!(opts.keepalive_secs(), 30);
        opts.keepalive = Duration::from_millis(400);
        assert_eq!(opts.keepalive_secs(), 1);
        opts.keepalive = Duration::from_secs(u64::MAX);
        assert_eq!(opts.keepalive_secs(), u32::MAX);
    }
}
