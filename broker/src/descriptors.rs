//! How many connections this process can hold: every connection is a file descriptor, and the
//! broker needs some for itself (store files, worker runtimes, the listener, TLS files, logs).
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit (what Go's runtime and most servers
//! do; the hard limit is the operator's ceiling), and `limits.max_connections` is lowered, with a
//! warning, to what then fits beside a reserve for the broker's own files. Past that limit a client
//! gets `overloaded` instead of a connection that hangs for want of a descriptor.

/// Descriptors kept for the broker's own use: an eighth of the limit, at least 32 and at most 1,024.
fn reserve(limit: u64) -> u64 {
    (limit / 8).clamp(32, 1_024)
}

/// `wanted` (`limits.max_connections`), lowered to what the descriptor limit allows.
pub(crate) fn connection_limit(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read the file descriptor limit; limits.max_connections kept");
            return wanted;
        }
    };
    let fits = limit.saturating_sub(reserve(limit)).max(1);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    if wanted > fits {
        tracing::warn!(
            max_connections = wanted,
            descriptors = limit,
            lowered_to = fits,
            "limits.max_connections is more than the file descriptor limit allows; lowered \
             (raise `ulimit -n` / LimitNOFILE to serve more)"
        );
        return fits;
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_grows_with_the_limit_within_bounds() {
        assert_eq!(reserve(64), 32);
        assert_eq!(reserve(1_024), 128);
        assert_eq!(reserve(1 << 20), 1_024);
    }

    #[test]
    fn a_limit_that_fits_is_kept() {
        assert_eq!(connection_limit(1), 1);
    }
}
