//! Restart limits for supervised writers.
//!
//! actix's `Supervisor` restarts a stopped actor for as long as anyone holds its
//! address; it has no notion of "too many restarts". [`RestartBudget`] adds that: a
//! writer records each failure, and once more than `max_restarts` happened within
//! `within`, it gives up instead of stopping, so its stream is marked failed rather
//! than restarted forever; a whole window later it tries again with a fresh budget
//! ([`RestartBudget::retry_after_window`]), so a fault that went away (disk full,
//! output removed) does not end the stream for good.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The limits an ops team sets in `[supervision]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed inside one window.
    pub max_restarts: u32,
    /// Length of the window.
    pub within: Duration,
    /// Pause before a restarted writer touches its sink again.
    pub backoff: Duration,
}

/// What a writer should do about a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stop; the supervisor restarts it after the back-off.
    Restart,
    /// The limits are spent: mark the stream failed.
    GiveUp,
}

/// Failures of one writer inside the current window. Survives restarts because
/// actix restarts the same actor value.
#[derive(Debug)]
pub struct RestartBudget {
    /// The limits.
    policy: RestartPolicy,
    /// When each failure inside the window happened, oldest first.
    failures: VecDeque<Instant>,
}

impl RestartBudget {
    /// A budget with no failure recorded yet.
    pub fn new(policy: RestartPolicy) -> RestartBudget {
        RestartBudget {
            policy,
            failures: VecDeque::new(),
        }
    }

    /// The limits this budget enforces.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Records a failure at `now` and says whether one more restart is allowed.
    pub fn failure(&mut self, now: Instant) -> Verdict {
        while let Some(&first) = self.failures.front() {
            if now.duration_since(first) > self.policy.within {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        if self.failures.len() > self.policy.max_restarts as usize {
            Verdict::GiveUp
        } else {
            Verdict::Restart
        }
    }

    /// Whether a writer that gave up at `gave_up` may try again at `now`: once a
    /// whole window has passed since, and then with every failure forgiven. A
    /// failed stream is not failed for ever: a full disk gets space back, a
    /// removed output can be recreated, and its session recovers without being
    /// recreated.
    pub fn retry_after_window(&mut self, gave_up: Instant, now: Instant) -> bool {
        if now.duration_since(gave_up) < self.policy.within {
            return false;
        }
        self.failures.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_restarts: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            within: Duration::from_secs(10),
            backoff: Duration::from_millis(1),
        }
    }

    #[test]
    fn gives_up_after_max_restarts_inside_the_window() {
        let mut budget = RestartBudget::new(policy(2));
        let t = Instant::now();
        assert_eq!(budget.failure(t), Verdict::Restart);
        assert_eq!(budget.failure(t), Verdict::Restart);
        assert_eq!(budget.failure(t), Verdict::GiveUp);
    }

    #[test]
    fn failures_older_than_the_window_are_forgiven() {
        let mut budget = RestartBudget::new(policy(1));
        let t = Instant::now();
        assert_eq!(budget.failure(t), Verdict::Restart);
        let later = t + Duration::from_secs(11);
        assert_eq!(budget.failure(later), Verdict::Restart);
        assert_eq!(budget.failure(later), Verdict::GiveUp);
    }

    #[test]
    fn a_failed_writer_retries_with_a_fresh_budget_once_a_window_passed() {
        let mut budget = RestartBudget::new(policy(1));
        let t = Instant::now();
        assert_eq!(budget.failure(t), Verdict::Restart);
        assert_eq!(budget.failure(t), Verdict::GiveUp);
        assert!(!budget.retry_after_window(t, t + Duration::from_secs(9)));
        assert!(budget.retry_after_window(t, t + Duration::from_secs(10)));
        let later = t + Duration::from_secs(10);
        assert_eq!(budget.failure(later), Verdict::Restart);
        assert_eq!(budget.failure(later), Verdict::GiveUp);
    }

    #[test]
    fn zero_restarts_means_the_first_failure_is_final() {
        let mut budget = RestartBudget::new(policy(0));
        assert_eq!(budget.failure(Instant::now()), Verdict::GiveUp);
    }
}
