//! Allocation of cluster resources on the write path: cluster IPs, node
//! ports and LoadBalancer ingress addresses of Services, pod CIDRs of Nodes.
//!
//! The used sets are read from the allocation keys in etcd (a free cluster IP
//! is found by reading single keys from a cursor on, see `allocate_service`);
//! the choice is made by the pure allocators in `weir_api::alloc`; the
//! registry then writes the
//! object together with its allocation keys in one transaction (a lost race
//! fails that transaction and the registry allocates again).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::Ipv4Net;
use serde_json::Value;
use weir_api::ResourceKind;
use weir_api::alloc::{self, AllocError};
use weir_api::validation::FieldError;

use crate::admission;
use crate::error::ApiError;
use crate::lifecycle::{self, LB_IPS, NODE_PORTS, POD_CIDRS, SERVICE_IPS};
use crate::object::ApiObject;
use crate::storage::Storage;

/// Addresses tried from the cursor before falling back to reading every
/// allocated cluster IP.
const CLUSTER_IP_PROBES: u64 = 16;

/// Cluster-wide ranges the allocators hand out from.
#[derive(Debug, Clone)]
pub struct Ranges {
    pub service_cidr: Ipv4Net,
    pub cluster_cidr: Ipv4Net,
    pub node_cidr_mask: u8,
    /// Addresses handed to LoadBalancer Services (on the node underlay).
    pub lb_pool: Ipv4Net,
}

/// Reads used sets and fills in allocated values. Cheap to clone.
#[derive(Clone)]
pub struct Allocator {
    storage: Storage,
    ranges: Ranges,
    /// Where the next cluster IP search starts: an index into the
    /// assignable addresses ([`alloc::cluster_ip_candidate`]), shared by the
    /// clones. Only a hint: etcd's allocation keys decide what is free.
    cluster_ip_cursor: Arc<AtomicU64>,
}

impl Allocator {
    pub fn new(storage: Storage, ranges: Ranges) -> Self {
        Self {
            storage,
            ranges,
            cluster_ip_cursor: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Fills in cluster IPs, node ports and pod CIDRs the object needs and does
    /// not hold yet. Values already held by `old` are kept as they are.
    pub async fn allocate(
        &self,
        kind: &ResourceKind,
        obj: &mut ApiObject,
        old: Option<&ApiObject>,
    ) -> Result<(), ApiError> {
        let held = old
            .map(|o| lifecycle::claims_of(kind, o))
            .unwrap_or_default();
        match kind.kind {
            "Service" => {
                self.allocate_service(obj, &held).await?;
                self.allocate_lb_ip(obj, &held).await
            }
            "Node" => self.allocate_node(obj, &held).await,
            _ => Ok(()),
        }
    }

    async fn allocate_service(
        &self,
        obj: &mut ApiObject,
        held: &BTreeSet<String>,
    ) -> Result<(), ApiError> {
        let Some(Value::Object(spec)) = obj.body.get("spec").cloned() else {
            return Ok(());
        };
        let mut spec = spec;
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return Ok(());
        }
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if requested == "None" {
            spec.insert("clusterIPs".into(), serde_json::json!(["None"]));
        } else if requested.is_empty() || !held.contains(&format!("{SERVICE_IPS}{requested}")) {
            let req_ip = if requested.is_empty() {
                None
            } else {
                Some(requested.parse::<Ipv4Addr>().map_err(|_| {
                    admission::invalid(
                        obj,
                        vec![FieldError::invalid(
                            "spec.clusterIPs",
                            format!("[{requested:?}]"),
                            "must be a valid IPv4 address",
                        )],
                    )
                })?)
            };
            // A requested address needs only its own key. Otherwise the
            // addresses after the cursor are tried one key each (next fit:
            // O(1) while addresses are handed out in order); only if a few
            // in a row are taken is the whole used set read for the lowest
            // free one, and the cursor moves past it. Either way the claim key
            // is written in the object's transaction, so a race fails the
            // write and the registry allocates again.
            let (used, req_ip): (BTreeSet<Ipv4Addr>, _) = match req_ip {
                Some(ip) => (
                    self.taken_service_ip(ip).await?.into_iter().collect(),
                    Some(ip),
                ),
                None => match self.probe_free_service_ip().await? {
                    Some(ip) => (BTreeSet::new(), Some(ip)),
                    None => (
                        self.storage
                            .keys(SERVICE_IPS)
                            .await?
                            .iter()
                            .filter_map(|k| k.strip_prefix(SERVICE_IPS)?.parse().ok())
                            .collect(),
                        None,
                    ),
                },
            };
            let from_scan = req_ip.is_none();
            let ip = alloc::allocate_cluster_ip(self.ranges.service_cidr, &used, req_ip).map_err(
                |e| match e {
                    AllocError::IpRangeFull => {
                        ApiError::Internal(format!("Internal error occurred: {e}"))
                    }
                    e => admission::invalid(
                        obj,
                        vec![FieldError::invalid(
                            "spec.clusterIPs",
                            format!("[{requested:?}]"),
                            e.to_string(),
                        )],
                    ),
                },
            )?;
            if from_scan {
                self.move_cursor_past(ip);
            }
            spec.insert("clusterIP".into(), Value::String(ip.to_string()));
            spec.insert("clusterIPs".into(), serde_json::json!([ip.to_string()]));
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            let mut used: BTreeSet<u16> = self
                .storage
                .keys(NODE_PORTS)
                .await?
                .iter()
                .filter_map(|k| k.strip_prefix(NODE_PORTS)?.parse().ok())
                .collect();
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for (i, p) in ports.iter_mut().enumerate() {
                    let req = p
                        .get("nodePort")
                        .and_then(Value::as_i64)
                        .filter(|n| *n != 0);
                    if let Some(n) = req
                        && held.contains(&format!("{NODE_PORTS}{n}"))
                    {
                        continue;
                    }
                    let req32 = req.map(|n| i32::try_from(n).unwrap_or(-1));
                    let port = alloc::allocate_node_port(alloc::NODE_PORT_RANGE, &used, req32)
                        .map_err(|e| match e {
                            AllocError::PortRangeFull => ApiError::Internal(format!(
                                "Internal error occurred: failed to allocate a nodePort: {e}"
                            )),
                            e => admission::invalid(
                                obj,
                                vec![FieldError::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    req.unwrap_or_default().to_string(),
                                    e.to_string(),
                                )],
                            ),
                        })?;
                    used.insert(port);
                    if let Value::Object(pm) = p {
                        pm.insert("nodePort".into(), Value::from(port));
                    }
                }
            }
        }
        obj.body.insert("spec".into(), Value::Object(spec));
        Ok(())
    }

    /// `Some(ip)` if `ip` is allocated to a service.
    async fn taken_service_ip(&self, ip: Ipv4Addr) -> Result<Option<Ipv4Addr>, ApiError> {
        Ok(self
            .storage
            .get(&format!("{SERVICE_IPS}{ip}"))
            .await?
            .map(|_| ip))
    }

    /// A free cluster IP among the next [`CLUSTER_IP_PROBES`] addresses
    /// from the cursor (one etcd read each; the cursor moves past each one
    /// tried, and wraps), or `None` if all of them were taken.
    async fn probe_free_service_ip(&self) -> Result<Option<Ipv4Addr>, ApiError> {
        for _ in 0..CLUSTER_IP_PROBES {
            let n = self.cluster_ip_cursor.fetch_add(1, Ordering::Relaxed);
            let Some(ip) = alloc::cluster_ip_candidate(self.ranges.service_cidr, n) else {
                return Ok(None);
            };
            if self.taken_service_ip(ip).await?.is_none() {
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    /// Points the cursor at the address after `ip`.
    fn move_cursor_past(&self, ip: Ipv4Addr) {
        if let Some(first) = alloc::cluster_ip_candidate(self.ranges.service_cidr, 0) {
            let next = u64::from(u32::from(ip).wrapping_sub(u32::from(first))) + 1;
            self.cluster_ip_cursor.store(next, Ordering::Relaxed);
        }
    }

    /// Keeps `status.loadBalancer.ingress` of a Service true: the address
    /// held (or asked for with `spec.loadBalancerIP`, or the lowest free one
    /// of the pool) for type LoadBalancer, nothing for other types — so a
    /// type change or a delete releases the address through the claim diff.
    /// The API server owns this status field: whatever a status writer put
    /// there is replaced.
    async fn allocate_lb_ip(
        &self,
        obj: &mut ApiObject,
        held: &BTreeSet<String>,
    ) -> Result<(), ApiError> {
        let ingress = if obj.str_at(&["spec", "type"]) == Some("LoadBalancer") {
            let held_ip = held
                .iter()
                .find_map(|k| k.strip_prefix(LB_IPS)?.parse::<Ipv4Addr>().ok());
            let requested = obj
                .str_at(&["spec", "loadBalancerIP"])
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<Ipv4Addr>().map_err(|_| {
                        admission::invalid(
                            obj,
                            vec![FieldError::invalid(
                                "spec.loadBalancerIP",
                                format!("{s:?}"),
                                "must be a valid IPv4 address",
                            )],
                        )
                    })
                })
                .transpose()?;
            let used: BTreeSet<Ipv4Addr> = if requested.is_some() || held_ip.is_none() {
                self.storage
                    .keys(LB_IPS)
                    .await?
                    .iter()
                    .filter_map(|k| k.strip_prefix(LB_IPS)?.parse().ok())
                    .collect()
            } else {
                BTreeSet::new()
            };
            match alloc::allocate_lb_ip(self.ranges.lb_pool, &used, held_ip, requested) {
                Ok(ip) => Some(ip),
                // Pending, like a Service no load balancer has picked up yet.
                Err(AllocError::LbPoolFull { pool }) => {
                    tracing::warn!(service = obj.name(), namespace = obj.namespace(), %pool,
                        "LoadBalancer pool exhausted; the Service stays pending");
                    None
                }
                Err(e) => {
                    let value =
                        format!("{:?}", requested.map(|r| r.to_string()).unwrap_or_default());
                    return Err(admission::invalid(
                        obj,
                        vec![FieldError::invalid(
                            "spec.loadBalancerIP",
                            value,
                            e.to_string(),
                        )],
                    ));
                }
            }
        } else {
            None
        };
        set_lb_ingress(obj, ingress);
        Ok(())
    }

    async fn allocate_node(
        &self,
        obj: &mut ApiObject,
        held: &BTreeSet<String>,
    ) -> Result<(), ApiError> {
        let spec = obj
            .body
            .entry("spec")
            .or_insert_with(|| serde_json::json!({}));
        let Value::Object(spec) = spec else {
            return Ok(());
        };
        let current = spec
            .get("podCIDR")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !current.is_empty() {
            if spec
                .get("podCIDRs")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                spec.insert("podCIDRs".into(), serde_json::json!([current]));
            }
            let taken_by_other = match current.parse::<ipnet::IpNet>() {
                Ok(c) => {
                    let k = lifecycle::pod_cidr_key(&c);
                    !held.contains(&k) && self.storage.get(&k).await?.is_some()
                }
                Err(_) => false,
            };
            if taken_by_other {
                return Err(admission::invalid(
                    obj,
                    vec![FieldError::invalid(
                        "spec.podCIDR",
                        format!("{current:?}"),
                        "the CIDR is already allocated to another node",
                    )],
                ));
            }
            return Ok(());
        }
        let used: BTreeSet<Ipv4Net> = self
            .storage
            .keys(POD_CIDRS)
            .await?
            .iter()
            .filter_map(|k| lifecycle::pod_cidr_from_key(k))
            .collect();
        let cidr =
            alloc::allocate_pod_cidr(self.ranges.cluster_cidr, self.ranges.node_cidr_mask, &used)
                .map_err(|e| ApiError::Internal(format!("cannot allocate a pod CIDR: {e}")))?;
        let Some(Value::Object(spec)) = obj.body.get_mut("spec") else {
            return Ok(());
        };
        spec.insert("podCIDR".into(), Value::String(cidr.to_string()));
        spec.insert("podCIDRs".into(), serde_json::json!([cidr.to_string()]));
        Ok(())
    }
}

/// Writes `status.loadBalancer` of a Service: one ingress entry (ipMode VIP:
/// the datapath translates the address itself) or none.
fn set_lb_ingress(obj: &mut ApiObject, ip: Option<Ipv4Addr>) {
    let lb = match ip {
        Some(ip) => serde_json::json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}),
        None => serde_json::json!({}),
    };
    let status = obj
        .body
        .entry("status")
        .or_insert_with(|| serde_json::json!({}));
    if let Value::Object(status) = status {
        status.insert("loadBalancer".into(), lb);
    }
}

/// Allocation keys with their values (the owner's namespace/name, for debugging).
pub fn claim_values(obj: &ApiObject, keys: &BTreeSet<String>) -> Vec<(String, Vec<u8>)> {
    let owner = format!("{}/{}/{}", obj.kind, obj.namespace(), obj.name()).into_bytes();
    keys.iter().map(|k| (k.clone(), owner.clone())).collect()
}
