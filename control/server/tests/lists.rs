//! Lists larger than one etcd page through the streamed `ListStream` RPC
//! (what `weir_client` uses) and the one-message `List` (older clients), and
//! creates whose namespace check lives in the create's own transaction.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_client::{DeleteParams, Error, ListParams, proto};

mod common;
use common::Server;

/// More than two etcd pages (the server reads 1000 keys per page).
const MANY: usize = 2500;

fn cm(ns: &str, name: &str, finalizer: bool) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some([("half".to_string(), (name.len() % 2).to_string())].into()),
            finalizers: finalizer.then(|| vec!["example.com/hold".to_string()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn request(limit: i64, continue_token: &str) -> proto::ListRequest {
    proto::ListRequest {
        kind: "ConfigMap".into(),
        namespace: "default".into(),
        limit,
        continue_token: continue_token.into(),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn streamed_lists_span_pages_and_match_the_unary_list() {
    let s = Server::start().await;
    let c = &s.client;
    let names: Vec<String> = (0..MANY)
        .map(|i| format!("cm-{i:0width$}", width = 1 + i % 5))
        .collect();
    futures::stream::iter(
        names
            .iter()
            .map(|n| async move { c.create(&cm("default", n, false)).await }),
    )
    .buffer_unordered(32)
    .for_each(|r| async move {
        r.expect("create");
    })
    .await;

    // The client's list (streamed) and the unary List agree item for item.
    let streamed = c
        .list_json("ConfigMap", "default", &ListParams::default())
        .await
        .expect("streamed list");
    assert_eq!(streamed.items.len(), MANY);
    assert!(streamed.continue_token.is_empty());
    let unary = c
        .raw()
        .list(request(0, ""))
        .await
        .expect("unary list")
        .into_inner();
    assert_eq!(unary.items, streamed.items);

    // It arrives in several chunks; the last one carries no items.
    let mut chunks = c
        .raw()
        .list_stream(request(0, ""))
        .await
        .expect("stream")
        .into_inner();
    let mut sizes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("chunk");
        assert_eq!(chunk.resource_version, streamed.resource_version);
        sizes.push(chunk.items.len());
    }
    assert!(sizes.len() >= 3, "chunks {sizes:?}");
    assert_eq!(sizes.last(), Some(&0));
    assert_eq!(sizes.iter().sum::<usize>(), MANY);

    // limit/continue across page boundaries, same answers from both RPCs.
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let p = ListParams {
            limit: 1200,
            continue_token: token.clone(),
            ..Default::default()
        };
        let page = c.list_json("ConfigMap", "default", &p).await.expect("page");
        let same = c
            .raw()
            .list(request(1200, &token))
            .await
            .expect("unary page")
            .into_inner();
        assert_eq!(page.items, same.items);
        assert_eq!(page.continue_token, same.continue_token);
        pages.push(page.items.len());
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
    }
    assert_eq!(pages, vec![1200, 1200, 100]);

    // A selector across pages, typed.
    let half = c
        .list::<ConfigMap>("default", &ListParams::default().labels("half=1"))
        .await
        .expect("selector list");
    let want = names.iter().filter(|n| n.len() % 2 == 1).count();
    assert_eq!(half.items.len(), want);

    // A bad continue token is the call's error.
    assert!(matches!(
        c.list_json(
            "ConfigMap",
            "default",
            &ListParams {
                limit: 5,
                continue_token: "garbage".into(),
                ..Default::default()
            }
        )
        .await,
        Err(Error::Invalid(_))
    ));
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn creates_check_their_namespace_in_the_transaction() {
    let s = Server::start().await;
    let c = &s.client;
    assert!(
        matches!(c.create(&cm("nope", "x", false)).await, Err(Error::NotFound(m)) if m == "namespaces \"nope\" not found")
    );
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("closing".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    c.create(&ns).await.expect("namespace");
    c.create(&cm("closing", "held", true))
        .await
        .expect("held configmap");
    c.delete::<Namespace>("", "closing", &DeleteParams::default())
        .await
        .expect("delete namespace");
    // The finalizer keeps the namespace terminating: new content is refused.
    let refused = c.create(&cm("closing", "late", false)).await;
    assert!(
        matches!(&refused, Err(Error::Server { code: tonic::Code::FailedPrecondition, message }) if message.contains("being terminated")),
        "{refused:?}"
    );
    // Release the finalizer: the namespace goes, and with it the marker.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut held: ConfigMap = match c.get_opt("closing", "held").await.expect("get") {
            Some(h) => h,
            None => break,
        };
        held.metadata.finalizers = None;
        let _ = c.update(&held).await;
        assert!(Instant::now() < deadline, "configmap not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while c
        .get_opt::<Namespace>("", "closing")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "namespace not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(
        c.create(&cm("closing", "late", false)).await,
        Err(Error::NotFound(_))
    ));
    // Created again, it takes content again.
    c.create(&ns).await.expect("namespace again");
    c.create(&cm("closing", "late", false))
        .await
        .expect("create in the new namespace");
}
