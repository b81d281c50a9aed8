//! The gRPC `Resources` service: decodes requests, calls the registry,
//! encodes objects. No object semantics live here.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weir_client::proto::{
    BindRequest, DeleteRequest, GetRequest, ListRequest, Object, ObjectList, WatchRequest,
    WriteRequest,
};

use crate::error::ApiError;
use crate::filter::Filter;
use crate::lifecycle::Propagation;
use crate::object::ApiObject;
use crate::registry::{DeleteOptions, Registry, kind};
use crate::watch;
use crate::watch_cache::WatchCache;

pub struct ResourcesService {
    registry: Registry,
    cache: Arc<WatchCache>,
    /// Turns true at shutdown; open watches end then.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl ResourcesService {
    pub fn new(
        registry: Registry,
        cache: Arc<WatchCache>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            registry,
            cache,
            stop,
        }
    }
}

fn object(kind: &str, obj: &ApiObject) -> Result<Response<Object>, Status> {
    Ok(Response::new(Object {
        kind: kind.to_string(),
        json: obj.to_json()?,
    }))
}

/// Logs failures worth an operator's attention (not client mistakes).
fn log_err(op: &'static str, kind: &str, e: ApiError) -> Status {
    if matches!(e, ApiError::Storage(_) | ApiError::Internal(_)) {
        tracing::error!(error = %e, op, kind, "request failed");
    }
    e.into()
}

#[tonic::async_trait]
impl weir_client::Resources for ResourcesService {
    async fn create(&self, req: Request<WriteRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let obj = self
            .registry
            .create(k, &r.json, r.dry_run)
            .await
            .map_err(|e| log_err("create", k.kind, e))?;
        object(k.kind, &obj)
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let obj = self
            .registry
            .get(k, &r.namespace, &r.name)
            .await
            .map_err(|e| log_err("get", k.kind, e))?;
        object(k.kind, &obj)
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ObjectList>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let filter = Filter::parse(&r.label_selector, &r.field_selector)?;
        let list = self
            .registry
            .list_json(k, &r.namespace, &filter, r.limit, &r.continue_token)
            .await
            .map_err(|e| log_err("list", k.kind, e))?;
        let items = list.items;
        Ok(Response::new(ObjectList {
            kind: k.kind.to_string(),
            items,
            resource_version: list.resource_version.to_string(),
            continue_token: list.continue_token,
        }))
    }

    type ListStreamStream = ReceiverStream<Result<ObjectList, Status>>;

    /// A list sent page by page: at most about three pages (~1000 objects
    /// each) exist in this process at a time — the one being read from
    /// etcd, the one waiting in the channel, the one tonic is encoding —
    /// instead of the whole list plus its encoded copy.
    async fn list_stream(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let filter = Filter::parse(&r.label_selector, &r.field_selector)?;
        let mut pages = self
            .registry
            .list_json_pages(k, &r.namespace, filter, r.limit, &r.continue_token)
            .map_err(|e| log_err("list", k.kind, e))?;
        // The first page before answering: a bad continue token or an
        // unreachable etcd is the call's status, as for List.
        let first = pages
            .next_page()
            .await
            .map_err(|e| log_err("list", k.kind, e))?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut next = first;
            loop {
                let chunk = match next {
                    Some(items) => ObjectList {
                        kind: k.kind.to_string(),
                        items,
                        resource_version: pages.revision().to_string(),
                        continue_token: String::new(),
                    },
                    None => {
                        // The last chunk: no items, the continue token.
                        let (rev, token) = pages.finish();
                        let _ = tx
                            .send(Ok(ObjectList {
                                kind: k.kind.to_string(),
                                items: Vec::new(),
                                resource_version: rev.to_string(),
                                continue_token: token,
                            }))
                            .await;
                        return;
                    }
                };
                // Empty pages (a selector dropped everything) are not sent.
                if !chunk.items.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                    return; // client gone
                }
                next = match pages.next_page().await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(log_err("list", k.kind, e))).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update(&self, req: Request<WriteRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let obj = self
            .registry
            .update(k, &r.json, r.dry_run)
            .await
            .map_err(|e| log_err("update", k.kind, e))?;
        object(k.kind, &obj)
    }

    async fn update_status(&self, req: Request<WriteRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let obj = self
            .registry
            .update_status(k, &r.json, r.dry_run)
            .await
            .map_err(|e| log_err("update_status", k.kind, e))?;
        object(k.kind, &obj)
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let opts = DeleteOptions {
            grace_period_seconds: r.grace_period_seconds,
            propagation: Propagation::parse(&r.propagation_policy)?,
            resource_version: Some(r.resource_version).filter(|rv| !rv.is_empty()),
        };
        let obj = self
            .registry
            .delete(k, &r.namespace, &r.name, &opts)
            .await
            .map_err(|e| log_err("delete", k.kind, e))?;
        object(k.kind, &obj)
    }

    type WatchStream = watch::EventStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let filter = Filter::parse(&r.label_selector, &r.field_selector)?;
        let spec = watch::WatchSpec {
            kind: k,
            namespace: r.namespace,
            filter,
            resource_version: r.resource_version,
            allow_bookmarks: r.allow_bookmarks,
        };
        let stream = watch::start(&self.registry, &self.cache, spec, self.stop.clone())
            .await
            .map_err(|e| log_err("watch", k.kind, e))?;
        Ok(Response::new(stream))
    }

    async fn bind(&self, req: Request<BindRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let obj = self
            .registry
            .bind(&r.namespace, &r.name, &r.node_name)
            .await
            .map_err(|e| log_err("bind", "Pod", e))?;
        object("Pod", &obj)
    }
}
