//! The command line: every verb and flag, parsed by clap into plain data.
//! Nothing here does I/O; `main` dispatches on [`Cmd`].

use clap::{Parser, Subcommand, ValueEnum};

use crate::columns;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Command-line client of a weir cluster (kubectl-like)"
)]
pub(crate) struct Cli {
    /// API server address (http://HOST:PORT or unix:///path); else $WEIR_SERVER,
    /// else the config file ($WEIR_CONFIG or ~/.weir/config.yaml).
    #[arg(long, global = true)]
    pub(crate) server: Option<String>,
    /// Namespace to work in (default: "default").
    #[arg(short = 'n', long, global = true)]
    pub(crate) namespace: Option<String>,
    /// The config file context to use for this command (else current-context).
    #[arg(long, global = true)]
    pub(crate) context: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
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
        /// Print tables without their header line.
        #[arg(long)]
        no_headers: bool,
        /// Sort by a field, e.g. .metadata.creationTimestamp or .spec.replicas.
        #[arg(long, value_parser = parse_sort_path)]
        sort_by: Option<FieldPath>,
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
        /// Create the objects of these manifests (fails on existing ones, unlike apply).
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        #[command(subcommand)]
        what: Option<CreateCmd>,
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
        /// Every object of the kind in the namespace.
        #[arg(long)]
        all: bool,
    },
    /// Add, change (--overwrite) or remove (`key-`) annotations.
    Annotate {
        kind: String,
        args: Vec<String>,
        #[arg(long)]
        overwrite: bool,
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Every object of the kind in the namespace.
        #[arg(long)]
        all: bool,
    },
    /// Change fields of an object with a strategic, merge or JSON patch.
    Patch {
        kind: String,
        names: Vec<String>,
        /// The patch, JSON (or YAML), e.g. '{"spec":{"replicas":3}}'.
        #[arg(short = 'p', long)]
        patch: String,
        /// strategic (kubectl's default), merge (RFC 7386) or json (RFC 6902).
        #[arg(long = "type", default_value = "strategic")]
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
    /// The kinds this server serves, with short names and scope.
    ApiResources,
    /// Fields and types of a kind or a field path (deployment.spec.template).
    Explain {
        /// KIND[.field.path]
        path: String,
        /// Every field below the path, as an indented tree.
        #[arg(long)]
        recursive: bool,
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
        /// Delete at once (grace period 0) without waiting for the node to confirm.
        #[arg(long)]
        force: bool,
        /// Grace period 1: ask for an immediate, still graceful, shutdown.
        #[arg(long)]
        now: bool,
        /// Delete every object of the kind in the namespace.
        #[arg(long)]
        all: bool,
        /// Wait until the objects are gone (like kubectl, on by default; --wait=false to not).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        wait: bool,
        /// Give up waiting after this long (a Go duration like 30s, 5m, 1h30m, or
        /// seconds; 0: a week, like kubectl).
        #[arg(long, default_value = "0", value_parser = parse_timeout)]
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
    /// Flows the nodes' datapaths judged (policy verdicts and drops), like
    /// `hubble observe`: from every node's agent, merged by time.
    Observe {
        /// Only flows from or to this pod: NAMESPACE/NAME, or NAME in -n's namespace.
        #[arg(long)]
        pod: Option<String>,
        /// forwarded or dropped.
        #[arg(long)]
        verdict: Option<String>,
        /// Only this node's flows.
        #[arg(long)]
        node: Option<String>,
        /// Flows of the last DURATION (30s, 5m, 1h): all of them unless --last.
        #[arg(long)]
        since: Option<String>,
        /// The N most recent flows (default 20; with -f alone: none).
        #[arg(long)]
        last: Option<u32>,
        /// Keep printing new flows.
        #[arg(short = 'f', long)]
        follow: bool,
        /// json: one object per line.
        #[arg(short = 'o', long)]
        output: Option<String>,
        /// Port of the agents' node API (weir-agent --api-addr).
        #[arg(long, default_value_t = weir_client::agent::DEFAULT_PORT)]
        agent_port: u16,
    },
    /// What the nodes' kernel datapaths hold, read through their agents.
    Datapath {
        #[arg(value_enum)]
        what: DatapathWhat,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Port of the agents' node API (weir-agent --api-addr).
        #[arg(long, default_value_t = weir_client::agent::DEFAULT_PORT)]
        agent_port: u16,
    },
}

/// What `weir datapath` shows.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum DatapathWhat {
    /// Frontends (ClusterIP, NodePort, external and LoadBalancer IPs) with their backends.
    Services,
    /// Backends with the frontends that send to them.
    Backends,
    /// Connections the datapath translated, both directions.
    Conntrack,
    /// Entry counts, flows seen and lost, drop counters by reason.
    Stats,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RolloutCmd {
    /// Wait until the rollout finishes (or the timeout passes).
    Status {
        /// deployment/NAME, daemonset/NAME or statefulset/NAME (or `KIND NAME`).
        kind: String,
        name: Option<String>,
        /// Give up after this long (a Go duration like 30s, 5m, 1h30m, or
        /// seconds; 0: wait forever).
        #[arg(long, default_value = "0", value_parser = parse_timeout)]
        timeout: u64,
    },
    /// List the revisions of a Deployment, DaemonSet or StatefulSet (or
    /// show one with --revision).
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
    /// Replace every pod (a new revision with a restartedAt annotation).
    Restart { kind: String, name: Option<String> },
    /// Stop rolling out template changes until resumed.
    Pause { kind: String, name: Option<String> },
    /// Resume a paused rollout.
    Resume { kind: String, name: Option<String> },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CreateCmd {
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
pub(crate) enum SetCmd {
    /// `set image deployment/web CONTAINER=IMAGE ...` (`*=IMAGE` for all).
    Image { kind: String, args: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCmd {
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context.
    UseContext { name: String },
    /// Remove a context (and unset current-context if it was current).
    DeleteContext { name: String },
    /// Print the config file.
    View,
    /// Create or change a context.
    /// Create or change a context (its namespace is the global -n/--namespace).
    SetContext {
        name: String,
        #[arg(long)]
        server: Option<String>,
    },
}

/// A parsed field path (one value: clap would read `Vec` as many).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldPath(pub(crate) Vec<columns::Step>);

fn parse_sort_path(s: &str) -> Result<FieldPath, String> {
    columns::parse_path(s).map(FieldPath)
}

/// `-o`: the fixed formats or custom columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OutputArg {
    Simple(Output),
    Columns(Vec<columns::Column>),
    JsonPath(Vec<crate::jsonpath::Seg>),
}

impl OutputArg {
    pub(crate) fn simple(&self) -> Option<Output> {
        match self {
            OutputArg::Simple(o) => Some(*o),
            OutputArg::Columns(_) | OutputArg::JsonPath(_) => None,
        }
    }
}

pub(crate) fn parse_output(s: &str) -> Result<OutputArg, String> {
    if let Some(spec) = s.strip_prefix("custom-columns=") {
        return columns::parse_spec(spec).map(OutputArg::Columns);
    }
    if let Some(t) = s.strip_prefix("jsonpath=") {
        return crate::jsonpath::parse(t).map(OutputArg::JsonPath);
    }
    Output::from_str(s, true).map(OutputArg::Simple).map_err(|_| {
        format!("unable to match a printer suitable for the output format {s:?}, allowed formats are: custom-columns,json,jsonpath,name,wide,yaml")
    })
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = Cli::try_parse_from(["weir", "get", "po", "--sort-by", ".spec.replicas"])
            .expect("parses");
        assert!(matches!(c.cmd, Cmd::Get { sort_by: Some(FieldPath(ref p)), .. } if p.len() == 2));
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
            Cmd::Create { what: Some(CreateCmd::Deployment { replicas: 3, ref dry_run, ref output, .. }), .. }
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
            matches!(c.cmd, Cmd::Create { what: Some(CreateCmd::Service { ref type_, .. }), .. } if type_ == "clusterip")
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
                what: Some(CreateCmd::Secret { .. }),
                ..
            }
        ));
        let c = Cli::try_parse_from(["weir", "create", "-f", "a.yaml"]).expect("parses");
        assert!(matches!(c.cmd, Cmd::Create { what: None, ref files } if files.len() == 1));

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
        assert!(matches!(c.cmd, Cmd::Patch { ref type_, .. } if type_ == "strategic"));
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

/// kubectl's `--timeout` values: a Go duration (`300ms`, `30s`, `5m`,
/// `1h30m`) or a bare number of seconds, in whole seconds rounded up (a
/// sub-second timeout still waits, it does not mean "forever").
pub(crate) fn parse_timeout(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30s, 5m, 1h30m or a number of seconds");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs);
    }
    let mut millis: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let per: u64 = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
        millis = n
            .checked_mul(per)
            .and_then(|v| millis.checked_add(v))
            .ok_or_else(bad)?;
    }
    if s.is_empty() {
        return Err(bad());
    }
    Ok(millis.div_ceil(1_000))
}

#[cfg(test)]
mod timeout_tests {
    use super::parse_timeout;

    #[test]
    fn kubectl_durations() {
        for (s, want) in [
            ("0", Ok(0)),
            ("30", Ok(30)),
            ("0s", Ok(0)),
            ("30s", Ok(30)),
            ("5m", Ok(300)),
            ("1h30m", Ok(5400)),
            ("1m30s", Ok(90)),
            ("300ms", Ok(1)),
            ("1500ms", Ok(2)),
        ] {
            assert_eq!(parse_timeout(s), want, "{s}");
        }
        for s in ["", "s", "5x", "-5s", "5 m", "1.5s"] {
            let e = parse_timeout(s).expect_err(s);
            assert!(e.contains("invalid duration"), "{s}: {e}");
        }
    }
}
