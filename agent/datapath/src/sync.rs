//! Service sync: watch Services and EndpointSlices -> stores -> plan -> maps.
//!
//! Two reflector tasks (one per kind) list, then watch from the list's
//! resourceVersion, re-list when the server says the revision expired, and
//! back off on other errors. They feed one loop that owns the stores and, once
//! both kinds have been listed, plans the map changes with the pure planner
//! and applies them. Planning against a partial view (e.g. Services listed but
//! EndpointSlices not yet) would empty every service on agent restart, so
//! nothing is written before both initial lists arrived.
//!
//! Planning is incremental: a watch event marks the services it touches (a
//! Service event its own name; an EndpointSlice event the service its label
//! names, before and after the change), and only those services are planned
//! again ([`plan::service_frontends`]) and diffed ([`plan::diff_frontends`]),
//! so one change among 10k services costs what it costs among ten. A
//! complete list (the first one, or a re-list after an expired watch) and a
//! failed apply plan everything again with the full [`plan::diff`], which
//! also removes leftovers of a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::mpsc;
use weir_client::{Client, WatchEvent};
use weir_ebpf_common::ServiceKey;

use super::plan::{self, DesiredServices};
use super::{Datapath, DatapathError};
use crate::reflect::{AbortOnDrop, Backoff, StoreEvent, reflect};

/// Watches Services and EndpointSlices (all namespaces) and keeps the service
/// and backend maps in sync, writing only the differences. Runs until a watch
/// task stops (which only happens if it panics); API errors are retried.
///
/// `forwarding`: the agent's `--lb-mode` and whether DSR can work here
/// (native routing); Services pick their own mode with an annotation (see
/// [`plan::forwarding_mode`]; an annotation that cannot be followed is
/// logged and recorded as a Warning Event on the Service, once per problem).
pub async fn run_service_sync(
    client: Client,
    dp: Arc<Mutex<Datapath>>,
    forwarding: plan::Forwarding,
) -> Result<(), DatapathError> {
    let (tx, mut rx) = mpsc::channel(256);
    let _services = AbortOnDrop(tokio::spawn(reflect::<Service, _>(
        client.clone(),
        tx.clone(),
        |e| Update::Services(Box::new(e)),
        false,
    )));
    let recorder = weir_client::events::Recorder::new(client.clone(), "weir-agent", None);
    let _slices = AbortOnDrop(tokio::spawn(reflect::<EndpointSlice, _>(
        client,
        tx,
        |e| Update::Slices(Box::new(e)),
        false,
    )));

    let mut state = SyncState::default();
    let mut pending = Pending {
        all: true,
        services: BTreeSet::new(),
    };
    let (mut current, node) = {
        let dp = lock(&dp);
        let node = dp
            .node_context()
            .map(|node| plan::NodeContext { forwarding, ..node });
        (dp.read_state()?, node)
    };
    let mut next_slot = current.next_free_slot();
    let mut retry: Option<tokio::time::Instant> = None;
    let mut backoff = Backoff::default();
    let mut report = tokio::time::interval(DROP_REPORT_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reported_drops = Vec::new();
    let mut reported_forwarding = BTreeMap::new();

    loop {
        let retry_at = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let update = tokio::select! {
            update = rx.recv() => update,
            () = retry_at => Some(Update::Retry),
            _ = report.tick() => {
                report_drops(&dp, &mut reported_drops);
                // The guard must be gone before anything else locks.
                let collected = lock(&dp).gc_conntrack();
                match collected {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(entries = n, "removed idle conntrack entries"),
                    Err(error) => tracing::warn!(%error, "cannot collect idle conntrack entries"),
                }
                continue;
            }
        };
        let Some(update) = update else {
            return Err(DatapathError::WatchStopped {
                kind: "Service/EndpointSlice",
            });
        };
        let mut batch = vec![update];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for update in batch {
            state.apply(update, &mut pending);
        }
        if !(state.services.synced && state.slices.synced) {
            continue;
        }

        let full = pending.all;
        let ops = match state.replan(&mut pending, node.as_ref()) {
            None => plan::diff(state.desired(), &current, &mut next_slot),
            Some(keys) => plan::diff_frontends(state.desired(), &keys, &current, &mut next_slot),
        };
        report_forwarding(
            &recorder,
            &state.forwarding_problems,
            &mut reported_forwarding,
        );
        if ops.is_empty() {
            retry = None;
            continue;
        }
        let desired = state.desired();
        let span = tracing::info_span!(
            "service_sync",
            frontends = desired.len(),
            ops = ops.len(),
            full
        );
        match span.in_scope(|| apply_plan(&dp, &ops, desired, &mut current)) {
            Ok(()) => {
                retry = None;
                backoff.reset();
            }
            Err(error) => {
                let delay = backoff.next();
                tracing::warn!(parent: &span, %error, retry_in = ?delay, "cannot update service maps");
                retry = Some(tokio::time::Instant::now() + delay);
                // Part of the plan may be applied; the retry plans everything.
                pending.all = true;
            }
        }
    }
}

/// Logs, and records as a Warning Event on the Service, each forwarding
/// problem not reported before (a problem persists across replans of its
/// Service without being reported again).
fn report_forwarding(
    recorder: &weir_client::events::Recorder,
    now: &BTreeMap<Name, plan::ForwardingProblem>,
    reported: &mut BTreeMap<Name, plan::ForwardingProblem>,
) {
    for ((namespace, name), problem) in now {
        if reported.get(&(namespace.clone(), name.clone())) == Some(problem) {
            continue;
        }
        tracing::warn!(%namespace, service = %name, %problem, "forwarding mode not followed");
        let regarding = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            ..Default::default()
        };
        let (recorder, message) = (recorder.clone(), problem.to_string());
        tokio::spawn(async move {
            if let Err(error) = recorder
                .warning(&regarding, "ForwardingModeIgnored", &message)
                .await
            {
                tracing::debug!(%error, "could not record event");
            }
        });
    }
    *reported = now.clone();
}

/// How often the sync loop checks the datapath's drop counters and collects
/// idle conntrack entries.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(30);

/// Logs the drop counters that grew since the last report (a warning per
/// reason: a full map or a service without backends shows up in the logs).
fn report_drops(dp: &Mutex<Datapath>, reported: &mut Vec<(&'static str, u64)>) {
    let now = match lock(dp).drop_counters() {
        Ok(now) => now,
        Err(error) => {
            tracing::warn!(%error, "cannot read the datapath drop counters");
            return;
        }
    };
    for (reason, count) in drop_increases(reported, &now) {
        tracing::warn!(reason, count, "the datapath dropped packets");
    }
    *reported = now;
}

/// The counters of `now` that grew since `before` (a counter missing from
/// `before` counts from 0), with their increase.
fn drop_increases(
    before: &[(&'static str, u64)],
    now: &[(&'static str, u64)],
) -> Vec<(&'static str, u64)> {
    now.iter()
        .filter_map(|(name, count)| {
            let old = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c);
            (*count > old).then(|| (*name, count - old))
        })
        .collect()
}

/// Applies a plan under one lock of the datapath: the map ops, then, if the
/// plan removed backends or services, the purge of stale UDP conntrack.
/// Synchronous on purpose: a `std::sync::Mutex` guard must not live across an
/// `.await`, and taking the lock twice in one statement would deadlock.
pub(super) fn apply_plan(
    dp: &Mutex<Datapath>,
    ops: &[plan::MapOp],
    desired: &plan::DesiredServices,
    current: &mut plan::MapState,
) -> Result<(), DatapathError> {
    let mut dp = lock(dp);
    dp.apply(ops, current)?;
    tracing::info!("service maps updated");
    let removes = |op: &plan::MapOp| {
        matches!(
            op,
            plan::MapOp::DeleteBackend(_) | plan::MapOp::DeleteService(_)
        )
    };
    if ops.iter().any(removes) {
        match dp.purge_stale_udp_conntrack(desired) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "purged stale UDP conntrack"),
            Err(error) => tracing::warn!(%error, "cannot purge stale UDP conntrack"),
        }
    }
    Ok(())
}

fn lock(dp: &Mutex<Datapath>) -> std::sync::MutexGuard<'_, Datapath> {
    // A panic while holding the lock leaves the maps as the kernel has them;
    // `current` is re-planned against on every pass, so the data is usable.
    dp.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One change reported by a reflector (boxed: the objects are large).
enum Update {
    Services(Box<StoreEvent<Service>>),
    Slices(Box<StoreEvent<EndpointSlice>>),
    /// Time to retry a failed apply.
    Retry,
}

/// Namespace and name of an object.
type Name = (String, String);

/// What must be planned again: everything, or these services.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pending {
    all: bool,
    services: BTreeSet<Name>,
}

/// The sync loop's view: both stores, which slices belong to which service,
/// and the frontends each service contributes. No I/O.
#[derive(Default)]
struct SyncState {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    /// Service name -> the names of the slices labelled with it.
    slices_of: BTreeMap<Name, BTreeSet<Name>>,
    frontends: Frontends,
    /// Services whose forwarding-mode annotation cannot be followed.
    forwarding_problems: BTreeMap<Name, plan::ForwardingProblem>,
}

impl SyncState {
    /// Applies one update to the stores and notes in `pending` what it
    /// touched. An EndpointSlice that moves from one service to another (its
    /// label changed) touches both.
    fn apply(&mut self, update: Update, pending: &mut Pending) {
        match update {
            Update::Services(event) => {
                match &*event {
                    StoreEvent::Listed(_) => pending.all = true,
                    StoreEvent::Event(WatchEvent::Bookmark(_)) => {}
                    StoreEvent::Event(
                        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o),
                    ) => {
                        pending.services.insert(key_of(o));
                    }
                }
                self.services.apply(*event);
            }
            Update::Slices(event) => {
                let listed = matches!(*event, StoreEvent::Listed(_));
                match &*event {
                    StoreEvent::Listed(_) => pending.all = true,
                    StoreEvent::Event(WatchEvent::Bookmark(_)) => {}
                    StoreEvent::Event(
                        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o),
                    ) => {
                        let slice = key_of(o);
                        if let Some(service) = self.slices.objects.get(&slice).and_then(owner_of) {
                            unindex(&mut self.slices_of, &service, &slice);
                            pending.services.insert(service);
                        }
                        if let Some(service) = owner_of(o) {
                            if !matches!(*event, StoreEvent::Event(WatchEvent::Deleted(_))) {
                                self.slices_of
                                    .entry(service.clone())
                                    .or_default()
                                    .insert(slice);
                            }
                            pending.services.insert(service);
                        }
                    }
                }
                self.slices.apply(*event);
                if listed {
                    self.slices_of.clear();
                    for (name, slice) in &self.slices.objects {
                        if let Some(service) = owner_of(slice) {
                            self.slices_of
                                .entry(service)
                                .or_default()
                                .insert(name.clone());
                        }
                    }
                }
            }
            Update::Retry => {}
        }
    }

    /// Plans the pending services again and clears `pending`. Returns the
    /// frontend keys whose desired value may have changed, or `None` when
    /// everything was planned again (then the caller diffs everything).
    fn replan(
        &mut self,
        pending: &mut Pending,
        node: Option<&plan::NodeContext>,
    ) -> Option<BTreeSet<ServiceKey>> {
        let pending = std::mem::take(pending);
        if pending.all {
            self.frontends = Frontends::default();
            self.forwarding_problems.clear();
            let names: Vec<Name> = self.services.objects.keys().cloned().collect();
            for name in names {
                let frontends = self.frontends_of(&name, node);
                self.frontends.set(&name, frontends);
                self.note_forwarding(&name, node);
            }
            return None;
        }
        let mut touched = BTreeSet::new();
        for name in &pending.services {
            let frontends = self.frontends_of(name, node);
            touched.extend(self.frontends.set(name, frontends));
            self.note_forwarding(name, node);
        }
        Some(touched)
    }

    /// What service `name` should contribute now (nothing if it is gone).
    fn frontends_of(&self, name: &Name, node: Option<&plan::NodeContext>) -> DesiredServices {
        let Some(service) = self.services.objects.get(name) else {
            return DesiredServices::new();
        };
        let slices: Vec<&EndpointSlice> = self
            .slices_of
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|slice| self.slices.objects.get(slice))
            .collect();
        plan::service_frontends(service, &slices, node)
    }

    /// Records whether service `name`'s forwarding-mode annotation can be
    /// followed on this node.
    fn note_forwarding(&mut self, name: &Name, node: Option<&plan::NodeContext>) {
        let problem = node
            .zip(self.services.objects.get(name))
            .and_then(|(node, service)| plan::forwarding_mode(service, node.forwarding).1);
        match problem {
            Some(problem) => self.forwarding_problems.insert(name.clone(), problem),
            None => self.forwarding_problems.remove(name),
        };
    }

    fn desired(&self) -> &DesiredServices {
        &self.frontends.desired
    }
}

/// The service an EndpointSlice belongs to, if the planner uses it.
fn owner_of(slice: &EndpointSlice) -> Option<Name> {
    plan::slice_service(slice).map(|(ns, name)| (ns.to_owned(), name.to_owned()))
}

fn unindex(index: &mut BTreeMap<Name, BTreeSet<Name>>, service: &Name, slice: &Name) {
    if let Some(slices) = index.get_mut(service) {
        slices.remove(slice);
        if slices.is_empty() {
            index.remove(service);
        }
    }
}

/// The frontends of every service, merged into the desired map contents the
/// way [`plan::desired_services`] merges them: when two services claim the
/// same frontend key, the later one by namespace/name wins.
#[derive(Default)]
struct Frontends {
    /// What each service contributes (services contributing nothing are absent).
    by_service: BTreeMap<Name, DesiredServices>,
    /// The services contributing each frontend key.
    owners: BTreeMap<ServiceKey, BTreeSet<Name>>,
    /// The merged result.
    desired: DesiredServices,
}

impl Frontends {
    /// Replaces what `service` contributes; returns the frontend keys it
    /// contributed before or contributes now (the only keys whose merged
    /// value can have changed).
    fn set(&mut self, service: &Name, frontends: DesiredServices) -> BTreeSet<ServiceKey> {
        let old = self.by_service.remove(service).unwrap_or_default();
        for key in old.keys() {
            if let Some(owners) = self.owners.get_mut(key) {
                owners.remove(service);
                if owners.is_empty() {
                    self.owners.remove(key);
                }
            }
        }
        for key in frontends.keys() {
            self.owners.entry(*key).or_default().insert(service.clone());
        }
        let touched: BTreeSet<ServiceKey> = old.keys().chain(frontends.keys()).copied().collect();
        if !frontends.is_empty() {
            self.by_service.insert(service.clone(), frontends);
        }
        for key in &touched {
            let winner = self
                .owners
                .get(key)
                .and_then(BTreeSet::last)
                .and_then(|owner| self.by_service.get(owner)?.get(key));
            match winner {
                Some(frontend) => self.desired.insert(*key, frontend.clone()),
                None => self.desired.remove(key),
            };
        }
        touched
    }
}

/// The last known state of one kind, keyed by namespace/name. `apply` does no I/O.
struct Store<K> {
    objects: BTreeMap<(String, String), K>,
    /// A complete list has been seen.
    synced: bool,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            synced: false,
        }
    }
}

impl<K: Metadata<Ty = ObjectMeta>> Store<K> {
    fn apply(&mut self, event: StoreEvent<K>) {
        match event {
            StoreEvent::Listed(items) => {
                self.objects = items.into_iter().map(|o| (key_of(&o), o)).collect();
                self.synced = true;
            }
            StoreEvent::Event(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                self.objects.insert(key_of(&o), o);
            }
            StoreEvent::Event(WatchEvent::Deleted(o)) => {
                self.objects.remove(&key_of(&o));
            }
            StoreEvent::Event(WatchEvent::Bookmark(_)) => {}
        }
    }
}

fn key_of<K: Metadata<Ty = ObjectMeta>>(o: &K) -> (String, String) {
    let m = o.metadata();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip}
        }))
        .expect("valid Service")
    }

    fn ips(store: &Store<Service>) -> Vec<String> {
        store
            .objects
            .values()
            .filter_map(|s| s.spec.as_ref()?.cluster_ip.clone())
            .collect()
    }

    #[test]
    fn store_applies_lists_and_events() {
        let mut store = Store::default();
        store.apply(StoreEvent::Event(WatchEvent::Added(svc(
            "a",
            "x",
            "10.96.0.1",
        ))));
        assert!(!store.synced, "events alone do not make a store synced");
        store.apply(StoreEvent::Listed(vec![
            svc("a", "y", "10.96.0.2"),
            svc("b", "y", "10.96.0.3"),
        ]));
        assert!(store.synced);
        assert_eq!(
            ips(&store),
            ["10.96.0.2", "10.96.0.3"],
            "a list replaces everything"
        );
        store.apply(StoreEvent::Event(WatchEvent::Modified(svc(
            "a",
            "y",
            "10.96.0.9",
        ))));
        store.apply(StoreEvent::Event(WatchEvent::Deleted(svc(
            "b",
            "y",
            "10.96.0.3",
        ))));
        store.apply(StoreEvent::Event(WatchEvent::Bookmark("7".into())));
        assert_eq!(ips(&store), ["10.96.0.9"]);
    }

    fn service(ns: &str, name: &str, ip: &str, port: u16) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
        }))
        .expect("valid Service")
    }

    fn slice(ns: &str, name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name,
                         "labels": {plan::SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip]})).collect::<Vec<_>>(),
        }))
        .expect("valid EndpointSlice")
    }

    fn svc_event(e: WatchEvent<Service>) -> Update {
        Update::Services(Box::new(StoreEvent::Event(e)))
    }

    /// A `dsr` annotation a VXLAN node cannot follow is a problem while the
    /// annotation is there, on full and incremental replans alike; it goes
    /// when the annotation goes or the Service is deleted.
    #[test]
    fn forwarding_problems_follow_the_annotation() {
        use WatchEvent::{Added, Deleted, Modified};
        let node = plan::NodeContext {
            name: "n1".into(),
            ip: "192.168.0.2".parse().expect("ip"),
            forwarding: plan::Forwarding {
                default: plan::LbMode::Snat,
                dsr_possible: false,
            },
        };
        let annotated = |mode: Option<&str>| {
            let mut s = service("a", "s1", "10.96.0.1", 80);
            s.metadata.annotations =
                mode.map(|m| [(plan::FORWARDING_MODE_ANNOTATION.to_owned(), m.to_owned())].into());
            s
        };
        let name = ("a".to_owned(), "s1".to_owned());
        let mut state = SyncState::default();
        let mut pending = Pending::default();
        state.apply(
            Update::Services(Box::new(StoreEvent::Listed(vec![annotated(Some("dsr"))]))),
            &mut pending,
        );
        state.replan(&mut pending, Some(&node));
        assert_eq!(
            state.forwarding_problems.get(&name),
            Some(&plan::ForwardingProblem::DsrNeedsNativeRouting)
        );
        state.apply(svc_event(Modified(annotated(Some("snat")))), &mut pending);
        state.replan(&mut pending, Some(&node));
        assert!(state.forwarding_problems.is_empty(), "snat is fine");
        state.apply(svc_event(Added(annotated(Some("dsr")))), &mut pending);
        state.replan(&mut pending, Some(&node));
        assert_eq!(state.forwarding_problems.len(), 1);
        state.apply(svc_event(Deleted(annotated(Some("dsr")))), &mut pending);
        state.replan(&mut pending, Some(&node));
        assert!(state.forwarding_problems.is_empty(), "deleted");
    }

    fn slice_event(e: WatchEvent<EndpointSlice>) -> Update {
        Update::Slices(Box::new(StoreEvent::Event(e)))
    }

    /// After every step, the incrementally kept desired state equals a plan
    /// of everything from scratch, only the touched services' frontends are
    /// written, and the maps (mirrored in a `MapState`) hold what a full diff
    /// would make of them.
    #[test]
    fn incremental_replan_matches_a_full_plan_table() {
        use WatchEvent::{Added, Deleted, Modified};
        let node = plan::NodeContext {
            name: "n1".into(),
            ip: "192.168.0.2".parse().expect("ip"),
            forwarding: plan::Forwarding::default(),
        };
        let steps: Vec<(&str, Update, bool)> = vec![
            (
                "services listed",
                Update::Services(Box::new(StoreEvent::Listed(vec![
                    service("a", "s1", "10.96.0.1", 80),
                    service("a", "s2", "10.96.0.2", 80),
                ]))),
                true,
            ),
            (
                "slices listed",
                Update::Slices(Box::new(StoreEvent::Listed(vec![slice(
                    "a",
                    "s1-x",
                    "s1",
                    &["10.244.0.1"],
                )]))),
                true,
            ),
            (
                "a slice for s2 appears",
                slice_event(Added(slice("a", "s2-x", "s2", &["10.244.0.2"]))),
                false,
            ),
            (
                "s2's slice grows",
                slice_event(Modified(slice(
                    "a",
                    "s2-x",
                    "s2",
                    &["10.244.0.2", "10.244.0.3"],
                ))),
                false,
            ),
            (
                "s1's slice is relabelled to s2 (both change)",
                slice_event(Modified(slice("a", "s1-x", "s2", &["10.244.0.1"]))),
                false,
            ),
            (
                "a later service claims s1's address",
                svc_event(Added(service("b", "s3", "10.96.0.1", 80))),
                false,
            ),
            (
                "the claimant goes, s1 is back",
                svc_event(Deleted(service("b", "s3", "10.96.0.1", 80))),
                false,
            ),
            (
                "an earlier service claims s2's address and loses",
                svc_event(Added(service("0", "early", "10.96.0.2", 80))),
                false,
            ),
            (
                "s1 changes its port",
                svc_event(Modified(service("a", "s1", "10.96.0.1", 81))),
                false,
            ),
            (
                "the moved slice is deleted",
                slice_event(Deleted(slice("a", "s1-x", "s2", &["10.244.0.1"]))),
                false,
            ),
            (
                "s2 is deleted; the early claimant takes its address",
                svc_event(Deleted(service("a", "s2", "10.96.0.2", 80))),
                false,
            ),
            (
                "a slice for a service that does not exist",
                slice_event(Added(slice("a", "ghost-x", "ghost", &["10.244.0.9"]))),
                false,
            ),
            (
                "the service arrives after its slice",
                svc_event(Added(service("a", "ghost", "10.96.0.9", 80))),
                false,
            ),
            (
                "services re-listed without s1",
                Update::Services(Box::new(StoreEvent::Listed(vec![
                    service("0", "early", "10.96.0.2", 80),
                    service("a", "ghost", "10.96.0.9", 80),
                ]))),
                true,
            ),
        ];
        let mut state = SyncState::default();
        let mut pending = Pending::default();
        let mut current = plan::MapState::default();
        let mut next_slot = current.next_free_slot();
        for (name, update, full) in steps {
            state.apply(update, &mut pending);
            if !(state.services.synced && state.slices.synced) {
                continue;
            }
            let before = current.clone();
            let ops = match state.replan(&mut pending, Some(&node)) {
                None => {
                    assert!(full, "step {name}: planned everything");
                    plan::diff(state.desired(), &current, &mut next_slot)
                }
                Some(keys) => {
                    assert!(!full, "step {name}: planned incrementally");
                    let ops =
                        plan::diff_frontends(state.desired(), &keys, &current, &mut next_slot);
                    for op in &ops {
                        if let plan::MapOp::PutService(k, _) | plan::MapOp::DeleteService(k) = op {
                            assert!(keys.contains(k), "step {name}: {op:?} outside {keys:?}");
                        }
                    }
                    ops
                }
            };
            assert_eq!(pending, Pending::default(), "step {name}: pending cleared");
            let reference = plan::desired_services(
                state.services.objects.values(),
                state.slices.objects.values(),
                Some(&node),
            );
            assert_eq!(state.desired(), &reference, "step {name}");
            for op in &ops {
                current.apply(op);
            }
            let mut full_state = before;
            let mut slot = next_slot;
            for op in plan::diff(&reference, &full_state.clone(), &mut slot) {
                full_state.apply(&op);
            }
            assert_eq!(seen(&current), seen(&full_state), "step {name}: maps");
            assert_eq!(
                current.backends.len(),
                full_state.backends.len(),
                "step {name}: backend entries (none orphaned)"
            );
        }
        assert_eq!(
            state.desired().len(),
            2,
            "early and ghost are left: {:?}",
            state.desired()
        );
    }

    /// Frontend -> the backends a packet would see, whatever the slots.
    fn seen(s: &plan::MapState) -> BTreeMap<ServiceKey, Vec<weir_ebpf_common::Backend>> {
        s.services
            .iter()
            .map(|(k, v)| {
                let backends = (0..v.backend_count)
                    .map(|index| {
                        s.backends[&weir_ebpf_common::BackendKey {
                            slot: v.backend_slot,
                            index,
                        }]
                    })
                    .collect();
                (*k, backends)
            })
            .collect()
    }

    #[test]
    fn drop_increases_table() {
        type Counters = Vec<(&'static str, u64)>;
        let cases: [(&str, Counters, Counters, Counters); 4] = [
            (
                "first report: every non-zero counter",
                vec![],
                vec![("no_backend", 3), ("rewrite", 0)],
                vec![("no_backend", 3)],
            ),
            (
                "unchanged counters are quiet",
                vec![("no_backend", 3)],
                vec![("no_backend", 3)],
                vec![],
            ),
            (
                "only the increase is reported",
                vec![("no_backend", 3), ("no_route", 1)],
                vec![("no_backend", 5), ("no_route", 1)],
                vec![("no_backend", 2)],
            ),
            (
                "counters reset by recreated maps are quiet",
                vec![("map_insert", 9)],
                vec![("map_insert", 2)],
                vec![],
            ),
        ];
        for (name, before, now, want) in cases {
            assert_eq!(drop_increases(&before, &now), want, "case: {name}");
        }
    }
}
