//! Admission: defaulting then validation, through the kind's k8s-openapi type.
//!
//! Decoding into the typed struct also rejects fields of the wrong JSON type
//! and drops unknown fields, as Kubernetes' schema pruning does.

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Serialize, de::DeserializeOwned};
use weir_api::validation::{self, FieldError, Invalid};
use weir_api::{ResourceKind, defaults};

use crate::error::ApiError;
use crate::object::ApiObject;

/// Defaults and validates `obj` as `kind`; returns the defaulted object.
pub fn admit(kind: &ResourceKind, obj: ApiObject) -> Result<ApiObject, ApiError> {
    match kind.kind {
        "Pod" => run::<Pod>(obj, defaults::default_pod, validation::validate_pod),
        "Service" => run::<Service>(obj, defaults::default_service, validation::validate_service),
        "Deployment" => run::<Deployment>(
            obj,
            defaults::default_deployment,
            validation::validate_deployment,
        ),
        "ReplicaSet" => run::<ReplicaSet>(
            obj,
            defaults::default_replica_set,
            validation::validate_replica_set,
        ),
        "Namespace" => run::<Namespace>(obj, |_| {}, validation::validate_namespace),
        "Node" => run::<Node>(obj, |_| {}, validation::validate_node),
        "DaemonSet" => run::<DaemonSet>(
            obj,
            defaults::default_daemon_set,
            validation::validate_daemon_set,
        ),
        "StatefulSet" => run::<StatefulSet>(
            obj,
            defaults::default_stateful_set,
            validation::validate_stateful_set,
        ),
        "ControllerRevision" => {
            run::<ControllerRevision>(obj, |_| {}, validation::validate_controller_revision)
        }
        "Job" => run::<Job>(obj, defaults::default_job, validation::validate_job),
        "CronJob" => run::<CronJob>(obj, defaults::default_cron_job, |cj| {
            validation::validate_cron_job(cj, &known_time_zone)
        }),
        "Endpoints" => run::<Endpoints>(obj, |_| {}, meta_only),
        "ConfigMap" => run::<ConfigMap>(obj, |_| {}, validation::validate_config_map),
        "Secret" => run::<Secret>(obj, defaults::default_secret, validation::validate_secret),
        "ServiceAccount" => run::<ServiceAccount>(obj, |_| {}, meta_only),
        "Event" => run::<Event>(obj, |_| {}, meta_only),
        "ReplicationController" => run::<ReplicationController>(obj, |_| {}, meta_only),
        "PersistentVolume" => run::<PersistentVolume>(obj, |_| {}, meta_only),
        "PersistentVolumeClaim" => {
            run::<PersistentVolumeClaim>(obj, defaults::default_pvc, validation::validate_pvc)
        }
        "EndpointSlice" => run::<EndpointSlice>(obj, |_| {}, meta_only),
        "NetworkPolicy" => run::<NetworkPolicy>(obj, |_| {}, validation::validate_network_policy),
        "Ingress" => run::<Ingress>(obj, |_| {}, validation::validate_ingress),
        "Lease" => run::<Lease>(obj, |_| {}, meta_only),
        other => Err(ApiError::Unimplemented(format!(
            "the server does not serve kind {other:?}"
        ))),
    }
}

fn run<K>(
    obj: ApiObject,
    default: fn(&mut K),
    validate: fn(&K) -> Vec<FieldError>,
) -> Result<ApiObject, ApiError>
where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned,
{
    let mut typed: K = obj.to_typed()?;
    default(&mut typed);
    let errors = validate(&typed);
    if !errors.is_empty() {
        let name = typed.metadata().name.clone().unwrap_or_default();
        return Err(ApiError::Invalid(
            Invalid {
                kind: K::KIND.to_string(),
                name,
                errors,
            }
            .to_string(),
        ));
    }
    ApiObject::from_typed(&typed)
}

/// Whether this host's zone database knows a CronJob's `spec.timeZone`
/// (the CronJob controller loads zones the same way).
fn known_time_zone(name: &str) -> bool {
    k8s_openapi::jiff::tz::TimeZone::get(name).is_ok()
}

/// Metadata-only validation for kinds without kind-specific rules yet.
fn meta_only<K>(k: &K) -> Vec<FieldError>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let namespaced = ResourceKind::by_kind(K::KIND).is_some_and(|r| r.namespaced);
    validation::validate_object_meta(K::KIND, namespaced, k.metadata())
}

/// Formats field errors of `obj` (used for errors found after admission, e.g.
/// allocation and immutability) the same way as validation errors.
pub fn invalid(obj: &ApiObject, errors: Vec<FieldError>) -> ApiError {
    ApiError::Invalid(
        Invalid {
            kind: obj.kind.clone(),
            name: obj.name().to_string(),
            errors,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn admit_json(kind: &str, v: serde_json::Value) -> Result<ApiObject, ApiError> {
        let k = ResourceKind::by_kind(kind).unwrap();
        admit(k, serde_json::from_value(v).unwrap())
    }

    #[test]
    fn every_kind_is_admitted() {
        for k in weir_api::KINDS {
            let ns = if k.namespaced {
                json!("default")
            } else {
                json!(null)
            };
            let v = json!({"apiVersion": k.api_version, "kind": k.kind, "metadata": {"name": "x", "namespace": ns}});
            match admit_json(k.kind, v) {
                Ok(_) | Err(ApiError::Invalid(_)) => {}
                Err(e) => panic!("{}: {e}", k.kind),
            }
        }
    }

    #[test]
    fn invalid_deployment_lists_every_error_with_kubectl_prefix() {
        let d = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"},
            "spec":{"replicas":-1,"selector":{"matchLabels":{"app":"y"}},
                    "template":{"metadata":{"labels":{"app":"x"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}});
        let Err(ApiError::Invalid(msg)) = admit_json("Deployment", d) else {
            panic!("expected Invalid")
        };
        assert_eq!(
            msg,
            "Deployment \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0\n\
             spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn defaults_are_applied() {
        let s = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
            "spec":{"selector":{"app":"x"},"ports":[{"port":80}]}});
        let o = admit_json("Service", s).unwrap();
        assert_eq!(o.str_at(&["spec", "type"]), Some("ClusterIP"));
        assert_eq!(o.body["spec"]["ports"][0]["targetPort"], json!(80));
    }

    #[test]
    fn wrong_field_types_are_bad_requests() {
        let p = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"containers":"no"}});
        assert!(matches!(admit_json("Pod", p), Err(ApiError::BadRequest(_))));
    }
}
