//! The brokers Switchboard is compared with, each behind [`System`](crate::system::System).

pub(crate) mod mqtt;
pub(crate) mod nats;
pub(crate) mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use crate::workload::Ctx;
use crate::{Figures, Workload};

/// A peer broker the bench can drive (started by `bench/compare.sh`, or by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Peer {
    /// Mosquitto over MQTT 3.1.1, QoS 1, persistent sessions.
    Mosquitto,
    /// NATS core (at-most-once; no offline queue).
    Nats,
    /// NATS JetStream, file storage, durable pull consumers.
    Jetstream,
    /// Redis: pub/sub online, Streams with consumer groups for offline recipients.
    Redis,
}

impl Peer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Mosquitto => "mosquitto",
            Peer::Nats => "nats",
            Peer::Jetstream => "jetstream",
            Peer::Redis => "redis",
        }
    }
}

/// Runs `workload` on the peer at `addr`.
pub(crate) async fn run(
    peer: Peer,
    addr: SocketAddr,
    replicas: usize,
    workload: &Workload,
    ctx: &Ctx,
) -> anyhow::Result<Figures> {
    let connect_timeout = Duration::from_secs(30);
    if let Workload::Datagrams(args) = workload {
        if peer != Peer::Nats {
            anyhow::bail!("datagrams runs on Switchboard and NATS core (--peer nats) only");
        }
        let target = crate::workload::datagrams::Target::NatsCore(addr);
        return Ok(Figures::Datagrams(
            crate::workload::datagrams::run(target, args, ctx).await?,
        ));
    }
    match peer {
        Peer::Mosquitto => {
            let inflight = match workload {
                Workload::Relay(load) | Workload::Offline(load) => load.inflight,
                Workload::FanIn(args) => args.inflight,
                Workload::ReconnectStorm(args) => args.inflight,
                _ => 256,
            };
            let sys = mqtt::Mqtt {
                addr,
                connect_timeout,
                inflight: u16::try_from(inflight).unwrap_or(u16::MAX),
            };
            crate::run_workload(&sys, workload, ctx).await
        }
        Peer::Nats | Peer::Jetstream => {
            let sys = nats::Nats {
                addr,
                connect_timeout,
                jetstream: peer == Peer::Jetstream,
                tag: ctx.tag.clone(),
                replicas,
            };
            crate::run_workload(&sys, workload, ctx).await
        }
        Peer::Redis => {
            // Streams wherever recipients are offline, pub/sub where they are online.
            let streams = matches!(workload, Workload::Offline(_) | Workload::ReconnectStorm(_));
            let sys = redis::Redis {
                addr,
                connect_timeout,
                streams,
            };
            crate::run_workload(&sys, workload, ctx).await
        }
    }
}
