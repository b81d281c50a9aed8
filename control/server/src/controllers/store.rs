//! The in-memory copy of one kind, fed by a reflector. `apply_event` and
//! `replace` do no I/O: they only turn watch events into changes that the
//! event handlers map to work-queue keys.

use std::collections::BTreeMap;

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
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
        }
    }
}

impl<K: Metadata<Ty = ObjectMeta> + Clone> Store<K> {
    /// Applies one watch event; bookmarks change nothing.
    pub fn apply_event(&mut self, ev: WatchEvent<K>) -> Option<Change<K>> {
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let old = self.objects.insert(ObjKey::of(&o), o.clone());
                Some(Change { old, new: Some(o) })
            }
            WatchEvent::Deleted(o) => {
                let old = self.objects.remove(&ObjKey::of(&o)).unwrap_or(o);
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
        for (k, old) in std::mem::take(&mut self.objects) {
            match fresh.remove(&k) {
                Some(new) => {
                    let same = old.metadata().resource_version == new.metadata().resource_version;
                    self.objects.insert(k, new.clone());
                    if !same {
                        changes.push(Change {
                            old: Some(old),
                            new: Some(new),
                        });
                    }
                }
                None => changes.push(Change {
                    old: Some(old),
                    new: None,
                }),
            }
        }
        for (k, new) in fresh {
            self.objects.insert(k, new.clone());
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

    /// The object with this uid, if any (owner lookups).
    pub fn by_uid(&self, namespace: &str, uid: &str) -> Option<&K> {
        self.in_namespace(namespace)
            .find(|o| o.metadata().uid.as_deref() == Some(uid))
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
