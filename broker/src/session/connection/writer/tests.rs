//! The writer against an in-memory peer: a vectored write cut inside a frame, what it holds while
//! idle, how it lingers, how it ends, and a peer that stops reading.

use super::*;
use tokio::io::AsyncReadExt;

/// Runs `test` on a current-thread runtime inside a `LocalSet`, as on a worker arbiter.
fn local(test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(tokio::task::LocalSet::new().run_until(test));
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn writer_runs(writer: &SocketWriter) -> bool {
    let task = writer.shared.task.take();
    let runs = task.is_some();
    writer.shared.task.set(task);
    runs
}

fn holds_memory(writer: &SocketWriter) -> bool {
    writer.shared.frames.borrow().capacity() > 0 || writer.shared.scratch.borrow().capacity() > 0
}

async fn read_frame(peer: &mut tokio::io::DuplexStream) -> Vec<u8> {
    let len = peer.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len];
    peer.read_exact(&mut body).await.unwrap();
    body
}

#[test]
fn a_vectored_write_that_stops_inside_a_frame_leaves_its_rest_queued() {
    let bytes = |parts: &[&'static str]| -> VecDeque<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::from_static(p.as_bytes()))
            .collect()
    };
    let mut frames = bytes(&["abc", "de", "fgh"]);
    consume(&mut frames, 4);
    assert_eq!(frames, bytes(&["e", "fgh"]));
    consume(&mut frames, 1);
    assert_eq!(frames, bytes(&["fgh"]));
    consume(&mut frames, 3);
    assert!(frames.is_empty());
}

#[test]
fn a_lone_frame_leaves_no_writer_and_no_buffers_behind() {
    local(async {
        let (socket, mut peer) = tokio::io::duplex(1 << 16);
        let mut writer = SocketWriter::new(socket, 1 << 20, 1 << 20, Duration::from_secs(5));
        assert!(!writer_runs(&writer));
        writer.send(BrokerFrame::Pong).unwrap();
        read_frame(&mut peer).await;
        settle().await;
        assert!(!writer_runs(&writer));
        assert!(!holds_memory(&writer));
        assert_eq!(writer.shared.queued.get(), 0, "nothing left to write");
    });
}

#[test]
fn a_busy_writer_lingers_until_an_idle_check_finds_nothing_new() {
    local(async {
        let (socket, mut peer) = tokio::io::duplex(1 << 16);
        let mut writer = SocketWriter::new(socket, 1 << 20, 1 << 20, Duration::from_secs(5));
        writer.send(BrokerFrame::Pong).unwrap();
        read_frame(&mut peer).await;
        settle().await;
        // A second burst soon after the first: the writer stays for the next one.
        writer.send(BrokerFrame::Pong).unwrap();
        read_frame(&mut peer).await;
        settle().await;
        assert!(writer_runs(&writer));
        writer.send(BrokerFrame::Pong).unwrap();
        read_frame(&mut peer).await;
        writer.release_if_idle(); // Frames were queued since the last check.
        settle().await;
        assert!(writer_runs(&writer));
        writer.release_if_idle();
        settle().await;
        assert!(!writer_runs(&writer));
        assert!(!holds_memory(&writer));
        // And it starts again for the next frame.
        writer.send(BrokerFrame::Pong).unwrap();
        read_frame(&mut peer).await;
    });
}

#[test]
fn close_writes_what_is_queued_then_ends() {
    local(async {
        let (socket, mut peer) = tokio::io::duplex(1 << 16);
        let mut writer = SocketWriter::new(socket, 1 << 20, 1 << 20, Duration::from_secs(5));
        writer.send(BrokerFrame::Pong).unwrap();
        writer.close();
        assert!(matches!(
            writer.send(BrokerFrame::Pong),
            Err(WriteError::Closed)
        ));
        let ended = poll_fn(|cx| writer.poll_ended(cx)).await;
        assert!(ended.is_ok());
        read_frame(&mut peer).await;
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    });
}

#[test]
fn a_peer_that_does_not_read_overflows_or_stalls_the_writer() {
    local(async {
        let (socket, _peer) = tokio::io::duplex(64);
        let mut writer = SocketWriter::new(socket, 1 << 20, 1 << 10, Duration::from_millis(100));
        let body = bytes::Bytes::from(vec![7u8; 100]);
        let deliver = || BrokerFrame::Deliver {
            message_id: 1,
            from: "a".into(),
            send_id: 1,
            sent_at_ms: 0,
            body: body.clone(),
        };
        let overflowed = (0..20).any(|_| {
            matches!(
                writer.send(deliver()),
                Err(WriteError::Overflow { limit: 1024, .. })
            )
        });
        assert!(overflowed);
        let ended = poll_fn(|cx| writer.poll_ended(cx)).await;
        assert_eq!(ended.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    });
}
