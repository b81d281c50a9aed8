//! Leader election, so several weir-control replicas can share one etcd:
//! every replica serves the API, only the leader runs the scheduler and the
//! controllers.
//!
//! The lock is a `coordination.k8s.io/v1` Lease (`kube-system/weir-control`)
//! written through the API, as client-go's leaderelection does, rather than
//! an etcd lease held directly:
//! - the scheduler and controllers hold no etcd handle (an architecture
//!   invariant): each can run in its own process and still take part;
//! - the API's optimistic concurrency (resourceVersion = etcd mod_revision)
//!   already is the compare-and-swap an election needs;
//! - the holder is visible to users (`weir get lease -n kube-system`).
//!
//! Clocks: a follower never compares the holder's `renewTime` with its own
//! wall clock (replicas' clocks may disagree). Like client-go it notes, on
//! its own monotonic clock, when it last saw the Lease change, and takes over
//! only after `leaseDurationSeconds` without a change. A leader that cannot
//! renew for `renew_deadline` (< lease duration) stops leading before any
//! follower may take over, so two leaders never act at once as long as the
//! replicas' clocks run at about the same rate.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::sync::watch;
use weir_client::{Client, Error};

/// Timing of the election (Kubernetes' `--leader-elect-*` defaults: 15 s,
/// 10 s, 2 s).
#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (unique per process).
    pub identity: String,
    /// How long followers wait after the last observed change of the Lease.
    pub lease_duration: Duration,
    /// How long a leader keeps leading while its renewals fail.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// The next thing to do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create one held by us.
    Create,
    /// We hold it (renew), or it is free or expired (acquire).
    Take,
    /// Somebody else holds a live Lease.
    Wait { holder: String },
}

/// Decides from the Lease as read, when (our monotonic clock) we last saw it
/// change, and now.
pub fn decide(identity: &str, lease: Option<&Lease>, changed_at: Instant, now: Instant) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return Step::Take;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    if now.saturating_duration_since(changed_at) >= duration {
        Step::Take
    } else {
        Step::Wait { holder }
    }
}

/// The Lease we write to take or renew: our identity, a fresh renewTime, and
/// on a change of holder a new acquireTime and one more transition.
pub fn claimed(cfg: &Config, old: Option<&Lease>, wall: k8s_openapi::jiff::Timestamp) -> Lease {
    let mut lease = old.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(cfg.namespace.clone()),
            ..Default::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let previous = spec.holder_identity.clone().unwrap_or_default();
    if previous != cfg.identity {
        spec.acquire_time = Some(MicroTime(wall));
        if old.is_some() && !previous.is_empty() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
    }
    spec.holder_identity = Some(cfg.identity.clone());
    spec.lease_duration_seconds = Some(i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15));
    spec.renew_time = Some(MicroTime(wall));
    lease
}

/// The Lease a leader writes when it stops: no holder, so a follower takes
/// over at its next try instead of waiting out the lease duration.
pub fn released(mut lease: Lease, wall: k8s_openapi::jiff::Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(wall));
    lease
}

/// Whether a leader whose last successful renewal was at `last_renew` must
/// step down.
pub fn must_step_down(last_renew: Instant, now: Instant, renew_deadline: Duration) -> bool {
    now.saturating_duration_since(last_renew) >= renew_deadline
}

fn wall_now() -> k8s_openapi::jiff::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or_default();
    let micros = i32::try_from(d.subsec_micros()).unwrap_or_default();
    k8s_openapi::jiff::Timestamp::new(secs, micros * 1000)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// A process-unique identity: host name plus random bytes.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir".into());
    let mut b = [0u8; 4];
    let suffix = match getrandom::fill(&mut b) {
        Ok(()) => b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
        Err(_) => std::process::id().to_string(),
    };
    format!("{host}_{suffix}")
}

/// What this replica remembers between tries.
struct Elector {
    client: Client,
    cfg: Config,
    /// The Lease's resourceVersion when we last saw it change, and when.
    seen: Option<(String, Instant)>,
}

impl Elector {
    /// One try: reads the Lease, decides, writes. `Ok(true)`: we hold it now.
    async fn try_once(&mut self) -> Result<bool, Error> {
        let now = Instant::now();
        let lease = self
            .client
            .get_opt::<Lease>(&self.cfg.namespace, &self.cfg.name)
            .await?;
        let rv = lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
            .unwrap_or_default();
        let changed_at = match &self.seen {
            Some((seen_rv, at)) if *seen_rv == rv => *at,
            _ => {
                self.seen = Some((rv, now));
                now
            }
        };
        let written = match decide(&self.cfg.identity, lease.as_ref(), changed_at, now) {
            Step::Wait { holder } => {
                tracing::debug!(%holder, "another replica leads");
                return Ok(false);
            }
            Step::Create => {
                self.client
                    .create(&claimed(&self.cfg, None, wall_now()))
                    .await
            }
            Step::Take => {
                self.client
                    .update(&claimed(&self.cfg, lease.as_ref(), wall_now()))
                    .await
            }
        };
        match written {
            Ok(l) => {
                self.seen = Some((l.metadata.resource_version.unwrap_or_default(), now));
                Ok(true)
            }
            // Another replica wrote first: it holds the Lease now.
            Err(Error::Conflict(_) | Error::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we still hold it.
    async fn release(&self) {
        let lease = match self
            .client
            .get_opt::<Lease>(&self.cfg.namespace, &self.cfg.name)
            .await
        {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the leader lease to release it");
                return;
            }
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.cfg.identity.as_str()) {
            return;
        }
        match self.client.update(&released(lease, wall_now())).await {
            Ok(_) => tracing::info!("released leadership"),
            Err(error) => tracing::warn!(%error, "cannot release the leader lease"),
        }
    }
}

/// Runs the election until `stop` turns true, publishing whether this
/// replica leads on `leading`. On stop, a leader releases the Lease.
pub async fn run(
    client: Client,
    cfg: Config,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let retry = cfg.retry_period;
    let renew_deadline = cfg.renew_deadline;
    let mut elector = Elector {
        client,
        cfg,
        seen: None,
    };
    let mut last_renew: Option<Instant> = None;
    loop {
        let outcome = elector.try_once().await;
        let now = Instant::now();
        let is_leader = *leading.borrow();
        match (&outcome, is_leader) {
            (Ok(true), _) => {
                last_renew = Some(now);
                if !is_leader {
                    tracing::info!(identity = %elector.cfg.identity, "became leader");
                    let _ = leading.send(true);
                }
            }
            (Ok(false), true) => {
                tracing::warn!(identity = %elector.cfg.identity, "lost leadership to another replica");
                let _ = leading.send(false);
            }
            (Err(error), true)
                if last_renew.is_none_or(|t| must_step_down(t, now, renew_deadline)) =>
            {
                tracing::error!(%error, "cannot renew the leader lease within the deadline; stepping down");
                let _ = leading.send(false);
            }
            (Err(error), _) => tracing::warn!(%error, "leader election try failed"),
            (Ok(false), false) => {}
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(retry) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            if *leading.borrow() {
                let _ = leading.send(false);
                elector.release().await;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str) -> Config {
        Config {
            namespace: "kube-system".into(),
            name: "weir-control".into(),
            identity: id.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn held_by(holder: Option<&str>, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("weir-control".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(secs),
                lease_transitions: Some(3),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let other = held_by(Some("b"), 15);
        let cases: Vec<(&str, Option<Lease>, Duration, Step)> = vec![
            ("no lease", None, s(0), Step::Create),
            (
                "ours: renew",
                Some(held_by(Some("a"), 15)),
                s(100),
                Step::Take,
            ),
            ("released", Some(held_by(None, 1)), s(0), Step::Take),
            (
                "live lease of another",
                Some(other.clone()),
                s(14),
                Step::Wait { holder: "b".into() },
            ),
            ("expired lease of another", Some(other), s(15), Step::Take),
        ];
        for (name, lease, since_change, want) in cases {
            assert_eq!(
                decide("a", lease.as_ref(), t0, t0 + since_change),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn claiming_counts_transitions_only_on_a_change_of_holder() {
        let wall = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        let fresh = claimed(&cfg("a"), None, wall);
        let spec = fresh.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, None);
        assert_eq!(spec.acquire_time, Some(MicroTime(wall)));
        assert_eq!(fresh.metadata.namespace.as_deref(), Some("kube-system"));

        let later = k8s_openapi::jiff::Timestamp::from_second(1_002).unwrap();
        let renewed = claimed(&cfg("a"), Some(&fresh), later).spec.unwrap();
        assert_eq!(
            renewed.acquire_time,
            Some(MicroTime(wall)),
            "renewal keeps acquireTime"
        );
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, None);

        let taken = claimed(&cfg("a"), Some(&held_by(Some("b"), 15)), later)
            .spec
            .unwrap();
        assert_eq!(taken.lease_transitions, Some(4));
        let after_release = claimed(&cfg("a"), Some(&held_by(None, 1)), later)
            .spec
            .unwrap();
        assert_eq!(
            after_release.lease_transitions,
            Some(3),
            "a released lease is not a transition"
        );

        let rel = released(fresh, later).spec.unwrap();
        assert_eq!(rel.holder_identity, None);
        assert_eq!(rel.lease_duration_seconds, Some(1));
    }

    #[test]
    fn step_down_deadline() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        assert!(!must_step_down(t0, t0 + Duration::from_secs(9), d));
        assert!(must_step_down(t0, t0 + d, d));
    }

    #[test]
    fn identities_are_unique_per_call() {
        assert_ne!(identity(), identity());
    }
}
