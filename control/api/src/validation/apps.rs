//! apps/v1 rules beyond the workloads' selector and template: ControllerRevision
//! (the history of DaemonSets and StatefulSets) and a StatefulSet's
//! `persistentVolumeClaimRetentionPolicy`.

use k8s_openapi::api::apps::v1::{
    ControllerRevision, StatefulSetPersistentVolumeClaimRetentionPolicy,
};

use super::{FieldError, quote, validate_object_meta};

/// The values a claim retention policy field takes (sorted, as Kubernetes
/// lists them in its message).
pub const RETENTION_POLICIES: &[&str] = &["Delete", "Retain"];

/// Validates a ControllerRevision (Kubernetes' ValidateControllerRevision):
/// `data` is mandatory and `revision` non-negative.
pub fn validate_controller_revision(cr: &ControllerRevision) -> Vec<FieldError> {
    let mut errs = validate_object_meta("ControllerRevision", true, &cr.metadata);
    if cr.data.as_ref().is_none_or(|d| d.0.is_null()) {
        errs.push(FieldError::required("data", "data is mandatory"));
    }
    if cr.revision < 0 {
        errs.push(FieldError::invalid(
            "revision",
            cr.revision.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// The update rule of a ControllerRevision: its data never changes (the
/// revision number may, when a rollback re-uses an old revision). `old` and
/// `new` are the stored and the requested `data`, as JSON.
pub fn controller_revision_update(
    old: Option<&serde_json::Value>,
    new: Option<&serde_json::Value>,
) -> Vec<FieldError> {
    if old == new {
        return Vec::new();
    }
    let shown = new
        .map(ToString::to_string)
        .unwrap_or_else(|| "null".into());
    vec![FieldError::invalid(
        "data",
        quote(&shown),
        "field is immutable",
    )]
}

/// Validates `spec.persistentVolumeClaimRetentionPolicy`: each of
/// `whenDeleted` and `whenScaled` is `Retain` or `Delete` (after defaulting,
/// unset means Retain).
pub fn validate_claim_retention(
    policy: Option<&StatefulSetPersistentVolumeClaimRetentionPolicy>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(p) = policy else {
        return errs;
    };
    let base = "spec.persistentVolumeClaimRetentionPolicy";
    for (field, value) in [
        ("whenDeleted", p.when_deleted.as_deref()),
        ("whenScaled", p.when_scaled.as_deref()),
    ] {
        if let Some(v) = value
            && !RETENTION_POLICIES.contains(&v)
        {
            errs.push(FieldError::not_supported(
                format!("{base}.{field}"),
                v,
                RETENTION_POLICIES,
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
    use serde_json::json;

    fn cr(revision: i64, data: Option<serde_json::Value>) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: data.map(RawExtension),
            revision,
        }
    }

    #[test]
    fn controller_revision_table() {
        let data = json!({"spec": {"template": {"$patch": "replace"}}});
        let cases: Vec<(&str, ControllerRevision, Vec<&str>)> = vec![
            ("valid", cr(1, Some(data.clone())), vec![]),
            ("revision 0 is valid", cr(0, Some(data.clone())), vec![]),
            (
                "negative revision",
                cr(-1, Some(data.clone())),
                vec!["revision: Invalid value: -1: must be greater than or equal to 0"],
            ),
            (
                "no data",
                cr(2, None),
                vec!["data: Required value: data is mandatory"],
            ),
        ];
        for (what, c, want) in cases {
            let got: Vec<String> = validate_controller_revision(&c)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn controller_revision_data_is_immutable() {
        let a = json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}});
        let b = json!({"spec": {"template": {"metadata": {"labels": {"app": "b"}}}}});
        assert!(controller_revision_update(Some(&a), Some(&a)).is_empty());
        let errs = controller_revision_update(Some(&a), Some(&b));
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(msg.starts_with("data: Invalid value: "), "{msg}");
        assert!(msg.ends_with(": field is immutable"), "{msg}");
    }

    #[test]
    fn claim_retention_table() {
        let p =
            |d: Option<&str>, s: Option<&str>| StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: d.map(Into::into),
                when_scaled: s.map(Into::into),
            };
        let cases: Vec<(
            Option<StatefulSetPersistentVolumeClaimRetentionPolicy>,
            Vec<&str>,
        )> = vec![
            (None, vec![]),
            (Some(p(Some("Retain"), Some("Delete"))), vec![]),
            (Some(p(None, None)), vec![]),
            (
                Some(p(Some("Keep"), Some("delete"))),
                vec![
                    "spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: \"Keep\": supported values: \"Delete\", \"Retain\"",
                    "spec.persistentVolumeClaimRetentionPolicy.whenScaled: Unsupported value: \"delete\": supported values: \"Delete\", \"Retain\"",
                ],
            ),
        ];
        for (policy, want) in cases {
            let got: Vec<String> = validate_claim_retention(policy.as_ref())
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, want, "{policy:?}");
        }
    }
}
