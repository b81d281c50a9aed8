//! The object store semantics over etcd: create/get/list/update/delete/bind
//! with Kubernetes' rules (optimistic concurrency, server-owned metadata,
//! graceful and finalizer-driven deletion, allocation of cluster IPs, node
//! ports and pod CIDRs in the same transaction as the object).
//!
//! The decisions are in `lifecycle` and `admission`; this module reads,
//! decides, writes, and retries when a concurrent writer got in between.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_api::validation::FieldError;
use weir_api::{KINDS, ResourceKind};

use crate::admission;
use crate::allocation::{self, Allocator, Ranges};
use crate::error::ApiError;
use crate::filter::Filter;
use crate::lifecycle::{self, CreateContext, DeletePlan, Propagation};
use crate::object::ApiObject;
use crate::storage::{CreateOutcome, Guard, Outcome, Storage};
use crate::ttl::TtlLeases;
use crate::written::Recent;

/// How often a write is retried when it lost a race on an allocation key.
const MAX_ATTEMPTS: usize = 8;

/// Writes remembered so that an update or delete right after can skip its
/// etcd read (see `written`): a few hundred objects, at most 2 MiB.
const RECENT_ENTRIES: usize = 512;
const RECENT_BYTES: usize = 2 << 20;

/// etcd page size of a list without a limit.
const UNLIMITED_PAGE: i64 = 1000;

/// Options of a Delete request.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Propagation,
    /// Precondition: delete only at this resourceVersion.
    pub resource_version: Option<String>,
}

/// One page of a List.
#[derive(Debug)]
pub struct ListResult<T = ApiObject> {
    pub items: Vec<T>,
    pub resource_version: i64,
    pub continue_token: String,
}

/// The API server's object registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    storage: Storage,
    allocator: Allocator,
    /// Leases that expire Events (see `ttl`).
    event_leases: TtlLeases,
    /// Serializes this replica's writes that allocate (Services, Nodes):
    /// concurrent creates would all pick the same lowest free value and all
    /// but one lose the transaction, round after round. Across replicas the
    /// transaction's claim compare still decides.
    alloc_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// This replica's latest writes (key -> revision, stored value).
    recent: std::sync::Arc<Recent>,
}

/// Looks up a kind the server serves.
pub fn kind(name: &str) -> Result<&'static ResourceKind, ApiError> {
    ResourceKind::by_kind(name)
        .ok_or_else(|| ApiError::Unimplemented(format!("the server does not serve kind {name:?}")))
}

fn now() -> Time {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let ts = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or_default())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(b)
}

/// A random (version 4) UUID.
fn new_uid() -> Result<String, ApiError> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The namespace a request addresses: namespaced kinds default to "default".
fn request_namespace(kind: &ResourceKind, ns: &str) -> Option<String> {
    kind.namespaced.then(|| {
        if ns.is_empty() {
            "default".to_string()
        } else {
            ns.to_string()
        }
    })
}

/// The key that marks a namespace as terminating: written in the same
/// transaction that sets its deletionTimestamp, removed with it. Creates in
/// a namespace require its key present and this one absent inside their own
/// transaction, so no read of the namespace precedes a create and a create
/// cannot race the namespace's deletion.
fn terminating_key(namespace: &str) -> String {
    format!("/registry/terminating/namespaces/{namespace}")
}

fn namespace_terminating(ns: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "unable to create new content in namespace {ns} because it is being terminated"
    ))
}

/// The etcd key of a served kind's object (`kind` is one of weir_api's kinds).
fn kind_key(kind: &str, name: &str) -> String {
    ResourceKind::by_kind(kind).map_or_else(String::new, |k| k.key(None, name))
}

/// Continue tokens carry the revision of the first page and the next key,
/// so every page of one list reads the same snapshot.
fn encode_continue(revision: i64, next_key: &str) -> String {
    format!("{revision}:{next_key}")
}

fn decode_continue(token: &str, prefix: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let (rev, key) = token.split_once(':').ok_or_else(bad)?;
    let rev: i64 = rev.parse().map_err(|_| bad())?;
    if !key.starts_with(prefix) {
        return Err(bad());
    }
    Ok((rev, key.to_string()))
}

/// Converts a stored key/value into a list item's JSON (`None`: filtered out).
pub type JsonTake =
    Box<dyn Fn(crate::storage::Kv) -> Result<Option<Vec<u8>>, ApiError> + Send + Sync>;

/// A list as JSON items, page by page; owns everything it needs (a streamed
/// list runs in its own task).
pub type JsonPages = Pages<JsonTake>;

/// A list read page by page from etcd, all pages at the revision of the
/// first (one snapshot), with Kubernetes' limit/continue semantics.
pub struct Pages<F> {
    storage: Storage,
    prefix: String,
    /// 0 until the first page fixed it.
    revision: i64,
    /// The next key to read; `None` once done.
    start: Option<String>,
    limit: i64,
    page_size: i64,
    taken: i64,
    continue_token: String,
    take: F,
}

impl<T, F: Fn(crate::storage::Kv) -> Result<Option<T>, ApiError>> Pages<F> {
    fn new(
        storage: Storage,
        kind: &ResourceKind,
        ns: &str,
        limit: i64,
        continue_token: &str,
        take: F,
    ) -> Result<Self, ApiError> {
        let ns = (kind.namespaced && !ns.is_empty()).then_some(ns);
        let prefix = kind.key_prefix(ns);
        let (revision, start) = if continue_token.is_empty() {
            (0, prefix.clone())
        } else {
            decode_continue(continue_token, &prefix)?
        };
        // Unlimited lists still read etcd in pages, bounding each response.
        let page_size = if limit > 0 {
            limit.max(100)
        } else {
            UNLIMITED_PAGE
        };
        Ok(Self {
            storage,
            prefix,
            revision,
            start: Some(start),
            limit,
            page_size,
            taken: 0,
            continue_token: String::new(),
            take,
        })
    }

    /// The next page's items (possibly empty when a filter dropped them
    /// all); `None` when the list is complete.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>, ApiError> {
        let Some(start) = self.start.take() else {
            return Ok(None);
        };
        let page = match self
            .storage
            .list(&self.prefix, Some(&start), self.revision, self.page_size)
            .await
        {
            Err(crate::storage::StorageError::Compacted { .. }) => {
                return Err(ApiError::Expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                ));
            }
            other => other?,
        };
        if self.revision == 0 {
            self.revision = page.revision;
        }
        let more = page.more;
        let last_key = page.kvs.last().map(|kv| kv.key.clone());
        let n = page.kvs.len();
        let mut items = Vec::new();
        for (i, kv) in page.kvs.into_iter().enumerate() {
            let key = (self.limit > 0).then(|| kv.key.clone());
            if let Some(item) = (self.take)(kv)? {
                items.push(item);
                self.taken += 1;
            }
            if self.limit > 0 && self.taken == self.limit {
                if i + 1 < n || more {
                    let next = format!("{}\0", key.unwrap_or_default());
                    self.continue_token = encode_continue(self.revision, &next);
                }
                return Ok(Some(items));
            }
        }
        if more && let Some(k) = last_key {
            self.start = Some(format!("{k}\0"));
        }
        Ok(Some(items))
    }

    /// The revision every page is read at (0 before the first page).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The list's revision and continue token (empty when nothing remains).
    pub fn finish(self) -> (i64, String) {
        (self.revision, self.continue_token)
    }
}

impl Registry {
    pub fn new(storage: Storage, ranges: Ranges, event_ttl: Duration) -> Self {
        let allocator = Allocator::new(storage.clone(), ranges);
        let event_leases = TtlLeases::new(storage.clone(), event_ttl);
        Self {
            storage,
            allocator,
            event_leases,
            alloc_lock: Default::default(),
            recent: std::sync::Arc::new(Recent::new(RECENT_ENTRIES, RECENT_BYTES)),
        }
    }

    /// Held across allocate + write for kinds that allocate.
    async fn alloc_guard(&self, kind: &ResourceKind) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match kind.kind {
            "Service" | "Node" => Some(self.alloc_lock.lock().await),
            _ => None,
        }
    }

    /// The lease a write of `kind` is attached to: Events expire, nothing else does.
    async fn lease_for(&self, kind: &ResourceKind) -> Result<Option<i64>, ApiError> {
        if kind.kind == "Event" {
            Ok(Some(self.event_leases.lease().await?))
        } else {
            Ok(None)
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub async fn get(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
    ) -> Result<ApiObject, ApiError> {
        let key = kind.key(request_namespace(kind, ns).as_deref(), name);
        let kv = self
            .storage
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(kind.plural, name))?;
        ApiObject::from_stored(&kv.value, kv.mod_revision)
    }

    /// Lists objects (all namespaces when `ns` is empty) matching `filter`.
    pub async fn list(
        &self,
        kind: &ResourceKind,
        ns: &str,
        filter: &Filter,
        limit: i64,
        continue_token: &str,
    ) -> Result<ListResult, ApiError> {
        self.list_with(kind, ns, limit, continue_token, |kv| {
            let obj = ApiObject::from_stored(&kv.value, kv.mod_revision)?;
            Ok(filter.matches(&obj).then_some(obj))
        })
        .await
    }

    /// Lists like `list`, as the JSON the API returns, in one piece.
    pub async fn list_json(
        &self,
        kind: &ResourceKind,
        ns: &str,
        filter: &Filter,
        limit: i64,
        continue_token: &str,
    ) -> Result<ListResult<Vec<u8>>, ApiError> {
        let mut pages = self.list_json_pages(kind, ns, filter.clone(), limit, continue_token)?;
        let mut items = Vec::new();
        while let Some(page) = pages.next_page().await? {
            items.extend(page);
        }
        let (resource_version, continue_token) = pages.finish();
        Ok(ListResult {
            items,
            resource_version,
            continue_token,
        })
    }

    /// Lists as JSON page by page (one etcd page at a time), so a streamed
    /// list never holds more than a page. Without selectors the stored bytes
    /// are passed through (resourceVersion spliced in), which keeps a list of
    /// 10k pods from parsing and re-encoding every pod.
    pub fn list_json_pages(
        &self,
        kind: &ResourceKind,
        ns: &str,
        filter: Filter,
        limit: i64,
        continue_token: &str,
    ) -> Result<JsonPages, ApiError> {
        let passthrough = filter.is_empty();
        let take: JsonTake = Box::new(move |kv| {
            if passthrough && let Some(json) = ApiObject::stored_to_json(&kv.value, kv.mod_revision)
            {
                return Ok(Some(json));
            }
            let obj = ApiObject::from_stored(&kv.value, kv.mod_revision)?;
            if filter.matches(&obj) {
                Ok(Some(obj.to_json()?))
            } else {
                Ok(None)
            }
        });
        Pages::new(self.storage.clone(), kind, ns, limit, continue_token, take)
    }

    /// The paging loop of a list; `take` converts a stored key/value into
    /// an item, or `None` when the filter drops it.
    async fn list_with<T>(
        &self,
        kind: &ResourceKind,
        ns: &str,
        limit: i64,
        continue_token: &str,
        take: impl Fn(crate::storage::Kv) -> Result<Option<T>, ApiError>,
    ) -> Result<ListResult<T>, ApiError> {
        let mut pages = Pages::new(self.storage.clone(), kind, ns, limit, continue_token, take)?;
        let mut items = Vec::new();
        while let Some(page) = pages.next_page().await? {
            items.extend(page);
        }
        let (resource_version, continue_token) = pages.finish();
        Ok(ListResult {
            items,
            resource_version,
            continue_token,
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = kind.kind, dry_run))]
    pub async fn create(
        &self,
        kind: &ResourceKind,
        body: &[u8],
        dry_run: bool,
    ) -> Result<ApiObject, ApiError> {
        let mut obj = ApiObject::parse_for(kind, body)?;
        let suffix = weir_api::defaults::name_suffix(random_bytes()?);
        let ctx = CreateContext {
            now: now(),
            uid: new_uid()?,
            suffix,
        };
        lifecycle::prepare_create(kind, &mut obj, &ctx)?;
        let obj = admission::admit(kind, obj)?;
        // A dry run writes nothing, so it checks the namespace by reading it;
        // a real create checks it in its transaction (see `terminating_key`).
        if kind.namespaced && dry_run {
            self.check_namespace_open(obj.namespace()).await?;
        }
        let key = kind.key(obj.metadata.namespace.as_deref(), obj.name());
        let ns = obj.namespace().to_string();
        let ns_keys = kind
            .namespaced
            .then(|| (kind_key("Namespace", &ns), terminating_key(&ns)));
        let guards: Vec<Guard<'_>> = match &ns_keys {
            Some((present, absent)) => vec![Guard::Present(present), Guard::Absent(absent)],
            None => Vec::new(),
        };
        for _ in 0..MAX_ATTEMPTS {
            let mut obj = obj.clone();
            let _guard = self.alloc_guard(kind).await;
            self.allocator.allocate(kind, &mut obj, None).await?;
            if dry_run {
                return Ok(obj);
            }
            let claims = allocation::claim_values(&obj, &lifecycle::claims_of(kind, &obj));
            let lease = self.lease_for(kind).await?;
            let stored = obj.to_stored()?;
            match self
                .storage
                .create_guarded(&key, stored.clone(), &claims, &guards, lease)
                .await?
            {
                CreateOutcome::Committed { revision } => {
                    self.recent.put(&key, revision, &stored);
                    obj.metadata.resource_version = Some(revision.to_string());
                    tracing::debug!(kind = kind.kind, key, revision, "created");
                    return Ok(obj);
                }
                CreateOutcome::GuardFailed(0) => {
                    return Err(ApiError::not_found("namespaces", &ns));
                }
                CreateOutcome::GuardFailed(_) => return Err(namespace_terminating(&ns)),
                CreateOutcome::Exists => {
                    return Err(ApiError::AlreadyExists(format!(
                        "{} {:?} already exists",
                        kind.plural,
                        obj.name()
                    )));
                }
                // An allocation key was taken concurrently: allocate again.
                CreateOutcome::ClaimTaken => continue,
            }
        }
        Err(ApiError::Internal(
            "allocation kept conflicting with concurrent writes; retry".into(),
        ))
    }

    /// Replaces metadata and spec (status is kept).
    #[tracing::instrument(level = "debug", skip_all, fields(kind = kind.kind, dry_run))]
    pub async fn update(
        &self,
        kind: &ResourceKind,
        body: &[u8],
        dry_run: bool,
    ) -> Result<ApiObject, ApiError> {
        let new = ApiObject::parse_for(kind, body)?;
        self.write_existing(kind, new, dry_run, |kind, old, new| {
            let mut merged = lifecycle::merge_update(old, new.clone());
            lifecycle::patch_allocated(kind, old, &mut merged);
            let merged = admission::admit(kind, merged)?;
            let errs = lifecycle::immutable_changes(kind, old, &merged);
            if !errs.is_empty() {
                let name = merged.name().to_string();
                return Err(ApiError::Invalid(format!(
                    "{} {name:?} is invalid: {}",
                    kind.kind,
                    errs.join("\n")
                )));
            }
            Ok(merged)
        })
        .await
    }

    /// Replaces status only.
    #[tracing::instrument(level = "debug", skip_all, fields(kind = kind.kind, dry_run))]
    pub async fn update_status(
        &self,
        kind: &ResourceKind,
        body: &[u8],
        dry_run: bool,
    ) -> Result<ApiObject, ApiError> {
        let new = ApiObject::parse_for(kind, body)?;
        // Admission again: the status must decode as the kind's type (and is pruned by it).
        self.write_existing(kind, new, dry_run, |kind, old, new| {
            admission::admit(kind, lifecycle::merge_status(old, new))
        })
        .await
    }

    /// Shared read-check-merge-write loop of Update and UpdateStatus.
    async fn write_existing(
        &self,
        kind: &ResourceKind,
        new: ApiObject,
        dry_run: bool,
        merge: impl Fn(&ResourceKind, &ApiObject, &ApiObject) -> Result<ApiObject, ApiError>,
    ) -> Result<ApiObject, ApiError> {
        let name = new.name().to_string();
        if name.is_empty() {
            return Err(admission::invalid(
                &new,
                vec![FieldError::required("metadata.name", "name is required")],
            ));
        }
        let requested_rv = match new.metadata.resource_version.as_deref() {
            Some(rv) if !rv.is_empty() => rv.to_string(),
            _ => {
                return Err(admission::invalid(
                    &new,
                    vec![FieldError::invalid(
                        "metadata.resourceVersion",
                        "0x0",
                        "must be specified for an update",
                    )],
                ));
            }
        };
        let ns = request_namespace(kind, new.namespace());
        let key = kind.key(ns.as_deref(), &name);
        for attempt in 0..MAX_ATTEMPTS {
            let _guard = self.alloc_guard(kind).await;
            // The object as this replica last wrote it, when that is the
            // revision the client updates from: the transaction below is
            // guarded by it, so no read is needed (see `written`).
            let remembered = self
                .recent
                .get(&key)
                .filter(|w| attempt == 0 && !dry_run && w.mod_revision.to_string() == requested_rv);
            let from_record = remembered.is_some();
            let cur = match remembered {
                Some(w) => crate::storage::Kv {
                    key: key.clone(),
                    value: w.value.to_vec(),
                    mod_revision: w.mod_revision,
                    create_revision: 0,
                },
                None => self
                    .storage
                    .get(&key)
                    .await?
                    .ok_or_else(|| ApiError::not_found(kind.plural, &name))?,
            };
            if requested_rv != cur.mod_revision.to_string() {
                return Err(ApiError::modified(kind.plural, &name));
            }
            let old = ApiObject::from_stored(&cur.value, cur.mod_revision)?;
            let mut obj = match merge(kind, &old, &new) {
                Ok(o) => o,
                // A refusal is only given against the state in etcd.
                Err(_) if from_record => continue,
                Err(e) => return Err(e),
            };
            self.allocator.allocate(kind, &mut obj, Some(&old)).await?;
            if dry_run {
                return Ok(obj);
            }
            let old_claims = lifecycle::claims_of(kind, &old);
            if lifecycle::should_delete_on_update(&obj) {
                let releases: Vec<String> = old_claims.into_iter().collect();
                match self
                    .storage
                    .delete(&key, cur.mod_revision, &releases)
                    .await?
                {
                    Outcome::Committed { .. } => {
                        self.recent.forget(&key);
                        return Ok(obj);
                    }
                    Outcome::Failed { .. } => return Err(ApiError::modified(kind.plural, &name)),
                }
            }
            let new_claims = lifecycle::claims_of(kind, &obj);
            let claims = allocation::claim_values(
                &obj,
                &new_claims.difference(&old_claims).cloned().collect(),
            );
            let releases: Vec<String> = old_claims.difference(&new_claims).cloned().collect();
            let lease = self.lease_for(kind).await?;
            let stored = obj.to_stored()?;
            match self
                .storage
                .update_leased(
                    &key,
                    stored.clone(),
                    cur.mod_revision,
                    &claims,
                    &releases,
                    lease,
                )
                .await?
            {
                Outcome::Committed { revision } => {
                    self.recent.put(&key, revision, &stored);
                    obj.metadata.resource_version = Some(revision.to_string());
                    return Ok(obj);
                }
                Outcome::Failed { current: None } => {
                    return Err(ApiError::not_found(kind.plural, &name));
                }
                Outcome::Failed { current: Some(kv) } if kv.mod_revision != cur.mod_revision => {
                    return Err(ApiError::modified(kind.plural, &name));
                }
                Outcome::Failed { .. } => continue,
            }
        }
        Err(ApiError::Internal(
            "update kept conflicting with concurrent allocations; retry".into(),
        ))
    }

    /// Deletes an object; returns its last state (marked with a
    /// deletionTimestamp when it stays for finalizers or a graceful stop).
    #[tracing::instrument(level = "debug", skip(self, kind, opts), fields(kind = kind.kind))]
    pub async fn delete(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<ApiObject, ApiError> {
        if kind.kind != "Namespace" {
            return self.delete_object(kind, ns, name, opts).await;
        }
        if matches!(name, "default" | "kube-system") {
            return Err(ApiError::Forbidden(format!(
                "namespaces {name:?} is forbidden: this namespace may not be deleted"
            )));
        }
        let key = kind.key(None, name);
        let (mod_revision, obj) = self.read_for_delete(kind, &key, name, opts).await?;
        self.delete_namespace(obj, &key, mod_revision).await
    }

    /// Reads the object a delete addresses and checks the precondition.
    async fn read_for_delete(
        &self,
        kind: &ResourceKind,
        key: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(i64, ApiObject), ApiError> {
        let cur = self
            .storage
            .get(key)
            .await?
            .ok_or_else(|| ApiError::not_found(kind.plural, name))?;
        Self::check_delete_precondition(kind, name, opts, cur.mod_revision)?;
        Ok((
            cur.mod_revision,
            ApiObject::from_stored(&cur.value, cur.mod_revision)?,
        ))
    }

    /// The object a delete addresses as this replica last wrote it, if any;
    /// the delete's transaction is guarded by its revision (see `written`).
    /// A precondition that names another revision is left to an etcd read.
    fn remembered_for_delete(&self, key: &str, opts: &DeleteOptions) -> Option<(i64, ApiObject)> {
        let w = self.recent.get(key)?;
        if let Some(rv) = opts.resource_version.as_deref().filter(|rv| !rv.is_empty())
            && rv != w.mod_revision.to_string()
        {
            return None;
        }
        let obj = ApiObject::from_stored(&w.value, w.mod_revision).ok()?;
        Some((w.mod_revision, obj))
    }

    fn check_delete_precondition(
        kind: &ResourceKind,
        name: &str,
        opts: &DeleteOptions,
        mod_revision: i64,
    ) -> Result<(), ApiError> {
        let cur_rev = mod_revision;
        if let Some(rv) = opts.resource_version.as_deref().filter(|rv| !rv.is_empty())
            && rv != cur_rev.to_string()
        {
            return Err(ApiError::Conflict(format!(
                "Operation cannot be fulfilled on {} {name:?}: the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({cur_rev}). The object might have been modified",
                kind.plural
            )));
        }
        Ok(())
    }

    /// Delete of anything but a Namespace.
    async fn delete_object(
        &self,
        kind: &ResourceKind,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<ApiObject, ApiError> {
        let ns = request_namespace(kind, ns);
        let key = kind.key(ns.as_deref(), name);
        for attempt in 0..MAX_ATTEMPTS {
            let remembered = if attempt == 0 {
                self.remembered_for_delete(&key, opts)
            } else {
                None
            };
            let from_record = remembered.is_some();
            let (mod_revision, mut obj) = match remembered {
                Some(r) => r,
                None => self.read_for_delete(kind, &key, name, opts).await?,
            };
            let outcome = match lifecycle::plan_delete(
                kind,
                &obj,
                opts.grace_period_seconds,
                opts.propagation,
                &now(),
            ) {
                // Nothing to write, so nothing guards the record: read etcd.
                DeletePlan::Unchanged if from_record => continue,
                DeletePlan::Unchanged => return Ok(obj),
                DeletePlan::Mark {
                    at,
                    grace_seconds,
                    add_finalizer,
                } => {
                    obj.metadata.deletion_timestamp = Some(at);
                    obj.metadata.deletion_grace_period_seconds = Some(grace_seconds);
                    if let Some(f) = add_finalizer {
                        obj.metadata
                            .finalizers
                            .get_or_insert_with(Vec::new)
                            .push(f.to_string());
                    }
                    let lease = self.lease_for(kind).await?;
                    let stored = obj.to_stored()?;
                    let outcome = self
                        .storage
                        .update_leased(&key, stored.clone(), mod_revision, &[], &[], lease)
                        .await?;
                    if let Outcome::Committed { revision } = outcome {
                        self.recent.put(&key, revision, &stored);
                        obj.metadata.resource_version = Some(revision.to_string());
                    }
                    outcome
                }
                DeletePlan::Remove => {
                    let releases: Vec<String> =
                        lifecycle::claims_of(kind, &obj).into_iter().collect();
                    let outcome = self.storage.delete(&key, mod_revision, &releases).await?;
                    if let Outcome::Committed { .. } = outcome {
                        self.recent.forget(&key);
                    }
                    outcome
                }
            };
            match outcome {
                Outcome::Committed { .. } => {
                    tracing::debug!(kind = kind.kind, key, "deleted or marked for deletion");
                    return Ok(obj);
                }
                Outcome::Failed { current: None } => {
                    return Err(ApiError::not_found(kind.plural, name));
                }
                // Changed since we read it: decide again on the new state.
                Outcome::Failed { .. } => continue,
            }
        }
        Err(ApiError::modified(kind.plural, name))
    }

    /// Marks a namespace Terminating and starts removing its content; the
    /// namespace itself goes when it is empty.
    async fn delete_namespace(
        &self,
        mut ns: ApiObject,
        key: &str,
        mod_revision: i64,
    ) -> Result<ApiObject, ApiError> {
        // Already terminating: its finalizer task is running (or resumes at start-up).
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(ns);
        }
        ns.metadata.deletion_timestamp = Some(now());
        ns.metadata.deletion_grace_period_seconds = Some(0);
        ns.body
            .insert("status".into(), serde_json::json!({"phase": "Terminating"}));
        let marker = [(terminating_key(ns.name()), Vec::new())];
        match self
            .storage
            .update(key, ns.to_stored()?, mod_revision, &marker, &[])
            .await?
        {
            Outcome::Committed { revision } => {
                ns.metadata.resource_version = Some(revision.to_string())
            }
            Outcome::Failed { .. } => return Err(ApiError::modified("namespaces", ns.name())),
        }
        let registry = self.clone();
        let name = ns.name().to_string();
        tokio::spawn(async move { registry.finalize_namespace(&name).await });
        Ok(ns)
    }

    /// Deletes everything in a terminating namespace, then the namespace.
    /// Graceful pods are waited for (their agents finish them).
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn finalize_namespace(&self, name: &str) {
        let ns_kind = ResourceKind::by_kind("Namespace").expect("Namespace is a served kind");
        let everything = Filter::parse("", "").expect("empty selectors parse");
        loop {
            let mut remaining = 0usize;
            for kind in KINDS.iter().filter(|k| k.namespaced) {
                let items = match self.list(kind, name, &everything, 0, "").await {
                    Ok(l) => l.items,
                    Err(error) => {
                        tracing::warn!(%error, namespace = name, kind = kind.kind, "cannot list namespace content");
                        remaining += 1;
                        continue;
                    }
                };
                remaining += items.len();
                for obj in items
                    .iter()
                    .filter(|o| o.metadata.deletion_timestamp.is_none())
                {
                    if let Err(error) = self
                        .delete_object(kind, name, obj.name(), &DeleteOptions::default())
                        .await
                        && !matches!(error, ApiError::NotFound(_))
                    {
                        tracing::warn!(%error, namespace = name, kind = kind.kind, object = obj.name(), "cannot delete");
                    }
                }
            }
            if remaining == 0 {
                let key = ns_kind.key(None, name);
                match self.storage.get(&key).await {
                    Ok(Some(kv)) => match self
                        .storage
                        .delete(&key, kv.mod_revision, &[terminating_key(name)])
                        .await
                    {
                        Ok(Outcome::Committed { .. }) => {
                            tracing::info!(namespace = name, "namespace removed");
                            return;
                        }
                        Ok(Outcome::Failed { .. }) => {}
                        Err(error) => {
                            tracing::warn!(%error, namespace = name, "cannot remove namespace")
                        }
                    },
                    Ok(None) => return,
                    Err(error) => tracing::warn!(%error, namespace = name, "cannot read namespace"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Resumes the deletion of namespaces that were terminating when the
    /// server stopped.
    pub async fn resume_namespace_deletions(&self) -> Result<(), ApiError> {
        let ns_kind = kind("Namespace")?;
        let all = Filter::parse("", "")?;
        for ns in self.list(ns_kind, "", &all, 0, "").await?.items {
            if ns.metadata.deletion_timestamp.is_some() {
                self.mark_terminating(ns_kind, &ns).await?;
                let registry = self.clone();
                let name = ns.name().to_string();
                tokio::spawn(async move { registry.finalize_namespace(&name).await });
            }
        }
        Ok(())
    }

    /// Writes the terminating marker of a namespace that was marked for
    /// deletion without one (by a version that had no markers).
    async fn mark_terminating(
        &self,
        ns_kind: &ResourceKind,
        ns: &ApiObject,
    ) -> Result<(), ApiError> {
        let marker = terminating_key(ns.name());
        if self.storage.get(&marker).await?.is_some() {
            return Ok(());
        }
        let rev: i64 = ns
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or_default();
        let key = ns_kind.key(None, ns.name());
        match self
            .storage
            .update(&key, ns.to_stored()?, rev, &[(marker, Vec::new())], &[])
            .await?
        {
            Outcome::Committed { .. } => Ok(()),
            // Changed meanwhile (or the marker appeared): the next start retries.
            Outcome::Failed { .. } => {
                tracing::warn!(namespace = ns.name(), "cannot mark terminating namespace");
                Ok(())
            }
        }
    }

    /// Creates a namespace unless it exists.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match self
            .create(kind("Namespace")?, body.to_string().as_bytes(), false)
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn check_namespace_open(&self, ns: &str) -> Result<(), ApiError> {
        let obj = self.get(kind("Namespace")?, "", ns).await?;
        if obj.metadata.deletion_timestamp.is_some() {
            return Err(namespace_terminating(ns));
        }
        Ok(())
    }

    /// Binds a pod to a node (the pods/binding subresource).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn bind(&self, ns: &str, name: &str, node: &str) -> Result<ApiObject, ApiError> {
        let pods = kind("Pod")?;
        let key = pods.key(request_namespace(pods, ns).as_deref(), name);
        if node.is_empty() {
            return Err(ApiError::BadRequest("target.name: Required value".into()));
        }
        for _ in 0..MAX_ATTEMPTS {
            let cur = self
                .storage
                .get(&key)
                .await?
                .ok_or_else(|| ApiError::not_found("pods", name))?;
            let obj = ApiObject::from_stored(&cur.value, cur.mod_revision)?;
            if obj.metadata.deletion_timestamp.is_some() {
                return Err(ApiError::Conflict(format!(
                    "pod {name} is being deleted, cannot be assigned to a host"
                )));
            }
            let mut pod: Pod = obj.to_typed()?;
            let spec = pod.spec.get_or_insert_with(Default::default);
            match spec.node_name.as_deref() {
                Some(n) if n == node => return Ok(obj),
                Some(n) if !n.is_empty() => {
                    return Err(ApiError::Conflict(format!(
                        "pod {name} is already assigned to node {n:?}"
                    )));
                }
                _ => {}
            }
            spec.node_name = Some(node.to_string());
            let status = pod.status.get_or_insert_with(Default::default);
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "PodScheduled");
            conditions.push(PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(now()),
                ..Default::default()
            });
            let mut bound = ApiObject::from_typed(&pod)?;
            match self
                .storage
                .update(&key, bound.to_stored()?, cur.mod_revision, &[], &[])
                .await?
            {
                Outcome::Committed { revision } => {
                    bound.metadata.resource_version = Some(revision.to_string());
                    return Ok(bound);
                }
                Outcome::Failed { current: None } => return Err(ApiError::not_found("pods", name)),
                Outcome::Failed { .. } => continue,
            }
        }
        Err(ApiError::modified("pods", name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_v4_uuids() {
        let u = new_uid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid().unwrap());
    }

    #[test]
    fn continue_tokens_round_trip_and_stay_in_prefix() {
        let t = encode_continue(42, "/registry/pods/default/b\0");
        assert_eq!(
            decode_continue(&t, "/registry/pods/").unwrap(),
            (42, "/registry/pods/default/b\0".to_string())
        );
        assert!(decode_continue(&t, "/registry/secrets/").is_err());
        assert!(decode_continue("garbage", "/registry/pods/").is_err());
    }
}
