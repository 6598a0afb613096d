//! Arrival patterns as production sees them: a Poisson process (exponential
//! gaps) with sessions of about a second, from a fixed seed so both sides of a
//! comparison meet exactly the same pattern.

use std::time::Duration;

/// xorshift64*: small, seedable, good enough for arrival times.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// Poisson arrivals at `rate` per second for `secs` seconds; each session lasts
/// 0.5–1.5 s and comes from the next of `sources` in turn. Returns (offset from
/// the start, source index, session length).
pub fn poisson(
    rate: f64,
    secs: f64,
    sources: usize,
    seed: u64,
) -> Vec<(Duration, usize, Duration)> {
    let mut rng = Rng::new(seed);
    let mut at = 0.0;
    let mut out = Vec::new();
    loop {
        at += -rng.unit().ln() / rate;
        if at >= secs {
            return out;
        }
        let hold = 0.5 + rng.unit();
        out.push((
            Duration::from_secs_f64(at),
            out.len() % sources.max(1),
            Duration::from_secs_f64(hold),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_has_about_the_asked_rate_and_is_repeatable() {
        let a = poisson(50.0, 20.0, 64, 7);
        assert!((850..1150).contains(&a.len()), "{}", a.len());
        assert_eq!(a, poisson(50.0, 20.0, 64, 7));
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(a
            .iter()
            .all(|(_, s, h)| *s < 64 && *h >= Duration::from_millis(500)));
    }
}
