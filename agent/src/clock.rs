//! The wall clock, read in one place. Decision functions take the time as an
//! argument; only the I/O loops call these.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn since_epoch() -> std::time::Duration {
    // A clock before 1970 is a broken machine; treat it as the epoch.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now, in nanoseconds since the epoch (the CRI's unit).
pub fn now_ns() -> i64 {
    i64::try_from(since_epoch().as_nanos()).unwrap_or(i64::MAX)
}

/// Now as an API time, truncated to whole seconds like the API's JSON form,
/// so a value read back compares equal to the one written.
pub fn now_time() -> Time {
    let secs = i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}
