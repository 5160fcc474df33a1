//! One broker sweeps expired entries at a time, whatever the number of brokers on the database.
//!
//! The sweeper is whichever broker's store connection holds a session-level advisory lock
//! ([`SWEEP_LOCK`]); every sweep of every broker asks first, in one statement, whether its
//! connection holds the lock or can take it now, and a broker that cannot finds nothing due. The lock
//! lives as long as the connection: when the sweeper dies or loses the database, the server drops
//! it and the next broker to sweep takes over, with nothing to hand over (what is due is in the
//! table). Two sweeps can still overlap while the lock moves (a sweep read before its broker lost
//! the connection, committed after): the commit stores a receipt only if its own delete removed the
//! entry (`commit.rs`), so each sender hears `expired` once.

use postgres::Client;

use crate::store::StoreError;

/// The advisory lock key the sweeper holds ("sb" in ASCII, then 2; the migration's is 1).
const SWEEP_LOCK: i64 = 0x7362_0002;

/// Whether this connection is the sweeper: it holds [`SWEEP_LOCK`] already, or took it now.
pub(super) fn may_sweep(client: &mut Client) -> Result<bool, StoreError> {
    // `CASE` evaluates in order: the lock is taken at most once per connection (taking it again
    // would stack a second hold).
    let row = client.query_one(
        "SELECT CASE WHEN EXISTS (
             SELECT 1 FROM pg_locks
             WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
               AND classid = 0 AND objid::bigint = $1 AND objsubid = 1
         ) THEN true ELSE pg_try_advisory_lock($1) END",
        &[&SWEEP_LOCK],
    )?;
    Ok(row.try_get(0)?)
}
