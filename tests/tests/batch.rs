//! Jobs on the real cluster (issue 4): real containers exit, weir-agent
//! reports their exit codes, the Job controller applies the pod failure
//! policy to them and counts every pod through the job-tracking finalizer;
//! deleting the Jobs leaves no pod behind.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use weir_e2e::{Check, Cluster, DeleteParams, ListParams, unique_suffix, wait_for};

const NS: &str = "default";
const CLIENT_IMAGE: &str = "127.0.0.1:5000/weir/client:v1";
const TRACKING: &str = "batch.kubernetes.io/job-tracking";
/// Generous: image pulls and sandboxes on a busy 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(240);

fn job_yaml(name: &str, completions: i32, script: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  completions: {completions}
  parallelism: 2
  backoffLimit: 4
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes:
        containerName: work
        operator: In
        values: [42]
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: {CLIENT_IMAGE}
        command: ["sh", "-c", "{script}"]
"#
    )
}

fn condition(j: &Job, type_: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn pods_of(c: &Cluster, job: &str) -> Result<Vec<Pod>> {
    let params = ListParams {
        label_selector: format!("batch.kubernetes.io/job-name={job}"),
        ..Default::default()
    };
    Ok(c.client.list::<Pod>(NS, &params).await?.items)
}

async fn wait_condition(c: &Cluster, name: &str, type_: &str) -> Result<(Job, String, String)> {
    wait_for(&format!("job {name} {type_}"), TIMEOUT, || async {
        let j: Job = c.client.get(NS, name).await?;
        Ok(match condition(&j, type_) {
            Some((r, m)) => Check::Done((j, r, m)),
            None => Check::Waiting(format!("{:?}", j.status)),
        })
    })
    .await
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_jobs_exit_codes_and_tracking() -> Result<()> {
    let c = Cluster::connect().await?;
    let s = unique_suffix();
    let ok = format!("ok-{s}");
    let bad = format!("bad-{s}");
    c.apply_ok(&job_yaml(&ok, 3, "echo done"))?;
    c.apply_ok(&job_yaml(&bad, 1, "exit 42"))?;

    // Three successes, each counted once, every finalizer gone.
    let (j, reason, _) = wait_condition(&c, &ok, "Complete").await?;
    ensure!(reason == "CompletionsReached", "ok: {reason}");
    let st = j.status.unwrap_or_default();
    ensure!(
        st.succeeded == Some(3) && st.failed.is_none() && st.uncounted_terminated_pods.is_none(),
        "ok status: {st:?}"
    );
    let pods = pods_of(&c, &ok).await?;
    ensure!(
        pods.iter().all(|p| !p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == TRACKING)),
        "finalizers left: {pods:?}"
    );

    // The agent's exit code 42 meets the FailJob rule: no retry.
    let (j, reason, message) = wait_condition(&c, &bad, "Failed").await?;
    let pods = pods_of(&c, &bad).await?;
    ensure!(pods.len() == 1, "FailJob retried: {} pods", pods.len());
    let pod = pods[0].metadata.name.clone().unwrap_or_default();
    ensure!(reason == "PodFailurePolicy", "bad: {reason}");
    ensure!(
        message
            == format!(
                "Container work for pod {NS}/{pod} failed with exit code 42 matching FailJob rule at index 0"
            ),
        "bad message: {message}"
    );
    ensure!(
        j.status.and_then(|s| s.failed) == Some(1),
        "bad counts one failure"
    );

    // Deleting the Jobs collects their pods; none hangs on the finalizer.
    for name in [&ok, &bad] {
        c.client
            .delete::<Job>(NS, name, &DeleteParams::default())
            .await?;
    }
    wait_for("job pods collected", TIMEOUT, || async {
        let left = pods_of(&c, &ok).await?.len() + pods_of(&c, &bad).await?.len();
        Ok(if left == 0 {
            Check::Done(())
        } else {
            Check::Waiting(format!("{left} pods left"))
        })
    })
    .await
}
