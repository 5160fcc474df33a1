//! A primary and a synchronous standby for failover tests: streaming replication on loopback from
//! a `pg_basebackup`, the primary's commits waiting for the standby (`synchronous_commit = on`,
//! `synchronous_standby_names`), and the failover itself: the primary killed, the standby promoted,
//! a new standby made of the dead primary's port so the brokers' fixed `postgres.url` still names
//! both servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{or_skip, HarnessError, TestPostgres};

/// The `application_name` every standby connects with, and the primary waits for.
const STANDBY_NAME: &str = "switchboard_standby";

/// How long a standby may take to catch up and report itself synchronous.
const SYNC_DEADLINE: Duration = Duration::from_secs(60);

/// A primary and its synchronous standby, each a [`TestPostgres`]; which is which changes with
/// every [`fail_over`](Self::fail_over).
pub struct TestReplicated {
    /// `servers[primary]` is the primary now, the other the standby.
    servers: [Arc<TestPostgres>; 2],
    primary: usize,
    /// The database the brokers use, made on the first primary and replicated since.
    dbname: String,
}

impl TestReplicated {
    /// Starts a primary, a database on it, and a synchronous standby of it.
    pub fn start() -> Result<Self, HarnessError> {
        let primary = Arc::new(TestPostgres::start()?);
        let standby = Arc::new(TestPostgres::unstarted()?);
        let dbname = primary.database()?.name;
        let replicated = Self {
            servers: [primary, standby],
            primary: 0,
            dbname,
        };
        replicated.make_standby()?;
        Ok(replicated)
    }

    /// A primary and standby, or `None` (said on stderr) like [`TestPostgres::start_or_skip`].
    pub fn start_or_skip(test: &str) -> Option<Self> {
        or_skip(test, Self::start())
    }

    /// The libpq connection string naming both servers, for whichever is the primary:
    /// `target_session_attrs=read-write` skips the standby and the dead.
    pub fn url(&self) -> String {
        let [a, b] = &self.servers;
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname={} \
             target_session_attrs=read-write connect_timeout=5",
            a.port(),
            b.port(),
            self.dbname
        )
    }

    /// The primary now.
    pub fn primary(&self) -> &Arc<TestPostgres> {
        &self.servers[self.primary]
    }

    /// Kills the primary as a crash would, promotes the standby, and makes the dead primary's
    /// port a synchronous standby of the new one; returns once it is synchronous. Commits made
    /// while there is no standby do not wait for one.
    pub fn fail_over(&mut self) -> Result<(), HarnessError> {
        self.primary().kill()?;
        self.primary = 1 - self.primary;
        let promoted = self.primary().clone();
        promoted.pg_ctl(&["promote", "-w", "-t", "60"])?;
        // The promoted server inherited the old primary's wish for a synchronous standby (in
        // `postgresql.auto.conf`); until there is one again, it must not wait for it.
        promoted.configure("synchronous_standby_names", "")?;
        self.make_standby()
    }

    /// Makes the server that is not the primary a fresh `pg_basebackup` of it, starts it as a
    /// streaming standby, and waits until the primary counts it as synchronous.
    fn make_standby(&self) -> Result<(), HarnessError> {
        let primary = self.primary();
        let standby = &self.servers[1 - self.primary];
        let data = standby.data_dir();
        let _ = std::fs::remove_dir_all(&data);
        let source = format!(
            "host=127.0.0.1 port={} user=postgres application_name={STANDBY_NAME}",
            primary.port()
        );
        standby.run(
            "pg_basebackup",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-d".as_ref(),
                source.as_ref(),
                "-R".as_ref(),
                "-X".as_ref(),
                "stream".as_ref(),
                "-c".as_ref(),
                "fast".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        standby.pg_ctl_start()?;
        primary.configure("synchronous_standby_names", STANDBY_NAME)?;
        primary.wait_for_sync_standby()
    }
}

impl TestPostgres {
    /// `ALTER SYSTEM SET name = value` and a reload: a setting that changes with the server's role.
    fn configure(&self, name: &str, value: &str) -> Result<(), HarnessError> {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        // Two statements, not one string: ALTER SYSTEM refuses to run in the implicit transaction
        // of a multi-statement query.
        admin.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))?;
        admin.batch_execute("SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Waits until a standby streams from this server as synchronous, asking every 50 ms (the
    /// server cannot notify).
    fn wait_for_sync_standby(&self) -> Result<(), HarnessError> {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        let started = Instant::now();
        loop {
            let row = admin.query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                &[],
            )?;
            if row.try_get::<_, i64>(0)? > 0 {
                return Ok(());
            }
            if started.elapsed() > SYNC_DEADLINE {
                return Err(HarnessError::Command {
                    command: "wait for a synchronous standby".into(),
                    output: format!("none after {SYNC_DEADLINE:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
