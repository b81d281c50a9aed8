//! Property test of the write path's pure half: random and mutated manifests
//! go through decode -> server-owned metadata -> default -> validate exactly
//! as a Create does (`ApiObject::parse_for`, `lifecycle::prepare_create`,
//! `admission::admit`). Properties: nothing panics, and every rejection names
//! the field it is about.
//!
//! The generator is a seeded xorshift (no dependency, reproducible: a failure
//! prints its seed and the manifest).

use serde_json::{Value, json};
use weir_api::ResourceKind;

use super::admit;
use crate::error::ApiError;
use crate::lifecycle::{self, CreateContext};
use crate::object::ApiObject;

/// xorshift64*: small, deterministic, good enough to explore manifests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Valid manifests of the kinds users write: the seeds mutations start from.
fn seeds() -> Vec<Value> {
    let container = json!({"name": "web", "image": "127.0.0.1:5000/weir/hostname:v1",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
        "livenessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 5},
        "readinessProbe": {"tcpSocket": {"port": "http"}}});
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container.clone()]}});
    let meta = json!({"name": "web", "labels": {"app": "web"}});
    vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [container]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}],
                     "loadBalancerSourceRanges": ["10.0.0.0/8"], "externalTrafficPolicy": "Local"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {"app.properties": "a=b", "KEY": "v"}, "binaryData": {"blob": "AAEC"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "kubernetes.io/tls",
            "data": {"tls.crt": "AA==", "tls.key": "AA=="}, "stringData": {"extra": "x"}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}},
                                           {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                                  "ports": [{"protocol": "TCP", "port": 5432, "endPort": 5440}]}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
            "spec": {"rules": [{"host": "web.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:1.35"}]}}}}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i:v1"}]}}}}),
    ]
}

/// Values that tend to break parsers and validators.
fn nasty(rng: &mut Rng) -> Value {
    let strings = [
        "",
        "-",
        "a",
        "UPPER",
        "a b",
        "..",
        "../x",
        "*/0 * * * *",
        "@daily",
        "60 * * * *",
        "1Gi",
        "-1",
        "500m",
        "1e3",
        "abc",
        "10.0.0.0/33",
        "10.0.0.1",
        "None",
        "ClusterIP",
        "NodePort",
        "Local",
        "Exact",
        "Prefix",
        "TCP",
        "SCTP",
        "example.com/x",
        "x/y/z",
        "\u{0}",
        "é",
        "kubernetes.io/tls",
        "ReadWriteOncePod",
    ];
    match rng.below(10) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(i64::MAX),
        3 => json!(-1),
        4 => json!(rng.below(70000)),
        5 => json!(1.5),
        6 => json!({}),
        7 => json!([]),
        8 => json!("x".repeat(300)),
        _ => json!(rng.pick(&strings)),
    }
}

/// Paths (as key/index steps) of every node of `v`.
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(Step::Key(k.clone()));
                paths(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(Step::Index(i));
                paths(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// One random change somewhere below the top level (apiVersion and kind are
/// what the request is routed by; they stay).
fn mutate(v: &mut Value, rng: &mut Rng) {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    all.retain(|p| {
        !matches!(p.first(), Some(Step::Key(k)) if k == "apiVersion" || k == "kind")
            && !p.is_empty()
    });
    if all.is_empty() {
        return;
    }
    let path = rng.pick(&all).clone();
    let choice = rng.below(5);
    let replacement = nasty(rng);
    let Some(node) = node_mut(v, &path) else {
        return;
    };
    match (choice, node) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let key = m
                .keys()
                .nth(rng.below(m.len()))
                .cloned()
                .unwrap_or_default();
            m.remove(&key);
        }
        (1, Value::Object(m)) => {
            let keys = [
                "name", "port", "type", "spec", "data", "x", "selector", "schedule",
            ];
            m.insert(rng.pick(&keys).to_string(), replacement);
        }
        (2, Value::Array(a)) if !a.is_empty() => {
            let dup = a[rng.below(a.len())].clone();
            a.push(dup);
        }
        (_, node) => *node = replacement,
    }
}

/// A field path at the start of a line: `spec.ports[0].port: <kind of error>`.
fn names_a_field(line: &str) -> bool {
    const TYPES: &[&str] = &[
        ": Invalid value: ",
        ": Required value",
        ": Unsupported value: ",
        ": Duplicate value: ",
        ": Forbidden: ",
        ": Too long: ",
    ];
    TYPES.iter().any(|t| {
        line.find(t).is_some_and(|i| {
            let field = &line[..i];
            !field.is_empty() && !field.contains(' ')
        })
    })
}

/// Runs one manifest through the create pipeline: `Ok(true)` admitted,
/// `Ok(false)` rejected properly, `Err` explains a broken property.
fn check(kind: &ResourceKind, manifest: &Value) -> Result<bool, String> {
    let bytes = serde_json::to_vec(manifest).map_err(|e| e.to_string())?;
    let ctx = CreateContext {
        now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ),
        uid: "00000000-0000-4000-8000-000000000000".into(),
        suffix: "bcdfg".into(),
    };
    let result = ApiObject::parse_for(kind, &bytes).and_then(|mut obj| {
        lifecycle::prepare_create(kind, &mut obj, &ctx)?;
        admit(kind, obj)
    });
    match result {
        Ok(_) => Ok(true),
        Err(ApiError::Invalid(msg)) => {
            let (_, errors) = msg
                .split_once(" is invalid: ")
                .ok_or_else(|| format!("no 'is invalid' prefix: {msg}"))?;
            match errors.lines().find(|l| !names_a_field(l)) {
                Some(l) => Err(format!("rejection without a field: {l:?}")),
                None => Ok(false),
            }
        }
        Err(ApiError::BadRequest(msg)) => {
            let detail = msg.rsplit_once(" object: ").map(|(_, d)| d).unwrap_or(&msg);
            let detail = detail
                .split_once(": ")
                .filter(|_| msg.contains("cannot be handled as a"))
                .map(|(_, d)| d)
                .unwrap_or(detail);
            if names_a_field(detail) || msg.starts_with("resourceVersion should not be set") {
                Ok(false)
            } else {
                Err(format!("bad request without a field: {msg}"))
            }
        }
        Err(e) => Err(format!("unexpected error class: {e:?}")),
    }
}

#[test]
fn seeds_are_admitted() {
    for seed in seeds() {
        let kind = ResourceKind::by_kind(seed["kind"].as_str().unwrap()).unwrap();
        assert_eq!(check(kind, &seed), Ok(true), "seed {}", seed["kind"]);
    }
}

#[test]
fn mutated_manifests_never_panic_and_rejections_name_a_field() {
    let seeds = seeds();
    let (mut admitted, mut rejected) = (0usize, 0usize);
    let cases = 4000u64;
    for case in 0..cases {
        let seed_value = 0x9e37_79b9_7f4a_7c15u64 ^ (case + 1).wrapping_mul(0x1000_0000_01b3);
        let mut rng = Rng(seed_value);
        // One case in ten starts from nothing: a random object of a random kind.
        let mut manifest = if rng.below(10) == 0 {
            let k = rng.pick(weir_api::KINDS);
            json!({"apiVersion": k.api_version, "kind": k.kind, "metadata": nasty(&mut rng), "spec": nasty(&mut rng)})
        } else {
            rng.pick(&seeds).clone()
        };
        for _ in 0..=rng.below(4) {
            mutate(&mut manifest, &mut rng);
        }
        let kind = ResourceKind::by_kind(manifest["kind"].as_str().unwrap_or_default())
            .expect("kinds are never mutated");
        let outcome = std::panic::catch_unwind(|| check(kind, &manifest));
        match outcome {
            Ok(Ok(true)) => admitted += 1,
            Ok(Ok(false)) => rejected += 1,
            Ok(Err(why)) => {
                panic!("case {case} (seed {seed_value:#x}): {why}\nmanifest: {manifest}");
            }
            Err(_) => panic!("case {case} (seed {seed_value:#x}) panicked\nmanifest: {manifest}"),
        }
    }
    // Both sides were explored: mutations often stay valid, often do not.
    assert!(
        admitted > 100 && rejected > 1000,
        "admitted {admitted}, rejected {rejected}"
    );
}
