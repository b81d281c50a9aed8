//! The kube-proxy **nftables-mode** baseline: N services × 4 endpoints written
//! as `nft -f` input in the structure kube-proxy's nftables proxier
//! (`pkg/proxy/nftables/proxier.go`, GA in Kubernetes 1.33) produces, in the
//! command form its knftables transactions use (one `add`/`flush` per object,
//! the whole sync one transaction):
//!
//! - `table ip kube-proxy` with the base chains `filter-{prerouting,input,forward,output}`
//!   (priority dstnat - 10 = -110), `filter-output-post-dnat` (dstnat + 10),
//!   `nat-prerouting`/`nat-output` (dstnat) and `nat-postrouting` (srcnat);
//! - `services`: `ip daddr . meta l4proto . th dport vmap @service-ips` — one hash
//!   lookup whatever N is (where iptables walks `KUBE-SERVICES` linearly) — then
//!   `ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports`;
//! - per service `service-<HASH>-<ns>/<name>/<proto>/<port>`: the masquerade mark for
//!   sources outside the cluster CIDR, then `numgen random mod N vmap { i : goto endpoint-.. }`;
//! - per endpoint `endpoint-<HASH>-<ns>/<name>/<proto>/<port>__<ip>/<port>`: hairpin
//!   mark, `meta l4proto tcp dnat to ip:port`;
//! - `mark-for-masquerade`, `masquerading` (`masquerade fully-random` of marked
//!   packets), the filter-side checks (`firewall-check`, `service-endpoints-check`,
//!   `nodeport-endpoints-check`, `cluster-ips-check` with the `cluster-ips` set)
//!   that run on every new connection;
//! - NodePort (externalTrafficPolicy Cluster): `service-nodeports` element
//!   `udp . PORT : goto external-..`, whose chain marks for masquerade and goes to
//!   the service chain. `nodeport-ips` holds the node IP: nftables mode's default
//!   `--nodeport-addresses` is the node's primary IP.
//!
//! Public functions (the NodePort benchmark, `nodeport.rs`, uses `ruleset_nodeport`):
//!
//! ```text
//! pub fn ruleset_nodeport(services: u32) -> String  // ruleset(services) + one UDP NodePort service
//!                                                   // (plan::NODEPORT_SERVICE, node port plan::NODE_PORT)
//! pub fn ruleset(services: u32) -> String           // full first sync: N TCP ClusterIP services
//! pub fn add_service(total: u32) -> String          // partial sync adding service total-1
//! pub fn load(netns: &str, input: &str) -> anyhow::Result<f64>  // `nft -f -` in netns; seconds
//! pub struct Table(netns) // deletes `table ip kube-proxy` in netns on drop
//! ```
//!
//! Chain-name hashes are 8 base32 characters like kube-proxy's (its are of a
//! SHA-256; the hash function does not matter, the shape does).

use std::fmt::Write;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::plan::{self, ENDPOINTS_PER_SERVICE, SERVICE_PORT, TARGET_PORT};

/// The table every kube-proxy object lives in.
pub const TABLE: &str = "ip kube-proxy";
/// kube-proxy's default masquerade bit 14.
const MASQ_MARK: &str = "0x4000";

/// `(name, type, hook, priority)` of kube-proxy's base chains. The filter
/// chains run at dstnat - 10 (before DNAT, so they see the service address)
/// and dstnat + 10: written as numbers (dstnat is -100) because nft 1.0.6
/// (Debian 12) accepts the name `dstnat` only on the prerouting hook.
const BASE_CHAINS: [(&str, &str, &str, &str); 8] = [
    ("filter-prerouting", "filter", "prerouting", "-110"),
    ("filter-input", "filter", "input", "-110"),
    ("filter-forward", "filter", "forward", "-110"),
    ("filter-output", "filter", "output", "-110"),
    ("filter-output-post-dnat", "filter", "output", "-90"),
    ("nat-prerouting", "nat", "prerouting", "dstnat"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "srcnat"),
];

/// `(destination chain, source base chain, match)` of the jumps from the base chains.
const JUMPS: [(&str, &str, &str); 11] = [
    ("nodeport-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-forward", "ct state new "),
    ("service-endpoints-check", "filter-output", "ct state new "),
    ("firewall-check", "filter-prerouting", "ct state new "),
    ("firewall-check", "filter-output", "ct state new "),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new "),
    (
        "cluster-ips-check",
        "filter-output-post-dnat",
        "ct state new ",
    ),
];

/// 8 base32 characters of a hash of `name`, then `-name` (kube-proxy's `hashAndTruncate`).
fn hashed(name: &str) -> String {
    let hash = crate::iptables::chain_name("", name);
    format!("{}-{name}", &hash[..8])
}

/// kube-proxy's service port name of service `i`: `<ns>/<name>/<proto>/<port name>`.
fn port_name(i: u32, proto: &str) -> String {
    format!("bench/svc-{i}/{proto}/http")
}

/// The cluster-policy chain of service `i`.
pub fn service_chain(i: u32, proto: &str) -> String {
    format!("service-{}", hashed(&port_name(i, proto)))
}

/// The external-traffic chain of service `i` (NodePort, LoadBalancer, externalIPs).
pub fn external_chain(i: u32, proto: &str) -> String {
    format!("external-{}", hashed(&port_name(i, proto)))
}

/// The chain of endpoint `j` of service `i`.
pub fn endpoint_chain(i: u32, j: u32, proto: &str) -> String {
    let ep = plan::backend(i, j);
    format!(
        "endpoint-{}",
        hashed(&format!("{}__{ep}/{TARGET_PORT}", port_name(i, proto)))
    )
}

/// One transaction's text, in knftables' command form.
struct Tx(String);

impl Tx {
    fn line(&mut self, text: std::fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        let _ = self.0.write_fmt(text);
        self.0.push('\n');
    }

    /// kube-proxy's `ensureChain`: create, then empty it.
    fn ensure_chain(&mut self, chain: &str) {
        self.line(format_args!("add chain {TABLE} {chain}"));
        self.line(format_args!("flush chain {TABLE} {chain}"));
    }

    fn rule(&mut self, chain: &str, rule: &str) {
        self.line(format_args!("add rule {TABLE} {chain} {rule}"));
    }

    fn element(&mut self, set: &str, element: &str) {
        self.line(format_args!("add element {TABLE} {set} {{ {element} }}"));
    }
}

/// The first full sync's table-wide part (kube-proxy's `setupNFTables`).
fn setup(tx: &mut Tx) {
    tx.line(format_args!(
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    ));
    // The first sync deletes base chains once so that changed properties apply.
    for (name, ..) in BASE_CHAINS {
        tx.line(format_args!("add chain {TABLE} {name}"));
        tx.line(format_args!("delete chain {TABLE} {name}"));
    }
    for (name, kind, hook, priority) in BASE_CHAINS {
        tx.line(format_args!(
            "add chain {TABLE} {name} {{ type {kind} hook {hook} priority {priority} ; }}"
        ));
        tx.line(format_args!("flush chain {TABLE} {name}"));
    }
    let mut created: Vec<&str> = Vec::new();
    for (dst, src, matcher) in JUMPS {
        if !created.contains(&dst) {
            tx.ensure_chain(dst);
            created.push(dst);
        }
        tx.rule(src, &format!("{matcher}jump {dst}"));
    }
    tx.ensure_chain("mark-for-masquerade");
    tx.rule(
        "mark-for-masquerade",
        &format!("mark set mark or {MASQ_MARK}"),
    );
    tx.rule("masquerading", &format!("mark and {MASQ_MARK} == 0 return"));
    tx.rule("masquerading", &format!("mark set mark xor {MASQ_MARK}"));
    tx.rule("masquerading", "masquerade fully-random");

    tx.line(format_args!(
        "add set {TABLE} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    ));
    tx.line(format_args!(
        "add rule {TABLE} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
    ));
    tx.line(format_args!(
        "add rule {TABLE} cluster-ips-check ip daddr {{ {} }} drop comment \"Drop traffic to unallocated ClusterIPs\"",
        plan::SERVICE_CIDR
    ));

    tx.line(format_args!(
        "add set {TABLE} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
    ));
    tx.line(format_args!("flush set {TABLE} nodeport-ips"));
    tx.element("nodeport-ips", &plan::NODE_IP.to_string());

    tx.line(format_args!(
        "add map {TABLE} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"
    ));
    tx.line(format_args!(
        "add map {TABLE} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"
    ));
    tx.line(format_args!(
        "add chain {TABLE} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    ));
    tx.line(format_args!("flush chain {TABLE} reject-chain"));
    tx.rule("reject-chain", "reject");
    tx.rule(
        "service-endpoints-check",
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    );
    tx.rule(
        "nodeport-endpoints-check",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
    );

    tx.line(format_args!(
        "add map {TABLE} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"
    ));
    tx.rule(
        "firewall-check",
        "ip daddr . meta l4proto . th dport vmap @firewall-ips",
    );

    tx.line(format_args!(
        "add map {TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
    ));
    tx.line(format_args!(
        "add map {TABLE} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}"
    ));
    tx.rule(
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    tx.rule(
        "services",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
    );
    // kube-proxy's element stores start from empty on a full sync.
    tx.line(format_args!("flush set {TABLE} cluster-ips"));
    for map in [
        "service-ips",
        "firewall-ips",
        "no-endpoint-services",
        "no-endpoint-nodeports",
        "service-nodeports",
    ] {
        tx.line(format_args!("flush map {TABLE} {map}"));
    }
}

/// Everything of service `i` (kube-proxy's per-service-port part of a sync):
/// its chains (created and emptied), its set and map elements, its rules;
/// with `node_port`, also the external chain and the `service-nodeports` element.
fn service(tx: &mut Tx, i: u32, proto: &str, node_port: Option<u16>) {
    let vip = plan::vip(i);
    let svc = service_chain(i, proto);
    let endpoints: Vec<String> = (0..ENDPOINTS_PER_SERVICE)
        .map(|j| endpoint_chain(i, j, proto))
        .collect();
    for chain in &endpoints {
        tx.ensure_chain(chain);
    }
    tx.ensure_chain(&svc);
    let external = node_port.map(|port| (port, external_chain(i, proto)));
    if let Some((_, ext)) = &external {
        tx.ensure_chain(ext);
    }
    tx.element("cluster-ips", &vip.to_string());
    tx.element(
        "service-ips",
        &format!("{vip} . {proto} . {SERVICE_PORT} : goto {svc}"),
    );
    if let Some((port, ext)) = &external {
        tx.element(
            "service-nodeports",
            &format!("{proto} . {port} : goto {ext}"),
        );
        tx.rule(ext, "jump mark-for-masquerade");
        tx.rule(ext, &format!("goto {svc}"));
    }
    tx.rule(
        &svc,
        &format!(
            "ip daddr {vip} {proto} dport {SERVICE_PORT} ip saddr != {} jump mark-for-masquerade",
            plan::CLUSTER_CIDR
        ),
    );
    let vmap: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(j, chain)| format!("{j} : goto {chain}"))
        .collect();
    tx.rule(
        &svc,
        &format!(
            "numgen random mod {} vmap {{ {} }}",
            endpoints.len(),
            vmap.join(" , ")
        ),
    );
    for (j, chain) in (0..ENDPOINTS_PER_SERVICE).zip(&endpoints) {
        let ep = plan::backend(i, j);
        tx.rule(chain, &format!("ip saddr {ep} jump mark-for-masquerade"));
        tx.rule(
            chain,
            &format!("meta l4proto {proto} dnat to {ep}:{TARGET_PORT}"),
        );
    }
}

/// kube-proxy's first (full) sync for `services` TCP ClusterIP services,
/// as one `nft -f` transaction.
pub fn ruleset(services: u32) -> String {
    ruleset_with(services, false)
}

/// [`ruleset`] plus one UDP NodePort service: service number
/// [`plan::NODEPORT_SERVICE`] (ClusterIP `plan::vip(NODEPORT_SERVICE)`:80, its own
/// 4 backends on port 8080), node port [`plan::NODE_PORT`] on the addresses of
/// `nodeport-ips` (the node IP), externalTrafficPolicy Cluster (masqueraded).
pub fn ruleset_nodeport(services: u32) -> String {
    ruleset_with(services, true)
}

fn ruleset_with(services: u32, node_port: bool) -> String {
    let mut tx = Tx(String::with_capacity(services as usize * 2_000 + 8_192));
    setup(&mut tx);
    for i in 0..services {
        service(&mut tx, i, "tcp", None);
    }
    if node_port {
        service(
            &mut tx,
            plan::NODEPORT_SERVICE,
            "udp",
            Some(plan::NODE_PORT),
        );
    }
    tx.0
}

/// kube-proxy's partial sync after service `total - 1` was added to a node
/// holding services `0..total-1`: only the new service's chains, rules and
/// elements (the existing services are skipped, their elements already
/// present), one `nft -f` transaction. kube-proxy also lists the table's
/// chains before each sync (to find stale ones); that read is not part of this.
pub fn add_service(total: u32) -> String {
    let mut tx = Tx(String::with_capacity(4_096));
    service(&mut tx, total - 1, "tcp", None);
    tx.0
}

/// Runs `nft -f -` with `input` in `netns` (one transaction: all or nothing);
/// returns the seconds it took.
pub fn load(netns: &str, input: &str) -> Result<f64> {
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (apt-get install nftables, or cargo xtask bench)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // nft names the offending line; keep the first few lines of its answer.
        let head: Vec<&str> = stderr.lines().take(6).collect();
        bail!("nft -f in {netns} failed: {}", head.join(" | "));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `table ip kube-proxy` in a netns: deleted on drop, so an error anywhere
/// never leaves the rules behind (the netns itself goes too, but a table must
/// not outlive the run that made it).
pub struct Table {
    netns: String,
}

impl Table {
    /// Loads `input` (which creates the table) into `netns`; the returned
    /// guard deletes the table. Returns the guard and the load's seconds.
    pub fn load(netns: &str, input: &str) -> Result<(Table, f64)> {
        let table = Table {
            netns: netns.to_owned(),
        };
        let seconds = load(netns, input)?;
        Ok((table, seconds))
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.netns, "nft", "delete", "table", "ip"])
            .arg("kube-proxy")
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn chain_names_have_kube_proxy_shape() {
        let svc = service_chain(0, "tcp");
        assert!(svc.starts_with("service-"), "{svc}");
        assert!(svc.ends_with("-bench/svc-0/tcp/http"), "{svc}");
        assert_eq!(
            svc.len(),
            "service-".len() + 8 + "-bench/svc-0/tcp/http".len()
        );
        let ep = endpoint_chain(0, 3, "tcp");
        assert!(ep.starts_with("endpoint-"), "{ep}");
        assert!(
            ep.ends_with("-bench/svc-0/tcp/http__10.245.0.4/8080"),
            "{ep}"
        );
        assert!(external_chain(1, "udp").starts_with("external-"));
        // Distinct inputs, distinct hashes (and nft identifiers: letters first,
        // only [A-Za-z0-9/_.-]).
        let names = [
            service_chain(0, "tcp"),
            service_chain(1, "tcp"),
            service_chain(0, "udp"),
            endpoint_chain(0, 0, "tcp"),
            endpoint_chain(0, 1, "tcp"),
        ];
        let hashes: Vec<&str> = names
            .iter()
            .map(|n| &n[n.find('-').unwrap() + 1..][..8])
            .collect();
        for (k, h) in hashes.iter().enumerate() {
            assert!(!hashes[k + 1..].contains(h), "{hashes:?}");
        }
        for n in &names {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c)),
                "{n}"
            );
        }
    }

    #[test]
    fn one_service_has_kube_proxy_structure() {
        let text = ruleset(1);
        assert!(
            text.starts_with("add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n")
        );
        // The hooks: 8 base chains with kube-proxy's types and priorities.
        let base = lines_starting(&text, "add chain ip kube-proxy ")
            .into_iter()
            .filter(|l| l.contains(" hook "))
            .collect::<Vec<_>>();
        assert_eq!(base.len(), 8, "{base:?}");
        assert!(base.contains(
            &"add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat ; }"
        ));
        assert!(base.contains(
            &"add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }"
        ));
        assert!(base.contains(
            &"add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority srcnat ; }"
        ));
        for jump in [
            "add rule ip kube-proxy nat-prerouting jump services",
            "add rule ip kube-proxy nat-output jump services",
            "add rule ip kube-proxy nat-postrouting jump masquerading",
            "add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check",
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add rule ip kube-proxy masquerading mark and 0x4000 == 0 return",
            "add rule ip kube-proxy masquerading masquerade fully-random",
            "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000",
        ] {
            assert_eq!(text.lines().filter(|l| *l == jump).count(), 1, "{jump}");
        }
        // The dispatch element, the service chain: masquerade mark for outside
        // sources, then a uniform pick among the 4 endpoint chains.
        let svc = service_chain(0, "tcp");
        assert_eq!(
            lines_starting(&text, "add element ip kube-proxy service-ips "),
            vec![format!(
                "add element ip kube-proxy service-ips {{ 10.96.128.0 . tcp . 80 : goto {svc} }}"
            )]
        );
        let svc_rules = lines_starting(&text, &format!("add rule ip kube-proxy {svc} "));
        assert_eq!(svc_rules.len(), 2, "{svc_rules:?}");
        assert!(svc_rules[0].ends_with(
            "ip daddr 10.96.128.0 tcp dport 80 ip saddr != 10.240.0.0/12 jump mark-for-masquerade"
        ));
        let picks: Vec<String> = (0..4)
            .map(|j| format!("{j} : goto {}", endpoint_chain(0, j, "tcp")))
            .collect();
        assert!(
            svc_rules[1].ends_with(&format!(
                "numgen random mod 4 vmap {{ {} }}",
                picks.join(" , ")
            )),
            "{}",
            svc_rules[1]
        );
        // Each endpoint chain: hairpin mark, DNAT to its own address.
        for j in 0..4 {
            let ep = plan::backend(0, j);
            let rules = lines_starting(
                &text,
                &format!("add rule ip kube-proxy {} ", endpoint_chain(0, j, "tcp")),
            );
            assert_eq!(rules.len(), 2);
            assert!(rules[0].ends_with(&format!("ip saddr {ep} jump mark-for-masquerade")));
            assert!(rules[1].ends_with(&format!("meta l4proto tcp dnat to {ep}:8080")));
        }
        // Every chain a rule or element names is created in the transaction.
        for l in text.lines() {
            for target in l.split("goto ").skip(1).chain(l.split("jump ").skip(1)) {
                let chain = target.split([' ', ',', '}']).next().unwrap();
                assert!(
                    text.contains(&format!("add chain ip kube-proxy {chain}")),
                    "{chain} in {l}"
                );
            }
        }
    }

    #[test]
    fn n_services_make_n_map_elements_and_5n_chains() {
        for n in [1, 3, 1000] {
            let text = ruleset(n);
            let elements = lines_starting(&text, "add element ip kube-proxy service-ips ");
            assert_eq!(elements.len(), n as usize);
            assert_eq!(
                lines_starting(&text, "add element ip kube-proxy cluster-ips ").len(),
                n as usize
            );
            let mut vips: Vec<&str> = elements
                .iter()
                .map(|e| e.split_whitespace().nth(6).unwrap())
                .collect();
            vips.sort_unstable();
            vips.dedup();
            assert_eq!(vips.len(), n as usize, "one element per VIP");
            let service_chains = text
                .lines()
                .filter(|l| l.starts_with("add chain ip kube-proxy service-") && l.contains('/'))
                .count();
            let endpoint_chains = lines_starting(&text, "add chain ip kube-proxy endpoint-").len();
            assert_eq!(service_chains, n as usize);
            assert_eq!(endpoint_chains, 4 * n as usize);
            assert_eq!(text.matches("numgen random mod 4 vmap").count(), n as usize);
            assert_eq!(text.matches(" dnat to ").count(), 4 * n as usize);
            assert_eq!(
                lines_starting(&text, "add element ip kube-proxy service-nodeports ").len(),
                0
            );
        }
    }

    #[test]
    fn udp_node_port_has_kube_proxy_structure() {
        let text = ruleset_nodeport(2);
        let i = plan::NODEPORT_SERVICE;
        let svc = service_chain(i, "udp");
        let ext = external_chain(i, "udp");
        assert_eq!(
            lines_starting(&text, "add element ip kube-proxy service-nodeports "),
            vec![format!(
                "add element ip kube-proxy service-nodeports {{ udp . 30080 : goto {ext} }}"
            )]
        );
        assert_eq!(
            lines_starting(&text, "add element ip kube-proxy nodeport-ips "),
            vec!["add element ip kube-proxy nodeport-ips { 172.31.255.1 }"]
        );
        assert_eq!(
            lines_starting(&text, &format!("add rule ip kube-proxy {ext} ")),
            vec![
                format!("add rule ip kube-proxy {ext} jump mark-for-masquerade"),
                format!("add rule ip kube-proxy {ext} goto {svc}"),
            ]
        );
        // Its ClusterIP is dispatched like the others; its endpoints DNAT UDP.
        assert_eq!(
            lines_starting(&text, "add element ip kube-proxy service-ips ").len(),
            3
        );
        assert!(text.contains(&format!("{} . udp . 80 : goto {svc}", plan::vip(i))));
        assert_eq!(text.matches("meta l4proto udp dnat to ").count(), 4);
        assert!(text.contains(&format!(
            "meta l4proto udp dnat to {}:8080",
            plan::backend(i, 0)
        )));
        assert_eq!(text.matches("meta l4proto tcp dnat to ").count(), 8);
    }

    #[test]
    fn adding_a_service_writes_only_its_objects() {
        let text = add_service(3);
        assert!(
            !text.contains("add table"),
            "a partial sync leaves the table alone"
        );
        assert!(
            !text.contains("flush map"),
            "and keeps the maps' other elements"
        );
        assert_eq!(
            lines_starting(&text, "add element ip kube-proxy service-ips "),
            vec![format!(
                "add element ip kube-proxy service-ips {{ 10.96.128.2 . tcp . 80 : goto {} }}",
                service_chain(2, "tcp")
            )]
        );
        assert_eq!(text.matches(" dnat to ").count(), 4);
        assert!(text.contains("dnat to 10.245.0.9:8080"));
        // The same lines a full sync of 3 services has (so the result is identical).
        let full = ruleset(3);
        for line in text.lines() {
            assert!(full.lines().any(|f| f == line), "{line}");
        }
    }
}
