//! The broker's settings: one typed struct, loaded once at start-up and validated there.
//!
//! Layers, later ones winning: the defaults below (documented key by key in `settings.toml`), the
//! settings file (`settings.toml` in the working directory if present, or the file given with
//! `--config`), environment variables `SWITCHBOARD_<KEY>` with `__` between nested keys
//! (`SWITCHBOARD_LIMITS__WINDOW=64`), then the command-line flags. Nothing else in the broker reads the
//! environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::store::Durability;

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Everything the broker can be told.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// Address the TCP listener binds. Port 0 picks a free port (tests use it).
    pub listen: String,
    /// Directory of the SQLite store.
    pub data_dir: PathBuf,
    /// Which mailbox store to use.
    pub store: StoreKind,
    /// What `Accepted` waits for: an fsync, or the OS having the write.
    pub durability: Durability,
    /// Worker threads running connection sessions; 0 means one per CPU core.
    pub workers: usize,
    pub limits: Limits,
    pub mailbox: MailboxLimits,
    pub dedupe: Dedupe,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub keepalive: Keepalive,
    pub log: Log,
}

/// The embedded stores; a distributed engine would add a variant here.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in `data_dir`: WAL, `synchronous=FULL`. Survives crashes and power loss.
    Sqlite,
    /// Process memory: lost when the broker stops. For tests and throwaway brokers.
    Memory,
}

/// Bounds that keep one client from costing the broker unbounded memory or time.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct Limits {
    /// Largest frame accepted or sent, in bytes, length prefix excluded.
    pub max_frame_bytes: usize,
    /// How long a new connection has to send `Hello`.
    pub handshake_timeout_ms: u64,
    /// Deliveries a session may hold unacknowledged; the rest wait in the mailbox.
    pub window: usize,
    /// Body bytes a session may hold unacknowledged (one delivery always fits, however large).
    pub window_bytes: u64,
    /// Bytes queued for a connection's socket; past it the peer is not reading and is disconnected.
    pub max_outgoing_bytes: usize,
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
#[serde(default)]
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
    /// How often expired messages are looked for, in milliseconds.
    pub expiry_sweep_ms: u64,
}

/// How long the broker recognises a resent `Send` (same sender, same `Send.id`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct Dedupe {
    /// A resend within this many seconds of the original's acceptance is answered with the original's
    /// message id and not stored again.
    pub window_secs: u64,
    /// At most this many sends are remembered; past it the oldest are forgotten first.
    pub max_remembered: u64,
}

/// Who may connect; see `broker/src/auth.rs` and SECURITY.md.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthSettings {
    /// The credentials file (client ids, token hashes, address and send rules); empty for none.
    pub credentials_file: PathBuf,
    /// Without credentials the broker only listens on loopback addresses unless this is true.
    pub allow_anonymous: bool,
    /// Every refused `Hello` is answered this long after it arrived, whatever the reason.
    pub failure_delay_ms: u64,
}

/// TLS on the listener; off while `cert_file` is empty.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct TlsSettings {
    /// The broker's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// If set, clients must present a certificate signed by this CA (PEM).
    pub client_ca_file: PathBuf,
}

/// Keepalive negotiation: the client asks, the broker clamps to `[min_secs, max_secs]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct Keepalive {
    pub min_secs: u32,
    pub max_secs: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
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
            store: StoreKind::Sqlite,
            durability: Durability::Fsync,
            workers: 0,
            limits: Limits::default(),
            mailbox: MailboxLimits::default(),
            dedupe: Dedupe::default(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            keepalive: Keepalive::default(),
            log: Log::default(),
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
            expiry_sweep_ms: 1_000,
        }
    }
}

impl Default for Dedupe {
    fn default() -> Self {
        Self {
            window_secs: 86_400,
            max_remembered: 1_000_000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            credentials_file: PathBuf::new(),
            allow_anonymous: false,
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

/// Command-line values that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Settings {
    /// Loads the layers described in the module documentation and validates the result.
    pub fn load(overrides: &Overrides) -> Result<Self, SettingsError> {
        let file = match &overrides.config_file {
            Some(path) => config::File::from(path.as_path()).required(true),
            None => config::File::from(Path::new("settings.toml")).required(false),
        };
        let mut builder = config::Config::builder().add_source(file).add_source(
            config::Environment::with_prefix("SWITCHBOARD")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
        if let Some(listen) = &overrides.listen {
            builder = builder.set_override("listen", listen.as_str())?;
        }
        if let Some(dir) = &overrides.data_dir {
            builder = builder.set_override("data_dir", dir.to_string_lossy().as_ref())?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot; each error names the offending key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: &str| {
            Err(SettingsError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if let Err(e) = self.listen_addr() {
            return invalid("listen", &e);
        }
        let l = &self.limits;
        if !(64..=64 * 1024 * 1024).contains(&l.max_frame_bytes) {
            return invalid("limits.max_frame_bytes", "must be between 64 and 67108864");
        }
        if l.window == 0 {
            return invalid("limits.window", "must be at least 1");
        }
        if l.window_bytes == 0 {
            return invalid("limits.window_bytes", "must be at least 1");
        }
        let needed = (l.window_bytes as usize).saturating_add(2 * l.max_frame_bytes);
        if l.max_outgoing_bytes < needed {
            return invalid(
                "limits.max_outgoing_bytes",
                &format!(
                    "must be at least limits.window_bytes + 2 x limits.max_frame_bytes ({needed})"
                ),
            );
        }
        if l.write_timeout_ms == 0 {
            return invalid("limits.write_timeout_ms", "must be at least 1");
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if l.max_unaccepted_sends == 0 {
            return invalid("limits.max_unaccepted_sends", "must be at least 1");
        }
        if l.page_size == 0 {
            return invalid("limits.page_size", "must be at least 1");
        }
        if l.handshake_timeout_ms == 0 {
            return invalid("limits.handshake_timeout_ms", "must be at least 1");
        }
        if self.mailbox.max_messages == 0 {
            return invalid("mailbox.max_messages", "must be at least 1");
        }
        if self.mailbox.max_bytes == 0 {
            return invalid("mailbox.max_bytes", "must be at least 1");
        }
        if self.mailbox.expiry_sweep_ms == 0 {
            return invalid("mailbox.expiry_sweep_ms", "must be at least 1");
        }
        if self.mailbox.max_ttl_secs != 0
            && self.mailbox.default_ttl_secs > self.mailbox.max_ttl_secs
        {
            return invalid(
                "mailbox.default_ttl_secs",
                "must not exceed mailbox.max_ttl_secs",
            );
        }
        if self.dedupe.max_remembered == 0 {
            return invalid("dedupe.max_remembered", "must be at least 1");
        }
        let tls = &self.tls;
        if !tls.cert_file.as_os_str().is_empty() && tls.key_file.as_os_str().is_empty() {
            return invalid("tls.key_file", "must be set when tls.cert_file is");
        }
        if tls.cert_file.as_os_str().is_empty()
            && !(tls.key_file.as_os_str().is_empty() && tls.client_ca_file.as_os_str().is_empty())
        {
            return invalid(
                "tls.cert_file",
                "must be set when tls.key_file or tls.client_ca_file is",
            );
        }
        if self.keepalive.min_secs == 0 {
            return invalid("keepalive.min_secs", "must be at least 1");
        }
        if self.keepalive.max_secs < self.keepalive.min_secs {
            return invalid("keepalive.max_secs", "must not be below keepalive.min_secs");
        }
        if self.store == StoreKind::Sqlite && self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty with the sqlite store");
        }
        Ok(())
    }

    /// `listen` as a socket address.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen
            .parse()
            .map_err(|e| format!("`{}` is not an ip:port address ({e})", self.listen))
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

    /// Session worker threads after resolving 0 to the core count.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_settings_file_is_the_defaults() {
        let text = include_str!("../../settings.toml");
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
    fn invalid_values_name_their_key() {
        let mut s = Settings::default();
        s.limits.window = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("limits.window"), "{err}");
        let s = Settings {
            listen: "nowhere".into(),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("`listen`"));
    }

    #[test]
    fn keepalive_is_clamped() {
        let s = Settings::default();
        assert_eq!(s.agreed_keepalive(0), Duration::from_secs(1));
        assert_eq!(s.agreed_keepalive(30), Duration::from_secs(30));
        assert_eq!(s.agreed_keepalive(u32::MAX), Duration::from_secs(3600));
    }
}
