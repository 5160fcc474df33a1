//! Redis through the `redis` crate: pub/sub while recipients are online, Streams with consumer
//! groups when they may be offline.
//!
//! Pub/sub: "accepted" is the reply to `PUBLISH`; up to `inflight` are pipelined on a multiplexed
//! connection. Streams: one stream `sb:NAME` per recipient with the group `sb` created beforehand
//! (`XGROUP CREATE ... MKSTREAM`); "accepted" is the reply to `XADD`, and the recipient reads with
//! `XREADGROUP ... COUNT 256 BLOCK` and acknowledges each batch with one `XACK`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::streams::StreamReadReply;
use redis::IntoConnectionInfo as _;
use tokio::time::timeout_at;

use crate::body;
use crate::collect::Collector;
use crate::system::{Receiver, SendPlan, SendStats, Sender, System};

const GROUP: &str = "sb";
/// Entries one `XREADGROUP` returns at most.
const READ_BATCH: usize = 256;
/// How long one `XREADGROUP` blocks, in milliseconds.
const BLOCK_MS: u64 = 1000;

#[derive(Debug, Clone)]
pub(crate) struct Redis {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// Streams and consumer groups when true, pub/sub otherwise.
    pub streams: bool,
}

fn key(name: &str) -> String {
    format!("sb:{name}")
}

impl Redis {
    /// A client with `TCP_NODELAY` set, as Redis clients that care about latency run it (redis-rs
    /// leaves Nagle on by default; the server sets `TCP_NODELAY` on its side itself).
    fn client(&self) -> anyhow::Result<redis::Client> {
        let info = format!("redis://{}/", self.addr)
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        Ok(redis::Client::open(info)?)
    }

    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let client = self.client()?;
        tokio::time::timeout(
            self.connect_timeout,
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow!("connecting to Redis at {} timed out", self.addr))?
        .with_context(|| format!("cannot connect to Redis at {}", self.addr))
    }
}

pub(crate) struct RedisSender {
    name: String,
    conn: MultiplexedConnection,
    streams: bool,
}

impl Sender for RedisSender {
    async fn send(&mut self, plan: &SendPlan, deadline: Instant) -> anyhow::Result<SendStats> {
        let mut stats = SendStats::default();
        let mut replies = FuturesUnordered::new();
        let mut seqs = plan.seqs.clone();
        let keys: Vec<String> = plan.to.iter().map(|n| key(n)).collect();
        loop {
            while replies.len() < plan.inflight {
                let Some(seq) = seqs.next() else { break };
                let payload = body::make(plan.sender, seq, plan.size);
                let target = &keys[(seq % keys.len() as u64) as usize];
                let cmd = if self.streams {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(target).arg("*").arg("d").arg(payload);
                    cmd
                } else {
                    let mut cmd = redis::cmd("PUBLISH");
                    cmd.arg(target).arg(payload);
                    cmd
                };
                let mut conn = self.conn.clone();
                replies.push(async move { cmd.query_async::<redis::Value>(&mut conn).await });
            }
            match timeout_at(deadline.into(), replies.next()).await {
                Ok(Some(Ok(_))) => stats.accepted += 1,
                Ok(Some(Err(e))) => {
                    stats.rejected += 1;
                    eprintln!("warning: {}: {e}", self.name);
                }
                Ok(None) => break,
                Err(_) => bail!("{}: timed out waiting for replies", self.name),
            }
        }
        Ok(stats)
    }

    async fn close(self, _receipts: u64, _wait: Duration) -> anyhow::Result<u64> {
        Ok(0)
    }
}

pub(crate) enum RedisReceiver {
    PubSub(redis::aio::PubSub),
    Stream(String, MultiplexedConnection),
}

impl Receiver for RedisReceiver {
    async fn receive(
        self,
        mut collector: Collector,
        deadline: Instant,
    ) -> anyhow::Result<Collector> {
        match self {
            RedisReceiver::PubSub(mut pubsub) => {
                let mut messages = pubsub.on_message();
                while !collector.done() {
                    match timeout_at(deadline.into(), messages.next()).await {
                        Ok(Some(message)) => collector.record(message.get_payload_bytes()),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            RedisReceiver::Stream(name, mut conn) => {
                let stream = key(&name);
                while !collector.done() && Instant::now() < deadline {
                    let mut read = redis::cmd("XREADGROUP");
                    read.arg("GROUP")
                        .arg(GROUP)
                        .arg(&name)
                        .arg("COUNT")
                        .arg(READ_BATCH)
                        .arg("BLOCK")
                        .arg(BLOCK_MS)
                        .arg("STREAMS")
                        .arg(&stream)
                        .arg(">");
                    let read = read.query_async::<Option<StreamReadReply>>(&mut conn);
                    let reply = timeout_at(deadline.into(), read)
                        .await
                        .map_err(|_| anyhow!("{name}: XREADGROUP timed out"))??;
                    let Some(reply) = reply else { continue };
                    let mut ack = redis::cmd("XACK");
                    ack.arg(&stream).arg(GROUP);
                    let mut any = false;
                    for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                        match entry.map.get("d") {
                            Some(redis::Value::BulkString(body)) => collector.record(body),
                            _ => collector.record(b""),
                        }
                        ack.arg(entry.id);
                        any = true;
                    }
                    if any {
                        ack.query_async::<redis::Value>(&mut conn).await?;
                    }
                }
            }
        }
        Ok(collector)
    }
}

impl System for Redis {
    type Sender = RedisSender;
    type Receiver = RedisReceiver;

    fn name(&self) -> &'static str {
        "redis"
    }

    fn keeps_offline(&self) -> bool {
        self.streams
    }

    async fn prepare(&self, recipients: &[String]) -> anyhow::Result<()> {
        if !self.streams {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        for name in recipients {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key(name))
                .arg(GROUP)
                .arg("$")
                .arg("MKSTREAM")
                .query_async::<redis::Value>(&mut conn)
                .await
                .with_context(|| format!("cannot create the consumer group of {name}"))?;
        }
        Ok(())
    }

    async fn sender(&self, name: &str) -> anyhow::Result<RedisSender> {
        Ok(RedisSender {
            name: name.to_string(),
            conn: self.connection().await?,
            streams: self.streams,
        })
    }

    async fn receiver(&self, name: &str) -> anyhow::Result<RedisReceiver> {
        if self.streams {
            return Ok(RedisReceiver::Stream(
                name.to_string(),
                self.connection().await?,
            ));
        }
        let client = self.client()?;
        let mut pubsub = tokio::time::timeout(self.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| anyhow!("connecting to Redis timed out"))??;
        pubsub.subscribe(key(name)).await?; // Resolves once Redis confirmed the subscription.
        Ok(RedisReceiver::PubSub(pubsub))
    }

    async fn idle(&self, _name: &str) -> anyhow::Result<Box<dyn Send + Sync>> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<redis::Value>(&mut conn)
            .await?;
        Ok(Box::new(conn))
    }
}
