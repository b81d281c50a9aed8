//! `scale` and `rollout status|history|undo`: the verbs that act on a
//! workload's replicas and revisions (a Deployment's ReplicaSets, a
//! DaemonSet's or StatefulSet's ControllerRevisions).

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
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

/// Resolves `deployment/web` or `deployment web` to a Deployment name.
pub(crate) fn deployment_name(kind: &str, name: Option<&str>) -> Res<String> {
    let (k, names) = split_kind_name(
        kind,
        &name.map(str::to_string).into_iter().collect::<Vec<_>>(),
    );
    let rk = lookup_kind(&k)?;
    if rk.kind != "Deployment" {
        return Err(Failed(format!(
            "error: no status viewer has been implemented for {}",
            rk.kind
        )));
    }
    match names.as_slice() {
        [n] => Ok(n.clone()),
        _ => Err(Failed(
            "error: specify exactly one deployment, e.g. deployment/web".into(),
        )),
    }
}

/// The object `rollout status` follows: a Deployment, DaemonSet or
/// StatefulSet (the kinds kubectl has status viewers for).
fn status_target(kind: &str, name: Option<&str>) -> Res<(&'static weir_api::ResourceKind, String)> {
    let (k, names) = split_kind_name(
        kind,
        &name.map(str::to_string).into_iter().collect::<Vec<_>>(),
    );
    let rk = lookup_kind(&k)?;
    if !matches!(rk.kind, "Deployment" | "DaemonSet" | "StatefulSet") {
        return Err(Failed(format!(
            "error: no status viewer has been implemented for {}",
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

/// The object `rollout history|undo` works on: a Deployment (ReplicaSets
/// are its history) or a DaemonSet or StatefulSet (ControllerRevisions),
/// the kinds kubectl has history viewers and rollbackers for.
fn history_target(kind: &str, name: Option<&str>) -> Res<(&'static ResourceKind, String)> {
    let (k, names) = split_kind_name(
        kind,
        &name.map(str::to_string).into_iter().collect::<Vec<_>>(),
    );
    let rk = lookup_kind(&k)?;
    if !matches!(rk.kind, "Deployment" | "DaemonSet" | "StatefulSet") {
        return Err(Failed(format!(
            "error: no history viewer has been implemented for {}",
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

/// The object (as JSON) and the ControllerRevisions it controls.
async fn with_revisions(
    client: &Client,
    rk: &ResourceKind,
    ns: &str,
    name: &str,
) -> Res<(Value, Vec<ControllerRevision>)> {
    let obj = verbs::get_value(client, rk, ns, name).await?;
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let crk = lookup_kind("ControllerRevision")?;
    let revs = client
        .list::<ControllerRevision>(ns, &weir_client::ListParams::default())
        .await
        .map_err(|e| server_error(&e, crk, ""))?
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    Ok((obj, revs))
}

/// `rollout history daemonset|statefulset/NAME [--revision N]`.
async fn revision_history(
    client: &Client,
    rk: &'static ResourceKind,
    ns: &str,
    name: &str,
    revision: i64,
) -> Res<()> {
    let (_, revs) = with_revisions(client, rk, ns, name).await?;
    if revision > 0 {
        let r = revs
            .iter()
            .find(|r| r.revision == revision)
            .ok_or_else(|| Failed("error: unable to find the specified revision".into()))?;
        let t = rollout::revision_pod_template(r).map_err(|m| Failed(format!("error: {m}")))?;
        outln!("{}/{name} with revision #{revision}", singular(rk));
        out!(
            "{}",
            crate::describe::pod_template(&serde_json::to_value(&t).unwrap_or_default())
        );
        return Ok(());
    }
    outln!("{}/{name}", singular(rk));
    let rows: Vec<Vec<String>> = rollout::revision_history(&revs)
        .into_iter()
        .map(|(r, c)| vec![r.to_string(), c])
        .collect();
    out!(
        "{}",
        crate::table::render(&["REVISION".into(), "CHANGE-CAUSE".into()], &rows)
    );
    Ok(())
}

/// `rollout undo daemonset|statefulset/NAME [--to-revision N]`: writes the
/// chosen revision's template back into the object's spec; the controller
/// then re-uses that revision (renumbered as the newest) and rolls pods.
async fn revision_undo(
    client: &Client,
    rk: &'static ResourceKind,
    ns: &str,
    name: &str,
    to_revision: i64,
) -> Res<()> {
    let (_, revs) = with_revisions(client, rk, ns, name).await?;
    let target =
        rollout::find_revision(&revs, to_revision).map_err(|m| Failed(format!("error: {m}")))?;
    let template =
        rollout::revision_pod_template(target).map_err(|m| Failed(format!("error: {m}")))?;
    let number = target.revision;
    let changed = verbs::modify(client, rk, ns, name, |v| {
        let current: Option<PodTemplateSpec> = v
            .pointer("/spec/template")
            .cloned()
            .and_then(|t| serde_json::from_value(t).ok());
        if current.as_ref() == Some(&template) {
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
    let dk = lookup_kind("Deployment")?;
    match cmd {
        RolloutCmd::Status {
            kind,
            name,
            timeout,
        } => {
            let (rk, name) = status_target(kind, name.as_deref())?;
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
                history_target(kind, name.as_deref())?
            } else {
                (dk, deployment_name(kind, name.as_deref())?)
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
            let (rk, name) = history_target(kind, name.as_deref())?;
            if rk.kind != "Deployment" {
                return revision_history(client, rk, &ns, &name, *revision).await;
            }
            verbs::rollout_history(cli, client, &name, *revision).await
        }
        RolloutCmd::Undo {
            kind,
            name,
            to_revision,
        } => {
            let (rk, name) = history_target(kind, name.as_deref())?;
            if rk.kind != "Deployment" {
                return revision_undo(client, rk, &ns, &name, *to_revision).await;
            }
            for _ in 0..3 {
                let mut d: k8s_openapi::api::apps::v1::Deployment = client
                    .get(&ns, &name)
                    .await
                    .map_err(|e| server_error(&e, dk, &name))?;
                let owned = verbs::owned_replicasets(client, &ns, &d)
                    .await
                    .map_err(|e| server_error(&e, dk, &name))?;
                let current = d
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                let template = rollout::undo_template(&owned, current, *to_revision)
                    .map_err(|m| Failed(format!("error: {m}")))?;
                if d.spec
                    .as_ref()
                    .is_some_and(|s| rollout::same_template(&s.template, &template))
                {
                    outln!(
                        "{}/{name} skipped rollback (current template already matches revision {})",
                        singular(dk),
                        if *to_revision > 0 {
                            *to_revision
                        } else {
                            current
                        }
                    );
                    return Ok(());
                }
                if let Some(spec) = d.spec.as_mut() {
                    spec.template = template;
                }
                match client.update(&d).await {
                    Ok(_) => {
                        outln!("{}/{name} rolled back", singular(dk));
                        return Ok(());
                    }
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(server_error(&e, dk, &name)),
                }
            }
            Err(Failed(format!(
                "error: deployment {name:?} kept changing; try again"
            )))
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
