//! `weir datapath services|backends|conntrack|stats [--node NODE]`: what
//! the nodes' kernel datapaths hold, read through each agent's node API, as
//! tables with a NODE column. Rendering ([`render`]) is pure.

use weir_client::Client;
use weir_client::agent::proto::{DatapathReply, datapath_request::View};

use crate::table;
use crate::{Failed, Res};

fn headers(h: &[&str]) -> Vec<String> {
    std::iter::once("NODE")
        .chain(h.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// The table of `view` over the replies of several nodes.
pub fn render(view: View, replies: &[DatapathReply]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let h = match view {
        View::Services | View::Unspecified => {
            for r in replies {
                for f in &r.frontends {
                    let backends = if f.backends.is_empty() {
                        "<none: new connections dropped>".to_owned()
                    } else {
                        f.backends.join(",")
                    };
                    let affinity = match f.affinity_timeout_seconds {
                        0 => "-".to_owned(),
                        s => format!("{s}s"),
                    };
                    rows.push(vec![
                        r.node.clone(),
                        f.address.clone(),
                        f.protocol.clone(),
                        f.kind.clone(),
                        affinity,
                        backends,
                    ]);
                }
            }
            headers(&["FRONTEND", "PROTO", "KIND", "AFFINITY", "BACKENDS"])
        }
        View::Backends => {
            for r in replies {
                for b in &r.backends {
                    rows.push(vec![
                        r.node.clone(),
                        b.address.clone(),
                        b.protocol.clone(),
                        b.frontends.join(","),
                    ]);
                }
            }
            headers(&["BACKEND", "PROTO", "FRONTENDS"])
        }
        View::Conntrack => {
            for r in replies {
                for c in &r.conntrack {
                    rows.push(vec![
                        r.node.clone(),
                        c.protocol.clone(),
                        c.source.clone(),
                        c.destination.clone(),
                        c.direction.clone(),
                        c.frontend.clone(),
                        c.backend.clone(),
                    ]);
                }
            }
            headers(&[
                "PROTO",
                "SOURCE",
                "DESTINATION",
                "DIRECTION",
                "FRONTEND",
                "BACKEND",
            ])
        }
        View::Stats => {
            for r in replies {
                let mut stat = |name: &str, value: u64| {
                    rows.push(vec![r.node.clone(), name.to_owned(), value.to_string()]);
                };
                stat("frontends", r.frontend_count);
                stat("conntrack_entries", r.conntrack_count);
                stat("flows_seen", r.flows_seen);
                stat("flow_events_lost", r.flow_events_lost);
                for d in &r.drops {
                    stat(&format!("drops/{}", d.reason), d.count);
                }
            }
            headers(&["STAT", "VALUE"])
        }
    };
    table::render(&h, &rows)
}

/// Fetches `view` from every selected node and prints one table.
pub async fn cmd_datapath(client: &Client, view: View, node: Option<&str>, port: u16) -> Res<()> {
    let agents = crate::nodeapi::agents(client, node, port).await?;
    let mut replies = Vec::new();
    let mut failed = false;
    for (node, url) in &agents {
        let reply = match crate::nodeapi::connect(node, url).await {
            Ok(agent) => agent
                .datapath(view)
                .await
                .map_err(|e| Failed(format!("error: node {node}: {e}"))),
            Err(e) => Err(e),
        };
        match reply {
            Ok(r) => replies.push(r),
            Err(Failed(m)) => {
                eprintln!("{m}");
                failed = true;
            }
        }
    }
    if !replies.is_empty() {
        out!("{}", render(view, &replies));
    }
    if failed {
        Err(Failed(String::new()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use weir_client::agent::proto::{BackendUse, DropCounter, Frontend};

    use super::*;

    #[test]
    fn tables_have_a_node_column() {
        let r = DatapathReply {
            node: "node1".into(),
            frontends: vec![
                Frontend {
                    address: "10.96.0.10:80".into(),
                    protocol: "TCP".into(),
                    kind: "cluster".into(),
                    affinity_timeout_seconds: 0,
                    backends: vec!["10.244.0.7:8080".into(), "10.244.0.8:8080".into()],
                },
                Frontend {
                    address: "10.96.0.11:53".into(),
                    protocol: "UDP".into(),
                    kind: "cluster".into(),
                    affinity_timeout_seconds: 30,
                    backends: vec![],
                },
            ],
            backends: vec![BackendUse {
                address: "10.244.0.7:8080".into(),
                protocol: "TCP".into(),
                frontends: vec!["10.96.0.10:80".into()],
            }],
            frontend_count: 2,
            drops: vec![DropCounter {
                reason: "no_backend".into(),
                count: 3,
            }],
            ..Default::default()
        };
        let replies = [r];
        assert_eq!(
            render(View::Services, &replies),
            "NODE    FRONTEND        PROTO   KIND      AFFINITY   BACKENDS\n\
             node1   10.96.0.10:80   TCP     cluster   -          10.244.0.7:8080,10.244.0.8:8080\n\
             node1   10.96.0.11:53   UDP     cluster   30s        <none: new connections dropped>\n"
        );
        assert_eq!(
            render(View::Backends, &replies),
            "NODE    BACKEND           PROTO   FRONTENDS\n\
             node1   10.244.0.7:8080   TCP     10.96.0.10:80\n"
        );
        let stats = render(View::Stats, &replies);
        assert!(stats.contains("node1   frontends           2\n"), "{stats}");
        assert!(stats.contains("node1   drops/no_backend    3\n"), "{stats}");
    }
}
