//! `get` (tables, -o formats, custom columns, label columns, field
//! selectors) and `get --watch`.

use serde_json::Value;
use weir_api::ResourceKind;
use weir_api::selector::Selector;
use weir_client::{Client, ListParams};

use crate::args::{Cli, Output};
use crate::{
    Failed, Res, columns, list_namespace, lookup_kind, now, server_error, singular, table,
};

pub(crate) async fn fetch(
    cli: &Cli,
    client: &Client,
    k: &'static ResourceKind,
    names: &[String],
    all: bool,
    sel: &Selector,
    fields: &str,
) -> (Vec<Value>, bool) {
    let mut failed = false;
    let mut objs = Vec::new();
    if names.is_empty() {
        let ns = list_namespace(cli, k, all);
        match client
            .list_json(
                k.kind,
                &ns,
                &ListParams::default()
                    .labels(sel.to_string())
                    .fields(fields.to_string()),
            )
            .await
        {
            Ok(l) => {
                for b in &l.items {
                    match serde_json::from_slice::<Value>(b) {
                        Ok(v) => objs.push(v),
                        Err(e) => {
                            eprintln!("error: decoding a {} from the server: {e}", k.kind);
                            failed = true;
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("{}", server_error(&e, k, "").0);
                failed = true;
            }
        }
        // The server filters too; filtering here keeps the CLI right against a server that does not.
        objs.retain(|v| {
            let labels = v
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            sel.matches(&labels)
        });
        objs.sort_by_key(|v| {
            let s = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (s("/metadata/namespace"), s("/metadata/name"))
        });
    } else {
        let ns = list_namespace(cli, k, false);
        for n in names {
            match crate::verbs::get_value(client, k, &ns, n).await {
                Ok(v) => objs.push(v),
                Err(Failed(m)) => {
                    eprintln!("{m}");
                    failed = true;
                }
            }
        }
    }
    (objs, failed)
}

/// Parses a -l selector (empty when absent).
pub(crate) fn parse_selector(s: Option<&str>) -> Res<Selector> {
    Selector::parse(s.unwrap_or_default()).map_err(|e| Failed(format!("error: {e}")))
}

/// One line per object for `get --watch` output (table rows without the header).
pub(crate) fn watch_line(k: &ResourceKind, v: &Value, output: Option<Output>, all: bool) -> String {
    match output {
        Some(Output::Name) => format!(
            "{}/{}\n",
            singular(k),
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        Some(Output::Json) => serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
        Some(Output::Yaml) => format!("---\n{}", serde_yaml::to_string(v).unwrap_or_default()),
        _ => {
            let opts = table::TableOpts {
                wide: output == Some(Output::Wide),
                all_namespaces: all && k.namespaced,
                ..Default::default()
            };
            let t = table::table(k.kind, std::slice::from_ref(v), &opts, now());
            t.lines().skip(1).map(|l| format!("{l}\n")).collect()
        }
    }
}

/// `get --watch`: the current objects, then every change until interrupted.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn cmd_watch(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    all: bool,
    output: Option<Output>,
    sel: &Selector,
    extra_fields: &str,
) -> bool {
    if kind.contains(',') || names.len() > 1 {
        eprintln!(
            "error: you may only specify a single resource type and at most one name with --watch"
        );
        return false;
    }
    let k = match lookup_kind(kind) {
        Ok(k) => k,
        Err(Failed(m)) => {
            eprintln!("{m}");
            return false;
        }
    };
    let ns = list_namespace(cli, k, all);
    let fields = watch_fields(names.first().map(String::as_str), extra_fields);
    let list = match client
        .list_json(
            k.kind,
            &ns,
            &ListParams::default()
                .labels(sel.to_string())
                .fields(fields.clone()),
        )
        .await
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "{}",
                server_error(&e, k, names.first().map(String::as_str).unwrap_or_default()).0
            );
            return false;
        }
    };
    let objs: Vec<Value> = list
        .items
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .collect();
    if output.is_none() || output == Some(Output::Wide) {
        let opts = table::TableOpts {
            wide: output == Some(Output::Wide),
            all_namespaces: all && k.namespaced,
            ..Default::default()
        };
        out!("{}", table::table(k.kind, &objs, &opts, now()));
    } else {
        for v in &objs {
            out!("{}", watch_line(k, v, output, all));
        }
    }
    let params = weir_client::WatchParams::default()
        .labels(sel.to_string())
        .fields(fields)
        .from_version(list.resource_version);
    let mut stream = match client.watch_json(k.kind, &ns, &params).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}", server_error(&e, k, "").0);
            return false;
        }
    };
    while let Some(ev) = futures::StreamExt::next(&mut stream).await {
        match ev {
            Ok(ev) if ev.r#type == weir_client::proto::watch_event::Type::Bookmark as i32 => {}
            Ok(ev) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&ev.json) {
                    out!("{}", watch_line(k, &v, output, all));
                }
            }
            Err(e) => {
                eprintln!("error: the watch ended: {e}");
                return false;
            }
        }
    }
    true
}

/// Table shape flags of `get` beyond -o.
pub(crate) struct GetOpts<'a> {
    pub(crate) fields: &'a str,
    pub(crate) label_columns: &'a [String],
    pub(crate) show_labels: bool,
    pub(crate) no_headers: bool,
    pub(crate) columns: Option<&'a [columns::Column]>,
    pub(crate) jsonpath: Option<&'a [crate::jsonpath::Seg]>,
    pub(crate) sort_by: Option<&'a [columns::Step]>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn cmd_get(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    all: bool,
    output: Option<Output>,
    selector: Option<&str>,
    g: &GetOpts<'_>,
) -> bool {
    let sel = match Selector::parse(selector.unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    let targets = match plan_targets(kind, names) {
        Ok(t) => t,
        Err(m) => {
            eprintln!("error: {m}");
            return false;
        }
    };
    let kinds: Vec<&str> = targets.iter().map(|(k, _)| k.as_str()).collect();
    let names: Vec<String> = targets.iter().flat_map(|(_, n)| n.clone()).collect();
    let mut failed = false;
    let mut printed_any = false;
    let mut all_objs: Vec<Value> = Vec::new();
    for (i, (kname, knames)) in targets.iter().enumerate() {
        let k = match lookup_kind(kname) {
            Ok(k) => k,
            Err(Failed(m)) => {
                eprintln!("{m}");
                failed = true;
                continue;
            }
        };
        let (mut objs, f) = fetch(cli, client, k, knames, all, &sel, g.fields).await;
        failed |= f;
        if let Some(p) = g.sort_by {
            columns::sort_by(&mut objs, p);
        }
        if g.jsonpath.is_some() {
            all_objs.extend(objs);
            continue;
        }
        if let Some(cols) = g.columns {
            if !objs.is_empty() {
                if printed_any {
                    outln!();
                }
                out!("{}", headerless(&columns::table(cols, &objs), g.no_headers));
                printed_any = true;
            }
            continue;
        }
        match output {
            Some(Output::Yaml) | Some(Output::Json) => all_objs.extend(objs),
            Some(Output::Name) => {
                for v in &objs {
                    outln!(
                        "{}/{}",
                        singular(k),
                        v.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    );
                }
                printed_any |= !objs.is_empty();
            }
            _ if objs.is_empty() => {}
            _ => {
                if printed_any && i > 0 {
                    outln!();
                }
                let opts = table::TableOpts {
                    wide: output == Some(Output::Wide),
                    all_namespaces: all && k.namespaced,
                    show_labels: g.show_labels,
                    label_columns: g.label_columns.to_vec(),
                    name_prefix: (kinds.len() > 1).then(|| format!("{}/", singular(k))),
                };
                out!(
                    "{}",
                    headerless(&table::table(k.kind, &objs, &opts, now()), g.no_headers)
                );
                printed_any = true;
            }
        }
    }
    if let Some(t) = g.jsonpath {
        let doc = if all_objs.len() == 1 && !names.is_empty() {
            all_objs.remove(0)
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": all_objs, "metadata": {"resourceVersion": ""}})
        };
        out!("{}", crate::jsonpath::render(t, &doc));
        return !failed;
    }
    match output {
        Some(o @ (Output::Yaml | Output::Json)) => {
            let doc = if all_objs.len() == 1 && !names.is_empty() {
                all_objs.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": all_objs, "metadata": {"resourceVersion": ""}})
            };
            let text = if o == Output::Yaml {
                serde_yaml::to_string(&doc).unwrap_or_default()
            } else {
                serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
            };
            out!("{text}");
        }
        _ if !printed_any && names.is_empty() && !failed => {
            let scoped = kinds
                .iter()
                .filter_map(|k| ResourceKind::lookup(k))
                .any(|k| k.namespaced);
            if all || !scoped {
                eprintln!("No resources found");
            } else {
                eprintln!(
                    "No resources found in {} namespace.",
                    cli.namespace.as_deref().unwrap_or("default")
                );
            }
        }
        _ => {}
    }
    !failed
}

/// The field selector of `get -w`: one name (as kubectl watches a single
/// object) and the user's --field-selector.
pub(crate) fn watch_fields(name: Option<&str>, extra: &str) -> String {
    name.map(|n| format!("metadata.name={n}"))
        .into_iter()
        .chain(Some(extra.to_string()).filter(|e| !e.is_empty()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `--no-headers`: the table without its first line.
pub(crate) fn headerless(table: &str, no_headers: bool) -> &str {
    if no_headers {
        table.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
    } else {
        table
    }
}

/// What one `get` asks for: (kind, names) pairs. `pods,svc a b` asks every
/// kind for the same names; `deploy/web svc/web` (kubectl's TYPE/NAME form,
/// which then every argument must use) groups names by kind in order.
pub(crate) fn plan_targets(
    kind: &str,
    names: &[String],
) -> Result<Vec<(String, Vec<String>)>, String> {
    if !kind.contains('/') {
        if names.iter().any(|n| n.contains('/')) {
            return Err(format!(
                "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'weir get resource/<resource_name>' instead of 'weir get resource resource/<resource_name>'): {}",
                names.join(" ")
            ));
        }
        return Ok(expand_kinds(kind)
            .into_iter()
            .map(|k| (k.to_string(), names.to_vec()))
            .collect());
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for arg in std::iter::once(kind).chain(names.iter().map(String::as_str)) {
        let (k, n) = arg
            .split_once('/')
            .filter(|(k, n)| !k.is_empty() && !n.is_empty())
            .ok_or_else(|| {
                format!(
                    "arguments in resource/name form must have a single resource and name: {arg:?}"
                )
            })?;
        match out.iter_mut().find(|(ek, _)| ek == k) {
            Some((_, ns)) => ns.push(n.to_string()),
            None => out.push((k.to_string(), vec![n.to_string()])),
        }
    }
    Ok(out)
}

/// kubectl's "all" category: the workload kinds and services.
const ALL: &[&str] = &[
    "pods",
    "services",
    "daemonsets",
    "deployments",
    "replicasets",
    "statefulsets",
    "jobs",
    "cronjobs",
];

/// `pods,svc` -> [pods, svc]; `all` expands to its category.
pub(crate) fn expand_kinds(arg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for k in arg.split(',').filter(|k| !k.is_empty()) {
        if k == "all" {
            out.extend_from_slice(ALL);
        } else {
            out.push(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_kinds_table() {
        assert_eq!(expand_kinds("po,svc"), ["po", "svc"]);
        assert_eq!(expand_kinds("all").len(), ALL.len());
        assert_eq!(expand_kinds("cm,all")[0], "cm");
        assert!(expand_kinds(",").is_empty());
    }

    #[test]
    fn plan_targets_table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let t = |k: &str, n: &[&str]| (k.to_string(), s(n));
        assert_eq!(
            plan_targets("po,svc", &s(&["a"])),
            Ok(vec![t("po", &["a"]), t("svc", &["a"])])
        );
        assert_eq!(
            plan_targets("deploy/web", &s(&["svc/web", "deploy/api"])),
            Ok(vec![t("deploy", &["web", "api"]), t("svc", &["web"])])
        );
        assert_eq!(plan_targets("pods", &[]), Ok(vec![t("pods", &[])]));
        assert!(plan_targets("deploy/web", &s(&["api"])).is_err());
        assert!(plan_targets("deploy", &s(&["svc/web"])).is_err());
        assert!(plan_targets("deploy/", &[]).is_err());
    }

    #[test]
    fn headerless_table() {
        assert_eq!(headerless("NAME\na\nb\n", true), "a\nb\n");
        assert_eq!(headerless("NAME\na\n", false), "NAME\na\n");
        assert_eq!(headerless("NAME", true), "");
    }

    #[test]
    fn watch_fields_table() {
        assert_eq!(watch_fields(None, ""), "");
        assert_eq!(watch_fields(Some("web"), ""), "metadata.name=web");
        assert_eq!(
            watch_fields(None, "status.phase=Running"),
            "status.phase=Running"
        );
        assert_eq!(
            watch_fields(Some("web"), "spec.nodeName=n1"),
            "metadata.name=web,spec.nodeName=n1"
        );
    }
}
