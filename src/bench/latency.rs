//! Registration latencies as the apps report them, summarised.

/// Registration latencies summarised, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Latency {
    /// Median.
    pub(super) p50: u64,
    /// 99th percentile.
    pub(super) p99: u64,
    /// Worst.
    pub(super) max: u64,
}

/// The nearest-rank percentile `p` (0..=100) of sorted, non-empty `sorted`.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of `values`, or `None` if there are none.
pub(super) fn summarize(mut values: Vec<u64>) -> Option<Latency> {
    values.sort_unstable();
    let max = *values.last()?;
    Some(Latency {
        p50: percentile(&values, 50.0),
        p99: percentile(&values, 99.0),
        max,
    })
}

/// The `registration X us` line of `ustrace-demo --report`.
pub(super) fn parse_registration_us(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        line.strip_prefix("registration ")?
            .strip_suffix(" us")?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).rev().collect();
        let l = summarize(values).expect("non-empty");
        assert_eq!((l.p50, l.p99, l.max), (50, 99, 100));
        let one = summarize(vec![7]).expect("non-empty");
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        assert_eq!(percentile(&[1, 2, 3], 99.0), 3);
        assert_eq!(percentile(&[1, 2, 3], 0.0), 1);
        assert!(summarize(Vec::new()).is_none());
    }

    #[test]
    fn registration_latency_is_read_from_the_app_report() {
        let stderr = "1 events 812.0 ns/event\nregistration 345 us\n";
        assert_eq!(parse_registration_us(stderr), Some(345));
        assert_eq!(
            parse_registration_us("ustrace: x runs untraced: no daemon\n"),
            None
        );
    }
}
