//! ControllerRevision history of DaemonSets and StatefulSets (Kubernetes'
//! `controller/history` package and the daemon controller's
//! `constructHistory`), pure: which revision stands for the owner's current
//! pod template, whether it must be created or re-numbered, and which old
//! revisions to prune.
//!
//! A revision is named `<owner>-<hash>`, is controlled by its owner, holds
//! the template as the patch Kubernetes stores (`{"spec":{"template":{...,
//! "$patch":"replace"}}}`, what `rollout undo` writes back) and carries the
//! hash in a label. Revision numbers increase: a new template gets the
//! highest number plus one; going back to a template an old revision already
//! holds re-uses that revision and moves it to the top (a rollback), instead
//! of storing the same template twice.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Value, json};

use super::deployment::template_hash;
use super::util::controller_ref;

/// What owns a history: the object and how its revisions are labelled.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// `DaemonSet` or `StatefulSet` (apps/v1).
    pub kind: &'static str,
    pub meta: &'a ObjectMeta,
    pub template: &'a PodTemplateSpec,
    pub collision_count: Option<i32>,
    /// `spec.revisionHistoryLimit` (unset: Kubernetes' 10).
    pub history_limit: Option<i32>,
    /// The label that carries a revision's hash: `controller-revision-hash`
    /// for DaemonSets, `controller.kubernetes.io/hash` for StatefulSets.
    pub hash_label: &'static str,
}

/// A change to the owner's revisions, in the order the executor makes them.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(Box<ControllerRevision>),
    /// An existing revision with a new `revision` number (a rollback to it).
    Renumber(Box<ControllerRevision>),
    /// Prune an old revision (by name) no live pod uses.
    Delete(String),
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The revision of the current template (`update`: its name, hash label
    /// and number) and the changes that make the history match.
    Ready {
        update: Box<ControllerRevision>,
        hash: String,
        changes: Vec<Change>,
    },
    /// A revision with the name the template hashes to holds another
    /// template: the owner's `status.collisionCount` must go up (which
    /// changes the hash) before anything else happens.
    Collision,
}

/// The `data` a revision stores for `template`.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), Value::from("replace"));
    }
    json!({ "spec": { "template": t } })
}

/// The pod template a revision holds (None when its data holds none).
pub fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// A revision's name: `<owner>-<hash>`.
pub fn revision_name(owner: &str, hash: &str) -> String {
    format!("{owner}-{hash}")
}

fn hash_of(cr: &ControllerRevision, label: &str) -> Option<String> {
    cr.metadata.labels.as_ref()?.get(label).cloned()
}

/// Revisions oldest first (by number, then name, so the order is total).
pub fn sorted(revisions: &[ControllerRevision]) -> Vec<&ControllerRevision> {
    let mut v: Vec<&ControllerRevision> = revisions.iter().collect();
    v.sort_by(|a, b| (a.revision, &a.metadata.name).cmp(&(b.revision, &b.metadata.name)));
    v
}

/// A new revision of `owner`'s template with number `revision`.
pub fn new_revision(owner: &Owner, hash: &str, revision: i64) -> ControllerRevision {
    let name = owner.meta.name.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = owner
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(owner.hash_label.into(), hash.into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&name, hash)),
            namespace: owner.meta.namespace.clone(),
            labels: Some(labels),
            // Kubernetes copies the owner's annotations, so a revision keeps
            // the `kubernetes.io/change-cause` of the change that made it.
            annotations: owner.meta.annotations.clone(),
            owner_references: Some(vec![controller_ref("apps/v1", owner.kind, owner.meta)]),
            ..Default::default()
        },
        data: Some(RawExtension(revision_data(owner.template))),
        revision,
    }
}

/// Decides the owner's history given the revisions it controls. `in_use`
/// says whether a revision is still needed (a live pod was made from it, or
/// it is a StatefulSet's current revision): those are never pruned. At most
/// `history_limit` other old revisions are kept, the newest ones.
pub fn plan(
    owner: &Owner,
    revisions: &[ControllerRevision],
    in_use: &dyn Fn(&ControllerRevision) -> bool,
) -> Plan {
    let ordered = sorted(revisions);
    // The newest revision that holds the template stands for it; older
    // duplicates are old revisions like any other.
    let matching = ordered
        .iter()
        .rev()
        .find(|r| template_of(r).as_ref() == Some(owner.template))
        .copied();
    let mut changes = Vec::new();
    let update = match matching {
        Some(m) => {
            let top_of_others = ordered
                .iter()
                .filter(|r| r.metadata.name != m.metadata.name)
                .map(|r| r.revision)
                .max()
                .unwrap_or(0);
            if m.revision <= top_of_others {
                let mut r = m.clone();
                r.revision = top_of_others + 1;
                changes.push(Change::Renumber(Box::new(r.clone())));
                r
            } else {
                m.clone()
            }
        }
        None => {
            let hash = template_hash(owner.template, owner.collision_count);
            let name = revision_name(owner.meta.name.as_deref().unwrap_or_default(), &hash);
            if ordered
                .iter()
                .any(|r| r.metadata.name.as_deref() == Some(name.as_str()))
            {
                return Plan::Collision;
            }
            let top = ordered.last().map_or(0, |r| r.revision);
            let r = new_revision(owner, &hash, top + 1);
            changes.push(Change::Create(Box::new(r.clone())));
            r
        }
    };
    let hash = hash_of(&update, owner.hash_label).unwrap_or_else(|| {
        // A revision without the label (made by hand): its name's suffix.
        let name = update.metadata.name.clone().unwrap_or_default();
        let owner_name = owner.meta.name.clone().unwrap_or_default();
        name.strip_prefix(&format!("{owner_name}-"))
            .unwrap_or(&name)
            .to_string()
    });
    let limit = usize::try_from(owner.history_limit.unwrap_or(10)).unwrap_or(0);
    let prunable: Vec<&ControllerRevision> = ordered
        .iter()
        .copied()
        .filter(|r| r.metadata.name != update.metadata.name && !in_use(r))
        .collect();
    let excess = prunable.len().saturating_sub(limit);
    for r in prunable.into_iter().take(excess) {
        changes.push(Change::Delete(r.metadata.name.clone().unwrap_or_default()));
    }
    Plan::Ready {
        update: Box::new(update),
        hash,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        super::super::util::testing::template(&[("app", "web")], image)
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("ds-uid".into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/change-cause".to_string(),
                "why".to_string(),
            )])),
            ..Default::default()
        }
    }

    fn owner<'a>(meta: &'a ObjectMeta, t: &'a PodTemplateSpec, limit: i32) -> Owner<'a> {
        Owner {
            kind: "DaemonSet",
            meta,
            template: t,
            collision_count: None,
            history_limit: Some(limit),
            hash_label: "controller-revision-hash",
        }
    }

    /// The revision `owner` would make of `image`, numbered `n`.
    fn rev(image: &str, n: i64) -> ControllerRevision {
        let m = meta();
        let t = template(image);
        let o = owner(&m, &t, 10);
        new_revision(&o, &template_hash(&t, None), n)
    }

    /// (update revision's image and number, changes as short strings)
    fn summary(p: &Plan) -> (String, Vec<String>) {
        let Plan::Ready {
            update, changes, ..
        } = p
        else {
            return ("collision".into(), vec![]);
        };
        let image = |r: &ControllerRevision| {
            template_of(r)
                .and_then(|t| t.spec)
                .and_then(|s| s.containers[0].image.clone())
                .unwrap_or_default()
        };
        let name_image = |name: &str| {
            ["v1", "v2", "v3", "v4", "v5"]
                .into_iter()
                .find(|i| rev(i, 0).metadata.name.as_deref() == Some(name))
                .unwrap_or("?")
                .to_string()
        };
        let changes = changes
            .iter()
            .map(|c| match c {
                Change::Create(r) => format!("create {} #{}", image(r), r.revision),
                Change::Renumber(r) => format!("renumber {} #{}", image(r), r.revision),
                Change::Delete(n) => format!("delete {}", name_image(n)),
            })
            .collect();
        (format!("{} #{}", image(update), update.revision), changes)
    }

    #[test]
    fn plan_table() {
        let none_used = |_: &ControllerRevision| false;
        let v1_used = |r: &ControllerRevision| r.metadata.name == rev("v1", 0).metadata.name;
        // (what, template image, history limit, existing, in use, expected)
        type Case<'a> = (
            &'a str,
            &'a str,
            i32,
            Vec<ControllerRevision>,
            &'a dyn Fn(&ControllerRevision) -> bool,
            (&'a str, Vec<&'a str>),
        );
        let cases: Vec<Case> = vec![
            (
                "first revision",
                "v1",
                10,
                vec![],
                &none_used,
                ("v1 #1", vec!["create v1 #1"]),
            ),
            (
                "unchanged template: nothing to do",
                "v1",
                10,
                vec![rev("v1", 1)],
                &none_used,
                ("v1 #1", vec![]),
            ),
            (
                "new template: next number",
                "v2",
                10,
                vec![rev("v1", 1)],
                &none_used,
                ("v2 #2", vec!["create v2 #2"]),
            ),
            (
                "rollback re-uses the old revision, renumbered",
                "v1",
                10,
                vec![rev("v1", 1), rev("v2", 2)],
                &none_used,
                ("v1 #3", vec!["renumber v1 #3"]),
            ),
            (
                "prune the oldest unused beyond the limit",
                "v4",
                1,
                vec![rev("v1", 1), rev("v2", 2), rev("v3", 3)],
                &none_used,
                ("v4 #4", vec!["create v4 #4", "delete v1", "delete v2"]),
            ),
            (
                "a revision live pods use is kept",
                "v4",
                1,
                vec![rev("v1", 1), rev("v2", 2), rev("v3", 3)],
                &v1_used,
                ("v4 #4", vec!["create v4 #4", "delete v2"]),
            ),
            (
                "limit 0 keeps only what is in use",
                "v3",
                0,
                vec![rev("v1", 1), rev("v2", 2), rev("v3", 3)],
                &v1_used,
                ("v3 #3", vec!["delete v2"]),
            ),
        ];
        for (what, image, limit, existing, in_use, (want_update, want_changes)) in cases {
            let m = meta();
            let t = template(image);
            let p = plan(&owner(&m, &t, limit), &existing, in_use);
            assert_eq!(
                summary(&p),
                (
                    want_update.to_string(),
                    want_changes.iter().map(|s| s.to_string()).collect()
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn same_name_other_template_is_a_collision() {
        let mut clash = rev("v1", 1);
        clash.data = Some(RawExtension(revision_data(&template("other"))));
        let m = meta();
        let t = template("v1");
        assert_eq!(
            plan(&owner(&m, &t, 10), &[clash.clone()], &|_| false),
            Plan::Collision
        );
        // A new collision count gives a new name.
        let mut o = owner(&m, &t, 10);
        o.collision_count = Some(1);
        let Plan::Ready { update, hash, .. } = plan(&o, &[clash], &|_| false) else {
            panic!("still colliding")
        };
        assert_eq!(hash, template_hash(&t, Some(1)));
        assert_eq!(update.metadata.name, Some(format!("web-{hash}")));
    }

    #[test]
    fn new_revision_is_owned_labelled_and_holds_a_replace_patch() {
        let r = rev("v1", 1);
        let hash = template_hash(&template("v1"), None);
        assert_eq!(r.metadata.name, Some(format!("web-{hash}")));
        let labels = r.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("controller-revision-hash"), Some(&hash));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            r.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/change-cause"))
                .map(String::as_str),
            Some("why")
        );
        let o = &r.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            ("DaemonSet", "ds-uid", Some(true))
        );
        let data = &r.data.as_ref().unwrap().0;
        assert_eq!(
            data.pointer("/spec/template/$patch"),
            Some(&json!("replace"))
        );
        assert_eq!(
            data.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("v1"))
        );
        assert_eq!(template_of(&r), Some(template("v1")));
    }
}
