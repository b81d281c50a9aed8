//! Client watches: changes from the watch cache (or, for old revisions,
//! straight from etcd), translated into Kubernetes watch events with
//! selector semantics.
//!
//! With a selector, an object that starts matching is ADDED, one that stops
//! matching is DELETED (carrying its previous state), as in Kubernetes'
//! watch cache. An empty resourceVersion (or "0") first replays the current
//! objects as ADDED, then streams changes after the list's revision.

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use weir_api::ResourceKind;
use weir_client::proto::{WatchEvent, watch_event::Type};

use crate::error::ApiError;
use crate::filter::Filter;
use crate::object::ApiObject;
use crate::registry::Registry;
use crate::storage::{Change, StorageError, WatchItem};
use crate::watch_cache::{Item, Subscription, WatchCache};

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

/// What a client watch asked for.
pub struct WatchSpec {
    pub kind: &'static ResourceKind,
    pub namespace: String,
    pub filter: Filter,
    pub resource_version: String,
    pub allow_bookmarks: bool,
}

/// Starts a watch; errors before the first event (bad selector, bad
/// resourceVersion) are returned directly, later ones end the stream.
/// Served from the watch cache when it covers the start revision, else
/// straight from etcd.
pub async fn start(
    registry: &Registry,
    cache: &WatchCache,
    spec: WatchSpec,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<EventStream, ApiError> {
    let kind = spec.kind;
    let (initial, after) = if spec.resource_version.is_empty() || spec.resource_version == "0" {
        let list = registry
            .list(kind, &spec.namespace, &spec.filter, 0, "")
            .await?;
        (list.items, list.resource_version)
    } else {
        let rv: i64 = spec.resource_version.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid resourceVersion {:?}",
                spec.resource_version
            ))
        })?;
        (Vec::new(), rv)
    };
    let ns = (kind.namespaced && !spec.namespace.is_empty()).then_some(spec.namespace.as_str());
    let prefix = kind.key_prefix(ns);
    let (tx, rx) = mpsc::channel(BUFFER);
    let out = Out {
        tx,
        kind,
        filter: spec.filter,
        prefix,
        bookmarks: spec.allow_bookmarks,
    };

    if let Some(sub) = cache.subscribe(kind, after).await? {
        tokio::spawn(from_cache(out, initial, sub, stop));
    } else {
        let progress = spec.allow_bookmarks.then_some(BOOKMARK_INTERVAL);
        let changes = registry
            .storage()
            .watch(&out.prefix, after + 1, progress)
            .await?;
        tokio::spawn(from_etcd(out, initial, changes, stop));
    }
    Ok(ReceiverStream::new(rx))
}

/// One client watch's output side.
struct Out {
    tx: mpsc::Sender<Result<WatchEvent, tonic::Status>>,
    kind: &'static ResourceKind,
    filter: Filter,
    /// Key prefix of the watched namespace (the cache feeds all namespaces).
    prefix: String,
    bookmarks: bool,
}

/// Client gone.
struct Closed;

impl Out {
    async fn initial(&self, objects: Vec<ApiObject>) -> Result<(), Closed> {
        for obj in objects {
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            send(&self.tx, Type::Added, self.kind, &obj, rv).await?;
        }
        Ok(())
    }

    async fn change(&self, change: &Decoded) -> Result<(), Closed> {
        if !change.key.starts_with(&self.prefix) {
            return Ok(());
        }
        match select(&self.filter, change) {
            Some((ty, side)) => match side.json() {
                Ok(json) => {
                    send_json(&self.tx, ty, self.kind, json, change.revision.to_string()).await
                }
                Err(error) => {
                    tracing::warn!(%error, kind = self.kind.kind, "skipping unencodable watch event");
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    async fn progress(&self, rev: i64) -> Result<(), Closed> {
        if self.bookmarks {
            send_bookmark(&self.tx, self.kind, rev).await
        } else {
            Ok(())
        }
    }

    async fn item(&self, item: &Item) -> Result<(), Closed> {
        match item {
            Item::Change(c) => self.change(c).await,
            Item::Progress(rev) => self.progress(*rev).await,
        }
    }
}

async fn from_cache(
    out: Out,
    initial: Vec<ApiObject>,
    mut sub: Subscription,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if out.initial(initial).await.is_err() {
        return;
    }
    for item in &sub.backlog {
        if out.item(item).await.is_err() {
            return;
        }
    }
    loop {
        // At server shutdown the stream just ends; clients re-watch elsewhere.
        let item = tokio::select! {
            i = sub.live.recv() => i,
            _ = stop.wait_for(|s| *s) => return,
        };
        match item {
            // The feed may lag the list this watch started from.
            Ok(item) if item.revision() <= sub.after => {}
            Ok(item) => {
                if out.item(&item).await.is_err() {
                    return;
                }
            }
            // Too slow, or the feed restarted: end the stream; the client
            // resumes from the last revision it saw.
            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => {
                tracing::debug!(
                    kind = out.kind.kind,
                    "cached watch ended; client will resume"
                );
                return;
            }
        }
    }
}

async fn from_etcd(
    out: Out,
    initial: Vec<ApiObject>,
    changes: impl futures::Stream<Item = Result<WatchItem, StorageError>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if out.initial(initial).await.is_err() {
        return;
    }
    let mut changes = std::pin::pin!(changes);
    loop {
        let batch = tokio::select! {
            b = changes.next() => b,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(batch) = batch else { return };
        let sent = match batch {
            Ok(WatchItem::Changes(b)) => {
                let mut r = Ok(());
                for change in b {
                    let Some(d) = decode_logged(&change, out.kind) else {
                        continue;
                    };
                    r = out.change(&d).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
            Ok(WatchItem::Progress(rev)) => out.progress(rev).await,
            Err(e) => {
                tracing::debug!(error = %e, kind = out.kind.kind, "watch ended");
                let _ = out.tx.send(Err(ApiError::Storage(e).into())).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// One side (current or previous state) of a change, decoded and encoded
/// once: what filters read, and the JSON every matching watcher is sent.
#[derive(Debug)]
pub struct Side {
    /// The object cut down to what selectors look at (`filter::project`):
    /// a window of recent changes holds thousands of these.
    pub obj: ApiObject,
    json: Vec<u8>,
}

impl Side {
    fn new(bytes: &[u8], revision: i64) -> Result<Side, ApiError> {
        let full = ApiObject::from_stored(bytes, revision)?;
        let json = full.to_json()?;
        Ok(Side {
            obj: crate::filter::project(full),
            json,
        })
    }

    fn json(&self) -> Result<&[u8], ApiError> {
        Ok(&self.json)
    }
}

/// A storage change decoded once for all watchers of a kind: with 1000
/// watchers, parsing and encoding per watcher would be 1000 times the work.
#[derive(Debug)]
pub struct Decoded {
    pub key: String,
    pub revision: i64,
    /// The new state (absent for a delete).
    cur: Option<Side>,
    /// The previous state, stamped with this change's revision (what a
    /// DELETED event carries).
    prev: Option<Side>,
    /// The change created the key.
    created: bool,
}

/// Decodes a change; `None` (with a warning) when it cannot be an event.
pub fn decode_logged(change: &Change, kind: &ResourceKind) -> Option<Decoded> {
    match decode(change) {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            tracing::warn!(
                key = change.key(),
                "delete event without previous state; not sent"
            );
            None
        }
        Err(error) => {
            tracing::warn!(%error, kind = kind.kind, "skipping undecodable watch event");
            None
        }
    }
}

fn decode(change: &Change) -> Result<Option<Decoded>, ApiError> {
    Ok(match change {
        Change::Put { kv, prev } => Some(Decoded {
            key: kv.key.clone(),
            revision: kv.mod_revision,
            cur: Some(Side::new(&kv.value, kv.mod_revision)?),
            prev: prev
                .as_ref()
                .map(|p| Side::new(&p.value, kv.mod_revision))
                .transpose()?,
            created: kv.create_revision == kv.mod_revision,
        }),
        Change::Delete {
            key,
            revision,
            prev,
        } => match prev {
            None => None,
            Some(p) => Some(Decoded {
                key: key.clone(),
                revision: *revision,
                cur: None,
                prev: Some(Side::new(&p.value, *revision)?),
                created: false,
            }),
        },
    })
}

/// The event a filtered watch sends for a change, if any, and the state it carries.
fn select<'a>(filter: &Filter, d: &'a Decoded) -> Option<(Type, &'a Side)> {
    match &d.cur {
        Some(cur) => {
            let cur_match = filter.matches(&cur.obj);
            let prev_match = match &d.prev {
                Some(p) => Some(filter.matches(&p.obj)),
                None if d.created => None,
                // The previous state is unknown (compacted): assume it matched as now.
                None => Some(cur_match),
            };
            match decide(prev_match, Some(cur_match)) {
                Some(Type::Deleted) => d.prev.as_ref().map(|p| (Type::Deleted, p)),
                Some(ty) => Some((ty, cur)),
                None => None,
            }
        }
        None => {
            let p = d.prev.as_ref()?;
            decide(Some(filter.matches(&p.obj)), None).map(|ty| (ty, p))
        }
    }
}

/// `select` for tests: the event type, the object and its resourceVersion.
#[cfg(test)]
fn translate(
    filter: &Filter,
    change: Change,
) -> Result<Option<(Type, ApiObject, String)>, ApiError> {
    let Some(d) = decode(&change)? else {
        return Ok(None);
    };
    select(filter, &d)
        .map(|(ty, side)| {
            Ok((
                ty,
                serde_json::from_slice(&side.json)?,
                d.revision.to_string(),
            ))
        })
        .transpose()
        .map_err(|e: serde_json::Error| ApiError::Internal(e.to_string()))
}

async fn send_json(
    tx: &mpsc::Sender<Result<WatchEvent, tonic::Status>>,
    ty: Type,
    kind: &ResourceKind,
    json: &[u8],
    rv: String,
) -> Result<(), Closed> {
    let ev = WatchEvent {
        r#type: ty as i32,
        kind: kind.kind.to_string(),
        json: json.to_vec(),
        resource_version: rv,
    };
    tx.send(Ok(ev)).await.map_err(|_| Closed)
}

async fn send(
    tx: &mpsc::Sender<Result<WatchEvent, tonic::Status>>,
    ty: Type,
    kind: &ResourceKind,
    obj: &ApiObject,
    rv: String,
) -> Result<(), Closed> {
    let json = match obj.to_json() {
        Ok(j) => j,
        Err(e) => return tx.send(Err(e.into())).await.map_err(|_| Closed),
    };
    let ev = WatchEvent {
        r#type: ty as i32,
        kind: kind.kind.to_string(),
        json,
        resource_version: rv,
    };
    tx.send(Ok(ev)).await.map_err(|_| Closed)
}

/// A BOOKMARK carries an object with only apiVersion, kind and resourceVersion.
async fn send_bookmark(
    tx: &mpsc::Sender<Result<WatchEvent, tonic::Status>>,
    kind: &ResourceKind,
    rev: i64,
) -> Result<(), Closed> {
    let json = serde_json::json!({
        "apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"resourceVersion": rev.to_string()}
    });
    let ev = WatchEvent {
        r#type: Type::Bookmark as i32,
        kind: kind.kind.to_string(),
        json: json.to_string().into_bytes(),
        resource_version: rev.to_string(),
    };
    tx.send(Ok(ev)).await.map_err(|_| Closed)
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
