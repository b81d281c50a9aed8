//! Pods for multi-node tests: manifests pinned to a node (nodeSelector on
//! `kubernetes.io/hostname`), and running a one-shot client to completion.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;

use crate::{Check, Cluster, DeleteParams, ListParams, phase, wait_for};

/// The test images, as every node's registry serves them.
pub const HOSTNAME_IMAGE: &str = "127.0.0.1:5000/weir/hostname:v1";
pub const CLIENT_IMAGE: &str = "127.0.0.1:5000/weir/client:v1";
/// Generous: the first pull of an image and sandbox creation on a busy 2-core machine.
pub const POD_TIMEOUT: Duration = Duration::from_secs(180);

/// A `weir/hostname` pod (answers `GET /` on :8080 with its name) with label
/// `app: <app>`, pinned to `node`.
pub fn hostname_pod(name: &str, app: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: hostname
    image: {HOSTNAME_IMAGE}
    ports:
    - containerPort: 8080
"#
    )
}

/// A one-shot busybox pod pinned to `node` running `script` with `sh -c`.
/// busybox `wget -T` segfaults in Debian's build: bound fetches with `timeout`.
pub fn client_pod(name: &str, node: &str, script: &str) -> String {
    let script = script.replace('\'', "''");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {CLIENT_IMAGE}
    command: ["sh", "-c", '{script}']
"#
    )
}

/// A shell snippet that fetches `url` until it answers (up to `tries`
/// seconds) and prints `<label> <answer>`, or `<label> FAILED`.
pub fn fetch_until_ok(label: &str, url: &str, tries: u32) -> String {
    format!(
        "i=0; until out=$(timeout 5 wget -q -O - {url} 2>/dev/null); do i=$((i+1)); \
         if [ $i -ge {tries} ]; then out=FAILED; break; fi; sleep 1; done; echo \"{label} $out\"; "
    )
}

/// Waits until pod `name` is Running with an IP; returns it.
pub async fn wait_running(c: &Cluster, ns: &str, name: &str) -> Result<Pod> {
    wait_for(&format!("pod {name} Running"), POD_TIMEOUT, || async {
        let p: Pod = c.client.get(ns, name).await?;
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
        Ok(match (phase(&p), ip) {
            ("Running", Some(_)) => Check::Done(p),
            ("Failed" | "Succeeded", _) => Check::Failed(format!("pod ended: {:?}", p.status)),
            (other, _) => Check::Waiting(format!("phase {other:?}")),
        })
    })
    .await
}

/// Applies a client pod, waits for it to finish and returns its log.
pub async fn run_client(
    c: &Cluster,
    ns: &str,
    name: &str,
    node: &str,
    script: &str,
) -> Result<String> {
    c.apply_ok(&client_pod(name, node, script))?;
    let log = finished_log(c, ns, name).await?;
    eprintln!("[e2e] log of {name} (on {node}):\n{log}");
    Ok(log)
}

/// Waits for pod `ns/name` to succeed and returns its log; a failed pod is
/// an error carrying its log.
pub async fn finished_log(c: &Cluster, ns: &str, name: &str) -> Result<String> {
    let pod = wait_for(
        &format!("client pod {name} to finish"),
        POD_TIMEOUT,
        || async {
            let p: Pod = c.client.get(ns, name).await?;
            Ok(match phase(&p) {
                "Succeeded" => Check::Done(p),
                "Failed" => Check::Failed(format!(
                    "the pod failed; its log:\n{}",
                    c.pod_log(&p).unwrap_or_default()
                )),
                other => Check::Waiting(format!("phase {other:?}")),
            })
        },
    )
    .await?;
    c.pod_log(&pod)
}

/// The value after `label ` on the lines that start with it.
pub fn labelled<'a>(log: &'a str, label: &str) -> Vec<&'a str> {
    let prefix = format!("{label} ");
    log.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(str::trim)
        .collect()
}

/// Deletes pods by label at once (grace 0); errors are ignored (clean-up).
pub async fn delete_pods_labelled(c: &Cluster, ns: &str, selector: &str) {
    let Ok(list) = c
        .client
        .list::<Pod>(ns, &ListParams::default().labels(selector))
        .await
    else {
        return;
    };
    for p in list.items {
        if let Some(name) = p.metadata.name {
            delete_pod(c, ns, &name).await;
        }
    }
}

/// Deletes one pod at once (grace 0); errors are ignored (clean-up).
pub async fn delete_pod(c: &Cluster, ns: &str, name: &str) {
    let _ = c
        .client
        .delete::<Pod>(
            ns,
            name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_parse_and_pin_the_node() {
        let p: Pod = serde_yaml::from_str(&hostname_pod("w", "web", "node2")).expect("pod");
        let spec = p.spec.expect("spec");
        assert_eq!(
            spec.node_selector.expect("selector")["kubernetes.io/hostname"],
            "node2"
        );
        let script = fetch_until_ok("POD", "http://10.244.1.2:8080/", 3);
        let p: Pod = serde_yaml::from_str(&client_pod("c", "node3", &script)).expect("pod");
        let cmd = p.spec.unwrap().containers[0].command.clone().unwrap();
        assert_eq!(cmd[2], script);
    }

    #[test]
    fn reads_labelled_lines() {
        let log = "POD 10.244.1.2 web-1\nVIP web-2\n  VIP web-3 \nnoise\n";
        assert_eq!(labelled(log, "VIP"), vec!["web-2", "web-3"]);
        assert_eq!(labelled(log, "POD"), vec!["10.244.1.2 web-1"]);
    }
}
