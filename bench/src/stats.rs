//! Percentiles of a sample of durations.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Sample(Vec<Duration>);

impl Sample {
    pub fn new(mut values: Vec<Duration>) -> Sample {
        values.sort_unstable();
        Sample(values)
    }

    /// Nearest-rank percentile (`p` in 0..=100).
    pub fn pct(&self, p: u32) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p as usize * self.0.len()).div_ceil(100).max(1);
        self.0[rank.min(self.0.len()) - 1]
    }

    /// Every value, in ascending order.
    pub fn values(&self) -> &[Duration] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Microseconds, for figures far below a millisecond.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn ratio(ours: Duration, theirs: Duration) -> f64 {
    ours.as_secs_f64() / theirs.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Sample::new((1..=10).rev().map(Duration::from_millis).collect());
        assert_eq!(s.pct(50), Duration::from_millis(5));
        assert_eq!(s.pct(90), Duration::from_millis(9));
        assert_eq!(s.pct(100), Duration::from_millis(10));
    }
}
