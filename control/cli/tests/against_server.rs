//! The `weir` binary against a real weir-control (embedded etcd on free
//! loopback ports, temp state dir): kubectl's verbs, their output and
//! their exit codes, end to end. No node agent: pods stay Pending, which is
//! enough for the API-level verbs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// weir-control next to the weir binary under test (same target dir).
fn control_bin() -> PathBuf {
    let weir = PathBuf::from(env!("CARGO_BIN_EXE_weir"));
    let p = weir.with_file_name("weir-control");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p weir-control)",
        p.display()
    );
    p
}

struct Server {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd_port = loop {
            let p = free_port();
            if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        let api_port = free_port();
        let child = Command::new(control_bin())
            .arg("--state-dir")
            .arg(dir.path())
            .args(["--embedded-etcd-port", &etcd_port.to_string()])
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .arg("--unix-socket")
            .arg(dir.path().join("weir.sock"))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start weir-control");
        let s = Server {
            child,
            addr: format!("http://127.0.0.1:{api_port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s.weir(&["get", "ns", "default"]).status.success() {
            assert!(Instant::now() < deadline, "weir-control did not come up");
            std::thread::sleep(Duration::from_millis(300));
        }
        s
    }

    fn weir_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
        c.args(args)
            .env("WEIR_SERVER", &self.addr)
            // Never the developer's own ~/.weir/config.yaml.
            .env("WEIR_CONFIG", self.dir.path().join("config.yaml"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run weir")
    }

    fn weir(&self, args: &[&str]) -> Output {
        self.weir_env(args, &[])
    }

    /// Runs weir, expects success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.weir(args);
        assert!(
            o.status.success(),
            "weir {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs weir, expects failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.weir(args);
        assert!(!o.status.success(), "weir {args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so weir-control stops its embedded etcd too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs /usr/bin/etcd and a built weir-control; run by cargo xtask test"]
fn kubectl_verbs_against_a_real_server() {
    let s = Server::start();
    let n = ["-n", "t1"];
    let with_ns = |args: &[&'static str]| -> Vec<&'static str> {
        n.iter().copied().chain(args.iter().copied()).collect()
    };

    // create, and kubectl's AlreadyExists.
    assert_eq!(
        s.ok(&["create", "namespace", "t1"]),
        "namespace/t1 created\n"
    );
    assert!(
        s.fails(&["create", "namespace", "t1"])
            .contains("Error from server (AlreadyExists): namespaces \"t1\" already exists")
    );
    assert_eq!(
        s.ok(&with_ns(&[
            "create",
            "deployment",
            "web",
            "--image",
            "img:1",
            "--replicas",
            "2",
            "--port",
            "8080"
        ])),
        "deployment.apps/web created\n"
    );
    let dry = s.ok(&with_ns(&[
        "create",
        "deployment",
        "other",
        "--image",
        "img:1",
        "--dry-run=client",
        "-o",
        "yaml",
    ]));
    assert!(
        dry.contains("kind: Deployment") && dry.contains("name: other"),
        "{dry}"
    );
    assert!(
        s.fails(&with_ns(&["get", "deploy", "other"]))
            .contains("Error from server (NotFound): deployments.apps \"other\" not found"),
        "a client dry run creates nothing"
    );

    // label, -L, patch, jsonpath.
    assert_eq!(
        s.ok(&with_ns(&["label", "deploy", "web", "tier=fe"])),
        "deployment.apps/web labeled\n"
    );
    let t = s.ok(&with_ns(&["get", "deploy", "-L", "tier"]));
    assert!(
        t.starts_with("NAME ") && t.contains(" TIER\n") && t.contains(" fe\n"),
        "{t}"
    );
    assert!(
        s.fails(&with_ns(&["label", "deploy", "web", "tier=be"]))
            .contains("--overwrite")
    );
    // annotate writes annotations, not labels.
    s.ok(&with_ns(&["annotate", "deploy", "web", "note=x"]));
    assert_eq!(
        s.ok(&with_ns(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.note}/{.metadata.labels.note}"
        ])),
        "x/"
    );
    s.ok(&with_ns(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]));
    assert_eq!(
        s.ok(&with_ns(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ])),
        "3"
    );
    s.ok(&with_ns(&["scale", "deploy", "web", "--replicas=2"]));
    assert_eq!(
        s.ok(&with_ns(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ])),
        "2"
    );
    assert!(
        s.fails(&with_ns(&[
            "patch",
            "deploy",
            "web",
            "-p",
            r#"{"spec":{"replicas":-1}}"#
        ]))
        .contains("spec.replicas: Invalid value: -1")
    );

    // set image makes revision 2; history lists both.
    assert_eq!(
        s.ok(&with_ns(&["set", "image", "deploy/web", "img=img:2"])),
        "deployment.apps/web image updated\n"
    );
    eventually("revision 2", || {
        let h = s.ok(&with_ns(&["rollout", "history", "deploy/web"]));
        h.contains("\n1 ") && h.contains("\n2 ")
    });
    // undo goes back to revision 1's template (found among the owned ReplicaSets).
    assert_eq!(
        s.ok(&with_ns(&["rollout", "undo", "deploy/web"])),
        "deployment.apps/web rolled back\n"
    );
    assert_eq!(
        s.ok(&with_ns(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ])),
        "img:1"
    );

    // expose, describe.
    assert_eq!(
        s.ok(&with_ns(&[
            "expose",
            "deploy",
            "web",
            "--port",
            "80",
            "--target-port",
            "8080"
        ])),
        "service/web exposed\n"
    );
    assert_eq!(
        s.ok(&with_ns(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ])),
        "8080"
    );
    let d = s.ok(&with_ns(&["describe", "deploy", "web"]));
    assert!(d.contains("Replicas:") && d.contains("Events:"), "{d}");
    eventually("a ScalingReplicaSet event in describe", || {
        s.ok(&with_ns(&["describe", "deploy", "web"]))
            .contains("ScalingReplicaSet")
    });
    // Without a name: every deployment, described from the list (with its events).
    let all = s.ok(&with_ns(&["describe", "deploy"]));
    assert!(
        all.contains("web") && all.contains("Replicas:") && all.contains("ScalingReplicaSet"),
        "{all}"
    );

    // edit with an editor that changes nothing.
    let o = s.weir_env(&with_ns(&["edit", "deploy", "web"]), &[("EDITOR", "true")]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Edit cancelled, no changes made.\n"
    );

    // rollout status follows the Deployment by watch. No pod becomes
    // available here (no nodes): it says what it waits for and times out
    // (kubectl's duration syntax)...
    let o = s.weir(&with_ns(&[
        "rollout",
        "status",
        "deploy/web",
        "--timeout",
        "2s",
    ]));
    assert!(!o.status.success(), "rollout status should time out");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("timed out waiting for the condition"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("Waiting for deployment \"web\" rollout to finish"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // ...and returns as soon as the rollout is done: scaled to 0 while it waits.
    let waiting = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(with_ns(&[
            "rollout",
            "status",
            "deploy/web",
            "--timeout",
            "1m",
        ]))
        .env("WEIR_SERVER", &s.addr)
        .env("WEIR_CONFIG", s.dir.path().join("config.yaml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run weir rollout status");
    std::thread::sleep(Duration::from_secs(1));
    s.ok(&with_ns(&["scale", "deploy", "web", "--replicas=0"]));
    let o = waiting.wait_with_output().expect("rollout status");
    assert!(
        o.status.success(),
        "rollout status failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("deployment \"web\" successfully rolled out"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A DaemonSet's rollout (no nodes here: nothing to schedule) is done
    // once the controller has observed it; a ReplicaSet has no status viewer.
    let ds = s.dir.path().join("ds.yaml");
    std::fs::write(
        &ds,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\n  namespace: t1\n\
         spec:\n  selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      \
         labels: {app: agent}\n    spec:\n      containers:\n      - name: a\n        image: img:1\n",
    )
    .expect("write ds.yaml");
    s.ok(&["apply", "-f", ds.to_str().expect("utf-8 path")]);
    assert!(
        s.ok(&with_ns(&[
            "rollout",
            "status",
            "ds/agent",
            "--timeout",
            "30s"
        ]))
        .contains("daemon set \"agent\" successfully rolled out")
    );
    assert!(
        s.fails(&with_ns(&["rollout", "status", "rs/whatever"]))
            .contains("no status viewer has been implemented for ReplicaSet")
    );

    // delete waits until the object is gone; then NotFound.
    assert_eq!(
        s.ok(&with_ns(&["delete", "deploy", "web"])),
        "deployment.apps \"web\" deleted\n"
    );
    assert!(
        s.fails(&with_ns(&["delete", "deploy", "web"]))
            .contains("(NotFound)")
    );

    // explain needs no server but runs in the same binary.
    assert!(
        s.ok(&["explain", "deploy.spec.replicas"])
            .contains("FIELD: replicas <integer>")
    );
}

/// `rollout history|undo` of a DaemonSet and a StatefulSet, through the
/// ControllerRevisions their controllers keep (no nodes: pods stay Pending,
/// the revisions are made anyway).
#[test]
#[ignore = "needs /usr/bin/etcd and a built weir-control; run by cargo xtask test"]
fn rollout_history_and_undo_of_daemonsets_and_statefulsets() {
    let s = Server::start();
    let n = ["-n", "default"];
    let with_ns = |args: &[&'static str]| -> Vec<&'static str> {
        let mut v = args.to_vec();
        v.extend(n);
        v
    };
    let write = |file: &str, body: String| {
        let p = s.dir.path().join(file);
        std::fs::write(&p, body).expect("write manifest");
        p.to_str().expect("utf-8 path").to_string()
    };
    let ds = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\n  namespace: default\n  \
             annotations: {{kubernetes.io/change-cause: \"image {image}\"}}\n\
             spec:\n  selector:\n    matchLabels: {{app: agent}}\n  template:\n    metadata:\n      \
             labels: {{app: agent}}\n    spec:\n      containers:\n      - name: a\n        image: {image}\n"
        )
    };
    let sts = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\n  namespace: default\n\
             spec:\n  serviceName: db\n  selector:\n    matchLabels: {{app: db}}\n  template:\n    metadata:\n      \
             labels: {{app: db}}\n    spec:\n      containers:\n      - name: d\n        image: {image}\n"
        )
    };
    let image_of = |what: &str| {
        s.ok(&with_ns(&[
            "get",
            if what == "ds" { "ds/agent" } else { "sts/db" },
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]))
    };

    for (kind, target, make) in [
        ("ds", "daemonset.apps/agent", &ds as &dyn Fn(&str) -> String),
        ("sts", "statefulset.apps/db", &sts),
    ] {
        let obj: &'static str = if kind == "ds" { "ds/agent" } else { "sts/db" };
        let v1 = write(&format!("{kind}1.yaml"), make("img:1"));
        let v2 = write(&format!("{kind}2.yaml"), make("img:2"));
        s.ok(&["apply", "-f", &v1]);
        eventually("revision 1", || {
            s.ok(&with_ns(&["rollout", "history", obj]))
                .contains("\n1 ")
        });
        assert!(
            s.fails(&with_ns(&["rollout", "undo", obj]))
                .contains("no last revision to roll back to")
        );
        s.ok(&["apply", "-f", &v2]);
        eventually("revision 2", || {
            let h = s.ok(&with_ns(&["rollout", "history", obj]));
            h.contains("\n1 ") && h.contains("\n2 ")
        });
        let h = s.ok(&with_ns(&["rollout", "history", obj]));
        assert!(h.starts_with(&format!("{target}\nREVISION")), "{h}");
        if kind == "ds" {
            assert!(h.contains("image img:2"), "change-cause copied: {h}");
        }
        let one = s.ok(&with_ns(&["rollout", "history", obj, "--revision", "1"]));
        assert!(
            one.starts_with(&format!("{target} with revision #1\n")) && one.contains("img:1"),
            "{one}"
        );
        // `get` knows the kind, with kubectl's columns.
        let list = s.ok(&with_ns(&["get", "controllerrevisions"]));
        assert!(list.starts_with("NAME "), "{list}");
        assert!(
            list.contains("CONTROLLER") && list.contains(target),
            "{list}"
        );

        // undo: revision 1's template comes back, and revision 1 becomes 3.
        assert_eq!(
            s.ok(&with_ns(&["rollout", "undo", obj])),
            format!("{target} rolled back\n")
        );
        assert_eq!(image_of(kind), "img:1");
        eventually("revision 1 re-used as 3", || {
            let h = s.ok(&with_ns(&["rollout", "history", obj]));
            h.contains("\n2 ") && h.contains("\n3 ") && !h.contains("\n1 ")
        });
        assert_eq!(
            s.ok(&with_ns(&["rollout", "undo", obj, "--to-revision", "3"])),
            format!("{target} skipped rollback (current template already matches revision 3)\n")
        );
        assert!(
            s.fails(&with_ns(&["rollout", "undo", obj, "--to-revision", "9"]))
                .contains("unable to find specified revision 9 in history")
        );
        assert_eq!(
            s.ok(&with_ns(&["rollout", "undo", obj, "--to-revision", "2"])),
            format!("{target} rolled back\n")
        );
        assert_eq!(image_of(kind), "img:2");
        // restart: a new template (restartedAt annotation), so a new revision.
        assert_eq!(
            s.ok(&with_ns(&["rollout", "restart", obj])),
            format!("{target} restarted\n")
        );
        eventually("revision 5 after restart", || {
            s.ok(&with_ns(&["rollout", "history", obj]))
                .contains("\n5 ")
        });
    }
    // Deployment history keeps its own path; a ReplicaSet has no history.
    assert!(
        s.fails(&with_ns(&["rollout", "history", "rs/whatever"]))
            .contains("no history viewer has been implemented for ReplicaSet")
    );
}
