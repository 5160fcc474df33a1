//! The statements behind presence: how a broker claims a client id in `switchboard_sessions`, gives
//! it back, renews every row it holds at once, and reaps the rows of brokers that died.
//!
//! Each is one statement, one round trip. Times are the database's clock (`clock_timestamp()`), so
//! brokers whose clocks disagree still agree on which lease ran out. A claim takes the row over
//! whatever its age and, in the same statement, notifies the broker that held it
//! ([`PRESENCE_CHANNEL`]); that is a hint, lost if the old broker is not listening, so the renewal
//! also tells a broker which of its rows are no longer its own.

use std::collections::HashSet;

use postgres::Client;

/// The channel a claim notifies when it takes a client id from another broker; the payload is
/// `"<node> <session> <client>"` (see [`Hint::parse`]).
pub const PRESENCE_CHANNEL: &str = "switchboard_presence";

/// Milliseconds since the epoch on the database's clock.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// A session of this broker's: the client id and the connection that holds it.
pub(super) type Held = (String, u64);

/// Who a row belongs to: this broker, and how long its rows last unrenewed.
#[derive(Debug, Clone)]
pub(super) struct Holder {
    pub(super) node: String,
    pub(super) lease_ms: i64,
}

impl Holder {
    /// Makes `client` connection `session`'s, taking the row from whoever held it; the broker that
    /// held it, if another, is notified. Returns that broker and its session.
    pub(super) fn claim(
        &self,
        db: &mut Client,
        client: &str,
        session: u64,
    ) -> Result<Option<(String, u64)>, postgres::Error> {
        // `old` locks the row first, so of two claims at once the second sees (and notifies) the
        // first. Two claims of an id that has no row yet both see none: the loser learns it at its
        // next renewal.
        let sql = format!(
            "WITH old AS (
                 SELECT node, session FROM switchboard_sessions WHERE client = $1 FOR UPDATE
             ), claimed AS (
                 INSERT INTO switchboard_sessions (client, node, session, since_ms, lease_until_ms)
                 VALUES ($1, $2, $3, {NOW_MS}, {NOW_MS} + $4)
                 ON CONFLICT (client) DO UPDATE SET node = excluded.node,
                     session = excluded.session, since_ms = excluded.since_ms,
                     lease_until_ms = excluded.lease_until_ms
                 RETURNING 1
             )
             SELECT node, session,
                    pg_notify('{PRESENCE_CHANNEL}', node || ' ' || session || ' ' || $1)
             FROM old WHERE node <> $2"
        );
        let row = db.query_opt(&sql, &[&client, &self.node, &bits(session), &self.lease_ms])?;
        row.map(|r| Ok((r.try_get(0)?, unbits(r.try_get(1)?))))
            .transpose()
    }

    /// Gives `client` back, if connection `session` of this broker still holds it.
    pub(super) fn release(
        &self,
        db: &mut Client,
        client: &str,
        session: u64,
    ) -> Result<(), postgres::Error> {
        db.execute(
            "DELETE FROM switchboard_sessions WHERE client = $1 AND node = $2 AND session = $3",
            &[&client, &self.node, &bits(session)],
        )?;
        Ok(())
    }

    /// Renews every row in `held`, one statement whatever their number; a row that was reaped (this
    /// broker was away longer than the lease) is put back. Returns the client ids still this
    /// broker's: any other in `held` was taken over by another broker.
    pub(super) fn renew(
        &self,
        db: &mut Client,
        held: &[Held],
    ) -> Result<HashSet<String>, postgres::Error> {
        let clients: Vec<&str> = held.iter().map(|(c, _)| c.as_str()).collect();
        let sessions: Vec<i64> = held.iter().map(|(_, s)| bits(*s)).collect();
        let sql = format!(
            "INSERT INTO switchboard_sessions AS s (client, node, session, since_ms, lease_until_ms)
             SELECT c, $1, n, {NOW_MS}, {NOW_MS} + $2
             FROM unnest($3::text[], $4::bigint[]) AS t(c, n)
             ON CONFLICT (client) DO UPDATE SET lease_until_ms = excluded.lease_until_ms
                 WHERE s.node = excluded.node AND s.session = excluded.session
             RETURNING client"
        );
        let rows = db.query(&sql, &[&self.node, &self.lease_ms, &clients, &sessions])?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }
}

/// Deletes every row whose lease ran out (a broker that died, any broker may do it); returns how many.
pub(super) fn reap(db: &mut Client) -> Result<u64, postgres::Error> {
    db.execute(
        &format!("DELETE FROM switchboard_sessions WHERE lease_until_ms < {NOW_MS}"),
        &[],
    )
}

/// A claim's notification: `client`, which `session` of broker `node` held, was taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub node: String,
    pub session: u64,
    pub client: String,
}

impl Hint {
    /// Reads a [`PRESENCE_CHANNEL`] payload; `None` if it is not one (nothing then is kicked).
    pub fn parse(payload: &str) -> Option<Hint> {
        let mut parts = payload.splitn(3, ' ');
        let node = parts.next()?.to_owned();
        let session = parts.next()?.parse::<i64>().ok().map(unbits)?;
        let client = parts.next()?.to_owned();
        Some(Hint {
            node,
            session,
            client,
        })
    }
}

/// A connection number in a `bigint`, bit for bit (as the store keeps its ids).
fn bits(value: u64) -> i64 {
    value as i64
}

fn unbits(value: i64) -> u64 {
    value as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_names_the_node_the_session_and_the_client() {
        assert_eq!(
            Hint::parse("n1 7 alice"),
            Some(Hint {
                node: "n1".into(),
                session: 7,
                client: "alice".into()
            })
        );
        // The database prints the bigint: a session number past 2^63 comes back whole.
        let far = Hint::parse(&format!("n1 {} bob", bits(u64::MAX))).unwrap();
        assert_eq!(far.session, u64::MAX);
        assert_eq!(Hint::parse("n1 seven alice"), None);
        assert_eq!(Hint::parse("n1 7"), None);
    }
}
