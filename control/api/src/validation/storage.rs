//! PersistentVolumeClaim: access modes, requested storage, volume mode.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::resources::parse_quantity;
use super::{FieldError, quote, validate_object_meta};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// Validates a PersistentVolumeClaim.
pub fn validate_pvc(pvc: &PersistentVolumeClaim) -> Vec<FieldError> {
    let mut errs = validate_object_meta("PersistentVolumeClaim", true, &pvc.metadata);
    let Some(spec) = &pvc.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if modes.is_empty() {
        errs.push(FieldError::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for (i, m) in modes.iter().enumerate() {
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.push(FieldError::not_supported(
                format!("spec.accessModes[{i}]"),
                m,
                ACCESS_MODES,
            ));
        }
    }
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    match storage {
        None => errs.push(FieldError::required("spec.resources[storage]", "")),
        Some(q) => match parse_quantity(&q.0) {
            Some(v) if v > 0.0 => {}
            Some(_) => errs.push(FieldError::invalid(
                "spec.resources[storage]",
                quote(&q.0),
                "must be greater than zero",
            )),
            None => errs.push(FieldError::invalid(
                "spec.resources[storage]",
                quote(&q.0),
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            )),
        },
    }
    if let Some(m) = spec.volume_mode.as_deref()
        && !VOLUME_MODES.contains(&m)
    {
        errs.push(FieldError::not_supported(
            "spec.volumeMode",
            m,
            VOLUME_MODES,
        ));
    }
    if let Some(sc) = spec.storage_class_name.as_deref()
        && !sc.is_empty()
    {
        for d in super::dns1123_subdomain(sc) {
            errs.push(FieldError::invalid("spec.storageClassName", quote(sc), d));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pvc(modes: &[&str], storage: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                resources: storage.map(|s| VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity(s.into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pvc_cases() {
        let msgs = |p: &PersistentVolumeClaim| -> Vec<String> {
            validate_pvc(p).iter().map(ToString::to_string).collect()
        };
        assert!(msgs(&pvc(&["ReadWriteOnce"], Some("1Gi"))).is_empty());
        assert_eq!(
            msgs(&pvc(&[], Some("1Gi"))),
            ["spec.accessModes: Required value: at least 1 access mode is required"]
        );
        assert_eq!(
            msgs(&pvc(&["ReadWriteOnce"], None)),
            ["spec.resources[storage]: Required value"]
        );
        assert_eq!(
            msgs(&pvc(&["ReadWriteOnce"], Some("0"))),
            ["spec.resources[storage]: Invalid value: \"0\": must be greater than zero"]
        );
        assert!(
            msgs(&pvc(&["ReadWriteSometimes"], Some("1Gi")))[0]
                .starts_with("spec.accessModes[0]: Unsupported value: \"ReadWriteSometimes\"")
        );
    }
}
