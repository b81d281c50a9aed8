//! Following one object until a condition holds, the way kubectl's `wait`
//! machinery does: read it once, then watch it (field selector on its name)
//! from that resourceVersion, and read it again whenever the watch ends or
//! its revision expired. No polling: a change is seen when it happens.

use std::time::Instant;

use futures::StreamExt;
use weir_client::{Client, Error, WatchParams, proto};

/// Why following stopped without the condition holding.
#[derive(Debug)]
pub(crate) enum WaitError {
    /// The deadline passed.
    Timeout,
    /// The API server answered with an error.
    Api(Error),
}

/// What `step` sees: the object's JSON, or `None` once it is gone.
pub(crate) type State<'a> = Option<&'a [u8]>;

/// Follows `kind` `ns/name` and calls `step` with its current state and
/// after every change, until `step` returns `Some` (returned here) or
/// `deadline` passes.
pub(crate) async fn follow<T>(
    client: &Client,
    kind: &str,
    ns: &str,
    name: &str,
    deadline: Option<Instant>,
    mut step: impl FnMut(State<'_>) -> Option<T>,
) -> Result<T, WaitError> {
    loop {
        // The current state, and the revision to watch from.
        let rv = match client.get_json(kind, ns, name).await {
            Err(Error::NotFound(_)) => match step(None) {
                Some(t) => return Ok(t),
                // Not there yet (e.g. about to be created): watch from now.
                None => String::new(),
            },
            Err(e) => return Err(WaitError::Api(e)),
            Ok(json) => {
                if let Some(t) = step(Some(&json)) {
                    return Ok(t);
                }
                resource_version(&json)
            }
        };
        let params = WatchParams {
            field_selector: format!("metadata.name={name}"),
            resource_version: rv,
            ..Default::default()
        };
        let mut events = client
            .watch_json(kind, ns, &params)
            .await
            .map_err(WaitError::Api)?;
        loop {
            let next = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, events.next()).await {
                        Ok(next) => next,
                        Err(_) => return Err(WaitError::Timeout),
                    }
                }
                None => events.next().await,
            };
            match next {
                // Ended or expired: read the object again and resume.
                None | Some(Err(Error::Expired(_))) => break,
                Some(Err(e)) => return Err(WaitError::Api(e)),
                Some(Ok(ev)) => {
                    let state = match proto::watch_event::Type::try_from(ev.r#type) {
                        Ok(proto::watch_event::Type::Deleted) => None,
                        Ok(proto::watch_event::Type::Bookmark) | Err(_) => continue,
                        Ok(_) => Some(ev.json.as_slice()),
                    };
                    if let Some(t) = step(state) {
                        return Ok(t);
                    }
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(WaitError::Timeout);
        }
    }
}

/// `metadata.resourceVersion` of an object's JSON ("" if absent: the
/// watch then starts from the current state).
fn resource_version(json: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_version_of_json() {
        for (json, rv) in [
            (r#"{"metadata":{"name":"a","resourceVersion":"42"}}"#, "42"),
            (r#"{"metadata":{"name":"a"}}"#, ""),
            ("not json", ""),
        ] {
            assert_eq!(resource_version(json.as_bytes()), rv, "{json}");
        }
    }
}
