//! What the broker can be told about datagrams: the UDP listener (`[udp]`) and the limits every
//! datagram meets, over UDP or the TCP session (`[datagrams]`).

use serde::Deserialize;

use super::SettingsError;

/// The largest datagram body the settings may allow: what one UDP datagram can carry at most, less
/// the header, MAC and frame map around it.
pub const MAX_DATAGRAM_BODY: usize = 64 * 1024;

/// The UDP datagram listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UdpSettings {
    /// Address the UDP listener binds. Absent: the TCP listener's address and port (the port it got,
    /// when `listen` asked for port 0), unless TLS is on: UDP is not encrypted, so under TLS only an
    /// explicit address opens it. Empty: no UDP listener; datagrams travel on the TCP session.
    pub listen: Option<String>,
    /// The size asked for the socket's receive and send buffers (the kernel caps it at
    /// `net.core.rmem_max`/`wmem_max`). UDP has no flow control: a burst beyond the buffer while
    /// the listener is not scheduled is lost in the kernel.
    pub socket_buffer_bytes: usize,
    /// Threads reading datagrams, each with a socket of its own on the one port (`SO_REUSEPORT`):
    /// the kernel spreads senders over them by address, so each sender's datagrams stay on one
    /// thread, in order. At least 1.
    pub readers: usize,
}

impl Default for UdpSettings {
    fn default() -> Self {
        Self {
            listen: None,
            socket_buffer_bytes: 4 * 1024 * 1024,
            readers: 2,
        }
    }
}

/// Limits on datagrams, whichever way they come.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatagramSettings {
    /// Largest datagram body; a longer one is dropped. 1,200 keeps a UDP datagram under the usual
    /// path MTU, so it is never fragmented.
    pub max_body_bytes: usize,
    /// Datagrams per second per sender (burst: one second's worth); more are dropped. 0: no limit.
    pub max_per_sec: u64,
    /// Datagrams waiting for one recipient's TCP connection; when it is full the oldest is dropped.
    pub queue: usize,
}

impl Default for DatagramSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1_200,
            max_per_sec: 10_000,
            queue: 64,
        }
    }
}

impl DatagramSettings {
    /// Ranges types alone cannot express, each error naming its key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=MAX_DATAGRAM_BODY).contains(&self.max_body_bytes) {
            return Err(SettingsError::Invalid {
                key: "datagrams.max_body_bytes",
                reason: format!("must be between 1 and {MAX_DATAGRAM_BODY}"),
            });
        }
        if self.queue == 0 {
            return Err(SettingsError::Invalid {
                key: "datagrams.queue",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::{Settings, SettingsError};

    fn refused_key(tune: impl FnOnce(&mut Settings)) -> Option<&'static str> {
        let mut s = Settings::default();
        tune(&mut s);
        match s.validate() {
            Err(SettingsError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn a_datagram_body_limit_above_64_kib_is_refused_naming_its_key() {
        assert_eq!(refused_key(|s| s.datagrams.max_body_bytes = 65_536), None);
        assert_eq!(
            refused_key(|s| s.datagrams.max_body_bytes = 65_537),
            Some("datagrams.max_body_bytes")
        );
        assert_eq!(
            refused_key(|s| s.datagrams.queue = 0),
            Some("datagrams.queue")
        );
        assert_eq!(
            refused_key(|s| s.udp.listen = Some("nowhere".into())),
            Some("udp.listen")
        );
    }

    #[test]
    fn udp_listens_where_tcp_does_unless_told_otherwise() {
        let tcp = "127.0.0.1:4000".parse().unwrap();
        let mut s = Settings::default();
        assert_eq!(s.udp_addr(tcp), Ok(Some(tcp)));
        s.udp.listen = Some(String::new());
        assert_eq!(s.udp_addr(tcp), Ok(None));
        s.udp.listen = Some("127.0.0.1:5000".into());
        assert_eq!(s.udp_addr(tcp), Ok(Some("127.0.0.1:5000".parse().unwrap())));
    }

    #[test]
    fn under_tls_udp_is_off_unless_asked_for_by_address() {
        let tcp = "127.0.0.1:4000".parse().unwrap();
        let mut s = Settings::default();
        s.tls.cert_file = "broker.pem".into();
        assert_eq!(s.udp_addr(tcp), Ok(None), "cleartext datagrams beside TLS");
        s.udp.listen = Some("127.0.0.1:5000".into());
        assert_eq!(s.udp_addr(tcp), Ok(Some("127.0.0.1:5000".parse().unwrap())));
    }
}
