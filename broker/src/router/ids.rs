//! Which broker id the next entry gets, and which ids may be handed out before their commit.
//!
//! Ids increase strictly and continue after a restart from the store's high-water mark. An entry
//! handed out early carries an id the store has not seen yet; if the broker crashed then, a restart
//! must not give that id out again. So a commit may carry a reservation (`reserve_ids_through`) that
//! the store's high-water mark covers once it is durable, and only ids at or below a committed
//! reservation go out early.

use crate::store::{ID_RESERVATION, PROVISIONAL_IDS};

/// The id counter and the durable reservation it hands out under.
pub(super) struct Ids {
    /// The last broker id given out.
    last: u64,
    /// Ids up to this one are covered by a committed reservation and may be handed out early.
    reserved: u64,
    /// The ids are provisional ([`Ids::provisional`]).
    shared: bool,
}

impl Ids {
    /// `last` is the store's high-water mark: nothing above it is reserved until a commit says so.
    pub(super) fn new(last: u64) -> Self {
        Self {
            last,
            reserved: last,
            shared: false,
        }
    }

    /// For a store other brokers share: provisional ids ([`PROVISIONAL_IDS`] and up), which the
    /// store replaces by ids in commit order; none may go out early and none is reserved.
    pub(super) fn provisional() -> Self {
        Self {
            last: PROVISIONAL_IDS,
            reserved: 0,
            shared: true,
        }
    }

    /// The next id; never one given out before, in this run or an earlier one.
    pub(super) fn next(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// Whether `id` is covered by a committed reservation, so it may reach a client before the
    /// entry's own commit.
    pub(super) fn may_go_early(&self, id: u64) -> bool {
        id <= self.reserved
    }

    /// The reservation the next commit should carry ([`ID_RESERVATION`] ids ahead), once less
    /// than half of the committed one is left; asking early keeps early delivery going while that
    /// commit is under way.
    pub(super) fn reservation_due(&self) -> Option<u64> {
        if self.shared {
            return None;
        }
        (self.last + ID_RESERVATION / 2 > self.reserved).then_some(self.last + ID_RESERVATION)
    }

    /// A commit carrying the reservation `through` (0 for none) is durable.
    pub(super) fn reservation_committed(&mut self, through: u64) {
        self.reserved = self.reserved.max(through);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_strictly_and_continue_after_the_high_water_mark() {
        let mut ids = Ids::new(41);
        assert_eq!((ids.next(), ids.next(), ids.next()), (42, 43, 44));
    }

    #[test]
    fn after_a_restart_nothing_goes_out_early_until_a_reservation_commits() {
        let mut ids = Ids::new(1_000);
        let id = ids.next();
        assert!(!ids.may_go_early(id));
        let through = ids.reservation_due().unwrap();
        assert!(
            through >= id,
            "the reservation covers the ids already given out"
        );
        assert!(!ids.may_go_early(id), "asked for is not committed");
        ids.reservation_committed(through);
        assert!(ids.may_go_early(id));
    }

    #[test]
    fn provisional_ids_never_go_out_early_and_reserve_nothing() {
        let mut ids = Ids::provisional();
        let id = ids.next();
        assert!(id > PROVISIONAL_IDS);
        assert!(!ids.may_go_early(id));
        assert_eq!(ids.reservation_due(), None);
    }

    #[test]
    fn a_failed_commit_reserves_nothing() {
        let mut ids = Ids::new(0);
        let id = ids.next();
        let _asked = ids.reservation_due().unwrap();
        // The commit fails: `reservation_committed` is never called.
        assert!(!ids.may_go_early(id));
        assert!(
            ids.reservation_due().is_some(),
            "the next commit asks again"
        );
    }

    /// The invariant the crash guarantee rests on, over several reservations: whatever id the Router
    /// would hand out early is at or below a reservation whose commit has landed, and every commit
    /// that lands in time keeps early delivery going.
    #[test]
    fn ids_handed_out_early_are_always_below_a_committed_reservation() {
        let mut ids = Ids::new(7);
        let mut committed_through = 7; // what the store's high-water mark durably covers
        let mut in_flight: Option<u64> = None; // a commit under way, with the reservation it carries
        let mut early = 0u64;
        for n in 0..3 * ID_RESERVATION {
            let id = ids.next();
            if ids.may_go_early(id) {
                assert!(id <= committed_through, "id {id} went out early uncovered");
                early += 1;
            }
            // A commit leaves every 1,000 ids and lands 500 ids later.
            if n % 1_000 == 0 {
                in_flight = Some(ids.reservation_due().unwrap_or(0));
            } else if n % 1_000 == 500 {
                if let Some(through) = in_flight.take() {
                    committed_through = committed_through.max(through);
                    ids.reservation_committed(through);
                }
            }
        }
        assert!(
            early > 3 * ID_RESERVATION - 1_000,
            "early delivery never stalls: {early}"
        );
    }
}
