//! Starting the datagram path: the directory of datagram sessions, and the UDP listener's sockets
//! and reader threads when `udp.listen` asks for them.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;

use super::BrokerError;
use crate::datagram::{self, Datagrams, UdpOut};
use crate::metrics::Metrics;
use crate::settings::Settings;

/// The UDP listener's arbiters (a thread per reader) and the address it is bound to.
pub(super) type UdpListener = (Vec<Arbiter>, SocketAddr);

/// The datagram directory, and the UDP listener when there is one.
pub(super) type DatagramPath = (Arc<Datagrams>, Option<UdpListener>);

/// The datagram directory, and the UDP listener on its own arbiter when `udp.listen` asks for one
/// (by default where TCP listens: `tcp`). A port that cannot be bound refuses the start.
pub(super) fn start_datagrams(
    settings: &Settings,
    tcp: SocketAddr,
    metrics: &Arc<Metrics>,
) -> Result<DatagramPath, BrokerError> {
    let limits = settings.datagrams.clone();
    let Some(addr) = settings.udp_addr(tcp).map_err(BrokerError::Settings)? else {
        return Ok((
            Arc::new(Datagrams::new(limits, metrics.clone(), None)),
            None,
        ));
    };
    let bind_error = |cause| BrokerError::Bind {
        addr: format!("{addr} (udp.listen)"),
        cause,
    };
    let (buffer, readers) = (
        settings.udp.socket_buffer_bytes,
        settings.udp.readers.max(1),
    );
    // A port shared by several readers (`SO_REUSEPORT`) would let a second broker of this user on
    // the same address start and take a share: a plain bind first refuses the start if the port is
    // taken, as with one reader, and picks the port when asked for port 0.
    let addr = if readers > 1 {
        let probe = udp_socket(addr, buffer, false).map_err(bind_error)?;
        probe.local_addr().map_err(bind_error)?
    } else {
        addr
    };
    let socket = udp_socket(addr, buffer, readers > 1).map_err(bind_error)?;
    let local = socket.local_addr().map_err(bind_error)?;
    if !settings.tls.cert_file.as_os_str().is_empty() {
        tracing::warn!(address = %local, "udp.listen is set beside TLS: datagrams over UDP travel unencrypted (SECURITY.md)");
    }
    let mut receiving = vec![socket.try_clone().map_err(bind_error)?];
    for _ in 1..readers {
        receiving.push(udp_socket(local, buffer, true).map_err(bind_error)?);
    }
    let socket = UdpOut::new(socket).map_err(bind_error)?;
    let datagrams = Arc::new(Datagrams::new(limits, metrics.clone(), Some(socket)));
    let arbiters = receiving
        .into_iter()
        .map(|socket| {
            let arbiter = Arbiter::new();
            let listener = datagrams.clone();
            arbiter.spawn(async move {
                match tokio::net::UdpSocket::from_std(socket) {
                    Ok(socket) => datagram::udp::run(socket, listener).await,
                    Err(error) => tracing::error!(%error, "cannot start the udp listener"),
                }
            });
            arbiter
        })
        .collect();
    tracing::info!(address = %local, readers, "datagrams over udp at {local}");
    Ok((datagrams, Some((arbiters, local))))
}

/// A non-blocking UDP socket bound to `addr`, its buffers asked to be `buffer` bytes (a refusal is
/// logged; the kernel's default then stays); `shared`: one of several on the port (`SO_REUSEPORT`).
fn udp_socket(
    addr: SocketAddr,
    buffer: usize,
    shared: bool,
) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(unix)]
    if shared {
        socket.set_reuse_port(true)?;
    }
    if let Err(error) = socket
        .set_recv_buffer_size(buffer)
        .and_then(|()| socket.set_send_buffer_size(buffer))
    {
        tracing::warn!(%error, buffer, "cannot size the udp socket's buffers (udp.socket_buffer_bytes)");
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
