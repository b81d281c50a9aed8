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
use weir_client::{DeleteParams, Error};

use super::gc::{self, OwnerState};
use super::store::ObjKey;
use super::{Cache, Ctx, deployment, endpointslice, replicaset, util};

/// Ends a reconcile: forget the key's failures, or retry it with back-off.
fn finish<T: Clone + Eq + std::hash::Hash + Send + 'static>(
    q: &super::queue::WorkQueue<T>,
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

fn ignore_not_found<T>(r: Result<T, Error>) -> Result<(), Error> {
    match r {
        Ok(_) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn deployment_worker(ctx: Arc<Ctx>) {
    loop {
        let key = ctx.deployments.pop().await;
        let span = tracing::info_span!("reconcile", controller = "deployment", namespace = %key.namespace, name = %key.name);
        let r = reconcile_deployment(&ctx, &key)
            .instrument(span.clone())
            .await;
        span.in_scope(|| finish(&ctx.deployments, key, r));
    }
}

async fn reconcile_deployment(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let (d, owned) = {
        let c = ctx.read();
        let Some(d) = c.deployments.get(key).cloned() else {
            return Ok(());
        };
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<ReplicaSet> = c
            .replicasets
            .in_namespace(&key.namespace)
            .filter(|rs| util::controlled_by(&rs.metadata, &uid))
            .cloned()
            .collect();
        (d, owned)
    };
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
                ignore_exists(ctx.client.create(&rs).await)?;
            }
            deployment::Action::UpdateReplicaSet(rs) => {
                tracing::info!(
                    replicaset = rs.metadata.name.as_deref().unwrap_or_default(),
                    replicas = rs.spec.as_ref().and_then(|s| s.replicas),
                    "updating ReplicaSet"
                );
                ctx.client.update(&rs).await?;
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
fn random_suffix() -> String {
    let mut b = [0u8; 5];
    if getrandom::fill(&mut b).is_err() {
        let n = util::now().as_nanosecond().to_le_bytes();
        b.copy_from_slice(&n[..5]);
    }
    util::suffix_from(&b)
}

pub async fn replicaset_worker(ctx: Arc<Ctx>) {
    loop {
        let key = ctx.replicasets.pop().await;
        let span = tracing::info_span!("reconcile", controller = "replicaset", namespace = %key.namespace, name = %key.name);
        let r = reconcile_replicaset(&ctx, &key)
            .instrument(span.clone())
            .await;
        span.in_scope(|| finish(&ctx.replicasets, key, r));
    }
}

async fn reconcile_replicaset(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    if !ctx.expectations.satisfied(key, Instant::now()) {
        // Our own creations/deletions are not in the cache yet; their events re-enqueue us.
        ctx.replicasets
            .add_after(key.clone(), Duration::from_secs(1));
        return Ok(());
    }
    let (rs, pods) = {
        let c = ctx.read();
        let Some(rs) = c.replicasets.get(key).cloned() else {
            return Ok(());
        };
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let pods: Vec<Pod> = c
            .pods
            .in_namespace(&key.namespace)
            .filter(|p| util::controlled_by(&p.metadata, &uid))
            .cloned()
            .collect();
        (rs, pods)
    };
    let actions = replicaset::reconcile(&rs, &pods, util::now(), &mut random_suffix);
    let adds = actions
        .iter()
        .filter(|a| matches!(a, replicaset::Action::CreatePod(_)))
        .count() as i64;
    let dels = actions
        .iter()
        .filter(|a| matches!(a, replicaset::Action::DeletePod(_)))
        .count() as i64;
    if adds > 0 || dels > 0 {
        ctx.expectations.expect(key, adds, dels, Instant::now());
    }
    let mut first_err = None;
    for a in actions {
        let r = match a {
            replicaset::Action::CreatePod(p) => {
                let r = ctx.client.create(&p).await;
                match &r {
                    Ok(created) => tracing::info!(
                        pod = created.metadata.name.as_deref().unwrap_or_default(),
                        "created pod"
                    ),
                    Err(_) => ctx.expectations.lower(key, 1, 0),
                }
                r.map(|_| ())
            }
            replicaset::Action::DeletePod(k) => {
                tracing::info!(pod = %k.name, "deleting surplus pod");
                let r = ctx
                    .client
                    .delete::<Pod>(&k.namespace, &k.name, &DeleteParams::default())
                    .await;
                if r.is_err() {
                    ctx.expectations.lower(key, 0, 1);
                }
                ignore_not_found(r)
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

pub async fn endpointslice_worker(ctx: Arc<Ctx>) {
    loop {
        let key = ctx.slices.pop().await;
        let span = tracing::info_span!("reconcile", controller = "endpointslice", namespace = %key.namespace, name = %key.name);
        let r = reconcile_service(&ctx, &key).instrument(span.clone()).await;
        span.in_scope(|| finish(&ctx.slices, key, r));
    }
}

async fn reconcile_service(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let (svc, pods, existing) = {
        let c = ctx.read();
        // A deleted Service's slices go with it through the garbage collector.
        let Some(svc) = c.services.get(key).cloned() else {
            return Ok(());
        };
        let pods: Vec<Pod> = c.pods.in_namespace(&key.namespace).cloned().collect();
        let existing: Vec<EndpointSlice> = c
            .slices
            .in_namespace(&key.namespace)
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
    let found = match r.kind.as_str() {
        "Deployment" => c.deployments.by_uid(namespace, &r.uid).is_some(),
        "ReplicaSet" => c.replicasets.by_uid(namespace, &r.uid).is_some(),
        "Pod" => c.pods.by_uid(namespace, &r.uid).is_some(),
        "Service" => c.services.by_uid(namespace, &r.uid).is_some(),
        "EndpointSlice" => c.slices.by_uid(namespace, &r.uid).is_some(),
        _ => return OwnerState::Unknown,
    };
    if found {
        OwnerState::Exists
    } else {
        OwnerState::Gone
    }
}

async fn collect(ctx: &Ctx, (kind, key): &super::GcKey) -> Result<(), Error> {
    let meta = {
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
            _ => None,
        };
        let Some(meta) = meta else { return Ok(()) };
        if !gc::is_orphan(&meta, |r| owner_state(&c, &key.namespace, r)) {
            return Ok(());
        }
        meta
    };
    // Confirm with the API server: the cache may not have seen a new owner yet.
    for r in meta.owner_references.iter().flatten() {
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
