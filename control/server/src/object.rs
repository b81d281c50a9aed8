//! The typed envelope every stored object shares: apiVersion, kind and
//! metadata typed, the kind-specific part (spec, status, data, ...) kept as
//! JSON. The registry manipulates metadata through this, never by editing raw
//! JSON; kind-specific logic goes through the k8s-openapi type (admission).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir_api::ResourceKind;

use crate::error::ApiError;

/// The largest object stored (etcd's default max request is 1.5 MiB; the
/// rest is headroom for the transaction's other operations).
pub const MAX_STORED_BYTES: usize = 1_500_000;

/// One API object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiObject {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Everything else: spec, status, data, ...
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

impl ApiObject {
    /// Parses a request body and checks that it is an object of `kind`.
    /// A missing apiVersion/kind is filled in; a different one is an error.
    pub fn parse_for(kind: &ResourceKind, bytes: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))
        })?;
        let mut obj: ApiObject = crate::decode::decode(value).map_err(|e| {
            ApiError::BadRequest(format!(
                "the request body is not a valid {} object: {e}",
                kind.kind
            ))
        })?;
        if obj.kind.is_empty() {
            obj.kind = kind.kind.to_string();
        } else if obj.kind != kind.kind {
            return Err(ApiError::BadRequest(format!(
                "the object's kind {:?} does not match the request's kind {:?}",
                obj.kind, kind.kind
            )));
        }
        if obj.api_version.is_empty() {
            obj.api_version = kind.api_version.to_string();
        } else if obj.api_version != kind.api_version {
            return Err(ApiError::BadRequest(format!(
                "apiVersion {:?} is not served for {}; use {:?}",
                obj.api_version, kind.kind, kind.api_version
            )));
        }
        Ok(obj)
    }

    /// Decodes a stored value and stamps its resourceVersion (not stored: it is
    /// the etcd mod_revision).
    pub fn from_stored(bytes: &[u8], revision: i64) -> Result<Self, ApiError> {
        let mut obj: ApiObject = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::Internal(format!("corrupt stored object: {e}")))?;
        obj.metadata.resource_version = Some(revision.to_string());
        Ok(obj)
    }

    /// The API form (JSON with metadata.resourceVersion) of a stored value,
    /// without decoding it: this server writes `{"apiVersion":..,"kind":..,
    /// "metadata":{..` (struct field order), so the resourceVersion goes
    /// right after the first `"metadata":{`. `None` when the bytes do not
    /// look like that; callers then decode. Lists of thousands of objects
    /// skip a parse and an encode per item this way.
    pub fn stored_to_json(bytes: &[u8], revision: i64) -> Option<Vec<u8>> {
        const META: &[u8] = b"\"metadata\":{";
        if !bytes.starts_with(b"{\"apiVersion\":") {
            return None;
        }
        let at = bytes.windows(META.len()).position(|w| w == META)? + META.len();
        let rv = format!("\"resourceVersion\":\"{revision}\"");
        let mut out = Vec::with_capacity(bytes.len() + rv.len() + 1);
        out.extend_from_slice(&bytes[..at]);
        out.extend_from_slice(rv.as_bytes());
        if bytes.get(at) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(&bytes[at..]);
        Some(out)
    }

    /// The form written to etcd (no resourceVersion).
    /// Objects larger than etcd's default request limit (1.5 MiB) are
    /// rejected here with a clear message instead of an etcd error.
    pub fn to_stored(&self) -> Result<Vec<u8>, ApiError> {
        let mut copy = self.clone();
        copy.metadata.resource_version = None;
        let bytes = serde_json::to_vec(&copy)
            .map_err(|e| ApiError::Internal(format!("cannot encode object: {e}")))?;
        if bytes.len() > MAX_STORED_BYTES {
            return Err(ApiError::BadRequest(format!(
                "{} {:?} is too large: {} bytes, the limit is {MAX_STORED_BYTES}",
                self.kind,
                self.name(),
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The form sent to clients.
    pub fn to_json(&self) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(self)
            .map_err(|e| ApiError::Internal(format!("cannot encode object: {e}")))
    }

    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// A string field at a JSON path below the body, e.g. `["spec", "nodeName"]`.
    pub fn str_at(&self, path: &[&str]) -> Option<&str> {
        let (first, rest) = path.split_first()?;
        let mut v = self.body.get(*first)?;
        for p in rest {
            v = v.get(p)?;
        }
        v.as_str()
    }

    /// The object without metadata and status: what "the spec changed" compares.
    pub fn desired_state(&self) -> Map<String, Value> {
        let mut m = self.body.clone();
        m.remove("status");
        m
    }

    /// Converts into a k8s-openapi type; a field of the wrong type or a
    /// missing required field is reported with its path.
    pub fn to_typed<K: serde::de::DeserializeOwned>(&self) -> Result<K, ApiError> {
        let v = serde_json::to_value(self).map_err(|e| ApiError::Internal(e.to_string()))?;
        crate::decode::decode(v).map_err(|e| {
            ApiError::BadRequest(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                self.kind, self.api_version, self.kind
            ))
        })
    }

    /// Converts from a k8s-openapi type.
    pub fn from_typed<K: Serialize>(k: &K) -> Result<Self, ApiError> {
        let v = serde_json::to_value(k).map_err(|e| ApiError::Internal(e.to_string()))?;
        serde_json::from_value(v).map_err(|e| ApiError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_kind() -> &'static ResourceKind {
        ResourceKind::by_kind("Pod").expect("Pod is a kind")
    }

    #[test]
    fn parse_checks_kind_and_version() {
        let ok =
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[]}}"#;
        let o = ApiObject::parse_for(pod_kind(), ok).expect("valid");
        assert_eq!(o.name(), "a");
        assert!(o.body.contains_key("spec"));
        let filled =
            ApiObject::parse_for(pod_kind(), br#"{"metadata":{"name":"a"}}"#).expect("valid");
        assert_eq!(
            (filled.api_version.as_str(), filled.kind.as_str()),
            ("v1", "Pod")
        );
        for bad in [
            &br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}}"#[..],
            br#"{"apiVersion":"apps/v1","kind":"Pod"}"#,
            br#"not json"#,
            br#"{"metadata":{"name":5}}"#,
        ] {
            assert!(matches!(
                ApiObject::parse_for(pod_kind(), bad),
                Err(ApiError::BadRequest(_))
            ));
        }
    }

    #[test]
    fn oversized_objects_are_rejected() {
        let mut o = ApiObject::parse_for(pod_kind(), br#"{"metadata":{"name":"a"}}"#).unwrap();
        o.body.insert(
            "spec".into(),
            serde_json::Value::String("x".repeat(MAX_STORED_BYTES)),
        );
        assert!(matches!(o.to_stored(), Err(ApiError::BadRequest(m)) if m.contains("too large")));
    }

    #[test]
    fn stored_bytes_get_their_resource_version_without_decoding() {
        let obj: ApiObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"metadata": "x"}}, "spec": {"nodeName": "n"}
        }))
        .unwrap();
        let stored = obj.to_stored().unwrap();
        let fast = ApiObject::stored_to_json(&stored, 42).expect("fast path");
        let slow = ApiObject::from_stored(&stored, 42)
            .unwrap()
            .to_json()
            .unwrap();
        let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        assert_eq!(parse(&fast), parse(&slow));
        assert_eq!(parse(&fast)["metadata"]["resourceVersion"], "42");
        // Empty metadata, and bytes of another shape.
        let empty = br#"{"apiVersion":"v1","kind":"Pod","metadata":{}}"#;
        let v = parse(&ApiObject::stored_to_json(empty, 7).unwrap());
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(ApiObject::stored_to_json(br#"{"kind":"Pod"}"#, 7), None);
    }

    #[test]
    fn resource_version_is_not_stored() {
        let o = ApiObject::from_stored(
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#,
            42,
        )
        .unwrap();
        assert_eq!(o.metadata.resource_version.as_deref(), Some("42"));
        let stored = String::from_utf8(o.to_stored().unwrap()).unwrap();
        assert!(!stored.contains("resourceVersion"), "{stored}");
    }
}
