//! Switchboard spoken directly on the wire, with pipelining and batched socket writes.
//!
//! The bench does not use `switchboard-client`: it wants to control exactly how many sends are in
//! flight, to write many frames with one syscall, and to spend as little CPU as possible next to the
//! broker on the same machine. `Send`, `Ack` and `Bye` are encoded by hand straight into the write
//! buffer (a test checks the bytes against `switchboard_proto`'s encoder); everything the broker sends
//! is decoded with `switchboard_proto`'s codec.
//!
//! A sender has a reader task that turns `Accepted`/`Rejected` into credit for the send loop and
//! passes receipts back to be acknowledged, so receipts never pile up in the sender's mailbox.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use futures_util::{FutureExt as _, StreamExt as _};
use switchboard_proto::{
    encode_frame, BrokerFrame, ClientCodec, ClientFrame, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout_at;
use tokio_util::codec::FramedRead;

use crate::body;
use crate::collect::Collector;
use crate::system::{Receiver, SendPlan, SendStats, Sender, System};

/// Keepalive asked for: long, since a bench sender may sit quietly while others work.
const KEEPALIVE_SECS: u32 = 600;
/// Bytes gathered before a write; more frames than this go out in the next write.
const WRITE_BATCH: usize = 64 * 1024;
/// Frames a receiver handles before it writes the acknowledgements gathered so far.
const READ_BATCH: usize = 512;
/// How long closing a connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Switchboard broker at an address, or a cluster of them.
#[derive(Debug, Clone)]
pub(crate) struct Switchboard {
    pub addr: SocketAddr,
    /// The cluster's other brokers (`--also`); empty for one broker.
    pub others: Vec<SocketAddr>,
    pub connect_timeout: Duration,
}

impl Switchboard {
    /// The broker client `name` uses: the `i`-th sender (`...-s{i}`) the `i`-th broker, the `i`-th
    /// recipient (`...-r{i}`) the next one, so each pair's messages cross brokers.
    fn node(&self, name: &str) -> SocketAddr {
        if self.others.is_empty() {
            return self.addr;
        }
        let role = name.rsplit('-').next().unwrap_or("");
        let digits = role.trim_start_matches(|c: char| !c.is_ascii_digit());
        let index: usize = digits.parse().unwrap_or(0);
        let offset = usize::from(role.starts_with('r'));
        let n = self.others.len() + 1;
        match (index + offset) % n {
            0 => self.addr,
            i => self.others[i - 1],
        }
    }
}

type Reader = FramedRead<OwnedReadHalf, ClientCodec>;

/// A handshaken connection.
pub(crate) struct Conn {
    read: Reader,
    write: OwnedWriteHalf,
    /// `Hi.pending`: entries waiting in the mailbox at the handshake.
    pub pending: u64,
}

/// Connects as `id` and completes the handshake within `limit`.
pub(crate) async fn connect(addr: SocketAddr, id: &str, limit: Duration) -> anyhow::Result<Conn> {
    let handshake = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let hello = ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: id.to_string(),
            token: None,
            keepalive_secs: KEEPALIVE_SECS,
        };
        write
            .write_all(&encode_frame(&hello, DEFAULT_MAX_FRAME)?)
            .await?;
        let mut read = FramedRead::new(read, ClientCodec::new(DEFAULT_MAX_FRAME));
        match read.next().await {
            Some(Ok(BrokerFrame::Hi { pending, .. })) => Ok(Conn {
                read,
                write,
                pending,
            }),
            Some(Ok(BrokerFrame::Error { code, text })) => {
                bail!("broker refused {id}: {code}: {text}")
            }
            Some(Ok(other)) => bail!("expected hi, got {other:?}"),
            Some(Err(e)) => Err(e.into()),
            None => bail!("the broker closed the connection during the handshake"),
        }
    };
    tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| anyhow!("handshake of {id} timed out after {limit:?}"))?
}

/// Appends a length-prefixed frame whose MessagePack body `fill` writes.
fn frame(buf: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    fill(buf);
    let len = u32::try_from(buf.len() - start - 4).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

// Writing MessagePack into a Vec cannot fail, so the results below are ignored.

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(buf, s);
}

/// `send {id, to, body, fresh: true}`, `id` being the send id.
pub(crate) fn put_send(buf: &mut Vec<u8>, send_id: u64, to: &str, body: &[u8]) {
    frame(buf, |b| {
        let _ = rmp::encode::write_map_len(b, 5);
        put_str(b, "type");
        put_str(b, "send");
        put_str(b, "id");
        let _ = rmp::encode::write_uint(b, send_id);
        put_str(b, "to");
        put_str(b, to);
        put_str(b, "body");
        let _ = rmp::encode::write_bin(b, body);
        // Every bench send is a first attempt: the bench never resends.
        put_str(b, "fresh");
        let _ = rmp::encode::write_bool(b, true);
    });
}

/// `ack {id}`.
pub(crate) fn put_ack(buf: &mut Vec<u8>, id: u64) {
    frame(buf, |b| {
        let _ = rmp::encode::write_map_len(b, 2);
        put_str(b, "type");
        put_str(b, "ack");
        put_str(b, "id");
        let _ = rmp::encode::write_uint(b, id);
    });
}

/// `bye`.
pub(crate) fn put_bye(buf: &mut Vec<u8>) {
    frame(buf, |b| {
        let _ = rmp::encode::write_map_len(b, 1);
        put_str(b, "type");
        put_str(b, "bye");
    });
}

/// Writes `buf` (if not empty) and empties it.
async fn flush(
    write: &mut OwnedWriteHalf,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> anyhow::Result<()> {
    if !buf.is_empty() {
        timeout_at(deadline.into(), write.write_all(buf))
            .await
            .map_err(|_| anyhow!("timed out writing to the broker"))??;
        buf.clear();
    }
    Ok(())
}

/// Says `bye` and closes the write side.
async fn goodbye(write: &mut OwnedWriteHalf, buf: &mut Vec<u8>) {
    put_bye(buf);
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let _ = flush(write, buf, deadline).await;
    let _ = timeout_at(deadline.into(), write.shutdown()).await;
}

/// What a sender's reader task passes to the send loop.
enum Incoming {
    Accepted,
    Rejected(String),
    /// A receipt to count and acknowledge.
    Receipt(u64),
    /// A delivery to acknowledge (a sender is not expected to get any, but must not leave it waiting).
    Deliver(u64),
    Closed(String),
}

pub(crate) struct SbSender {
    name: String,
    write: OwnedWriteHalf,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    buf: Vec<u8>,
    body: Vec<u8>,
    /// The next send id: Unix time in microseconds at connect, plus one per send, so ids stay
    /// unique across runs against a long-lived broker (the broker would take a reused id for a resend).
    next_send_id: u64,
    receipts: u64,
    warned: bool,
}

async fn read_loop(mut read: Reader, tx: mpsc::UnboundedSender<Incoming>) {
    while let Some(frame) = read.next().await {
        let incoming = match frame {
            Ok(BrokerFrame::Accepted { .. }) => Incoming::Accepted,
            Ok(BrokerFrame::Rejected { reason, text, .. }) => {
                Incoming::Rejected(format!("{reason}: {text}"))
            }
            Ok(BrokerFrame::Receipt { receipt_id, .. }) => Incoming::Receipt(receipt_id),
            Ok(BrokerFrame::Deliver { message_id, .. }) => Incoming::Deliver(message_id),
            Ok(BrokerFrame::Error { code, text }) => {
                let _ = tx.send(Incoming::Closed(format!("{code}: {text}")));
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Incoming::Closed(e.to_string()));
                return;
            }
        };
        if tx.send(incoming).is_err() {
            return;
        }
    }
    let _ = tx.send(Incoming::Closed(
        "the broker closed the connection".to_string(),
    ));
}

impl SbSender {
    async fn connect(sys: &Switchboard, name: &str) -> anyhow::Result<Self> {
        let conn = connect(sys.node(name), name, sys.connect_timeout).await?;
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(conn.read, tx));
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Ok(Self {
            name: name.to_string(),
            write: conn.write,
            incoming,
            buf: Vec::with_capacity(WRITE_BATCH + 4096),
            body: Vec::new(),
            next_send_id: now_us,
            receipts: 0,
            warned: false,
        })
    }

    /// Handles one message from the reader task; returns how many sends it answered.
    fn take(&mut self, incoming: Incoming, stats: &mut SendStats) -> anyhow::Result<usize> {
        match incoming {
            Incoming::Accepted => {
                stats.accepted += 1;
                Ok(1)
            }
            Incoming::Rejected(why) => {
                if !self.warned {
                    eprintln!("warning: {}: a send was rejected: {why}", self.name);
                    self.warned = true;
                }
                stats.rejected += 1;
                Ok(1)
            }
            Incoming::Receipt(id) => {
                self.receipts += 1;
                put_ack(&mut self.buf, id);
                Ok(0)
            }
            Incoming::Deliver(id) => {
                put_ack(&mut self.buf, id);
                Ok(0)
            }
            Incoming::Closed(why) => bail!("{}: connection closed: {why}", self.name),
        }
    }
}

impl Sender for SbSender {
    async fn send(&mut self, plan: &SendPlan, deadline: Instant) -> anyhow::Result<SendStats> {
        let mut stats = SendStats::default();
        let (mut next, end) = (plan.seqs.start, plan.seqs.end);
        let mut outstanding = 0usize;
        loop {
            while let Ok(incoming) = self.incoming.try_recv() {
                outstanding -= self.take(incoming, &mut stats)?;
            }
            while outstanding < plan.inflight && next < end && self.buf.len() < WRITE_BATCH {
                body::write(&mut self.body, plan.sender, next, plan.size);
                put_send(
                    &mut self.buf,
                    self.next_send_id,
                    plan.recipient(next),
                    &self.body,
                );
                self.next_send_id += 1;
                next += 1;
                outstanding += 1;
            }
            if !self.buf.is_empty() {
                flush(&mut self.write, &mut self.buf, deadline).await?;
                continue;
            }
            if next >= end && outstanding == 0 {
                return Ok(stats);
            }
            match timeout_at(deadline.into(), self.incoming.recv()).await {
                Err(_) => bail!(
                    "{}: timed out with {outstanding} sends unanswered",
                    self.name
                ),
                Ok(None) => bail!("{}: the reader stopped", self.name),
                Ok(Some(incoming)) => outstanding -= self.take(incoming, &mut stats)?,
            }
        }
    }

    async fn close(mut self, receipts: u64, wait: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + wait;
        let mut ignored = SendStats::default();
        loop {
            while let Ok(incoming) = self.incoming.try_recv() {
                if self.take(incoming, &mut ignored).is_err() {
                    return Ok(self.receipts);
                }
            }
            flush(&mut self.write, &mut self.buf, deadline).await?;
            if self.receipts >= receipts {
                break;
            }
            match timeout_at(deadline.into(), self.incoming.recv()).await {
                Ok(Some(incoming)) => {
                    if self.take(incoming, &mut ignored).is_err() {
                        return Ok(self.receipts);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        goodbye(&mut self.write, &mut self.buf).await;
        Ok(self.receipts)
    }
}

pub(crate) struct SbReceiver {
    name: String,
    conn: Conn,
}

impl SbReceiver {
    /// `Hi.pending` of this connection.
    pub(crate) fn pending(&self) -> u64 {
        self.conn.pending
    }
}

impl Receiver for SbReceiver {
    async fn receive(
        mut self,
        mut collector: Collector,
        deadline: Instant,
    ) -> anyhow::Result<Collector> {
        let mut buf = Vec::with_capacity(READ_BATCH * 16);
        let conn = &mut self.conn;
        while !collector.done() {
            let first = match timeout_at(deadline.into(), conn.read.next()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    eprintln!("warning: {}: the broker closed the connection", self.name);
                    break;
                }
                Err(_) => break,
            };
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(frame) = next.take() {
                match frame? {
                    BrokerFrame::Deliver {
                        message_id, body, ..
                    } => {
                        collector.record(&body);
                        put_ack(&mut buf, message_id);
                    }
                    BrokerFrame::Receipt { receipt_id, .. } => put_ack(&mut buf, receipt_id),
                    BrokerFrame::Error { code, text } => {
                        bail!(
                            "{}: the broker closed the connection: {code}: {text}",
                            self.name
                        )
                    }
                    _ => {}
                }
                handled += 1;
                if handled < READ_BATCH {
                    next = conn.read.next().now_or_never().flatten();
                }
            }
            flush(
                &mut conn.write,
                &mut buf,
                deadline.max(Instant::now() + CLOSE_TIMEOUT),
            )
            .await?;
        }
        goodbye(&mut conn.write, &mut buf).await;
        Ok(collector)
    }
}

impl System for Switchboard {
    type Sender = SbSender;
    type Receiver = SbReceiver;

    fn name(&self) -> &'static str {
        "switchboard"
    }

    fn has_receipts(&self) -> bool {
        true
    }

    async fn prepare(&self, _recipients: &[String]) -> anyhow::Result<()> {
        Ok(()) // Every client id has a mailbox.
    }

    async fn sender(&self, name: &str) -> anyhow::Result<SbSender> {
        SbSender::connect(self, name).await
    }

    async fn receiver(&self, name: &str) -> anyhow::Result<SbReceiver> {
        let conn = connect(self.node(name), name, self.connect_timeout).await?;
        Ok(SbReceiver {
            name: name.to_string(),
            conn,
        })
    }

    async fn idle(&self, name: &str) -> anyhow::Result<Box<dyn Send + Sync>> {
        Ok(Box::new(
            connect(self.node(name), name, self.connect_timeout).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_cluster_each_pair_is_spread_over_two_brokers() {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let sys = Switchboard {
            addr: at(1),
            others: vec![at(2), at(3)],
            connect_timeout: Duration::from_secs(1),
        };
        let node = |name: &str| sys.node(name).port();
        assert_eq!(
            [
                node("t-1-s0"),
                node("t-1-s1"),
                node("t-1-s2"),
                node("t-1-s3")
            ],
            [1, 2, 3, 1]
        );
        assert_eq!([node("t-1-r0"), node("t-1-r1"), node("t-1-r2")], [2, 3, 1]);
        let one = Switchboard {
            others: Vec::new(),
            ..sys.clone()
        };
        assert_eq!(one.node("t-1-r0").port(), 1);
    }

    #[test]
    fn hand_encoded_frames_match_the_protocol_crate() {
        let mut buf = Vec::new();
        put_send(&mut buf, 1_700_000_000_000_001, "bob", b"\x00hi");
        let send = ClientFrame::Send {
            send_id: 1_700_000_000_000_001,
            to: "bob".into(),
            body: bytes::Bytes::from_static(b"\x00hi"),
            ttl_ms: None,
            fresh: true,
            receipts: switchboard_proto::Receipts::All,
        };
        assert_eq!(
            buf,
            encode_frame(&send, DEFAULT_MAX_FRAME).unwrap().to_vec()
        );

        for id in [0, 127, 128, 65_536, u64::MAX] {
            buf.clear();
            put_ack(&mut buf, id);
            let ack = ClientFrame::Ack { id };
            assert_eq!(buf, encode_frame(&ack, DEFAULT_MAX_FRAME).unwrap().to_vec());
        }

        buf.clear();
        put_bye(&mut buf);
        assert_eq!(
            buf,
            encode_frame(&ClientFrame::Bye, DEFAULT_MAX_FRAME)
                .unwrap()
                .to_vec()
        );
    }
}
