//! `weir observe`: the flows the nodes' datapaths judged, merged from every
//! agent's node API (like `hubble observe` through Hubble Relay).
//!
//! Pure: the request from the flags ([`request`]), `--since` durations
//! ([`parse_since`]), the merge of finite replays ([`merge_last`]) and the
//! output ([`line`], [`json`]). `cmd_observe` does the I/O.

use std::pin::Pin;
use std::time::Duration;

use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use weir_client::Client;
use weir_client::agent::proto::{Endpoint, Flow, ObserveRequest, Verdict, observe_response::Event};
use weir_client::agent::{AgentClient, AgentError, ObserveStream};

use crate::{Failed, Res};

/// The flags of `weir observe`, as parsed.
#[derive(Debug, Clone, Default)]
pub struct ObserveOpts {
    pub pod: Option<String>,
    pub verdict: Option<String>,
    pub node: Option<String>,
    pub since: Option<String>,
    pub last: Option<u32>,
    pub follow: bool,
    pub json: bool,
    pub agent_port: u16,
}

/// Flows shown without --last, --since or --follow (as hubble observe).
pub const DEFAULT_LAST: u32 = 20;

/// "90s", "5m", "1h30m", "2d": a duration in kubectl's `--since` style.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid --since {s:?}: use a duration like 30s, 5m, 1h30m or 2d");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The request every agent gets. `namespace` completes a bare `--pod NAME`;
/// `now_unix_nanos` anchors `--since`.
pub fn request(
    o: &ObserveOpts,
    namespace: &str,
    now_unix_nanos: i64,
) -> Result<ObserveRequest, String> {
    let pod = match o.pod.as_deref() {
        None => String::new(),
        Some(p) if p.contains('/') => p.to_owned(),
        Some(p) => format!("{namespace}/{p}"),
    };
    let verdict = match o.verdict.as_deref() {
        None => Verdict::Unspecified,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "forwarded" => Verdict::Forwarded,
            "dropped" => Verdict::Dropped,
            _ => {
                return Err(format!("invalid --verdict {v:?}: use forwarded or dropped"));
            }
        },
    };
    let since_unix_nanos = match o.since.as_deref() {
        None => 0,
        Some(s) => {
            let back = i64::try_from(parse_since(s)?.as_nanos()).unwrap_or(i64::MAX);
            now_unix_nanos.saturating_sub(back).max(1)
        }
    };
    let last = match (o.last, o.since.is_some(), o.follow) {
        (Some(n), _, _) => n,
        (None, true, _) => u32::MAX,
        (None, false, true) => 0,
        (None, false, false) => DEFAULT_LAST,
    };
    Ok(ObserveRequest {
        pod,
        verdict: verdict as i32,
        last,
        since_unix_nanos,
        follow: o.follow,
    })
}

/// Several nodes' replays as one: by time, the `last` most recent.
pub fn merge_last(mut flows: Vec<Flow>, last: u32) -> Vec<Flow> {
    flows.sort_by_key(|f| f.time_unix_nanos);
    let keep = usize::try_from(last).unwrap_or(usize::MAX);
    let skip = flows.len().saturating_sub(keep);
    flows.split_off(skip)
}

fn time(nanos: i64, format: &str) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.strftime(format).to_string())
        .unwrap_or_else(|_| nanos.to_string())
}

fn end(e: Option<&Endpoint>) -> String {
    let Some(e) = e else {
        return "?".into();
    };
    let addr = if e.port == 0 {
        e.ip.clone()
    } else {
        format!("{}:{}", e.ip, e.port)
    };
    if e.pod.is_empty() {
        addr
    } else {
        format!("{}/{} ({addr})", e.namespace, e.pod)
    }
}

fn verdict_name(v: i32) -> &'static str {
    match Verdict::try_from(v) {
        Ok(Verdict::Forwarded) => "FORWARDED",
        Ok(Verdict::Dropped) => "DROPPED",
        _ => "UNKNOWN",
    }
}

/// One line per flow:
/// `TIME NODE: SRC -> DST [via FRONTEND] PROTO VERDICT [(reason)] [policy P (direction)]`.
pub fn line(f: &Flow) -> String {
    let mut out = format!(
        "{} {}: {} -> {}",
        time(f.time_unix_nanos, "%b %d %H:%M:%S%.3f"),
        f.node,
        end(f.source.as_ref()),
        end(f.destination.as_ref()),
    );
    if !f.frontend.is_empty() {
        out.push_str(&format!(" via {}", f.frontend));
    }
    out.push_str(&format!(" {} {}", f.protocol, verdict_name(f.verdict)));
    if !f.drop_reason.is_empty() {
        out.push_str(&format!(" ({})", f.drop_reason));
    }
    if !f.policy.is_empty() {
        out.push_str(&format!(" policy {}", f.policy));
    }
    if !f.direction.is_empty() {
        out.push_str(&format!(" {}", f.direction));
    }
    out
}

fn end_json(e: Option<&Endpoint>) -> Value {
    let e = e.cloned().unwrap_or_default();
    let mut v = json!({"ip": e.ip, "port": e.port});
    if !e.pod.is_empty() {
        v["namespace"] = json!(e.namespace);
        v["pod"] = json!(e.pod);
    }
    v
}

/// One JSON object per flow (`-o json`, one per line).
pub fn json(f: &Flow) -> Value {
    json!({
        "time": time(f.time_unix_nanos, "%Y-%m-%dT%H:%M:%S%.9fZ"),
        "node": f.node,
        "source": end_json(f.source.as_ref()),
        "destination": end_json(f.destination.as_ref()),
        "frontend": f.frontend,
        "protocol": f.protocol,
        "verdict": verdict_name(f.verdict).to_ascii_lowercase(),
        "drop_reason": f.drop_reason,
        "direction": f.direction,
        "hook": f.hook,
        "policy_id": f.policy_id,
        "policy": f.policy,
    })
}

fn print(f: &Flow, as_json: bool) {
    if as_json {
        outln!("{}", json(f));
    } else {
        outln!("{}", line(f));
    }
}

/// The request that resumes a follow after its stream broke, given the
/// time of the last flow shown: only flows after it are replayed (none if
/// the agent restarted and its ring is new), so nothing is shown twice.
pub fn resume(req: &ObserveRequest, last_seen: Option<i64>) -> ObserveRequest {
    let mut r = req.clone();
    if let Some(t) = last_seen {
        r.since_unix_nanos = r.since_unix_nanos.max(t.saturating_add(1));
        r.last = u32::MAX;
    }
    r
}

type Item = (String, Result<Event, AgentError>);
type NodeStream = Pin<Box<dyn Stream<Item = Item> + Send>>;

/// Pause before reconnecting to an agent whose stream broke, doubled up to
/// [`RECONNECT_MAX`] while it stays unreachable.
const RECONNECT_MIN: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// With -f: `first`, then, whenever the stream breaks (agent restart,
/// network), a new one from the same agent resumed after the last flow seen.
fn reconnecting(
    node: String,
    url: String,
    req: ObserveRequest,
    first: ObserveStream,
) -> NodeStream {
    struct State {
        node: String,
        url: String,
        req: ObserveRequest,
        stream: Option<ObserveStream>,
        last_seen: Option<i64>,
        delay: Duration,
    }
    let state = State {
        node,
        url,
        req,
        stream: Some(first),
        last_seen: None,
        delay: RECONNECT_MIN,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(stream) = st.stream.as_mut() {
                match stream.next().await {
                    Some(Ok(event)) => {
                        if let Event::Flow(f) = &event {
                            st.last_seen = Some(f.time_unix_nanos);
                        }
                        st.delay = RECONNECT_MIN;
                        return Some(((st.node.clone(), Ok(event)), st));
                    }
                    Some(Err(e)) => eprintln!("warning: node {}: {e}; reconnecting", st.node),
                    None => eprintln!(
                        "warning: node {}: the flow stream ended (agent restarted?); reconnecting",
                        st.node
                    ),
                }
                st.stream = None;
            }
            tokio::time::sleep(st.delay).await;
            st.delay = (st.delay * 2).min(RECONNECT_MAX);
            let resumed = resume(&st.req, st.last_seen);
            match AgentClient::connect(&st.url).await {
                Ok(agent) => match agent.observe(resumed).await {
                    Ok(stream) => st.stream = Some(stream),
                    Err(e) => eprintln!("warning: node {}: {e}", st.node),
                },
                Err(e) => eprintln!("warning: node {}: {e}", st.node),
            }
        }
    }))
}

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `weir observe`: replays (and with -f follows) flows from every selected
/// node's agent. Nodes that cannot be reached are reported; the others are
/// still shown, and the command fails at the end.
pub async fn cmd_observe(client: &Client, namespace: &str, o: &ObserveOpts) -> Res<()> {
    let req = request(o, namespace, now_unix_nanos()).map_err(|m| Failed(format!("error: {m}")))?;
    let agents = crate::nodeapi::agents(client, o.node.as_deref(), o.agent_port).await?;
    let mut failed = false;
    let mut streams: SelectAll<NodeStream> = SelectAll::new();
    for (node, url) in &agents {
        let agent = match crate::nodeapi::connect(node, url).await {
            Ok(a) => a,
            Err(Failed(m)) => {
                eprintln!("{m}");
                failed = true;
                continue;
            }
        };
        match agent.observe(req.clone()).await {
            Ok(s) if o.follow => {
                streams.push(reconnecting(node.clone(), url.clone(), req.clone(), s))
            }
            Ok(s) => {
                let node = node.clone();
                let s: NodeStream = Box::pin(s.map(move |item| (node.clone(), item)));
                streams.push(s);
            }
            Err(e) if e.is_invalid() => {
                let message = match e {
                    weir_client::agent::AgentError::Status { message, .. } => message,
                    other => other.to_string(),
                };
                return Err(Failed(format!("error: {message}")));
            }
            Err(e) => {
                eprintln!("error: node {node}: {e}");
                failed = true;
            }
        }
    }
    let mut replay = Vec::new();
    while let Some((node, item)) = streams.next().await {
        match item {
            Ok(Event::Flow(f)) if o.follow => print(&f, o.json),
            Ok(Event::Flow(f)) => replay.push(f),
            Ok(Event::Lost(l)) => eprintln!(
                "warning: node {node}: {} flow events not shown ({})",
                l.events, l.cause
            ),
            Err(e) => {
                eprintln!("error: node {node}: {e}");
                failed = true;
            }
        }
    }
    for f in merge_last(replay, req.last) {
        print(&f, o.json);
    }
    if failed {
        Err(Failed(String::new()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_durations() {
        let cases = [
            ("30s", Ok(30)),
            ("5m", Ok(300)),
            ("1h30m", Ok(5400)),
            ("2d", Ok(172_800)),
            ("5", Err(())),
            ("m", Err(())),
            ("5x", Err(())),
            ("", Err(())),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_since(s).map(|d| d.as_secs()).map_err(|_| ()),
                want,
                "{s}"
            );
        }
    }

    #[test]
    fn requests_from_flags() {
        let o = |f: &dyn Fn(&mut ObserveOpts)| {
            let mut o = ObserveOpts::default();
            f(&mut o);
            request(&o, "team", 10_000_000_000)
        };
        let plain = o(&|_| {}).unwrap();
        assert_eq!(
            (plain.last, plain.follow, plain.pod.as_str()),
            (20, false, "")
        );
        let follow = o(&|o| o.follow = true).unwrap();
        assert_eq!(follow.last, 0, "follow alone shows only new flows");
        let pod = o(&|o| o.pod = Some("web".into())).unwrap();
        assert_eq!(pod.pod, "team/web");
        let qualified = o(&|o| o.pod = Some("x/web".into())).unwrap();
        assert_eq!(qualified.pod, "x/web");
        let dropped = o(&|o| o.verdict = Some("Dropped".into())).unwrap();
        assert_eq!(dropped.verdict, Verdict::Dropped as i32);
        let since = o(&|o| o.since = Some("5s".into())).unwrap();
        assert_eq!(
            (since.since_unix_nanos, since.last),
            (5_000_000_000, u32::MAX)
        );
        let last = o(&|o| {
            o.since = Some("5s".into());
            o.last = Some(3);
        })
        .unwrap();
        assert_eq!(last.last, 3);
        assert!(
            o(&|o| o.verdict = Some("maybe".into()))
                .unwrap_err()
                .contains("--verdict")
        );
        assert!(
            o(&|o| o.since = Some("yesterday".into()))
                .unwrap_err()
                .contains("--since")
        );
    }

    fn flow(t: i64) -> Flow {
        Flow {
            time_unix_nanos: t,
            ..Default::default()
        }
    }

    #[test]
    fn a_resumed_follow_replays_only_what_came_after_the_last_flow() {
        let req = ObserveRequest {
            pod: "a/b".into(),
            last: 20,
            since_unix_nanos: 100,
            follow: true,
            ..Default::default()
        };
        assert_eq!(resume(&req, None), req, "nothing seen: the same request");
        let r = resume(&req, Some(500));
        assert_eq!(
            (r.since_unix_nanos, r.last, r.pod.as_str()),
            (501, u32::MAX, "a/b")
        );
        assert_eq!(
            resume(&req, Some(50)).since_unix_nanos,
            100,
            "never earlier than asked"
        );
    }

    #[test]
    fn merge_keeps_the_most_recent_in_time_order() {
        let merged = merge_last(vec![flow(5), flow(1), flow(9), flow(3)], 3);
        let times: Vec<i64> = merged.iter().map(|f| f.time_unix_nanos).collect();
        assert_eq!(times, [3, 5, 9]);
        assert_eq!(merge_last(vec![flow(1)], 0).len(), 0);
    }

    fn sample() -> Flow {
        Flow {
            time_unix_nanos: 1_764_029_401_123_000_000,
            node: "node1".into(),
            source: Some(Endpoint {
                ip: "10.244.0.5".into(),
                port: 41234,
                namespace: "default".into(),
                pod: "client".into(),
            }),
            destination: Some(Endpoint {
                ip: "10.244.0.7".into(),
                port: 8080,
                namespace: "default".into(),
                pod: "web-1".into(),
            }),
            frontend: "10.96.0.10:80".into(),
            protocol: "TCP".into(),
            verdict: Verdict::Forwarded as i32,
            direction: "ingress".into(),
            hook: "from-pod".into(),
            policy_id: 16,
            policy: "default/allow-web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn lines_and_json() {
        let f = sample();
        assert_eq!(
            line(&f),
            "Nov 25 00:10:01.123 node1: default/client (10.244.0.5:41234) -> default/web-1 (10.244.0.7:8080) via 10.96.0.10:80 TCP FORWARDED policy default/allow-web ingress"
        );
        let drop = Flow {
            source: Some(Endpoint {
                ip: "10.244.0.5".into(),
                port: 1000,
                ..Default::default()
            }),
            destination: Some(Endpoint {
                ip: "10.96.0.99".into(),
                port: 80,
                ..Default::default()
            }),
            frontend: String::new(),
            verdict: Verdict::Dropped as i32,
            drop_reason: "no_backend".into(),
            direction: String::new(),
            policy: String::new(),
            ..sample()
        };
        assert_eq!(
            line(&drop),
            "Nov 25 00:10:01.123 node1: 10.244.0.5:1000 -> 10.96.0.99:80 TCP DROPPED (no_backend)"
        );
        let j = json(&f);
        assert_eq!(j["time"], "2025-11-25T00:10:01.123000000Z");
        assert_eq!(j["source"]["pod"], "client");
        assert_eq!(j["verdict"], "forwarded");
        assert_eq!(json(&drop)["source"].get("pod"), None);
    }
}
