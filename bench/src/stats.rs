//! Median and spread of repeated figures, and percentiles of samples.

use serde::{Deserialize, Serialize};

/// A figure repeated: every run, the median and the spread (min–max).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Repeated {
    pub runs: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Repeated {
    pub fn of(runs: Vec<f64>) -> Repeated {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        Repeated {
            median: median(&sorted),
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            runs,
        }
    }

    /// Spread as ± half the range, in percent of the median.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median * 100.0
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Percentiles of a sample (nearest rank).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &[f64]) -> Percentiles {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if s.is_empty() {
                return 0.0;
            }
            let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
            s[rank - 1]
        };
        Percentiles {
            count: s.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: s.last().copied().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let r = Repeated::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((r.median, r.min, r.max), (2.0, 1.0, 3.0));
        assert_eq!(r.spread_pct(), 50.0);
        assert_eq!(Repeated::of(vec![1.0, 2.0, 3.0, 4.0]).median, 2.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=200).map(f64::from).collect();
        let p = Percentiles::of(&s);
        assert_eq!((p.p50, p.p99, p.max), (100.0, 198.0, 200.0));
    }
}
