//! The broker's start: the UDP port taken, and the ports picked again.

use super::*;

/// What `bind_listeners_with` did: the TCP addresses it offered the datagram path, and how it
/// ended, when UDP binds fail with "address in use" `failures` times (`usize::MAX`: always).
fn binding(listen: &str, failures: usize) -> (Vec<SocketAddr>, Result<SocketAddr, String>) {
    let settings = Settings {
        listen: listen.to_string(),
        ..Settings::default()
    };
    let mut offered = Vec::new();
    let ended = actix_rt::System::new().block_on(bind_listeners_with(&settings, |tcp| {
        offered.push(tcp);
        if offered.len() <= failures {
            return Err(BrokerError::Bind {
                addr: format!("{tcp} (udp.listen)"),
                cause: std::io::ErrorKind::AddrInUse.into(),
            });
        }
        Ok(())
    }));
    (
        offered,
        ended.map(|(_, addr, ())| addr).map_err(|e| e.to_string()),
    )
}

#[test]
fn a_kernel_picked_port_taken_for_udp_is_picked_again_and_a_named_one_refuses_the_start() {
    let (offered, ended) = binding("127.0.0.1:0", 2);
    assert_eq!(offered.len(), 3, "two taken, the third free: {offered:?}");
    assert_eq!(
        ended,
        Ok(offered[2]),
        "the listener is the one the datagrams got"
    );

    let (offered, ended) = binding("127.0.0.1:0", usize::MAX);
    assert_eq!(offered.len(), PORT_ATTEMPTS, "a bounded number of picks");
    assert!(
        ended.is_err_and(|e| e.contains("udp.listen")),
        "then refused"
    );

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (offered, ended) = binding(&free.to_string(), 1);
    assert_eq!(
        offered.len(),
        1,
        "a port the settings name is not picked again"
    );
    assert!(ended.is_err_and(|e| e.contains("udp.listen")));
}

fn udp_settings(listen: &str, readers: usize) -> Settings {
    let mut settings = Settings::default();
    settings.udp.listen = Some(listen.to_string());
    settings.udp.readers = readers;
    settings
}

#[test]
fn a_udp_port_already_taken_refuses_the_start_whatever_the_readers() {
    actix_rt::System::new().block_on(async {
        let metrics = Arc::new(Metrics::new());
        let tcp: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let first = start_datagrams(&udp_settings("127.0.0.1:0", 2), tcp, &metrics);
        let (_, Some((arbiters, taken))) = first.expect("a free port") else {
            panic!("a udp listener was asked for");
        };
        for readers in [1, 2] {
            let second = start_datagrams(&udp_settings(&taken.to_string(), readers), tcp, &metrics);
            assert!(
                matches!(second, Err(BrokerError::Bind { .. })),
                "{readers} reader(s) on {taken}, taken by two: {:?}",
                second.err()
            );
        }
        for arbiter in arbiters {
            arbiter.stop();
        }
    });
}
