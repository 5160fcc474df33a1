//! What the broker tells systemd (`sd_notify`): ready once the listener is bound, reloading and ready
//! again around a SIGHUP, stopping when shutdown begins, and the watchdog's keep-alive.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing. The watchdog pings only while the
//! Registry and the Router answer a message within [`ACTOR_DEADLINE`]: a broker whose actors are stuck
//! stops pinging, and systemd restarts it (`WatchdogSec=` in the unit). These variables are the
//! service manager's protocol, not settings; they are the one thing read from the environment here.

use std::time::Duration;

use actix::Addr;
use sd_notify::NotifyState;

use crate::registry::{self, Registry};
use crate::router::{self, Router};

/// How long each actor may take to answer a watchdog probe.
pub const ACTOR_DEADLINE: Duration = Duration::from_secs(5);

fn send(state: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// `READY=1`: the listener is bound and serving.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `RELOADING=1` with the monotonic time systemd asks for; [`ready`] follows when the reload is over.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The actors the watchdog asks whether the broker still works.
#[derive(Clone)]
pub struct Probe {
    pub(crate) registry: Addr<Registry>,
    pub(crate) router: Addr<Router>,
}

impl Probe {
    /// Whether the Registry and the Router both answer within `deadline`.
    pub async fn answers(&self, deadline: Duration) -> bool {
        let registry = tokio::time::timeout(deadline, self.registry.send(registry::Ping));
        let router = tokio::time::timeout(deadline, self.router.send(router::Totals));
        let (registry, router) = futures_util::future::join(registry, router).await;
        matches!((registry, router), (Ok(Ok(())), Ok(Ok(_))))
    }
}

/// Starts pinging the watchdog every half of `WATCHDOG_USEC` when systemd set it; the task ends with
/// the actix system. Returns the interval, if the watchdog is on.
pub fn start_watchdog(probe: Probe) -> Option<Duration> {
    let timeout = sd_notify::watchdog_enabled()?;
    let every = timeout / 2;
    let deadline = every.min(ACTOR_DEADLINE);
    actix_rt::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            if probe.answers(deadline).await {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::error!("the actors do not answer; not pinging the watchdog");
            }
        }
    });
    tracing::info!(?every, "systemd watchdog on");
    Some(every)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix::prelude::*;

    use super::*;
    use crate::metrics::Metrics;
    use crate::router::RouterConfig;
    use crate::settings::Settings;
    use crate::store::{MemoryStore, StoreHandle};

    /// The probe answers while both actors do, and not once the Registry's thread is stuck.
    #[actix_rt::test]
    async fn a_stuck_actor_fails_the_probe() {
        let metrics = Arc::new(Metrics::new());
        let (store, _thread) =
            StoreHandle::spawn(Box::new(MemoryStore::new()), 16, metrics).expect("store");
        let config = RouterConfig::from_settings(&Settings::default());
        let router = Router::new(store, config, 0, Vec::new()).start();
        let arbiter = Arbiter::new();
        let registry = Registry::start_in_arbiter(&arbiter.handle(), |_| Registry::default());
        let probe = Probe { registry, router };
        assert!(probe.answers(ACTOR_DEADLINE).await);

        let (stuck, release) = std::sync::mpsc::channel::<()>();
        let (blocked, is_blocked) = tokio::sync::oneshot::channel::<()>();
        assert!(arbiter.spawn_fn(move || {
            let _ = blocked.send(());
            let _ = release.recv();
        }));
        // Only once the Registry's thread is inside the blocking call is it sure to be stuck.
        is_blocked
            .await
            .expect("the arbiter runs the blocking call");
        assert!(!probe.answers(Duration::from_millis(100)).await);
        drop(stuck);
        assert!(probe.answers(ACTOR_DEADLINE).await);
        arbiter.stop();
    }
}
