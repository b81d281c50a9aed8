//! `delete`: by name, selector, --all or manifests; cascade policy, grace
//! period and kubectl's default --wait for the objects to be gone.

use serde_json::Value;
use weir_api::ResourceKind;
use weir_client::{Client, DeleteParams, Error};

use crate::args::Cli;
use crate::get::{fetch, parse_selector};
use crate::{
    Failed, Res, list_namespace, load_objects, lookup_kind, plural, server_error, singular,
};

/// The grace period kubectl sends for --grace-period, --force and --now.
pub(crate) fn effective_grace(grace_period: i64, force: bool, now: bool) -> Result<i64, String> {
    match (force, now) {
        (true, true) => Err("--now and --force are mutually exclusive".into()),
        (true, false) if grace_period < 0 => Ok(0),
        (false, true) if grace_period >= 0 => {
            Err("--now and --grace-period cannot be specified together".into())
        }
        (false, true) => Ok(1),
        _ => Ok(grace_period),
    }
}

pub(crate) fn delete_params(grace_period: i64, cascade: &str) -> Res<DeleteParams> {
    let propagation = match cascade.to_ascii_lowercase().as_str() {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => {
            return Err(Failed(format!(
                "error: invalid cascade value ({other:?}). Must be \"background\", \"foreground\", or \"orphan\""
            )));
        }
    };
    Ok(DeleteParams {
        propagation_policy: propagation.into(),
        grace_period_seconds: (grace_period >= 0).then_some(grace_period),
        resource_version: String::new(),
    })
}

pub(crate) async fn delete_one(
    client: &Client,
    k: &ResourceKind,
    ns: &str,
    name: &str,
    p: &DeleteParams,
    ignore_not_found: bool,
) -> bool {
    match client.delete_json(k.kind, ns, name, p).await {
        Ok(_) => {
            outln!("{} {name:?} deleted", singular(k));
            true
        }
        Err(Error::NotFound(_)) if ignore_not_found => true,
        Err(e) => {
            eprintln!("{}", server_error(&e, k, name).0);
            false
        }
    }
}

/// Flags of `delete`.
pub(crate) struct DeleteOpts<'a> {
    pub(crate) files: &'a [String],
    pub(crate) selector: Option<&'a str>,
    pub(crate) all: bool,
    pub(crate) grace_period: i64,
    pub(crate) cascade: &'a str,
    pub(crate) ignore_not_found: bool,
    pub(crate) force: bool,
    pub(crate) now: bool,
    pub(crate) wait: bool,
    pub(crate) timeout: u64,
}

/// Waits until every deleted object is gone (finalizers, graceful pod
/// deletion, foreground cascade), as `kubectl delete --wait` does.
pub(crate) async fn wait_deleted(
    client: &Client,
    gone: &[(&'static ResourceKind, String, String)],
    timeout: u64,
) -> bool {
    // kubectl's --timeout=0 means "a week".
    let secs = if timeout == 0 { 7 * 24 * 3600 } else { timeout };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    for (k, ns, name) in gone {
        let gone = crate::wait::follow(client, k.kind, ns, name, Some(deadline), |state| {
            state.is_none().then_some(())
        });
        match gone.await {
            Ok(()) => {}
            Err(crate::wait::WaitError::Timeout) => {
                eprintln!(
                    "error: timed out waiting for the condition on {}/{name}",
                    plural(k)
                );
                return false;
            }
            Err(crate::wait::WaitError::Api(e)) => {
                eprintln!("{}", server_error(&e, k, name).0);
                return false;
            }
        }
    }
    true
}

/// The names to delete of one kind: the given ones, or those matching -l /
/// --all. None when the flags contradict each other (already reported).
async fn target_names(
    cli: &Cli,
    client: &Client,
    k: &'static ResourceKind,
    mut names: Vec<String>,
    o: &DeleteOpts<'_>,
    ok: &mut bool,
) -> Option<Vec<String>> {
    if o.selector.is_some() || o.all {
        if !names.is_empty() {
            eprintln!("error: name cannot be provided when a selector or --all is specified");
            return None;
        }
        let sel = match parse_selector(o.selector) {
            Ok(s) => s,
            Err(Failed(m)) => {
                eprintln!("{m}");
                return None;
            }
        };
        let (objs, f) = fetch(cli, client, k, &[], false, &sel, "").await;
        *ok &= !f;
        names.extend(objs.iter().filter_map(|v| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        }));
        if objs.is_empty() && !f {
            eprintln!("No resources found");
        }
    } else if names.is_empty() {
        eprintln!("error: resource(s) were provided, but no name was specified");
        return None;
    }
    Some(names)
}

pub(crate) async fn cmd_delete(
    cli: &Cli,
    client: &Client,
    kind: Option<&str>,
    names: &[String],
    o: &DeleteOpts<'_>,
) -> bool {
    let grace = match effective_grace(o.grace_period, o.force, o.now) {
        Ok(g) => g,
        Err(m) => {
            eprintln!("error: {m}");
            return false;
        }
    };
    if o.force {
        eprintln!(
            "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely."
        );
    }
    let params = match delete_params(grace, o.cascade) {
        Ok(p) => p,
        Err(Failed(m)) => {
            eprintln!("{m}");
            return false;
        }
    };
    let mut ok = true;
    let mut gone = Vec::new();
    if !o.files.is_empty() {
        let mut failed = false;
        for (obj, ns) in load_objects(cli, o.files, false, &mut failed) {
            if delete_one(
                client,
                obj.kind,
                &ns,
                &obj.name,
                &params,
                o.ignore_not_found,
            )
            .await
            {
                gone.push((obj.kind, ns, obj.name.clone()));
            } else {
                ok = false;
            }
        }
        return ok && !failed && (!o.wait || wait_deleted(client, &gone, o.timeout).await);
    }
    let Some(kind) = kind else {
        eprintln!("error: You must provide one or more resources by argument or filename.");
        return false;
    };
    let targets = match crate::get::plan_targets(kind, names) {
        Ok(t) => t,
        Err(m) => {
            eprintln!("error: {m}");
            return false;
        }
    };
    for (kind, names) in targets {
        let k = match lookup_kind(&kind) {
            Ok(k) => k,
            Err(Failed(m)) => {
                eprintln!("{m}");
                ok = false;
                continue;
            }
        };
        let Some(names) = target_names(cli, client, k, names, o, &mut ok).await else {
            return false;
        };
        let ns = list_namespace(cli, k, false);
        for n in &names {
            if delete_one(client, k, &ns, n, &params, o.ignore_not_found).await {
                gone.push((k, ns.clone(), n.clone()));
            } else {
                ok = false;
            }
        }
    }
    ok && (!o.wait || wait_deleted(client, &gone, o.timeout).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_table() {
        // (--grace-period, --force, --now, result)
        let cases = [
            (-1, false, false, Ok(-1)),
            (30, false, false, Ok(30)),
            (-1, true, false, Ok(0)),
            (5, true, false, Ok(5)),
            (-1, false, true, Ok(1)),
            (5, false, true, Err(())),
            (-1, true, true, Err(())),
        ];
        for (g, f, n, want) in cases {
            assert_eq!(
                effective_grace(g, f, n).map_err(|_| ()),
                want,
                "{g} {f} {n}"
            );
        }
    }

    #[test]
    fn cascade_table() {
        let cases = [
            ("background", Some("Background")),
            ("true", Some("Background")),
            ("Foreground", Some("Foreground")),
            ("orphan", Some("Orphan")),
            ("false", Some("Orphan")),
            ("x", None),
        ];
        for (c, want) in cases {
            assert_eq!(
                delete_params(-1, c).ok().map(|p| p.propagation_policy),
                want.map(str::to_string),
                "{c}"
            );
        }
        assert_eq!(
            delete_params(0, "background")
                .ok()
                .and_then(|p| p.grace_period_seconds),
            Some(0)
        );
        assert_eq!(
            delete_params(-1, "background")
                .ok()
                .and_then(|p| p.grace_period_seconds),
            None
        );
    }
}
