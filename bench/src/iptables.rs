//! The kube-proxy baseline: N services × 4 endpoints written as
//! `iptables-legacy-restore` input in the structure kube-proxy's iptables
//! mode (Kubernetes 1.33) produces, so the baseline costs what a real node
//! costs per packet:
//!
//! - filter: `FORWARD`/`OUTPUT`/`INPUT` -> the `KUBE-*` chains, `KUBE-FORWARD`
//!   with the conntrack INVALID drop, the masquerade-mark accept and the
//!   RELATED,ESTABLISHED accept;
//! - nat: `PREROUTING`/`OUTPUT` -> `KUBE-SERVICES` (one rule per VIP:port,
//!   a linear list, then the NodePort catch-all) -> `KUBE-SVC-*` (masquerade
//!   mark for sources outside the cluster CIDR, then one
//!   `-m statistic --mode random --probability 1/(n-i)` jump per endpoint)
//!   -> `KUBE-SEP-*` (hairpin masquerade mark, DNAT);
//!   `POSTROUTING` -> `KUBE-POSTROUTING` (MASQUERADE marked packets).
//!
//! Like kube-proxy, comments are dropped in "large cluster mode" (more than
//! 1000 endpoints), which makes restores of big rule sets cheaper.

use std::fmt::Write;

use crate::plan::{self, ENDPOINTS_PER_SERVICE, SERVICE_PORT, TARGET_PORT};

/// kube-proxy's `largeClusterEndpointsThreshold`.
const LARGE_CLUSTER_ENDPOINTS: u32 = 1000;

/// A chain name `<prefix><16 chars>` derived from `seed`, like kube-proxy's
/// base32 of a SHA-256 (the hash function does not matter, the shape does).
pub(crate) fn chain_name(prefix: &str, seed: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    // Two FNV-1a 64 passes with different offsets give 80+ bits for 16 chars.
    let fnv = |offset: u64| {
        seed.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let mut name = String::with_capacity(prefix.len() + 16);
    name.push_str(prefix);
    for i in 0..16 {
        let bits = if i < 8 {
            a >> (i * 5)
        } else {
            b >> ((i - 8) * 5)
        };
        name.push(char::from(ALPHABET[(bits & 31) as usize]));
    }
    name
}

fn comment(comments: bool, text: &str) -> String {
    if comments {
        format!(" -m comment --comment \"{text}\"")
    } else {
        String::new()
    }
}

fn uses_comments(services: u32) -> bool {
    services * ENDPOINTS_PER_SERVICE <= LARGE_CLUSTER_ENDPOINTS
}

/// The catch-all that must stay last in `KUBE-SERVICES`.
fn nodeports_jump(comments: bool) -> String {
    format!(
        "-A KUBE-SERVICES{} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
        comment(
            comments,
            "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
        )
    )
}

/// The nat-table pieces of service `i`.
struct ServiceChains {
    /// `:KUBE-SVC-..` and `:KUBE-SEP-..` lines.
    declarations: String,
    /// Its `KUBE-SERVICES` rule.
    jump: String,
    /// The rules of its own chains.
    rules: String,
}

fn service_chains(i: u32, comments: bool) -> ServiceChains {
    service_chains_proto(i, comments, "tcp")
}

fn service_chains_proto(i: u32, comments: bool, p: &str) -> ServiceChains {
    let comment = |text: &str| comment(comments, text);
    let name = format!("bench/svc-{i}:http");
    let vip = plan::vip(i);
    let cluster_cidr = plan::CLUSTER_CIDR;
    let svc_chain = chain_name("KUBE-SVC-", &format!("{name}{p}"));
    let mut declarations = format!(":{svc_chain} - [0:0]\n");
    let jump = format!(
        "-A KUBE-SERVICES{} -m {p} -p {p} -d {vip}/32 --dport {SERVICE_PORT} -j {svc_chain}\n",
        comment(&format!("{name} cluster IP"))
    );
    let mut rules = format!(
        "-A {svc_chain}{} -m {p} -p {p} -d {vip}/32 --dport {SERVICE_PORT} ! -s {cluster_cidr} -j KUBE-MARK-MASQ\n",
        comment(&format!("{name} cluster IP"))
    );
    for j in 0..ENDPOINTS_PER_SERVICE {
        let ep = plan::backend(i, j);
        let sep_chain = chain_name("KUBE-SEP-", &format!("{name}{p}{ep}:{TARGET_PORT}"));
        let _ = writeln!(declarations, ":{sep_chain} - [0:0]");
        let remaining = ENDPOINTS_PER_SERVICE - j;
        let statistic = if remaining > 1 {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / f64::from(remaining)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rules,
            "-A {svc_chain}{}{statistic} -j {sep_chain}",
            comment(&format!("{name} -> {ep}:{TARGET_PORT}"))
        );
        let _ = writeln!(
            rules,
            "-A {sep_chain}{} -s {ep}/32 -j KUBE-MARK-MASQ",
            comment(&name)
        );
        let _ = writeln!(
            rules,
            "-A {sep_chain}{} -m {p} -p {p} -j DNAT --to-destination {ep}:{TARGET_PORT}",
            comment(&name)
        );
    }
    ServiceChains {
        declarations,
        jump,
        rules,
    }
}

/// `iptables-legacy-restore --noflush` input that adds service `total - 1`
/// to a node holding services `0..total-1`, the way kube-proxy's partial
/// sync does (MinimizeIPTablesRestore, GA in 1.28): `KUBE-SERVICES` is
/// rewritten whole, only the new service's own chains are written.
pub fn restore_add_service(total: u32) -> String {
    let comments = uses_comments(total);
    let new = service_chains(total - 1, comments);
    let mut out = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    out.push_str(&new.declarations);
    for i in 0..total {
        out.push_str(&service_chains(i, comments).jump);
    }
    out.push_str(&nodeports_jump(comments));
    out.push_str(&new.rules);
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-legacy-restore` input for `services` services (flushes and
/// rewrites the filter and nat tables).
pub fn restore_input(services: u32) -> String {
    restore_input_with(services, false)
}

/// [`restore_input`] plus one UDP NodePort service (service number
/// [`plan::NODEPORT_SERVICE`], node port [`plan::NODE_PORT`], externalTrafficPolicy
/// Cluster) as kube-proxy writes it: its ClusterIP jump in `KUBE-SERVICES`,
/// `KUBE-NODEPORTS` -> `KUBE-EXT-*` (masquerade mark, then the service chain)
/// -> `KUBE-SVC-*` -> `KUBE-SEP-*` DNAT.
pub fn restore_input_nodeport(services: u32) -> String {
    restore_input_with(services, true)
}

/// The nat-table pieces of the UDP NodePort service.
fn nodeport_chains(comments: bool) -> ServiceChains {
    let i = plan::NODEPORT_SERVICE;
    let mut chains = service_chains_proto(i, comments, "udp");
    let name = format!("bench/svc-{i}:http");
    let svc_chain = chain_name("KUBE-SVC-", &format!("{name}udp"));
    let ext_chain = chain_name("KUBE-EXT-", &format!("{name}udp"));
    let _ = writeln!(chains.declarations, ":{ext_chain} - [0:0]");
    let port = plan::NODE_PORT;
    let _ = writeln!(
        chains.rules,
        "-A KUBE-NODEPORTS{} -m udp -p udp --dport {port} -j {ext_chain}",
        comment(comments, &name)
    );
    let _ = writeln!(
        chains.rules,
        "-A {ext_chain}{} -j KUBE-MARK-MASQ",
        comment(
            comments,
            &format!("masquerade traffic for {name} external destinations")
        )
    );
    let _ = writeln!(chains.rules, "-A {ext_chain} -j {svc_chain}");
    chains
}

fn restore_input_with(services: u32, nodeport: bool) -> String {
    let comments = uses_comments(services);
    let comment = |text: &str| comment(comments, text);
    // Writing to a String cannot fail; ignore the fmt::Result.
    let mut out = String::with_capacity(services as usize * 900 + 4096);

    out.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for chain in [
        "KUBE-PROXY-FIREWALL",
        "KUBE-NODEPORTS",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-SERVICES",
        "KUBE-FORWARD",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let new = "-m conntrack --ctstate NEW";
    let _ = writeln!(
        out,
        "-A INPUT {new}{} -j KUBE-PROXY-FIREWALL",
        comment("kubernetes load balancer firewall")
    );
    let _ = writeln!(
        out,
        "-A INPUT{} -j KUBE-NODEPORTS",
        comment("kubernetes health check service ports")
    );
    let _ = writeln!(
        out,
        "-A INPUT {new}{} -j KUBE-EXTERNAL-SERVICES",
        comment("kubernetes externally-visible service portals")
    );
    let _ = writeln!(
        out,
        "-A FORWARD {new}{} -j KUBE-PROXY-FIREWALL",
        comment("kubernetes load balancer firewall")
    );
    let _ = writeln!(
        out,
        "-A FORWARD{} -j KUBE-FORWARD",
        comment("kubernetes forwarding rules")
    );
    let _ = writeln!(
        out,
        "-A FORWARD {new}{} -j KUBE-SERVICES",
        comment("kubernetes service portals")
    );
    let _ = writeln!(
        out,
        "-A FORWARD {new}{} -j KUBE-EXTERNAL-SERVICES",
        comment("kubernetes externally-visible service portals")
    );
    let _ = writeln!(
        out,
        "-A OUTPUT {new}{} -j KUBE-PROXY-FIREWALL",
        comment("kubernetes load balancer firewall")
    );
    let _ = writeln!(
        out,
        "-A OUTPUT {new}{} -j KUBE-SERVICES",
        comment("kubernetes service portals")
    );
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    );
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD{} -m mark --mark 0x4000/0x4000 -j ACCEPT",
        comment("kubernetes forwarding rules")
    );
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        comment("kubernetes forwarding conntrack rule")
    );
    out.push_str("COMMIT\n");

    out.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let mut rules = String::with_capacity(services as usize * 800);
    let mut service_jumps = String::with_capacity(services as usize * 100);
    let nodeport = nodeport.then(|| nodeport_chains(comments));
    for chains in (0..services)
        .map(|i| service_chains(i, comments))
        .chain(nodeport)
    {
        out.push_str(&chains.declarations);
        service_jumps.push_str(&chains.jump);
        rules.push_str(&chains.rules);
    }
    let _ = writeln!(
        out,
        "-A PREROUTING{} -j KUBE-SERVICES",
        comment("kubernetes service portals")
    );
    let _ = writeln!(
        out,
        "-A OUTPUT{} -j KUBE-SERVICES",
        comment("kubernetes service portals")
    );
    let _ = writeln!(
        out,
        "-A POSTROUTING{} -j KUBE-POSTROUTING",
        comment("kubernetes postrouting rules")
    );
    out.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    out.push_str("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n");
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING{} -j MASQUERADE --random-fully",
        comment("kubernetes service traffic requiring SNAT")
    );
    out.push_str("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n");
    out.push_str(&service_jumps);
    out.push_str(&nodeports_jump(comments));
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_matching<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn one_service_has_kube_proxy_structure() {
        let text = restore_input(1);
        let svc = chain_name("KUBE-SVC-", "bench/svc-0:httptcp");
        // One VIP jump, before the NodePort catch-all which stays last.
        let jumps = lines_matching(&text, "-A KUBE-SERVICES");
        assert_eq!(jumps.len(), 2, "{jumps:?}");
        assert!(jumps[0].contains("-d 10.96.128.0/32 --dport 80") && jumps[0].ends_with(&svc));
        assert!(jumps[1].contains("--dst-type LOCAL -j KUBE-NODEPORTS"));
        // Masquerade mark for outside sources, then 1/4, 1/3, 1/2, rest.
        let svc_rules = lines_matching(&text, &format!("-A {svc}"));
        assert_eq!(svc_rules.len(), 5);
        assert!(svc_rules[0].contains("! -s 10.240.0.0/12 -j KUBE-MARK-MASQ"));
        for (rule, p) in
            svc_rules[1..4]
                .iter()
                .zip(["0.2500000000", "0.3333333333", "0.5000000000"])
        {
            assert!(
                rule.contains(&format!("--probability {p} -j KUBE-SEP-")),
                "{rule}"
            );
        }
        assert!(!svc_rules[4].contains("statistic") && svc_rules[4].contains("-j KUBE-SEP-"));
        // Each endpoint: hairpin mark + DNAT to its own address.
        let dnats = lines_matching(&text, "-j DNAT");
        let want = [
            "10.245.0.1:8080",
            "10.245.0.2:8080",
            "10.245.0.3:8080",
            "10.245.0.4:8080",
        ];
        assert_eq!(dnats.len(), 4);
        for (rule, ep) in dnats.iter().zip(want) {
            assert!(rule.ends_with(&format!("--to-destination {ep}")), "{rule}");
        }
        assert_eq!(
            lines_matching(&text, "-j MASQUERADE --random-fully").len(),
            1
        );
        assert_eq!(text.matches("COMMIT").count(), 2);
        assert!(text.contains("--comment"), "small clusters keep comments");
    }

    #[test]
    fn udp_node_port_has_kube_proxy_structure() {
        let text = restore_input_nodeport(2);
        let name = format!("bench/svc-{}:http", plan::NODEPORT_SERVICE);
        let svc = chain_name("KUBE-SVC-", &format!("{name}udp"));
        let ext = chain_name("KUBE-EXT-", &format!("{name}udp"));
        // Its ClusterIP jump sits with the others, before the catch-all.
        let jumps = lines_matching(&text, "-A KUBE-SERVICES");
        assert_eq!(jumps.len(), 4, "{jumps:?}");
        assert!(jumps[2].contains("-m udp -p udp -d 10.96.190.127/32 --dport 80"));
        assert!(jumps[3].contains("KUBE-NODEPORTS"));
        assert_eq!(
            lines_matching(&text, "-A KUBE-NODEPORTS"),
            vec![format!(
                "-A KUBE-NODEPORTS -m comment --comment \"{name}\" -m udp -p udp --dport 30080 -j {ext}"
            )]
        );
        let ext_rules = lines_matching(&text, &format!("-A {ext}"));
        assert!(ext_rules[0].ends_with("-j KUBE-MARK-MASQ"), "{ext_rules:?}");
        assert!(
            ext_rules[1].ends_with(&format!("-j {svc}")),
            "{ext_rules:?}"
        );
        assert_eq!(text.matches(&format!(":{ext} - [0:0]")).count(), 1);
        let udp_dnats = lines_matching(&text, "-m udp -p udp -j DNAT");
        assert_eq!(udp_dnats.len(), 4);
        assert!(udp_dnats[0].ends_with(&format!(
            "--to-destination {}:8080",
            plan::backend(plan::NODEPORT_SERVICE, 0)
        )));
        assert_eq!(lines_matching(&text, "-m tcp -p tcp -j DNAT").len(), 8);
    }

    #[test]
    fn adding_a_service_rewrites_kube_services_and_only_the_new_chains() {
        let text = restore_add_service(3);
        let jumps = lines_matching(&text, "-A KUBE-SERVICES");
        assert_eq!(jumps.len(), 4, "3 VIPs + the NodePort catch-all");
        assert!(jumps[3].contains("KUBE-NODEPORTS"));
        assert_eq!(
            lines_matching(&text, "-j DNAT").len(),
            4,
            "only the new service's endpoints"
        );
        assert!(lines_matching(&text, "-j DNAT")[0].contains("10.245.0.9:8080"));
        assert!(text.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n") && text.ends_with("COMMIT\n"));
        // Same rule text as a full restore of 3 services (so the result is identical).
        let full = restore_input(3);
        for line in text.lines().filter(|l| l.starts_with("-A")) {
            assert!(full.lines().any(|f| f == line), "{line}");
        }
    }

    #[test]
    fn large_clusters_drop_comments_and_chains_are_unique() {
        let text = restore_input(1000);
        assert!(!text.contains("--comment"));
        let declared: Vec<&str> = text.lines().filter(|l| l.starts_with(":KUBE-S")).collect();
        let mut unique = declared.clone();
        unique.sort_unstable();
        unique.dedup();
        // KUBE-SERVICES twice (filter, nat) + 1000 SVC + 4000 SEP.
        assert_eq!(declared.len(), 2 + 5000);
        assert_eq!(unique.len(), 1 + 5000);
        assert_eq!(lines_matching(&text, "-j DNAT").len(), 4000);
    }
}
