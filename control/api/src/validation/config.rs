//! ConfigMap and Secret: data keys and Secret types
//! (k8s.io/kubernetes/pkg/apis/core/validation `ValidateConfigMap`/`ValidateSecret`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::{FieldError, quote, validate_object_meta};

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// The most data a ConfigMap or Secret may hold (etcd's request limit, less room).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Problems of a ConfigMap/Secret key (Kubernetes' `IsConfigMapKey`).
pub fn config_key(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".into());
    }
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errs.push(CONFIG_KEY_MSG.into());
    }
    if key == "." {
        errs.push("must not be '.'".into());
    } else if key == ".." {
        errs.push("must not be '..'".into());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

/// Checks keys of several maps of one object: format, and no key in two maps.
fn check_keys<'a>(
    errs: &mut Vec<FieldError>,
    maps: impl IntoIterator<Item = (&'static str, Vec<&'a str>)>,
) {
    let mut seen = BTreeSet::new();
    for (field, keys) in maps {
        for k in keys {
            let path = format!("{field}[{k}]");
            for d in config_key(k) {
                errs.push(FieldError::invalid(path.clone(), quote(k), d));
            }
            if !seen.insert(k) {
                errs.push(FieldError::duplicate(path, quote(k)));
            }
        }
    }
}

fn check_size(errs: &mut Vec<FieldError>, field: &str, total: usize) {
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::too_long(field, MAX_DATA_BYTES));
    }
}

/// Validates a ConfigMap.
pub fn validate_config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut errs = validate_object_meta("ConfigMap", true, &cm.metadata);
    let data = cm.data.as_ref();
    let binary = cm.binary_data.as_ref();
    check_keys(
        &mut errs,
        [
            (
                "data",
                data.into_iter()
                    .flat_map(|m| m.keys().map(String::as_str))
                    .collect(),
            ),
            (
                "binaryData",
                binary
                    .into_iter()
                    .flat_map(|m| m.keys().map(String::as_str))
                    .collect(),
            ),
        ],
    );
    let total: usize = data
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .chain(
            binary
                .into_iter()
                .flatten()
                .map(|(k, v)| k.len() + v.0.len()),
        )
        .sum();
    check_size(&mut errs, "data", total);
    errs
}

/// Secret types and the keys each requires.
const SECRET_TYPES: &[(&str, &[&str])] = &[
    ("Opaque", &[]),
    ("kubernetes.io/service-account-token", &[]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/basic-auth", &[]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("bootstrap.kubernetes.io/token", &[]),
];

/// Validates a Secret (after `stringData` was merged into `data` or not: both are checked).
pub fn validate_secret(s: &Secret) -> Vec<FieldError> {
    let mut errs = validate_object_meta("Secret", true, &s.metadata);
    let data = s.data.as_ref();
    let strings = s.string_data.as_ref();
    check_keys(
        &mut errs,
        [
            (
                "data",
                data.into_iter()
                    .flat_map(|m| m.keys().map(String::as_str))
                    .collect(),
            ),
            (
                "stringData",
                strings
                    .into_iter()
                    .flat_map(|m| m.keys().map(String::as_str))
                    .collect(),
            ),
        ],
    );
    let total: usize = data
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.0.len())
        .chain(
            strings
                .into_iter()
                .flatten()
                .map(|(k, v)| k.len() + v.len()),
        )
        .sum();
    check_size(&mut errs, "data", total);
    let ty = s.type_.as_deref().unwrap_or("Opaque");
    let has = |k: &str| {
        data.is_some_and(|m| m.contains_key(k)) || strings.is_some_and(|m| m.contains_key(k))
    };
    match SECRET_TYPES.iter().find(|(t, _)| *t == ty) {
        Some((_, required)) => {
            for k in required.iter().filter(|k| !has(k)) {
                errs.push(FieldError::required(format!("data[{k}]"), ""));
            }
        }
        // Kubernetes accepts any other qualified type name (custom types).
        None => {
            for d in super::qualified_name(ty) {
                errs.push(FieldError::invalid("type", quote(ty), d));
            }
        }
    }
    if ty == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errs.push(FieldError::required(
            "data[username]",
            "either username or password is required",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("c".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    #[test]
    fn config_keys() {
        let cases: &[(&str, usize)] = &[
            ("key.name", 0),
            ("KEY_NAME", 0),
            ("app.properties", 0),
            ("bad key", 1),
            ("", 1),
            (".", 1),
            ("..", 1),
            ("..data", 1),
            ("a/b", 1),
        ];
        for (k, n) in cases {
            assert_eq!(config_key(k).len(), *n, "{k:?}: {:?}", config_key(k));
        }
    }

    #[test]
    fn config_map_errors_name_the_key() {
        let cm = ConfigMap {
            metadata: meta(),
            data: Some(BTreeMap::from([
                ("bad key".into(), "v".into()),
                ("k".into(), "v".into()),
            ])),
            binary_data: Some(BTreeMap::from([("k".into(), ByteString(vec![1]))])),
            ..Default::default()
        };
        let errs: Vec<String> = validate_config_map(&cm)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key")
        );
        assert_eq!(errs[1], "binaryData[k]: Duplicate value: \"k\"");
        let big = ConfigMap {
            metadata: meta(),
            data: Some(BTreeMap::from([("k".into(), "x".repeat(MAX_DATA_BYTES))])),
            ..Default::default()
        };
        assert_eq!(
            validate_config_map(&big)[0].to_string(),
            "data: Too long: must have at most 1048576 bytes"
        );
    }

    #[test]
    fn secret_types_require_their_keys() {
        let secret = |ty: &str, keys: &[&str]| Secret {
            metadata: meta(),
            type_: Some(ty.into()),
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(vec![1])))
                    .collect(),
            ),
            ..Default::default()
        };
        let msgs = |s: &Secret| -> Vec<String> {
            validate_secret(s).iter().map(ToString::to_string).collect()
        };
        assert!(msgs(&secret("Opaque", &["a"])).is_empty());
        assert!(msgs(&secret("kubernetes.io/tls", &["tls.crt", "tls.key"])).is_empty());
        assert_eq!(
            msgs(&secret("kubernetes.io/tls", &["tls.crt"])),
            ["data[tls.key]: Required value"]
        );
        assert_eq!(
            msgs(&secret("kubernetes.io/dockerconfigjson", &[])),
            ["data[.dockerconfigjson]: Required value"]
        );
        assert!(msgs(&secret("example.com/custom", &[])).is_empty());
        assert!(
            msgs(&secret("not a type", &[]))[0].starts_with("type: Invalid value: \"not a type\"")
        );
    }
}
