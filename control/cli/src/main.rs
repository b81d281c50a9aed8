//! `weir`: the command-line client of a weir cluster, shaped like kubectl
//! so the same habits and manifests work.
//!
//! Every decision is a pure function in its own module, tested with tables:
//! `args` (the command line), `manifest` (document splitting), `merge`
//! (apply's 3-way merge), `patch` (merge patch, label/annotate, set image),
//! `create` (objects from flags, expose), `table`/`table_kinds`/`columns`
//! (get's output), `describe`, `explain`, `rollout`, `config` (server and
//! contexts). The verb modules (`get`, `delete`, `workload`, `verbs`) and
//! this file do the I/O and turn errors into kubectl's messages and exit codes.
#![forbid(unsafe_code)]

/// `print!` that ends the process quietly when stdout is gone
/// (`weir get pods | head`), as kubectl does, instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(141);
        }
    }};
}

/// `println!` with [`out!`]'s handling of a closed stdout.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(141);
        }
    }};
}

mod args;
mod columns;
mod config;
mod create;
mod datapath;
mod delete;
mod describe;
mod explain;
mod get;
mod jsonpath;
mod manifest;
mod merge;
mod nodeapi;
mod observe;
mod patch;
mod rollout;
mod strategic;
mod table;
mod table_kinds;
mod verbs;
mod wait;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;
use weir_api::ResourceKind;
use weir_api::selector::Selector;
use weir_client::{Client, Error};

use args::{Cli, Cmd, ConfigCmd, CreateCmd, OutputArg, SetCmd};
use delete::{DeleteOpts, cmd_delete};
use get::{GetOpts, cmd_get, cmd_watch};
use workload::{cmd_rollout, cmd_scale};

/// A reported failure: the message is already in kubectl's words.
struct Failed(String);

type Res<T> = Result<T, Failed>;

/// `name` qualified by `k`'s API group, if it has one: `deployments.apps`.
fn with_group(k: &ResourceKind, name: &str) -> String {
    match k.api_version.split_once('/') {
        Some((group, _)) => format!("{name}.{group}"),
        None => name.to_string(),
    }
}

/// `deployment.apps` / `service`: the singular resource name kubectl prints.
fn singular(k: &ResourceKind) -> String {
    with_group(k, &k.kind.to_ascii_lowercase())
}

/// `deployments.apps` / `services`: the plural kubectl prints in errors.
fn plural(k: &ResourceKind) -> String {
    with_group(k, k.plural)
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
            Ok(verb) => outln!("{}/{} {verb}", singular(obj.kind), obj.name),
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

/// `KIND NAME` or `KIND/NAME` naming exactly one object (patch, edit,
/// expose): its kind, name and namespace.
fn one_object(
    cli: &Cli,
    kind: &str,
    names: &[String],
    verb: &str,
) -> Res<(&'static ResourceKind, String, String)> {
    let (kind, names) = split_kind_name(kind, names);
    let k = lookup_kind(&kind)?;
    let [name] = names.as_slice() else {
        return Err(Failed(format!(
            "error: specify exactly one object to {verb}, e.g. deployment/web"
        )));
    };
    Ok((k, name.clone(), list_namespace(cli, k, false)))
}

fn list_namespace(cli: &Cli, k: &ResourceKind, all: bool) -> String {
    if !k.namespaced || all {
        String::new()
    } else {
        cli.namespace.clone().unwrap_or_else(|| "default".into())
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
        cli.context.as_deref(),
    )
    .map_err(|e| format!("error: {e}"))
}

/// `explain KIND[.field.path]`: from the compiled-in types; needs no server.
fn cmd_explain(path: &str, recursive: bool) -> Res<()> {
    let mut parts = path.split('.').filter(|p| !p.is_empty());
    let kind = parts.next().unwrap_or_default();
    let k = lookup_kind(kind)?;
    let fields: Vec<String> = parts.map(str::to_string).collect();
    let text =
        explain::explain(k, &fields, recursive).map_err(|m| Failed(format!("error: {m}")))?;
    out!("{text}");
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
            out!("{}", cfg.contexts_table());
            return Ok(());
        }
        ConfigCmd::CurrentContext => {
            return match &cfg.current_context {
                Some(c) => {
                    outln!("{c}");
                    Ok(())
                }
                None => Err(Failed("error: current-context is not set".into())),
            };
        }
        ConfigCmd::View => {
            out!("{}", serde_yaml::to_string(&cfg).unwrap_or_default());
            return Ok(());
        }
        ConfigCmd::DeleteContext { name } => {
            cfg.delete_context(name)
                .map_err(|e| Failed(format!("error: {e}")))?;
            format!("deleted context {name} from {shown}")
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
    outln!("{message}");
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

/// `create -f`: like apply, but an existing object is an error
/// (AlreadyExists) and no last-applied annotation is written.
async fn cmd_create_files(cli: &Cli, client: &Client, files: &[String]) -> bool {
    let mut failed = false;
    for (obj, ns) in load_objects(cli, files, false, &mut failed) {
        let mut value = obj.value.clone();
        if let Some(m) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            if obj.kind.namespaced {
                m.insert("namespace".into(), Value::String(ns.clone()));
            } else {
                m.remove("namespace");
            }
        }
        match client
            .create_json(obj.kind.kind, json_bytes(&value), false)
            .await
        {
            Ok(_) => outln!("{}/{} created", singular(obj.kind), obj.name),
            Err(e) => {
                eprintln!("{}", server_error(&e, obj.kind, &obj.name).0);
                failed = true;
            }
        }
    }
    !failed
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
    let (k, name, ns) = one_object(cli, kind, names, "expose")?;
    let name = name.as_str();
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
            outln!("service/{sname} exposed");
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
        Cmd::Explain { path, recursive } => return exit(to_bool(cmd_explain(path, *recursive))),
        Cmd::ApiResources => {
            out!("{}", table::api_resources(weir_api::KINDS));
            return ExitCode::SUCCESS;
        }
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
            field_selector,
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
            cmd_watch(
                cli,
                client,
                &kind,
                &names,
                *all_namespaces,
                output,
                &sel,
                field_selector.as_deref().unwrap_or_default(),
            )
            .await
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
            no_headers,
            sort_by,
            watch: false,
        } => {
            let cols = match output {
                Some(OutputArg::Columns(c)) => Some(c.as_slice()),
                _ => None,
            };
            let jsonpath = match output {
                Some(OutputArg::JsonPath(t)) => Some(t.as_slice()),
                _ => None,
            };
            let g = GetOpts {
                fields: field_selector.as_deref().unwrap_or_default(),
                label_columns,
                show_labels: *show_labels,
                no_headers: *no_headers,
                columns: cols,
                jsonpath,
                sort_by: sort_by.as_ref().map(|p| p.0.as_slice()),
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
            force,
            now,
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
                force: *force,
                now: *now,
                wait: *wait,
                timeout: *timeout,
            };
            cmd_delete(cli, client, kind.as_deref(), names, &o).await
        }
        Cmd::Create {
            what: Some(what), ..
        } => to_bool(cmd_create(cli, client, what).await),
        Cmd::Create { what: None, files } if !files.is_empty() => {
            cmd_create_files(cli, client, files).await
        }
        Cmd::Create { .. } => {
            eprintln!(
                "error: must specify one of -f or a kind to create (namespace, deployment, service, configmap, secret)"
            );
            false
        }
        Cmd::Label {
            kind,
            args,
            overwrite,
            selector,
            all,
        }
        | Cmd::Annotate {
            kind,
            args,
            overwrite,
            selector,
            all,
        } => to_bool(
            verbs::label(
                cli,
                client,
                if matches!(cli.cmd, Cmd::Label { .. }) {
                    "labels"
                } else {
                    "annotations"
                },
                kind,
                args,
                *overwrite,
                // --all is the empty selector: it matches everything.
                selector.as_deref().or(all.then_some("")),
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
        Cmd::Observe {
            pod,
            verdict,
            node,
            since,
            last,
            follow,
            output,
            agent_port,
        } => {
            let json = match output.as_deref() {
                None => false,
                Some("json") => true,
                Some(other) => {
                    eprintln!(
                        "error: unable to match a printer suitable for the output format {other:?}, allowed formats are: json"
                    );
                    return ExitCode::FAILURE;
                }
            };
            let o = observe::ObserveOpts {
                pod: pod.clone(),
                verdict: verdict.clone(),
                node: node.clone(),
                since: since.clone(),
                last: *last,
                follow: *follow,
                json,
                agent_port: *agent_port,
            };
            let ns = cli.namespace.as_deref().unwrap_or("default");
            to_bool(observe::cmd_observe(client, ns, &o).await)
        }
        Cmd::Datapath {
            what,
            node,
            agent_port,
        } => {
            use weir_client::agent::proto::datapath_request::View;
            let view = match what {
                args::DatapathWhat::Services => View::Services,
                args::DatapathWhat::Backends => View::Backends,
                args::DatapathWhat::Conntrack => View::Conntrack,
                args::DatapathWhat::Stats => View::Stats,
            };
            to_bool(datapath::cmd_datapath(client, view, node.as_deref(), *agent_port).await)
        }
        Cmd::Config { .. } | Cmd::Completion { .. } | Cmd::Explain { .. } | Cmd::ApiResources => {
            true
        }
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
}
