//! Latency figures: nearest-rank percentiles over every measured claim.

use std::time::Duration;

use serde::Serialize;

/// Latency summary in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Summarises `samples` (sorted in place). All zero when there are none.
    pub fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        Latency {
            p50: ms(percentile(samples, 50.0)),
            p90: ms(percentile(samples, 90.0)),
            p99: ms(percentile(samples, 99.0)),
            p999: ms(percentile(samples, 99.9)),
            max: ms(samples[samples.len() - 1]),
            mean: ms(total / samples.len() as u32),
        }
    }
}

/// The nearest-rank percentile `p` (0-100, to a tenth) of sorted, non-empty
/// `sorted`. The rank is computed in integers (tenths of a percent), so that
/// 99.9 % of 2000 samples is the 1998th, not one more for a rounding error.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let tenths = (p * 10.0).round().clamp(0.0, 1000.0) as usize;
    let rank = (tenths * sorted.len()).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with microsecond precision.
pub fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        // Of 100 samples the 99.9th is the largest; of 2000, the 1998th.
        assert_eq!(l.p999, 100.0);
        let mut w: Vec<Duration> = (1..=2000).map(Duration::from_millis).collect();
        assert_eq!(Latency::of(&mut w).p999, 1998.0);
        assert_eq!(l.mean, 50.5);
        let one = [Duration::from_micros(1500)];
        assert_eq!(percentile(&one, 99.0), one[0]);
        assert_eq!(ms(one[0]), 1.5);
        assert_eq!(Latency::of(&mut []), Latency::default());
    }
}
