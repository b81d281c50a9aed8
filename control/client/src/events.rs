//! Recording Events (core/v1 `Event`), the way kubelet's and the
//! controllers' event recorders do, so `weir describe` can show what
//! happened to an object.
//!
//! ```ignore
//! let recorder = Recorder::new(client.clone(), "default-scheduler", None);
//! recorder
//!     .normal(&reference(&pod), "Scheduled", &format!("Successfully assigned {ns}/{name} to {node}"))
//!     .await?;
//! ```
//!
//! Repeats are aggregated like Kubernetes' event correlator: the Event's
//! name is a hash of (involved object, source, type, reason, message), so
//! the same happening recorded again — by this process or by another replica
//! — bumps `count` and `lastTimestamp` of one Event instead of adding more.
//! The API server expires Events one hour (`--event-ttl-seconds`) after
//! their last write.
//!
//! Recording is best effort: callers should log a failure and carry on, an
//! Event must never block or fail the work it describes.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{Metadata, Resource};

use crate::{Client, Error, Result};

/// How often a lost race with another writer of the same Event is retried.
const MAX_ATTEMPTS: usize = 4;

/// The longest name kept from the involved object (a name is at most 253
/// characters; the hash suffix takes 17).
const MAX_PREFIX: usize = 253 - 17;

/// Kubernetes' two event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened (Scheduled, Pulled, Started, ScalingReplicaSet).
    Normal,
    /// Something went wrong (FailedScheduling, BackOff, Unhealthy).
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The reference an Event points at, built from any API object.
pub fn reference<K>(obj: &K) -> ObjectReference
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let m = obj.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// Records Events on behalf of one component. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    source: EventSource,
}

impl Recorder {
    /// `component` as Kubernetes names it ("default-scheduler",
    /// "deployment-controller", "kubelet"); `host` is the node name for
    /// agents, `None` for control-plane components.
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Self {
        Self {
            client,
            source: EventSource {
                component: Some(component.to_string()),
                host: host.map(str::to_string),
            },
        }
    }

    pub async fn normal(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        message: &str,
    ) -> Result<Event> {
        self.record(regarding, EventType::Normal, reason, message)
            .await
    }

    pub async fn warning(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        message: &str,
    ) -> Result<Event> {
        self.record(regarding, EventType::Warning, reason, message)
            .await
    }

    /// Creates the Event, or bumps the count of the same Event recorded before.
    pub async fn record(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Event> {
        let fresh = new_event(regarding, &self.source, type_, reason, message, now());
        let ns = fresh.metadata.namespace.clone().unwrap_or_default();
        let name = fresh.metadata.name.clone().unwrap_or_default();
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let result = match self.client.get_opt::<Event>(&ns, &name).await? {
                Some(existing) => self.client.update(&bump(existing, now())).await,
                None => self.client.create(&fresh).await,
            };
            match result {
                Err(e @ (Error::Conflict(_) | Error::AlreadyExists(_))) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Conflict(format!("event {ns}/{name}"))))
    }
}

fn now() -> Time {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let ts = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or_default())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// 64-bit FNV-1a: stable across processes and builds (std's hasher is not).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The deterministic name of an Event: `<object name>.<16 hex>`, like
/// Kubernetes' `<object name>.<hex>` names.
pub fn event_name(
    regarding: &ObjectReference,
    source: &EventSource,
    type_: EventType,
    reason: &str,
    message: &str,
) -> String {
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let h = fnv1a(&[
        &s(&regarding.kind),
        &s(&regarding.namespace),
        &s(&regarding.name),
        &s(&regarding.uid),
        &s(&regarding.field_path),
        &s(&source.component),
        &s(&source.host),
        type_.as_str(),
        reason,
        message,
    ]);
    let object = s(&regarding.name);
    let mut prefix: String = object
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .take(MAX_PREFIX)
        .collect();
    prefix = prefix.trim_matches(|c| c == '-' || c == '.').to_string();
    if prefix.is_empty() {
        prefix = "event".into();
    }
    format!("{prefix}.{h:016x}")
}

/// A first-time Event (count 1). Events about cluster-scoped objects (Nodes)
/// live in "default", as in Kubernetes.
pub fn new_event(
    regarding: &ObjectReference,
    source: &EventSource,
    type_: EventType,
    reason: &str,
    message: &str,
    now: Time,
) -> Event {
    let namespace = regarding
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(regarding, source, type_, reason, message)),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: regarding.clone(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(type_.as_str().to_string()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(source.clone()),
        reporting_component: source.component.clone(),
        reporting_instance: source.host.clone().or_else(|| source.component.clone()),
        ..Default::default()
    }
}

/// The same Event seen again: one more in `count`, a new `lastTimestamp`.
pub fn bump(mut existing: Event, now: Time) -> Event {
    existing.count = Some(existing.count.unwrap_or(1).saturating_add(1));
    if existing.first_timestamp.is_none() {
        existing.first_timestamp = existing.last_timestamp.clone().or(Some(now.clone()));
    }
    existing.last_timestamp = Some(now);
    existing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_ref(name: &str, ns: Option<&str>) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            uid: Some("u-1".into()),
            ..Default::default()
        }
    }

    fn src(c: &str) -> EventSource {
        EventSource {
            component: Some(c.into()),
            host: None,
        }
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn names_aggregate_the_same_happening_only() {
        let r = pod_ref("web-1", Some("default"));
        let a = event_name(
            &r,
            &src("default-scheduler"),
            EventType::Normal,
            "Scheduled",
            "m",
        );
        assert_eq!(
            a,
            event_name(
                &r,
                &src("default-scheduler"),
                EventType::Normal,
                "Scheduled",
                "m"
            )
        );
        assert!(a.starts_with("web-1."), "{a}");
        assert_eq!(a.len(), "web-1.".len() + 16);
        let differs = [
            event_name(
                &r,
                &src("default-scheduler"),
                EventType::Warning,
                "Scheduled",
                "m",
            ),
            event_name(
                &r,
                &src("default-scheduler"),
                EventType::Normal,
                "Other",
                "m",
            ),
            event_name(
                &r,
                &src("default-scheduler"),
                EventType::Normal,
                "Scheduled",
                "m2",
            ),
            event_name(&r, &src("kubelet"), EventType::Normal, "Scheduled", "m"),
            event_name(
                &pod_ref("web-2", Some("default")),
                &src("default-scheduler"),
                EventType::Normal,
                "Scheduled",
                "m",
            ),
        ];
        for d in differs {
            assert_ne!(a, d);
        }
    }

    #[test]
    fn names_are_valid_subdomains_for_any_object_name() {
        let cases = ["", "-", "Node_A", &"x".repeat(300), "a.b-c"];
        for name in cases {
            let n = event_name(&pod_ref(name, None), &src("c"), EventType::Normal, "R", "m");
            assert!(n.len() <= 253, "{name}: {n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
                "{name}: {n}"
            );
            assert!(
                n.starts_with(|c: char| c.is_ascii_alphanumeric()),
                "{name}: {n}"
            );
        }
    }

    #[test]
    fn new_and_bumped_events() {
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("node1".into()),
            ..Default::default()
        };
        let e = new_event(
            &node,
            &src("node-controller"),
            EventType::Warning,
            "NodeNotReady",
            "gone",
            t(100),
        );
        assert_eq!(
            e.metadata.namespace.as_deref(),
            Some("default"),
            "cluster-scoped objects: default"
        );
        assert_eq!(e.count, Some(1));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.first_timestamp, Some(t(100)));
        assert_eq!(e.involved_object.name.as_deref(), Some("node1"));
        assert_eq!(e.reporting_component.as_deref(), Some("node-controller"));
        let b = bump(bump(e, t(150)), t(200));
        assert_eq!(b.count, Some(3));
        assert_eq!(b.first_timestamp, Some(t(100)));
        assert_eq!(b.last_timestamp, Some(t(200)));
        let in_ns = new_event(
            &pod_ref("p", Some("team")),
            &src("c"),
            EventType::Normal,
            "R",
            "m",
            t(1),
        );
        assert_eq!(in_ns.metadata.namespace.as_deref(), Some("team"));
    }
}
