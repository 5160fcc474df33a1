//! Mosquitto through `rumqttc`: MQTT 3.1.1, QoS 1, persistent sessions.
//!
//! "Accepted" is the broker's `PUBACK`; a recipient is a client with `clean_session = false`
//! subscribed at QoS 1 to its own topic `sb/NAME`, so Mosquitto queues its messages while it is
//! away. `rumqttc` acknowledges every incoming `PUBLISH` itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use crate::body;
use crate::collect::Collector;
use crate::system::{Receiver, SendPlan, SendStats, Sender, System};

const KEEPALIVE: Duration = Duration::from_secs(600);
const MAX_PACKET: usize = 1024 * 1024;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct Mqtt {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// Unacknowledged publishes per client (rumqttc's inflight window).
    pub inflight: u16,
}

fn topic(name: &str) -> String {
    format!("sb/{name}")
}

impl Mqtt {
    fn options(&self, name: &str, clean: bool) -> MqttOptions {
        let mut options = MqttOptions::new(name, self.addr.ip().to_string(), self.addr.port());
        options
            .set_keep_alive(KEEPALIVE)
            .set_clean_session(clean)
            .set_inflight(self.inflight.max(1))
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        options
    }

    /// Connects and waits for `CONNACK` (and `SUBACK` when subscribing to `subscribe`).
    async fn connect(
        &self,
        name: &str,
        clean: bool,
        subscribe: Option<String>,
    ) -> anyhow::Result<(AsyncClient, EventLoop)> {
        let (client, mut events) = AsyncClient::new(self.options(name, clean), 1024);
        // rumqttc leaves Nagle on by default; an MQTT user who measures latency turns it off (the
        // broker side is `set_tcp_nodelay true` in compare.sh).
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        events.set_network_options(network);
        let deadline = Instant::now() + self.connect_timeout;
        let mut waiting_for_suback = false;
        loop {
            let event = timeout_at(deadline.into(), events.poll())
                .await
                .map_err(|_| anyhow!("{name}: MQTT connect timed out"))??;
            match event {
                Event::Incoming(Packet::ConnAck(_)) => match &subscribe {
                    Some(topic) => {
                        client.subscribe(topic.clone(), QoS::AtLeastOnce).await?;
                        waiting_for_suback = true;
                    }
                    None => return Ok((client, events)),
                },
                Event::Incoming(Packet::SubAck(_)) if waiting_for_suback => {
                    return Ok((client, events))
                }
                _ => {}
            }
        }
    }
}

/// Disconnects and polls the event loop until the connection is closed.
async fn disconnect(client: &AsyncClient, events: &mut EventLoop) {
    let _ = client.disconnect().await;
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    while let Ok(Ok(_)) = timeout_at(deadline.into(), events.poll()).await {}
}

pub(crate) struct MqttSender {
    name: String,
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<Result<(), String>>,
    body: Vec<u8>,
    events: tokio::task::JoinHandle<()>,
}

impl Sender for MqttSender {
    async fn send(&mut self, plan: &SendPlan, deadline: Instant) -> anyhow::Result<SendStats> {
        let mut stats = SendStats::default();
        let (mut next, end) = (plan.seqs.start, plan.seqs.end);
        let mut outstanding = 0usize;
        loop {
            while let Ok(ack) = self.acks.try_recv() {
                ack.map_err(|e| anyhow!("{}: {e}", self.name))?;
                outstanding -= 1;
                stats.accepted += 1;
            }
            if next >= end && outstanding == 0 {
                break;
            }
            if outstanding < plan.inflight && next < end {
                body::write(&mut self.body, plan.sender, next, plan.size);
                let publish = self.client.publish(
                    topic(plan.recipient(next)),
                    QoS::AtLeastOnce,
                    false,
                    self.body.clone(),
                );
                timeout_at(deadline.into(), publish)
                    .await
                    .map_err(|_| anyhow!("{}: publishing timed out", self.name))??;
                next += 1;
                outstanding += 1;
                continue;
            }
            match timeout_at(deadline.into(), self.acks.recv()).await {
                Ok(Some(ack)) => {
                    ack.map_err(|e| anyhow!("{}: {e}", self.name))?;
                    outstanding -= 1;
                    stats.accepted += 1;
                }
                Ok(None) => bail!("{}: the MQTT event loop stopped", self.name),
                Err(_) => bail!(
                    "{}: timed out with {outstanding} PUBACKs missing",
                    self.name
                ),
            }
        }
        Ok(stats)
    }

    async fn close(self, _receipts: u64, _wait: Duration) -> anyhow::Result<u64> {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.events).await;
        Ok(0)
    }
}

pub(crate) struct MqttReceiver {
    name: String,
    client: AsyncClient,
    events: EventLoop,
}

impl Receiver for MqttReceiver {
    async fn receive(
        mut self,
        mut collector: Collector,
        deadline: Instant,
    ) -> anyhow::Result<Collector> {
        while !collector.done() {
            match timeout_at(deadline.into(), self.events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    collector.record(&publish.payload)
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    eprintln!("warning: {}: {e}", self.name);
                    return Ok(collector);
                }
                Err(_) => break,
            }
        }
        disconnect(&self.client, &mut self.events).await;
        Ok(collector)
    }
}

impl System for Mqtt {
    type Sender = MqttSender;
    type Receiver = MqttReceiver;

    fn name(&self) -> &'static str {
        "mosquitto"
    }

    async fn prepare(&self, recipients: &[String]) -> anyhow::Result<()> {
        for name in recipients {
            let (client, mut events) = self.connect(name, false, Some(topic(name))).await?;
            disconnect(&client, &mut events).await;
        }
        Ok(())
    }

    async fn sender(&self, name: &str) -> anyhow::Result<MqttSender> {
        let (client, mut events) = self.connect(name, true, None).await?;
        let (tx, acks) = mpsc::unbounded_channel();
        let events = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if tx.send(Ok(())).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        Ok(MqttSender {
            name: name.to_string(),
            client,
            acks,
            body: Vec::new(),
            events,
        })
    }

    async fn receiver(&self, name: &str) -> anyhow::Result<MqttReceiver> {
        // `prepare` subscribed this persistent session; what waits arrives right after CONNACK.
        let (client, events) = self.connect(name, false, None).await?;
        Ok(MqttReceiver {
            name: name.to_string(),
            client,
            events,
        })
    }

    async fn idle(&self, name: &str) -> anyhow::Result<Box<dyn Send + Sync>> {
        let connected = self.connect(name, true, None).await?;
        Ok(Box::new(std::sync::Mutex::new(connected)))
    }
}
