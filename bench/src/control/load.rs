//! The load phases, each a plain async function over API clients: populate
//! the cluster, sustained writes, big lists, many watchers.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use weir_client::{Client, DeleteParams, ListParams, WatchParams};

/// Namespace of the populated pods and of the write phase.
pub const NS: &str = "bench";
/// Namespace the watchers watch (only the watch phase writes there).
pub const WATCH_NS: &str = "bench-watch";

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A Node as an agent registers it, Ready. The heartbeat lies in the future
/// so the node lifecycle controller leaves the 1000 silent nodes alone (the
/// heartbeat traffic of 1000 agents is not part of this benchmark).
pub fn node(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("node-{i:04}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i:04}"), "kubernetes.io/os": "linux"}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": "2100-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "addresses": [{"type": "InternalIP", "address": format!("172.31.{}.{}", i / 250, i % 250 + 1)}],
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}})
}

/// A running pod bound to a node, about the size of a real one (~1.5 kB).
pub fn pod(i: usize, nodes: usize) -> Value {
    let app = format!("app-{}", i % 100);
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}"), "namespace": NS,
            "labels": {"app": app, "tier": "backend", "pod-template-hash": "5d8f7c9b4"}},
        "spec": {"nodeName": format!("node-{:04}", i % nodes.max(1)),
            "containers": [{"name": "web", "image": "127.0.0.1:5000/weir/hostname:v1",
                "ports": [{"containerPort": 8080, "name": "http"}],
                "env": [{"name": "MODE", "value": "bench"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}]},
        "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", 128 + i / 65536, (i / 256) % 256, i % 256),
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// Creates `objects` with `concurrency` requests in flight.
pub async fn create_all(
    client: &Client,
    kind: &str,
    objects: Vec<Value>,
    concurrency: usize,
) -> Result<()> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for o in objects {
        let permit = sem.clone().acquire_owned().await?;
        let c = client.clone();
        let kind = kind.to_string();
        tasks.spawn(async move {
            let _permit = permit;
            match c.create_json(&kind, to_vec(&o), false).await {
                Ok(_) | Err(weir_client::Error::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e),
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r?.with_context(|| format!("creating {kind} objects"))?;
    }
    Ok(())
}

/// Results of the write phase.
#[derive(Debug, Default)]
pub struct Writes {
    pub latencies: Vec<Duration>,
    /// The same samples by call: create, update, delete.
    pub by_call: [Vec<Duration>; 3],
    pub errors: usize,
    pub elapsed: Duration,
}

/// Open-loop writes at `rate` per second for `duration`: groups of
/// create -> update -> delete of one ConfigMap start every 3/rate seconds
/// whether or not earlier groups finished, so a slow server cannot slow the
/// offered load down (no coordinated omission).
pub async fn sustained_writes(client: &Client, rate: f64, duration: Duration) -> Result<Writes> {
    let group_every = Duration::from_secs_f64(3.0 / rate.max(0.1));
    let groups = (duration.as_secs_f64() / group_every.as_secs_f64()).ceil() as usize;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for g in 0..groups {
        let at = start + group_every * u32::try_from(g).unwrap_or(u32::MAX);
        tokio::time::sleep_until(at.into()).await;
        let c = client.clone();
        let step = group_every / 3;
        tasks.spawn(async move { write_group(&c, g, at, step).await });
    }
    let mut out = Writes::default();
    while let Some(r) = tasks.join_next().await {
        let (lat, errs) = r?;
        for (i, l) in lat.iter().enumerate() {
            out.by_call[i.min(2)].push(*l);
        }
        out.latencies.extend(lat);
        out.errors += errs;
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

async fn write_group(c: &Client, g: usize, at: Instant, step: Duration) -> (Vec<Duration>, usize) {
    let name = format!("w-{g:06}");
    let mut lat = Vec::with_capacity(3);
    let mut errors = 0;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": {"bench": "writes"}},
        "data": {"config.yaml": "x".repeat(512)}});
    let t = Instant::now();
    let created = c.create_json("ConfigMap", to_vec(&cm), false).await;
    lat.push(t.elapsed());
    let Ok(created) = created else {
        return (lat, errors + 1);
    };
    tokio::time::sleep_until((at + step).into()).await;
    let mut obj: Value = serde_json::from_slice(&created).unwrap_or_default();
    obj["data"]["generation"] = json!("2");
    let t = Instant::now();
    if c.update_json("ConfigMap", to_vec(&obj), false)
        .await
        .is_err()
    {
        errors += 1;
    }
    lat.push(t.elapsed());
    tokio::time::sleep_until((at + step * 2).into()).await;
    let t = Instant::now();
    if c.delete_json("ConfigMap", NS, &name, &DeleteParams::default())
        .await
        .is_err()
    {
        errors += 1;
    }
    lat.push(t.elapsed());
    (lat, errors)
}

/// Lists every pod of `NS` `times` times, one after another.
pub async fn lists(client: &Client, times: usize, expect: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(times);
    for _ in 0..times {
        let t = Instant::now();
        let l = client.list_json("Pod", NS, &ListParams::default()).await?;
        out.push(t.elapsed());
        if l.items.len() != expect {
            bail!("listed {} pods, expected {expect}", l.items.len());
        }
    }
    Ok(out)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Results of the watch phase.
#[derive(Debug, Default)]
pub struct Fanout {
    pub latencies: Vec<Duration>,
    pub missing: usize,
    pub watchers: usize,
    pub events: usize,
}

/// `watchers` watches of ConfigMaps in `WATCH_NS` (spread over connections of
/// `per_connection` streams each, as many clients would), then `events`
/// creates at `rate` per second. Each created object carries its send time;
/// each watcher records now - send time for every ADDED event it gets.
pub async fn fanout(
    api: &str,
    watchers: usize,
    per_connection: usize,
    events: usize,
    rate: f64,
) -> Result<Fanout> {
    let mut clients = Vec::new();
    for _ in 0..watchers.div_ceil(per_connection.max(1)) {
        clients.push(Client::connect(api).await?);
    }
    let writer = Client::connect(api).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let ready = Arc::new(Semaphore::new(0));
    for w in 0..watchers {
        let c = clients[w / per_connection.max(1)].clone();
        let ready = ready.clone();
        tasks.spawn(async move {
            let params = WatchParams::default();
            let mut stream = c.watch_json("ConfigMap", WATCH_NS, &params).await?;
            ready.add_permits(1);
            let mut lat = Vec::with_capacity(events);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while lat.len() < events {
                let next = tokio::time::timeout_at(deadline, stream.next()).await;
                let Ok(Some(ev)) = next else { break };
                let ev = ev?;
                if ev.r#type != 0 {
                    continue;
                }
                let v: Value = serde_json::from_slice(&ev.json).unwrap_or_default();
                let sent: u128 = v["data"]["sent"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let ns = now_nanos().saturating_sub(sent);
                lat.push(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)));
            }
            anyhow::Ok(lat)
        });
    }
    // All watches established before the first write.
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        ready.acquire_many(u32::try_from(watchers).unwrap_or(u32::MAX)),
    )
    .await
    .context("watchers did not start within 60 s")?;
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let start = Instant::now();
    for e in 0..events {
        tokio::time::sleep_until((start + every * u32::try_from(e).unwrap_or(0)).into()).await;
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("fan-{e:05}"), "namespace": WATCH_NS},
            "data": {"sent": now_nanos().to_string()}});
        writer.create_json("ConfigMap", to_vec(&cm), false).await?;
    }
    let mut out = Fanout {
        watchers,
        events,
        ..Default::default()
    };
    while let Some(r) = tasks.join_next().await {
        let lat = r??;
        out.missing += events.saturating_sub(lat.len());
        out.latencies.extend(lat);
    }
    Ok(out)
}
