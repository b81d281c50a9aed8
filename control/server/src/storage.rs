//! The only module that talks to etcd.
//!
//! Keys and values are opaque here: the registry decides what an object is.
//! Every write is one etcd transaction whose compare clauses carry the
//! optimistic-concurrency rule (create: the key has never been created;
//! update/delete: the key's mod_revision is the one the caller read) and the
//! allocation claims stored next to the object (create_revision == 0 on each
//! claimed key), so an object and its cluster IP / node ports / pod CIDR are
//! written or removed together or not at all. A create may also carry
//! guards on other keys (present / absent), checked in the same transaction
//! instead of by a read before it.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures::{Stream, StreamExt};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The requested revision was compacted away.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("etcd watch ended: {0}")]
    WatchEnded(String),
    #[error("etcd key is not UTF-8")]
    BadKey,
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// Moves a key/value out of an etcd response without copying the value
/// (a page of a list holds megabytes of them).
fn into_kv(kv: etcd_client::KeyValue) -> Result<Kv, StorageError> {
    let (mod_revision, create_revision) = (kv.mod_revision(), kv.create_revision());
    let (key, value) = kv.into_key_value();
    Ok(Kv {
        key: String::from_utf8(key).map_err(|_| StorageError::BadKey)?,
        value,
        mod_revision,
        create_revision,
    })
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<Kv, StorageError> {
    Ok(Kv {
        key: kv.key_str().map_err(|_| StorageError::BadKey)?.to_string(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
    })
}

/// Result of a conditional write.
#[derive(Debug)]
pub enum Outcome {
    /// Written; the store's revision after the write (= the object's new mod_revision).
    Committed { revision: i64 },
    /// A compare failed; `current` is the object key's state at that moment.
    /// If it exists and matches the expectation, a claim was taken by someone else.
    Failed { current: Option<Kv> },
}

/// A condition on another key that a create requires (checked in the
/// create's transaction, so no read precedes the write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard<'a> {
    /// The key exists.
    Present(&'a str),
    /// The key does not exist.
    Absent(&'a str),
}

/// Result of a guarded create.
#[derive(Debug)]
pub enum CreateOutcome {
    Committed {
        revision: i64,
    },
    /// The object's key exists.
    Exists,
    /// The guard at this index did not hold.
    GuardFailed(usize),
    /// A claim key was taken concurrently.
    ClaimTaken,
}

/// One page of a range read.
#[derive(Debug)]
pub struct Page {
    pub kvs: Vec<Kv>,
    /// The store revision the page was read at.
    pub revision: i64,
    pub more: bool,
}

/// What a storage watch yields.
#[derive(Debug)]
pub enum WatchItem {
    /// Changes of one revision (one transaction).
    Changes(Vec<Change>),
    /// Every change up to this revision has been delivered.
    Progress(i64),
}

/// A change to one key, as seen by a watch.
#[derive(Debug, Clone)]
pub enum Change {
    Put {
        kv: Kv,
        prev: Option<Kv>,
    },
    Delete {
        key: String,
        revision: i64,
        prev: Option<Kv>,
    },
}

impl Change {
    /// The revision of the transaction that made this change.
    pub fn revision(&self) -> i64 {
        match self {
            Change::Put { kv, .. } => kv.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }

    /// The changed key.
    pub fn key(&self) -> &str {
        match self {
            Change::Put { kv, .. } => &kv.key,
            Change::Delete { key, .. } => key,
        }
    }
}

/// The etcd-backed store. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    client: etcd_client::Client,
    /// KV client for range reads, with a decoding limit above tonic's 4 MiB
    /// default (a page of large objects exceeds it).
    ranges: etcd_client::KvClient,
}

/// The largest etcd range response accepted.
const MAX_RANGE_RESPONSE: usize = 512 << 20;

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Storage {
    /// Connects to etcd and checks that it answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StorageError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut client = etcd_client::Client::connect(endpoints, Some(opts)).await?;
        client.status().await?;
        let ranges = client
            .kv_client()
            .max_decoding_message_size(MAX_RANGE_RESPONSE);
        Ok(Self { client, ranges })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        let resp = self.client.clone().get(key, None).await?;
        resp.kvs().first().map(to_kv).transpose()
    }

    /// Reads keys under `prefix` in key order, starting at `start` (inclusive;
    /// default: the prefix), at `revision` (0: latest), at most `limit` keys (0: all).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> Result<Page, StorageError> {
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let mut resp = self
            .ranges
            .clone()
            .get(start.unwrap_or(prefix), Some(opts))
            .await
            .map_err(|e| compacted(e, revision))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let more = resp.more();
        let kvs = resp
            .take_kvs()
            .into_iter()
            .map(into_kv)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            kvs,
            revision,
            more,
        })
    }

    /// The keys under `prefix` (no values), for deriving allocation sets.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let resp = self.client.clone().get(prefix, Some(opts)).await?;
        resp.kvs()
            .iter()
            .map(|kv| {
                kv.key_str()
                    .map(str::to_string)
                    .map_err(|_| StorageError::BadKey)
            })
            .collect()
    }

    /// Creates `key` and every claim key if none of them exists and every
    /// guard holds: one transaction, no read before it. On failure the
    /// transaction's else branch reads why (the key, then each guard's key);
    /// a failed guard is reported before an existing key.
    pub async fn create_guarded(
        &self,
        key: &str,
        value: Vec<u8>,
        claims: &[(String, Vec<u8>)],
        guards: &[Guard<'_>],
        lease: Option<i64>,
    ) -> Result<CreateOutcome, StorageError> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        let mut ops = vec![put(key, value, lease)];
        add_claims(&mut when, &mut ops, claims);
        let mut reads = vec![TxnOp::get(key, Some(GetOptions::new().with_keys_only()))];
        for g in guards {
            let (k, op) = match *g {
                Guard::Present(k) => (k, CompareOp::Greater),
                Guard::Absent(k) => (k, CompareOp::Equal),
            };
            when.push(Compare::create_revision(k, op, 0));
            reads.push(TxnOp::get(k, Some(GetOptions::new().with_keys_only())));
        }
        let txn = Txn::new().when(when).and_then(ops).or_else(reads);
        let resp = self.client.clone().txn(txn).await?;
        if resp.succeeded() {
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            return Ok(CreateOutcome::Committed { revision });
        }
        let exists = |r: Option<&TxnOpResponse>| -> Result<Option<Kv>, StorageError> {
            match r {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().map(to_kv).transpose(),
                _ => Ok(None),
            }
        };
        // Guards first: they stand for admission checks that come before
        // "already exists" (a create in a missing namespace is NotFound).
        let responses = resp.op_responses();
        for (i, g) in guards.iter().enumerate() {
            let present = exists(responses.get(i + 1))?.is_some();
            if present != matches!(g, Guard::Present(_)) {
                return Ok(CreateOutcome::GuardFailed(i));
            }
        }
        match exists(responses.first())? {
            Some(_) => Ok(CreateOutcome::Exists),
            None => Ok(CreateOutcome::ClaimTaken),
        }
    }

    /// Replaces `key` if its mod_revision is still `expected`; takes the new
    /// claims and releases the old ones in the same transaction.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        claims: &[(String, Vec<u8>)],
        releases: &[String],
    ) -> Result<Outcome, StorageError> {
        self.update_leased(key, value, expected, claims, releases, None)
            .await
    }

    /// `update`, with `key` attached to `lease` (a put without a lease
    /// detaches the key from any lease it had).
    pub async fn update_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        claims: &[(String, Vec<u8>)],
        releases: &[String],
        lease: Option<i64>,
    ) -> Result<Outcome, StorageError> {
        let mut when = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        let mut ops = vec![put(key, value, lease)];
        add_claims(&mut when, &mut ops, claims);
        ops.extend(releases.iter().map(|r| TxnOp::delete(r.as_str(), None)));
        self.txn(key, when, ops).await
    }

    /// Removes `key` if its mod_revision is still `expected`, with its claims.
    pub async fn delete(
        &self,
        key: &str,
        expected: i64,
        releases: &[String],
    ) -> Result<Outcome, StorageError> {
        let when = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        let mut ops = vec![TxnOp::delete(key, None)];
        ops.extend(releases.iter().map(|r| TxnOp::delete(r.as_str(), None)));
        self.txn(key, when, ops).await
    }

    /// Grants an etcd lease of `ttl_seconds`; keys attached to it are
    /// deleted by etcd when it expires (it is never kept alive).
    pub async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64, StorageError> {
        let resp = self.client.clone().lease_grant(ttl_seconds, None).await?;
        Ok(resp.id())
    }

    async fn txn(
        &self,
        key: &str,
        when: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<Outcome, StorageError> {
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else(vec![TxnOp::get(key, None)]);
        let resp = self.client.clone().txn(txn).await?;
        if resp.succeeded() {
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            return Ok(Outcome::Committed { revision });
        }
        let current = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(to_kv).transpose()?,
            _ => None,
        };
        Ok(Outcome::Failed { current })
    }

    /// Watches keys under `prefix` from `start_revision` (inclusive), with the
    /// previous value of every changed key (so deletions carry the last state).
    /// With `progress_every`, etcd is asked that often to confirm how far the
    /// watch has caught up, which yields `WatchItem::Progress` (bookmarks).
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
        progress_every: Option<Duration>,
    ) -> Result<impl Stream<Item = Result<WatchItem, StorageError>> + Send + use<>, StorageError>
    {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start_revision);
        let stream = self.client.clone().watch(prefix, Some(opts)).await?;
        // A period nobody waits for when progress is off.
        let period = progress_every.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(
            futures::stream::unfold(Some((stream, ticker)), move |state| async move {
                let (mut stream, mut ticker) = state?;
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = ticker.tick() => {
                            if let Err(e) = stream.request_progress().await {
                                return Some((Err(StorageError::Etcd(e)), None));
                            }
                            continue;
                        }
                    };
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            return Some((
                                Err(StorageError::WatchEnded("stream closed".into())),
                                None,
                            ));
                        }
                        Err(e) => return Some((Err(StorageError::Etcd(e)), None)),
                    };
                    if resp.canceled() {
                        let err = if resp.compact_revision() > 0 {
                            StorageError::Compacted {
                                requested: start_revision,
                                compacted: resp.compact_revision(),
                            }
                        } else {
                            StorageError::WatchEnded(resp.cancel_reason().to_string())
                        };
                        return Some((Err(err), None));
                    }
                    if resp.created() {
                        continue;
                    }
                    if resp.events().is_empty() {
                        // A progress notification: everything up to this revision was sent.
                        match resp.header().map(|h| h.revision()) {
                            Some(rev) if rev > 0 => {
                                return Some((
                                    Ok(WatchItem::Progress(rev)),
                                    Some((stream, ticker)),
                                ));
                            }
                            _ => continue,
                        }
                    }
                    let changes = resp
                        .events()
                        .iter()
                        .map(to_change)
                        .collect::<Result<Vec<_>, _>>();
                    return Some((changes.map(WatchItem::Changes), Some((stream, ticker))));
                }
            })
            .boxed(),
        )
    }

    /// Compacts history older than `revision` (keeps etcd's size bounded).
    pub async fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.client.clone().compact(revision, None).await?;
        Ok(())
    }

    /// The current store revision.
    pub async fn revision(&self) -> Result<i64, StorageError> {
        let resp = self
            .client
            .clone()
            .get("/registry/", Some(GetOptions::new().with_count_only()))
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }
}

fn put(key: &str, value: Vec<u8>, lease: Option<i64>) -> TxnOp {
    TxnOp::put(key, value, lease.map(|id| PutOptions::new().with_lease(id)))
}

fn add_claims(when: &mut Vec<Compare>, ops: &mut Vec<TxnOp>, claims: &[(String, Vec<u8>)]) {
    for (k, v) in claims {
        when.push(Compare::create_revision(k.as_str(), CompareOp::Equal, 0));
        ops.push(TxnOp::put(k.as_str(), v.clone(), None));
    }
}

fn to_change(ev: &etcd_client::Event) -> Result<Change, StorageError> {
    let prev = ev.prev_kv().map(to_kv).transpose()?;
    let kv = ev
        .kv()
        .ok_or_else(|| StorageError::WatchEnded("event without key".into()))?;
    Ok(match ev.event_type() {
        etcd_client::EventType::Put => Change::Put {
            kv: to_kv(kv)?,
            prev,
        },
        etcd_client::EventType::Delete => Change::Delete {
            key: kv.key_str().map_err(|_| StorageError::BadKey)?.to_string(),
            revision: kv.mod_revision(),
            prev,
        },
    })
}

/// A range read at a compacted revision fails with gRPC OUT_OF_RANGE.
fn compacted(e: etcd_client::Error, requested: i64) -> StorageError {
    match &e {
        // Only etcd's "required revision has been compacted": tonic also
        // uses OUT_OF_RANGE for a response over the decoding limit.
        etcd_client::Error::GRpcStatus(s)
            if s.code() == tonic::Code::OutOfRange && s.message().contains("compacted") =>
        {
            StorageError::Compacted {
                requested,
                compacted: 0,
            }
        }
        _ => StorageError::Etcd(e),
    }
}

/// Compacts etcd every `interval` to the revision seen one interval earlier,
/// like kube-apiserver: watchers have a full interval to catch up.
pub async fn run_compactor(storage: Storage, interval: Duration) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(interval).await;
        if let Some(rev) = previous
            && let Err(error) = storage.compact(rev).await
        {
            tracing::warn!(%error, revision = rev, "etcd compaction failed");
        }
        match storage.revision().await {
            Ok(rev) => previous = Some(rev),
            Err(error) => tracing::warn!(%error, "cannot read etcd revision"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway etcd through the real supervisor; stopped on drop of the guard.
    async fn etcd() -> (
        Storage,
        crate::etcd_supervisor::Supervisor,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = loop {
            let p = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
                .port();
            if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        let cfg = crate::etcd_supervisor::EtcdConfig {
            binary: "/usr/bin/etcd".into(),
            data_dir: dir.path().join("etcd"),
            log_file: dir.path().join("etcd.log"),
            client_port: port,
            peer_port: port + 1,
        };
        let url = cfg.client_url();
        let sup = crate::etcd_supervisor::Supervisor::spawn(cfg);
        for _ in 0..300 {
            if let Ok(s) = Storage::connect(std::slice::from_ref(&url)).await {
                return (s, sup, dir);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd did not start");
    }

    #[tokio::test]
    #[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
    async fn txn_rules_claims_and_progress() {
        let (s, sup, _dir) = etcd().await;
        let claim = vec![("/registry/ranges/x/1".to_string(), b"o".to_vec())];
        let CreateOutcome::Committed { revision } = s
            .create_guarded("/registry/a/k", b"v1".to_vec(), &claim, &[], None)
            .await
            .unwrap()
        else {
            panic!("create")
        };
        // Same key: fails with the current value; another key with the same claim: fails without.
        assert!(matches!(
            s.create_guarded("/registry/a/k", b"v".to_vec(), &[], &[], None)
                .await
                .unwrap(),
            CreateOutcome::Exists
        ));
        assert!(matches!(
            s.create_guarded("/registry/a/j", b"v".to_vec(), &claim, &[], None)
                .await
                .unwrap(),
            CreateOutcome::ClaimTaken
        ));
        // Guards: a missing required key, then a present forbidden one, then both fine.
        let (ns, mark) = ("/registry/ns/x", "/registry/mark/x");
        assert!(matches!(
            s.create_guarded(
                "/registry/a/g",
                b"v".to_vec(),
                &[],
                &[Guard::Present(ns), Guard::Absent(mark)],
                None
            )
            .await
            .unwrap(),
            CreateOutcome::GuardFailed(0)
        ));
        for k in [ns, mark] {
            s.create_guarded(k, b"x".to_vec(), &[], &[], None)
                .await
                .unwrap();
        }
        assert!(matches!(
            s.create_guarded(
                "/registry/a/g",
                b"v".to_vec(),
                &[],
                &[Guard::Present(ns), Guard::Absent(mark)],
                None
            )
            .await
            .unwrap(),
            CreateOutcome::GuardFailed(1)
        ));
        assert!(matches!(
            s.create_guarded(
                "/registry/a/k",
                b"v".to_vec(),
                &[],
                &[Guard::Present(ns)],
                None
            )
            .await
            .unwrap(),
            CreateOutcome::Exists
        ));
        assert!(matches!(
            s.create_guarded(
                "/registry/a/g",
                b"v".to_vec(),
                &claim,
                &[Guard::Present(ns)],
                None
            )
            .await
            .unwrap(),
            CreateOutcome::ClaimTaken
        ));
        assert!(matches!(
            s.create_guarded(
                "/registry/a/g",
                b"v".to_vec(),
                &[],
                &[Guard::Present(ns)],
                None
            )
            .await
            .unwrap(),
            CreateOutcome::Committed { .. }
        ));
        assert!(matches!(
            s.update("/registry/a/k", b"v2".to_vec(), revision - 1, &[], &[])
                .await
                .unwrap(),
            Outcome::Failed { .. }
        ));
        let Outcome::Committed { revision: r2 } = s
            .update(
                "/registry/a/k",
                b"v2".to_vec(),
                revision,
                &[],
                &["/registry/ranges/x/1".into()],
            )
            .await
            .unwrap()
        else {
            panic!("update")
        };
        assert_eq!(
            s.keys("/registry/ranges/x/").await.unwrap(),
            Vec::<String>::new(),
            "claim released"
        );

        let mut w = std::pin::pin!(
            s.watch("/registry/a/", r2, Some(Duration::from_millis(200)))
                .await
                .unwrap()
        );
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("in time")
            .expect("item")
            .unwrap()
        {
            WatchItem::Changes(c) => assert!(
                matches!(&c[0], Change::Put { kv, prev: Some(p) } if kv.value == b"v2" && p.value == b"v1")
            ),
            other => panic!("expected the update first, got {other:?}"),
        }
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("in time")
            .expect("item")
            .unwrap()
        {
            WatchItem::Progress(rev) => assert!(rev >= r2),
            other => panic!("expected progress, got {other:?}"),
        }
        sup.shutdown().await;
    }

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
