//! Watches: one etcd watch per client watch, translated into Kubernetes
//! watch events with selector semantics.
//!
//! With a selector, an object that starts matching is ADDED, one that stops
//! matching is DELETED (carrying its previous state), as in Kubernetes'
//! watch cache. An empty resourceVersion (or "0") first replays the current
//! objects as ADDED, then streams changes after the list's revision.

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weir_api::ResourceKind;
use weir_client::proto::{WatchEvent, watch_event::Type};

use crate::error::ApiError;
use crate::filter::Filter;
use crate::object::ApiObject;
use crate::registry::Registry;
use crate::storage::{Change, WatchItem};

/// The stream handed to tonic.
pub type EventStream = ReceiverStream<Result<WatchEvent, tonic::Status>>;

/// How often a watch that asked for bookmarks gets one (so an idle watcher's
/// resourceVersion stays recent and survives compaction).
const BOOKMARK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How many events may wait for a slow client before the watch pauses.
const BUFFER: usize = 256;

/// Which event a change produces for a filtered watch. `prev`/`cur` say
/// whether the old/new state matches the filter (`None`: no such state).
pub fn decide(prev: Option<bool>, cur: Option<bool>) -> Option<Type> {
    match (prev, cur) {
        (Some(true), Some(true)) => Some(Type::Modified),
        (None | Some(false), Some(true)) => Some(Type::Added),
        (Some(true), Some(false) | None) => Some(Type::Deleted),
        _ => None,
    }
}

/// Starts a watch; errors before the first event (bad selector, bad
/// resourceVersion) are returned directly, later ones end the stream.
pub async fn start(
    registry: &Registry,
    kind: &'static ResourceKind,
    namespace: &str,
    filter: Filter,
    resource_version: &str,
    allow_bookmarks: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<EventStream, ApiError> {
    let ns = (kind.namespaced && !namespace.is_empty()).then_some(namespace);
    let prefix = kind.key_prefix(ns);
    let (tx, rx) = mpsc::channel(BUFFER);

    let (initial, start_revision) = if resource_version.is_empty() || resource_version == "0" {
        let list = registry.list(kind, namespace, &filter, 0, "").await?;
        (list.items, list.resource_version + 1)
    } else {
        let rv: i64 = resource_version.parse().map_err(|_| {
            ApiError::BadRequest(format!("invalid resourceVersion {resource_version:?}"))
        })?;
        (Vec::new(), rv + 1)
    };

    let progress = allow_bookmarks.then_some(BOOKMARK_INTERVAL);
    let changes = registry
        .storage()
        .watch(&prefix, start_revision, progress)
        .await?;
    tokio::spawn(async move {
        for obj in initial {
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            if send(&tx, Type::Added, kind, &obj, rv).await.is_err() {
                return;
            }
        }
        let mut changes = std::pin::pin!(changes);
        loop {
            // At server shutdown the stream just ends; clients re-watch elsewhere.
            let batch = tokio::select! {
                b = changes.next() => b,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Some(batch) = batch else { return };
            let batch = match batch {
                Ok(WatchItem::Changes(b)) => b,
                Ok(WatchItem::Progress(rev)) => {
                    if send_bookmark(&tx, kind, rev).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, kind = kind.kind, "watch ended");
                    let _ = tx.send(Err(ApiError::Storage(e).into())).await;
                    return;
                }
            };
            for change in batch {
                match translate(&filter, change) {
                    Ok(Some((ty, obj, rv))) => {
                        if send(&tx, ty, kind, &obj, rv).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, kind = kind.kind, "skipping undecodable watch event")
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Turns one storage change into the event this watch sends, if any.
fn translate(
    filter: &Filter,
    change: Change,
) -> Result<Option<(Type, ApiObject, String)>, ApiError> {
    match change {
        Change::Put { kv, prev } => {
            let cur = ApiObject::from_stored(&kv.value, kv.mod_revision)?;
            let cur_match = filter.matches(&cur);
            let prev_obj = prev
                .map(|p| ApiObject::from_stored(&p.value, p.mod_revision))
                .transpose()?;
            let prev_match = match &prev_obj {
                Some(p) => Some(filter.matches(p)),
                None if kv.create_revision == kv.mod_revision => None,
                // The previous state is unknown (compacted): assume it matched as now.
                None => Some(cur_match),
            };
            let rv = kv.mod_revision.to_string();
            Ok(match decide(prev_match, Some(cur_match)) {
                Some(Type::Deleted) => prev_obj.map(|mut p| {
                    p.metadata.resource_version = Some(rv.clone());
                    (Type::Deleted, p, rv)
                }),
                Some(ty) => Some((ty, cur, rv)),
                None => None,
            })
        }
        Change::Delete {
            key,
            revision,
            prev,
        } => {
            let Some(prev) = prev else {
                tracing::warn!(key, "delete event without previous state; not sent");
                return Ok(None);
            };
            let mut obj = ApiObject::from_stored(&prev.value, revision)?;
            obj.metadata.resource_version = Some(revision.to_string());
            let rv = revision.to_string();
            Ok(decide(Some(filter.matches(&obj)), None).map(|ty| (ty, obj, rv)))
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Result<WatchEvent, tonic::Status>>,
    ty: Type,
    kind: &ResourceKind,
    obj: &ApiObject,
    rv: String,
) -> Result<(), ()> {
    let json = match obj.to_json() {
        Ok(j) => j,
        Err(e) => return tx.send(Err(e.into())).await.map_err(|_| ()),
    };
    let ev = WatchEvent {
        r#type: ty as i32,
        kind: kind.kind.to_string(),
        json,
        resource_version: rv,
    };
    tx.send(Ok(ev)).await.map_err(|_| ())
}

/// A BOOKMARK carries an object with only apiVersion, kind and resourceVersion.
async fn send_bookmark(
    tx: &mpsc::Sender<Result<WatchEvent, tonic::Status>>,
    kind: &ResourceKind,
    rev: i64,
) -> Result<(), ()> {
    let json = serde_json::json!({
        "apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"resourceVersion": rev.to_string()}
    });
    let ev = WatchEvent {
        r#type: Type::Bookmark as i32,
        kind: kind.kind.to_string(),
        json: json.to_string().into_bytes(),
        resource_version: rev.to_string(),
    };
    tx.send(Ok(ev)).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Kv;

    #[test]
    fn decide_table() {
        let cases = [
            (None, Some(true), Some(Type::Added)),
            (None, Some(false), None),
            (Some(false), Some(true), Some(Type::Added)),
            (Some(true), Some(true), Some(Type::Modified)),
            (Some(true), Some(false), Some(Type::Deleted)),
            (Some(false), Some(false), None),
            (Some(true), None, Some(Type::Deleted)),
            (Some(false), None, None),
        ];
        for (prev, cur, want) in cases {
            assert_eq!(decide(prev, cur), want, "{prev:?} -> {cur:?}");
        }
    }

    fn kv(name: &str, app: &str, create: i64, rev: i64) -> Kv {
        let v = serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"namespace":"default","labels":{"app":app}}});
        Kv {
            key: format!("/registry/pods/default/{name}"),
            value: v.to_string().into_bytes(),
            mod_revision: rev,
            create_revision: create,
        }
    }

    #[test]
    fn relabel_out_of_selector_is_deleted_with_previous_state() {
        let filter = Filter::parse("app=web", "").unwrap();
        let change = Change::Put {
            kv: kv("a", "db", 5, 9),
            prev: Some(kv("a", "web", 5, 7)),
        };
        let (ty, obj, rv) = translate(&filter, change).unwrap().unwrap();
        assert_eq!(ty, Type::Deleted);
        assert_eq!(obj.metadata.labels.unwrap()["app"], "web");
        assert_eq!(
            (rv.as_str(), obj.metadata.resource_version.as_deref()),
            ("9", Some("9"))
        );

        let created = Change::Put {
            kv: kv("b", "web", 10, 10),
            prev: None,
        };
        assert_eq!(
            translate(&filter, created).unwrap().map(|e| e.0),
            Some(Type::Added)
        );
        let other = Change::Put {
            kv: kv("c", "db", 11, 11),
            prev: None,
        };
        assert!(translate(&filter, other).unwrap().is_none());
        let deleted = Change::Delete {
            key: "k".into(),
            revision: 12,
            prev: Some(kv("b", "web", 10, 10)),
        };
        let (ty, obj, _) = translate(&filter, deleted).unwrap().unwrap();
        assert_eq!(
            (ty, obj.metadata.resource_version.as_deref()),
            (Type::Deleted, Some("12"))
        );
    }
}
