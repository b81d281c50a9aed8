//! The only module that talks to etcd.
//!
//! Keys and values are opaque here: the registry decides what an object is.
//! Every write is one etcd transaction whose compare clauses carry the
//! optimistic-concurrency rule (create: the key has never been created;
//! update/delete: the key's mod_revision is the one the caller read) and the
//! allocation claims stored next to the object (create_revision == 0 on each
//! claimed key), so an object and its cluster IP / node ports / pod CIDR are
//! written or removed together or not at all.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
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

/// One page of a range read.
#[derive(Debug)]
pub struct Page {
    pub kvs: Vec<Kv>,
    /// The store revision the page was read at.
    pub revision: i64,
    pub more: bool,
}

/// A change to one key, as seen by a watch.
#[derive(Debug)]
pub enum Change {
    Put { kv: Kv, prev: Option<Kv> },
    Delete { key: String, revision: i64, prev: Option<Kv> },
}

/// The etcd-backed store. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    client: etcd_client::Client,
}

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
        Ok(Self { client })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        let resp = self.client.clone().get(key, None).await?;
        resp.kvs().first().map(to_kv).transpose()
    }

    /// Reads keys under `prefix` in key order, starting at `start` (inclusive;
    /// default: the prefix), at `revision` (0: latest), at most `limit` keys (0: all).
    pub async fn list(&self, prefix: &str, start: Option<&str>, revision: i64, limit: i64) -> Result<Page, StorageError> {
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let resp = self.client.clone().get(start.unwrap_or(prefix), Some(opts)).await.map_err(|e| compacted(e, revision))?;
        let kvs = resp.kvs().iter().map(to_kv).collect::<Result<Vec<_>, _>>()?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok(Page { kvs, revision, more: resp.more() })
    }

    /// The keys under `prefix` (no values), for deriving allocation sets.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let resp = self.client.clone().get(prefix, Some(opts)).await?;
        resp.kvs().iter().map(|kv| kv.key_str().map(str::to_string).map_err(|_| StorageError::BadKey)).collect()
    }

    /// Creates `key` and every claim key; fails if any of them exists.
    pub async fn create(&self, key: &str, value: Vec<u8>, claims: &[(String, Vec<u8>)]) -> Result<Outcome, StorageError> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        let mut ops = vec![TxnOp::put(key, value, None)];
        add_claims(&mut when, &mut ops, claims);
        self.txn(key, when, ops).await
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
        let mut when = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        let mut ops = vec![TxnOp::put(key, value, None)];
        add_claims(&mut when, &mut ops, claims);
        ops.extend(releases.iter().map(|r| TxnOp::delete(r.as_str(), None)));
        self.txn(key, when, ops).await
    }

    /// Removes `key` if its mod_revision is still `expected`, with its claims.
    pub async fn delete(&self, key: &str, expected: i64, releases: &[String]) -> Result<Outcome, StorageError> {
        let when = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        let mut ops = vec![TxnOp::delete(key, None)];
        ops.extend(releases.iter().map(|r| TxnOp::delete(r.as_str(), None)));
        self.txn(key, when, ops).await
    }

    async fn txn(&self, key: &str, when: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Outcome, StorageError> {
        let txn = Txn::new().when(when).and_then(ops).or_else(vec![TxnOp::get(key, None)]);
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
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<impl Stream<Item = Result<Vec<Change>, StorageError>> + Send + use<>, StorageError> {
        let opts = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(start_revision);
        let stream = self.client.clone().watch(prefix, Some(opts)).await?;
        Ok(futures::stream::unfold(Some(stream), move |state| async move {
            let mut stream = state?;
            loop {
                let resp = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Some((Err(StorageError::WatchEnded("stream closed".into())), None)),
                    Err(e) => return Some((Err(StorageError::Etcd(e)), None)),
                };
                if resp.canceled() {
                    let err = if resp.compact_revision() > 0 {
                        StorageError::Compacted { requested: start_revision, compacted: resp.compact_revision() }
                    } else {
                        StorageError::WatchEnded(resp.cancel_reason().to_string())
                    };
                    return Some((Err(err), None));
                }
                if resp.events().is_empty() {
                    continue;
                }
                let changes = resp.events().iter().map(to_change).collect::<Result<Vec<_>, _>>();
                return Some((changes, Some(stream)));
            }
        })
        .boxed())
    }

    /// Compacts history older than `revision` (keeps etcd's size bounded).
    pub async fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.client.clone().compact(revision, None).await?;
        Ok(())
    }

    /// The current store revision.
    pub async fn revision(&self) -> Result<i64, StorageError> {
        let resp = self.client.clone().get("/registry/", Some(GetOptions::new().with_count_only())).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }
}

fn add_claims(when: &mut Vec<Compare>, ops: &mut Vec<TxnOp>, claims: &[(String, Vec<u8>)]) {
    for (k, v) in claims {
        when.push(Compare::create_revision(k.as_str(), CompareOp::Equal, 0));
        ops.push(TxnOp::put(k.as_str(), v.clone(), None));
    }
}

fn to_change(ev: &etcd_client::Event) -> Result<Change, StorageError> {
    let prev = ev.prev_kv().map(to_kv).transpose()?;
    let kv = ev.kv().ok_or_else(|| StorageError::WatchEnded("event without key".into()))?;
    Ok(match ev.event_type() {
        etcd_client::EventType::Put => Change::Put { kv: to_kv(kv)?, prev },
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
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::OutOfRange => {
            StorageError::Compacted { requested, compacted: 0 }
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

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
