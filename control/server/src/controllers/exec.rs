//! The thin I/O side: one worker per controller pops keys, snapshots the
//! cache, calls the pure reconcile and performs its actions. Conflicts and
//! transient errors put the key back with back-off; nothing here decides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tracing::Instrument;
use weir_client::events::{self, EventType};
use weir_client::{DeleteParams, Error};

use super::gc::{self, OwnerState};
use super::queue::WorkQueue;
use super::store::ObjKey;
use super::{Cache, Ctx, deployment, endpointslice, nodelifecycle, replicaset, util};

/// The loop of every controller keyed by object (kube-runtime's
/// controller loop): pop a key from the controller's queue, reconcile it
/// inside a span naming the controller and the object, then [`finish`] it.
pub(super) async fn run_worker<F>(
    ctx: Arc<Ctx>,
    controller: &'static str,
    queue: fn(&Ctx) -> &WorkQueue<ObjKey>,
    reconcile: F,
) where
    F: AsyncFn(&Ctx, &ObjKey) -> Result<(), Error>,
{
    loop {
        let key = queue(&ctx).pop().await;
        let span = tracing::info_span!("reconcile", controller, namespace = %key.namespace, name = %key.name);
        let r = reconcile(&ctx, &key).instrument(span.clone()).await;
        span.in_scope(|| finish(queue(&ctx), key, r));
    }
}

/// Ends a reconcile: forget the key's failures, or retry it with back-off.
pub(super) fn finish<T: Clone + Eq + std::hash::Hash + Send + 'static>(
    q: &WorkQueue<T>,
    key: T,
    r: Result<(), Error>,
) {
    match r {
        Ok(()) => q.forget(&key),
        Err(error) => {
            if error.is_conflict() {
                tracing::debug!(%error, "conflict; will retry with fresh state");
            } else {
                tracing::warn!(%error, "reconcile failed; will retry");
            }
            q.retry(key);
        }
    }
}

fn ignore_exists<T>(r: Result<T, Error>) -> Result<(), Error> {
    match r {
        Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn ignore_not_found<T>(r: Result<T, Error>) -> Result<(), Error> {
    match r {
        Ok(_) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a pod its controller counted on in `exp`: a SuccessfulCreate
/// event when it is made; when it is not, the expectation is lowered (no
/// watch event will come for it) and a FailedCreate warning is recorded.
/// Returns the new pod's name.
pub(super) async fn create_expected_pod(
    ctx: &Ctx,
    exp: &super::Expectations,
    key: &ObjKey,
    pod: &Pod,
    emit: impl Fn(EventType, &'static str, String),
) -> Result<String, Error> {
    match ctx.client.create(pod).await {
        Ok(created) => {
            let name = created.metadata.name.unwrap_or_default();
            emit(
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
            Ok(name)
        }
        Err(error) => {
            exp.lower(key, 1, 0);
            emit(
                EventType::Warning,
                "FailedCreate",
                format!("Error creating: {error}"),
            );
            Err(error)
        }
    }
}

/// Deletes a pod its controller counted on in `exp`: a SuccessfulDelete
/// event when the call succeeds, the expectation lowered when it fails; a
/// pod already gone is no error.
pub(super) async fn delete_expected_pod(
    ctx: &Ctx,
    exp: &super::Expectations,
    key: &ObjKey,
    pod: &ObjKey,
    emit: impl Fn(EventType, &'static str, String),
) -> Result<(), Error> {
    let r = ctx
        .client
        .delete::<Pod>(&pod.namespace, &pod.name, &DeleteParams::default())
        .await;
    if r.is_err() {
        exp.lower(key, 0, 1);
    } else {
        emit(
            EventType::Normal,
            "SuccessfulDelete",
            format!("Deleted pod: {}", pod.name),
        );
    }
    ignore_not_found(r)
}

pub(super) async fn reconcile_deployment(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let (d, owned, adopt) = {
        let c = ctx.read();
        let Some(d) = c.deployments.get(key).cloned() else {
            return Ok(());
        };
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let in_ns: Vec<ReplicaSet> = c
            .replicasets
            .in_namespace(&key.namespace)
            .cloned()
            .collect();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let adopt = util::adoptable(&d.metadata, "apps/v1", "Deployment", &selector, &in_ns);
        let owned = in_ns
            .into_iter()
            .filter(|rs| util::controlled_by(&rs.metadata, &uid))
            .collect::<Vec<_>>();
        (d, owned, adopt)
    };
    if !adopt.is_empty() {
        // Orphans first (e.g. left by `delete --cascade=orphan`); their events bring us back.
        for rs in adopt {
            tracing::info!(
                replicaset = rs.metadata.name.as_deref().unwrap_or_default(),
                "adopting ReplicaSet"
            );
            ctx.client.update(&rs).await?;
        }
        return Ok(());
    }
    let actions = deployment::reconcile(&d, &owned, util::now());
    // The Deployment's resourceVersion moves when we write its metadata; the
    // status write that follows must carry the new one.
    let mut latest_rv = None;
    for a in actions {
        match a {
            deployment::Action::CreateReplicaSet(rs) => {
                tracing::info!(
                    replicaset = rs.metadata.name.as_deref().unwrap_or_default(),
                    "creating ReplicaSet"
                );
                match ctx.client.create(&rs).await {
                    Ok(_) => {
                        let to = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        let name = rs.metadata.name.clone().unwrap_or_default();
                        super::emit(
                            &ctx.events.deployment,
                            events::reference(&d),
                            EventType::Normal,
                            "ScalingReplicaSet",
                            format!("Scaled up replica set {name} from 0 to {to}"),
                        );
                    }
                    Err(Error::AlreadyExists(_)) => {
                        // Ours but not in the cache yet: its event brings us back. Someone
                        // else's: a hash collision, so change the hash like Kubernetes does.
                        let name = rs.metadata.name.clone().unwrap_or_default();
                        let existing: ReplicaSet = ctx.client.get(&key.namespace, &name).await?;
                        let uid = d.metadata.uid.clone().unwrap_or_default();
                        if !util::controlled_by(&existing.metadata, &uid) {
                            tracing::warn!(replicaset = %name, "name taken by another ReplicaSet; bumping collisionCount");
                            let mut nd = d.clone();
                            let st = nd.status.get_or_insert_with(Default::default);
                            st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                            ctx.client.update_status(&nd).await?;
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            deployment::Action::UpdateReplicaSet(rs) => {
                let name = rs.metadata.name.clone().unwrap_or_default();
                let to = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                let from = owned
                    .iter()
                    .find(|o| o.metadata.name.as_deref() == Some(name.as_str()))
                    .and_then(|o| o.spec.as_ref().and_then(|s| s.replicas))
                    .unwrap_or(0);
                tracing::info!(replicaset = %name, from, to, "updating ReplicaSet");
                ctx.client.update(&rs).await?;
                if from != to {
                    let dir = if to > from { "up" } else { "down" };
                    super::emit(
                        &ctx.events.deployment,
                        events::reference(&d),
                        EventType::Normal,
                        "ScalingReplicaSet",
                        format!("Scaled {dir} replica set {name} from {from} to {to}"),
                    );
                }
            }
            deployment::Action::DeleteReplicaSet { namespace, name } => {
                tracing::info!(replicaset = %name, "deleting old ReplicaSet beyond revisionHistoryLimit");
                ignore_not_found(
                    ctx.client
                        .delete::<ReplicaSet>(&namespace, &name, &DeleteParams::default())
                        .await,
                )?;
            }
            deployment::Action::UpdateDeployment(nd) => {
                let stored: Deployment = ctx.client.update(&nd).await?;
                latest_rv = stored.metadata.resource_version;
            }
            deployment::Action::UpdateStatus(mut nd) => {
                if let Some(rv) = latest_rv.take() {
                    nd.metadata.resource_version = Some(rv);
                }
                ctx.client.update_status(&nd).await?;
            }
        }
    }
    Ok(())
}

/// Five random name-suffix characters from the OS (falls back to the clock
/// if the OS source fails, which only risks a retried AlreadyExists).
pub(super) fn random_suffix() -> String {
    let mut b = [0u8; 5];
    if getrandom::fill(&mut b).is_err() {
        let n = util::now().as_nanosecond().to_le_bytes();
        b.copy_from_slice(&n[..5]);
    }
    util::suffix_from(&b)
}

pub(super) async fn reconcile_replicaset(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    if !ctx.expectations.satisfied(key, Instant::now()) {
        // Our own creations/deletions are not in the cache yet; their events re-enqueue us.
        ctx.replicasets
            .add_after(key.clone(), Duration::from_secs(1));
        return Ok(());
    }
    let (rs, pods, adopt) = {
        let c = ctx.read();
        let Some(rs) = c.replicasets.get(key).cloned() else {
            return Ok(());
        };
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let in_ns: Vec<Pod> = c.pods.in_namespace(&key.namespace).cloned().collect();
        let selector = rs
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let adopt = util::adoptable(&rs.metadata, "apps/v1", "ReplicaSet", &selector, &in_ns);
        let pods = in_ns
            .into_iter()
            .filter(|p| util::controlled_by(&p.metadata, &uid))
            .collect::<Vec<_>>();
        (rs, pods, adopt)
    };
    if !adopt.is_empty() {
        for p in adopt {
            tracing::info!(
                pod = p.metadata.name.as_deref().unwrap_or_default(),
                "adopting pod"
            );
            ignore_not_found(ctx.client.update(&p).await)?;
        }
        return Ok(());
    }
    let actions = replicaset::reconcile(&rs, &pods, util::now(), &mut random_suffix);
    ctx.expectations.expect_actions(
        key,
        &actions,
        |a| matches!(a, replicaset::Action::CreatePod(_)),
        |a| matches!(a, replicaset::Action::DeletePod(_)),
    );
    let emit = |t: EventType, reason: &'static str, message: String| {
        super::emit(
            &ctx.events.replicaset,
            events::reference(&rs),
            t,
            reason,
            message,
        );
    };
    let mut first_err = None;
    for a in actions {
        let r = match a {
            replicaset::Action::CreatePod(p) => {
                create_expected_pod(ctx, &ctx.expectations, key, &p, &emit)
                    .await
                    .map(|name| tracing::info!(pod = %name, "created pod"))
            }
            replicaset::Action::DeletePod(k) => {
                tracing::info!(pod = %k.name, "deleting surplus pod");
                delete_expected_pod(ctx, &ctx.expectations, key, &k, &emit).await
            }
            replicaset::Action::UpdateStatus(n) => ctx.client.update_status(&n).await.map(|_| ()),
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    // Pods that are ready but not yet available for minReadySeconds need a
    // later look even if no event arrives.
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    if min_ready > 0
        && pods
            .iter()
            .any(|p| util::pod_ready(p) && !util::pod_available(p, min_ready, util::now()))
    {
        ctx.replicasets.add_after(
            key.clone(),
            Duration::from_secs(u64::try_from(min_ready).unwrap_or(1)),
        );
    }
    first_err.map_or(Ok(()), Err)
}

pub(super) async fn reconcile_service(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let (svc, pods, existing) = {
        let c = ctx.read();
        // A deleted Service's slices go with it through the garbage collector.
        let Some(svc) = c.services.get(key).cloned() else {
            return Ok(());
        };
        // Only the pods the selector picks, and only this Service's slices:
        // cost follows the Service's size, not the namespace's.
        let selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(weir_api::selector::Selector::from_map);
        let pods: Vec<Pod> = match &selector {
            Some(sel) => c
                .pods
                .in_namespace(&key.namespace)
                .filter(|p| sel.matches(&util::labels(&p.metadata)))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let existing: Vec<EndpointSlice> = c
            .slices
            .owned_by(&uid)
            .filter(|s| endpointslice::managed_for(s, &key.name))
            .cloned()
            .collect();
        (svc, pods, existing)
    };
    for a in endpointslice::reconcile(&svc, &pods, &existing) {
        match a {
            endpointslice::Action::Create(s) => {
                tracing::info!(
                    slice = s.metadata.name.as_deref().unwrap_or_default(),
                    endpoints = s.endpoints.len(),
                    "creating EndpointSlice"
                );
                // AlreadyExists: the cache is behind; the slice's event brings us back.
                ignore_exists(ctx.client.create(&s).await)?;
            }
            endpointslice::Action::Update(s) => {
                tracing::info!(
                    slice = s.metadata.name.as_deref().unwrap_or_default(),
                    endpoints = s.endpoints.len(),
                    "updating EndpointSlice"
                );
                ctx.client.update(&s).await?;
            }
            endpointslice::Action::Delete { namespace, name } => {
                tracing::info!(slice = %name, "deleting EndpointSlice");
                ignore_not_found(
                    ctx.client
                        .delete::<EndpointSlice>(&namespace, &name, &DeleteParams::default())
                        .await,
                )?;
            }
        }
    }
    Ok(())
}

pub async fn gc_worker(ctx: Arc<Ctx>) {
    loop {
        let key = ctx.gc.pop().await;
        let span = tracing::info_span!("reconcile", controller = "gc", kind = key.0, namespace = %key.1.namespace, name = %key.1.name);
        let r = collect(&ctx, &key).instrument(span.clone()).await;
        span.in_scope(|| finish(&ctx.gc, key, r));
    }
}

/// The cache's view of one owner.
fn owner_state(c: &Cache, namespace: &str, r: &OwnerReference) -> OwnerState {
    // Owners are found by name (an index lookup) and compared by uid: an
    // owner deleted and recreated under the same name is a different owner.
    let key = ObjKey::new(namespace, r.name.clone());
    let uid = match r.kind.as_str() {
        "Deployment" => c.deployments.uid_of(&key),
        "ReplicaSet" => c.replicasets.uid_of(&key),
        "Pod" => c.pods.uid_of(&key),
        "Service" => c.services.uid_of(&key),
        "EndpointSlice" => c.slices.uid_of(&key),
        "DaemonSet" => c.daemonsets.uid_of(&key),
        "Job" => c.jobs.uid_of(&key),
        "CronJob" => c.cronjobs.uid_of(&key),
        "StatefulSet" => c.statefulsets.uid_of(&key),
        "ReplicationController" => c.rcs.uid_of(&key),
        _ => return OwnerState::Unknown,
    };
    if uid == Some(r.uid.as_str()) {
        OwnerState::Exists
    } else {
        OwnerState::Gone
    }
}

/// The dependents of `owner` in the cache, with whether each is being deleted.
fn dependents_of(c: &Cache, uid: &str) -> Vec<(super::GcKey, bool)> {
    let mut out: Vec<(super::GcKey, bool)> = Vec::new();
    let gone =
        |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| util::terminating(m);
    out.extend(
        c.replicasets
            .owned_by(uid)
            .map(|o| (("ReplicaSet", ObjKey::of(o)), gone(&o.metadata))),
    );
    out.extend(
        c.pods
            .owned_by(uid)
            .map(|o| (("Pod", ObjKey::of(o)), gone(&o.metadata))),
    );
    out.extend(
        c.jobs
            .owned_by(uid)
            .map(|o| (("Job", ObjKey::of(o)), gone(&o.metadata))),
    );
    out.extend(
        c.slices
            .owned_by(uid)
            .map(|o| (("EndpointSlice", ObjKey::of(o)), gone(&o.metadata))),
    );
    out.extend(
        c.revisions
            .owned_by(uid)
            .map(|o| (("ControllerRevision", ObjKey::of(o)), gone(&o.metadata))),
    );
    out.extend(
        c.claims
            .owned_by(uid)
            .map(|o| (("PersistentVolumeClaim", ObjKey::of(o)), gone(&o.metadata))),
    );
    out
}

/// Reads an object as JSON, lets `edit` change it, and writes it back.
async fn edit_json(
    ctx: &Ctx,
    kind: &str,
    key: &ObjKey,
    edit: impl Fn(&mut serde_json::Value),
) -> Result<(), Error> {
    let bytes = match ctx.client.get_json(kind, &key.namespace, &key.name).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            kind: kind.to_string(),
            source,
        })?;
    edit(&mut v);
    ignore_not_found(
        ctx.client
            .update_json(kind, serde_json::to_vec(&v).unwrap_or_default(), false)
            .await,
    )
}

/// Carries out Orphan/Foreground propagation for an owner being deleted.
async fn finalize(
    ctx: &Ctx,
    kind: &'static str,
    key: &ObjKey,
    step: gc::FinalizeStep,
    owner_uid: &str,
) -> Result<(), Error> {
    match step {
        gc::FinalizeStep::Orphan(deps) => {
            for (dk, dkey) in deps {
                tracing::info!(dependent = %dkey, dependent_kind = dk, "orphaning dependent");
                edit_json(ctx, dk, &dkey, |v| {
                    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                        let refs = meta
                            .get_mut("ownerReferences")
                            .and_then(|r| r.as_array_mut());
                        let empty = refs.is_some_and(|refs| {
                            refs.retain(|r| {
                                r.get("uid").and_then(|u| u.as_str()) != Some(owner_uid)
                            });
                            refs.is_empty()
                        });
                        if empty {
                            meta.remove("ownerReferences");
                        }
                    }
                })
                .await?;
            }
            ctx.gc
                .add_after((kind, key.clone()), Duration::from_millis(500));
        }
        gc::FinalizeStep::DeleteDependents(deps) => {
            let params = DeleteParams {
                propagation_policy: "Foreground".into(),
                ..Default::default()
            };
            for (dk, dkey) in deps {
                tracing::info!(dependent = %dkey, dependent_kind = dk, "deleting dependent before its owner");
                ignore_not_found(
                    ctx.client
                        .delete_json(dk, &dkey.namespace, &dkey.name, &params)
                        .await,
                )?;
            }
            ctx.gc
                .add_after((kind, key.clone()), Duration::from_secs(1));
        }
        gc::FinalizeStep::RemoveFinalizer(f) => {
            tracing::info!(finalizer = f, "dependents handled; removing finalizer");
            edit_json(ctx, kind, key, |v| {
                if let Some(fs) = v
                    .pointer_mut("/metadata/finalizers")
                    .and_then(|r| r.as_array_mut())
                {
                    fs.retain(|x| x.as_str() != Some(f));
                }
            })
            .await?;
        }
    }
    Ok(())
}

/// What the garbage collector found out about one object from the cache.
enum GcPlan {
    Nothing,
    /// The object is being deleted with Orphan/Foreground propagation.
    Finalize(gc::FinalizeStep, String),
    /// Every owner (these references) seems gone: confirm, then delete.
    Collect(Vec<OwnerReference>),
}

async fn collect(ctx: &Ctx, (kind, key): &super::GcKey) -> Result<(), Error> {
    let plan = {
        let c = ctx.read();
        if !c.all_synced() {
            ctx.gc
                .add_after((*kind, key.clone()), Duration::from_secs(1));
            return Ok(());
        }
        let meta = match *kind {
            "ReplicaSet" => c.replicasets.get(key).map(|o| o.metadata.clone()),
            "Pod" => c.pods.get(key).map(|o| o.metadata.clone()),
            "EndpointSlice" => c.slices.get(key).map(|o| o.metadata.clone()),
            "Deployment" => c.deployments.get(key).map(|o| o.metadata.clone()),
            "Service" => c.services.get(key).map(|o| o.metadata.clone()),
            "DaemonSet" => c.daemonsets.get(key).map(|o| o.metadata.clone()),
            "Job" => c.jobs.get(key).map(|o| o.metadata.clone()),
            "CronJob" => c.cronjobs.get(key).map(|o| o.metadata.clone()),
            "StatefulSet" => c.statefulsets.get(key).map(|o| o.metadata.clone()),
            "ReplicationController" => c.rcs.get(key).map(|o| o.metadata.clone()),
            "ControllerRevision" => c.revisions.get(key).map(|o| o.metadata.clone()),
            "PersistentVolumeClaim" => c.claims.get(key).map(|o| o.metadata.clone()),
            _ => None,
        };
        match meta {
            None => GcPlan::Nothing,
            Some(meta) if meta.deletion_timestamp.is_some() => {
                let uid = meta.uid.clone().unwrap_or_default();
                match gc::finalize_step(&meta, &dependents_of(&c, &uid)) {
                    Some(step) => GcPlan::Finalize(step, uid),
                    None => GcPlan::Nothing,
                }
            }
            Some(meta) if gc::is_orphan(&meta, |r| owner_state(&c, &key.namespace, r)) => {
                GcPlan::Collect(meta.owner_references.unwrap_or_default())
            }
            Some(_) => GcPlan::Nothing,
        }
    };
    let owners = match plan {
        GcPlan::Nothing => return Ok(()),
        GcPlan::Finalize(step, uid) => return finalize(ctx, kind, key, step, &uid).await,
        GcPlan::Collect(owners) => owners,
    };
    // Confirm with the API server: the cache may not have seen a new owner yet.
    for r in &owners {
        match ctx.client.get_json(&r.kind, &key.namespace, &r.name).await {
            Ok(json) => {
                let live: Option<String> = serde_json::from_slice::<serde_json::Value>(&json)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/metadata/uid")
                            .and_then(|u| u.as_str())
                            .map(str::to_string)
                    });
                if gc::live_owner_matches(r, live.as_deref()) {
                    tracing::debug!(owner = %r.name, "owner still exists; keeping");
                    return Ok(());
                }
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    tracing::info!("all owners gone; deleting");
    let params = DeleteParams {
        propagation_policy: "Background".into(),
        ..Default::default()
    };
    ignore_not_found(
        ctx.client
            .delete_json(kind, &key.namespace, &key.name, &params)
            .await,
    )
}

pub async fn node_worker(ctx: Arc<Ctx>) {
    loop {
        let key = ctx.nodes.pop().await;
        let span = tracing::info_span!("reconcile", controller = "nodelifecycle", name = %key.name);
        let r = reconcile_node(&ctx, &key).instrument(span.clone()).await;
        span.in_scope(|| finish(&ctx.nodes, key, r));
    }
}

async fn reconcile_node(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let (node, pods) = {
        let c = ctx.read();
        let Some(node) = c.nodes.get(key).cloned() else {
            return Ok(());
        };
        let pods: Vec<Pod> = c
            .pods
            .iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(key.name.as_str())
            })
            .cloned()
            .collect();
        (node, pods)
    };
    let now = util::now();
    for a in nodelifecycle::reconcile(&node, &pods, now) {
        match a {
            nodelifecycle::Action::UpdateNodeStatus(n) => {
                tracing::warn!("node stopped posting status; marking Ready=Unknown");
                ctx.client.update_status(n.as_ref()).await?;
                super::emit(
                    &ctx.events.node,
                    events::reference(n.as_ref()),
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {} status is now: NodeNotReady", key.name),
                );
            }
            nodelifecycle::Action::UpdatePodStatus(p) => {
                tracing::info!(
                    pod = p.metadata.name.as_deref().unwrap_or_default(),
                    "marking pod on lost node not ready"
                );
                ignore_not_found(ctx.client.update_status(p.as_ref()).await)?;
            }
            nodelifecycle::Action::RequeueAt(t) => {
                let wait = t.duration_since(now).unsigned_abs();
                // Just after the deadline, so the heartbeat has really expired.
                ctx.nodes
                    .add_after(key.clone(), wait + Duration::from_millis(100));
            }
        }
    }
    Ok(())
}
