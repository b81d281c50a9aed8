//! The node API (`control/client/proto/agent.proto`), served by every agent
//! on its node address: `Observe` streams the flows this node's datapath
//! judged (replay from an in-memory ring, then follow), `Datapath` returns a
//! view of the pinned maps; plus the Prometheus endpoint (`/metrics`).
//!
//! Pipeline: the flow reader (`weir_datapath::flows`) decodes ring records
//! -> `convert::flow` names the pods (from `pods`, an index over every Pod)
//! and the policy (from the `PolicyNames` the policy sync publishes) ->
//! `hub` (ring + broadcast) -> one task per Observe stream, filtered by a
//! validated `filter::Filter`.
//!
//! Like the API server, the node API has no authentication yet: it must
//! listen only where operators and nobody else can reach it.

mod convert;
mod filter;
mod hub;
mod metrics;
mod pods;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};
use weir_client::Client;
use weir_client::agent::proto::{
    DatapathReply, DatapathRequest, Lost, ObserveRequest, ObserveResponse, datapath_request::View,
    observe_response::Event as Out,
};
use weir_client::agent::{Agent, AgentServer};
use weir_datapath::flows::{self, PolicyNames};

use filter::Filter;
use hub::{Event, Hub, Shared};

/// Where and for which node the API runs.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub node_name: String,
    pub bpffs_dir: PathBuf,
    /// The gRPC node API (`--api-addr`).
    pub api_addr: SocketAddr,
    /// The Prometheus endpoint (`--metrics-addr`).
    pub metrics_addr: SocketAddr,
}

/// Starts the flow reader, the pod index, the node API and the metrics
/// endpoint as background tasks. None of them can fail the agent: a port
/// that cannot be bound or a flow ring that does not exist (yet) is logged
/// and retried.
pub fn start(cfg: ApiConfig, client: Client, names: PolicyNames) {
    let hub = Arc::new(Hub::new(hub::RING_CAPACITY));
    let index = pods::SharedIndex::default();
    tokio::spawn(pods::run(client, index.clone()));

    let (reader_hub, node, reader_index) = (hub.clone(), cfg.node_name.clone(), index.clone());
    tokio::spawn(flows::run_flow_reader(cfg.bpffs_dir.clone(), move |flow| {
        let pod_of = |ip| pods::lookup(&reader_index, ip);
        reader_hub.push(convert::flow(&flow, &node, pod_of, &names));
        true
    }));
    tokio::spawn(report_kernel_lost(cfg.bpffs_dir.clone(), hub.clone()));

    let service = NodeApi {
        node: cfg.node_name.clone(),
        bpffs_dir: cfg.bpffs_dir.clone(),
        hub: hub.clone(),
        index,
    };
    let api_addr = cfg.api_addr;
    tokio::spawn(async move {
        loop {
            tracing::info!(addr = %api_addr, "serving the node API");
            let served = tonic::transport::Server::builder()
                .add_service(AgentServer::new(service.clone()))
                .serve(api_addr)
                .await;
            if let Err(error) = served {
                tracing::warn!(addr = %api_addr, error = %error, "the node API stopped; retrying");
            }
            tokio::time::sleep(RETRY).await;
        }
    });

    let (metrics_addr, dir) = (cfg.metrics_addr, cfg.bpffs_dir);
    tokio::spawn(async move {
        let listener = loop {
            match tokio::net::TcpListener::bind(metrics_addr).await {
                Ok(l) => break l,
                Err(error) => {
                    tracing::warn!(addr = %metrics_addr, %error, "cannot bind the metrics endpoint; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        tracing::info!(addr = %metrics_addr, "serving /metrics");
        metrics::serve(listener, dir, hub).await;
    });
}

const RETRY: Duration = Duration::from_secs(5);
/// How often the kernel's lost-event counter is compared with the last read.
const LOST_POLL: Duration = Duration::from_secs(2);

/// Tells followers when the kernel counted lost flow events.
async fn report_kernel_lost(bpffs_dir: PathBuf, hub: Arc<Hub>) {
    let mut last = None;
    loop {
        tokio::time::sleep(LOST_POLL).await;
        let dir = bpffs_dir.clone();
        let now =
            tokio::task::spawn_blocking(move || flows::counters(&dir).map_err(|e| e.to_string()))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|c| c.flow_events_lost);
        let grew = lost_increase(last, now);
        if grew > 0 {
            tracing::warn!(events = grew, "the flow ring was full: flow events lost");
            hub.kernel_lost(grew);
        }
        last = now.or(last);
    }
}

/// How much the lost counter grew; the first reading is the baseline.
fn lost_increase(last: Option<u64>, now: Option<u64>) -> u64 {
    match (last, now) {
        (Some(last), Some(now)) => now.saturating_sub(last),
        _ => 0,
    }
}

/// Everything the Datapath views need, read from the pinned maps. The
/// error is only reported, as text.
fn read_maps(
    dir: &std::path::Path,
) -> Result<(weir_datapath::inspect::Snapshot, flows::Counters), String> {
    let snapshot = weir_datapath::inspect::snapshot(dir).map_err(|e| e.to_string())?;
    let counters = flows::counters(dir).map_err(|e| e.to_string())?;
    Ok((snapshot, counters))
}

#[derive(Clone)]
struct NodeApi {
    node: String,
    bpffs_dir: PathBuf,
    hub: Arc<Hub>,
    /// Names ends that had no known pod when the flow was read (a new pod's
    /// first connection often races its status update).
    index: pods::SharedIndex,
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<ObserveResponse, Status>> + Send>>;

fn flow_event(f: &Shared) -> ObserveResponse {
    ObserveResponse {
        event: Some(Out::Flow((*f.0).clone())),
    }
}

fn lost_event(node: &str, events: u64, cause: &str) -> ObserveResponse {
    ObserveResponse {
        event: Some(Out::Lost(Lost {
            node: node.to_owned(),
            events,
            cause: cause.to_owned(),
        })),
    }
}

/// `f` with the ends it could not name when it was read named now, if
/// the pod index knows them by now.
fn named(f: &Shared, index: &pods::SharedIndex) -> Shared {
    let mut flow = (*f.0).clone();
    if convert::fill_pods(&mut flow, |ip| pods::lookup(index, ip)) {
        Shared(Arc::new(flow))
    } else {
        f.clone()
    }
}

/// Sends the replay, then (with follow) what the hub broadcasts, until the
/// client goes away.
async fn stream_flows(
    node: String,
    filter: Filter,
    replay: Vec<Shared>,
    mut rx: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Result<ObserveResponse, Status>>,
    index: pods::SharedIndex,
) {
    for f in &replay {
        if tx.send(Ok(flow_event(f))).await.is_err() {
            return;
        }
    }
    if !filter.follow {
        return;
    }
    loop {
        let event = tokio::select! {
            () = tx.closed() => return,
            event = rx.recv() => event,
        };
        let out = match event {
            Ok(Event::Flow(f)) => {
                let f = named(&f, &index);
                if !filter.matches(&f.0) {
                    continue;
                }
                flow_event(&f)
            }
            Ok(Event::KernelLost(n)) => lost_event(&node, n, "kernel ring full"),
            Err(broadcast::error::RecvError::Lagged(n)) => lost_event(&node, n, "client too slow"),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl Agent for NodeApi {
    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<ObserveRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let filter = Filter::try_from(request.get_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (replay, rx) = self.hub.subscribe(|ring| {
            let ring: Vec<Shared> = ring.iter().map(|f| named(f, &self.index)).collect();
            filter
                .replay(ring.iter())
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        });
        let (tx, out) = mpsc::channel(256);
        tokio::spawn(stream_flows(
            self.node.clone(),
            filter,
            replay,
            rx,
            tx,
            self.index.clone(),
        ));
        let stream = futures::stream::unfold(out, |mut out| async move {
            out.recv().await.map(|item| (item, out))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn datapath(
        &self,
        request: Request<DatapathRequest>,
    ) -> Result<Response<DatapathReply>, Status> {
        let raw = request.get_ref().view;
        let view = match View::try_from(raw) {
            Ok(View::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "view: {raw} is not one of SERVICES, BACKENDS, CONNTRACK, STATS"
                )));
            }
            Ok(view) => view,
        };
        let dir = self.bpffs_dir.clone();
        let read = tokio::task::spawn_blocking(move || read_maps(&dir).map_err(|e| e.to_string()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (snap, counters) = read.map_err(|error| {
            Status::unavailable(format!(
                "cannot read the datapath maps pinned under {}: {error}",
                self.bpffs_dir.display()
            ))
        })?;
        Ok(Response::new(convert::datapath_reply(
            view,
            &self.node,
            &snap,
            &counters,
            self.hub.seen(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use weir_client::agent::proto::{Flow, Verdict};

    use super::*;

    #[test]
    fn lost_counter_growth() {
        assert_eq!(
            lost_increase(None, Some(7)),
            0,
            "first reading is the baseline"
        );
        assert_eq!(lost_increase(Some(7), Some(10)), 3);
        assert_eq!(lost_increase(Some(7), None), 0);
        assert_eq!(lost_increase(Some(10), Some(3)), 0, "maps recreated");
    }

    fn flow(t: i64, verdict: Verdict) -> Flow {
        Flow {
            time_unix_nanos: t,
            verdict: verdict as i32,
            ..Default::default()
        }
    }

    async fn observe(api: &NodeApi, req: ObserveRequest) -> Result<ObserveStream, Status> {
        api.observe(Request::new(req))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn observe_replays_then_follows_with_the_filter() {
        use futures::StreamExt;
        let api = NodeApi {
            node: "node1".into(),
            bpffs_dir: PathBuf::from("/nonexistent"),
            hub: Arc::new(Hub::new(16)),
            index: pods::SharedIndex::default(),
        };
        api.hub.push(flow(1, Verdict::Dropped));
        api.hub.push(flow(2, Verdict::Forwarded));
        api.hub.push(flow(3, Verdict::Dropped));

        let replay_only = ObserveRequest {
            last: 10,
            verdict: Verdict::Dropped as i32,
            ..Default::default()
        };
        let got: Vec<i64> = observe(&api, replay_only)
            .await
            .unwrap()
            .map(|r| match r.unwrap().event {
                Some(Out::Flow(f)) => f.time_unix_nanos,
                other => panic!("{other:?}"),
            })
            .collect()
            .await;
        assert_eq!(got, vec![1, 3]);

        let mut follow = observe(
            &api,
            ObserveRequest {
                last: 1,
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        api.hub.push(flow(4, Verdict::Forwarded));
        api.hub.kernel_lost(5);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(match follow.next().await.unwrap().unwrap().event {
                Some(Out::Flow(f)) => format!("flow {}", f.time_unix_nanos),
                Some(Out::Lost(l)) => format!("lost {} ({})", l.events, l.cause),
                None => "none".into(),
            });
        }
        assert_eq!(got, ["flow 3", "flow 4", "lost 5 (kernel ring full)"]);
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_arguments_naming_the_field() {
        let api = NodeApi {
            node: "node1".into(),
            bpffs_dir: PathBuf::from("/nonexistent"),
            hub: Arc::new(Hub::new(16)),
            index: pods::SharedIndex::default(),
        };
        let bad = ObserveRequest {
            pod: "nope".into(),
            ..Default::default()
        };
        let e = observe(&api, bad).await.err().expect("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("pod:"), "{}", e.message());

        let e = api
            .datapath(Request::new(DatapathRequest { view: 0 }))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("view:"), "{}", e.message());

        let e = api
            .datapath(Request::new(DatapathRequest {
                view: View::Stats as i32,
            }))
            .await
            .expect_err("no maps");
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
}
