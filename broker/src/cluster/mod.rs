//! What a broker does beyond its own process when several share one PostgreSQL database (cluster
//! mode): it hears, through the database, which mailboxes the others appended to, and which of
//! its sessions another broker took over (`presence`, with its statements in `lease`).
//!
//! Every commit of the PostgreSQL store notifies [`WAKE_CHANNEL`] with the names of the mailboxes it
//! grew (`NOTIFY` inside the committing transaction, so a wake-up is sent only for what committed).
//! [`WakeListener`] holds one `LISTEN` connection per broker on its own thread and hands each name
//! to the Router as a [`Wake`]; the Router reads that mailbox if its owner is online here. Wake-ups
//! are hints: after the listener (re)connects it wakes every online client, since notifications sent
//! while it was away are lost, and the Router's slow safety sweep catches anything else. The same
//! connection listens on [`PRESENCE_CHANNEL`] and hands a takeover of one of this broker's sessions
//! to the Registry (a hint too: lost ones are found at the next lease renewal).

mod lease;
mod presence;

pub use self::lease::{Hint, PRESENCE_CHANNEL};
pub use self::presence::{node_id, start_registry, Presence, PresenceRequests, PresenceThread};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix::Recipient;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use crate::registry::TakenOver;
use crate::router::Wake;
use crate::store::postgres::{Database, WAKE_CHANNEL};

/// How long one wait for notifications lasts: the bound on noticing a stop.
const POLL: Duration = Duration::from_millis(250);

/// How long to wait before connecting again after the connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Where takeovers of this broker's sessions go: this broker's node id and its Registry.
#[derive(Clone)]
pub struct Takeovers {
    pub node: String,
    pub registry: Recipient<TakenOver>,
}

impl Takeovers {
    /// Passes a [`PRESENCE_CHANNEL`] payload on to the Registry if it names this broker.
    fn hear(&self, payload: &str) {
        match Hint::parse(payload) {
            Some(hint) if hint.node == self.node => {
                // A full Registry mailbox drops the hint; the next lease renewal finds the loss.
                let _ = self.registry.try_send(TakenOver {
                    client: hint.client,
                    session: hint.session,
                });
            }
            Some(_) => {}
            None => tracing::warn!(%payload, "unreadable presence notification; ignored"),
        }
    }
}

/// The thread that listens for other brokers' commits; stopped by [`WakeListener::stop`].
pub struct WakeListener {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl WakeListener {
    /// Starts listening on the database at `url`, waking `router` and telling `takeovers`.
    pub fn spawn(
        database: Database,
        router: Recipient<Wake>,
        takeovers: Takeovers,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("switchboard-listen".into())
            .spawn(move || run(&database, &router, &takeovers, &stopping))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread and waits for it (at most about one poll interval).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("the wake-up listener panicked");
        }
    }
}

/// Connects, listens, and connects again whenever the connection breaks, until `stop`.
fn run(database: &Database, router: &Recipient<Wake>, takeovers: &Takeovers, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listen(database, router, takeovers, stop) {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "wake-up listener lost PostgreSQL; connecting again");
                pause(stop, RECONNECT_AFTER);
            }
        }
    }
}

/// One connection's life: `LISTEN`, wake everyone (what was missed before is unknown), then pass
/// on every notification. Returns `Ok` only when stopped.
fn listen(
    database: &Database,
    router: &Recipient<Wake>,
    takeovers: &Takeovers,
    stop: &AtomicBool,
) -> Result<(), postgres::Error> {
    let mut client: Client = database.connect()?;
    client.batch_execute(&format!("LISTEN {WAKE_CHANNEL}; LISTEN {PRESENCE_CHANNEL}"))?;
    tracing::debug!("listening for other brokers' commits");
    router.do_send(Wake { mailboxes: vec![] });
    while !stop.load(Ordering::Relaxed) {
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(POLL);
            while let Some(note) = waiting.next()? {
                if note.channel() == PRESENCE_CHANNEL {
                    takeovers.hear(note.payload());
                    continue;
                }
                // A full Router mailbox drops the hint; the safety sweep reads the mailbox later.
                let _ = router.try_send(Wake {
                    mailboxes: vec![note.payload().to_owned()],
                });
            }
        }
        if client.is_closed() {
            // The iterator ends quietly on a closed connection: make it an error, to reconnect.
            client.batch_execute("SELECT 1")?;
        }
    }
    Ok(())
}

/// Sleeps `total`, waking early when `stop` is set.
fn pause(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}
