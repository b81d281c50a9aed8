//! The thin I/O side of the workload controllers (DaemonSet, ...): their
//! queues, expectations and Event recorders, the change handlers that map
//! cache changes to their keys (one [`Ctx::on_owner`] for every owner kind),
//! and one reconcile each, run by [`super::exec::run_worker`], that
//! snapshots the cache, calls the pure reconcile and performs its actions.

use std::time::{Duration, Instant};

use k8s_openapi::Metadata;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use weir_client::events::{self, EventType, Recorder};
use weir_client::{DeleteParams, Error};

use super::exec::{create_expected_pod, delete_expected_pod, ignore_not_found, random_suffix};
use super::queue::WorkQueue;
use super::store::{Change, ObjKey};
use super::{
    Ctx, Expectations, cronjob, daemonset, history, replicationcontroller, statefulset, util,
};

/// Queues, expectations and recorders of the workload controllers.
pub struct Apps {
    pub daemonsets: WorkQueue<ObjKey>,
    pub ds_expectations: Expectations,
    pub ds_events: Recorder,
    pub jobs: WorkQueue<ObjKey>,
    pub job_expectations: Expectations,
    pub job_events: Recorder,
    pub cronjobs: WorkQueue<ObjKey>,
    pub cronjob_events: Recorder,
    pub statefulsets: WorkQueue<ObjKey>,
    pub sts_expectations: Expectations,
    pub sts_events: Recorder,
    pub rcs: WorkQueue<ObjKey>,
    pub rc_expectations: Expectations,
    pub rc_events: Recorder,
}

impl Apps {
    pub fn new(client: &weir_client::Client) -> Self {
        Self {
            daemonsets: WorkQueue::new(),
            ds_expectations: Expectations::default(),
            ds_events: Recorder::new(client.clone(), "daemonset-controller", None),
            jobs: WorkQueue::new(),
            job_expectations: Expectations::default(),
            job_events: Recorder::new(client.clone(), "job-controller", None),
            cronjobs: WorkQueue::new(),
            cronjob_events: Recorder::new(client.clone(), "cronjob-controller", None),
            statefulsets: WorkQueue::new(),
            sts_expectations: Expectations::default(),
            sts_events: Recorder::new(client.clone(), "statefulset-controller", None),
            rcs: WorkQueue::new(),
            rc_expectations: Expectations::default(),
            rc_events: Recorder::new(client.clone(), "replication-controller", None),
        }
    }
}

/// The controller key of an object whose controller is of `kind`.
fn controller_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Option<ObjKey> {
    util::controller_of(meta)
        .filter(|r| r.kind == kind)
        .map(|r| ObjKey::new(meta.namespace.clone().unwrap_or_default(), r.name.clone()))
}

impl Ctx {
    /// The change handler of every owner kind (Kubernetes' workload
    /// informers): an Orphan/Foreground deletion in progress goes to the
    /// garbage collector, the object to its controller's queue `q`, and once
    /// it is gone, the objects it owned to the garbage collector.
    pub(super) fn on_owner<K: Metadata<Ty = ObjectMeta>>(
        &self,
        kind: &'static str,
        q: &WorkQueue<ObjKey>,
        ch: &Change<K>,
    ) {
        self.enqueue_propagation(kind, ch);
        if let Some(o) = ch.latest() {
            q.add(ObjKey::of(o));
        }
        if let (Some(old), None) = (&ch.old, &ch.new) {
            self.enqueue_dependents(old.metadata());
        }
    }

    /// Pod changes: lower the owner's expectations, then enqueue it.
    pub(super) fn on_pod_apps(&self, ch: &Change<Pod>) {
        let gone = |p: &Pod| util::terminating(&p.metadata);
        let (pod, adds, dels) = match (&ch.old, &ch.new) {
            (None, Some(new)) => (Some(new), 1, 0),
            (Some(old), Some(new)) if !gone(old) && gone(new) => (Some(new), 0, 1),
            (Some(old), None) if !gone(old) => (Some(old), 0, 1),
            _ => (None, 0, 0),
        };
        let kinds = [
            (
                "DaemonSet",
                &self.apps.daemonsets,
                &self.apps.ds_expectations,
            ),
            ("Job", &self.apps.jobs, &self.apps.job_expectations),
            (
                "StatefulSet",
                &self.apps.statefulsets,
                &self.apps.sts_expectations,
            ),
            (
                "ReplicationController",
                &self.apps.rcs,
                &self.apps.rc_expectations,
            ),
        ];
        for (kind, q, exp) in kinds {
            if let Some(k) = pod.and_then(|p| controller_key(&p.metadata, kind)) {
                exp.lower(&k, adds, dels);
            }
            for p in ch.old.iter().chain(ch.new.iter()) {
                if let Some(k) = controller_key(&p.metadata, kind) {
                    q.add(k);
                }
            }
        }
    }

    /// Node changes that can change where daemon pods belong: a node added
    /// or removed, or its labels or taints changed (not every heartbeat).
    pub(super) fn on_node_apps(&self, ch: &Change<Node>) {
        let relevant = match (&ch.old, &ch.new) {
            (Some(o), Some(n)) => {
                o.metadata.labels != n.metadata.labels
                    || o.spec.as_ref().map(|s| &s.taints) != n.spec.as_ref().map(|s| &s.taints)
                    || o.metadata.deletion_timestamp != n.metadata.deletion_timestamp
            }
            _ => true,
        };
        if relevant {
            let keys: Vec<ObjKey> = self.read().daemonsets.iter().map(ObjKey::of).collect();
            keys.into_iter().for_each(|k| self.apps.daemonsets.add(k));
        }
    }

    /// A Job is an owner (of pods) and a dependent (of its CronJob).
    pub(super) fn on_job(&self, ch: &Change<Job>) {
        self.on_owner("Job", &self.apps.jobs, ch);
        for j in ch.old.iter().chain(ch.new.iter()) {
            if let Some(k) = controller_key(&j.metadata, "CronJob") {
                self.apps.cronjobs.add(k);
            }
        }
        if let Some(j) = &ch.new {
            self.gc.add(("Job", ObjKey::of(j)));
        }
    }

    /// A revision changed: its controller (DaemonSet or StatefulSet) looks
    /// again; the GC judges revisions whose owner went.
    pub(super) fn on_revision(&self, ch: &Change<ControllerRevision>) {
        self.enqueue_propagation("ControllerRevision", ch);
        for r in ch.old.iter().chain(ch.new.iter()) {
            if let Some(k) = controller_key(&r.metadata, "DaemonSet") {
                self.apps.daemonsets.add(k);
            }
            if let Some(k) = controller_key(&r.metadata, "StatefulSet") {
                self.apps.statefulsets.add(k);
            }
        }
        if let Some(r) = &ch.new {
            self.gc.add(("ControllerRevision", ObjKey::of(r)));
        }
    }

    /// A claim changed: the StatefulSets it names as owner look again (its
    /// retention policy), and the GC judges claims with owners.
    pub(super) fn on_claim(&self, ch: &Change<PersistentVolumeClaim>) {
        self.enqueue_propagation("PersistentVolumeClaim", ch);
        for c in ch.old.iter().chain(ch.new.iter()) {
            let ns = c.metadata.namespace.clone().unwrap_or_default();
            for r in c.metadata.owner_references.iter().flatten() {
                if r.kind == "StatefulSet" {
                    self.apps
                        .statefulsets
                        .add(ObjKey::new(ns.clone(), r.name.clone()));
                }
            }
        }
        if let Some(c) = &ch.new
            && c.metadata
                .owner_references
                .as_ref()
                .is_some_and(|r| !r.is_empty())
        {
            self.gc.add(("PersistentVolumeClaim", ObjKey::of(c)));
        }
    }

    pub(super) fn resync_apps(&self) {
        let rcs: Vec<ObjKey> = self.read().rcs.iter().map(ObjKey::of).collect();
        rcs.into_iter().for_each(|k| self.apps.rcs.add(k));
        let (ds, jobs, cjs, sts) = {
            let c = self.read();
            (
                c.daemonsets.iter().map(ObjKey::of).collect::<Vec<_>>(),
                c.jobs.iter().map(ObjKey::of).collect::<Vec<_>>(),
                c.cronjobs.iter().map(ObjKey::of).collect::<Vec<_>>(),
                c.statefulsets.iter().map(ObjKey::of).collect::<Vec<_>>(),
            )
        };
        ds.into_iter().for_each(|k| self.apps.daemonsets.add(k));
        jobs.into_iter().for_each(|k| self.apps.jobs.add(k));
        cjs.into_iter().for_each(|k| self.apps.cronjobs.add(k));
        sts.into_iter().for_each(|k| self.apps.statefulsets.add(k));
    }
}

pub(super) async fn reconcile_daemonset(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let q = &ctx.apps.daemonsets;
    if !ctx.apps.ds_expectations.satisfied(key, Instant::now()) {
        // Our own creations/deletions are not in the cache yet; their events re-enqueue us.
        q.add_after(key.clone(), Duration::from_secs(1));
        return Ok(());
    }
    let (ds, nodes, pods, revisions, adopt) = {
        let c = ctx.read();
        if !c.synced.contains("Node")
            || !c.synced.contains("Pod")
            || !c.synced.contains("ControllerRevision")
        {
            q.add_after(key.clone(), Duration::from_secs(1));
            return Ok(());
        }
        let Some(ds) = c.daemonsets.get(key).cloned() else {
            return Ok(());
        };
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let in_ns: Vec<Pod> = c.pods.in_namespace(&key.namespace).cloned().collect();
        let selector = ds
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let adopt = util::adoptable(&ds.metadata, "apps/v1", "DaemonSet", &selector, &in_ns);
        let pods: Vec<Pod> = in_ns
            .into_iter()
            .filter(|p| util::controlled_by(&p.metadata, &uid))
            .collect();
        let nodes: Vec<Node> = c.nodes.iter().cloned().collect();
        let (revisions, orphans) = owned_revisions(&c, &ds.metadata, "DaemonSet", &selector);
        (ds, nodes, pods, revisions, (adopt, orphans))
    };
    if adopt_all(ctx, adopt).await? {
        return Ok(());
    }
    let now = util::now();
    let actions = daemonset::reconcile(&ds, &nodes, &pods, &revisions, now, &mut random_suffix);
    ctx.apps.ds_expectations.expect_actions(
        key,
        &actions,
        |a| matches!(a, daemonset::Action::CreatePod(_)),
        |a| matches!(a, daemonset::Action::DeletePod { .. }),
    );
    let rec = &ctx.apps.ds_events;
    let emit = |t: EventType, reason: &'static str, message: String| {
        super::emit(rec, events::reference(&ds), t, reason, message);
    };
    let mut first_err = None;
    for a in actions {
        let r = match a {
            daemonset::Action::CreatePod(p) => {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                create_expected_pod(ctx, &ctx.apps.ds_expectations, key, &p, &emit)
                    .await
                    .map(|name| tracing::info!(pod = %name, %node, "created daemon pod"))
            }
            daemonset::Action::DeletePod { pod, node, why } => {
                tracing::info!(pod = %pod.name, %node, ?why, "deleting daemon pod");
                if why == daemonset::Why::Failed {
                    emit(
                        EventType::Warning,
                        "FailedDaemonPod",
                        format!(
                            "Found failed daemon pod {} on node {node}, will try to kill it",
                            pod
                        ),
                    );
                }
                delete_expected_pod(ctx, &ctx.apps.ds_expectations, key, &pod, &emit).await
            }
            daemonset::Action::UpdateStatus(n) => ctx.client.update_status(&n).await.map(|_| ()),
            daemonset::Action::Revision(change) => {
                let creates = matches!(change, history::Change::Create(_));
                match write_revision(ctx, &ds.metadata, change).await {
                    Ok(RevisionWrite::Done) => Ok(()),
                    Ok(RevisionWrite::Collision) => {
                        // Another template holds the name: count the collision, start over.
                        ctx.apps.ds_expectations.expect(key, 0, 0, Instant::now());
                        let mut n = ds.clone();
                        let st = n.status.get_or_insert_with(Default::default);
                        st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                        return ctx.client.update_status(&n).await.map(|_| ());
                    }
                    // Pods must not carry a hash whose revision is not stored.
                    Err(error) if creates => {
                        ctx.apps.ds_expectations.expect(key, 0, 0, Instant::now());
                        return Err(error);
                    }
                    Err(error) => Err(error),
                }
            }
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    // Pods ready but not yet available for minReadySeconds need a later look.
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    if min_ready > 0
        && pods
            .iter()
            .any(|p| util::pod_ready(p) && !util::pod_available(p, min_ready, now))
    {
        q.add_after(
            key.clone(),
            Duration::from_secs(u64::try_from(min_ready).unwrap_or(1)),
        );
    }
    first_err.map_or(Ok(()), Err)
}

/// The ControllerRevisions `owner` (of `kind`) controls, and the orphans
/// in its namespace its selector matches: Kubernetes adopts those, so a set
/// re-created after an orphaning delete keeps its history, and its adopted
/// pods stay current.
fn owned_revisions(
    c: &super::Cache,
    owner: &ObjectMeta,
    kind: &str,
    selector: &LabelSelector,
) -> (Vec<ControllerRevision>, Vec<ControllerRevision>) {
    let uid = owner.uid.as_deref().unwrap_or_default();
    let owned = c
        .revisions
        .owned_by(uid)
        .filter(|r| util::controlled_by(&r.metadata, uid))
        .cloned()
        .collect();
    let ns = owner.namespace.as_deref().unwrap_or_default();
    let in_ns: Vec<ControllerRevision> = c.revisions.in_namespace(ns).cloned().collect();
    let orphans = util::adoptable(owner, "apps/v1", kind, selector, &in_ns);
    (owned, orphans)
}

/// Writes the controller references of adopted pods, then of adopted
/// revisions; true when there was anything to adopt (the pass ends there:
/// the cache shows the adoptions before the next one plans).
async fn adopt_all(
    ctx: &Ctx,
    (pods, revisions): (Vec<Pod>, Vec<ControllerRevision>),
) -> Result<bool, Error> {
    let any = !pods.is_empty() || !revisions.is_empty();
    for p in pods {
        tracing::info!(
            pod = p.metadata.name.as_deref().unwrap_or_default(),
            "adopting pod"
        );
        ignore_not_found(ctx.client.update(&p).await)?;
    }
    for r in revisions {
        tracing::info!(
            revision = r.metadata.name.as_deref().unwrap_or_default(),
            "adopting controller revision"
        );
        ignore_not_found(ctx.client.update(&r).await)?;
    }
    Ok(any)
}

/// How a revision write went.
enum RevisionWrite {
    Done,
    /// The name is taken by a revision holding another template (or by
    /// someone else's): the owner's collision count must go up.
    Collision,
}

/// Makes one history change of the owner `owner`.
async fn write_revision(
    ctx: &Ctx,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    change: history::Change,
) -> Result<RevisionWrite, Error> {
    let ns = owner.namespace.clone().unwrap_or_default();
    match change {
        history::Change::Create(r) => {
            let name = r.metadata.name.clone().unwrap_or_default();
            match ctx.client.create(r.as_ref()).await {
                Ok(_) => {
                    tracing::info!(revision = %name, number = r.revision, "created controller revision");
                    Ok(RevisionWrite::Done)
                }
                Err(Error::AlreadyExists(_)) => {
                    // Ours from a pass the cache has not shown yet, or a collision.
                    let existing: ControllerRevision = ctx.client.get(&ns, &name).await?;
                    let uid = owner.uid.as_deref().unwrap_or_default();
                    let same = util::controlled_by(&existing.metadata, uid)
                        && history::template_of(&existing) == history::template_of(&r);
                    Ok(if same {
                        RevisionWrite::Done
                    } else {
                        RevisionWrite::Collision
                    })
                }
                Err(e) => Err(e),
            }
        }
        history::Change::Renumber(r) => {
            tracing::info!(
                revision = r.metadata.name.as_deref().unwrap_or_default(),
                number = r.revision,
                "re-using controller revision"
            );
            ctx.client
                .update(r.as_ref())
                .await
                .map(|_| RevisionWrite::Done)
        }
        history::Change::Delete(name) => {
            tracing::info!(revision = %name, "pruning controller revision");
            ignore_not_found(
                ctx.client
                    .delete::<ControllerRevision>(&ns, &name, &DeleteParams::default())
                    .await,
            )
            .map(|_| RevisionWrite::Done)
        }
    }
}

pub(super) async fn reconcile_cronjob(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let q = &ctx.apps.cronjobs;
    let (cj, jobs) = {
        let c = ctx.read();
        if !c.synced.contains("Job") {
            q.add_after(key.clone(), Duration::from_secs(1));
            return Ok(());
        }
        let Some(cj) = c.cronjobs.get(key).cloned() else {
            return Ok(());
        };
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let jobs: Vec<Job> = c
            .jobs
            .owned_by(&uid)
            .filter(|j| util::controlled_by(&j.metadata, &uid))
            .cloned()
            .collect();
        (cj, jobs)
    };
    let now = util::now();
    let rec = &ctx.apps.cronjob_events;
    let emit = |t: EventType, reason: &'static str, message: String| {
        super::emit(rec, events::reference(&cj), t, reason, message);
    };
    // The decision's order matters: a status naming a Job is written only
    // after that Job was created.
    for a in cronjob::reconcile(&cj, &jobs, now) {
        match a {
            cronjob::Action::CreateJob(j) => {
                let name = j.metadata.name.clone().unwrap_or_default();
                match ctx.client.create(j.as_ref()).await {
                    Ok(_) => {
                        tracing::info!(job = %name, "created job");
                        emit(
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created job {name}"),
                        );
                    }
                    // Made by an earlier pass whose status write was lost.
                    Err(Error::AlreadyExists(_)) => {}
                    Err(error) => {
                        emit(
                            EventType::Warning,
                            "FailedCreate",
                            format!("Error creating job: {error}"),
                        );
                        return Err(error);
                    }
                }
            }
            cronjob::Action::DeleteJob { name, replaced } => {
                tracing::info!(job = %name, replaced, "deleting job");
                let params = DeleteParams {
                    propagation_policy: "Background".into(),
                    ..Default::default()
                };
                ignore_not_found(
                    ctx.client
                        .delete::<Job>(&key.namespace, &name, &params)
                        .await,
                )?;
                emit(
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                );
            }
            cronjob::Action::UpdateStatus(n) => {
                ctx.client.update_status(n.as_ref()).await?;
            }
            cronjob::Action::Record {
                warning,
                reason,
                message,
            } => {
                let t = if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                emit(t, reason, message);
            }
            cronjob::Action::RequeueAt(t) => {
                let wait = t.duration_since(now).unsigned_abs();
                q.add_after(key.clone(), wait + Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

pub(super) async fn reconcile_statefulset(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let q = &ctx.apps.statefulsets;
    let exp = &ctx.apps.sts_expectations;
    if !exp.satisfied(key, Instant::now()) {
        q.add_after(key.clone(), Duration::from_secs(1));
        return Ok(());
    }
    let (sts, pods, revisions, claims, adopt) = {
        let c = ctx.read();
        if !c.synced.contains("Pod")
            || !c.synced.contains("ControllerRevision")
            || !c.synced.contains("PersistentVolumeClaim")
        {
            q.add_after(key.clone(), Duration::from_secs(1));
            return Ok(());
        }
        let Some(sts) = c.statefulsets.get(key).cloned() else {
            return Ok(());
        };
        let uid = sts.metadata.uid.clone().unwrap_or_default();
        let in_ns: Vec<Pod> = c.pods.in_namespace(&key.namespace).cloned().collect();
        let selector = sts
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let adopt = util::adoptable(&sts.metadata, "apps/v1", "StatefulSet", &selector, &in_ns);
        let pods: Vec<Pod> = in_ns
            .into_iter()
            .filter(|p| util::controlled_by(&p.metadata, &uid))
            .collect();
        let (revisions, orphans) = owned_revisions(&c, &sts.metadata, "StatefulSet", &selector);
        // Only claims named like the set's (`<template>-<set>-<ordinal>`).
        let infix = format!("-{}-", key.name);
        let claims: Vec<PersistentVolumeClaim> = c
            .claims
            .in_namespace(&key.namespace)
            .filter(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.contains(&infix))
            })
            .cloned()
            .collect();
        (sts, pods, revisions, claims, (adopt, orphans))
    };
    if adopt_all(ctx, adopt).await? {
        return Ok(());
    }
    let now = util::now();
    let actions = statefulset::reconcile(&sts, &pods, &revisions, &claims, now);
    exp.expect_actions(
        key,
        &actions,
        |a| matches!(a, statefulset::Action::CreatePod(_)),
        |a| matches!(a, statefulset::Action::DeletePod(_)),
    );
    let set = key.name.as_str();
    let rec = &ctx.apps.sts_events;
    let emit = |t: EventType, reason: &'static str, message: String| {
        super::emit(rec, events::reference(&sts), t, reason, message);
    };
    for a in actions {
        match a {
            statefulset::Action::CreateClaim(c) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                match ctx.client.create(c.as_ref()).await {
                    Ok(_) => {
                        tracing::info!(claim = %name, "created claim");
                        emit(
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("create Claim {name} in StatefulSet {set} success"),
                        );
                    }
                    Err(Error::AlreadyExists(_)) => {}
                    Err(error) => {
                        emit(
                            EventType::Warning,
                            "FailedCreate",
                            format!(
                                "create Claim {name} in StatefulSet {set} failed error: {error}"
                            ),
                        );
                        // The rest of this pass is not done: expect nothing of it.
                        exp.expect(key, 0, 0, Instant::now());
                        return Err(error);
                    }
                }
            }
            statefulset::Action::CreatePod(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                match ctx.client.create(p.as_ref()).await {
                    Ok(_) => {
                        tracing::info!(pod = %name, "created pod");
                        emit(
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("create Pod {name} in StatefulSet {set} successful"),
                        );
                    }
                    Err(error) => {
                        exp.expect(key, 0, 0, Instant::now());
                        if !matches!(error, Error::AlreadyExists(_)) {
                            emit(
                                EventType::Warning,
                                "FailedCreate",
                                format!(
                                    "create Pod {name} in StatefulSet {set} failed error: {error}"
                                ),
                            );
                        }
                        return Err(error);
                    }
                }
            }
            statefulset::Action::DeletePod(k) => {
                tracing::info!(pod = %k.name, "deleting pod");
                let r = ctx
                    .client
                    .delete::<Pod>(&k.namespace, &k.name, &DeleteParams::default())
                    .await;
                if r.is_err() {
                    exp.lower(key, 0, 1);
                } else {
                    emit(
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("delete Pod {} in StatefulSet {set} successful", k.name),
                    );
                }
                ignore_not_found(r)?;
            }
            statefulset::Action::UpdateStatus(n) => {
                ctx.client.update_status(n.as_ref()).await?;
            }
            statefulset::Action::Revision(change) => {
                let written = write_revision(ctx, &sts.metadata, change).await;
                if !matches!(written, Ok(RevisionWrite::Done)) {
                    // Pods must not name a revision that is not stored.
                    exp.expect(key, 0, 0, Instant::now());
                }
                if let RevisionWrite::Collision = written? {
                    let mut n = sts.clone();
                    let st = n.status.get_or_insert_with(Default::default);
                    st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                    ctx.client.update_status(&n).await?;
                    return Ok(());
                }
            }
            statefulset::Action::UpdateClaim(c) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                tracing::info!(claim = %name, "setting claim owners (retention policy)");
                if let Err(error) = ignore_not_found(ctx.client.update(c.as_ref()).await) {
                    // A scaled-down pod must own its claims before it goes.
                    exp.expect(key, 0, 0, Instant::now());
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn reconcile_rc(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let q = &ctx.apps.rcs;
    let exp = &ctx.apps.rc_expectations;
    if !exp.satisfied(key, Instant::now()) {
        q.add_after(key.clone(), Duration::from_secs(1));
        return Ok(());
    }
    let (rc, pods, adopt) = {
        let c = ctx.read();
        if !c.synced.contains("Pod") {
            q.add_after(key.clone(), Duration::from_secs(1));
            return Ok(());
        }
        let Some(rc) = c.rcs.get(key).cloned() else {
            return Ok(());
        };
        let uid = rc.metadata.uid.clone().unwrap_or_default();
        let in_ns: Vec<Pod> = c.pods.in_namespace(&key.namespace).cloned().collect();
        let selector = replicationcontroller::selector(&rc);
        let adopt = util::adoptable(
            &rc.metadata,
            "v1",
            "ReplicationController",
            &selector,
            &in_ns,
        );
        let pods: Vec<Pod> = in_ns
            .into_iter()
            .filter(|p| util::controlled_by(&p.metadata, &uid))
            .collect();
        (rc, pods, adopt)
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
    let now = util::now();
    let actions = replicationcontroller::reconcile(&rc, &pods, now, &mut random_suffix);
    exp.expect_actions(
        key,
        &actions,
        |a| matches!(a, replicationcontroller::Action::CreatePod(_)),
        |a| matches!(a, replicationcontroller::Action::DeletePod(_)),
    );
    let rec = &ctx.apps.rc_events;
    let emit = |t: EventType, reason: &'static str, message: String| {
        super::emit(rec, events::reference(&rc), t, reason, message);
    };
    let mut first_err = None;
    for a in actions {
        let r = match a {
            replicationcontroller::Action::CreatePod(p) => {
                create_expected_pod(ctx, exp, key, &p, &emit)
                    .await
                    .map(|name| tracing::info!(pod = %name, "created pod"))
            }
            replicationcontroller::Action::DeletePod(k) => {
                tracing::info!(pod = %k.name, "deleting surplus pod");
                delete_expected_pod(ctx, exp, key, &k, &emit).await
            }
            replicationcontroller::Action::UpdateStatus(n) => {
                ctx.client.update_status(n.as_ref()).await.map(|_| ())
            }
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    let min_ready = rc
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    if min_ready > 0
        && pods
            .iter()
            .any(|p| util::pod_ready(p) && !util::pod_available(p, min_ready, now))
    {
        q.add_after(
            key.clone(),
            Duration::from_secs(u64::try_from(min_ready).unwrap_or(1)),
        );
    }
    first_err.map_or(Ok(()), Err)
}
