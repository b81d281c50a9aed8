//! Garbage collection by owner references: an object all of whose owners are
//! gone (no object of that kind, namespace and name with that uid) is deleted,
//! in the background. Deleting a Deployment thus removes its ReplicaSets, and
//! their removal removes the Pods.
//!
//! The decision here only looks at the cache. Before deleting, the executor
//! confirms with the API server that each owner is really gone, because a
//! cache can lag (an owner created a moment ago may not be in it yet).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::GcKey;

/// Finalizer the API server puts on an owner deleted with propagationPolicy=Orphan.
pub const ORPHAN: &str = "orphan";
/// Finalizer the API server puts on an owner deleted with propagationPolicy=Foreground.
pub const FOREGROUND: &str = "foregroundDeletion";

/// The next step in finishing an owner's Orphan or Foreground deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalizeStep {
    /// Drop the owner's reference from each dependent, so they outlive it.
    Orphan(Vec<GcKey>),
    /// Delete these dependents first; the owner waits for them.
    DeleteDependents(Vec<GcKey>),
    /// Nothing depends on the owner any more: remove this finalizer so the
    /// API server completes the deletion.
    RemoveFinalizer(&'static str),
}

/// Decides the next step for an owner being deleted, given its dependents
/// (each with whether it is already being deleted). None: nothing to do now.
pub fn finalize_step(owner: &ObjectMeta, dependents: &[(GcKey, bool)]) -> Option<FinalizeStep> {
    owner.deletion_timestamp.as_ref()?;
    let has = |f: &str| owner.finalizers.iter().flatten().any(|x| x == f);
    if has(ORPHAN) {
        return Some(if dependents.is_empty() {
            FinalizeStep::RemoveFinalizer(ORPHAN)
        } else {
            FinalizeStep::Orphan(dependents.iter().map(|(k, _)| k.clone()).collect())
        });
    }
    if has(FOREGROUND) {
        if dependents.is_empty() {
            return Some(FinalizeStep::RemoveFinalizer(FOREGROUND));
        }
        let live: Vec<GcKey> = dependents
            .iter()
            .filter(|(_, gone)| !gone)
            .map(|(k, _)| k.clone())
            .collect();
        // Only terminating dependents left: wait for them to go.
        return (!live.is_empty()).then_some(FinalizeStep::DeleteDependents(live));
    }
    None
}

/// What the cache knows about one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// An object with this name and uid exists.
    Exists,
    /// No object with this uid: deleted (maybe recreated under the same name).
    Gone,
    /// A kind this controller does not watch: never assume it is gone.
    Unknown,
}

/// Whether `meta` should be collected: it has owners, it is not already
/// being deleted, and every owner is gone.
pub fn is_orphan(meta: &ObjectMeta, owner_state: impl Fn(&OwnerReference) -> OwnerState) -> bool {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    meta.deletion_timestamp.is_none()
        && !refs.is_empty()
        && refs.iter().all(|r| owner_state(r) == OwnerState::Gone)
}

/// Whether a live owner (as returned by the API server) is the one the
/// reference points to.
pub fn live_owner_matches(reference: &OwnerReference, live_uid: Option<&str>) -> bool {
    live_uid == Some(reference.uid.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn owner(kind: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: "x".into(),
            uid: uid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn orphan_table() {
        // The fake cache: uid "live" exists, kind "Job" is not watched, everything else is gone.
        let state = |r: &OwnerReference| match (r.kind.as_str(), r.uid.as_str()) {
            ("Job", _) => OwnerState::Unknown,
            (_, "live") => OwnerState::Exists,
            _ => OwnerState::Gone,
        };
        // (case, owners, being deleted, expected)
        let cases: Vec<(&str, Vec<OwnerReference>, bool, bool)> = vec![
            ("no owners: never collected", vec![], false, false),
            (
                "owner alive",
                vec![owner("ReplicaSet", "live")],
                false,
                false,
            ),
            ("owner gone", vec![owner("ReplicaSet", "dead")], false, true),
            (
                "one of two owners alive",
                vec![owner("ReplicaSet", "dead"), owner("Deployment", "live")],
                false,
                false,
            ),
            (
                "all owners gone",
                vec![owner("ReplicaSet", "dead"), owner("Deployment", "dead2")],
                false,
                true,
            ),
            (
                "unknown owner kind",
                vec![owner("Job", "dead")],
                false,
                false,
            ),
            (
                "already being deleted",
                vec![owner("ReplicaSet", "dead")],
                true,
                false,
            ),
        ];
        for (name, refs, deleting, want) in cases {
            let meta = ObjectMeta {
                owner_references: Some(refs),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            };
            assert_eq!(is_orphan(&meta, state), want, "{name}");
        }
    }

    #[test]
    fn finalize_table() {
        use super::super::store::ObjKey;
        let owner = |fins: &[&str], deleting: bool| ObjectMeta {
            finalizers: Some(fins.iter().map(|f| f.to_string()).collect()),
            deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        let a: GcKey = ("ReplicaSet", ObjKey::new("default", "a"));
        let b: GcKey = ("ReplicaSet", ObjKey::new("default", "b"));
        // (case, owner, dependents (key, terminating), expected)
        let cases = vec![
            (
                "not being deleted",
                owner(&[ORPHAN], false),
                vec![(a.clone(), false)],
                None,
            ),
            (
                "no propagation finalizer",
                owner(&["x"], true),
                vec![(a.clone(), false)],
                None,
            ),
            (
                "orphan with dependents",
                owner(&[ORPHAN], true),
                vec![(a.clone(), false)],
                Some(FinalizeStep::Orphan(vec![a.clone()])),
            ),
            (
                "orphan done",
                owner(&[ORPHAN], true),
                vec![],
                Some(FinalizeStep::RemoveFinalizer(ORPHAN)),
            ),
            (
                "foreground deletes live dependents",
                owner(&[FOREGROUND], true),
                vec![(a.clone(), false), (b.clone(), true)],
                Some(FinalizeStep::DeleteDependents(vec![a.clone()])),
            ),
            (
                "foreground waits for terminating dependents",
                owner(&[FOREGROUND], true),
                vec![(b.clone(), true)],
                None,
            ),
            (
                "foreground done",
                owner(&[FOREGROUND], true),
                vec![],
                Some(FinalizeStep::RemoveFinalizer(FOREGROUND)),
            ),
        ];
        for (name, o, deps, want) in cases {
            assert_eq!(finalize_step(&o, &deps), want, "{name}");
        }
    }

    #[test]
    fn live_owner_must_match_uid() {
        let r = owner("ReplicaSet", "u1");
        assert!(live_owner_matches(&r, Some("u1")));
        assert!(
            !live_owner_matches(&r, Some("u2")),
            "recreated under the same name is a different owner"
        );
        assert!(!live_owner_matches(&r, None));
    }
}
