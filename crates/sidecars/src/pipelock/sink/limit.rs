//! How much the sink may write: the same attempt is logged once per window, and at
//! most so many lines a second; whatever is held back is counted and reported in one
//! line every [`REPORT`] at most. Memory stays bounded whatever the agent sends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Repeats of one attempt within this window are not logged again.
pub const DEDUPE: Duration = Duration::from_secs(10);
/// Lines per second at most.
pub const PER_SECOND: u32 = 100;
/// How often at most the count of held-back attempts is written.
pub const REPORT: Duration = Duration::from_secs(10);
/// Attempts remembered for deduplication at most.
const REMEMBERED: usize = 4096;

/// The limiter's state; one per sink, behind a lock.
pub struct Limiter {
    dedupe: Duration,
    per_second: u32,
    second: Option<Instant>,
    in_second: u32,
    suppressed: u64,
    seen: HashMap<String, Instant>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(DEDUPE, PER_SECOND)
    }
}

impl Limiter {
    pub fn new(dedupe: Duration, per_second: u32) -> Limiter {
        Limiter {
            dedupe,
            per_second,
            second: None,
            in_second: 0,
            suppressed: 0,
            seen: HashMap::new(),
        }
    }

    /// May the attempt named `key` be logged at `now`? If not, it is counted.
    pub fn admit(&mut self, key: &str, now: Instant) -> bool {
        if self
            .seen
            .get(key)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.dedupe)
        {
            self.suppressed += 1;
            return false;
        }
        if !self.take_line(now) {
            self.suppressed += 1;
            return false;
        }
        if self.seen.len() >= REMEMBERED {
            let dedupe = self.dedupe;
            self.seen
                .retain(|_, t| now.saturating_duration_since(*t) < dedupe);
            if self.seen.len() >= REMEMBERED {
                self.seen.clear();
            }
        }
        self.seen.insert(key.to_string(), now);
        true
    }

    /// The count held back since the last report, to write in one line (called every
    /// [`REPORT`]); `None` when there is nothing to report or no line is left.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 || !self.take_line(now) {
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Takes one line of this second's budget.
    fn take_line(&mut self, now: Instant) -> bool {
        match self.second {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.second = Some(now);
                self.in_second = 0;
            }
        }
        if self.in_second >= self.per_second {
            return false;
        }
        self.in_second += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_counted_not_logged() {
        let mut l = Limiter::default();
        let t = Instant::now();
        assert!(l.admit("udp 1.2.3.4 53 example.com", t));
        assert!(!l.admit("udp 1.2.3.4 53 example.com", t));
        assert!(!l.admit("udp 1.2.3.4 53 example.com", t + Duration::from_secs(1)));
        assert!(l.admit("udp 1.2.3.4 53 other.com", t));
        assert!(l.admit("udp 1.2.3.4 53 example.com", t + DEDUPE));
        assert_eq!(l.flush(t + DEDUPE), Some(2));
        assert_eq!(l.flush(t + DEDUPE), None);
    }

    #[test]
    fn at_most_so_many_lines_a_second_then_one_count() {
        let mut l = Limiter::new(DEDUPE, 3);
        let t = Instant::now();
        for i in 0..3 {
            assert!(l.admit(&format!("k{i}"), t));
        }
        for i in 3..1000 {
            assert!(!l.admit(&format!("k{i}"), t));
        }
        assert_eq!(l.flush(t), None, "no line left this second");
        let later = t + Duration::from_secs(1);
        assert_eq!(l.flush(later), Some(997));
        assert_eq!(l.flush(later), None);
        assert!(l.admit("new", later));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut l = Limiter::new(DEDUPE, u32::MAX);
        let t = Instant::now();
        for i in 0..(3 * REMEMBERED) {
            l.admit(&format!("k{i}"), t);
            assert!(l.seen.len() <= REMEMBERED);
        }
    }
}
