//! Opening a connection: TCP, `Hello`, `Hi`. Used for the first connection and for every reconnect.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use switchboard_proto::{
    encode_frame, BrokerFrame, ClientCodec, ClientFrame, CodecError, DatagramKey,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::connection::{Link, Reader, Writer};
use crate::error::ClientError;
use crate::options::ClientOptions;
use crate::udp::UdpOffer;
use crate::welcome::Welcome;

/// Opens the TCP connection, says `Hello` as `opts.id` and reads `Hi`, within `opts.connect_timeout`.
///
/// The id is not checked here: [`Client::connect`](crate::Client::connect) checks it once, before
/// the first connection.
pub(crate) async fn open(opts: &ClientOptions) -> Result<(Link, Welcome), ClientError> {
    tokio::time::timeout(opts.connect_timeout, handshake(opts))
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// The socket is split from the start, and the reader that read `Hi` is the one the link keeps:
/// frames the broker sent right behind `Hi` may already sit in its buffer.
async fn handshake(opts: &ClientOptions) -> Result<(Link, Welcome), ClientError> {
    let stream = TcpStream::connect(opts.server.as_str())
        .await
        .map_err(|source| ClientError::Connect {
            addr: opts.server.clone(),
            source,
        })?;
    let peer = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let (read, mut writer): (Reader, Writer) = match &opts.tls {
        None => {
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write))
        }
        Some(tls) => {
            let (read, write) = tokio::io::split(tls.connect(&opts.server, stream).await?);
            (Box::new(read), Box::new(write))
        }
    };
    // Until `hi` says otherwise, the client's own limit or the default.
    let before_hi = opts.max_frame.unwrap_or(DEFAULT_MAX_FRAME);
    let mut reader = FramedRead::new(read, ClientCodec::new(before_hi));

    let hello = ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client_id: opts.id.clone(),
        token: opts.token.clone(),
        keepalive_secs: opts.keepalive_secs(),
    };
    let bytes = encode_frame(&hello, before_hi)?;
    writer
        .write_all(&bytes)
        .await
        .map_err(|e| ClientError::Codec(e.into()))?;

    match reader.next().await {
        Some(Ok(BrokerFrame::Hi {
            version,
            keepalive_secs,
            address,
            pending,
            max_body_bytes,
            udp_port,
            datagram_session,
            datagram_key,
        })) => {
            if version != PROTOCOL_VERSION {
                return Err(ClientError::Protocol(format!(
                    "the broker speaks protocol version {version}, this client {PROTOCOL_VERSION}"
                )));
            }
            let welcome = Welcome {
                keepalive: Duration::from_secs(keepalive_secs.into()),
                address,
                pending,
                max_body_bytes,
                udp_port,
            };
            let max_frame = welcome.max_frame(opts.max_frame);
            reader.decoder_mut().set_max_frame(max_frame);
            let mut link = Link::new(reader, writer, max_frame, welcome.keepalive);
            // Over TLS datagrams stay inside it: UDP would carry them in clear.
            let offer = (
                peer,
                opts.tls.is_none(),
                udp_port,
                datagram_session,
                datagram_key,
            );
            if let (Some(peer), true, Some(port), Some(session), Some(key)) = offer {
                if let Some(key) = DatagramKey::from_slice(&key) {
                    let broker = SocketAddr::new(peer.ip(), port);
                    link.udp_offer = Some(UdpOffer {
                        broker,
                        session,
                        key,
                    });
                }
            }
            Ok((link, welcome))
        }
        Some(Ok(BrokerFrame::Error { code, text })) => Err(ClientError::Refused { code, text }),
        Some(Ok(other)) => Err(ClientError::Protocol(format!(
            "expected hi, got {}",
            frame_kind(&other)
        ))),
        Some(Err(CodecError::TlsRecord)) => Err(ClientError::Tls(
            "the broker answered in TLS, and this client connected without it \
             (set ClientOptions::tls; with the CLI, --tls or --ca)"
                .into(),
        )),
        Some(Err(e)) => Err(e.into()),
        None => Err(ClientError::Closed),
    }
}

/// The wire name of a broker frame's kind, for messages.
fn frame_kind(frame: &BrokerFrame) -> &'static str {
    match frame {
        BrokerFrame::Hi { .. } => "hi",
        BrokerFrame::Accepted { .. } => "accepted",
        BrokerFrame::Rejected { .. } => "rejected",
        BrokerFrame::Deliver { .. } => "deliver",
        BrokerFrame::Receipt { .. } => "receipt",
        BrokerFrame::Pong => "pong",
        BrokerFrame::Error { .. } => "error",
        BrokerFrame::Datagram { .. } => "datagram",
    }
}
