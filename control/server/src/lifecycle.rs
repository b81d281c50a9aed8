//! Pure decisions about an object's lifecycle: what the server fills in on
//! create, what an update may change, how a delete proceeds, and which
//! allocation keys an object holds. The registry performs the I/O around them.
//! Time and randomness come in as arguments.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use weir_api::ResourceKind;

use crate::error::ApiError;
use crate::object::ApiObject;

/// Etcd key prefixes of the allocation ranges: one key per allocated value,
/// created in the same transaction as the object that holds it.
pub const SERVICE_IPS: &str = "/registry/ranges/serviceips/";
pub const NODE_PORTS: &str = "/registry/ranges/servicenodeports/";
pub const POD_CIDRS: &str = "/registry/ranges/podcidrs/";
/// LoadBalancer ingress addresses (LB-IPAM), one key per address.
pub const LB_IPS: &str = "/registry/ranges/loadbalancerips/";

/// Server-chosen values for a create.
#[derive(Debug, Clone)]
pub struct CreateContext {
    pub now: Time,
    pub uid: String,
    /// Suffix for `generateName`.
    pub suffix: String,
}

/// Fills in what the server owns on create: namespace default, name from
/// generateName, uid, creationTimestamp, generation; rejects a resourceVersion.
pub fn prepare_create(
    kind: &ResourceKind,
    obj: &mut ApiObject,
    ctx: &CreateContext,
) -> Result<(), ApiError> {
    if obj
        .metadata
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::BadRequest(
            "resourceVersion should not be set on objects to be created".into(),
        ));
    }
    let m = &mut obj.metadata;
    if kind.namespaced {
        if m.namespace.as_deref().is_none_or(str::is_empty) {
            m.namespace = Some("default".into());
        }
    } else {
        m.namespace = None;
    }
    weir_api::defaults::apply_generate_name(m, &ctx.suffix);
    m.uid = Some(ctx.uid.clone());
    m.creation_timestamp = Some(ctx.now.clone());
    m.generation = Some(1);
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    // Phases the server owns from the start, as Kubernetes' strategies set them.
    let initial_phase = match kind.kind {
        "Pod" => Some("Pending"),
        "Namespace" => Some("Active"),
        _ => None,
    };
    if let Some(phase) = initial_phase
        && !obj.body.contains_key("status")
    {
        obj.body
            .insert("status".into(), serde_json::json!({ "phase": phase }));
    }
    Ok(())
}

/// Builds the object an Update stores: the request's metadata and spec, the
/// stored status, and the server-owned metadata of the stored object.
pub fn merge_update(old: &ApiObject, mut new: ApiObject) -> ApiObject {
    carry_server_metadata(old, &mut new);
    match old.body.get("status") {
        Some(s) => new.body.insert("status".into(), s.clone()),
        None => new.body.remove("status"),
    };
    new.metadata.generation = Some(next_generation(old, &new));
    new
}

/// Builds the object an UpdateStatus stores: the stored object with the
/// request's status.
pub fn merge_status(old: &ApiObject, new: &ApiObject) -> ApiObject {
    let mut merged = old.clone();
    match new.body.get("status") {
        Some(s) => merged.body.insert("status".into(), s.clone()),
        None => merged.body.remove("status"),
    };
    merged
}

fn carry_server_metadata(old: &ApiObject, new: &mut ApiObject) {
    let (o, n) = (&old.metadata, &mut new.metadata);
    n.name.clone_from(&o.name);
    n.namespace.clone_from(&o.namespace);
    n.uid.clone_from(&o.uid);
    n.creation_timestamp.clone_from(&o.creation_timestamp);
    n.deletion_timestamp.clone_from(&o.deletion_timestamp);
    n.deletion_grace_period_seconds = o.deletion_grace_period_seconds;
    n.generate_name.clone_from(&o.generate_name);
}

/// Generation counts changes of the desired state (everything but metadata and status).
fn next_generation(old: &ApiObject, new: &ApiObject) -> i64 {
    let g = old.metadata.generation.unwrap_or(1);
    if old.desired_state() == new.desired_state() {
        g
    } else {
        g + 1
    }
}

/// Kubernetes fills allocated values that an update leaves out (clusterIP,
/// node ports, podCIDR) from the stored object, so `apply` of the original
/// manifest does not try to change them.
pub fn patch_allocated(kind: &ResourceKind, old: &ApiObject, new: &mut ApiObject) {
    let (Some(Value::Object(old_spec)), Some(Value::Object(new_spec))) =
        (old.body.get("spec"), new.body.get_mut("spec"))
    else {
        return;
    };
    let keep = |field: &str, new_spec: &mut serde_json::Map<String, Value>| {
        let empty = match new_spec.get(field) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if empty && let Some(v) = old_spec.get(field) {
            new_spec.insert(field.to_string(), v.clone());
        }
    };
    match kind.kind {
        "Service" => {
            keep("clusterIP", new_spec);
            keep("clusterIPs", new_spec);
            keep("healthCheckNodePort", new_spec);
            // Node ports, matched by (port, protocol): kept when the new type
            // needs them, dropped when the type no longer does (Kubernetes'
            // dropTypeDependentFields), so switching type needs no manual edit.
            let needs_node_ports = matches!(
                new_spec.get("type").and_then(Value::as_str),
                Some("NodePort" | "LoadBalancer")
            );
            let old_ports = old_spec
                .get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(Value::Array(ports)) = new_spec.get_mut("ports") {
                for p in ports.iter_mut() {
                    let same = |o: &&Value| {
                        o.get("port") == p.get("port")
                            && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                                == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    };
                    let old_np = old_ports
                        .iter()
                        .find(same)
                        .and_then(|o| o.get("nodePort"))
                        .and_then(Value::as_i64)
                        .filter(|n| *n != 0);
                    let new_np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
                    let Value::Object(pm) = p else { continue };
                    match (needs_node_ports, old_np) {
                        (true, Some(np)) if new_np == 0 => {
                            pm.insert("nodePort".into(), Value::from(np));
                        }
                        (false, Some(np)) if new_np == np => {
                            pm.remove("nodePort");
                        }
                        _ => {}
                    }
                }
            }
        }
        "Node" => {
            keep("podCIDR", new_spec);
            keep("podCIDRs", new_spec);
        }
        _ => {}
    }
}

/// Field errors for changes Kubernetes forbids on update.
pub fn immutable_changes(kind: &ResourceKind, old: &ApiObject, new: &ApiObject) -> Vec<String> {
    let mut errs = Vec::new();
    let changed = |path: &[&str]| {
        let o = old.str_at(path).unwrap_or_default();
        let n = new.str_at(path).unwrap_or_default();
        (!o.is_empty() && o != n).then(|| (o.to_string(), n.to_string()))
    };
    match kind.kind {
        "Service" => {
            if let Some((_, n)) = changed(&["spec", "clusterIP"]) {
                errs.push(format!(
                    "spec.clusterIPs[0]: Invalid value: {n:?}: may not change once set"
                ));
            }
        }
        "Pod" if pod_spec_mutable_view(old) != pod_spec_mutable_view(new) => {
            errs.push(POD_SPEC_FORBIDDEN.to_string());
        }
        "ControllerRevision" => errs.extend(
            weir_api::validation::controller_revision_update(
                old.body.get("data"),
                new.body.get("data"),
            )
            .iter()
            .map(ToString::to_string),
        ),
        "Job" => {
            let typed = (old.to_typed(), new.to_typed());
            if let (Ok(o), Ok(n)) = typed {
                let e = weir_api::validation::validate_job_update(&o, &n);
                errs.extend(e.iter().map(ToString::to_string));
            }
        }
        "Node" => {
            if let Some((_, n)) = changed(&["spec", "podCIDR"]) {
                errs.push(format!(
                    "spec.podCIDR: Forbidden: node updates may not change podCIDR except from \"\" to valid (requested {n:?})"
                ));
            }
        }
        _ => {}
    }
    errs
}

const POD_SPEC_FORBIDDEN: &str = "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)";

/// A pod's spec without the fields an update may change (container images,
/// activeDeadlineSeconds, tolerations): two specs with the same view differ
/// only in allowed ways. Pods are immutable otherwise because the node agent
/// has already acted on the spec.
fn pod_spec_mutable_view(pod: &ApiObject) -> Option<Value> {
    let mut spec = pod.body.get("spec")?.clone();
    if let Value::Object(m) = &mut spec {
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        for list in ["containers", "initContainers"] {
            for c in m
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Value::Object(cm) = c {
                    cm.remove("image");
                }
            }
        }
    }
    Some(spec)
}

/// Whether an update of an object marked for deletion completes the deletion:
/// no finalizers left and no grace period pending (Kubernetes'
/// `ShouldDeleteDuringUpdate`).
pub fn should_delete_on_update(obj: &ApiObject) -> bool {
    let m = &obj.metadata;
    m.deletion_timestamp.is_some()
        && m.finalizers.as_ref().is_none_or(Vec::is_empty)
        && m.deletion_grace_period_seconds.unwrap_or(0) == 0
}

/// A delete's propagationPolicy: what happens to the objects the deleted one
/// owns (through their ownerReferences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// The object goes now; the garbage collector removes dependents later.
    #[default]
    Background,
    /// The object stays (finalizer `foregroundDeletion`) until the garbage
    /// collector has deleted its dependents.
    Foreground,
    /// The object stays (finalizer `orphan`) until the garbage collector has
    /// removed the owner reference from its dependents, which survive.
    Orphan,
}

impl Propagation {
    /// Parses the request field; empty means Background.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "" | "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            "Orphan" => Ok(Self::Orphan),
            other => Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Background\", \"Foreground\", \"Orphan\""
            ))),
        }
    }

    /// The finalizer that makes the garbage collector finish this policy.
    pub fn finalizer(self) -> Option<&'static str> {
        match self {
            Self::Background => None,
            Self::Foreground => Some("foregroundDeletion"),
            Self::Orphan => Some("orphan"),
        }
    }
}

/// What a Delete request does to a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletePlan {
    /// Remove it from storage now.
    Remove,
    /// Keep it, marked with deletionTimestamp = `at` and this grace period,
    /// adding `add_finalizer` if set: finalizers or a node still have work to do.
    Mark {
        at: Time,
        grace_seconds: i64,
        add_finalizer: Option<&'static str>,
    },
    /// Already marked at least as strictly: nothing to write.
    Unchanged,
}

/// Decides a delete. Pods bound to a node are deleted gracefully (the node's
/// agent stops the containers and then deletes with grace 0); objects with
/// finalizers (including the one a Foreground/Orphan policy adds) wait for
/// them; everything else goes at once.
pub fn plan_delete(
    kind: &ResourceKind,
    obj: &ApiObject,
    requested_grace: Option<i64>,
    propagation: Propagation,
    now: &Time,
) -> DeletePlan {
    let m = &obj.metadata;
    let has = |f: &str| m.finalizers.iter().flatten().any(|x| x == f);
    let has_finalizers = m.finalizers.as_ref().is_some_and(|f| !f.is_empty());
    let add_finalizer = propagation.finalizer().filter(|f| !has(f));
    let grace = if kind.kind == "Pod" {
        pod_grace(obj, requested_grace)
    } else {
        0
    };
    let marked = m
        .deletion_timestamp
        .clone()
        .zip(m.deletion_grace_period_seconds);
    if grace > 0 {
        return match (marked, add_finalizer) {
            // A pending graceful delete may only be shortened.
            (Some((_, g)), None) if g <= grace => DeletePlan::Unchanged,
            (Some((at, g)), Some(_)) if g <= grace => DeletePlan::Mark {
                at,
                grace_seconds: g,
                add_finalizer,
            },
            _ => DeletePlan::Mark {
                at: Time(now.0.checked_add(jiff_seconds(grace)).unwrap_or(now.0)),
                grace_seconds: grace,
                add_finalizer,
            },
        };
    }
    if has_finalizers || add_finalizer.is_some() {
        return match marked {
            Some((_, 0)) if add_finalizer.is_none() => DeletePlan::Unchanged,
            _ => DeletePlan::Mark {
                at: m.deletion_timestamp.clone().unwrap_or_else(|| now.clone()),
                grace_seconds: 0,
                add_finalizer,
            },
        };
    }
    DeletePlan::Remove
}

fn jiff_seconds(s: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(s)
}

/// The grace period of a pod delete: 0 for unbound or finished pods (nothing
/// runs that could be stopped gracefully), else the request's value, else the
/// pod's terminationGracePeriodSeconds, else 30.
fn pod_grace(pod: &ApiObject, requested: Option<i64>) -> i64 {
    let bound = pod
        .str_at(&["spec", "nodeName"])
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.str_at(&["status", "phase"]),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    let spec_grace = pod
        .body
        .get("spec")
        .and_then(|s| s.get("terminationGracePeriodSeconds"))
        .and_then(Value::as_i64);
    requested.or(spec_grace).unwrap_or(30).max(0)
}

/// The allocation keys `obj` holds (cluster IPs, node ports, pod CIDRs).
pub fn claims_of(kind: &ResourceKind, obj: &ApiObject) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let Some(spec) = obj.body.get("spec") else {
        return keys;
    };
    let strings = |field: &str| -> Vec<String> {
        let mut out: Vec<String> = spec
            .get(field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.retain(|s| !s.is_empty());
        out
    };
    let single = |field: &str| {
        spec.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match kind.kind {
        "Service" => {
            let mut ips = strings("clusterIPs");
            ips.extend(single("clusterIP"));
            for ip in ips
                .iter()
                .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
            {
                keys.insert(format!("{SERVICE_IPS}{ip}"));
            }
            for p in spec
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(np) = p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0)
                {
                    keys.insert(format!("{NODE_PORTS}{np}"));
                }
            }
            for ip in lb_ingress_ips(obj) {
                keys.insert(format!("{LB_IPS}{ip}"));
            }
        }
        "Node" => {
            let mut cidrs = strings("podCIDRs");
            cidrs.extend(single("podCIDR"));
            for c in cidrs.iter().filter_map(|c| c.parse::<ipnet::IpNet>().ok()) {
                keys.insert(pod_cidr_key(&c));
            }
        }
        _ => {}
    }
    keys
}

/// The ingress addresses a LoadBalancer Service holds
/// (`status.loadBalancer.ingress[].ip`); none for other types, whose status
/// the allocator clears.
pub fn lb_ingress_ips(obj: &ApiObject) -> Vec<std::net::Ipv4Addr> {
    if obj.str_at(&["spec", "type"]) != Some("LoadBalancer") {
        return Vec::new();
    }
    obj.body
        .get("status")
        .and_then(|s| s.get("loadBalancer"))
        .and_then(|l| l.get("ingress"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("ip")?.as_str()?.parse().ok())
        .collect()
}

/// The allocation key of a pod CIDR (`/` is the key separator, so it becomes `-`).
pub fn pod_cidr_key(c: &ipnet::IpNet) -> String {
    format!("{POD_CIDRS}{}-{}", c.network(), c.prefix_len())
}

/// Parses a pod CIDR allocation key's last segment back.
pub fn pod_cidr_from_key(key: &str) -> Option<ipnet::Ipv4Net> {
    let (ip, len) = key.strip_prefix(POD_CIDRS)?.split_once('-')?;
    ipnet::Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(k: &str) -> &'static ResourceKind {
        ResourceKind::by_kind(k).expect("known kind")
    }

    fn obj(v: Value) -> ApiObject {
        serde_json::from_value(v).expect("object")
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("time"))
    }

    #[test]
    fn create_fills_server_fields() {
        let ctx = CreateContext {
            now: t(100),
            uid: "u-1".into(),
            suffix: "x7k2q".into(),
        };
        let mut pod = obj(
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{}}),
        );
        prepare_create(kind("Pod"), &mut pod, &ctx).unwrap();
        assert_eq!(pod.name(), "web-x7k2q");
        assert_eq!(pod.namespace(), "default");
        assert_eq!(pod.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(pod.metadata.generation, Some(1));
        assert_eq!(pod.str_at(&["status", "phase"]), Some("Pending"));

        let mut node = obj(json!({"kind":"Node","metadata":{"name":"n1","namespace":"x"}}));
        prepare_create(kind("Node"), &mut node, &ctx).unwrap();
        let mut ns = obj(json!({"kind":"Namespace","metadata":{"name":"team"}}));
        prepare_create(kind("Namespace"), &mut ns, &ctx).unwrap();
        assert_eq!(ns.str_at(&["status", "phase"]), Some("Active"));
        assert_eq!(
            node.metadata.namespace, None,
            "cluster-scoped objects have no namespace"
        );

        let mut with_rv = obj(json!({"kind":"Pod","metadata":{"name":"a","resourceVersion":"5"}}));
        assert!(matches!(
            prepare_create(kind("Pod"), &mut with_rv, &ctx),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn update_keeps_status_and_bumps_generation_on_spec_change() {
        let old = obj(
            json!({"kind":"Deployment","metadata":{"name":"d","namespace":"default","uid":"u","generation":3},
            "spec":{"replicas":1},"status":{"replicas":1}}),
        );
        let same = obj(
            json!({"kind":"Deployment","metadata":{"name":"d","namespace":"default","labels":{"a":"b"}},
            "spec":{"replicas":1},"status":{"replicas":9}}),
        );
        let m = merge_update(&old, same);
        assert_eq!(m.metadata.generation, Some(3));
        assert_eq!(m.metadata.uid.as_deref(), Some("u"));
        assert_eq!(m.body["status"], json!({"replicas":1}));
        assert!(m.metadata.labels.is_some(), "metadata from the request");

        let changed = obj(
            json!({"kind":"Deployment","metadata":{"name":"d","namespace":"default"},"spec":{"replicas":2}}),
        );
        assert_eq!(merge_update(&old, changed).metadata.generation, Some(4));

        let status = obj(
            json!({"kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":7},"status":{"replicas":2}}),
        );
        let s = merge_status(&old, &status);
        assert_eq!(s.body["spec"], json!({"replicas":1}));
        assert_eq!(s.body["status"], json!({"replicas":2}));
    }

    #[test]
    fn delete_plans() {
        use Propagation::{Background, Foreground, Orphan};
        let now = t(1000);
        let mark =
            |at: i64, grace_seconds: i64, add_finalizer: Option<&'static str>| DeletePlan::Mark {
                at: t(at),
                grace_seconds,
                add_finalizer,
            };
        let bound = json!({"kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"node1","terminationGracePeriodSeconds":10}});
        let mut marked = bound.clone();
        marked["metadata"]["deletionTimestamp"] = json!("1970-01-01T00:16:50Z");
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(10);
        let mut finished = bound.clone();
        finished["status"] = json!({"phase":"Succeeded"});
        let cm = json!({"kind":"ConfigMap","metadata":{"name":"c"}});
        let held = json!({"kind":"ConfigMap","metadata":{"name":"c","finalizers":["x"]}});
        let held_marked = json!({"kind":"ConfigMap","metadata":{"name":"c","finalizers":["orphan"],
            "deletionTimestamp":"1970-01-01T00:15:00Z","deletionGracePeriodSeconds":0}});
        type Case = (
            &'static str,
            &'static str,
            Value,
            Option<i64>,
            Propagation,
            DeletePlan,
        );
        let cases: Vec<Case> = vec![
            (
                "unbound pod",
                "Pod",
                json!({"kind":"Pod","metadata":{"name":"p"},"spec":{}}),
                None,
                Background,
                DeletePlan::Remove,
            ),
            (
                "bound pod, pod grace",
                "Pod",
                bound.clone(),
                None,
                Background,
                mark(1010, 10, None),
            ),
            (
                "bound pod, request grace",
                "Pod",
                bound.clone(),
                Some(5),
                Background,
                mark(1005, 5, None),
            ),
            (
                "bound pod, grace 0",
                "Pod",
                bound.clone(),
                Some(0),
                Background,
                DeletePlan::Remove,
            ),
            (
                "bound pod, foreground",
                "Pod",
                bound.clone(),
                None,
                Foreground,
                mark(1010, 10, Some("foregroundDeletion")),
            ),
            (
                "already marked",
                "Pod",
                marked.clone(),
                None,
                Background,
                DeletePlan::Unchanged,
            ),
            (
                "marked, shorter grace",
                "Pod",
                marked.clone(),
                Some(1),
                Background,
                mark(1001, 1, None),
            ),
            (
                "marked, orphan added, grace kept",
                "Pod",
                marked,
                None,
                Orphan,
                mark(1010, 10, Some("orphan")),
            ),
            (
                "finished pod",
                "Pod",
                finished,
                None,
                Background,
                DeletePlan::Remove,
            ),
            (
                "configmap",
                "ConfigMap",
                cm.clone(),
                None,
                Background,
                DeletePlan::Remove,
            ),
            (
                "configmap, orphan",
                "ConfigMap",
                cm.clone(),
                None,
                Orphan,
                mark(1000, 0, Some("orphan")),
            ),
            (
                "configmap, foreground",
                "ConfigMap",
                cm,
                None,
                Foreground,
                mark(1000, 0, Some("foregroundDeletion")),
            ),
            (
                "finalizers",
                "ConfigMap",
                held,
                None,
                Background,
                mark(1000, 0, None),
            ),
            (
                "finalizers, already marked",
                "ConfigMap",
                held_marked.clone(),
                None,
                Orphan,
                DeletePlan::Unchanged,
            ),
            (
                "marked, foreground added",
                "ConfigMap",
                held_marked,
                None,
                Foreground,
                mark(900, 0, Some("foregroundDeletion")),
            ),
        ];
        for (name, k, o, grace, prop, want) in cases {
            assert_eq!(
                plan_delete(kind(k), &obj(o), grace, prop, &now),
                want,
                "{name}"
            );
        }
        assert!(Propagation::parse("Sideways").is_err());
        assert_eq!(Propagation::parse("").unwrap(), Background);
    }

    #[test]
    fn delete_during_update_only_without_finalizers_and_grace() {
        let cases = [
            (json!({"name":"a"}), false),
            (
                json!({"name":"a","deletionTimestamp":"2026-01-01T00:00:00Z","deletionGracePeriodSeconds":0}),
                true,
            ),
            (
                json!({"name":"a","deletionTimestamp":"2026-01-01T00:00:00Z","deletionGracePeriodSeconds":0,"finalizers":["x"]}),
                false,
            ),
            (
                json!({"name":"a","deletionTimestamp":"2026-01-01T00:00:00Z","deletionGracePeriodSeconds":30}),
                false,
            ),
        ];
        for (meta, want) in cases {
            assert_eq!(
                should_delete_on_update(&obj(json!({"kind":"Pod","metadata":meta.clone()}))),
                want,
                "{meta}"
            );
        }
    }

    #[test]
    fn claims_and_patching() {
        let svc = obj(
            json!({"kind":"Service","metadata":{"name":"s"},"spec":{"clusterIP":"10.96.0.5","clusterIPs":["10.96.0.5"],
            "ports":[{"port":80,"nodePort":30080},{"port":81}]}}),
        );
        let want: BTreeSet<String> = [
            format!("{SERVICE_IPS}10.96.0.5"),
            format!("{NODE_PORTS}30080"),
        ]
        .into();
        assert_eq!(claims_of(kind("Service"), &svc), want);
        let lb = obj(
            json!({"kind":"Service","spec":{"type":"LoadBalancer","clusterIP":"10.96.0.5"},
            "status":{"loadBalancer":{"ingress":[{"ip":"172.30.0.201"}]}}}),
        );
        assert_eq!(
            claims_of(kind("Service"), &lb),
            [
                format!("{SERVICE_IPS}10.96.0.5"),
                format!("{LB_IPS}172.30.0.201")
            ]
            .into()
        );
        // A stale ingress on a Service that is no longer a LoadBalancer holds nothing.
        let was_lb = obj(
            json!({"kind":"Service","spec":{"type":"ClusterIP","clusterIP":"10.96.0.5"},
            "status":{"loadBalancer":{"ingress":[{"ip":"172.30.0.201"}]}}}),
        );
        assert_eq!(
            claims_of(kind("Service"), &was_lb),
            [format!("{SERVICE_IPS}10.96.0.5")].into()
        );
        let headless = obj(json!({"kind":"Service","spec":{"clusterIP":"None"}}));
        assert!(claims_of(kind("Service"), &headless).is_empty());
        let node = obj(
            json!({"kind":"Node","spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"]}}),
        );
        let key = format!("{POD_CIDRS}10.244.1.0-24");
        assert_eq!(claims_of(kind("Node"), &node), [key.clone()].into());
        assert_eq!(
            pod_cidr_from_key(&key),
            Some("10.244.1.0/24".parse().unwrap())
        );

        let mut update = obj(
            json!({"kind":"Service","spec":{"type":"NodePort","ports":[{"port":80},{"port":82}]}}),
        );
        patch_allocated(kind("Service"), &svc, &mut update);
        assert_eq!(update.str_at(&["spec", "clusterIP"]), Some("10.96.0.5"));
        assert_eq!(update.body["spec"]["ports"][0]["nodePort"], json!(30080));
        assert!(update.body["spec"]["ports"][1].get("nodePort").is_none());

        // Back to ClusterIP: the node port read from the old object is dropped.
        let mut to_cluster_ip = obj(
            json!({"kind":"Service","spec":{"type":"ClusterIP","ports":[{"port":80,"nodePort":30080}]}}),
        );
        patch_allocated(kind("Service"), &svc, &mut to_cluster_ip);
        assert!(
            to_cluster_ip.body["spec"]["ports"][0]
                .get("nodePort")
                .is_none()
        );
    }

    #[test]
    fn pod_spec_is_immutable_but_images() {
        let pod = |image: &str, restart: &str| {
            obj(json!({"kind":"Pod","metadata":{"name":"p"},
                "spec":{"restartPolicy":restart,"containers":[{"name":"c","image":image}]}}))
        };
        let old = pod("a:v1", "Always");
        assert!(immutable_changes(kind("Pod"), &old, &pod("a:v2", "Always")).is_empty());
        assert_eq!(
            immutable_changes(kind("Pod"), &old, &pod("a:v1", "Never")),
            vec![POD_SPEC_FORBIDDEN.to_string()]
        );
        let mut relabelled = old.clone();
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(immutable_changes(kind("Pod"), &old, &relabelled).is_empty());
    }

    #[test]
    fn immutable_fields() {
        let old = obj(json!({"kind":"Service","spec":{"clusterIP":"10.96.0.5"}}));
        let new = obj(json!({"kind":"Service","spec":{"clusterIP":"10.96.0.6"}}));
        assert_eq!(
            immutable_changes(kind("Service"), &old, &new),
            vec![
                "spec.clusterIPs[0]: Invalid value: \"10.96.0.6\": may not change once set"
                    .to_string()
            ]
        );
        assert!(immutable_changes(kind("Service"), &old, &old).is_empty());
    }
}
