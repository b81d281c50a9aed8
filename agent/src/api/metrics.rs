//! The agent's Prometheus endpoint (`GET /metrics`, text format 0.0.4):
//! datapath drops by reason, flow events the kernel lost, flows read.
//! Rendering is pure ([`render`]); [`serve`] is a plain HTTP/1 server
//! (hyper) that reads the counters on each scrape.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use weir_datapath::flows::{self, Counters};

use super::hub::Hub;

/// The exposition of `counters` and `flows_seen`.
pub fn render(counters: &Counters, flows_seen: u64) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP weir_datapath_drops_total Packets (or socket calls) the eBPF datapath dropped, by reason.\n\
         # TYPE weir_datapath_drops_total counter\n",
    );
    for (reason, count) in &counters.drops {
        let _ = writeln!(
            out,
            "weir_datapath_drops_total{{reason=\"{reason}\"}} {count}"
        );
    }
    if let Some(lost) = counters.flow_events_lost {
        out.push_str(
            "# HELP weir_flow_events_lost_total Flow events the datapath could not record because the ring buffer was full.\n\
             # TYPE weir_flow_events_lost_total counter\n",
        );
        let _ = writeln!(out, "weir_flow_events_lost_total {lost}");
    }
    out.push_str(
        "# HELP weir_flows_observed_total Flow events the agent read since it started.\n\
         # TYPE weir_flows_observed_total counter\n",
    );
    let _ = writeln!(out, "weir_flows_observed_total {flows_seen}");
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    bpffs_dir: Arc<PathBuf>,
    hub: Arc<Hub>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET /metrics\n".into(),
        ));
    }
    let counters =
        tokio::task::spawn_blocking(move || flows::counters(&bpffs_dir).map_err(|e| e.to_string()))
            .await;
    Ok(match counters {
        Ok(Ok(c)) => text(StatusCode::OK, render(&c, hub.seen())),
        Ok(Err(error)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the datapath counters: {error}\n"),
        ),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    })
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, bpffs_dir: PathBuf, hub: Arc<Hub>) {
    let bpffs_dir = Arc::new(bpffs_dir);
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (dir, hub) = (bpffs_dir.clone(), hub.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(req, dir.clone(), hub.clone()));
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %peer, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let c = Counters {
            drops: vec![("no_backend", 3), ("policy_denied", 0)],
            flow_events_lost: Some(5),
        };
        let got = render(&c, 42);
        let samples: Vec<&str> = got.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                r#"weir_datapath_drops_total{reason="no_backend"} 3"#,
                r#"weir_datapath_drops_total{reason="policy_denied"} 0"#,
                "weir_flow_events_lost_total 5",
                "weir_flows_observed_total 42",
            ]
        );
        assert!(got.contains("# TYPE weir_datapath_drops_total counter\n"));
        let without_ring = render(
            &Counters {
                drops: vec![],
                flow_events_lost: None,
            },
            0,
        );
        assert!(!without_ring.contains("weir_flow_events_lost_total"));
    }
}
