//! The Job controller's thin I/O side: pop a Job key, snapshot the Job and
//! its pods from the cache, call the pure `job::reconcile`, perform its
//! actions. A Job that is gone (or going) leaves pods behind that must not
//! hang on the job-tracking finalizer: they are released here.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use weir_client::events::{self, EventType};
use weir_client::{DeleteParams, Error};

use super::exec::{create_expected_pod, delete_expected_pod, ignore_not_found, random_suffix};
use super::store::ObjKey;
use super::{Ctx, job, util};

/// Tracked pods of the Job named `name` that no live Job will count: those
/// whose controller reference names it (the Job is gone), and those the
/// garbage collector orphaned (no controller, the Job's name label).
fn orphans<'a>(in_ns: impl Iterator<Item = &'a Pod>, name: &str) -> Vec<Pod> {
    in_ns
        .filter(|p| job::tracked(p))
        .filter(|p| match util::controller_of(&p.metadata) {
            Some(r) => r.kind == "Job" && r.name == name,
            None => p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(job::JOB_NAME_LABEL))
                .is_some_and(|n| n == name),
        })
        .cloned()
        .collect()
}

pub(super) async fn reconcile_job(ctx: &Ctx, key: &ObjKey) -> Result<(), Error> {
    let q = &ctx.apps.jobs;
    let exp = &ctx.apps.job_expectations;
    if !exp.satisfied(key, Instant::now()) {
        q.add_after(key.clone(), Duration::from_secs(1));
        return Ok(());
    }
    let now = util::now();
    let (job, actions) = {
        let c = ctx.read();
        if !c.synced.contains("Pod") || !c.synced.contains("Job") {
            q.add_after(key.clone(), Duration::from_secs(1));
            return Ok(());
        }
        match c.jobs.get(key).cloned() {
            None => {
                let gone = orphans(c.pods.in_namespace(&key.namespace), &key.name);
                (None, job::release_all(&gone))
            }
            Some(job) => {
                // A Job's pods are those it controls (its generated selector is its uid).
                let uid = job.metadata.uid.clone().unwrap_or_default();
                let mut pods: Vec<Pod> = c
                    .pods
                    .owned_by(&uid)
                    .filter(|p| util::controlled_by(&p.metadata, &uid))
                    .cloned()
                    .collect();
                if util::terminating(&job.metadata) {
                    // Orphan propagation removes the controller references first.
                    pods.extend(
                        orphans(c.pods.in_namespace(&key.namespace), &key.name)
                            .into_iter()
                            .filter(|p| util::controller_of(&p.metadata).is_none()),
                    );
                }
                let actions = job::reconcile(&job, &pods, now, &mut random_suffix);
                (Some(job), actions)
            }
        }
    };
    exp.expect_actions(
        key,
        &actions,
        |a| matches!(a, job::Action::CreatePod(_)),
        |a| matches!(a, job::Action::DeletePod(_)),
    );
    let rec = &ctx.apps.job_events;
    let reference = job.as_ref().map(events::reference);
    let emit = |t: EventType, reason: &'static str, message: String| {
        if let Some(r) = &reference {
            super::emit(rec, r.clone(), t, reason, message);
        }
    };
    let mut first_err = None;
    for a in actions {
        let r = match a {
            job::Action::CreatePod(p) => create_expected_pod(ctx, exp, key, &p, &emit)
                .await
                .map(|name| tracing::info!(pod = %name, "created job pod")),
            job::Action::DeletePod(k) => {
                tracing::info!(pod = %k.name, "deleting job pod");
                delete_expected_pod(ctx, exp, key, &k, &emit).await
            }
            job::Action::RemoveFinalizer(k) => remove_tracking_finalizer(ctx, &k).await,
            job::Action::UpdateStatus(n) => ctx.client.update_status(n.as_ref()).await.map(|_| ()),
            job::Action::DeleteJob => {
                tracing::info!("ttlSecondsAfterFinished passed; deleting job");
                let params = DeleteParams {
                    propagation_policy: "Background".into(),
                    ..Default::default()
                };
                ignore_not_found(
                    ctx.client
                        .delete::<Job>(&key.namespace, &key.name, &params)
                        .await,
                )
            }
            job::Action::Record {
                warning,
                reason,
                message,
            } => {
                let t = if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                emit(t, reason, message);
                Ok(())
            }
            job::Action::RequeueAt(t) => {
                let wait = t.duration_since(now).unsigned_abs();
                q.add_after(key.clone(), wait + Duration::from_millis(100));
                Ok(())
            }
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Removes the job-tracking finalizer from a pod (fresh read, update on its
/// resourceVersion: a conflict retries the whole reconcile).
async fn remove_tracking_finalizer(ctx: &Ctx, k: &ObjKey) -> Result<(), Error> {
    let mut pod: Pod = match ctx.client.get(&k.namespace, &k.name).await {
        Ok(p) => p,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(fs) = pod.metadata.finalizers.as_mut() else {
        return Ok(());
    };
    let before = fs.len();
    fs.retain(|f| f != job::TRACKING_FINALIZER);
    if fs.len() == before {
        return Ok(());
    }
    if fs.is_empty() {
        pod.metadata.finalizers = None;
    }
    tracing::debug!(pod = %k.name, "removing job-tracking finalizer");
    ignore_not_found(ctx.client.update(&pod).await)
}
