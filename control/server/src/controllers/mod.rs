//! The controllers: Deployment -> ReplicaSet, ReplicaSet -> Pod,
//! ReplicationController, DaemonSet, Job and StatefulSet -> Pod (+ claims),
//! CronJob -> Job, Service -> EndpointSlice, the owner-reference garbage
//! collector, and node lifecycle (silent nodes become Ready=Unknown, their
//! pods not Ready).
//!
//! Shape (kube-runtime's): one reflector per kind keeps a shared [`Cache`]
//! in step with the API server; its change handlers map every change to the
//! keys of the objects whose reconcile it affects and push them onto
//! de-duplicating work queues; one worker per controller pops a key, takes a
//! snapshot from the cache, calls the controller's pure `reconcile` and
//! executes the returned actions through the API client.

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
mod exec;
mod exec_apps;
mod exec_job;
pub mod gc;
pub mod history;
pub mod job;
pub mod nodelifecycle;
pub mod nodematch;
pub mod queue;
pub mod reflector;
pub mod replicaset;
pub mod replicationcontroller;
pub mod statefulset;
pub mod store;
pub mod util;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    Node, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_api::selector::Selector;
use weir_client::events::{EventType, Recorder};

use queue::WorkQueue;
use reflector::Cached;
use store::{Change, ObjKey, Store};

/// Kinds the controllers watch; the GC only collects these and only judges owners of these kinds.
pub const WATCHED: [&str; 12] = [
    "DaemonSet",
    "Job",
    "CronJob",
    "StatefulSet",
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "Pod",
    "Service",
    "EndpointSlice",
    "ControllerRevision",
    "PersistentVolumeClaim",
];
/// Every key is reconciled again this often, to heal anything an event missed.
const RESYNC: Duration = Duration::from_secs(30);

/// The controllers' view of the cluster.
#[derive(Default)]
pub struct Cache {
    pub deployments: Store<Deployment>,
    pub replicasets: Store<ReplicaSet>,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub nodes: Store<Node>,
    pub daemonsets: Store<DaemonSet>,
    pub jobs: Store<Job>,
    pub cronjobs: Store<CronJob>,
    pub statefulsets: Store<StatefulSet>,
    pub rcs: Store<ReplicationController>,
    /// DaemonSets' and StatefulSets' histories.
    pub revisions: Store<ControllerRevision>,
    /// StatefulSets' claims (their retention policy; the GC collects them).
    pub claims: Store<PersistentVolumeClaim>,
    synced: BTreeSet<&'static str>,
}

impl Cache {
    /// Whether every watched kind has been listed once (before that, a
    /// missing owner may just not be loaded yet).
    pub fn all_synced(&self) -> bool {
        WATCHED.iter().all(|k| self.synced.contains(k))
    }
}

macro_rules! cached {
    ($t:ty, $field:ident, $kind:literal) => {
        impl Cached<$t> for Cache {
            fn store(&mut self) -> &mut Store<$t> {
                &mut self.$field
            }
            fn mark_synced(&mut self) {
                self.synced.insert($kind);
            }
        }
    };
}
cached!(Deployment, deployments, "Deployment");
cached!(ReplicaSet, replicasets, "ReplicaSet");
cached!(Pod, pods, "Pod");
cached!(Service, services, "Service");
cached!(EndpointSlice, slices, "EndpointSlice");
cached!(Node, nodes, "Node");
cached!(DaemonSet, daemonsets, "DaemonSet");
cached!(Job, jobs, "Job");
cached!(CronJob, cronjobs, "CronJob");
cached!(StatefulSet, statefulsets, "StatefulSet");
cached!(ReplicationController, rcs, "ReplicationController");
cached!(ControllerRevision, revisions, "ControllerRevision");
cached!(PersistentVolumeClaim, claims, "PersistentVolumeClaim");

/// Pending creations/deletions of one ReplicaSet's pods (client-go's
/// ControllerExpectations): until the watch has shown them, the cache is
/// known to be behind and the ReplicaSet must not be reconciled again, or
/// it would create the same pods twice.
#[derive(Debug, Clone, Copy)]
pub struct Expectation {
    pub adds: i64,
    pub dels: i64,
    pub deadline: Instant,
}

/// How long to trust an expectation before assuming its events were lost.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Expectations(Mutex<HashMap<ObjKey, Expectation>>);

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjKey, Expectation>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn expect(&self, key: &ObjKey, adds: i64, dels: i64, now: Instant) {
        self.lock().insert(
            key.clone(),
            Expectation {
                adds,
                dels,
                deadline: now + EXPECTATION_TTL,
            },
        );
    }
    /// Expects the pod creates and deletes among `actions` (`create` and
    /// `delete` tell which is which), when there are any, before the
    /// controller decides again.
    pub fn expect_actions<A>(
        &self,
        key: &ObjKey,
        actions: &[A],
        create: impl Fn(&A) -> bool,
        delete: impl Fn(&A) -> bool,
    ) {
        let adds = actions.iter().filter(|a| create(a)).count() as i64;
        let dels = actions.iter().filter(|a| delete(a)).count() as i64;
        if adds > 0 || dels > 0 {
            self.expect(key, adds, dels, Instant::now());
        }
    }
    pub fn lower(&self, key: &ObjKey, adds: i64, dels: i64) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= adds;
            e.dels -= dels;
        }
    }
    /// True when the cache has caught up with our own writes (or gave up waiting).
    pub fn satisfied(&self, key: &ObjKey, now: Instant) -> bool {
        self.lock()
            .get(key)
            .is_none_or(|e| (e.adds <= 0 && e.dels <= 0) || now >= e.deadline)
    }
}

/// One Event recorder per controller, named like Kubernetes' components so
/// `weir get events` reads the same as on a Kubernetes cluster.
pub struct Recorders {
    pub deployment: Recorder,
    pub replicaset: Recorder,
    pub node: Recorder,
}

impl Recorders {
    fn new(client: &weir_client::Client) -> Self {
        Self {
            deployment: Recorder::new(client.clone(), "deployment-controller", None),
            replicaset: Recorder::new(client.clone(), "replicaset-controller", None),
            node: Recorder::new(client.clone(), "node-controller", None),
        }
    }
}

/// Records an Event in the background: Events are best effort and must
/// never slow down or fail the reconcile they describe.
pub fn emit(
    rec: &Recorder,
    regarding: ObjectReference,
    type_: EventType,
    reason: &'static str,
    message: String,
) {
    let rec = rec.clone();
    tokio::spawn(async move {
        if let Err(error) = rec.record(&regarding, type_, reason, &message).await {
            tracing::debug!(%error, reason, "could not record event");
        }
    });
}

/// Work item of the garbage collector: a kind and an object.
pub type GcKey = (&'static str, ObjKey);

/// Everything the workers share.
pub struct Ctx {
    pub client: weir_client::Client,
    pub cache: Arc<RwLock<Cache>>,
    pub deployments: WorkQueue<ObjKey>,
    pub replicasets: WorkQueue<ObjKey>,
    /// Keys are Services.
    pub slices: WorkQueue<ObjKey>,
    /// Keys are Nodes (namespace empty).
    pub nodes: WorkQueue<ObjKey>,
    pub gc: WorkQueue<GcKey>,
    pub expectations: Expectations,
    pub events: Recorders,
    /// DaemonSet (and later workload) controllers' queues and recorders.
    pub apps: exec_apps::Apps,
}

impl Ctx {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues every object in the cache that names `uid` as an owner.
    fn enqueue_dependents(&self, owner: &ObjectMeta) {
        let Some(uid) = owner.uid.as_deref() else {
            return;
        };
        let keys: Vec<GcKey> = {
            let c = self.read();
            let mut keys: Vec<GcKey> = Vec::new();
            keys.extend(
                c.replicasets
                    .owned_by(uid)
                    .map(|o| ("ReplicaSet", ObjKey::of(o))),
            );
            keys.extend(c.pods.owned_by(uid).map(|o| ("Pod", ObjKey::of(o))));
            keys.extend(c.jobs.owned_by(uid).map(|o| ("Job", ObjKey::of(o))));
            keys.extend(
                c.slices
                    .owned_by(uid)
                    .map(|o| ("EndpointSlice", ObjKey::of(o))),
            );
            keys.extend(
                c.revisions
                    .owned_by(uid)
                    .map(|o| ("ControllerRevision", ObjKey::of(o))),
            );
            keys.extend(
                c.claims
                    .owned_by(uid)
                    .map(|o| ("PersistentVolumeClaim", ObjKey::of(o))),
            );
            keys
        };
        for k in keys {
            self.gc.add(k);
        }
    }

    /// Enqueues an owner being deleted with Orphan/Foreground propagation,
    /// and the owners of a dependent that went away (a Foreground owner may
    /// now be free to go).
    fn enqueue_propagation(
        &self,
        kind: &'static str,
        ch: &Change<impl k8s_openapi::Metadata<Ty = ObjectMeta>>,
    ) {
        if let Some(n) = &ch.new {
            let m = n.metadata();
            let pending = m
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == gc::ORPHAN || f == gc::FOREGROUND);
            if m.deletion_timestamp.is_some() && pending {
                self.gc.add((kind, store::ObjKey::of(n)));
            }
        }
        if let (Some(old), None) = (&ch.old, &ch.new) {
            let m = old.metadata();
            for r in m.owner_references.iter().flatten() {
                if let Some(k) = WATCHED.iter().find(|k| **k == r.kind) {
                    self.gc.add((
                        k,
                        ObjKey::new(m.namespace.clone().unwrap_or_default(), r.name.clone()),
                    ));
                }
            }
        }
    }

    fn enqueue_controller(&self, meta: &ObjectMeta, kind: &str, q: &WorkQueue<ObjKey>) {
        if let Some(r) = util::controller_of(meta).filter(|r| r.kind == kind) {
            q.add(ObjKey::new(
                meta.namespace.clone().unwrap_or_default(),
                r.name.clone(),
            ));
        }
    }

    fn on_replicaset(&self, ch: &Change<ReplicaSet>) {
        self.enqueue_propagation("ReplicaSet", ch);
        for rs in ch.old.iter().chain(ch.new.iter()) {
            self.enqueue_controller(&rs.metadata, "Deployment", &self.deployments);
        }
        if let Some(rs) = &ch.new {
            self.replicasets.add(ObjKey::of(rs));
            self.gc.add(("ReplicaSet", ObjKey::of(rs)));
        }
        if let (Some(old), None) = (&ch.old, &ch.new) {
            self.enqueue_dependents(&old.metadata);
        }
    }

    fn on_pod(&self, ch: &Change<Pod>) {
        self.enqueue_propagation("Pod", ch);
        // Expectations first, so the ReplicaSet reconcile this triggers sees them met.
        let gone = |p: &Pod| util::terminating(&p.metadata);
        match (&ch.old, &ch.new) {
            (None, Some(new)) => self.observe(new, 1, 0),
            (Some(old), Some(new)) if !gone(old) && gone(new) => self.observe(new, 0, 1),
            (Some(old), None) if !gone(old) => self.observe(old, 0, 1),
            _ => {}
        }
        for p in ch.old.iter().chain(ch.new.iter()) {
            self.enqueue_controller(&p.metadata, "ReplicaSet", &self.replicasets);
        }
        self.on_pod_apps(ch);
        // Services whose selector matches the pod before or after the change.
        let mut services = BTreeSet::new();
        {
            let c = self.read();
            for p in ch.old.iter().chain(ch.new.iter()) {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                let labels = util::labels(&p.metadata);
                for s in c.services.in_namespace(ns) {
                    if let Some(sel) = s.spec.as_ref().and_then(|s| s.selector.as_ref())
                        && Selector::from_map(sel).matches(&labels)
                    {
                        services.insert(ObjKey::of(s));
                    }
                }
            }
        }
        for k in services {
            self.slices.add(k);
        }
        match (&ch.old, &ch.new) {
            (_, Some(p))
                if p.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| !r.is_empty()) =>
            {
                self.gc.add(("Pod", ObjKey::of(p)));
            }
            (Some(old), None) => self.enqueue_dependents(&old.metadata),
            _ => {}
        }
    }

    fn observe(&self, pod: &Pod, adds: i64, dels: i64) {
        if let Some(r) = util::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") {
            let key = ObjKey::new(
                pod.metadata.namespace.clone().unwrap_or_default(),
                r.name.clone(),
            );
            self.expectations.lower(&key, adds, dels);
        }
    }

    fn on_service(&self, ch: &Change<Service>) {
        self.enqueue_propagation("Service", ch);
        if let Some(s) = ch.latest() {
            self.slices.add(ObjKey::of(s));
        }
        if let (Some(old), None) = (&ch.old, &ch.new) {
            self.enqueue_dependents(&old.metadata);
        }
    }

    fn on_slice(&self, ch: &Change<EndpointSlice>) {
        self.enqueue_propagation("EndpointSlice", ch);
        if let Some(s) = ch.latest()
            && let Some(svc) = endpointslice::owning_service(s)
        {
            self.slices.add(ObjKey::new(
                s.metadata.namespace.clone().unwrap_or_default(),
                svc,
            ));
        }
        if let Some(s) = &ch.new {
            self.gc.add(("EndpointSlice", ObjKey::of(s)));
        }
    }

    /// Enqueues every object for a periodic full reconcile.
    fn on_node(&self, ch: &Change<Node>) {
        self.on_node_apps(ch);
        if let Some(n) = &ch.new {
            self.nodes.add(ObjKey::of(n));
        }
    }

    fn resync(&self) {
        let (d, r, s, n) = {
            let c = self.read();
            (
                c.deployments.iter().map(ObjKey::of).collect::<Vec<_>>(),
                c.replicasets.iter().map(ObjKey::of).collect::<Vec<_>>(),
                c.services.iter().map(ObjKey::of).collect::<Vec<_>>(),
                c.nodes.iter().map(ObjKey::of).collect::<Vec<_>>(),
            )
        };
        d.into_iter().for_each(|k| self.deployments.add(k));
        r.into_iter().for_each(|k| self.replicasets.add(k));
        s.into_iter().for_each(|k| self.slices.add(k));
        n.into_iter().for_each(|k| self.nodes.add(k));
        self.resync_apps();
    }
}

/// Handlers other components of the process (the scheduler) hang on the
/// controllers' Pod and Node reflectors, so the process keeps one cache of
/// each kind instead of one per component.
#[derive(Clone, Default)]
pub struct Hooks {
    pub on_pod: Option<Hook<Pod>>,
    pub on_node: Option<Hook<Node>>,
}

/// A handler of another component, called with every change of a kind.
pub type Hook<K> = Arc<dyn Fn(&Change<K>) + Send + Sync>;

/// Runs every controller until one of them fails for good (none does today:
/// each retries with back-off), so the caller can treat a return as fatal.
/// `cache` is shared with the scheduler, whose `hooks` see every Pod and
/// Node change after the controllers' own handlers.
pub async fn run(
    client: weir_client::Client,
    cache: Arc<RwLock<Cache>>,
    hooks: Hooks,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cache,
        deployments: WorkQueue::new(),
        replicasets: WorkQueue::new(),
        slices: WorkQueue::new(),
        nodes: WorkQueue::new(),
        gc: WorkQueue::new(),
        expectations: Expectations::default(),
        events: Recorders::new(&client),
        apps: exec_apps::Apps::new(&client),
    });
    let mut tasks = tokio::task::JoinSet::new();
    macro_rules! reflect {
        ($t:ty, $handler:ident) => {{
            let c = ctx.clone();
            tasks.spawn(reflector::reflect::<$t, _, _>(
                client.clone(),
                ctx.cache.clone(),
                move |ch| c.$handler(ch),
            ));
        }};
        // An owner kind: the shared handler, with its controller's queue.
        ($t:ty, owner $queue:expr) => {{
            let c = ctx.clone();
            tasks.spawn(reflector::reflect::<$t, _, _>(
                client.clone(),
                ctx.cache.clone(),
                move |ch| {
                    let queue: fn(&Ctx) -> &WorkQueue<ObjKey> = $queue;
                    c.on_owner(<$t as k8s_openapi::Resource>::KIND, queue(&c), ch)
                },
            ));
        }};
        ($t:ty, $handler:ident, $hook:expr) => {{
            let c = ctx.clone();
            let hook = $hook.clone();
            tasks.spawn(reflector::reflect::<$t, _, _>(
                client.clone(),
                ctx.cache.clone(),
                move |ch| {
                    c.$handler(ch);
                    if let Some(h) = &hook {
                        h(ch);
                    }
                },
            ));
        }};
    }
    reflect!(Deployment, owner | c | &c.deployments);
    reflect!(ReplicaSet, on_replicaset);
    reflect!(Pod, on_pod, hooks.on_pod);
    reflect!(Service, on_service);
    reflect!(EndpointSlice, on_slice);
    reflect!(Node, on_node, hooks.on_node);
    reflect!(DaemonSet, owner | c | &c.apps.daemonsets);
    reflect!(Job, on_job);
    reflect!(CronJob, owner | c | &c.apps.cronjobs);
    reflect!(StatefulSet, owner | c | &c.apps.statefulsets);
    reflect!(ReplicationController, owner | c | &c.apps.rcs);
    reflect!(ControllerRevision, on_revision);
    reflect!(PersistentVolumeClaim, on_claim);
    macro_rules! worker {
        ($name:literal, $queue:expr, $reconcile:path) => {
            tasks.spawn(exec::run_worker(ctx.clone(), $name, $queue, $reconcile))
        };
    }
    worker!("deployment", |c| &c.deployments, exec::reconcile_deployment);
    worker!("replicaset", |c| &c.replicasets, exec::reconcile_replicaset);
    worker!("endpointslice", |c| &c.slices, exec::reconcile_service);
    tasks.spawn(exec::gc_worker(ctx.clone()));
    tasks.spawn(exec::node_worker(ctx.clone()));
    worker!(
        "daemonset",
        |c| &c.apps.daemonsets,
        exec_apps::reconcile_daemonset
    );
    worker!("job", |c| &c.apps.jobs, exec_job::reconcile_job);
    worker!(
        "cronjob",
        |c| &c.apps.cronjobs,
        exec_apps::reconcile_cronjob
    );
    worker!(
        "statefulset",
        |c| &c.apps.statefulsets,
        exec_apps::reconcile_statefulset
    );
    worker!(
        "replicationcontroller",
        |c| &c.apps.rcs,
        exec_apps::reconcile_rc
    );
    let c = ctx.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tick.tick().await;
            c.resync();
        }
    });
    tracing::info!("controllers started");
    match tasks.join_next().await {
        Some(Ok(())) | None => anyhow::bail!("a controller task ended unexpectedly"),
        Some(Err(e)) => Err(anyhow::anyhow!("a controller task panicked: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_gate_until_observed_or_expired() {
        let e = Expectations::default();
        let k = ObjKey::new("default", "rs");
        let now = Instant::now();
        assert!(e.satisfied(&k, now), "no expectation: free to reconcile");
        e.expect(&k, 2, 1, now);
        assert!(!e.satisfied(&k, now));
        e.lower(&k, 2, 0);
        assert!(!e.satisfied(&k, now), "a deletion is still pending");
        e.lower(&k, 0, 1);
        assert!(e.satisfied(&k, now));
        e.expect(&k, 1, 0, now);
        assert!(
            e.satisfied(&k, now + EXPECTATION_TTL),
            "expired expectations stop blocking"
        );
    }
}
