//! `weir`: the command-line client of a weir cluster, shaped like kubectl
//! (`apply -f`, `get`, `delete`) so the same habits and manifests work.
//!
//! The decisions (document splitting, kind mapping, apply merge, tables,
//! server address) are pure functions in their own modules; this file does
//! the I/O and turns errors into kubectl-style messages and exit codes.
#![forbid(unsafe_code)]

mod columns;
mod config;
mod create;
mod describe;
mod explain;
mod manifest;
mod merge;
mod patch;
mod rollout;
mod table;
mod table_kinds;
mod verbs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use weir_api::ResourceKind;
use weir_api::selector::Selector;
use weir_client::{Client, DeleteParams, Error, ListParams};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Command-line client of a weir cluster (kubectl-like)"
)]
struct Cli {
    /// API server address (http://HOST:PORT or unix:///path); else $WEIR_SERVER,
    /// else the config file ($WEIR_CONFIG or ~/.weir/config.yaml).
    #[arg(long, global = true)]
    server: Option<String>,
    /// Namespace to work in (default: "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create or update objects from manifests (multi-document YAML or JSON).
    Apply {
        /// File, directory (its *.yaml, *.yml, *.json) or "-" for stdin. Repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Descend into sub-directories.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Show objects of a kind (pods, svc, deploy/web, ...).
    Get {
        /// Kind (any kubectl spelling), comma-separated kinds, or KIND/NAME.
        kind: String,
        names: Vec<String>,
        /// List across all namespaces.
        #[arg(short = 'A', long = "all-namespaces")]
        all_namespaces: bool,
        /// wide, yaml, json, name or custom-columns=HEADER:.field.path,...
        #[arg(short = 'o', long, value_parser = parse_output)]
        output: Option<OutputArg>,
        /// Label selector, e.g. app=web,tier!=db.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Field selector (metadata.name, metadata.namespace, spec.nodeName, status.phase, ...).
        #[arg(long)]
        field_selector: Option<String>,
        /// Show these labels' values as columns (repeatable or comma-separated).
        #[arg(short = 'L', long = "label-columns", value_delimiter = ',')]
        label_columns: Vec<String>,
        /// Show all labels as the last column.
        #[arg(long)]
        show_labels: bool,
        /// After listing, keep printing objects as they change.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show details of objects, with their Events.
    Describe {
        /// Kind or KIND/NAME.
        kind: String,
        names: Vec<String>,
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Create an object from flags (or from manifests with -f, like apply without update).
    Create {
        #[command(subcommand)]
        what: CreateCmd,
    },
    /// Add, change (--overwrite) or remove (`key-`) labels.
    Label {
        kind: String,
        /// NAMEs and KEY=VALUE / KEY- changes.
        args: Vec<String>,
        #[arg(long)]
        overwrite: bool,
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Add, change (--overwrite) or remove (`key-`) annotations.
    Annotate {
        kind: String,
        args: Vec<String>,
        #[arg(long)]
        overwrite: bool,
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Change fields of an object with a JSON merge patch (RFC 7386).
    Patch {
        kind: String,
        names: Vec<String>,
        /// The patch, JSON (or YAML), e.g. '{"spec":{"replicas":3}}'.
        #[arg(short = 'p', long)]
        patch: String,
        /// Only "merge" is supported.
        #[arg(long = "type", default_value = "merge")]
        type_: String,
    },
    /// Make a Service for a Deployment, ReplicaSet, Service or Pod.
    Expose {
        kind: String,
        names: Vec<String>,
        /// The Service's port (default: the source's ports).
        #[arg(long)]
        port: Option<i32>,
        /// Port (number or name) on the pods (default: --port).
        #[arg(long)]
        target_port: Option<String>,
        /// Name of the Service (default: the source's name).
        #[arg(long)]
        name: Option<String>,
        /// ClusterIP, NodePort or LoadBalancer.
        #[arg(long = "type")]
        type_: Option<String>,
        #[arg(long)]
        protocol: Option<String>,
        #[arg(long, num_args = 0..=1, default_missing_value = "client")]
        dry_run: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Change fields of existing objects (image).
    Set {
        #[command(subcommand)]
        what: SetCmd,
    },
    /// Edit an object in $EDITOR; the server validates the result.
    Edit { kind: String, names: Vec<String> },
    /// Server address and namespace contexts in the config file.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Fields and types of a kind or a field path (deployment.spec.template).
    Explain {
        /// KIND[.field.path]
        path: String,
    },
    /// Print a shell completion script (bash, zsh, fish).
    Completion { shell: clap_complete::Shell },
    /// Delete objects by kind and name, by selector, or from manifests.
    Delete {
        /// Kind (or KIND/NAME) when not using -f.
        kind: Option<String>,
        names: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Seconds the object gets to shut down; -1 uses the object's default, 0 deletes at once.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        grace_period: i64,
        /// background (default), foreground or orphan (true/false are accepted too).
        #[arg(long, default_value = "background")]
        cascade: String,
        /// Treat "not found" as success.
        #[arg(long)]
        ignore_not_found: bool,
        /// Delete every object of the kind in the namespace.
        #[arg(long)]
        all: bool,
        /// Wait until the objects are gone (like kubectl, on by default; --wait=false to not).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        wait: bool,
        /// Give up waiting after this many seconds (0: a week, like kubectl).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Follow or undo a Deployment's rollout.
    Rollout {
        #[command(subcommand)]
        cmd: RolloutCmd,
    },
    /// Set the replica count of a Deployment, ReplicaSet or StatefulSet.
    Scale {
        /// Kind or KIND/NAME.
        kind: String,
        names: Vec<String>,
        #[arg(long)]
        replicas: i32,
    },
}

#[derive(Subcommand, Debug)]
enum RolloutCmd {
    /// Wait until the rollout finishes (or the timeout passes).
    Status {
        /// deployment/NAME (or `deployment NAME`).
        kind: String,
        name: Option<String>,
        /// Give up after this many seconds (0: wait forever).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// List a Deployment's revisions (or show one with --revision).
    History {
        kind: String,
        name: Option<String>,
        #[arg(long, default_value_t = 0)]
        revision: i64,
    },
    /// Roll back to the previous revision (or --to-revision).
    Undo {
        kind: String,
        name: Option<String>,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
}

#[derive(Subcommand, Debug)]
enum CreateCmd {
    /// A Namespace.
    #[command(alias = "ns")]
    Namespace {
        name: String,
        #[arg(long, num_args = 0..=1, default_missing_value = "client")]
        dry_run: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// A Deployment with label and selector app=NAME.
    #[command(alias = "deploy")]
    Deployment {
        name: String,
        /// Repeatable: one container per image.
        #[arg(long, required = true)]
        image: Vec<String>,
        #[arg(long, default_value_t = 1)]
        replicas: i32,
        #[arg(long)]
        port: Option<i32>,
        #[arg(long, num_args = 0..=1, default_missing_value = "client")]
        dry_run: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// A Service: `service clusterip|nodeport|loadbalancer NAME --tcp=PORT:TARGET`.
    #[command(alias = "svc")]
    Service {
        type_: String,
        name: String,
        #[arg(long)]
        tcp: Vec<String>,
        #[arg(long, num_args = 0..=1, default_missing_value = "client")]
        dry_run: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// A ConfigMap from --from-literal=KEY=VALUE.
    #[command(alias = "cm")]
    Configmap {
        name: String,
        #[arg(long)]
        from_literal: Vec<String>,
        #[arg(long, num_args = 0..=1, default_missing_value = "client")]
        dry_run: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// A Secret: `secret generic NAME --from-literal=KEY=VALUE`.
    Secret {
        /// Only "generic".
        type_: String,
        name: String,
        #[arg(long)]
        from_literal: Vec<String>,
        #[arg(long, num_args = 0..=1, default_missing_value = "client")]
        dry_run: Option<String>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SetCmd {
    /// `set image deployment/web CONTAINER=IMAGE ...` (`*=IMAGE` for all).
    Image { kind: String, args: Vec<String> },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context.
    UseContext { name: String },
    /// Create or change a context.
    /// Create or change a context (its namespace is the global -n/--namespace).
    SetContext {
        name: String,
        #[arg(long)]
        server: Option<String>,
    },
}

/// `-o`: the fixed formats or custom columns.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OutputArg {
    Simple(Output),
    Columns(Vec<columns::Column>),
}

impl OutputArg {
    fn simple(&self) -> Option<Output> {
        match self {
            OutputArg::Simple(o) => Some(*o),
            OutputArg::Columns(_) => None,
        }
    }
}

fn parse_output(s: &str) -> Result<OutputArg, String> {
    if let Some(spec) = s.strip_prefix("custom-columns=") {
        return columns::parse_spec(spec).map(OutputArg::Columns);
    }
    Output::from_str(s, true).map(OutputArg::Simple).map_err(|_| {
        format!("unable to match a printer suitable for the output format {s:?}, allowed formats are: custom-columns,json,name,wide,yaml")
    })
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

/// A reported failure: the message is already in kubectl's words.
struct Failed(String);

type Res<T> = Result<T, Failed>;

/// `deployment.apps` / `service`: the singular resource name kubectl prints.
fn singular(k: &ResourceKind) -> String {
    match k.api_version.split_once('/') {
        Some((group, _)) => format!("{}.{group}", k.kind.to_ascii_lowercase()),
        None => k.kind.to_ascii_lowercase(),
    }
}

/// `deployments.apps` / `services`: the plural kubectl prints in errors.
fn plural(k: &ResourceKind) -> String {
    match k.api_version.split_once('/') {
        Some((group, _)) => format!("{}.{group}", k.plural),
        None => k.plural.to_string(),
    }
}

/// An API error in kubectl's words.
fn server_error(e: &Error, k: &ResourceKind, name: &str) -> Failed {
    Failed(match e {
        Error::NotFound(_) => format!(
            "Error from server (NotFound): {} {name:?} not found",
            plural(k)
        ),
        Error::AlreadyExists(_) => format!(
            "Error from server (AlreadyExists): {} {name:?} already exists",
            plural(k)
        ),
        Error::Conflict(m) => format!("Error from server (Conflict): {m}"),
        // The server's message may already say `Kind "name" is invalid: ...`.
        Error::Invalid(m) if m.starts_with(&format!("{} {name:?} is invalid", k.kind)) => {
            format!("The {m}")
        }
        Error::Invalid(m) => format!("The {} {name:?} is invalid: {m}", k.kind),
        Error::Expired(m) => format!("Error from server (Expired): {m}"),
        Error::Unimplemented(m) => format!(
            "error: the server doesn't have a resource type {:?}: {m}",
            k.plural
        ),
        other => format!("error: {other}"),
    })
}

fn lookup_kind(name: &str) -> Res<&'static ResourceKind> {
    ResourceKind::lookup(name).ok_or_else(|| {
        Failed(format!(
            "error: the server doesn't have a resource type {name:?}"
        ))
    })
}

fn now() -> k8s_openapi::jiff::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// Expands -f arguments into (display name, contents) pairs.
fn read_sources(args: &[String], recursive: bool) -> Vec<Res<(String, String)>> {
    fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if recursive {
                    walk(&p, recursive, out)?;
                }
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for a in args {
        if a == "-" {
            let mut s = String::new();
            out.push(
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map(|_| ("-".to_string(), s))
                    .map_err(|e| Failed(format!("error: reading stdin: {e}"))),
            );
            continue;
        }
        let p = Path::new(a);
        if p.is_dir() {
            let mut files = Vec::new();
            if let Err(e) = walk(p, recursive, &mut files) {
                out.push(Err(Failed(format!("error: reading directory {a}: {e}"))));
            }
            for f in files {
                let name = f.display().to_string();
                out.push(
                    std::fs::read_to_string(&f)
                        .map(|s| (name.clone(), s))
                        .map_err(|e| Failed(format!("error: {name}: {e}"))),
                );
            }
        } else {
            out.push(
                std::fs::read_to_string(p)
                    .map(|s| (a.clone(), s))
                    .map_err(|e| Failed(format!("error: the path {a:?} cannot be read: {e}"))),
            );
        }
    }
    out
}

/// Parses every source completely before anything is sent; a file with any
/// bad document contributes nothing.
fn load_objects(
    cli: &Cli,
    files: &[String],
    recursive: bool,
    failed: &mut bool,
) -> Vec<(manifest::Object, String)> {
    let mut objs = Vec::new();
    for src in read_sources(files, recursive) {
        let (name, text) = match src {
            Ok(s) => s,
            Err(Failed(m)) => {
                eprintln!("{m}");
                *failed = true;
                continue;
            }
        };
        let parsed = manifest::parse_stream(&text, &name)
            .map_err(|e| format!("error: {e}"))
            .and_then(|os| {
                os.into_iter()
                    .map(|o| {
                        manifest::effective_namespace(&o, cli.namespace.as_deref())
                            .map(|ns| (o, ns))
                            .map_err(|e| format!("error: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
        match parsed {
            Ok(os) => objs.extend(os),
            Err(m) => {
                eprintln!("{m}");
                *failed = true;
            }
        }
    }
    objs
}

async fn apply_one(client: &Client, obj: &manifest::Object, ns: &str) -> Res<&'static str> {
    let mut value = obj.value.clone();
    if let Some(m) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        if obj.kind.namespaced {
            m.insert("namespace".into(), Value::String(ns.to_string()));
        } else {
            m.remove("namespace");
        }
    }
    // One retry on a write conflict: someone changed it between our get and update.
    for attempt in 0..2 {
        let stored = match client.get_json(obj.kind.kind, ns, &obj.name).await {
            Ok(b) => Some(serde_json::from_slice::<Value>(&b).map_err(|e| {
                Failed(format!(
                    "error: decoding {} {:?}: {e}",
                    obj.kind.kind, obj.name
                ))
            })?),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(server_error(&e, obj.kind, &obj.name)),
        };
        let r = match merge::plan(&value, stored.as_ref()) {
            merge::ApplyPlan::Unchanged => return Ok("unchanged"),
            merge::ApplyPlan::Create(v) => client
                .create_json(obj.kind.kind, json_bytes(&v), false)
                .await
                .map(|_| "created"),
            merge::ApplyPlan::Update(v) => client
                .update_json(obj.kind.kind, json_bytes(&v), false)
                .await
                .map(|_| "configured"),
        };
        match r {
            Ok(verb) => return Ok(verb),
            Err(e) if e.is_conflict() && attempt == 0 => continue,
            Err(e) => return Err(server_error(&e, obj.kind, &obj.name)),
        }
    }
    Err(Failed(format!(
        "error: {} {:?} kept changing; try again",
        obj.kind.kind, obj.name
    )))
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

async fn cmd_apply(cli: &Cli, client: &Client, files: &[String], recursive: bool) -> bool {
    let mut failed = false;
    for (obj, ns) in load_objects(cli, files, recursive, &mut failed) {
        match apply_one(client, &obj, &ns).await {
            Ok(verb) => println!("{}/{} {verb}", singular(obj.kind), obj.name),
            Err(Failed(m)) => {
                eprintln!("{m}");
                failed = true;
            }
        }
    }
    !failed
}

/// Splits `deploy/web` into kind and name.
fn split_kind_name(kind: &str, names: &[String]) -> (String, Vec<String>) {
    match kind.split_once('/') {
        Some((k, n)) => (
            k.to_string(),
            std::iter::once(n.to_string())
                .chain(names.iter().cloned())
                .collect(),
        ),
        None => (kind.to_string(), names.to_vec()),
    }
}

fn list_namespace(cli: &Cli, k: &ResourceKind, all: bool) -> String {
    if !k.namespaced || all {
        String::new()
    } else {
        cli.namespace.clone().unwrap_or_else(|| "default".into())
    }
}

async fn fetch(
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
            match client.get_json(k.kind, &ns, n).await {
                Ok(b) => match serde_json::from_slice::<Value>(&b) {
                    Ok(v) => objs.push(v),
                    Err(e) => {
                        eprintln!("error: decoding {} {n:?}: {e}", k.kind);
                        failed = true;
                    }
                },
                Err(e) => {
                    eprintln!("{}", server_error(&e, k, n).0);
                    failed = true;
                }
            }
        }
    }
    (objs, failed)
}

/// Parses a -l selector (empty when absent).
fn parse_selector(s: Option<&str>) -> Res<Selector> {
    Selector::parse(s.unwrap_or_default()).map_err(|e| Failed(format!("error: {e}")))
}

/// One line per object for `get --watch` output (table rows without the header).
fn watch_line(k: &ResourceKind, v: &Value, output: Option<Output>, all: bool) -> String {
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
async fn cmd_watch(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    all: bool,
    output: Option<Output>,
    sel: &Selector,
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
    let fields = names
        .first()
        .map(|n| format!("metadata.name={n}"))
        .unwrap_or_default();
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
        print!("{}", table::table(k.kind, &objs, &opts, now()));
    } else {
        for v in &objs {
            print!("{}", watch_line(k, v, output, all));
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
                    print!("{}", watch_line(k, &v, output, all));
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
struct GetOpts<'a> {
    fields: &'a str,
    label_columns: &'a [String],
    show_labels: bool,
    columns: Option<&'a [columns::Column]>,
}

#[allow(clippy::too_many_arguments)]
async fn cmd_get(
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
    let (kind, names) = split_kind_name(kind, names);
    let kinds: Vec<&str> = kind.split(',').filter(|k| !k.is_empty()).collect();
    let mut failed = false;
    let mut printed_any = false;
    let mut all_objs: Vec<Value> = Vec::new();
    for (i, kname) in kinds.iter().enumerate() {
        let k = match lookup_kind(kname) {
            Ok(k) => k,
            Err(Failed(m)) => {
                eprintln!("{m}");
                failed = true;
                continue;
            }
        };
        let (objs, f) = fetch(cli, client, k, &names, all, &sel, g.fields).await;
        failed |= f;
        if let Some(cols) = g.columns {
            if !objs.is_empty() {
                if printed_any {
                    println!();
                }
                print!("{}", columns::table(cols, &objs));
                printed_any = true;
            }
            continue;
        }
        match output {
            Some(Output::Yaml) | Some(Output::Json) => all_objs.extend(objs),
            Some(Output::Name) => {
                for v in &objs {
                    println!(
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
                    println!();
                }
                let opts = table::TableOpts {
                    wide: output == Some(Output::Wide),
                    all_namespaces: all && k.namespaced,
                    show_labels: g.show_labels,
                    label_columns: g.label_columns.to_vec(),
                };
                print!("{}", table::table(k.kind, &objs, &opts, now()));
                printed_any = true;
            }
        }
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
            print!("{text}");
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

fn delete_params(grace_period: i64, cascade: &str) -> Res<DeleteParams> {
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

async fn delete_one(
    client: &Client,
    k: &ResourceKind,
    ns: &str,
    name: &str,
    p: &DeleteParams,
    ignore_not_found: bool,
) -> bool {
    match client.delete_json(k.kind, ns, name, p).await {
        Ok(_) => {
            println!("{} {name:?} deleted", singular(k));
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
struct DeleteOpts<'a> {
    files: &'a [String],
    selector: Option<&'a str>,
    all: bool,
    grace_period: i64,
    cascade: &'a str,
    ignore_not_found: bool,
    wait: bool,
    timeout: u64,
}

/// Waits until every deleted object is gone (finalizers, graceful pod
/// deletion, foreground cascade), as `kubectl delete --wait` does.
async fn wait_deleted(
    client: &Client,
    gone: &[(&'static ResourceKind, String, String)],
    timeout: u64,
) -> bool {
    // kubectl's --timeout=0 means "a week".
    let secs = if timeout == 0 { 7 * 24 * 3600 } else { timeout };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    for (k, ns, name) in gone {
        loop {
            match client.get_json(k.kind, ns, name).await {
                Err(Error::NotFound(_)) => break,
                Err(e) => {
                    eprintln!("{}", server_error(&e, k, name).0);
                    return false;
                }
                Ok(_) if std::time::Instant::now() >= deadline => {
                    eprintln!(
                        "error: timed out waiting for the condition on {}/{name}",
                        plural(k)
                    );
                    return false;
                }
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }
    true
}

async fn cmd_delete(
    cli: &Cli,
    client: &Client,
    kind: Option<&str>,
    names: &[String],
    o: &DeleteOpts<'_>,
) -> bool {
    let params = match delete_params(o.grace_period, o.cascade) {
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
    let (kind, mut names) = split_kind_name(kind, names);
    let k = match lookup_kind(&kind) {
        Ok(k) => k,
        Err(Failed(m)) => {
            eprintln!("{m}");
            return false;
        }
    };
    let ns = list_namespace(cli, k, false);
    if o.selector.is_some() || o.all {
        if !names.is_empty() {
            eprintln!("error: name cannot be provided when a selector or --all is specified");
            return false;
        }
        let sel = match parse_selector(o.selector) {
            Ok(s) => s,
            Err(Failed(m)) => {
                eprintln!("{m}");
                return false;
            }
        };
        let (objs, f) = fetch(cli, client, k, &[], false, &sel, "").await;
        ok &= !f;
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
        return false;
    }
    for n in &names {
        if delete_one(client, k, &ns, n, &params, o.ignore_not_found).await {
            gone.push((k, ns.clone(), n.clone()));
        } else {
            ok = false;
        }
    }
    ok && (!o.wait || wait_deleted(client, &gone, o.timeout).await)
}

/// Kinds whose size is `spec.replicas`.
const SCALABLE: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "ReplicationController",
];

/// Sets `spec.replicas` of an object (pure; the caller writes it back).
fn set_replicas(obj: &mut Value, replicas: i32) -> Result<(), String> {
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

async fn scale_one(
    client: &Client,
    k: &ResourceKind,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Res<()> {
    for _ in 0..3 {
        let mut v: Value = match client.get_json(k.kind, ns, name).await {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Failed(format!("error: decoding {} {name:?}: {e}", k.kind)))?,
            Err(e) => return Err(server_error(&e, k, name)),
        };
        set_replicas(&mut v, replicas).map_err(|m| Failed(format!("error: {m}")))?;
        match client.update_json(k.kind, json_bytes(&v), false).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(server_error(&e, k, name)),
        }
    }
    Err(Failed(format!(
        "error: {} {name:?} kept changing; try again",
        k.kind
    )))
}

async fn cmd_scale(
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
            Ok(()) => println!("{}/{n} scaled", singular(k)),
            Err(Failed(m)) => {
                eprintln!("{m}");
                ok = false;
            }
        }
    }
    ok
}

/// Resolves `deployment/web` or `deployment web` to a Deployment name.
fn deployment_name(kind: &str, name: Option<&str>) -> Res<String> {
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

async fn cmd_rollout(cli: &Cli, client: &Client, cmd: &RolloutCmd) -> Res<()> {
    let ns = cli.namespace.clone().unwrap_or_else(|| "default".into());
    let dk = lookup_kind("Deployment")?;
    match cmd {
        RolloutCmd::Status {
            kind,
            name,
            timeout,
        } => {
            let name = deployment_name(kind, name.as_deref())?;
            let deadline = (*timeout > 0)
                .then(|| std::time::Instant::now() + std::time::Duration::from_secs(*timeout));
            let mut last = String::new();
            loop {
                let d: k8s_openapi::api::apps::v1::Deployment = client
                    .get(&ns, &name)
                    .await
                    .map_err(|e| server_error(&e, dk, &name))?;
                match rollout::progress(&d) {
                    rollout::Progress::Done(m) => {
                        println!("{m}");
                        return Ok(());
                    }
                    rollout::Progress::Waiting(m) => {
                        if m != last {
                            println!("{m}");
                            last = m;
                        }
                    }
                }
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Err(Failed("error: timed out waiting for the condition".into()));
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        RolloutCmd::History {
            kind,
            name,
            revision,
        } => {
            let name = deployment_name(kind, name.as_deref())?;
            verbs::rollout_history(cli, client, &name, *revision).await
        }
        RolloutCmd::Undo {
            kind,
            name,
            to_revision,
        } => {
            let name = deployment_name(kind, name.as_deref())?;
            for _ in 0..3 {
                let mut d: k8s_openapi::api::apps::v1::Deployment = client
                    .get(&ns, &name)
                    .await
                    .map_err(|e| server_error(&e, dk, &name))?;
                let uid = d.metadata.uid.clone().unwrap_or_default();
                let owned: Vec<k8s_openapi::api::apps::v1::ReplicaSet> = client
                    .list(&ns, &ListParams::default())
                    .await
                    .map_err(|e| server_error(&e, dk, &name))?
                    .items
                    .into_iter()
                    .filter(|rs: &k8s_openapi::api::apps::v1::ReplicaSet| {
                        rs.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|r| r.uid == uid && r.controller == Some(true))
                    })
                    .collect();
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
                    println!(
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
                        println!("{}/{name} rolled back", singular(dk));
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

/// The config file's path: $WEIR_CONFIG, else ~/.weir/config.yaml.
fn config_path() -> Option<PathBuf> {
    std::env::var("WEIR_CONFIG")
        .ok()
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| Path::new(&h).join(".weir/config.yaml"))
        })
}

/// Reads the environment and the config file once, then resolves the
/// address and the context's namespace.
fn server_address(cli: &Cli) -> Result<config::Resolved, String> {
    let env = std::env::var("WEIR_SERVER").ok();
    let file = config_path().and_then(|p| {
        std::fs::read_to_string(&p)
            .ok()
            .map(|t| (p.display().to_string(), t))
    });
    config::resolve(
        cli.server.as_deref(),
        env.as_deref(),
        file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
    )
    .map_err(|e| format!("error: {e}"))
}

/// `explain KIND[.field.path]`: from the compiled-in types; needs no server.
fn cmd_explain(path: &str) -> Res<()> {
    let mut parts = path.split('.').filter(|p| !p.is_empty());
    let kind = parts.next().unwrap_or_default();
    let k = lookup_kind(kind)?;
    let fields: Vec<String> = parts.map(str::to_string).collect();
    let text = explain::explain(k, &fields).map_err(|m| Failed(format!("error: {m}")))?;
    print!("{text}");
    Ok(())
}

/// `config ...`: edits the config file; needs no server.
fn cmd_config(cmd: &ConfigCmd, namespace: Option<&str>) -> Res<()> {
    let path = config_path()
        .ok_or_else(|| Failed("error: neither $WEIR_CONFIG nor $HOME is set".into()))?;
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Failed(format!("error: reading {shown}: {e}"))),
    };
    let mut cfg = config::parse(&shown, &text).map_err(|e| Failed(format!("error: {e}")))?;
    let message = match cmd {
        ConfigCmd::GetContexts => {
            print!("{}", cfg.contexts_table());
            return Ok(());
        }
        ConfigCmd::CurrentContext => {
            return match &cfg.current_context {
                Some(c) => {
                    println!("{c}");
                    Ok(())
                }
                None => Err(Failed("error: current-context is not set".into())),
            };
        }
        ConfigCmd::UseContext { name } => {
            cfg.use_context(name)
                .map_err(|e| Failed(format!("error: {e}")))?;
            format!("Switched to context {name:?}.")
        }
        ConfigCmd::SetContext { name, server } => {
            let created = cfg
                .set_context(name, server.as_deref(), namespace)
                .map_err(|e| Failed(format!("error: {e}")))?;
            format!(
                "Context {name:?} {}.",
                if created { "created" } else { "modified" }
            )
        }
    };
    let out = serde_yaml::to_string(&cfg).map_err(|e| Failed(format!("error: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failed(format!("error: creating {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, out).map_err(|e| Failed(format!("error: writing {shown}: {e}")))?;
    println!("{message}");
    Ok(())
}

/// `create ...`: builds the object (pure), then creates or prints it.
async fn cmd_create(cli: &Cli, client: &Client, what: &CreateCmd) -> Res<()> {
    let ns = cli.namespace.clone().unwrap_or_else(|| "default".into());
    let bad = |m: String| Failed(format!("error: {m}"));
    let (obj, dry, output) = match what {
        CreateCmd::Namespace {
            name,
            dry_run,
            output,
        } => (create::namespace(name), dry_run, output),
        CreateCmd::Deployment {
            name,
            image,
            replicas,
            port,
            dry_run,
            output,
        } => {
            if *replicas < 0 {
                return Err(bad(format!(
                    "--replicas={replicas} must be greater than or equal to 0"
                )));
            }
            (
                create::deployment(name, &ns, image, *replicas, *port),
                dry_run,
                output,
            )
        }
        CreateCmd::Service {
            type_,
            name,
            tcp,
            dry_run,
            output,
        } => (
            create::service(name, &ns, type_, tcp).map_err(bad)?,
            dry_run,
            output,
        ),
        CreateCmd::Configmap {
            name,
            from_literal,
            dry_run,
            output,
        } => (
            create::configmap(
                name,
                &ns,
                &create::parse_literals(from_literal).map_err(bad)?,
            ),
            dry_run,
            output,
        ),
        CreateCmd::Secret {
            type_,
            name,
            from_literal,
            dry_run,
            output,
        } => {
            if type_ != "generic" {
                return Err(bad(format!(
                    "unknown secret type {type_:?}: only \"generic\" is supported"
                )));
            }
            (
                create::secret(
                    name,
                    &ns,
                    &create::parse_literals(from_literal).map_err(bad)?,
                ),
                dry_run,
                output,
            )
        }
    };
    let dry = verbs::parse_dry_run(dry.as_deref())?;
    verbs::create_or_print(client, &obj, dry, output.as_deref()).await
}

/// Flags of `expose`.
struct ExposeFlags<'a> {
    opts: create::ExposeOpts,
    dry_run: Option<&'a str>,
    output: Option<&'a str>,
}

async fn cmd_expose(
    cli: &Cli,
    client: &Client,
    kind: &str,
    names: &[String],
    f: &ExposeFlags<'_>,
) -> Res<()> {
    let (kind, names) = split_kind_name(kind, names);
    let k = lookup_kind(&kind)?;
    let [name] = names.as_slice() else {
        return Err(Failed(
            "error: specify exactly one object to expose, e.g. deployment/web".into(),
        ));
    };
    let ns = list_namespace(cli, k, false);
    let src = verbs::get_value(client, k, &ns, name).await?;
    let svc = create::expose(&src, &ns, &f.opts).map_err(|m| Failed(format!("error: {m}")))?;
    let dry = verbs::parse_dry_run(f.dry_run)?;
    match (dry, f.output) {
        (verbs::DryRun::None, None) => {
            let sk = lookup_kind("Service")?;
            let sname = svc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            client
                .create_json("Service", json_bytes(&svc), false)
                .await
                .map_err(|e| server_error(&e, sk, &sname))?;
            println!("service/{sname} exposed");
            Ok(())
        }
        _ => verbs::create_or_print(client, &svc, dry, f.output).await,
    }
}

fn to_bool(r: Res<()>) -> bool {
    match r {
        Ok(()) => true,
        Err(Failed(m)) => {
            if !m.is_empty() {
                eprintln!("{m}");
            }
            false
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // Verbs that need no server.
    match &cli.cmd {
        Cmd::Explain { path } => return exit(to_bool(cmd_explain(path))),
        Cmd::Config { cmd } => return exit(to_bool(cmd_config(cmd, cli.namespace.as_deref()))),
        Cmd::Completion { shell } => {
            // Generated into memory: clap_complete panics on a write error,
            // and `weir completion bash | head` closes the pipe early.
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "weir", &mut script);
            return exit(std::io::Write::write_all(&mut std::io::stdout(), &script).is_ok());
        }
        _ => {}
    }
    let resolved = match server_address(&cli) {
        Ok(a) => a,
        Err(m) => {
            eprintln!("{m}");
            return ExitCode::FAILURE;
        }
    };
    if cli.namespace.is_none() {
        cli.namespace = resolved.namespace.clone();
    }
    let addr = resolved.server;
    let client = match Client::connect(&addr).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "The connection to the server {addr} was refused - did you specify the right host or port? ({e})"
            );
            return ExitCode::FAILURE;
        }
    };
    let cli = &cli;
    let client = &client;
    let ok = match &cli.cmd {
        Cmd::Apply { files, recursive } => cmd_apply(cli, client, files, *recursive).await,
        Cmd::Get {
            kind,
            names,
            all_namespaces,
            output,
            selector,
            watch: true,
            ..
        } => {
            let sel = match Selector::parse(selector.as_deref().unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (kind, names) = split_kind_name(kind, names);
            let output = output.as_ref().and_then(OutputArg::simple);
            cmd_watch(cli, client, &kind, &names, *all_namespaces, output, &sel).await
        }
        Cmd::Get {
            kind,
            names,
            all_namespaces,
            output,
            selector,
            field_selector,
            label_columns,
            show_labels,
            watch: false,
        } => {
            let cols = match output {
                Some(OutputArg::Columns(c)) => Some(c.as_slice()),
                _ => None,
            };
            let g = GetOpts {
                fields: field_selector.as_deref().unwrap_or_default(),
                label_columns,
                show_labels: *show_labels,
                columns: cols,
            };
            let output = output.as_ref().and_then(OutputArg::simple);
            cmd_get(
                cli,
                client,
                kind,
                names,
                *all_namespaces,
                output,
                selector.as_deref(),
                &g,
            )
            .await
        }
        Cmd::Describe {
            kind,
            names,
            selector,
        } => to_bool(verbs::describe(cli, client, kind, names, selector.as_deref()).await),
        Cmd::Delete {
            kind,
            names,
            files,
            selector,
            grace_period,
            cascade,
            ignore_not_found,
            all,
            wait,
            timeout,
        } => {
            let o = DeleteOpts {
                files,
                selector: selector.as_deref(),
                all: *all,
                grace_period: *grace_period,
                cascade,
                ignore_not_found: *ignore_not_found,
                wait: *wait,
                timeout: *timeout,
            };
            cmd_delete(cli, client, kind.as_deref(), names, &o).await
        }
        Cmd::Create { what } => to_bool(cmd_create(cli, client, what).await),
        Cmd::Label {
            kind,
            args,
            overwrite,
            selector,
        } => to_bool(
            verbs::label(
                cli,
                client,
                "labels",
                kind,
                args,
                *overwrite,
                selector.as_deref(),
            )
            .await,
        ),
        Cmd::Annotate {
            kind,
            args,
            overwrite,
            selector,
        } => to_bool(
            verbs::label(
                cli,
                client,
                "annotations",
                kind,
                args,
                *overwrite,
                selector.as_deref(),
            )
            .await,
        ),
        Cmd::Patch {
            kind,
            names,
            patch,
            type_,
        } => to_bool(verbs::patch(cli, client, kind, names, patch, type_).await),
        Cmd::Expose {
            kind,
            names,
            port,
            target_port,
            name,
            type_,
            protocol,
            dry_run,
            output,
        } => {
            let f = ExposeFlags {
                opts: create::ExposeOpts {
                    name: name.clone(),
                    port: *port,
                    target_port: target_port.clone(),
                    type_: type_.clone(),
                    protocol: protocol.clone(),
                },
                dry_run: dry_run.as_deref(),
                output: output.as_deref(),
            };
            to_bool(cmd_expose(cli, client, kind, names, &f).await)
        }
        Cmd::Set {
            what: SetCmd::Image { kind, args },
        } => to_bool(verbs::set_image(cli, client, kind, args).await),
        Cmd::Edit { kind, names } => {
            let editor = ["WEIR_EDITOR", "KUBE_EDITOR", "EDITOR"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()));
            to_bool(verbs::edit(cli, client, kind, names, editor).await)
        }
        Cmd::Rollout { cmd } => to_bool(cmd_rollout(cli, client, cmd).await),
        Cmd::Scale {
            kind,
            names,
            replicas,
        } => cmd_scale(cli, client, kind, names, *replicas).await,
        Cmd::Config { .. } | Cmd::Completion { .. } | Cmd::Explain { .. } => true,
    };
    exit(ok)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_like_kubectl() {
        let d = ResourceKind::by_kind("Deployment").unwrap();
        let s = ResourceKind::by_kind("Service").unwrap();
        assert_eq!(
            (singular(d), plural(d)),
            (
                "deployment.apps".to_string(),
                "deployments.apps".to_string()
            )
        );
        assert_eq!(
            (singular(s), plural(s)),
            ("service".to_string(), "services".to_string())
        );
        let e = server_error(
            &Error::NotFound("whatever".into()),
            ResourceKind::by_kind("Pod").unwrap(),
            "x",
        );
        assert_eq!(e.0, "Error from server (NotFound): pods \"x\" not found");
    }

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

    #[test]
    fn kind_name_forms() {
        assert_eq!(
            split_kind_name("deploy/web", &[]),
            ("deploy".to_string(), vec!["web".to_string()])
        );
        assert_eq!(
            split_kind_name("pods", &["a".into()]),
            ("pods".to_string(), vec!["a".to_string()])
        );
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

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from(["weir", "get", "pods", "-A", "-o", "wide", "-l", "app=web"])
            .expect("parses");
        assert!(matches!(
            c.cmd,
            Cmd::Get {
                all_namespaces: true,
                output: Some(OutputArg::Simple(Output::Wide)),
                ..
            }
        ));
        let c = Cli::try_parse_from([
            "weir",
            "delete",
            "pod",
            "x",
            "--grace-period=0",
            "-n",
            "prod",
        ])
        .expect("parses");
        assert_eq!(c.namespace.as_deref(), Some("prod"));
        assert!(
            Cli::try_parse_from(["weir", "apply"]).is_err(),
            "-f is required"
        );
    }

    #[test]
    fn new_verbs_parse() {
        let c = Cli::try_parse_from([
            "weir",
            "get",
            "po",
            "-o",
            "custom-columns=NAME:.metadata.name,IP:.status.podIP",
            "-L",
            "app,tier",
            "--show-labels",
            "--field-selector",
            "status.phase=Running",
        ])
        .expect("parses");
        let Cmd::Get {
            output: Some(OutputArg::Columns(cols)),
            label_columns,
            show_labels: true,
            field_selector,
            ..
        } = c.cmd
        else {
            panic!("not a get with columns: {c:?}");
        };
        assert_eq!(
            cols.iter().map(|c| c.header.as_str()).collect::<Vec<_>>(),
            ["NAME", "IP"]
        );
        assert_eq!(label_columns, ["app", "tier"]);
        assert_eq!(field_selector.as_deref(), Some("status.phase=Running"));
        assert!(Cli::try_parse_from(["weir", "get", "po", "-o", "custom-columns=bad"]).is_err());
        assert!(Cli::try_parse_from(["weir", "get", "po", "-o", "table"]).is_err());

        // delete: --wait defaults to true like kubectl; --wait=false turns it off.
        let c = Cli::try_parse_from(["weir", "delete", "po", "--all", "--cascade=orphan"])
            .expect("parses");
        assert!(matches!(
            c.cmd,
            Cmd::Delete {
                all: true,
                wait: true,
                ..
            }
        ));
        let c = Cli::try_parse_from(["weir", "delete", "po", "x", "--wait=false"]).expect("parses");
        assert!(matches!(c.cmd, Cmd::Delete { wait: false, .. }));

        let c = Cli::try_parse_from([
            "weir",
            "create",
            "deployment",
            "web",
            "--image",
            "nginx",
            "--replicas",
            "3",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .expect("parses");
        assert!(matches!(
            c.cmd,
            Cmd::Create { what: CreateCmd::Deployment { replicas: 3, ref dry_run, ref output, .. } }
                if dry_run.as_deref() == Some("client") && output.as_deref() == Some("yaml")
        ));
        let c = Cli::try_parse_from([
            "weir",
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
        ])
        .expect("parses");
        assert!(
            matches!(c.cmd, Cmd::Create { what: CreateCmd::Service { ref type_, .. } } if type_ == "clusterip")
        );
        let c = Cli::try_parse_from([
            "weir",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=a=b",
        ])
        .expect("parses");
        assert!(matches!(
            c.cmd,
            Cmd::Create {
                what: CreateCmd::Secret { .. }
            }
        ));

        let c = Cli::try_parse_from([
            "weir",
            "label",
            "po",
            "web",
            "app=x",
            "tier-",
            "--overwrite",
        ])
        .expect("parses");
        assert!(matches!(c.cmd, Cmd::Label { overwrite: true, ref args, .. } if args.len() == 3));
        let c = Cli::try_parse_from(["weir", "patch", "deploy", "web", "-p", "{\"spec\":{}}"])
            .expect("parses");
        assert!(matches!(c.cmd, Cmd::Patch { ref type_, .. } if type_ == "merge"));
        let c = Cli::try_parse_from([
            "weir",
            "expose",
            "deploy/web",
            "--port=80",
            "--target-port=8080",
            "--type=NodePort",
        ])
        .expect("parses");
        assert!(matches!(c.cmd, Cmd::Expose { port: Some(80), .. }));
        let c = Cli::try_parse_from(["weir", "rollout", "history", "deploy/web", "--revision=2"])
            .expect("parses");
        assert!(matches!(
            c.cmd,
            Cmd::Rollout {
                cmd: RolloutCmd::History { revision: 2, .. }
            }
        ));
        let c = Cli::try_parse_from([
            "weir",
            "config",
            "set-context",
            "lab",
            "--server",
            "h:1",
            "--namespace",
            "x",
        ])
        .expect("parses");
        assert!(matches!(
            c.cmd,
            Cmd::Config {
                cmd: ConfigCmd::SetContext { .. }
            }
        ));
        let c = Cli::try_parse_from(["weir", "completion", "zsh"]).expect("parses");
        assert!(matches!(
            c.cmd,
            Cmd::Completion {
                shell: clap_complete::Shell::Zsh
            }
        ));
        // The whole command tree is consistent (clap's own checks).
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
