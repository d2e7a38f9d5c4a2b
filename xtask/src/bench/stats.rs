//! Summary statistics of repeated wall-clock measurements.

use std::time::Duration;

use serde::Serialize;

/// Median, spread and raw samples, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub runs: usize,
    /// Median.
    pub median_s: f64,
    /// 10th percentile.
    pub p10_s: f64,
    /// 90th percentile.
    pub p90_s: f64,
    /// Fastest.
    pub min_s: f64,
    /// Slowest.
    pub max_s: f64,
    /// Every sample, in run order.
    pub samples_s: Vec<f64>,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let in_order: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        let mut sorted = in_order.clone();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            runs: sorted.len(),
            median_s: percentile(&sorted, 0.5)?,
            p10_s: percentile(&sorted, 0.1)?,
            p90_s: percentile(&sorted, 0.9)?,
            min_s: *sorted.first()?,
            max_s: *sorted.last()?,
            samples_s: in_order,
        })
    }
}

/// The `q` quantile of sorted samples, interpolating linearly between closest ranks.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    // `pos` lies in 0..=last, so both indices are in bounds.
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// A duration for a table: `15.2 ms`, `1.234 s`.
pub fn human(seconds: f64) -> String {
    if seconds < 1.0 { format!("{:.1} ms", seconds * 1e3) } else { format!("{seconds:.3} s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let s = Summary::of(&[ms(40), ms(10), ms(30), ms(20)]).expect("samples");
        assert_eq!(s.runs, 4);
        assert!((s.median_s - 0.025).abs() < 1e-12, "{s:?}");
        assert_eq!((s.min_s, s.max_s), (0.010, 0.040));
        assert_eq!(s.samples_s, [0.040, 0.010, 0.030, 0.020], "run order is kept");

        let ten: Vec<_> = (1..=10).map(|i| ms(i * 10)).collect();
        let s = Summary::of(&ten).expect("samples");
        assert!((s.p10_s - 0.019).abs() < 1e-12, "{s:?}");
        assert!((s.p90_s - 0.091).abs() < 1e-12, "{s:?}");
        assert!((s.median_s - 0.055).abs() < 1e-12, "{s:?}");

        assert_eq!(Summary::of(&[]), None);
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(0.0152), "15.2 ms");
        assert_eq!(human(1.2345), "1.234 s");
    }
}
