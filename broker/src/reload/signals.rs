//! The signals the broker process answers: SIGTERM and SIGINT stop it cleanly, SIGHUP reloads.
//!
//! A reload reads the settings again exactly as the start did (the same file, environment and
//! flags), checks the new log level, and hands the rest to [`Broker::reload`]; whatever fails, it is
//! logged and the configuration in force stays. systemd hears `RELOADING=1` before and `READY=1`
//! after, so `systemctl reload` can tell when the reload is over.

use tokio::signal::unix::{signal, SignalKind};

use super::logging::{parse_level, LevelChange, LogControl};
use super::{ReloadError, Reloaded};
use crate::notify;
use crate::settings::{Overrides, Settings};
use crate::Broker;

/// Why the signals cannot be watched (only at start-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {signal}: {cause}")]
pub struct SignalError {
    signal: &'static str,
    cause: std::io::Error,
}

fn watch(kind: SignalKind, name: &'static str) -> Result<tokio::signal::unix::Signal, SignalError> {
    signal(kind).map_err(|cause| SignalError {
        signal: name,
        cause,
    })
}

/// The signals, watched from before the broker starts: one that came during the start (as soon as
/// systemd or a test saw the listener) is handled once serving begins, instead of killing the
/// process with its default action.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts watching SIGTERM, SIGINT and SIGHUP; must run inside the runtime.
    pub fn watch() -> Result<Signals, SignalError> {
        Ok(Signals {
            term: watch(SignalKind::terminate(), "SIGTERM")?,
            int: watch(SignalKind::interrupt(), "SIGINT")?,
            hup: watch(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Serves until SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
    pub async fn until_stopped(mut self, broker: &Broker, overrides: &Overrides, log: &LogControl) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break tracing::info!("SIGTERM received"),
                _ = self.int.recv() => break tracing::info!("SIGINT received"),
                _ = self.hup.recv() => hangup(broker, overrides, log).await,
            }
        }
    }
}

async fn hangup(broker: &Broker, overrides: &Overrides, log: &LogControl) {
    tracing::info!("SIGHUP received; reloading");
    notify::reloading();
    match reload(broker, overrides, log).await {
        Ok(reloaded) => report(&reloaded),
        Err(error) => tracing::error!(%error, "reload failed; the configuration in force stays"),
    }
    notify::ready();
}

/// One reload: nothing changes unless the settings, the log level, the credentials and the TLS
/// files all check out.
async fn reload(
    broker: &Broker,
    overrides: &Overrides,
    log: &LogControl,
) -> Result<Reloaded, ReloadError> {
    let settings = Settings::load(overrides).map_err(|e| ReloadError::Settings(e.to_string()))?;
    let level = settings.log.level.clone();
    let filter = parse_level(&level)?;
    let reloaded = broker.reload(settings).await?;
    match log.set(&level, filter) {
        LevelChange::Unchanged => {}
        LevelChange::Overridden => {
            tracing::warn!(level, "log.level changed but RUST_LOG is set and wins")
        }
        LevelChange::Changed { from, to } => tracing::info!(from, to, "log level changed"),
    }
    Ok(reloaded)
}

fn report(reloaded: &Reloaded) {
    let Reloaded {
        added,
        removed,
        disconnected,
        tls,
        admin_tls,
        needs_restart,
    } = reloaded;
    if !needs_restart.is_empty() {
        tracing::warn!(
            settings = ?needs_restart,
            "changed settings take effect only after a restart; their running values stay"
        );
    }
    tracing::info!(
        ?added,
        ?removed,
        disconnected,
        tls_reloaded = tls,
        admin_tls_reloaded = admin_tls,
        "reloaded"
    );
}
