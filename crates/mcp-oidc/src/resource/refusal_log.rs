//! Logging refusals without letting a flood of bad requests flood the log.
//!
//! Every refusal deserves a line, until someone sends thousands a second: then formatting
//! and writing those lines would cost more than refusing the requests, and the log would
//! bury everything else. The first refusals of each second (20 by default, see
//! [`LayerSettings::refusal_log_per_second`](super::LayerSettings::refusal_log_per_second))
//! are logged in full; the rest are counted and reported in one summary line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A per-second budget of refusal log lines. Approximate under races by design: a few
/// lines more or less in a busy second do not matter, a lock on the refusal path would.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    per_second: u64,
    second: AtomicU64,
    count: AtomicU64,
}

impl RefusalLog {
    /// A budget of `per_second` full lines per second.
    pub(crate) fn new(per_second: u64) -> Self {
        Self {
            per_second,
            second: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Whether this refusal may be logged in full; if not, it is counted for the summary.
    pub(crate) fn take(&self) -> bool {
        self.admit(unix_seconds())
    }

    /// Whether a refusal at `now` may be logged in full. The first refusal of a new second
    /// reports how many were suppressed in the last busy one.
    fn admit(&self, now: u64) -> bool {
        let second = self.second.load(Ordering::Relaxed);
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let previous = self.count.swap(0, Ordering::Relaxed);
            if previous > self.per_second {
                let suppressed = previous - self.per_second;
                tracing::warn!(
                    target: "mcp_oidc::auth",
                    suppressed,
                    "more refusals than the log takes: {suppressed} further refusals in one second were not logged"
                );
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed) < self.per_second
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_refusals_of_each_second_are_logged_in_full() {
        let log = RefusalLog::new(20);
        let admitted = (0..1000).filter(|_| log.admit(100)).count();
        assert_eq!(admitted, 20);
        // A new second gets a new budget.
        assert!(log.admit(101));
        let admitted = 1 + (0..1000).filter(|_| log.admit(101)).count();
        assert_eq!(admitted, 20);
    }
}
