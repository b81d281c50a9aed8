//! The markdown report: medians over repetitions, ratios to direct, to
//! iptables and (when it ran) to nftables, and the issue's goals checked
//! against them. Pure rendering.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::change::ChangeResult;
use crate::datapath::{DatapathArgs, Failure, Mode, RunResult, Variant};
use crate::stats::median;

/// Facts about the machine and the run, printed above the tables.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub command: String,
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub nproc: usize,
    pub settings: String,
    pub wall: Duration,
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Context {
    pub fn gather(args: &DatapathArgs, wall: Duration) -> Context {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        Context {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: command_output("uname", &["-r"]),
            cpu,
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            settings: format!(
                "{} repetitions; load runs: {} s warm-up + {} s measured, {} connections in flight; \
                 latency runs: {} s warm-up + {} s measured, {} in flight; client and server {} worker threads each",
                args.reps,
                args.warmup,
                args.duration,
                args.concurrency,
                args.warmup,
                args.latency_duration,
                args.latency_concurrency,
                args.workers
            ),
            wall,
        }
    }
}

/// Median figures of one (variant, N) over its repetitions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_busy: f64,
    pub cpu_user: f64,
    pub failures: u64,
    pub setup_seconds: f64,
    pub reps: usize,
}

pub fn summarize(results: &[RunResult]) -> BTreeMap<(u32, Variant, Mode), Summary> {
    let mut groups: BTreeMap<(u32, Variant, Mode), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        groups
            .entry((r.services, r.variant, r.mode))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|(key, runs)| {
            let m = |f: &dyn Fn(&RunResult) -> f64| {
                median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
            };
            let summary = Summary {
                per_second: m(&|r| r.client.per_second),
                p50_us: m(&|r| f64::from(r.client.p50_us)),
                p99_us: m(&|r| f64::from(r.client.p99_us)),
                cpu_busy: m(&|r| r.client.cpu_busy),
                cpu_user: m(&|r| r.client.cpu_user),
                failures: runs
                    .iter()
                    .map(|r| r.client.errors + r.client.timeouts)
                    .sum(),
                setup_seconds: m(&|r| r.setup_seconds),
                reps: runs.len(),
            };
            (key, summary)
        })
        .collect()
}

fn ratio(a: Option<&Summary>, b: Option<&Summary>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b.per_second > 0.0).then(|| a.per_second / b.per_second)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

pub fn markdown(
    results: &[RunResult],
    changes: &[ChangeResult],
    failures: &[Failure],
    ctx: &Context,
) -> String {
    let summaries = summarize(results);
    let mut out = String::new();
    let _ = writeln!(out, "Command: `{}`  ", ctx.command);
    let _ = writeln!(
        out,
        "Date: {}; kernel {}; {} × {}; wall time {:.0} s  ",
        ctx.date,
        ctx.kernel,
        ctx.nproc,
        ctx.cpu,
        ctx.wall.as_secs_f64()
    );
    let _ = writeln!(out, "Settings: {}.\n", ctx.settings);
    // The nftables column only when nftables ran (older reports keep their shape).
    let with_nft = summaries.keys().any(|(_, v, _)| *v == Variant::Nftables);
    let (nft_head, nft_align) = if with_nft {
        (" vs nftables |", "---:|")
    } else {
        ("", "")
    };
    let _ = writeln!(
        out,
        "| N services (×4 endpoints) | variant | conn/s (median) | vs direct | vs iptables |{nft_head} CPU busy (user) | p50 / p99 µs loaded | p50 / p99 µs unloaded | failed conns | setup s |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|{nft_align}---:|---:|---:|---:|---:|"
    );
    let ns: Vec<u32> = summaries
        .keys()
        .map(|(n, _, _)| *n)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for &n in &ns {
        let direct = summaries.get(&(n, Variant::Direct, Mode::Load));
        let ipt = summaries.get(&(n, Variant::Iptables, Mode::Load));
        let nft = summaries.get(&(n, Variant::Nftables, Mode::Load));
        for variant in [
            Variant::Direct,
            Variant::WeirIdle,
            Variant::Weir,
            Variant::WeirTc,
            Variant::Iptables,
            Variant::Nftables,
        ] {
            let Some(s) = summaries.get(&(n, variant, Mode::Load)) else {
                continue;
            };
            let unloaded = summaries.get(&(n, variant, Mode::Latency)).map_or_else(
                || "–".to_owned(),
                |l| format!("{:.0} / {:.0}", l.p50_us, l.p99_us),
            );
            let failures = s.failures
                + summaries
                    .get(&(n, variant, Mode::Latency))
                    .map_or(0, |l| l.failures);
            let vs_nft = if with_nft {
                format!(" {} |", fmt_ratio(ratio(Some(s), nft)))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {n} | {} | {:.0} | {} | {} |{vs_nft} {:.0}% ({:.0}%) | {:.0} / {:.0} | {unloaded} | {failures} | {:.2} |",
                variant.name(),
                s.per_second,
                fmt_ratio(ratio(Some(s), direct)),
                fmt_ratio(ratio(Some(s), ipt)),
                s.cpu_busy * 100.0,
                s.cpu_user * 100.0,
                s.p50_us,
                s.p99_us,
                s.setup_seconds
            );
        }
    }
    if !changes.is_empty() {
        out.push_str("\nService change -> first successful connect to the new VIP:\n\n");
        out.push_str("| N services | variant | changes | p50 ms | max ms | p50 ms until the change call returned | p50 / max ms from the call's return to the connect | how the change is applied |\n|---:|---|---:|---:|---:|---:|---:|---|\n");
        for c in changes {
            let (after_p50, after_max) = c.after_return_ms();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} |",
                c.services,
                c.variant.name(),
                c.samples_ms.len(),
                c.p50_ms(),
                c.max_ms(),
                c.applied_p50_ms(),
                after_p50,
                after_max,
                c.method
            );
        }
    }
    if !failures.is_empty() {
        out.push_str("\nNot measured (failed):\n\n");
        for f in failures {
            let _ = writeln!(
                out,
                "- {} at N={}: {}",
                f.variant.name(),
                f.services,
                f.error.replace('\n', " ")
            );
        }
    }
    out.push_str("\nGoals (issue 3):\n\n");
    for &n in &ns {
        let weir = summaries.get(&(n, Variant::Weir, Mode::Load));
        if let Some(r) = ratio(weir, summaries.get(&(n, Variant::Direct, Mode::Load))) {
            let _ = writeln!(
                out,
                "- N={n}: weir ClusterIP ≥ 0.95× direct: {r:.3}× — {}",
                verdict(r >= 0.95)
            );
        }
        if n >= 10_000
            && let Some(r) = ratio(weir, summaries.get(&(n, Variant::Iptables, Mode::Load)))
        {
            let _ = writeln!(
                out,
                "- N={n}: weir ≥ 3× iptables: {r:.3}× — {}",
                verdict(r >= 3.0)
            );
        }
        if let Some(r) = ratio(weir, summaries.get(&(n, Variant::Nftables, Mode::Load))) {
            let _ = writeln!(
                out,
                "- N={n}: weir vs kube-proxy nftables (no goal in issue 3; for reference): {r:.3}×"
            );
        }
    }
    for c in changes
        .iter()
        .filter(|c| c.variant == Variant::Weir && c.services >= 10_000)
    {
        let _ = writeln!(
            out,
            "- N={}: service change -> datapath p99 ≤ 10 ms: max of {} changes {:.2} ms — {}",
            c.services,
            c.samples_ms.len(),
            c.max_ms(),
            verdict(c.max_ms() <= 10.0)
        );
    }
    out.push_str(
        "- NodePort 64-byte UDP pps ≥ 3× iptables: not measured here (`weir-bench nodeport` measures it).\n",
    );
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientReport;

    fn run(variant: Variant, services: u32, rep: u32, per_second: f64) -> RunResult {
        RunResult {
            variant,
            mode: Mode::Load,
            services,
            rep,
            client: ClientReport {
                per_second,
                p50_us: 100,
                p99_us: 900,
                cpu_busy: 0.97,
                cpu_user: 0.2,
                ..Default::default()
            },
            setup_seconds: 0.5,
            node_conntrack: None,
            load1: None,
        }
    }

    #[test]
    fn medians_ratios_and_goal_verdicts() {
        let results = vec![
            run(Variant::Direct, 10_000, 0, 40_000.0),
            run(Variant::Direct, 10_000, 1, 44_000.0),
            run(Variant::Direct, 10_000, 2, 42_000.0),
            run(Variant::Weir, 10_000, 0, 39_000.0),
            run(Variant::Weir, 10_000, 1, 41_000.0),
            run(Variant::Weir, 10_000, 2, 40_000.0),
            run(Variant::Iptables, 10_000, 0, 13_000.0),
            run(Variant::Iptables, 10_000, 1, 12_000.0),
            run(Variant::Iptables, 10_000, 2, 14_000.0),
        ];
        let s = summarize(&results);
        assert_eq!(
            s[&(10_000, Variant::Direct, Mode::Load)].per_second,
            42_000.0
        );
        assert_eq!(s[&(10_000, Variant::Weir, Mode::Load)].reps, 3);
        let mut with_latency = results.clone();
        with_latency.push(RunResult {
            mode: Mode::Latency,
            ..run(Variant::Weir, 10_000, 0, 5_000.0)
        });
        let md = markdown(&with_latency, &[], &[], &Context::default());
        // 40k/42k = 0.95 (met); 40k/13k = 3.08 (met); latency runs do not enter ratios.
        assert!(
            md.contains(
                "| 10000 | weir | 40000 | 0.95× | 3.08× | 97% (20%) | 100 / 900 | 100 / 900 | 0 | 0.50 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 10000 | iptables | 13000 | 0.31× | 1.00× | 97% (20%) | 100 / 900 | – |"),
            "{md}"
        );
        assert!(
            md.contains("weir ClusterIP ≥ 0.95× direct: 0.952× — met"),
            "{md}"
        );
        assert!(md.contains("weir ≥ 3× iptables: 3.077× — met"), "{md}");
        assert!(md.contains("NodePort 64-byte UDP pps ≥ 3× iptables: not measured here"));

        let slower = vec![
            run(Variant::Direct, 1, 0, 50_000.0),
            run(Variant::Weir, 1, 0, 45_000.0),
        ];
        let failure = Failure {
            variant: Variant::Weir,
            services: 1,
            error: "agent\nstuck".into(),
        };
        let md = markdown(&slower, &[], &[failure], &Context::default());
        assert!(
            md.contains("Not measured (failed):\n\n- weir at N=1: agent stuck\n"),
            "{md}"
        );
        assert!(md.contains("0.900× — **missed**"), "{md}");
        assert!(
            !md.contains("vs nftables"),
            "no nftables column without nftables runs"
        );
    }

    #[test]
    fn nftables_column_and_reference_line_when_it_ran() {
        let results = vec![
            run(Variant::Direct, 10_000, 0, 40_000.0),
            run(Variant::Weir, 10_000, 0, 40_000.0),
            run(Variant::Iptables, 10_000, 0, 10_000.0),
            run(Variant::Nftables, 10_000, 0, 20_000.0),
        ];
        let md = markdown(&results, &[], &[], &Context::default());
        assert!(
            md.contains("| vs direct | vs iptables | vs nftables | CPU busy (user) |"),
            "{md}"
        );
        assert!(
            md.contains("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"),
            "{md}"
        );
        assert!(
            md.contains("| 10000 | weir | 40000 | 1.00× | 4.00× | 2.00× | 97% (20%) |"),
            "{md}"
        );
        assert!(
            md.contains("| 10000 | nftables | 20000 | 0.50× | 2.00× | 1.00× | 97% (20%) |"),
            "{md}"
        );
        // nftables rows come after iptables.
        assert!(md.find("| iptables |") < md.find("| nftables |"));
        assert!(
            md.contains(
                "- N=10000: weir vs kube-proxy nftables (no goal in issue 3; for reference): 2.000×"
            ),
            "{md}"
        );
    }
}
