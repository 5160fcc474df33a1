//! Which changed settings a reload cannot apply: everything but the credentials, the TLS files (the
//! main listener's and the admin listener's) and the log level, and those too when the change turns
//! them on or off.
//!
//! Listeners, the store, the limits and the worker threads are built once at start-up; changing them
//! under running sessions would break promises made to those sessions (a window, a frame limit). A
//! reload names each such key in the log, and the broker keeps its running value until it restarts.

use std::path::Path;

use crate::settings::Settings;

/// The settings keys whose value differs between `running` and `new` and needs a restart.
pub fn needs_restart(running: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    // Destructured so that a new setting fails to compile until it is sorted here.
    let Settings {
        listen,
        data_dir,
        store,
        durability,
        accept_store_loss: _, // Read only when the store opens.
        workers,
        limits,
        mailbox,
        dedupe,
        auth: _,
        tls: _,
        keepalive,
        log,
        admin,
        postgres,
        cluster,
        udp,
        datagrams,
    } = new;
    differs("listen", &running.listen != listen);
    differs("data_dir", &running.data_dir != data_dir);
    differs("store", &running.store != store);
    differs("durability", &running.durability != durability);
    differs("workers", &running.workers != workers);
    differs("limits", &running.limits != limits);
    differs("mailbox", &running.mailbox != mailbox);
    differs("dedupe", &running.dedupe != dedupe);
    differs("keepalive", &running.keepalive != keepalive);
    differs("log.format", running.log.format != log.format);
    let old_admin = &running.admin;
    differs(
        "admin (other than its TLS files)",
        old_admin.listen != admin.listen
            || old_admin.token != admin.token
            || old_admin.read_token != admin.read_token
            || old_admin.allow_plaintext != admin.allow_plaintext,
    );
    differs(
        "admin.tls (on or off)",
        running.admin_tls().is_some() != new.admin_tls().is_some(),
    );
    differs("postgres", &running.postgres != postgres);
    differs("cluster", &running.cluster != cluster);
    differs("udp", &running.udp != udp);
    differs("datagrams", &running.datagrams != datagrams);
    let (old_auth, new_auth) = (&running.auth, &new.auth);
    differs(
        "auth.credentials_file (on or off)",
        is_set(&old_auth.credentials_file) != is_set(&new_auth.credentials_file),
    );
    differs(
        "auth (other than credentials_file)",
        old_auth.allow_anonymous != new_auth.allow_anonymous
            || old_auth.allow_cleartext_tokens != new_auth.allow_cleartext_tokens
            || old_auth.failure_delay_ms != new_auth.failure_delay_ms,
    );
    differs(
        "tls.cert_file (on or off)",
        is_set(&running.tls.cert_file) != is_set(&new.tls.cert_file),
    );
    keys
}

fn is_set(path: &Path) -> bool {
    !path.as_os_str().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloadable_changes_need_no_restart() {
        let running = Settings {
            auth: crate::settings::AuthSettings {
                credentials_file: "a.toml".into(),
                ..Settings::default().auth
            },
            ..Settings::default()
        };
        let mut new = running.clone();
        new.auth.credentials_file = "b.toml".into();
        new.log.level = "debug".into();
        assert!(needs_restart(&running, &new).is_empty());
        let mut admin_on = running.clone();
        admin_on.admin.tls.cert_file = "admin.pem".into();
        let mut moved = admin_on.clone();
        moved.admin.tls.cert_file = "renewed.pem".into();
        assert!(needs_restart(&admin_on, &moved).is_empty());
        assert_eq!(
            needs_restart(&running, &admin_on),
            ["admin.tls (on or off)"]
        );
    }

    #[test]
    fn fixed_changes_are_named() {
        let running = Settings::default();
        let mut new = running.clone();
        new.listen = "127.0.0.1:1".into();
        new.limits.window += 1;
        new.auth.credentials_file = "now-on.toml".into();
        new.tls.cert_file = "now-on.pem".into();
        assert_eq!(
            needs_restart(&running, &new),
            [
                "listen",
                "limits",
                "auth.credentials_file (on or off)",
                "tls.cert_file (on or off)"
            ]
        );
    }
}
