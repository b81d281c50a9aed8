//! etcd's own view of the disk: its Prometheus `/metrics` histograms of WAL
//! fsync and backend commit durations, scraped before and after the write
//! phase. The difference of the two scrapes is what the write phase cost
//! etcd's disk, so the report can put weir's write latency next to it.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The histograms read (etcd 3.4 names).
pub const WAL_FSYNC: &str = "etcd_disk_wal_fsync_duration_seconds";
pub const BACKEND_COMMIT: &str = "etcd_disk_backend_commit_duration_seconds";

/// A cumulative Prometheus histogram: upper bound (seconds) -> count of
/// observations at or below it, plus the sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// What the report shows for one histogram over one phase.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct DiskSummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Parses the histogram `name` out of a Prometheus text exposition.
/// `None` when the text has no bucket of that name.
pub fn parse_histogram(text: &str, name: &str) -> Option<Histogram> {
    let bucket = format!("{name}_bucket{{");
    let sum = format!("{name}_sum");
    let count = format!("{name}_count");
    let mut h = Histogram::default();
    let mut buckets = BTreeMap::new();
    for line in text.lines() {
        let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(rest) = line.strip_prefix(&bucket) {
            let le = rest
                .split("le=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok()?
            };
            // Bounds as ordered keys: total order on the bit pattern of a
            // positive f64 matches the numeric order.
            buckets.insert(bound.to_bits(), value(line)?);
        } else if line.starts_with(&sum) && line[sum.len()..].starts_with([' ', '{']) {
            h.sum = value(line)?;
        } else if line.starts_with(&count) && line[count.len()..].starts_with([' ', '{']) {
            h.count = value(line)?;
        }
    }
    if buckets.is_empty() {
        return None;
    }
    h.buckets = buckets
        .into_iter()
        .map(|(b, c)| (f64::from_bits(b), c))
        .collect();
    Some(h)
}

/// `after - before`, bucket by bucket (the observations made in between).
pub fn delta(before: &Histogram, after: &Histogram) -> Histogram {
    let base = |le: f64| {
        before
            .buckets
            .iter()
            .find(|(b, _)| *b == le)
            .map_or(0.0, |(_, c)| *c)
    };
    Histogram {
        buckets: after
            .buckets
            .iter()
            .map(|&(le, c)| (le, (c - base(le)).max(0.0)))
            .collect(),
        sum: (after.sum - before.sum).max(0.0),
        count: (after.count - before.count).max(0.0),
    }
}

/// The `q`-quantile in seconds, interpolated linearly inside the bucket it
/// falls in (Prometheus' `histogram_quantile`); a quantile in the +Inf
/// bucket is reported as the largest finite bound.
pub fn quantile(h: &Histogram, q: f64) -> f64 {
    let Some(&(_, total)) = h.buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in &h.buckets {
        if c >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let in_bucket = c - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, c);
    }
    prev.0
}

pub fn summarize(h: &Histogram) -> DiskSummary {
    let ms = |s: f64| s * 1000.0;
    DiskSummary {
        count: h.count as u64,
        mean_ms: if h.count > 0.0 {
            ms(h.sum / h.count)
        } else {
            0.0
        },
        p50_ms: ms(quantile(h, 0.50)),
        p99_ms: ms(quantile(h, 0.99)),
    }
}

/// One scrape of both histograms.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
}

/// GETs `http://HOST:PORT/metrics` from etcd's client URL (HTTP/1.0, so the
/// body ends with the connection and is never chunked).
pub async fn scrape(client_url: &str) -> Result<Scrape> {
    let hostport = client_url
        .strip_prefix("http://")
        .with_context(|| format!("etcd URL {client_url:?} is not http://HOST:PORT"))?;
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .with_context(|| format!("cannot connect to etcd at {hostport}"))?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("etcd /metrics answered without an HTTP header");
    };
    let status = head.split(' ').nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        bail!(
            "etcd /metrics answered {:?}",
            head.lines().next().unwrap_or("")
        );
    }
    let get =
        |name| parse_histogram(body, name).with_context(|| format!("etcd /metrics has no {name}"));
    Ok(Scrape {
        wal_fsync: get(WAL_FSYNC)?,
        backend_commit: get(BACKEND_COMMIT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 0
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.016\"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.032\"} 90
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.064\"} 100
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 100
etcd_disk_wal_fsync_duration_seconds_sum 2.5
etcd_disk_wal_fsync_duration_seconds_count 100
etcd_disk_wal_fsync_duration_seconds_other 7
";

    #[test]
    fn parses_buckets_sum_and_count() {
        let h = parse_histogram(TEXT, WAL_FSYNC).unwrap();
        assert_eq!(h.buckets.len(), 5);
        assert_eq!(h.buckets[1], (0.016, 10.0));
        assert!(h.buckets[4].0.is_infinite());
        assert_eq!((h.sum, h.count), (2.5, 100.0));
        assert_eq!(parse_histogram(TEXT, BACKEND_COMMIT), None);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let h = parse_histogram(TEXT, WAL_FSYNC).unwrap();
        // rank 50 lies 40/80 into (0.016, 0.032].
        assert!((quantile(&h, 0.5) - 0.024).abs() < 1e-9);
        // rank 99 lies 9/10 into (0.032, 0.064].
        assert!((quantile(&h, 0.99) - 0.0608).abs() < 1e-9);
        let s = summarize(&h);
        assert_eq!(s.count, 100);
        assert!((s.mean_ms - 25.0).abs() < 1e-9);
        assert_eq!(quantile(&Histogram::default(), 0.5), 0.0);
    }

    #[test]
    fn delta_keeps_only_the_phase() {
        let after = parse_histogram(TEXT, WAL_FSYNC).unwrap();
        let before = Histogram {
            buckets: vec![(0.016, 10.0), (0.032, 10.0), (f64::INFINITY, 10.0)],
            sum: 0.1,
            count: 10.0,
        };
        let d = delta(&before, &after);
        assert_eq!(d.count, 90.0);
        assert_eq!(d.buckets[1], (0.016, 0.0));
        assert_eq!(d.buckets[2], (0.032, 80.0));
        // Every phase observation is above 16 ms now.
        assert!(quantile(&d, 0.01) > 0.016);
    }

    #[test]
    fn a_quantile_in_the_inf_bucket_is_the_largest_bound() {
        let h = Histogram {
            buckets: vec![(0.5, 1.0), (f64::INFINITY, 10.0)],
            sum: 50.0,
            count: 10.0,
        };
        assert_eq!(quantile(&h, 0.99), 0.5);
    }
}
