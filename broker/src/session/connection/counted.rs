//! A socket half that counts the bytes through it into the broker's metrics (`switchboard_received_
//! bytes_total`, `switchboard_sent_bytes_total`): one atomic add per read or write syscall, not per
//! frame. Each connection also counts its own [`Traffic`], for the admin API's list of clients: one
//! more atomic add, on a counter no other thread writes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;

/// The bytes one connection has read and written, as the admin API shows them.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    received: AtomicU64,
    sent: AtomicU64,
}

impl Traffic {
    /// Bytes read from the client so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Bytes written to the client so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// `io`, counted.
pub(crate) struct Counted<S> {
    io: S,
    metrics: Arc<Metrics>,
    traffic: Arc<Traffic>,
}

impl<S> Counted<S> {
    pub(crate) fn new(io: S, metrics: Arc<Metrics>, traffic: Arc<Traffic>) -> Self {
        Self {
            io,
            metrics,
            traffic,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len() - before;
            self.metrics.received(n);
            self.traffic.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, bytes);
        if let Poll::Ready(Ok(n)) = polled {
            self.metrics.sent(n);
            self.traffic.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.metrics.sent(n);
            self.traffic.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    /// As vectored as the socket under it, so the writer's vectored path stays on.
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counting keeps a TCP socket's vectored writes (the writer's fast path) and counts every byte
    /// both ways.
    #[tokio::test]
    async fn counts_both_ways_and_stays_vectored() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let metrics = Arc::new(Metrics::new());
        let traffic = Arc::new(Traffic::default());
        let mut writer = Counted::new(client.expect("connect"), metrics.clone(), traffic.clone());
        let mut reader = Counted::new(
            accepted.expect("accept").0,
            metrics.clone(),
            traffic.clone(),
        );
        assert!(writer.is_write_vectored());
        let slices = [io::IoSlice::new(b"hello "), io::IoSlice::new(b"world")];
        let written = writer.write_vectored(&slices).await.expect("write");
        assert_eq!(
            written, 11,
            "an empty loopback socket takes 11 bytes at once"
        );
        let mut got = [0u8; 11];
        reader.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello world");
        assert_eq!((traffic.sent(), traffic.received()), (11, 11));
        let text = metrics.render(&crate::metrics::Snapshot::default());
        assert!(text.contains("switchboard_sent_bytes_total 11"), "{text}");
        assert!(
            text.contains("switchboard_received_bytes_total 11"),
            "{text}"
        );
    }
}
