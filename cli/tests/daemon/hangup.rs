//! SIGHUP, which `systemctl reload` and a closed terminal send, does not stop the daemon.

use crate::harness::*;

#[tokio::test]
async fn a_daemon_goes_on_after_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, mut bob, state) = Daemon::bob_with_broker(dir.path()).await;
    send(broker.addr(), "alice", "bob", "before").await;
    assert_eq!(bob.next_json().await["body"], "before");

    bob.hangup().await;
    bob.log.wait_for(1, &["SIGHUP received"]).await;
    send(broker.addr(), "alice", "bob", "after").await;
    assert_eq!(bob.next_json().await["body"], "after");
    bob.stop().await;
    assert_eq!(lines(&state.join("handled")).len(), 2);
}
