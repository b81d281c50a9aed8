//! The in-memory copy of one kind, fed by a reflector. `apply_event` and
//! `replace` do no I/O: they only turn watch events into changes that the
//! event handlers map to work-queue keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_client::WatchEvent;

/// Identifies one object of a kind: (namespace, name). Cluster-scoped kinds use "".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object, from its metadata.
    pub fn of<K: Metadata<Ty = ObjectMeta>>(obj: &K) -> Self {
        let m = obj.metadata();
        Self::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What one event did to the store: the object before and after.
/// (None, Some) = added, (Some, Some) = modified, (Some, None) = deleted.
#[derive(Debug, Clone)]
pub struct Change<K> {
    pub old: Option<K>,
    pub new: Option<K>,
}

impl<K: Metadata<Ty = ObjectMeta>> Change<K> {
    /// The most recent state known (the new one, or the last one if deleted).
    pub fn latest(&self) -> Option<&K> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

/// All objects of one kind, keyed by namespace/name.
#[derive(Debug)]
pub struct Store<K> {
    objects: BTreeMap<ObjKey, K>,
    /// Owner uid -> objects naming it in ownerReferences: the garbage
    /// collector and the controllers find dependents without scanning.
    by_owner: HashMap<String, BTreeSet<ObjKey>>,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            by_owner: HashMap::new(),
        }
    }
}

fn owner_uids<K: Metadata<Ty = ObjectMeta>>(o: &K) -> impl Iterator<Item = &str> {
    o.metadata()
        .owner_references
        .iter()
        .flatten()
        .map(|r| r.uid.as_str())
}

impl<K: Metadata<Ty = ObjectMeta> + Clone> Store<K> {
    /// Inserts or replaces one object, keeping the owner index right.
    fn put(&mut self, key: ObjKey, o: K) -> Option<K> {
        for uid in owner_uids(&o) {
            self.by_owner
                .entry(uid.to_string())
                .or_default()
                .insert(key.clone());
        }
        let old = self.objects.insert(key.clone(), o);
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        old
    }

    fn take(&mut self, key: &ObjKey) -> Option<K> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    /// Drops index entries of `old` that the stored object (if any) no longer has.
    fn unindex(&mut self, key: &ObjKey, old: &K) {
        let current: BTreeSet<String> = self
            .objects
            .get(key)
            .map(|o| owner_uids(o).map(str::to_string).collect())
            .unwrap_or_default();
        for uid in owner_uids(old) {
            if current.contains(uid) {
                continue;
            }
            if let Some(set) = self.by_owner.get_mut(uid) {
                set.remove(key);
                if set.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
    }

    /// Applies one watch event; bookmarks change nothing.
    pub fn apply_event(&mut self, ev: WatchEvent<K>) -> Option<Change<K>> {
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let old = self.put(ObjKey::of(&o), o.clone());
                Some(Change { old, new: Some(o) })
            }
            WatchEvent::Deleted(o) => {
                let old = self.take(&ObjKey::of(&o)).unwrap_or(o);
                Some(Change {
                    old: Some(old),
                    new: None,
                })
            }
            WatchEvent::Bookmark(_) => None,
        }
    }

    /// Replaces the whole content with a fresh list (after a re-list) and
    /// returns the changes, including deletions that happened while the watch
    /// was down (which no event reported).
    pub fn replace(&mut self, items: Vec<K>) -> Vec<Change<K>> {
        let mut fresh: BTreeMap<ObjKey, K> =
            items.into_iter().map(|o| (ObjKey::of(&o), o)).collect();
        let mut changes = Vec::new();
        let keys: Vec<ObjKey> = self.objects.keys().cloned().collect();
        for k in keys {
            match fresh.remove(&k) {
                Some(new) => {
                    let same = self
                        .objects
                        .get(&k)
                        .map(|o| o.metadata().resource_version.clone())
                        == Some(new.metadata().resource_version.clone());
                    let old = self.put(k, new.clone());
                    if !same {
                        changes.push(Change {
                            old,
                            new: Some(new),
                        });
                    }
                }
                None => {
                    let old = self.take(&k);
                    changes.push(Change { old, new: None });
                }
            }
        }
        for (k, new) in fresh {
            self.put(k, new.clone());
            changes.push(Change {
                old: None,
                new: Some(new),
            });
        }
        changes
    }

    pub fn get(&self, key: &ObjKey) -> Option<&K> {
        self.objects.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.objects.values()
    }

    /// Objects of one namespace.
    pub fn in_namespace(&self, ns: &str) -> impl Iterator<Item = &K> + '_ {
        let start = ObjKey::new(ns, "");
        let ns = ns.to_string();
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.namespace == ns)
            .map(|(_, v)| v)
    }

    /// Objects naming `uid` among their owners.
    pub fn owned_by<'a>(&'a self, uid: &str) -> impl Iterator<Item = &'a K> + 'a {
        self.by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.objects.get(k))
    }

    /// The uid of the object with this key, if it is stored.
    pub fn uid_of(&self, key: &ObjKey) -> Option<&str> {
        self.objects
            .get(key)
            .and_then(|o| o.metadata().uid.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(ns: &str, name: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn events_add_modify_delete() {
        let mut s = Store::default();
        let c = s
            .apply_event(WatchEvent::Added(pod("a", "p", "1")))
            .expect("change");
        assert!(c.old.is_none() && c.new.is_some());
        let c = s
            .apply_event(WatchEvent::Modified(pod("a", "p", "2")))
            .expect("change");
        assert_eq!(
            c.old.and_then(|p| p.metadata.resource_version).as_deref(),
            Some("1")
        );
        assert!(s.apply_event(WatchEvent::Bookmark("3".into())).is_none());
        let c = s
            .apply_event(WatchEvent::Deleted(pod("a", "p", "3")))
            .expect("change");
        assert!(c.new.is_none());
        assert_eq!(s.iter().count(), 0);
    }

    fn owned(name: &str, rv: &str, owners: &[&str]) -> Pod {
        let mut p = pod("a", name, rv);
        p.metadata.owner_references = Some(
            owners
                .iter()
                .map(
                    |u| k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        uid: u.to_string(),
                        ..Default::default()
                    },
                )
                .collect(),
        );
        p
    }

    fn names<'a>(it: impl Iterator<Item = &'a Pod>) -> Vec<String> {
        let mut v: Vec<String> = it.filter_map(|p| p.metadata.name.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn owner_index_follows_changes() {
        let mut s = Store::default();
        s.apply_event(WatchEvent::Added(owned("p1", "1", &["u1"])));
        s.apply_event(WatchEvent::Added(owned("p2", "1", &["u1", "u2"])));
        assert_eq!(names(s.owned_by("u1")), vec!["p1", "p2"]);
        // p2 drops owner u1 (orphaned), keeps u2.
        s.apply_event(WatchEvent::Modified(owned("p2", "2", &["u2"])));
        assert_eq!(names(s.owned_by("u1")), vec!["p1"]);
        assert_eq!(names(s.owned_by("u2")), vec!["p2"]);
        s.apply_event(WatchEvent::Deleted(owned("p1", "3", &["u1"])));
        assert!(names(s.owned_by("u1")).is_empty());
        // A re-list that no longer has p2 clears its entries too.
        s.replace(vec![owned("p3", "5", &["u3"])]);
        assert!(names(s.owned_by("u2")).is_empty());
        assert_eq!(names(s.owned_by("u3")), vec!["p3"]);
        assert_eq!(
            s.uid_of(&ObjKey::new("a", "p3")),
            None,
            "test pods have no uid"
        );
    }

    #[test]
    fn replace_reports_missed_deletions_and_changes() {
        let mut s = Store::default();
        s.replace(vec![
            pod("a", "keep", "1"),
            pod("a", "gone", "1"),
            pod("a", "mod", "1"),
        ]);
        let changes = s.replace(vec![
            pod("a", "keep", "1"),
            pod("a", "mod", "2"),
            pod("a", "new", "5"),
        ]);
        let summary: Vec<(Option<String>, bool, bool)> = changes
            .iter()
            .map(|c| {
                (
                    c.latest().and_then(|p| p.metadata.name.clone()),
                    c.old.is_some(),
                    c.new.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("gone".into()), true, false),
                (Some("mod".into()), true, true),
                (Some("new".into()), false, true),
            ]
        );
        assert_eq!(s.in_namespace("a").count(), 3);
        assert_eq!(s.in_namespace("b").count(), 0);
    }
}
