//! `scale` and `rollout status|history|undo`: the verbs that act on a
//! workload's replicas and revisions (a Deployment's ReplicaSets, a
//! DaemonSet's or StatefulSet's ControllerRevisions).

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weir_api::ResourceKind;
use weir_client::Client;

use crate::args::{Cli, RolloutCmd};
use crate::{
    Failed, Res, list_namespace, lookup_kind, rollout, server_error, singular, split_kind_name,
    verbs,
};

/// Kinds whose size is `spec.replicas`.
pub(crate) const SCALABLE: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "ReplicationController",
];

/// Sets `spec.replicas` of an object (pure; the caller writes it back).
pub(crate) fn set_replicas(obj: &mut Value, replicas: i32) -> Result<(), String> {
    if replicas < 0 {
        return Err(format!(
            "The --replicas={replicas} must be greater than or equal to 0"
        ));
    }
    let spec = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| "the object has no spec".to_string())?;
    spec.insert("replicas".into(), Value::from(replicas));
    Ok(())
}

pub(crate) async fn scale_one(
    client: &Client,
    k: &ResourceKind,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Res<()> {
    // Written even when the count is already right, as kubectl scale does.
    verbs::modify(client, k, ns, name, |v| {
        set_replicas(v, replicas)?;
        Ok(true)
    })
    .await
    .map(|_| ())
}

pub(crate) async fn cmd_scale(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    replicas: i32,
) -> bool {
    let (kind, names) = split_kind_name(kind, names);
    let k = match lookup_kind(&kind) {
        Ok(k) => k,
        Err(Failed(m)) => {
            eprintln!("{m}");
            return false;
        }
    };
    if !SCALABLE.contains(&k.kind) {
        eprintln!(
            "error: no scaler has been implemented for {{{} {}}}",
            k.api_version, k.kind
        );
        return false;
    }
    if names.is_empty() {
        eprintln!("error: resource(s) were provided, but no name was specified");
        return false;
    }
    let ns = list_namespace(cli, k, false);
    let mut ok = true;
    for n in &names {
        match scale_one(client, k, &ns, n, replicas).await {
            Ok(()) => outln!("{}/{n} scaled", singular(k)),
            Err(Failed(m)) => {
                eprintln!("{m}");
                ok = false;
            }
        }
    }
    ok
}

/// The one object a `rollout` subcommand works on (`deployment/web` or
/// `deployment web`), of one of `kinds`; otherwise kubectl's "no `viewer`
/// has been implemented" error.
fn rollout_target(
    kind: &str,
    name: Option<&str>,
    kinds: &[&str],
    viewer: &str,
) -> Res<(&'static ResourceKind, String)> {
    let (k, names) = split_kind_name(
        kind,
        &name.map(str::to_string).into_iter().collect::<Vec<_>>(),
    );
    let rk = lookup_kind(&k)?;
    if !kinds.contains(&rk.kind) {
        return Err(Failed(format!(
            "error: no {viewer} has been implemented for {}",
            rk.kind
        )));
    }
    match names.as_slice() {
        [n] => Ok((rk, n.clone())),
        _ => Err(Failed(format!(
            "error: specify exactly one {}, e.g. {}/web",
            rk.kind.to_ascii_lowercase(),
            rk.kind.to_ascii_lowercase()
        ))),
    }
}

/// The kinds kubectl has status viewers, history viewers, rollbackers and
/// restarters for.
const ROLLOUT_KINDS: &[&str] = &["Deployment", "DaemonSet", "StatefulSet"];

/// The objects of type `K` in `ns` whose controller is the object `uid`.
async fn controlled_by<K>(
    client: &Client,
    ns: &str,
    uid: &str,
) -> Result<Vec<K>, weir_client::Error>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta> + DeserializeOwned,
{
    Ok(client
        .list::<K>(ns, &weir_client::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|o| {
            o.metadata()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect())
}

/// A workload's revisions: kubectl's history viewer and rollbacker, one
/// variant per kind where they differ. A Deployment's revisions are the
/// ReplicaSets it controls (numbered by their revision annotation), a
/// DaemonSet's or StatefulSet's the ControllerRevisions it controls.
enum History {
    ReplicaSets {
        owned: Vec<ReplicaSet>,
        /// The Deployment's revision and change-cause annotations.
        current: i64,
        cause: Option<String>,
    },
    ControllerRevisions(Vec<ControllerRevision>),
}

impl History {
    /// The object (as JSON) and its revisions.
    async fn load(
        client: &Client,
        rk: &ResourceKind,
        ns: &str,
        name: &str,
    ) -> Res<(Value, History)> {
        let obj = verbs::get_value(client, rk, ns, name).await?;
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let history = if rk.kind == "Deployment" {
            let owned = controlled_by::<ReplicaSet>(client, ns, uid)
                .await
                .map_err(|e| server_error(&e, rk, name))?;
            let annotation = |key: &str| {
                obj.pointer("/metadata/annotations")
                    .and_then(|a| a.get(key))
                    .and_then(Value::as_str)
            };
            History::ReplicaSets {
                owned,
                current: annotation(rollout::REVISION)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0),
                cause: annotation(rollout::CHANGE_CAUSE).map(str::to_string),
            }
        } else {
            let crk = lookup_kind("ControllerRevision")?;
            History::ControllerRevisions(
                controlled_by::<ControllerRevision>(client, ns, uid)
                    .await
                    .map_err(|e| server_error(&e, crk, ""))?,
            )
        };
        Ok((obj, history))
    }

    /// (revision, change-cause) rows, oldest first.
    fn rows(&self) -> Vec<(i64, String)> {
        match self {
            History::ReplicaSets {
                owned,
                current,
                cause,
            } => rollout::history(owned, (*current, cause.as_deref())),
            History::ControllerRevisions(revs) => rollout::revision_history(revs),
        }
    }

    /// The pod template of revision `n` (`rollout history --revision`).
    fn template(&self, n: i64) -> Result<PodTemplateSpec, String> {
        match self {
            History::ReplicaSets { owned, .. } => rollout::revision_template(owned, n),
            History::ControllerRevisions(revs) => rollout::revision_pod_template(
                revs.iter()
                    .find(|r| r.revision == n)
                    .ok_or("unable to find the specified revision")?,
            ),
        }
    }

    /// What `rollout undo --to-revision` (0: the previous revision) goes
    /// back to: the template, and the revision number a skipped rollback
    /// names.
    fn undo_target(&self, to_revision: i64) -> Result<(PodTemplateSpec, i64), String> {
        match self {
            History::ReplicaSets { owned, current, .. } => Ok((
                rollout::undo_template(owned, *current, to_revision)?,
                if to_revision > 0 {
                    to_revision
                } else {
                    *current
                },
            )),
            History::ControllerRevisions(revs) => {
                let r = rollout::find_revision(revs, to_revision)?;
                Ok((rollout::revision_pod_template(r)?, r.revision))
            }
        }
    }

    /// Whether the object's template already is `target` (kubectl then
    /// skips the rollback); a Deployment's ignores the ReplicaSet hash label.
    fn matches(&self, current: &PodTemplateSpec, target: &PodTemplateSpec) -> bool {
        match self {
            History::ReplicaSets { .. } => rollout::same_template(current, target),
            History::ControllerRevisions(_) => current == target,
        }
    }
}

/// `rollout history KIND/NAME [--revision N]`.
async fn history(
    client: &Client,
    rk: &'static ResourceKind,
    ns: &str,
    name: &str,
    revision: i64,
) -> Res<()> {
    let (_, history) = History::load(client, rk, ns, name).await?;
    if revision > 0 {
        let t = history
            .template(revision)
            .map_err(|m| Failed(format!("error: {m}")))?;
        outln!("{}/{name} with revision #{revision}", singular(rk));
        out!(
            "{}",
            crate::describe::pod_template(&serde_json::to_value(&t).unwrap_or_default())
        );
        return Ok(());
    }
    outln!("{}/{name}", singular(rk));
    let rows: Vec<Vec<String>> = history
        .rows()
        .into_iter()
        .map(|(r, c)| vec![r.to_string(), c])
        .collect();
    out!(
        "{}",
        crate::table::render(&["REVISION".into(), "CHANGE-CAUSE".into()], &rows)
    );
    Ok(())
}

/// `rollout undo KIND/NAME [--to-revision N]`: writes the chosen revision's
/// template back into the object's spec; its controller then rolls pods (a
/// DaemonSet's or StatefulSet's re-uses that revision, renumbered as the
/// newest).
async fn undo(
    client: &Client,
    rk: &'static ResourceKind,
    ns: &str,
    name: &str,
    to_revision: i64,
) -> Res<()> {
    let (_, history) = History::load(client, rk, ns, name).await?;
    let (template, number) = history
        .undo_target(to_revision)
        .map_err(|m| Failed(format!("error: {m}")))?;
    let changed = verbs::modify(client, rk, ns, name, |v| {
        let current: Option<PodTemplateSpec> = v
            .pointer("/spec/template")
            .cloned()
            .and_then(|t| serde_json::from_value(t).ok());
        if current.is_some_and(|c| history.matches(&c, &template)) {
            return Ok(false);
        }
        let spec = v
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("{} {name:?} has no spec", rk.kind))?;
        spec.insert(
            "template".into(),
            serde_json::to_value(&template).map_err(|e| e.to_string())?,
        );
        Ok(true)
    })
    .await?;
    if changed {
        outln!("{}/{name} rolled back", singular(rk));
    } else {
        outln!(
            "{}/{name} skipped rollback (current template already matches revision {number})",
            singular(rk)
        );
    }
    Ok(())
}

pub(crate) async fn cmd_rollout(cli: &Cli, client: &Client, cmd: &RolloutCmd) -> Res<()> {
    let ns = cli.namespace.clone().unwrap_or_else(|| "default".into());
    match cmd {
        RolloutCmd::Status {
            kind,
            name,
            timeout,
        } => {
            let (rk, name) = rollout_target(kind, name.as_deref(), ROLLOUT_KINDS, "status viewer")?;
            let deadline = (*timeout > 0)
                .then(|| std::time::Instant::now() + std::time::Duration::from_secs(*timeout));
            let mut last = String::new();
            let done = crate::wait::follow(client, rk.kind, &ns, &name, deadline, |state| {
                let Some(json) = state else {
                    let gone = weir_client::Error::NotFound(String::new());
                    return Some(Err(server_error(&gone, rk, &name)));
                };
                match rollout::progress_of(rk.kind, json) {
                    Err(e) => Some(Err(Failed(e))),
                    Ok(rollout::Progress::Done(m)) => {
                        outln!("{m}");
                        Some(Ok(()))
                    }
                    Ok(rollout::Progress::Waiting(m)) => {
                        if m != last {
                            outln!("{m}");
                            last = m;
                        }
                        None
                    }
                }
            });
            match done.await {
                Ok(result) => result,
                Err(crate::wait::WaitError::Timeout) => {
                    Err(Failed("error: timed out waiting for the condition".into()))
                }
                Err(crate::wait::WaitError::Api(e)) => Err(server_error(&e, rk, &name)),
            }
        }
        RolloutCmd::Restart { kind, name }
        | RolloutCmd::Pause { kind, name }
        | RolloutCmd::Resume { kind, name } => {
            let (action, done) = match cmd {
                RolloutCmd::Restart { .. } => ("restart", "restarted"),
                RolloutCmd::Pause { .. } => ("pause", "paused"),
                _ => ("resume", "resumed"),
            };
            // kubectl restarts DaemonSets and StatefulSets too; only Deployments pause.
            let (rk, name) = if action == "restart" {
                rollout_target(kind, name.as_deref(), ROLLOUT_KINDS, "history viewer")?
            } else {
                rollout_target(kind, name.as_deref(), &["Deployment"], "status viewer")?
            };
            let patch = rollout::action_patch(action, &crate::now().to_string())
                .ok_or_else(|| Failed(format!("error: unknown rollout action {action}")))?;
            let changed = verbs::modify(client, rk, &ns, &name, |v| {
                let before = v.clone();
                crate::strategic::strategic_merge(v, &patch);
                Ok(*v != before)
            })
            .await?;
            if changed || action == "restart" {
                outln!("{}/{name} {done}", singular(rk));
                Ok(())
            } else {
                Err(Failed(format!(
                    "error: {}/{name} is already {done}",
                    singular(rk)
                )))
            }
        }
        RolloutCmd::History {
            kind,
            name,
            revision,
        } => {
            let (rk, name) =
                rollout_target(kind, name.as_deref(), ROLLOUT_KINDS, "history viewer")?;
            history(client, rk, &ns, &name, *revision).await
        }
        RolloutCmd::Undo {
            kind,
            name,
            to_revision,
        } => {
            let (rk, name) =
                rollout_target(kind, name.as_deref(), ROLLOUT_KINDS, "history viewer")?;
            undo(client, rk, &ns, &name, *to_revision).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replicas_table() {
        let mut d = serde_json::json!({"spec": {"replicas": 3, "template": {}}});
        assert_eq!(set_replicas(&mut d, 5), Ok(()));
        assert_eq!(d["spec"]["replicas"], 5);
        assert_eq!(
            d["spec"]["template"],
            serde_json::json!({}),
            "the rest of spec is kept"
        );
        let mut none = serde_json::json!({"metadata": {}});
        assert!(set_replicas(&mut none, 1).is_err());
        assert!(
            set_replicas(&mut d, -1)
                .expect_err("negative")
                .contains("greater than or equal to 0")
        );
    }
}
