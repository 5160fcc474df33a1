//! NATS through `async-nats`: core (at-most-once) and JetStream (file storage, durable consumers).
//!
//! Core NATS has no acknowledgement of a publish, so "accepted" is a `flush` (the server's `PONG`)
//! after every `inflight` publishes, and it keeps nothing for an absent subscriber: the offline
//! workloads refuse it. JetStream: one stream per run (`SB_TAG`, subjects `TAG.>`, file storage) and
//! a durable pull consumer per recipient filtered on its subject; "accepted" is the publish ack, and
//! every delivered message is acked on its own (`AckPolicy::Explicit`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream::{self, consumer::pull, stream::StorageType};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use tokio::time::timeout_at;

use crate::body;
use crate::collect::Collector;
use crate::system::{Receiver, SendPlan, SendStats, Sender, System};

/// Messages a core subscription may hold before the client drops (it is at-most-once).
const SUBSCRIPTION_CAPACITY: usize = 1 << 20;
/// Messages a JetStream pull asks for at a time.
const PULL_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct Nats {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// JetStream when true, core NATS otherwise.
    pub jetstream: bool,
    /// Prefix of the subjects and name of the stream for this run.
    pub tag: String,
    /// The stream's replicas (`num_replicas`): 3 on a 3-node cluster, for a peer that keeps what
    /// it accepted through the loss of a server, as Switchboard on a synchronous standby does.
    pub replicas: usize,
}

impl Nats {
    fn subject(&self, name: &str) -> String {
        format!("{}.{name}", self.tag)
    }

    fn stream_name(&self) -> String {
        format!("SB_{}", self.tag)
    }

    async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let connect = async_nats::ConnectOptions::new()
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .connection_timeout(self.connect_timeout)
            .connect(self.addr.to_string());
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| anyhow!("connecting to NATS at {} timed out", self.addr))?
            .with_context(|| format!("cannot connect to NATS at {}", self.addr))
    }

    async fn stream(&self, js: &jetstream::Context) -> anyhow::Result<jetstream::stream::Stream> {
        js.get_or_create_stream(jetstream::stream::Config {
            name: self.stream_name(),
            subjects: vec![format!("{}.>", self.tag)],
            storage: StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("cannot create the JetStream stream: {e}"))
    }

    async fn consumer(
        &self,
        js: &jetstream::Context,
        name: &str,
    ) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
        self.stream(js)
            .await?
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_string()),
                    filter_subject: self.subject(name),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow!("cannot create the consumer {name}: {e}"))
    }
}

pub(crate) struct NatsSender {
    name: String,
    client: async_nats::Client,
    js: Option<jetstream::Context>,
    /// The run's subject prefix.
    tag: String,
    /// The subjects of the current plan's recipients.
    subjects: Vec<String>,
}

impl NatsSender {
    fn subject(&mut self, plan: &SendPlan, seq: u64) -> String {
        if self.subjects.len() != plan.to.len() {
            self.subjects = plan
                .to
                .iter()
                .map(|n| format!("{}.{n}", self.tag))
                .collect();
        }
        self.subjects[(seq % plan.to.len() as u64) as usize].clone()
    }
}

fn timed_out(what: &'static str) -> impl FnOnce(tokio::time::error::Elapsed) -> anyhow::Error {
    move |_| anyhow!("{what} timed out")
}

impl Sender for NatsSender {
    async fn send(&mut self, plan: &SendPlan, deadline: Instant) -> anyhow::Result<SendStats> {
        let mut stats = SendStats::default();
        match self.js.clone() {
            None => {
                let mut unflushed = 0u64;
                for seq in plan.seqs.clone() {
                    let payload = Bytes::from(body::make(plan.sender, seq, plan.size));
                    let subject = self.subject(plan, seq);
                    self.client.publish(subject, payload).await?;
                    unflushed += 1;
                    if unflushed as usize >= plan.inflight {
                        timeout_at(deadline.into(), self.client.flush())
                            .await
                            .map_err(timed_out("flush"))??;
                        stats.accepted += unflushed;
                        unflushed = 0;
                    }
                }
                timeout_at(deadline.into(), self.client.flush())
                    .await
                    .map_err(timed_out("flush"))??;
                stats.accepted += unflushed;
            }
            Some(js) => {
                let mut acks = FuturesUnordered::new();
                let mut seqs = plan.seqs.clone();
                loop {
                    while acks.len() < plan.inflight {
                        let Some(seq) = seqs.next() else { break };
                        let payload = Bytes::from(body::make(plan.sender, seq, plan.size));
                        let subject = self.subject(plan, seq);
                        let ack = js
                            .publish(subject, payload)
                            .await
                            .map_err(|e| anyhow!("{}: publish failed: {e}", self.name))?;
                        acks.push(std::future::IntoFuture::into_future(ack));
                    }
                    match timeout_at(deadline.into(), acks.next()).await {
                        Ok(Some(Ok(_))) => stats.accepted += 1,
                        Ok(Some(Err(e))) => {
                            stats.rejected += 1;
                            eprintln!("warning: {}: publish not acknowledged: {e}", self.name);
                        }
                        Ok(None) => break,
                        Err(_) => bail!("{}: timed out waiting for publish acks", self.name),
                    }
                }
            }
        }
        Ok(stats)
    }

    async fn close(self, _receipts: u64, _wait: Duration) -> anyhow::Result<u64> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
        Ok(0)
    }
}

pub(crate) enum NatsReceiver {
    Core(async_nats::Subscriber),
    JetStream(String, Box<jetstream::consumer::Consumer<pull::Config>>),
}

impl Receiver for NatsReceiver {
    async fn receive(
        self,
        mut collector: Collector,
        deadline: Instant,
    ) -> anyhow::Result<Collector> {
        match self {
            NatsReceiver::Core(mut subscriber) => {
                while !collector.done() {
                    match timeout_at(deadline.into(), subscriber.next()).await {
                        Ok(Some(message)) => collector.record(&message.payload),
                        Ok(None) | Err(_) => break,
                    }
                }
                let _ = subscriber.unsubscribe().await;
            }
            NatsReceiver::JetStream(name, consumer) => {
                let mut messages = consumer
                    .stream()
                    .max_messages_per_batch(PULL_BATCH)
                    .messages()
                    .await
                    .map_err(|e| anyhow!("{name}: cannot pull: {e}"))?;
                while !collector.done() {
                    match timeout_at(deadline.into(), messages.next()).await {
                        Ok(Some(Ok(message))) => {
                            collector.record(&message.payload);
                            message
                                .ack()
                                .await
                                .map_err(|e| anyhow!("{name}: ack failed: {e}"))?;
                        }
                        Ok(Some(Err(e))) => eprintln!("warning: {name}: {e}"),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        Ok(collector)
    }
}

impl System for Nats {
    type Sender = NatsSender;
    type Receiver = NatsReceiver;

    fn name(&self) -> &'static str {
        if self.jetstream {
            "jetstream"
        } else {
            "nats"
        }
    }

    fn keeps_offline(&self) -> bool {
        self.jetstream
    }

    async fn prepare(&self, recipients: &[String]) -> anyhow::Result<()> {
        if !self.jetstream {
            return Ok(());
        }
        let js = jetstream::new(self.client().await?);
        for name in recipients {
            self.consumer(&js, name).await?;
        }
        Ok(())
    }

    async fn sender(&self, name: &str) -> anyhow::Result<NatsSender> {
        let client = self.client().await?;
        let js = self.jetstream.then(|| jetstream::new(client.clone()));
        Ok(NatsSender {
            name: name.to_string(),
            client,
            js,
            tag: self.tag.clone(),
            subjects: Vec::new(),
        })
    }

    async fn receiver(&self, name: &str) -> anyhow::Result<NatsReceiver> {
        let client = self.client().await?;
        if self.jetstream {
            let js = jetstream::new(client);
            let consumer = Box::new(self.consumer(&js, name).await?);
            return Ok(NatsReceiver::JetStream(name.to_string(), consumer));
        }
        let subscriber = client.subscribe(self.subject(name)).await?;
        client.flush().await?; // The subscription is in place before anyone sends.
        Ok(NatsReceiver::Core(subscriber))
    }

    async fn idle(&self, _name: &str) -> anyhow::Result<Box<dyn Send + Sync>> {
        Ok(Box::new(self.client().await?))
    }
}
