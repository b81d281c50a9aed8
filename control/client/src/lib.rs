//! The gRPC contract of weir's API server (generated from `proto/weir.proto`)
//! and a typed client over it.
//!
//! Objects travel as JSON of the `k8s-openapi` types. The typed methods take
//! any `K: k8s_openapi::Resource`; the `*_json` methods carry untyped objects
//! for the CLI, which handles every kind generically.
#![forbid(unsafe_code)]

use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::{Channel, Endpoint, Uri};

pub mod agent;
pub mod events;

/// The generated protobuf messages and the tonic client/server.
pub mod proto {
    tonic::include_proto!("weir.v1");
}

pub use proto::resources_client::ResourcesClient;
pub use proto::resources_server::{Resources, ResourcesServer};

/// An API error, mapped from the gRPC status the server returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NotFound: {0}")]
    NotFound(String),
    #[error("AlreadyExists: {0}")]
    AlreadyExists(String),
    #[error("Conflict: {0}")]
    Conflict(String),
    #[error("Invalid: {0}")]
    Invalid(String),
    /// The requested resourceVersion was compacted: re-list.
    #[error("Expired: {0}")]
    Expired(String),
    #[error("the server does not serve this kind: {0}")]
    Unimplemented(String),
    #[error("API server error ({code:?}): {message}")]
    Server { code: tonic::Code, message: String },
    #[error("cannot connect to the API server at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot decode {kind} from the API server: {source}")]
    Decode {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            tonic::Code::NotFound => Error::NotFound(m),
            tonic::Code::AlreadyExists => Error::AlreadyExists(m),
            tonic::Code::Aborted => Error::Conflict(m),
            tonic::Code::InvalidArgument => Error::Invalid(m),
            tonic::Code::OutOfRange => Error::Expired(m),
            tonic::Code::Unimplemented => Error::Unimplemented(m),
            code => Error::Server { code, message: m },
        }
    }
}

impl Error {
    /// Maps this error back to the gRPC status the server would send.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::{Code, Status};
        match self {
            Error::NotFound(m) => Status::new(Code::NotFound, m.clone()),
            Error::AlreadyExists(m) => Status::new(Code::AlreadyExists, m.clone()),
            Error::Conflict(m) => Status::new(Code::Aborted, m.clone()),
            Error::Invalid(m) => Status::new(Code::InvalidArgument, m.clone()),
            Error::Expired(m) => Status::new(Code::OutOfRange, m.clone()),
            Error::Unimplemented(m) => Status::new(Code::Unimplemented, m.clone()),
            Error::Server { code, message } => Status::new(*code, message.clone()),
            other => Status::new(Code::Internal, other.to_string()),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// List options (Kubernetes' ListOptions).
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: String,
    pub field_selector: String,
    pub limit: i64,
    pub continue_token: String,
}

impl ListParams {
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = selector.into();
        self
    }
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = selector.into();
        self
    }
}

/// Delete options.
#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    /// "Background" (default when empty), "Foreground" or "Orphan".
    pub propagation_policy: String,
    pub grace_period_seconds: Option<i64>,
    /// Delete only if the object is still at this resourceVersion.
    pub resource_version: String,
}

/// Watch options.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Empty: replay existing objects as ADDED first.
    pub resource_version: String,
    pub allow_bookmarks: bool,
}

impl WatchParams {
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = selector.into();
        self
    }
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = selector.into();
        self
    }
    pub fn from_version(mut self, rv: impl Into<String>) -> Self {
        self.resource_version = rv.into();
        self
    }
}

/// A list result: the items and the revision they were read at.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub resource_version: String,
    pub continue_token: String,
}

/// One watch event, typed.
#[derive(Debug, Clone)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// Progress marker: the watch has seen everything up to this revision.
    Bookmark(String),
}

impl<K> WatchEvent<K> {
    /// The object carried by the event, if any.
    pub fn object(&self) -> Option<&K> {
        match self {
            WatchEvent::Added(k) | WatchEvent::Modified(k) | WatchEvent::Deleted(k) => Some(k),
            WatchEvent::Bookmark(_) => None,
        }
    }
}

pub type WatchStream<K> = Pin<Box<dyn Stream<Item = Result<(WatchEvent<K>, String)>> + Send>>;

/// The typed API client. Cheap to clone (one shared HTTP/2 channel).
#[derive(Debug, Clone)]
pub struct Client {
    inner: ResourcesClient<Channel>,
}

fn kind_of<K: k8s_openapi::Resource>() -> String {
    K::KIND.to_string()
}

fn namespace_of<K: k8s_openapi::Resource>(ns: &str) -> String {
    if is_namespaced::<K>() {
        ns.to_string()
    } else {
        String::new()
    }
}

fn is_namespaced<K: k8s_openapi::Resource>() -> bool {
    weir_api::ResourceKind::by_kind(K::KIND).is_some_and(|k| k.namespaced)
}

fn decode<K: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Result<K> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        kind: kind.to_string(),
        source,
    })
}

fn encode<K: Serialize>(obj: &K) -> Vec<u8> {
    // k8s-openapi types always serialize.
    serde_json::to_vec(obj).expect("k8s-openapi objects serialize to JSON")
}

impl Client {
    /// Connects to `addr`: `http://HOST:PORT` or `unix:///path/to/socket`.
    ///
    /// The unix form lets an agent that lives in a node's network namespace reach
    /// an API server in another namespace (a socket path is not bound to a netns).
    pub async fn connect(addr: &str) -> Result<Self> {
        let channel = if let Some(path) = addr.strip_prefix("unix://") {
            let path = path.to_string();
            Endpoint::from_static("http://weir.invalid")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await
        } else {
            match Endpoint::from_shared(addr.to_string()) {
                Ok(e) => e.connect().await,
                Err(source) => Err(source),
            }
        }
        .map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })?;
        Ok(Self::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Self {
        Self {
            inner: ResourcesClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(64 << 20),
        }
    }

    /// The raw generated client, for callers that need the wire form.
    pub fn raw(&self) -> ResourcesClient<Channel> {
        self.inner.clone()
    }

    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let o = self
            .get_json(K::KIND, &namespace_of::<K>(namespace), name)
            .await?;
        decode(K::KIND, &o)
    }

    /// Like `get`, but NotFound is `Ok(None)`.
    pub async fn get_opt<K>(&self, namespace: &str, name: &str) -> Result<Option<K>>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        match self.get(namespace, name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects; `namespace` empty means all namespaces.
    pub async fn list<K>(&self, namespace: &str, params: &ListParams) -> Result<ObjectList<K>>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let mut chunks = self
            .list_chunks(K::KIND, &namespace_of::<K>(namespace), params)
            .await?;
        // Decoded chunk by chunk: the JSON of the whole list never exists at once.
        let mut out = ObjectList {
            items: Vec::new(),
            resource_version: String::new(),
            continue_token: String::new(),
        };
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            for b in &chunk.items {
                out.items.push(decode(K::KIND, b)?);
            }
            out.resource_version = chunk.resource_version;
            out.continue_token = chunk.continue_token;
        }
        Ok(out)
    }

    pub async fn create<K>(&self, obj: &K) -> Result<K>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let o = self.create_json(K::KIND, encode(obj), false).await?;
        decode(K::KIND, &o)
    }

    pub async fn update<K>(&self, obj: &K) -> Result<K>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let o = self.update_json(K::KIND, encode(obj), false).await?;
        decode(K::KIND, &o)
    }

    pub async fn update_status<K>(&self, obj: &K) -> Result<K>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let r = self
            .inner
            .clone()
            .update_status(proto::WriteRequest {
                kind: kind_of::<K>(),
                json: encode(obj),
                dry_run: false,
            })
            .await?;
        decode(K::KIND, &r.into_inner().json)
    }

    /// Deletes an object and returns its last state (with deletionTimestamp set
    /// when finalizers or graceful deletion keep it around a while).
    pub async fn delete<K>(&self, namespace: &str, name: &str, params: &DeleteParams) -> Result<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let o = self
            .delete_json(K::KIND, &namespace_of::<K>(namespace), name, params)
            .await?;
        decode(K::KIND, &o)
    }

    /// Binds a pod to a node.
    pub async fn bind(&self, namespace: &str, name: &str, node_name: &str) -> Result<()> {
        self.inner
            .clone()
            .bind(proto::BindRequest {
                namespace: namespace.to_string(),
                name: name.to_string(),
                node_name: node_name.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Watches objects. Each item carries the event and its resourceVersion;
    /// on `Error::Expired` the caller re-lists.
    pub async fn watch<K>(&self, namespace: &str, params: &WatchParams) -> Result<WatchStream<K>>
    where
        K: k8s_openapi::Resource + DeserializeOwned + Send + 'static,
    {
        let raw = self
            .watch_json(K::KIND, &namespace_of::<K>(namespace), params)
            .await?;
        Ok(Box::pin(raw.map(|ev| {
            let ev = ev?;
            let rv = ev.resource_version.clone();
            let typed = match proto::watch_event::Type::try_from(ev.r#type) {
                Ok(proto::watch_event::Type::Added) => {
                    WatchEvent::Added(decode(K::KIND, &ev.json)?)
                }
                Ok(proto::watch_event::Type::Modified) => {
                    WatchEvent::Modified(decode(K::KIND, &ev.json)?)
                }
                Ok(proto::watch_event::Type::Deleted) => {
                    WatchEvent::Deleted(decode(K::KIND, &ev.json)?)
                }
                Ok(proto::watch_event::Type::Bookmark) | Err(_) => WatchEvent::Bookmark(rv.clone()),
            };
            Ok((typed, rv))
        })))
    }

    // ---- untyped (JSON) forms, for the CLI and generic controllers ----

    pub async fn get_json(&self, kind: &str, namespace: &str, name: &str) -> Result<Vec<u8>> {
        let r = self
            .inner
            .clone()
            .get(proto::GetRequest {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
            })
            .await?;
        Ok(r.into_inner().json)
    }

    /// Lists objects as JSON; the server streams the list in chunks
    /// (`ListStream`), reassembled here into one `ObjectList`.
    pub async fn list_json(
        &self,
        kind: &str,
        namespace: &str,
        p: &ListParams,
    ) -> Result<proto::ObjectList> {
        let mut chunks = self.list_chunks(kind, namespace, p).await?;
        let mut out = proto::ObjectList {
            kind: kind.into(),
            ..Default::default()
        };
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if out.items.is_empty() {
                out.items = chunk.items;
            } else {
                out.items.extend(chunk.items);
            }
            if !chunk.kind.is_empty() {
                out.kind = chunk.kind;
            }
            out.resource_version = chunk.resource_version;
            out.continue_token = chunk.continue_token;
        }
        Ok(out)
    }

    /// The chunks of a streamed list; against a server without `ListStream`
    /// (UNIMPLEMENTED), the one message of `List`.
    async fn list_chunks(
        &self,
        kind: &str,
        namespace: &str,
        p: &ListParams,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<proto::ObjectList>> + Send>>> {
        let req = proto::ListRequest {
            kind: kind.into(),
            namespace: namespace.into(),
            label_selector: p.label_selector.clone(),
            field_selector: p.field_selector.clone(),
            limit: p.limit,
            continue_token: p.continue_token.clone(),
        };
        match self.inner.clone().list_stream(req.clone()).await {
            Ok(r) => Ok(Box::pin(r.into_inner().map(|c| c.map_err(Error::from)))),
            // An unknown kind is UNIMPLEMENTED too; List then says so again.
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                let one = self.inner.clone().list(req).await?.into_inner();
                Ok(Box::pin(futures::stream::iter([Ok(one)])))
            }
            Err(s) => Err(s.into()),
        }
    }

    pub async fn create_json(&self, kind: &str, json: Vec<u8>, dry_run: bool) -> Result<Vec<u8>> {
        let r = self
            .inner
            .clone()
            .create(proto::WriteRequest {
                kind: kind.into(),
                json,
                dry_run,
            })
            .await?;
        Ok(r.into_inner().json)
    }

    pub async fn update_json(&self, kind: &str, json: Vec<u8>, dry_run: bool) -> Result<Vec<u8>> {
        let r = self
            .inner
            .clone()
            .update(proto::WriteRequest {
                kind: kind.into(),
                json,
                dry_run,
            })
            .await?;
        Ok(r.into_inner().json)
    }

    pub async fn delete_json(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        p: &DeleteParams,
    ) -> Result<Vec<u8>> {
        let r = self
            .inner
            .clone()
            .delete(proto::DeleteRequest {
                kind: kind.into(),
                namespace: namespace.into(),
                name: name.into(),
                propagation_policy: p.propagation_policy.clone(),
                grace_period_seconds: p.grace_period_seconds,
                resource_version: p.resource_version.clone(),
            })
            .await?;
        Ok(r.into_inner().json)
    }

    pub async fn watch_json(
        &self,
        kind: &str,
        namespace: &str,
        p: &WatchParams,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<proto::WatchEvent>> + Send>>> {
        let r = self
            .inner
            .clone()
            .watch(proto::WatchRequest {
                kind: kind.into(),
                namespace: namespace.into(),
                label_selector: p.label_selector.clone(),
                field_selector: p.field_selector.clone(),
                resource_version: p.resource_version.clone(),
                allow_bookmarks: p.allow_bookmarks,
            })
            .await?;
        Ok(Box::pin(r.into_inner().map(|e| e.map_err(Error::from))))
    }
}
