//! End-to-end acceptance tests (issue 2, the walking skeleton). They need the
//! `weirtest` cluster that `cargo xtask test` brings up and tears down.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weir_e2e::cri::Cri;
use weir_e2e::{Check, Cluster, DeleteParams, ListParams, phase, unique_suffix, wait_for};

const NS: &str = "default";
const HOSTNAME_IMAGE: &str = "127.0.0.1:5000/weir/hostname:v1";
const CLIENT_IMAGE: &str = "127.0.0.1:5000/weir/client:v1";
/// Generous: the first pull of an image and sandbox creation on a busy 2-core machine.
const POD_TIMEOUT: Duration = Duration::from_secs(180);

fn deployment_and_service(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 3
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: hostname
        image: {HOSTNAME_IMAGE}
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: ClusterIP
  selector: {{app: {name}}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

/// A one-shot client pod running `script` with busybox sh. busybox `wget -T`
/// segfaults in Debian's build, so every fetch is bounded with `timeout`.
fn client_pod(name: &str, script: &str) -> String {
    let script = script.replace('\'', "''");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {CLIENT_IMAGE}
    command: ["sh", "-c", '{script}']
"#
    )
}

/// Runs a client pod to completion and returns its log.
async fn run_client(c: &Cluster, name: &str, script: &str) -> Result<String> {
    c.apply_ok(&client_pod(name, script))?;
    let log = weir_e2e::pods::finished_log(c, NS, name).await?;
    eprintln!("[e2e] log of {name}:\n{log}");
    Ok(log)
}

/// Pods of the Deployment that are Running and not being deleted.
async fn running_pods(c: &Cluster, app: &str) -> Result<Vec<Pod>> {
    let pods = c
        .client
        .list::<Pod>(NS, &ListParams::default().labels(format!("app={app}")))
        .await?
        .items;
    Ok(pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running")
        .collect())
}

async fn ready_endpoints(c: &Cluster, svc: &str) -> Result<Vec<String>> {
    let slices = c
        .client
        .list::<EndpointSlice>(
            NS,
            &ListParams::default().labels(format!("kubernetes.io/service-name={svc}")),
        )
        .await?
        .items;
    Ok(slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect())
}

fn answers(log: &str) -> Vec<&str> {
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_deployment_behind_clusterip() -> Result<()> {
    let c = Cluster::connect().await?;
    let name = format!("e2e-web-{}", unique_suffix());
    c.apply_ok(&deployment_and_service(&name))?;

    // Three Running pods, and an EndpointSlice with their three addresses ready.
    let pods = wait_for("3 Running hostname pods", POD_TIMEOUT, || async {
        let pods = running_pods(&c, &name).await?;
        Ok(if pods.len() == 3 {
            Check::Done(pods)
        } else {
            Check::Waiting(format!("{} running", pods.len()))
        })
    })
    .await?;
    let pod_names: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let pod_ips: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    ensure!(pod_ips.len() == 3, "every pod has its own IP: {pod_ips:?}");
    wait_for(
        "EndpointSlice with the 3 pod IPs ready",
        Duration::from_secs(60),
        || async {
            let ready: BTreeSet<String> = ready_endpoints(&c, &name).await?.into_iter().collect();
            Ok(if ready == pod_ips {
                Check::Done(())
            } else {
                Check::Waiting(format!("ready {ready:?}, pods {pod_ips:?}"))
            })
        },
    )
    .await?;
    let svc: Service = c.client.get(NS, &name).await?;
    let vip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("Service has no clusterIP")?;
    // What every node's kernel holds for the frontend: exactly the 3 pods.
    let frontend = format!("{vip}:80");
    let mut want: Vec<String> = pod_ips.iter().map(|ip| format!("{ip}:8080")).collect();
    want.sort();
    wait_for_frontend(&c, &frontend, want).await?;

    // 40 requests to the ClusterIP from a client pod: every answer is one of the
    // pods' names, and all three pods answer.
    let script = format!(
        "i=0; until timeout 5 wget -q -O /dev/null http://{vip}/ 2>/dev/null || [ $i -ge 30 ]; do i=$((i+1)); sleep 1; done; \
         for i in $(seq 40); do timeout 5 wget -q -O - http://{vip}/ 2>/dev/null || echo FAILED; done"
    );
    let log = run_client(&c, &format!("{name}-client"), &script).await?;
    let got = answers(&log);
    ensure!(
        got.len() == 40,
        "expected 40 answers, got {}: {got:?}",
        got.len()
    );
    let failed = got.iter().filter(|a| **a == "FAILED").count();
    ensure!(failed == 0, "{failed} of 40 requests to {vip} failed");
    let seen: BTreeSet<String> = got.iter().map(|s| s.to_string()).collect();
    ensure!(
        seen.is_subset(&pod_names),
        "answers {seen:?} not all from the pods {pod_names:?}"
    );
    ensure!(
        seen == pod_names,
        "not every pod answered: {seen:?} of {pod_names:?}"
    );

    // What containerd runs for these pods, before deletion.
    let mut sandbox_ids = Vec::new();
    for p in &pods {
        let node = c.node_of(p)?;
        let cri = Cri::connect(&node.cri_socket).await?;
        let uid = p.metadata.uid.as_deref().context("pod uid")?;
        let sbs = cri.sandboxes_of(uid).await?;
        ensure!(!sbs.is_empty(), "containerd has no sandbox for pod {uid}");
        sandbox_ids.extend(sbs.into_iter().map(|s| (node.name.clone(), s.id)));
    }

    // Delete the Deployment: the pods go from the API, their sandboxes and
    // containers from containerd, their addresses from the IPAM store, and the
    // Service stops answering.
    c.client
        .delete::<Deployment>(NS, &name, &DeleteParams::default())
        .await?;
    let uids: BTreeSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    wait_for(
        "the Deployment's pods to be gone from the API",
        Duration::from_secs(120),
        || async {
            let left: Vec<String> = c
                .client
                .list::<Pod>(NS, &ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.uid.as_ref().is_some_and(|u| uids.contains(u)))
                .filter_map(|p| p.metadata.name)
                .collect();
            Ok(if left.is_empty() {
                Check::Done(())
            } else {
                Check::Waiting(format!("still there: {left:?}"))
            })
        },
    )
    .await?;
    wait_for(
        "their sandboxes and containers to be gone from containerd",
        Duration::from_secs(60),
        || async {
            let mut left = Vec::new();
            for (node, id) in &sandbox_ids {
                let cri = Cri::connect(&c.node(node)?.cri_socket).await?;
                if cri.sandboxes().await?.iter().any(|s| &s.id == id) {
                    left.push(format!("sandbox {id}"));
                }
                left.extend(
                    cri.containers()
                        .await?
                        .into_iter()
                        .filter(|k| &k.pod_sandbox_id == id)
                        .map(|k| format!("container {}", k.id)),
                );
            }
            Ok(if left.is_empty() {
                Check::Done(())
            } else {
                Check::Waiting(left.join(", "))
            })
        },
    )
    .await?;
    for p in &pods {
        let node = c.node_of(p)?;
        for ip in &pod_ips {
            let f = node.ipam_dir.join(ip);
            ensure!(
                !f.exists(),
                "IPAM allocation {} of a deleted pod is still there",
                f.display()
            );
        }
    }
    for (node, id) in &sandbox_ids {
        let dir = &c.node(node)?.ipam_dir;
        for e in std::fs::read_dir(dir)
            .with_context(|| format!("list {}", dir.display()))?
            .flatten()
        {
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            ensure!(
                !content.contains(id.as_str()),
                "IPAM file {} still names deleted sandbox {id}",
                e.path().display()
            );
        }
    }
    // The kernel keeps the frontend but with no backend left (new
    // connections are dropped, not routed to a deleted pod's address).
    wait_for_frontend(&c, &frontend, Vec::new()).await?;
    let after = format!(
        "if timeout 5 wget -q -O - http://{vip}/; then echo GOT-ANSWER; else echo NO-ANSWER; fi"
    );
    let log = run_client(&c, &format!("{name}-after"), &after).await?;
    ensure!(
        log.contains("NO-ANSWER") && !log.contains("GOT-ANSWER"),
        "the Service without endpoints still answered:\n{log}"
    );
    for p in &pod_names {
        ensure!(
            !log.contains(p.as_str()),
            "deleted pod {p} answered:\n{log}"
        );
    }

    // Clean up (the cluster may be kept for debugging).
    for pod in [format!("{name}-client"), format!("{name}-after")] {
        let _ = c
            .client
            .delete::<Pod>(
                NS,
                &pod,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
    }
    c.client
        .delete::<Service>(NS, &name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// Waits until every node's datapath holds `want` for `frontend`.
async fn wait_for_frontend(c: &Cluster, frontend: &str, want: Vec<String>) -> Result<()> {
    let what = format!("every node's datapath to hold {frontend} -> {want:?}");
    wait_for(&what, Duration::from_secs(30), || async {
        for node in &c.info.nodes {
            let got = c.datapath_backends(node, frontend)?;
            if got.as_ref() != Some(&want) {
                return Ok(Check::Waiting(format!("{}: {got:?}", node.name)));
            }
        }
        Ok(Check::Done(()))
    })
    .await
}

/// One bad manifest: what `weir apply` must say, and objects that must not exist afterwards.
struct BadCase {
    what: &'static str,
    yaml: String,
    /// The error names the problem: at least one of these appears (case-insensitive).
    mentions: &'static [&'static str],
    /// (kind, name) that must not have been stored.
    absent: Vec<(&'static str, String)>,
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_bad_input_changes_nothing() -> Result<()> {
    let c = Cluster::connect().await?;
    let sfx = unique_suffix();
    let good_svc = format!("e2e-bad-ok-{sfx}");
    let cases = vec![
        BadCase {
            what: "invalid YAML after a valid document",
            yaml: format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {good_svc}\nspec:\n  ports:\n  - port: 80\n---\n\
                 apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n  spec: : :\n"
            ),
            mentions: &["yaml", "line"],
            absent: vec![("Service", good_svc.clone())],
        },
        BadCase {
            what: "unknown kind",
            yaml: format!(
                "apiVersion: example.com/v1\nkind: Frobnicator\nmetadata:\n  name: e2e-frob-{sfx}\n"
            ),
            mentions: &["Frobnicator"],
            absent: vec![],
        },
        BadCase {
            what: "Deployment selector not matching its template labels",
            yaml: format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: e2e-badsel-{sfx}\nspec:\n  replicas: 1\n  \
                 selector:\n    matchLabels: {{app: one}}\n  template:\n    metadata:\n      labels: {{app: other}}\n    \
                 spec:\n      containers:\n      - name: c\n        image: {HOSTNAME_IMAGE}\n"
            ),
            mentions: &["selector"],
            absent: vec![("Deployment", format!("e2e-badsel-{sfx}"))],
        },
        BadCase {
            what: "Service port 70000",
            yaml: format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: e2e-badport-{sfx}\nspec:\n  selector: {{app: x}}\n  \
                 ports:\n  - port: 70000\n    targetPort: 8080\n"
            ),
            mentions: &["70000"],
            absent: vec![("Service", format!("e2e-badport-{sfx}"))],
        },
    ];
    let mut problems = Vec::new();
    for case in &cases {
        let out = c.apply(&case.yaml)?;
        eprintln!(
            "[e2e] {}: exit ok={} stderr: {}",
            case.what,
            out.success,
            out.stderr.trim()
        );
        if out.success {
            problems.push(format!(
                "{}: weir apply succeeded (stdout: {})",
                case.what,
                out.stdout.trim()
            ));
        }
        let msg = format!("{}{}", out.stderr, out.stdout).to_lowercase();
        if !case
            .mentions
            .iter()
            .any(|m| msg.contains(&m.to_lowercase()))
        {
            problems.push(format!(
                "{}: the error does not mention any of {:?}: {}",
                case.what,
                case.mentions,
                out.stderr.trim()
            ));
        }
        for (kind, name) in &case.absent {
            let stored = match *kind {
                "Service" => c.client.get_opt::<Service>(NS, name).await?.is_some(),
                "Deployment" => c.client.get_opt::<Deployment>(NS, name).await?.is_some(),
                other => bail!("test bug: no check for kind {other}"),
            };
            if stored {
                problems.push(format!("{}: {kind} {name} was stored", case.what));
            }
        }
    }
    // An invalid update of an existing object changes nothing either.
    let existing = format!("e2e-bad-exist-{sfx}");
    let svc_yaml = |port: u32| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {existing}\nspec:\n  selector: {{app: x}}\n  \
             ports:\n  - port: {port}\n    targetPort: 8080\n"
        )
    };
    c.apply_ok(&svc_yaml(80))?;
    let before: Service = c.client.get(NS, &existing).await?;
    let out = c.apply(&svc_yaml(70000))?;
    if out.success {
        problems.push(format!(
            "invalid update of Service {existing}: weir apply succeeded"
        ));
    }
    let after: Service = c.client.get(NS, &existing).await?;
    if after.metadata.resource_version != before.metadata.resource_version
        || after.spec != before.spec
    {
        problems.push(format!(
            "invalid update of Service {existing} changed it: {:?} -> {:?}",
            before.spec, after.spec
        ));
    }
    c.client
        .delete::<Service>(NS, &existing, &DeleteParams::default())
        .await?;
    ensure!(
        problems.is_empty(),
        "bad input was not rejected cleanly:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// The manifests above parse into the Kubernetes types (no cluster needed).
#[test]
fn manifests_parse_as_kubernetes_objects() {
    let docs = deployment_and_service("web");
    let mut it = docs.split("\n---\n");
    let d: Deployment = serde_yaml::from_str(it.next().unwrap()).expect("deployment");
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let s: Service = serde_yaml::from_str(it.next().unwrap()).expect("service");
    assert_eq!(s.spec.and_then(|s| s.ports).unwrap()[0].port, 80);
    let script = "for i in $(seq 2); do timeout 5 wget -q -O - http://10.96.0.10/ 2>/dev/null || echo 'FAILED'; done";
    let p: Pod = serde_yaml::from_str(&client_pod("c", script)).expect("pod");
    let cmd = p.spec.unwrap().containers[0].command.clone().unwrap();
    assert_eq!(cmd, vec!["sh".to_string(), "-c".into(), script.into()]);
}
