//! The one interface every measured system offers the workloads: connect a sender, connect a
//! receiver, keep a connection idle.
//!
//! A workload is written once against [`System`] and runs unchanged on Switchboard and on each peer;
//! each implementation maps "send", "accepted" and "receive" onto its own protocol (for MQTT QoS 1 a
//! `PUBLISH` and its `PUBACK`, for JetStream a publish and its ack, and so on). Where a system has no
//! durable offline queue it says so in [`System::prepare`] and the offline workloads refuse to run.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::collect::Collector;

/// What one call to [`Sender::send`] sends.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// Recipients, used round robin: message `seq` goes to `to[seq % to.len()]`.
    pub to: Arc<[String]>,
    /// The sender's index, written into every body.
    pub sender: u32,
    pub seqs: Range<u64>,
    /// Messages sent and not yet accepted, at most.
    pub inflight: usize,
    /// Body size in bytes.
    pub size: usize,
}

impl SendPlan {
    /// The recipient of message `seq`.
    pub fn recipient(&self, seq: u64) -> &str {
        &self.to[(seq % self.to.len() as u64) as usize]
    }
}

/// What a sender heard back.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SendStats {
    pub accepted: u64,
    pub rejected: u64,
}

impl std::ops::AddAssign for SendStats {
    fn add_assign(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
    }
}

/// A system under test: a broker at an address and a way to speak to it.
pub trait System: Clone + Send + Sync + 'static {
    type Sender: Sender;
    type Receiver: Receiver;

    /// The name in the JSON line (`switchboard`, `mosquitto`, ...).
    fn name(&self) -> &'static str;

    /// Whether senders get a receipt when a recipient has acknowledged (only Switchboard does).
    fn has_receipts(&self) -> bool {
        false
    }

    /// Whether messages for an offline recipient wait for it (core NATS and Redis pub/sub: no).
    fn keeps_offline(&self) -> bool {
        true
    }

    /// Sets up `recipients` before anything is sent to them: where the system can, so that their
    /// messages are kept while they are offline (an MQTT persistent session with its subscription, a
    /// durable consumer, a consumer group).
    fn prepare(&self, recipients: &[String]) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Connects a sender named `name`.
    fn sender(&self, name: &str) -> impl Future<Output = anyhow::Result<Self::Sender>> + Send;

    /// Connects `name` as a receiver; messages may start arriving at once.
    fn receiver(&self, name: &str) -> impl Future<Output = anyhow::Result<Self::Receiver>> + Send;

    /// Opens a connection that does nothing but stay open (the idle workload); dropping it closes it.
    fn idle(&self, name: &str)
        -> impl Future<Output = anyhow::Result<Box<dyn Send + Sync>>> + Send;
}

/// A connected sender.
pub trait Sender: Send + 'static {
    /// Sends `plan`, keeping up to `plan.inflight` unanswered, and returns once every message of it
    /// was accepted or rejected, or fails at `deadline`.
    fn send(
        &mut self,
        plan: &SendPlan,
        deadline: Instant,
    ) -> impl Future<Output = anyhow::Result<SendStats>> + Send;

    /// Waits until `receipts` delivery receipts arrived in total (Switchboard; others have none and
    /// return 0 at once) or `wait` ran out, then disconnects. Returns the receipts counted.
    fn close(
        self,
        receipts: u64,
        wait: Duration,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// A connected receiver.
pub trait Receiver: Send + 'static {
    /// Receives and acknowledges messages into `collector` until it is done or `deadline` passes,
    /// then disconnects. Running out of time is not an error: the collector shows what is missing.
    fn receive(
        self,
        collector: Collector,
        deadline: Instant,
    ) -> impl Future<Output = anyhow::Result<Collector>> + Send;
}
