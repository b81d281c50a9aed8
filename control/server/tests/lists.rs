//! Lists larger than one etcd page through the streamed `ListStream` RPC
//! (what `weir_client` uses) and the one-message `List` (older clients), and
//! creates whose namespace check lives in the create's own transaction, and
//! updates/deletes that skip their etcd read for objects this replica wrote.

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

/// A replica skips the etcd read before an update or delete of an object it
/// wrote itself; when another replica changed the object in between, the
/// answers must stay what a read would have given.
#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn writes_from_another_replica_are_not_hidden_by_the_write_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = common::Etcd::start(dir.path());
    let (_a, ca) = common::Replica::new(&dir.path().join("a"), &etcd.url, &[])
        .start()
        .await;
    let (_b, cb) = common::Replica::new(&dir.path().join("b"), &etcd.url, &[])
        .start()
        .await;
    let set = |mut m: ConfigMap, v: &str| {
        m.data = Some([("k".to_string(), v.to_string())].into());
        m
    };
    // A writes (and remembers) r1; B moves the object to r2.
    let r1 = ca
        .create(&cm("default", "shared", false))
        .await
        .expect("create");
    let r2 = cb
        .update(&set(r1.clone(), "b"))
        .await
        .expect("update via b");
    // A's update from r1 is stale now: Conflict, not a lost update.
    assert!(matches!(
        ca.update(&set(r1.clone(), "a")).await,
        Err(Error::Conflict(_))
    ));
    // From r2 it works (A reads etcd), and keeps B's change underneath.
    let r3 = ca
        .update(&set(r2.clone(), "a2"))
        .await
        .expect("update via a");
    assert_eq!(r3.metadata.uid, r1.metadata.uid);
    // B deletes and re-creates it; A's record (r3) is stale. A's delete
    // with r3 as precondition is a Conflict; without, it deletes the new one.
    cb.delete::<ConfigMap>("default", "shared", &DeleteParams::default())
        .await
        .expect("delete via b");
    let again = cb
        .create(&cm("default", "shared", false))
        .await
        .expect("re-create via b");
    let stale = DeleteParams {
        resource_version: r3.metadata.resource_version.clone().unwrap(),
        ..Default::default()
    };
    assert!(matches!(
        ca.delete::<ConfigMap>("default", "shared", &stale).await,
        Err(Error::Conflict(_))
    ));
    let gone = ca
        .delete::<ConfigMap>("default", "shared", &DeleteParams::default())
        .await
        .expect("delete via a");
    assert_eq!(gone.metadata.uid, again.metadata.uid);
    assert!(matches!(
        ca.delete::<ConfigMap>("default", "shared", &DeleteParams::default())
            .await,
        Err(Error::NotFound(_))
    ));
    // Own writes back to back: create, update, delete through one replica.
    let mine = ca
        .create(&cm("default", "mine", false))
        .await
        .expect("create");
    let mine2 = ca.update(&set(mine.clone(), "x")).await.expect("update");
    assert!(matches!(
        ca.update(&set(mine.clone(), "y")).await,
        Err(Error::Conflict(_))
    ));
    ca.delete::<ConfigMap>("default", "mine", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        cb.get_opt::<ConfigMap>("default", "mine")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        ca.update(&set(mine2, "z")).await,
        Err(Error::NotFound(_))
    ));
}
