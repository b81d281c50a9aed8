//! The I/O of the verbs beyond apply/get/delete: describe, create, label,
//! annotate, patch, expose, set image, edit and config.
//! Every decision they make is a pure function in another module; these
//! functions fetch, call it, write back (retrying on Conflict) and print.

use serde_json::Value;
use weir_api::ResourceKind;
use weir_client::{Client, ListParams};

use crate::{Cli, Failed, Res, json_bytes, list_namespace, lookup_kind, server_error, singular};

/// Reads an object as JSON.
pub async fn get_value(client: &Client, k: &ResourceKind, ns: &str, name: &str) -> Res<Value> {
    let b = client
        .get_json(k.kind, ns, name)
        .await
        .map_err(|e| server_error(&e, k, name))?;
    serde_json::from_slice(&b)
        .map_err(|e| Failed(format!("error: decoding {} {name:?}: {e}", k.kind)))
}

/// Read-modify-write with a retry on Conflict. `edit` returns whether it
/// changed anything; an unchanged object is not written.
pub async fn modify(
    client: &Client,
    k: &ResourceKind,
    ns: &str,
    name: &str,
    edit: impl Fn(&mut Value) -> Result<bool, String>,
) -> Res<bool> {
    for _ in 0..3 {
        let mut v = get_value(client, k, ns, name).await?;
        if !edit(&mut v).map_err(|m| Failed(format!("error: {m}")))? {
            return Ok(false);
        }
        match client.update_json(k.kind, json_bytes(&v), false).await {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(server_error(&e, k, name)),
        }
    }
    Err(Failed(format!(
        "error: {} {name:?} kept changing; try again",
        k.kind
    )))
}

/// `--dry-run` values kubectl accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    None,
    Client,
    Server,
}

pub fn parse_dry_run(s: Option<&str>) -> Res<DryRun> {
    match s {
        None | Some("none") | Some("false") => Ok(DryRun::None),
        Some("client") | Some("true") | Some("") => Ok(DryRun::Client),
        Some("server") => Ok(DryRun::Server),
        Some(o) => Err(Failed(format!(
            "error: Invalid dry-run value ({o}). Must be \"none\", \"server\", or \"client\"."
        ))),
    }
}

/// Prints an object as -o yaml|json|name.
pub fn print_object(k: &ResourceKind, v: &Value, output: &str) -> Res<()> {
    match output {
        "yaml" => out!("{}", serde_yaml::to_string(v).unwrap_or_default()),
        "json" => outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        "name" => outln!(
            "{}/{}",
            singular(k),
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        o => {
            return Err(Failed(format!(
                "error: unable to match a printer suitable for the output format {o:?}, allowed formats are: json,name,yaml"
            )));
        }
    }
    Ok(())
}

/// Creates `obj` (or only prints it with --dry-run=client), then reports
/// like kubectl: `deployment.apps/web created` or the -o rendering.
pub async fn create_or_print(
    client: &Client,
    obj: &Value,
    dry: DryRun,
    output: Option<&str>,
) -> Res<()> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let k = lookup_kind(kind)?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let shown = match dry {
        DryRun::Client => obj.clone(),
        DryRun::Server | DryRun::None => {
            let b = client
                .create_json(k.kind, json_bytes(obj), dry == DryRun::Server)
                .await
                .map_err(|e| server_error(&e, k, &name))?;
            serde_json::from_slice(&b).unwrap_or_else(|_| obj.clone())
        }
    };
    match output {
        Some(o) => print_object(k, &shown, o),
        None => {
            let suffix = match dry {
                DryRun::Client => " (dry run)",
                DryRun::Server => " (server dry run)",
                DryRun::None => "",
            };
            outln!("{}/{name} created{suffix}", singular(k));
            Ok(())
        }
    }
}

/// `describe KIND [NAME...]` (no names: every object of the kind, like kubectl).
pub async fn describe(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    selector: Option<&str>,
) -> Res<()> {
    let targets =
        crate::get::plan_targets(kind, names).map_err(|m| Failed(format!("error: {m}")))?;
    let mut result = Ok(());
    for (i, (kind, names)) in targets.into_iter().enumerate() {
        if i > 0 {
            outln!("\n");
        }
        if let Err(e) = describe_kind(cli, client, &kind, names, selector).await {
            if !e.0.is_empty() {
                eprintln!("{}", e.0);
            }
            result = Err(Failed(String::new()));
        }
    }
    result
}

async fn describe_kind(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: Vec<String>,
    selector: Option<&str>,
) -> Res<()> {
    let k = lookup_kind(kind)?;
    let ns = list_namespace(cli, k, false);
    // Named objects are read one by one; listed ones are used as listed,
    // without reading each again.
    let targets: Vec<(String, Option<Value>)> = if names.is_empty() {
        let l = client
            .list_json(
                k.kind,
                &ns,
                &ListParams::default().labels(selector.unwrap_or_default()),
            )
            .await
            .map_err(|e| server_error(&e, k, ""))?;
        let listed: Vec<(String, Option<Value>)> = l
            .items
            .iter()
            .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
            .filter_map(|v| {
                let name = v.pointer("/metadata/name")?.as_str()?.to_string();
                Some((name, Some(v)))
            })
            .collect();
        if listed.is_empty() {
            eprintln!("No resources found in {ns} namespace.");
            return Ok(());
        }
        listed
    } else {
        names.into_iter().map(|n| (n, None)).collect()
    };
    let mut failed = None;
    for (i, (n, listed)) in targets.into_iter().enumerate() {
        let v = match listed {
            Some(v) => v,
            None => match get_value(client, k, &ns, &n).await {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("{}", e.0);
                    failed = Some(Failed(String::new()));
                    continue;
                }
            },
        };
        // Events of this object, served by the API's involvedObject field selector.
        let fields = format!("involvedObject.name={n},involvedObject.kind={}", k.kind);
        let events = list_values(client, "Event", &ns, &ListParams::default().fields(fields)).await;
        let related = related_objects(client, k.kind, &ns, &v).await;
        if i > 0 {
            outln!("\n");
        }
        out!(
            "{}",
            crate::describe::describe(k.kind, &v, &events, &related, crate::now())
        );
    }
    failed.map_or(Ok(()), Err)
}

/// Lists a kind as JSON values (empty on error: describe shows what it can).
async fn list_values(client: &Client, kind: &str, ns: &str, p: &ListParams) -> Vec<Value> {
    match client.list_json(kind, ns, p).await {
        Ok(l) => l
            .items
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What describe shows next to `v`: a Service's EndpointSlices, a
/// Deployment's ReplicaSets (by controller ownerReference).
async fn related_objects(
    client: &Client,
    kind: &str,
    ns: &str,
    v: &Value,
) -> crate::describe::Related {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let uid = v
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut r = crate::describe::Related::default();
    match kind {
        "Service" => {
            let p = ListParams::default().labels(format!("kubernetes.io/service-name={name}"));
            r.endpoint_slices = list_values(client, "EndpointSlice", ns, &p).await;
        }
        "Deployment" => {
            r.replicasets = list_values(client, "ReplicaSet", ns, &ListParams::default())
                .await
                .into_iter()
                .filter(|rs| {
                    rs.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|o| {
                            o.get("uid").and_then(Value::as_str) == Some(uid)
                                && o.get("controller").and_then(Value::as_bool) == Some(true)
                        })
                })
                .collect();
        }
        _ => {}
    }
    r
}

/// Splits `label`/`annotate` arguments into names and changes: a change has
/// `=` or ends with `-`, anything else is a name (kubectl's rule).
pub fn split_changes(args: &[String]) -> (Vec<String>, Vec<String>) {
    args.iter()
        .cloned()
        .partition(|a| !(a.contains('=') || (a.ends_with('-') && a.len() > 1)))
}

/// `label` / `annotate`.
pub async fn label(
    cli: &Cli,
    client: &Client,
    field: &str,
    kind: &str,
    args: &[String],
    overwrite: bool,
    selector: Option<&str>,
) -> Res<()> {
    let (kind, rest) = crate::split_kind_name(kind, args);
    let (mut names, changes) = split_changes(&rest);
    let changes =
        crate::patch::parse_changes(&changes).map_err(|m| Failed(format!("error: {m}")))?;
    let k = lookup_kind(&kind)?;
    let ns = list_namespace(cli, k, false);
    if let Some(sel) = selector {
        let (objs, _) = crate::get::fetch(
            cli,
            client,
            k,
            &[],
            false,
            &crate::get::parse_selector(Some(sel))?,
            "",
        )
        .await;
        names.extend(objs.iter().filter_map(|v| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        }));
    }
    if names.is_empty() {
        return Err(Failed(
            "error: resource(s) were provided, but no name was specified".into(),
        ));
    }
    let verb = if field == "labels" {
        "labeled"
    } else {
        "annotated"
    };
    let mut failed = false;
    for n in &names {
        match modify(client, k, &ns, n, |v| {
            crate::patch::change_metadata_map(v, field, &changes, overwrite)
        })
        .await
        {
            Ok(true) => outln!("{}/{n} {verb}", singular(k)),
            Ok(false) => outln!("{}/{n} not {verb}", singular(k)),
            Err(Failed(m)) => {
                eprintln!("{m}");
                failed = true;
            }
        }
    }
    if failed {
        Err(Failed(String::new()))
    } else {
        Ok(())
    }
}

/// `patch KIND NAME -p '{...}' [--type merge]`.
pub async fn patch(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    patch: &str,
    type_: &str,
) -> Res<()> {
    let p: Value = serde_yaml::from_str(patch)
        .map_err(|e| Failed(format!("error: unable to parse {patch:?}: {e}")))?;
    let kind_of_patch = PatchType::parse(type_)?;
    let (k, name, ns) = crate::one_object(cli, kind, names, "patch")?;
    let name = name.as_str();
    let changed = modify(client, k, &ns, name, |v| {
        let before = v.clone();
        match kind_of_patch {
            PatchType::Strategic => crate::strategic::strategic_merge(v, &p),
            PatchType::Merge => crate::patch::merge_patch(v, &p),
            PatchType::Json => crate::patch::json_patch(v, &p)?,
        }
        Ok(*v != before)
    })
    .await?;
    outln!(
        "{}/{name} {}",
        singular(k),
        if changed {
            "patched"
        } else {
            "patched (no change)"
        }
    );
    Ok(())
}

/// `patch --type`: kubectl's three kinds of patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// kubectl's default: keyed lists merge by their merge key.
    Strategic,
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch (a list of operations).
    Json,
}

impl PatchType {
    pub fn parse(s: &str) -> Res<PatchType> {
        match s {
            "strategic" => Ok(PatchType::Strategic),
            "merge" => Ok(PatchType::Merge),
            "json" => Ok(PatchType::Json),
            other => Err(Failed(format!(
                "error: --type must be one of [json merge strategic], not {other:?}"
            ))),
        }
    }
}

/// `set image KIND/NAME container=image...`.
pub async fn set_image(cli: &Cli, client: &Client, kind: &str, args: &[String]) -> Res<()> {
    let (kind, rest) = crate::split_kind_name(kind, args);
    let (names, pairs): (Vec<String>, Vec<String>) =
        rest.into_iter().partition(|a| !a.contains('='));
    let pairs =
        crate::patch::parse_image_pairs(&pairs).map_err(|m| Failed(format!("error: {m}")))?;
    let k = lookup_kind(&kind)?;
    if names.is_empty() {
        return Err(Failed(
            "error: resource(s) were provided, but no name was specified".into(),
        ));
    }
    let ns = list_namespace(cli, k, false);
    for n in &names {
        if modify(client, k, &ns, n, |v| crate::patch::set_images(v, &pairs)).await? {
            outln!("{}/{n} image updated", singular(k));
        } else {
            outln!("{}/{n} image unchanged", singular(k));
        }
    }
    Ok(())
}

/// What `edit` does with the text the editor returned.
#[derive(Debug, PartialEq)]
pub enum EditPlan {
    Unchanged,
    Update(Value),
}

/// Pure: compares the edited text with the original. Comment lines are
/// ignored; name, namespace and kind may not change (kubectl's rule).
pub fn edit_plan(original: &Value, edited: &str) -> Result<EditPlan, String> {
    let text: String = edited
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    if text.trim().is_empty() {
        return Ok(EditPlan::Unchanged);
    }
    let v: Value = serde_yaml::from_str(&text)
        .map_err(|e| format!("the edited file is not valid YAML: {e}"))?;
    if &v == original {
        return Ok(EditPlan::Unchanged);
    }
    for p in [
        "/kind",
        "/apiVersion",
        "/metadata/name",
        "/metadata/namespace",
    ] {
        if v.pointer(p) != original.pointer(p) {
            return Err(format!(
                "{} may not be changed by edit",
                p.trim_start_matches('/').replace('/', ".")
            ));
        }
    }
    Ok(EditPlan::Update(v))
}

/// `edit KIND NAME`: $WEIR_EDITOR / $KUBE_EDITOR / $EDITOR (default vi) on
/// the YAML; the server validates the result like any update.
pub async fn edit(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    editor: Option<String>,
) -> Res<()> {
    let (k, name, ns) = crate::one_object(cli, kind, names, "edit")?;
    let name = name.as_str();
    let original = get_value(client, k, &ns, name).await?;
    let path = std::env::temp_dir().join(format!("weir-edit-{}-{name}.yaml", std::process::id()));
    let header = "# Please edit the object below. Lines beginning with a '#' will be ignored,\n# and an empty file will abort the edit. If an error occurs while saving this file will be\n# reopened with the relevant failures.\n#\n";
    let mut text = format!(
        "{header}{}",
        serde_yaml::to_string(&original).unwrap_or_default()
    );
    let editor = editor.unwrap_or_else(|| "vi".into());
    for _ in 0..3 {
        std::fs::write(&path, &text)
            .map_err(|e| Failed(format!("error: writing {}: {e}", path.display())))?;
        let mut parts = editor.split_whitespace();
        let prog = parts.next().unwrap_or("vi");
        let status = std::process::Command::new(prog)
            .args(parts)
            .arg(&path)
            .status()
            .map_err(|e| Failed(format!("error: running editor {editor:?}: {e}")))?;
        if !status.success() {
            let _ = std::fs::remove_file(&path);
            return Err(Failed(format!(
                "error: editor {editor:?} exited with {status}"
            )));
        }
        let edited = std::fs::read_to_string(&path)
            .map_err(|e| Failed(format!("error: reading {}: {e}", path.display())))?;
        let result = match edit_plan(&original, &edited) {
            Ok(EditPlan::Unchanged) => {
                let _ = std::fs::remove_file(&path);
                outln!("Edit cancelled, no changes made.");
                return Ok(());
            }
            Ok(EditPlan::Update(v)) => client
                .update_json(k.kind, json_bytes(&v), false)
                .await
                .map_err(|e| server_error(&e, k, name).0),
            Err(m) => Err(format!("error: {m}")),
        };
        match result {
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
                outln!("{}/{name} edited", singular(k));
                return Ok(());
            }
            Err(m) => {
                // Reopen with the failure on top, like kubectl.
                let body: String = edited
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let errs: String = m.lines().map(|l| format!("# {l}\n")).collect();
                text = format!("{header}{errs}#\n{body}");
            }
        }
    }
    Err(Failed(format!(
        "error: the edit could not be saved; a copy of your changes is in {}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_changes_table() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            split_changes(&a(&["web", "app=x", "tier-", "db"])),
            (a(&["web", "db"]), a(&["app=x", "tier-"]))
        );
        assert_eq!(split_changes(&a(&["-"])), (a(&["-"]), a(&[])));
    }

    #[test]
    fn edit_plan_table() {
        let orig = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}});
        let yaml = serde_yaml::to_string(&orig).expect("yaml");
        assert_eq!(
            edit_plan(&orig, &format!("# header\n{yaml}")),
            Ok(EditPlan::Unchanged)
        );
        assert_eq!(
            edit_plan(&orig, "# only comments\n"),
            Ok(EditPlan::Unchanged)
        );
        let changed = yaml.replace("a: '1'", "a: '2'");
        let mut want = orig.clone();
        want["data"]["a"] = json!("2");
        assert_eq!(edit_plan(&orig, &changed), Ok(EditPlan::Update(want)));
        let renamed = yaml.replace("name: c", "name: d");
        assert_eq!(
            edit_plan(&orig, &renamed),
            Err("metadata.name may not be changed by edit".into())
        );
        assert!(edit_plan(&orig, "data: [unclosed").is_err());
    }

    #[test]
    fn dry_run_values() {
        assert_eq!(parse_dry_run(None).ok(), Some(DryRun::None));
        assert_eq!(parse_dry_run(Some("client")).ok(), Some(DryRun::Client));
        assert_eq!(parse_dry_run(Some("server")).ok(), Some(DryRun::Server));
        assert!(parse_dry_run(Some("maybe")).is_err());
    }
}
