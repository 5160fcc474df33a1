//! The broker's log: where it goes, how it looks, and how a reload changes its level.
//!
//! The filter sits behind a `tracing_subscriber::reload` layer, so SIGHUP can swap `log.level`
//! without restarting; the format (text or JSON) is fixed at start-up. `RUST_LOG`, when set, wins
//! over `log.level` at start and on every reload, as the settings file documents.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use super::ReloadError;
use crate::settings::{LogFormat, Settings};

/// The installed log, to change its level later.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: `log.level` is not applied.
    from_env: bool,
    /// The `log.level` in force, so a reload only logs a change that is one.
    level: Mutex<String>,
}

/// What a reload did to the log level.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    Unchanged,
    /// `RUST_LOG` is set and wins over the new `log.level`.
    Overridden,
    Changed {
        from: String,
        to: String,
    },
}

/// A filter for `level`, or why it is not one.
pub fn parse_level(level: &str) -> Result<EnvFilter, ReloadError> {
    EnvFilter::try_new(level).map_err(|e| ReloadError::LogLevel {
        level: level.to_string(),
        reason: e.to_string(),
    })
}

impl LogControl {
    /// Installs the process's log from `settings.log` (or `RUST_LOG`), writing to stderr.
    pub fn init(settings: &Settings) -> Result<LogControl, ReloadError> {
        let (filter, from_env) = match EnvFilter::try_from_default_env() {
            Ok(filter) => (filter, true),
            Err(_) => (parse_level(&settings.log.level)?, false),
        };
        let (filter, handle) = reload::Layer::new(filter);
        let layer = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        let registry = tracing_subscriber::registry().with(filter);
        match settings.log.format {
            LogFormat::Json => registry.with(layer.json()).init(),
            LogFormat::Text => registry.with(layer).init(),
        }
        Ok(LogControl {
            handle,
            from_env,
            level: Mutex::new(settings.log.level.clone()),
        })
    }

    /// Applies `filter`, parsed from `level` (with [`parse_level`], so the reload could refuse it
    /// before changing anything else).
    pub fn set(&self, level: &str, filter: EnvFilter) -> LevelChange {
        let mut current = self.level.lock().unwrap_or_else(|e| e.into_inner());
        if *current == level {
            return LevelChange::Unchanged;
        }
        let from = std::mem::replace(&mut *current, level.to_string());
        if self.from_env {
            return LevelChange::Overridden;
        }
        if let Err(error) = self.handle.reload(filter) {
            // Only when the subscriber is gone, i.e. the process is ending.
            tracing::warn!(%error, "cannot change the log level");
        }
        LevelChange::Changed {
            from,
            to: level.to_string(),
        }
    }
}
