//! Which pod holds an IP: an index over every Pod of the cluster (all
//! namespaces, all nodes: a flow's other end is often remote), fed by a
//! list + watch of Pods. The index is pure ([`PodIndex::apply`]); [`run`]
//! is the thin watch loop around it.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use weir_client::{Client, ListParams, WatchEvent, WatchParams};

type Name = (String, String);

/// Pod IPs -> namespace/name. Host-network pods are left out: their
/// address is the node's, shared by many.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_pod: BTreeMap<Name, Vec<Ipv4Addr>>,
    by_ip: HashMap<Ipv4Addr, Name>,
}

/// The IPv4 addresses a pod owns (none for host-network pods).
pub fn pod_ips(pod: &Pod) -> Vec<Ipv4Addr> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<Ipv4Addr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn name_of(pod: &Pod) -> Name {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl PodIndex {
    /// The pod holding `ip`.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<&Name> {
        self.by_ip.get(&ip)
    }

    /// Replaces everything with a fresh list.
    pub fn reset(&mut self, pods: &[Pod]) {
        *self = PodIndex::default();
        for pod in pods {
            self.upsert(pod);
        }
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event: &WatchEvent<Pod>) {
        match event {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => self.upsert(p),
            WatchEvent::Deleted(p) => self.remove(&name_of(p)),
            WatchEvent::Bookmark(_) => {}
        }
    }

    fn upsert(&mut self, pod: &Pod) {
        let name = name_of(pod);
        self.remove(&name);
        let ips = pod_ips(pod);
        // A reused address belongs to the pod that reported it last.
        for ip in &ips {
            self.by_ip.insert(*ip, name.clone());
        }
        if !ips.is_empty() {
            self.by_pod.insert(name, ips);
        }
    }

    fn remove(&mut self, name: &Name) {
        for ip in self.by_pod.remove(name).unwrap_or_default() {
            if self.by_ip.get(&ip) == Some(name) {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// The index shared between the watch loop and the flow reader.
pub type SharedIndex = Arc<RwLock<PodIndex>>;

/// Looks `ip` up in a shared index.
pub fn lookup(index: &SharedIndex, ip: Ipv4Addr) -> Option<Name> {
    index
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .lookup(ip)
        .cloned()
}

/// Keeps `index` in sync with every Pod: list, watch from the list's
/// revision, re-list when the revision expired; back off on errors.
pub async fn run(client: Client, index: SharedIndex) {
    let mut delay = Duration::from_millis(200);
    let backoff = |delay: &mut Duration| {
        let now = *delay;
        *delay = (*delay * 2).min(Duration::from_secs(10));
        now
    };
    loop {
        let list = match client.list::<Pod>("", &ListParams::default()).await {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "cannot list pods for flow records");
                tokio::time::sleep(backoff(&mut delay)).await;
                continue;
            }
        };
        index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .reset(&list.items);
        let mut rv = list.resource_version;
        'watch: loop {
            let mut stream = match client
                .watch::<Pod>("", &WatchParams::default().from_version(rv.clone()))
                .await
            {
                Ok(s) => s,
                Err(weir_client::Error::Expired(_)) => break 'watch,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch pods for flow records");
                    tokio::time::sleep(backoff(&mut delay)).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok((event, event_rv)) => {
                        delay = Duration::from_millis(200);
                        rv = event_rv;
                        index
                            .write()
                            .unwrap_or_else(PoisonError::into_inner)
                            .apply(&event);
                    }
                    Err(weir_client::Error::Expired(_)) => break 'watch,
                    Err(error) => {
                        tracing::warn!(%error, "pod watch for flow records failed");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff(&mut delay)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(ns: &str, name: &str, ip: Option<&str>, host_network: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                host_network: Some(host_network),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
                ..Default::default()
            }),
        }
    }

    fn who(index: &PodIndex, ip: &str) -> Option<String> {
        index
            .lookup(ip.parse().unwrap())
            .map(|(ns, n)| format!("{ns}/{n}"))
    }

    #[test]
    fn index_follows_lists_and_events() {
        let mut index = PodIndex::default();
        index.reset(&[
            pod("a", "web", Some("10.244.0.5"), false),
            pod("a", "pending", None, false),
            pod("kube-system", "hostnet", Some("172.30.0.11"), true),
        ]);
        assert_eq!(who(&index, "10.244.0.5").as_deref(), Some("a/web"));
        assert_eq!(who(&index, "172.30.0.11"), None, "host network");

        // The address moves to a new pod, then the old pod's delete arrives.
        index.apply(&WatchEvent::Added(pod(
            "b",
            "new",
            Some("10.244.0.5"),
            false,
        )));
        index.apply(&WatchEvent::Deleted(pod(
            "a",
            "web",
            Some("10.244.0.5"),
            false,
        )));
        assert_eq!(who(&index, "10.244.0.5").as_deref(), Some("b/new"));

        // A pod gets its address later; then goes away.
        index.apply(&WatchEvent::Modified(pod(
            "a",
            "pending",
            Some("10.244.0.9"),
            false,
        )));
        assert_eq!(who(&index, "10.244.0.9").as_deref(), Some("a/pending"));
        index.apply(&WatchEvent::Deleted(pod("a", "pending", None, false)));
        assert_eq!(who(&index, "10.244.0.9"), None);

        index.reset(&[]);
        assert_eq!(who(&index, "10.244.0.5"), None);
    }
}
