//! The shape of a run, and the randomness that picks the moments of the kills.
//!
//! The environment may set the number of kills and the seed, so that a failure seen once can be
//! run again with the same kill delays (the traffic itself is not replayed: it depends on the
//! scheduler).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kills in the default run, unless `SWITCHBOARD_CRASH_KILLS` says otherwise.
pub(crate) const DEFAULT_KILLS: u32 = 10;
/// Kills in the soak run, unless `SWITCHBOARD_SOAK_CYCLES` says otherwise.
pub(crate) const DEFAULT_SOAK_CYCLES: u32 = 100;

/// How many clients of each kind, how many kills, and the seed for the kill delays.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub senders: usize,
    pub recipients: usize,
    pub kills: u32,
    /// The shortest and longest stretch of traffic before a kill, in milliseconds.
    pub traffic_ms: (u64, u64),
    pub seed: u64,
}

impl Config {
    /// Four senders and three recipients, `kills` read from `kills_var` (else `default_kills`), the
    /// seed from `SWITCHBOARD_CRASH_SEED` (else the clock).
    pub(crate) fn from_env(kills_var: &str, default_kills: u32) -> Config {
        let seed = env_number("SWITCHBOARD_CRASH_SEED").unwrap_or_else(clock_seed);
        let kills = env_number(kills_var).map_or(default_kills, |k| {
            u32::try_from(k).unwrap_or_else(|_| panic!("{kills_var}={k} is too large"))
        });
        Config {
            senders: 4,
            recipients: 3,
            kills,
            traffic_ms: (100, 600),
            seed,
        }
    }
}

/// A number from the environment; `None` if the variable is unset, a failed test if it is not a
/// number.
fn env_number(var: &str) -> Option<u64> {
    let value = std::env::var(var).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={value:?} is not a whole number")),
    )
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// xorshift64*: small, fast, and plenty for picking delays. Not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // The state must never be zero; the multiplication spreads a small seed over all the bits.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration of `low..=high` milliseconds.
    pub(crate) fn millis(&mut self, (low, high): (u64, u64)) -> Duration {
        Duration::from_millis(low + self.next_u64() % (high - low + 1))
    }
}
