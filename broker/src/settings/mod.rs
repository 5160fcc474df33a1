//! The broker's settings: one typed struct, loaded once at start-up and validated there.
//!
//! Layers, later ones winning: the defaults below (documented key by key in `settings.toml`), the
//! settings file (`settings.toml` in the working directory if present, or the file given with
//! `--config`), environment variables `SWITCHBOARD_BROKER_<KEY>` with `__` between nested keys
//! (`SWITCHBOARD_BROKER_LIMITS__WINDOW=64`), then the command-line flags. Nothing else in the broker
//! reads the environment. The prefix is the broker's own: the client's `SWITCHBOARD_*` variables
//! (`SWITCHBOARD_TLS`, `SWITCHBOARD_SERVER`, ...) exported in the same shell mean nothing to it.
//!
//! Nothing is silently ignored: a key no struct here knows (a typo, in a file or in the environment)
//! refuses the start and names the key, and so does a value out of range.
//!
//! This file is the struct and its defaults; `load.rs` reads the layers, `validate.rs` checks what
//! types alone cannot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use crate::store::Durability;

mod admin;
mod datagrams;
mod load;
mod validate;

pub use admin::{AdminSettings, AdminTlsSettings};
pub use datagrams::{DatagramSettings, UdpSettings, MAX_DATAGRAM_BODY};

pub use load::{Overrides, ENV_PREFIX};

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    // The cause is part of the message and deliberately not `source()`, so a chain printed with
    // `{:#}` says it once.
    #[error("cannot load settings from {from}: {cause}")]
    Load {
        /// Where they were read from: the file and the environment prefix.
        from: String,
        cause: config::ConfigError,
    },
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Everything the broker can be told.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the TCP listener binds. Port 0 picks a free port (tests use it).
    pub listen: String,
    /// Directory of the durable store (the log's `log/`, or SQLite's `switchboard.db`).
    pub data_dir: PathBuf,
    /// Which mailbox store to use.
    pub store: StoreKind,
    /// What `Accepted` waits for: an fsync, or the OS having the write.
    pub durability: Durability,
    /// Start on an embedded store (log, SQLite) that was emptied, replaced or lost its newest
    /// commits, logging the loss as an error, instead of refusing to start (GUARANTEES.md, "A
    /// store that checks itself"). Meant for one start (`--accept-store-loss`), not to stay set.
    pub accept_store_loss: bool,
    /// Worker threads running connection sessions; 0 means one per CPU core.
    pub workers: usize,
    pub limits: Limits,
    pub mailbox: MailboxLimits,
    pub dedupe: Dedupe,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub keepalive: Keepalive,
    pub log: Log,
    pub admin: AdminSettings,
    pub postgres: PostgresSettings,
    /// Cluster mode (`store = "postgres"`): how long a broker's claim on its sessions lasts.
    pub cluster: ClusterSettings,
    /// The UDP datagram listener.
    pub udp: UdpSettings,
    /// Limits on datagrams (over UDP or the TCP session).
    pub datagrams: DatagramSettings,
}

/// The embedded stores; a distributed engine would add a variant here. `Log` is the default: it
/// measured 3.5–5.7x fewer instructions per message than SQLite at its best (ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in `data_dir`: WAL, `synchronous=FULL`. Survives crashes and power loss.
    Sqlite,
    /// A segmented append-only log in `data_dir/log/` with its index in memory: one write (and
    /// with fsync durability one fsync) per batch. Survives crashes and power loss.
    Log,
    /// Process memory: lost when the broker stops. For tests and throwaway brokers.
    Memory,
    /// A PostgreSQL database (`[postgres] url`), which several brokers may share (cluster mode).
    /// `data_dir` is not used.
    Postgres,
}

/// Bounds that keep one client from costing the broker unbounded memory or time.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame accepted or sent, in bytes, length prefix excluded. A `send` body may be this
    /// less `switchboard_proto::DELIVER_OVERHEAD` (see [`Settings::max_body_bytes`]).
    pub max_frame_bytes: usize,
    /// How long a new connection has to send `Hello`.
    pub handshake_timeout_ms: u64,
    /// Deliveries a session may hold unacknowledged; the rest wait in the mailbox.
    pub window: usize,
    /// Body bytes a session may hold unacknowledged (one delivery always fits, however large).
    pub window_bytes: u64,
    /// Bytes queued for a connection's socket; past it the peer is not reading and is disconnected.
    pub max_outgoing_bytes: usize,
    /// Bytes every connection's partly received frames may hold together (each frame larger than a
    /// read buffer reserves its whole length); a connection that cannot get its frame's share is
    /// told `overloaded` and closed. Bounds what stalled uploads can cost, however many there are.
    pub max_partial_frames_bytes: usize,
    /// A connection whose socket takes no bytes for this long is disconnected.
    pub write_timeout_ms: u64,
    /// Connections open at once; more are answered `Error{overloaded}` and closed.
    pub max_connections: usize,
    /// New connections per second from one source address (burst: one second's worth); more are
    /// closed at once. 0 for no limit.
    pub max_connects_per_sec_per_ip: u64,
    /// `Send`s per second per connection (burst: one second's worth); more are rejected
    /// `rate-limited`. 0 for no limit.
    pub max_sends_per_sec: u64,
    /// `Send`s a session may have waiting for `Accepted`; past it the broker stops reading that socket.
    pub max_unaccepted_sends: usize,
    /// Entries read from the store at a time when flushing a mailbox.
    pub page_size: usize,
    /// How long a shutdown waits for sessions to close and the store to commit.
    pub shutdown_grace_ms: u64,
}

/// Bounds on one mailbox, and how long messages may wait in it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxLimits {
    /// Entries (messages and receipts) a mailbox may hold; a `Send` beyond it is rejected
    /// `mailbox-full`. Receipts are always stored, even past it, so no receipt is lost.
    pub max_messages: u64,
    /// Body bytes a mailbox may hold, with the same rule.
    pub max_bytes: u64,
    /// Time to live for messages whose `Send` gives none, in seconds; 0 keeps them until delivered.
    pub default_ttl_secs: u64,
    /// Longest time to live a `Send` may ask for, in seconds; longer requests are shortened to it.
    /// 0 means no cap.
    pub max_ttl_secs: u64,
    /// How long a receipt waits in its sender's mailbox before it is removed (without a receipt of
    /// its own), in seconds; 0 keeps receipts until collected. Receipts are exempt from the mailbox
    /// limits, so this is what bounds the mailbox of a client that only sends.
    pub receipt_ttl_secs: u64,
    /// How often expired messages are looked for, in milliseconds.
    pub expiry_sweep_ms: u64,
}

/// How long the broker recognises a resent `Send` (same sender, same send id).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Dedupe {
    /// A resend within this many seconds of the original's acceptance is answered with the original's
    /// message id and not stored again.
    pub window_secs: u64,
    /// At most this many sends are remembered; past it the oldest are forgotten first.
    pub max_remembered: u64,
    /// How often the store's maintenance pass runs, in milliseconds: it forgets the sends past
    /// the window or the cap, and reclaims space and records the high-water mark.
    pub maintenance_ms: u64,
}

/// Who may connect; see `broker/src/auth.rs` and SECURITY.md.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The credentials file (client ids, token hashes, address and send rules); empty for none.
    pub credentials_file: PathBuf,
    /// Without credentials the broker only listens on loopback addresses unless this is true.
    pub allow_anonymous: bool,
    /// With credentials but without TLS the broker only listens on loopback addresses unless this is
    /// true: elsewhere every token would cross the network in clear.
    pub allow_cleartext_tokens: bool,
    /// Every refused `Hello` is answered this long after it arrived, whatever the reason.
    pub failure_delay_ms: u64,
}

/// TLS on the listener; off while `cert_file` is empty.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The broker's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// If set, clients must present a certificate signed by this CA (PEM).
    pub client_ca_file: PathBuf,
}

/// Where the `postgres` store's database is.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// A libpq connection string (`host=db1,db2 port=5432 dbname=switchboard user=switchboard
    /// target_session_attrs=read-write`) or URL; several hosts with `read-write` find the primary
    /// after a failover. A password is better given as `SWITCHBOARD_BROKER_POSTGRES__URL`. With
    /// `sslmode=require` every connection is TLS, the server verified (`store/postgres/database.rs`).
    pub url: String,
    /// The CA certificates (PEM) the database server's certificate must chain to; without it the
    /// system's roots (empty). Setting it turns TLS on for `sslmode=prefer` (the default) too.
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The url may carry a password: never printed.
        let url = if self.url.is_empty() { "" } else { "<set>" };
        f.debug_struct("PostgresSettings")
            .field("url", &url)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Presence across the brokers of one database (`crate::cluster::presence`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// How long a session row stays without renewal, in seconds: a broker renews its rows every
    /// third of it, and any broker reaps rows older than it (those of a broker that died). A new
    /// `hello` takes a row over whatever its age, so this bounds only what presence queries show.
    pub lease_secs: u64,
}

impl ClusterSettings {
    /// The accepted range of `lease_secs`: renewals every second at the shortest, and a dead
    /// broker's clients gone from presence within ten minutes at the longest.
    pub const LEASE_SECS: std::ops::RangeInclusive<u64> = 3..=600;
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self { lease_secs: 15 }
    }
}

/// Keepalive negotiation: the client asks, the broker clamps to `[min_secs, max_secs]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Keepalive {
    pub min_secs: u32,
    pub max_secs: u32,
}

/// Where the broker's log goes and how it looks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `tracing` filter directives, e.g. `info` or `switchboard_broker=debug`. `RUST_LOG` wins if set.
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7878".into(),
            data_dir: PathBuf::from("data"),
            store: StoreKind::Log,
            durability: Durability::Fsync,
            accept_store_loss: false,
            workers: 0,
            limits: Limits::default(),
            mailbox: MailboxLimits::default(),
            dedupe: Dedupe::default(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            keepalive: Keepalive::default(),
            log: Log::default(),
            admin: AdminSettings::default(),
            postgres: PostgresSettings::default(),
            cluster: ClusterSettings::default(),
            udp: UdpSettings::default(),
            datagrams: DatagramSettings::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: switchboard_proto::DEFAULT_MAX_FRAME,
            handshake_timeout_ms: 5_000,
            window: 256,
            window_bytes: 4 << 20,
            max_outgoing_bytes: 16 << 20,
            max_partial_frames_bytes: 256 << 20,
            write_timeout_ms: 30_000,
            max_connections: 50_000,
            max_connects_per_sec_per_ip: 0,
            max_sends_per_sec: 0,
            max_unaccepted_sends: 1_024,
            page_size: 256,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl Default for MailboxLimits {
    fn default() -> Self {
        Self {
            max_messages: 1_000_000,
            max_bytes: 1 << 30,
            default_ttl_secs: 0,
            max_ttl_secs: 0,
            receipt_ttl_secs: 7 * 24 * 3600,
            expiry_sweep_ms: 1_000,
        }
    }
}

impl Default for Dedupe {
    fn default() -> Self {
        Self {
            window_secs: 86_400,
            max_remembered: 1_000_000,
            maintenance_ms: 60_000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            credentials_file: PathBuf::new(),
            allow_anonymous: false,
            allow_cleartext_tokens: false,
            failure_delay_ms: 1_000,
        }
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            min_secs: 1,
            max_secs: 3_600,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Settings {
    /// `listen` as a socket address.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen
            .parse()
            .map_err(|e| format!("`{}` is not an ip:port address ({e})", self.listen))
    }

    /// Where the UDP listener binds, given where TCP got bound; `None` when it is off. Unset, it is
    /// TCP's address, except under TLS: UDP datagrams are not encrypted (SECURITY.md), so with TLS
    /// on only an explicit `udp.listen` opens it.
    pub fn udp_addr(&self, tcp: SocketAddr) -> Result<Option<SocketAddr>, String> {
        match self.udp.listen.as_deref() {
            None if !self.tls.cert_file.as_os_str().is_empty() => Ok(None),
            None => Ok(Some(tcp)),
            Some("") => Ok(None),
            Some(addr) => addr
                .parse()
                .map(Some)
                .map_err(|e| format!("`{addr}` is not an ip:port address ({e})")),
        }
    }

    /// The keepalive granted to a client that asked for `requested_secs`.
    pub fn agreed_keepalive(&self, requested_secs: u32) -> Duration {
        let secs = requested_secs.clamp(self.keepalive.min_secs, self.keepalive.max_secs);
        Duration::from_secs(u64::from(secs))
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.handshake_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.write_timeout_ms)
    }

    pub fn auth_failure_delay(&self) -> Duration {
        Duration::from_millis(self.auth.failure_delay_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.limits.shutdown_grace_ms)
    }

    /// The largest body a `send` may carry: what still fits, in the widest `deliver`, in one frame,
    /// and no more than a whole mailbox may hold.
    pub fn max_body_bytes(&self) -> usize {
        let mailbox = usize::try_from(self.mailbox.max_bytes).unwrap_or(usize::MAX);
        switchboard_proto::max_body_len(self.limits.max_frame_bytes).min(mailbox)
    }

    /// Session worker threads after resolving 0 to the core count.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => available_cores(),
            n => n,
        }
    }
}

/// The CPU cores this process may use (1 if the system will not say).
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_settings_file_is_the_defaults() {
        let text = include_str!("../../../settings.toml");
        let parsed: Settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(parsed, Settings::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn keepalive_is_clamped() {
        let s = Settings::default();
        assert_eq!(s.agreed_keepalive(0), Duration::from_secs(1));
        assert_eq!(s.agreed_keepalive(30), Duration::from_secs(30));
        assert_eq!(s.agreed_keepalive(u32::MAX), Duration::from_secs(3600));
    }
}
