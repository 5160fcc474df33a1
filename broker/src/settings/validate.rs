//! What types alone cannot check: ranges, combinations and filters, each error naming its key.

use super::{available_cores, ClusterSettings, Settings, SettingsError, StoreKind};

/// Most session worker threads per CPU core: past the core count more threads only cost memory and
/// start-up time (100,000 of them never get to listen).
const MAX_WORKERS_PER_CORE: usize = 4;

impl Settings {
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
        let cores = available_cores();
        if self.workers > MAX_WORKERS_PER_CORE * cores {
            return invalid(
                "workers",
                &format!(
                    "must be at most {MAX_WORKERS_PER_CORE} per CPU core ({} on this machine), or 0 for one per core",
                    MAX_WORKERS_PER_CORE * cores
                ),
            );
        }
        self.datagrams.validate()?;
        if let Err(e) = self.listen_addr().and_then(|tcp| self.udp_addr(tcp)) {
            return invalid("udp.listen", &e);
        }
        if let Err(e) = check_log_filter(&self.log.level) {
            return invalid("log.level", &e);
        }
        let l = &self.limits;
        if !(1024..=64 * 1024 * 1024).contains(&l.max_frame_bytes) {
            return invalid(
                "limits.max_frame_bytes",
                "must be between 1024 and 67108864",
            );
        }
        if l.window == 0 {
            return invalid("limits.window", "must be at least 1");
        }
        if l.window_bytes == 0 {
            return invalid("limits.window_bytes", "must be at least 1");
        }
        if l.max_partial_frames_bytes < l.max_frame_bytes + 4 {
            return invalid(
                "limits.max_partial_frames_bytes",
                "must be at least limits.max_frame_bytes + 4 (one whole frame)",
            );
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
        if self.dedupe.maintenance_ms == 0 {
            return invalid("dedupe.maintenance_ms", "must be at least 1");
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
        if let Err((key, reason)) = self.check_admin() {
            return invalid(key, &reason);
        }
        if self.store == StoreKind::Postgres && self.postgres.url.trim().is_empty() {
            return invalid("postgres.url", "must be set with store = \"postgres\"");
        }
        if !ClusterSettings::LEASE_SECS.contains(&self.cluster.lease_secs) {
            return invalid("cluster.lease_secs", "must be from 3 to 600");
        }
        let on_disk = matches!(self.store, StoreKind::Sqlite | StoreKind::Log);
        if on_disk && self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty with a durable store");
        }
        Ok(())
    }
}

/// The levels a log directive may name.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks `tracing` filter directives more strictly than `EnvFilter` does: a bare word is a level,
/// never a target, so a typo such as `infoo` is refused instead of turning logging off.
fn check_log_filter(filter: &str) -> Result<(), String> {
    for directive in filter.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() => level,
            _ => directive,
        };
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "`{directive}` in `{filter}` is not a level ({}) nor `target=level`",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|e| format!("`{filter}` is not a log filter ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Log;

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
    fn the_postgres_store_needs_a_url_and_no_data_dir() {
        let mut s = Settings {
            store: StoreKind::Postgres,
            data_dir: "".into(),
            ..Settings::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("postgres.url"), "{err}");
        s.postgres.url = "host=127.0.0.1 dbname=switchboard".into();
        assert!(s.validate().is_ok());
    }

    #[test]
    fn a_lease_out_of_range_is_refused() {
        for (lease, ok) in [(2, false), (3, true), (600, true), (601, false)] {
            let mut s = Settings::default();
            s.cluster.lease_secs = lease;
            let result = s.validate();
            assert_eq!(result.is_ok(), ok, "{lease}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("cluster.lease_secs"), "{e}");
            }
        }
    }

    #[test]
    fn a_log_level_typo_is_refused() {
        for good in [
            "info",
            "WARN",
            "info,switchboard_broker=debug",
            "switchboard_broker::router=trace",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for bad in ["infoo", "", "info,", "switchboard_broker", "router=loud"] {
            let s = Settings {
                log: Log {
                    level: bad.into(),
                    ..Log::default()
                },
                ..Settings::default()
            };
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains("log.level"), "{bad}: {err}");
        }
    }

    #[test]
    fn workers_are_bounded_by_the_machine() {
        let s = Settings {
            workers: MAX_WORKERS_PER_CORE * available_cores() + 1,
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("`workers`"));
        let s = Settings {
            workers: available_cores(),
            ..Settings::default()
        };
        s.validate().unwrap();
    }

    #[test]
    fn an_unknown_key_is_refused_and_named() {
        for (text, key) in [
            ("[limits]\nwindw = 64\n", "windw"),
            ("[limitz]\nwindow = 64\n", "limitz"),
            ("listn = \"127.0.0.1:1\"\n", "listn"),
            ("[tls]\ncert = \"x\"\n", "cert"),
        ] {
            let err = config::Config::builder()
                .add_source(config::File::from_str(text, config::FileFormat::Toml))
                .build()
                .unwrap()
                .try_deserialize::<Settings>()
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
