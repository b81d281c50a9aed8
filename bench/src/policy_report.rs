//! Pure parts of `weir-bench policy`: reading netprobe's output, turning
//! reachability transitions into change latencies, and the markdown report.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// `netprobe load` output: `ok N fail M secs S`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadRun {
    pub ok: u64,
    pub fail: u64,
    pub secs: f64,
}

impl LoadRun {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }
}

pub fn parse_load(out: &str) -> Option<LoadRun> {
    let words: Vec<&str> = out.split_whitespace().collect();
    match words.as_slice() {
        ["ok", ok, "fail", fail, "secs", secs] => Some(LoadRun {
            ok: ok.parse().ok()?,
            fail: fail.parse().ok()?,
            secs: secs.parse().ok()?,
        }),
        _ => None,
    }
}

/// One line of `netprobe watch`: the attempt's start (ns since the epoch)
/// and whether it connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub at_ns: i64,
    pub ok: bool,
}

/// Parses `netprobe watch` output (transitions, then `attempts N`).
pub fn parse_watch(out: &str) -> (Vec<Transition>, u64) {
    let mut transitions = Vec::new();
    let mut attempts = 0;
    for line in out.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("attempts"), Some(n)) => attempts = n.parse().unwrap_or(0),
            (Some(t), Some(state @ ("ok" | "fail"))) => {
                if let Ok(at_ns) = t.parse() {
                    transitions.push(Transition {
                        at_ns,
                        ok: state == "ok",
                    });
                }
            }
            _ => {}
        }
    }
    (transitions, attempts)
}

/// A policy change: when the API write started (ns since the epoch) and
/// whether it should make the watched target reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub at_ns: i64,
    pub opens: bool,
}

/// For each change, the milliseconds from its API write to the start of the
/// first connection attempt that saw the new state, provided the state then
/// held until the next change; `None` when it never switched (or flapped).
pub fn change_latencies(changes: &[Change], transitions: &[Transition]) -> Vec<Option<f64>> {
    changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let end = changes.get(i + 1).map_or(i64::MAX, |n| n.at_ns);
            let in_window: Vec<&Transition> = transitions
                .iter()
                .filter(|t| t.at_ns >= c.at_ns && t.at_ns < end)
                .collect();
            let first = in_window.iter().position(|t| t.ok == c.opens)?;
            // After the switch, nothing may flip back before the next change.
            if in_window[first + 1..].iter().any(|t| t.ok != c.opens) {
                return None;
            }
            Some((in_window[first].at_ns - c.at_ns) as f64 / 1e6)
        })
        .collect()
}

/// The q-quantile (nearest rank) of `v`.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PolicyBench {
    pub command: String,
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub nproc: usize,
    pub policies: u32,
    /// Load runs before any policy exists: (to the server that will be
    /// selected, to the one that will not).
    pub before: Vec<(LoadRun, LoadRun)>,
    /// Load runs with the policies in force: (selected server, unselected).
    pub with_policies: Vec<(LoadRun, LoadRun)>,
    /// Whether a probe showed the policies enforced (port 81 denied).
    pub enforced: bool,
    pub change_latencies_ms: Vec<Option<f64>>,
    pub load_settings: String,
    pub change_settings: String,
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5).unwrap_or(f64::NAN)
}

impl PolicyBench {
    fn rates(runs: &[(LoadRun, LoadRun)], selected: bool) -> Vec<f64> {
        runs.iter()
            .map(|(a, b)| if selected { a.rate() } else { b.rate() })
            .collect()
    }

    /// (selected median, unselected median, ratio).
    pub fn ratio(runs: &[(LoadRun, LoadRun)]) -> (f64, f64, f64) {
        let sel = median(&Self::rates(runs, true));
        let none = median(&Self::rates(runs, false));
        (sel, none, sel / none)
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "## NetworkPolicy: connection rate and change latency\n");
        let _ = writeln!(
            o,
            "`{}` on {} ({} cores, {}), kernel {}.\n",
            self.command, self.date, self.nproc, self.cpu, self.kernel
        );
        let _ = writeln!(o, "Load: {}\n", self.load_settings);
        let _ = writeln!(
            o,
            "| phase | to the selected server (conn/s, median) | to the unselected server | ratio |"
        );
        let _ = writeln!(o, "|---|---|---|---|");
        for (name, runs) in [
            ("no policy in the cluster (control)", &self.before),
            (
                &*format!("{} policies selecting one server", self.policies),
                &self.with_policies,
            ),
        ] {
            let (sel, none, ratio) = Self::ratio(runs);
            let fails: u64 = runs.iter().map(|(a, b)| a.fail + b.fail).sum();
            let _ = writeln!(
                o,
                "| {name} | {sel:.0} | {none:.0} | {ratio:.3}x ({} runs each, {fails} failed connections) |",
                runs.len()
            );
        }
        let (_, _, ratio) = Self::ratio(&self.with_policies);
        let _ = writeln!(
            o,
            "\nGoal ≥ 0.95x: {} (policies enforced during the runs: {}).\n",
            if ratio >= 0.95 { "met" } else { "NOT met" },
            if self.enforced {
                "yes, a probe to the unallowed port timed out"
            } else {
                "NO: the unallowed port answered, the ratio does not measure enforcement"
            }
        );
        let got: Vec<f64> = self.change_latencies_ms.iter().flatten().copied().collect();
        let missed = self.change_latencies_ms.len() - got.len();
        let _ = writeln!(o, "Change latency: {}\n", self.change_settings);
        match (quantile(&got, 0.5), quantile(&got, 0.99)) {
            (Some(p50), Some(p99)) => {
                let _ = writeln!(
                    o,
                    "| changes | took effect | p50 | p99 | max |\n|---|---|---|---|---|\n| {} | {} | {p50:.1} ms | {p99:.1} ms | {:.1} ms |\n",
                    self.change_latencies_ms.len(),
                    got.len(),
                    got.iter().copied().fold(f64::NAN, f64::max)
                );
                let _ = writeln!(
                    o,
                    "Goal p99 ≤ 100 ms: {}{}.",
                    if p99 <= 100.0 && missed == 0 {
                        "met"
                    } else {
                        "NOT met"
                    },
                    if missed > 0 {
                        format!(" ({missed} changes never took effect within their window)")
                    } else {
                        String::new()
                    }
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    "No change took effect within its window ({missed} changes): the datapath did not enforce them."
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netprobe_output() {
        assert_eq!(
            parse_load("ok 1000 fail 2 secs 2.000\n"),
            Some(LoadRun {
                ok: 1000,
                fail: 2,
                secs: 2.0
            })
        );
        assert_eq!(parse_load("garbage"), None);
        let (t, n) = parse_watch("100 ok\n250 fail\nnoise\nattempts 42\n");
        assert_eq!(
            t,
            vec![
                Transition {
                    at_ns: 100,
                    ok: true
                },
                Transition {
                    at_ns: 250,
                    ok: false
                }
            ]
        );
        assert_eq!(n, 42);
    }

    #[test]
    fn latencies_from_transitions() {
        let ms = 1_000_000;
        let changes = [
            Change {
                at_ns: 1000 * ms,
                opens: true,
            },
            Change {
                at_ns: 2000 * ms,
                opens: false,
            },
            Change {
                at_ns: 3000 * ms,
                opens: true,
            },
            Change {
                at_ns: 4000 * ms,
                opens: false,
            },
        ];
        let t = |at: i64, ok| Transition { at_ns: at * ms, ok };
        let transitions = [
            t(0, false),
            t(1012, true),  // opened 12 ms after the first change
            t(2030, false), // closed 30 ms after the second
            t(3005, true),
            t(3100, false), // flapped: the third change does not count
                            // the fourth never took effect (no transition to closed after 4000)
        ];
        let got = change_latencies(&changes, &transitions);
        assert_eq!(got, vec![Some(12.0), Some(30.0), None, None]);
    }

    #[test]
    fn quantiles_and_ratios() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
        let run = |ok| LoadRun {
            ok,
            fail: 0,
            secs: 1.0,
        };
        let (sel, none, ratio) = PolicyBench::ratio(&[(run(90), run(100)), (run(95), run(100))]);
        assert_eq!((sel, none), (90.0, 100.0));
        assert!((ratio - 0.9).abs() < 1e-9);
        let bench = PolicyBench {
            policies: 1000,
            with_policies: vec![(run(96), run(100))],
            before: vec![(run(100), run(100))],
            enforced: true,
            change_latencies_ms: vec![Some(10.0), Some(20.0), None],
            ..Default::default()
        };
        let md = bench.render();
        assert!(md.contains("0.960x"), "{md}");
        assert!(md.contains("Goal ≥ 0.95x: met"), "{md}");
        assert!(md.contains("1 changes never took effect"), "{md}");
    }
}
