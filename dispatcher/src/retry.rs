//! The retry budget: retries may add at most a share of the load (10 % by
//! default) on top of a small floor, so that a slow or failing pipeline is
//! not sent twice the work exactly when it can least take it. A token
//! bucket: each first attempt earns `ratio` of a retry, time earns
//! `min_per_second`, and each retry spends one. Pure; the caller supplies
//! the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    capacity: f64,
    balance: f64,
    refilled: Instant,
}

/// How long a quiet spell's floor is saved up for a burst of retries.
const FLOOR_SAVED_FOR: Duration = Duration::from_secs(10);
/// How many requests' earnings a burst may spend at once (a node dying
/// with a thousand requests in flight).
const EARNINGS_SAVED_FOR: f64 = 1000.0;

impl RetryBudget {
    /// At most `ratio` retries per first attempt, plus `min_per_second`
    /// whatever the traffic (so a quiet dispatcher can still retry). A
    /// burst spends at most ten seconds of the floor plus what a thousand
    /// requests earned. It starts full of the floor only.
    pub fn new(ratio: f64, min_per_second: f64, now: Instant) -> RetryBudget {
        let floor = min_per_second * FLOOR_SAVED_FOR.as_secs_f64();
        RetryBudget {
            ratio,
            min_per_second,
            capacity: (floor + ratio * EARNINGS_SAVED_FOR).max(1.0),
            balance: floor,
            refilled: now,
        }
    }

    /// A first attempt was published: it earns its share of a retry.
    pub fn deposit(&mut self) {
        self.balance = (self.balance + self.ratio).min(self.capacity);
    }

    /// Spends one retry if the budget holds one.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let earned =
            now.saturating_duration_since(self.refilled).as_secs_f64() * self.min_per_second;
        self.balance = (self.balance + earned).min(self.capacity);
        self.refilled = self.refilled.max(now);
        // Tenths added up in floating point fall a hair short of a whole.
        if self.balance >= 1.0 - 1e-9 {
            self.balance = (self.balance - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7, item 6: every unanswered request used to be published
    /// twice. With a 10 % budget and no floor, a thousand requests that all
    /// time out buy a hundred retries, not a thousand.
    #[test]
    fn retries_add_at_most_the_ratio() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.1, 0.0, t0);
        let mut retried = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.try_withdraw(t0) {
                retried += 1;
            }
        }
        assert_eq!(retried, 100);
    }

    #[test]
    fn the_floor_refills_with_time_and_is_saved_up_to_a_bound() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.0, 2.0, t0);
        let spend_all = |budget: &mut RetryBudget, now| {
            let mut n = 0;
            while budget.try_withdraw(now) {
                n += 1;
            }
            n
        };
        assert_eq!(spend_all(&mut budget, t0), 20, "ten seconds of the floor");
        assert_eq!(spend_all(&mut budget, t0 + Duration::from_secs(1)), 2);
        assert_eq!(
            spend_all(&mut budget, t0 + Duration::from_secs(1000)),
            20,
            "a long quiet spell saves no more than ten seconds' worth"
        );
    }

    #[test]
    fn a_burst_spends_at_most_what_a_thousand_requests_earned() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.1, 0.0, t0);
        for _ in 0..5000 {
            budget.deposit();
        }
        let mut n = 0;
        while budget.try_withdraw(t0) {
            n += 1;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut budget = RetryBudget::new(0.0, 1.0, t0);
        while budget.try_withdraw(t0) {}
        assert!(!budget.try_withdraw(t0 - Duration::from_secs(5)));
        assert!(!budget.try_withdraw(t0), "nor is it counted twice later");
    }
}
