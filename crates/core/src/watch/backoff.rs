//! Exponential backoff with jitter, and the per-bottle holds built on it.
//!
//! A bottle whose operations fail, or that needs repair again right after a repair (a
//! crash loop), is *held*: its steps are left out of the following reconciles until its
//! backoff ends, then it is retried alone. Other bottles are reconciled as usual, so one
//! broken bottle never stalls the rest. A bottle seen stable again is forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Exponential backoff: `base * 2^(attempt-1)`, capped at `max`, then shortened by a
/// random share of up to `jitter` (0..=1) so that retries of many bottles spread out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub base: Duration,
    /// The longest delay, however many attempts failed.
    pub max: Duration,
    /// The largest share of a delay cut at random, from 0 (none) to 1 (all of it).
    pub jitter: f64,
}

impl Backoff {
    /// The reconciler's default for failing bottles: 1 s, doubling, at most 60 s.
    pub const BOTTLES: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    /// The default for reconnecting to the engine: 250 ms, doubling, at most 5 s.
    pub const ENGINE: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

    /// `base` doubling up to `max`, with 25% jitter.
    #[must_use]
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            jitter: 0.25,
        }
    }

    /// The delay before retry `attempt` (1-based) without jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before retry `attempt` (1-based): in
    /// `[ceiling * (1 - jitter), ceiling]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let c = self.ceiling(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let cut: f64 = rng.random::<f64>() * jitter;
        c.mul_f64(1.0 - cut)
    }
}

/// A bottle that needs another repair within this long of the previous one is flapping
/// (its agent dies right after each start): it is held like a failing one.
pub const FLAP_WINDOW: Duration = Duration::from_secs(2);

/// A bottle that stays quiet this long after its hold ended is forgiven its failures.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What one reconcile found for a bottle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BottleOutcome {
    /// Nothing to do.
    Healthy,
    /// Drift was repaired (every operation succeeded).
    Repaired,
    /// An operation failed or was skipped.
    Failed,
}

#[derive(Clone, Debug)]
struct Hold {
    failures: u32,
    /// Steps of the bottle are left out until then.
    until: Instant,
    /// A retry is owed when `until` passes.
    retry_pending: bool,
    last_repair: Option<Instant>,
}

/// Per-bottle backoff state.
#[derive(Debug)]
pub struct Holds {
    policy: Backoff,
    bottles: BTreeMap<String, Hold>,
}

impl Holds {
    /// No bottle held; a failing bottle is held for delays drawn from `policy`.
    pub fn new(policy: Backoff) -> Holds {
        Holds {
            policy,
            bottles: BTreeMap::new(),
        }
    }

    /// Forget every hold (the manifest changed: the cause may be gone).
    pub fn clear(&mut self) {
        self.bottles.clear();
    }

    /// Bottles held at `now`.
    pub fn held(&self, now: Instant) -> BTreeSet<String> {
        self.bottles
            .iter()
            .filter(|(_, h)| h.until > now)
            .map(|(b, _)| b.clone())
            .collect()
    }

    /// Failures counted for `bottle`.
    pub fn failures(&self, bottle: &str) -> u32 {
        self.bottles.get(bottle).map_or(0, |h| h.failures)
    }

    /// When the next owed retry is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.bottles
            .values()
            .filter(|h| h.retry_pending)
            .map(|h| h.until)
            .min()
    }

    /// Bottles whose hold ended by `now` and that are owed a retry; the debt is cleared.
    pub fn take_released(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for (b, h) in &mut self.bottles {
            if h.retry_pending && h.until <= now {
                h.retry_pending = false;
                out.push(b.clone());
            }
        }
        out
    }

    /// Record what a reconcile found for `bottle`. `drift` is false when the change was
    /// asked for (first converge, manifest edit): such changes never count as flapping.
    /// Returns the hold imposed, if any.
    pub fn record(
        &mut self,
        bottle: &str,
        outcome: BottleOutcome,
        drift: bool,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let policy = self.policy;
        let h = self.bottles.entry(bottle.to_string()).or_insert(Hold {
            failures: 0,
            until: now,
            retry_pending: false,
            last_repair: None,
        });
        if now >= h.until + STABLE_AFTER {
            h.failures = 0;
        }
        let fail = match outcome {
            BottleOutcome::Healthy => false,
            BottleOutcome::Failed => true,
            BottleOutcome::Repaired if !drift => false,
            BottleOutcome::Repaired => {
                let flapping = h.failures > 0
                    || h.last_repair
                        .is_some_and(|t| now.saturating_duration_since(t) < FLAP_WINDOW);
                h.last_repair = Some(now);
                flapping
            }
        };
        if fail {
            h.failures += 1;
            let d = policy.delay(h.failures, rng);
            h.until = now + d;
            h.retry_pending = true;
            Some(d)
        } else {
            if outcome != BottleOutcome::Repaired || !drift {
                h.retry_pending = false;
            }
            if h.failures == 0 && h.last_repair.is_none() {
                self.bottles.remove(bottle);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn no_jitter(base_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            jitter: 0.0,
            ..Backoff::new(
                Duration::from_millis(base_ms),
                Duration::from_millis(max_ms),
            )
        }
    }

    #[test]
    fn grows_by_doubling_up_to_the_cap() {
        let b = no_jitter(100, 1000);
        let mut rng = StdRng::seed_from_u64(1);
        let got: Vec<u128> = (1..=7).map(|a| b.delay(a, &mut rng).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        // Absurd attempt numbers neither overflow nor pass the cap.
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(1000));
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_varies() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=10 {
            let c = b.ceiling(attempt);
            let lo = c.mul_f64(1.0 - b.jitter);
            let mut seen = BTreeSet::new();
            for _ in 0..200 {
                let d = b.delay(attempt, &mut rng);
                assert!(
                    d >= lo && d <= c,
                    "attempt {attempt}: {d:?} not in [{lo:?}, {c:?}]"
                );
                seen.insert(d);
            }
            assert!(seen.len() > 100, "jitter should spread the delays");
        }
    }

    #[test]
    fn a_failing_bottle_is_held_longer_each_time_and_forgiven_when_stable() {
        let mut h = Holds::new(no_jitter(1000, 8000));
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let d1 = h.record("a", BottleOutcome::Failed, true, t0, &mut rng);
        assert_eq!(d1, Some(Duration::from_secs(1)));
        assert_eq!(h.held(t0), BTreeSet::from(["a".to_string()]));
        assert_eq!(h.next_release(), Some(t0 + Duration::from_secs(1)));
        assert!(h.take_released(t0).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(h.take_released(t1), vec!["a".to_string()]);
        assert!(h.held(t1).is_empty());
        assert_eq!(
            h.record("a", BottleOutcome::Failed, true, t1, &mut rng),
            Some(Duration::from_secs(2))
        );
        let t2 = t1 + Duration::from_secs(2);
        h.take_released(t2);
        // The cause went: the retry succeeds, and a later healthy look forgets it all.
        assert_eq!(
            h.record("a", BottleOutcome::Repaired, true, t2, &mut rng),
            Some(Duration::from_secs(4)),
            "repaired while failures are fresh still counts against it"
        );
        let later = t2 + Duration::from_secs(4) + STABLE_AFTER;
        assert_eq!(
            h.record("a", BottleOutcome::Repaired, true, later, &mut rng),
            None
        );
        assert_eq!(h.failures("a"), 0);
        assert!(h.held(later).is_empty());
    }

    #[test]
    fn repairs_in_quick_succession_are_flapping_but_asked_for_changes_are_not() {
        let mut h = Holds::new(no_jitter(1000, 8000));
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        assert_eq!(
            h.record("a", BottleOutcome::Repaired, true, t0, &mut rng),
            None
        );
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(
            h.record("a", BottleOutcome::Repaired, true, t1, &mut rng),
            Some(Duration::from_secs(1))
        );
        // Manifest-driven changes never count.
        assert_eq!(
            h.record("b", BottleOutcome::Repaired, false, t0, &mut rng),
            None
        );
        assert_eq!(
            h.record("b", BottleOutcome::Repaired, false, t1, &mut rng),
            None
        );
        // Repairs far apart are just drift.
        assert_eq!(
            h.record("c", BottleOutcome::Repaired, true, t0, &mut rng),
            None
        );
        let t2 = t0 + FLAP_WINDOW + Duration::from_millis(1);
        assert_eq!(
            h.record("c", BottleOutcome::Repaired, true, t2, &mut rng),
            None
        );
        assert_eq!(h.held(t1), BTreeSet::from(["a".to_string()]));
    }
}
