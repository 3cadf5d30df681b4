//! Login throttling with exponential back-off, per account and per source address.
//!
//! A few failures are free; after that each further failure blocks the account (or the address)
//! for `base × 2^(n−1)`, up to `max`. While blocked, attempts are refused without checking the
//! password and do not count, so hammering cannot lengthen the block of a real user beyond what
//! the real failures earned. A success clears the account's record, never the address's (or one
//! attacker-owned account could launder an address). Records are forgotten after `forget` without
//! failures, and the tables are bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The knobs of the throttle.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures an account may have before it is blocked.
    pub free_per_account: u32,
    /// Failures an address may have before it is blocked.
    pub free_per_source: u32,
    pub base: Duration,
    pub max: Duration,
    pub forget: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_per_account: 5,
            free_per_source: 10,
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
            forget: Duration::from_secs(60 * 60),
        }
    }
}

/// At most this many records per table; the oldest are dropped first.
const MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Tables {
    accounts: HashMap<String, Failures>,
    sources: HashMap<String, Failures>,
}

/// The throttle shared by the dashboard, the API and the registry.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    tables: Mutex<Tables>,
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed sign-ins; try again in {} s", retry_after.as_secs().max(1))]
pub struct Throttled {
    pub retry_after: Duration,
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            tables: Mutex::new(Tables::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a sign-in for `account` from `source` may be checked now.
    pub fn check(&self, account: &str, source: &str) -> Result<(), Throttled> {
        self.check_at(account, source, Instant::now())
    }

    fn check_at(&self, account: &str, source: &str, now: Instant) -> Result<(), Throttled> {
        let tables = self.lock();
        let wait = [tables.accounts.get(account), tables.sources.get(source)]
            .into_iter()
            .flatten()
            .filter_map(|f| f.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(retry_after) => Err(Throttled { retry_after }),
            None => Ok(()),
        }
    }

    /// Records a failed sign-in.
    pub fn failure(&self, account: &str, source: &str) {
        self.failure_at(account, source, Instant::now());
    }

    fn failure_at(&self, account: &str, source: &str, now: Instant) {
        let policy = self.policy;
        let mut tables = self.lock();
        let Tables { accounts, sources } = &mut *tables;
        for (table, key, free) in [
            (accounts, account, policy.free_per_account),
            (sources, source, policy.free_per_source),
        ] {
            if table.len() >= MAX_RECORDS {
                prune(table, now, policy.forget);
            }
            let entry = table.entry(key.to_owned()).or_insert(Failures {
                count: 0,
                last: now,
                blocked_until: None,
            });
            if now.duration_since(entry.last) > policy.forget {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            if entry.count > free {
                let doublings = (entry.count - free - 1).min(30);
                let delay = policy.base.saturating_mul(1 << doublings).min(policy.max);
                entry.blocked_until = Some(now + delay);
            }
        }
    }

    /// Records a successful sign-in: the account's failures are forgotten.
    pub fn success(&self, account: &str) {
        self.lock().accounts.remove(account);
    }
}

fn prune(table: &mut HashMap<String, Failures>, now: Instant, forget: Duration) {
    table.retain(|_, f| now.duration_since(f.last) <= forget);
    if table.len() >= MAX_RECORDS {
        // Still full of fresh records: drop the oldest half.
        let mut lasts: Vec<Instant> = table.values().map(|f| f.last).collect();
        lasts.sort();
        let cut = lasts[lasts.len() / 2];
        table.retain(|_, f| f.last > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottlePolicy::default())
    }

    #[test]
    fn an_account_is_blocked_after_its_free_failures_with_doubling_delays() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..5 {
            assert!(t.check_at("alice", "a", now).is_ok());
            t.failure_at("alice", "a", now);
        }
        assert!(
            t.check_at("alice", "b", now).is_ok(),
            "five failures are free"
        );
        t.failure_at("alice", "b", now);
        let wait = t.check_at("alice", "c", now).unwrap_err().retry_after;
        assert_eq!(wait, Duration::from_secs(1));
        let later = now + Duration::from_secs(1);
        assert!(t.check_at("alice", "c", later).is_ok(), "the block ends");
        t.failure_at("alice", "c", later);
        assert_eq!(
            t.check_at("alice", "d", later).unwrap_err().retry_after,
            Duration::from_secs(2)
        );
        assert!(
            t.check_at("bob", "d", later).is_ok(),
            "other accounts are not affected"
        );
    }

    #[test]
    fn an_address_is_blocked_across_accounts() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..10 {
            assert!(t.check_at(&format!("user{i}"), "198.51.100.7", now).is_ok());
            t.failure_at(&format!("user{i}"), "198.51.100.7", now);
        }
        t.failure_at("user10", "198.51.100.7", now);
        assert!(t.check_at("user11", "198.51.100.7", now).is_err());
        assert!(t.check_at("user11", "198.51.100.8", now).is_ok());
    }

    #[test]
    fn success_clears_the_account_not_the_address_and_delays_are_capped() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..40 {
            t.failure_at("carol", "x", now);
        }
        let wait = t.check_at("carol", "y", now).unwrap_err().retry_after;
        assert_eq!(wait, ThrottlePolicy::default().max);
        t.success("carol");
        assert!(t.check_at("carol", "y", now).is_ok());
        assert!(
            t.check_at("carol", "x", now).is_err(),
            "the address keeps its record"
        );
        let much_later = now + Duration::from_secs(2 * 3600);
        assert!(t.check_at("dave", "x", much_later).is_ok());
        t.failure_at("dave", "x", much_later);
        assert!(
            t.check_at("dave", "x", much_later).is_ok(),
            "old failures were forgotten"
        );
    }
}
