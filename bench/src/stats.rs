//! Statistics over samples: pure functions, table-tested.

/// The `q`-quantile (0.0..=1.0) of `sorted` by the nearest-rank method, or
/// `None` for no samples. `sorted` must be ascending.
pub fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Median of repetitions (mean of the middle two for an even count), or
/// `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// CPU time counters of `/proc/stat`'s aggregate "cpu" line, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice: time in user space (client, server, everything else).
    pub user: u64,
    pub busy: u64,
    pub total: u64,
}

/// Parses the aggregate `cpu ` line of `/proc/stat`. Idle = idle + iowait;
/// busy = everything else except guest time (already counted in user).
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if fields.len() < 8 {
        return None;
    }
    let total: u64 = fields[..8].iter().sum();
    let idle = fields[3] + fields[4];
    Some(CpuTimes {
        user: fields[0] + fields[1],
        busy: total - idle,
        total,
    })
}

/// Fractions of CPU time (busy, user space) between two samples (0.0..=1.0).
pub fn busy_fraction(before: CpuTimes, after: CpuTimes) -> Option<(f64, f64)> {
    let total = after.total.checked_sub(before.total)?;
    let busy = after.busy.checked_sub(before.busy)?;
    let user = after.user.checked_sub(before.user)?;
    (total > 0).then(|| (busy as f64 / total as f64, user as f64 / total as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let hundred: Vec<u32> = (1..=100).collect();
        let cases: [(&[u32], f64, Option<u32>); 7] = [
            (&[], 0.5, None),
            (&[7], 0.5, Some(7)),
            (&[7], 0.99, Some(7)),
            (&hundred, 0.5, Some(50)),
            (&hundred, 0.99, Some(99)),
            (&hundred, 1.0, Some(100)),
            (&hundred, 0.0, Some(1)),
        ];
        for (samples, q, want) in cases {
            assert_eq!(quantile(samples, q), want, "q={q} n={}", samples.len());
        }
    }

    #[test]
    fn median_of_odd_even_and_nan() {
        let cases: [(&[f64], Option<f64>); 5] = [
            (&[], None),
            (&[3.0], Some(3.0)),
            (&[5.0, 1.0, 3.0], Some(3.0)),
            (&[4.0, 1.0, 3.0, 2.0], Some(2.5)),
            (&[f64::NAN, 2.0], Some(2.0)),
        ];
        for (values, want) in cases {
            assert_eq!(median(values), want, "{values:?}");
        }
    }

    #[test]
    fn proc_stat_busy_fraction() {
        let before = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n");
        let after = parse_proc_stat("cpu  250 0 250 750 150 0 0 0 0 0\n");
        assert_eq!(
            before,
            Some(CpuTimes {
                user: 100,
                busy: 200,
                total: 1000
            })
        );
        assert_eq!(
            after,
            Some(CpuTimes {
                user: 250,
                busy: 500,
                total: 1400
            })
        );
        let fractions = busy_fraction(before.unwrap_or_default(), after.unwrap_or_default());
        assert_eq!(fractions, Some((0.75, 0.375)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 x 4 5 6 7 8\n"), None);
    }
}
