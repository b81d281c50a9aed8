//! Small pure helpers shared by the controllers: pod readiness, owner
//! references and stable hashing.

use std::collections::BTreeMap;

use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use weir_api::selector::Selector;

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod became Ready (None when it is not Ready). A Ready condition
/// without a transition time counts as ready since the epoch.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| {
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH)
    })
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now`.
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => t + SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
    }
}

/// Whether the pod is on its way out (deletionTimestamp set).
pub fn terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether the pod still counts as a replica: not being deleted and not
/// finished (Succeeded/Failed pods never run again).
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !terminating(&pod.metadata) && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// The controller owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with this uid.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller owner reference to `owner` (controller=true, blockOwnerDeletion=true).
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The orphans among `candidates` that `owner` should adopt: no controller,
/// not being deleted, labels matched by the owner's selector. Each comes
/// back with a controller reference to `owner` added. An owner being deleted,
/// or with an empty or invalid selector, adopts nothing (an empty selector
/// would claim every object in the namespace).
pub fn adoptable<K: Metadata<Ty = ObjectMeta> + Clone>(
    owner: &ObjectMeta,
    api_version: &str,
    kind: &str,
    selector: &LabelSelector,
    candidates: &[K],
) -> Vec<K> {
    let Ok(sel) = Selector::from_label_selector(selector) else {
        return Vec::new();
    };
    if sel.is_empty() || terminating(owner) {
        return Vec::new();
    }
    candidates
        .iter()
        .filter(|c| {
            let m = c.metadata();
            controller_of(m).is_none()
                && !terminating(m)
                && m.namespace == owner.namespace
                && sel.matches(&labels(m))
        })
        .map(|c| {
            let mut c = c.clone();
            c.metadata_mut()
                .owner_references
                .get_or_insert_with(Vec::new)
                .push(controller_ref(api_version, kind, owner));
            c
        })
        .collect()
}

/// 32-bit FNV-1a: small, stable across releases and platforms (unlike
/// `std`'s SipHash with random keys), so names derived from it never change.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Encodes a hash as a short name-safe string. The alphabet has no vowels
/// (so no words appear in names) and no look-alikes (0/o, 1/l), like
/// Kubernetes' SafeEncodeString.
pub fn safe_encode(mut h: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = ALPHABET.len() as u32;
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(h % base) as usize]);
        h /= base;
        if h == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A random lower-case alphanumeric suffix of `n` characters from `bytes`
/// (the caller supplies the randomness, so decisions stay deterministic in tests).
pub fn suffix_from(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// `t` as a Kubernetes `Time`.
pub fn time(t: Timestamp) -> Time {
    // Kubernetes times have second precision; keeping it avoids spurious
    // "changed" status comparisons after a JSON round trip.
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// The current time. (jiff's own `now()` needs a feature k8s-openapi does not enable.)
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        i32::try_from(d.subsec_nanos()).unwrap_or(0),
    )
    .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Labels of an object as a map (absent = empty).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[cfg(test)]
pub mod testing {
    //! Builders for test objects.
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };

    pub fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid test timestamp")
    }

    pub fn meta(ns: &str, name: &str, uid: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            creation_timestamp: Some(Time(ts(1000))),
            ..Default::default()
        }
    }

    /// A map of strings (labels, annotations) from pairs.
    pub fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A pod template with `labels` and one container, "c", running `image`.
    pub fn template(labels: &[(&str, &str)], image: &str) -> PodTemplateSpec {
        let mut t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(string_map(labels)),
                ..Default::default()
            }),
            spec: None,
        };
        set_image(&mut t, image);
        t
    }

    /// Replaces a template's containers by one, "c", running `image`.
    pub fn set_image(t: &mut PodTemplateSpec, image: &str) {
        t.spec.get_or_insert_with(PodSpec::default).containers = vec![Container {
            name: "c".into(),
            image: Some(image.into()),
            ..Default::default()
        }];
    }

    /// A pod; `ready_at` sets a Ready=True condition from that second.
    pub fn pod(
        name: &str,
        labels: &[(&str, &str)],
        ip: Option<&str>,
        node: Option<&str>,
        ready_at: Option<i64>,
    ) -> Pod {
        let mut m = meta("default", name, &format!("uid-{name}"));
        m.labels = Some(string_map(labels));
        Pod {
            metadata: m,
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(if node.is_some() { "Running" } else { "Pending" }.into()),
                pod_ip: ip.map(str::to_string),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn availability_honours_min_ready_seconds() {
        // (ready since, minReadySeconds, now, available)
        let cases = [
            (None, 0, 100, false),
            (Some(90), 0, 100, true),
            (Some(90), 10, 100, true),
            (Some(95), 10, 100, false),
        ];
        for (ready_at, min, now, want) in cases {
            let p = pod("p", &[], None, None, ready_at);
            assert_eq!(
                pod_available(&p, min, ts(now)),
                want,
                "{ready_at:?} {min} {now}"
            );
        }
    }

    #[test]
    fn adoption_table() {
        let owner = meta("default", "web", "rs-uid");
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..Default::default()
        };
        let mut owned_elsewhere = pod("owned", &[("app", "web")], None, None, None);
        owned_elsewhere.metadata.owner_references = Some(vec![controller_ref(
            "apps/v1",
            "ReplicaSet",
            &meta("default", "other", "u2"),
        )]);
        let mut leaving = pod("leaving", &[("app", "web")], None, None, None);
        leaving.metadata.deletion_timestamp = Some(Time(ts(1)));
        let mut elsewhere = pod("elsewhere", &[("app", "web")], None, None, None);
        elsewhere.metadata.namespace = Some("prod".into());
        let candidates = vec![
            pod("orphan", &[("app", "web")], None, None, None),
            pod("other-app", &[("app", "db")], None, None, None),
            owned_elsewhere,
            leaving,
            elsewhere,
        ];
        let adopted = adoptable(&owner, "apps/v1", "ReplicaSet", &sel, &candidates);
        let names: Vec<_> = adopted
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, vec!["orphan".to_string()]);
        assert!(controlled_by(&adopted[0].metadata, "rs-uid"));
        assert!(
            adoptable(
                &owner,
                "apps/v1",
                "ReplicaSet",
                &LabelSelector::default(),
                &candidates
            )
            .is_empty(),
            "empty selector adopts nothing"
        );
    }

    #[test]
    fn hashing_is_stable() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode(0), "b");
        assert_eq!(safe_encode(27), "bc"); // least significant digit first
        assert_eq!(suffix_from(&[0, 1, 26, 27]), "bc9b");
    }
}
