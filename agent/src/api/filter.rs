//! What an Observe request asks for, validated ([`Filter::try_from`]), and
//! which flows it selects ([`Filter::matches`], [`Filter::replay`]). Pure.

use weir_client::agent::proto::{Flow, ObserveRequest, Verdict};

/// A validated Observe request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// (namespace, name): flows from or to this pod.
    pub pod: Option<(String, String)>,
    /// Only this verdict.
    pub verdict: Option<Verdict>,
    /// Replay at most this many recent flows.
    pub last: usize,
    /// Replay only flows at or after this time (Unix ns; 0 = no bound).
    pub since_unix_nanos: i64,
    pub follow: bool,
}

/// A request field that cannot be used; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("pod: {value:?} {problem}")]
    Pod { value: String, problem: String },
    #[error("verdict: unknown value {0} (use FORWARDED, DROPPED or leave it unset)")]
    Verdict(i32),
    #[error("since_unix_nanos: {0} is negative")]
    Since(i64),
}

impl TryFrom<&ObserveRequest> for Filter {
    type Error = FilterError;

    fn try_from(r: &ObserveRequest) -> Result<Self, FilterError> {
        let pod = match r.pod.as_str() {
            "" => None,
            value => Some(parse_pod(value)?),
        };
        let verdict = match Verdict::try_from(r.verdict) {
            Ok(Verdict::Unspecified) => None,
            Ok(v) => Some(v),
            Err(_) => return Err(FilterError::Verdict(r.verdict)),
        };
        if r.since_unix_nanos < 0 {
            return Err(FilterError::Since(r.since_unix_nanos));
        }
        Ok(Filter {
            pod,
            verdict,
            last: usize::try_from(r.last).unwrap_or(usize::MAX),
            since_unix_nanos: r.since_unix_nanos,
            follow: r.follow,
        })
    }
}

/// "namespace/name", each part a valid Kubernetes name.
fn parse_pod(value: &str) -> Result<(String, String), FilterError> {
    let problem = |problem: String| FilterError::Pod {
        value: value.to_owned(),
        problem,
    };
    let Some((ns, name)) = value.split_once('/') else {
        return Err(problem("must be NAMESPACE/NAME".to_owned()));
    };
    if let Some(e) = weir_api::validation::dns1123_label(ns).into_iter().next() {
        return Err(problem(format!("has an invalid namespace: {e}")));
    }
    if let Some(e) = weir_api::validation::dns1123_subdomain(name)
        .into_iter()
        .next()
    {
        return Err(problem(format!("has an invalid name: {e}")));
    }
    Ok((ns.to_owned(), name.to_owned()))
}

fn is_pod(end: Option<&weir_client::agent::proto::Endpoint>, ns: &str, name: &str) -> bool {
    end.is_some_and(|e| e.namespace == ns && e.pod == name)
}

impl Filter {
    /// Whether a live flow passes the pod and verdict filters.
    pub fn matches(&self, flow: &Flow) -> bool {
        if let Some((ns, name)) = &self.pod
            && !is_pod(flow.source.as_ref(), ns, name)
            && !is_pod(flow.destination.as_ref(), ns, name)
        {
            return false;
        }
        self.verdict.is_none_or(|v| flow.verdict == v as i32)
    }

    /// The flows of `ring` (oldest first) to replay: the matching ones at or
    /// after `since`, at most the `last` most recent, oldest first.
    pub fn replay<'a, T: AsRef<Flow> + 'a>(
        &self,
        ring: impl DoubleEndedIterator<Item = &'a T>,
    ) -> Vec<&'a T> {
        let mut out: Vec<&T> = ring
            .rev()
            .filter(|f| f.as_ref().time_unix_nanos >= self.since_unix_nanos)
            .filter(|f| self.matches(f.as_ref()))
            .take(self.last)
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use weir_client::agent::proto::Endpoint;

    use super::*;

    fn req(pod: &str, verdict: i32) -> ObserveRequest {
        ObserveRequest {
            pod: pod.into(),
            verdict,
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_validated_naming_the_field() {
        let cases: [(&str, ObserveRequest, Result<(), &str>); 7] = [
            ("empty is everything", req("", 0), Ok(())),
            ("a pod", req("default/web-1", 2), Ok(())),
            (
                "no slash",
                req("web-1", 0),
                Err(r#"pod: "web-1" must be NAMESPACE/NAME"#),
            ),
            (
                "bad namespace",
                req("Default/web", 0),
                Err(r#"pod: "Default/web" has an invalid namespace"#),
            ),
            (
                "empty name",
                req("default/", 0),
                Err(r#"pod: "default/" has an invalid name"#),
            ),
            (
                "unknown verdict",
                req("", 9),
                Err("verdict: unknown value 9"),
            ),
            (
                "negative since",
                ObserveRequest {
                    since_unix_nanos: -1,
                    ..Default::default()
                },
                Err("since_unix_nanos: -1 is negative"),
            ),
        ];
        for (name, r, want) in cases {
            match (Filter::try_from(&r), want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(prefix)) => {
                    assert!(e.to_string().starts_with(prefix), "{name}: {e}")
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn flow(t: i64, src: (&str, &str), dst: (&str, &str), verdict: Verdict) -> Flow {
        let end = |(ns, pod): (&str, &str)| Endpoint {
            namespace: ns.into(),
            pod: pod.into(),
            ..Default::default()
        };
        Flow {
            time_unix_nanos: t,
            source: Some(end(src)),
            destination: Some(end(dst)),
            verdict: verdict as i32,
            ..Default::default()
        }
    }

    #[test]
    fn matches_by_either_end_and_verdict() {
        let f = flow(1, ("a", "client"), ("b", "web"), Verdict::Dropped);
        let filter = |pod: Option<(&str, &str)>, verdict: Option<Verdict>| Filter {
            pod: pod.map(|(n, p)| (n.into(), p.into())),
            verdict,
            last: 0,
            since_unix_nanos: 0,
            follow: false,
        };
        let cases = [
            (filter(None, None), true),
            (filter(Some(("a", "client")), None), true),
            (filter(Some(("b", "web")), None), true),
            (filter(Some(("a", "web")), None), false),
            (filter(None, Some(Verdict::Dropped)), true),
            (filter(None, Some(Verdict::Forwarded)), false),
            (filter(Some(("b", "web")), Some(Verdict::Forwarded)), false),
        ];
        for (i, (filter, want)) in cases.into_iter().enumerate() {
            assert_eq!(filter.matches(&f), want, "case {i}");
        }
    }

    #[test]
    fn replay_takes_the_most_recent_matching_since() {
        let ring: Vec<Flow> = (1..=6)
            .map(|t| {
                let v = if t % 2 == 0 {
                    Verdict::Dropped
                } else {
                    Verdict::Forwarded
                };
                flow(t, ("a", "c"), ("b", "w"), v)
            })
            .collect();
        struct F(Flow);
        impl AsRef<Flow> for F {
            fn as_ref(&self) -> &Flow {
                &self.0
            }
        }
        let ring: Vec<F> = ring.into_iter().map(F).collect();
        let times = |filter: Filter| -> Vec<i64> {
            filter
                .replay(ring.iter())
                .iter()
                .map(|f| f.0.time_unix_nanos)
                .collect()
        };
        let base = Filter {
            pod: None,
            verdict: None,
            last: usize::MAX,
            since_unix_nanos: 0,
            follow: false,
        };
        assert_eq!(times(base.clone()), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            times(Filter {
                last: 2,
                ..base.clone()
            }),
            vec![5, 6]
        );
        assert_eq!(
            times(Filter {
                verdict: Some(Verdict::Dropped),
                last: 2,
                ..base.clone()
            }),
            vec![4, 6]
        );
        assert_eq!(
            times(Filter {
                since_unix_nanos: 5,
                ..base.clone()
            }),
            vec![5, 6]
        );
        assert_eq!(times(Filter { last: 0, ..base }), Vec::<i64>::new());
    }
}
