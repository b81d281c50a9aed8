//! CronJob schedules for the controller: the parser is weir-api's
//! (`weir_api::cron`, shared with the API server's validation, so what is
//! accepted is what runs); this module adds the one impure part, loading
//! `spec.timeZone` from the system's zoneinfo (jiff's `tzdb-zoneinfo`).

use k8s_openapi::jiff::tz::TimeZone;
pub use weir_api::cron::{CronError, Schedule};

/// The time zone named by `spec.timeZone`, from the system's zoneinfo.
/// Without one, Kubernetes uses the controller manager's local zone; weir
/// uses UTC, so a schedule does not change meaning with the host.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| CronError(format!("unknown time zone {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn next_after_table() {
        // (schedule, zone, after, expected next)
        let cases = [
            (
                "*/15 * * * *",
                "UTC",
                "2026-11-25T00:07:30Z",
                "2026-11-25T00:15:00Z",
            ),
            (
                "*/15 * * * *",
                "UTC",
                "2026-11-25T00:15:00Z",
                "2026-11-25T00:30:00Z",
            ),
            (
                "0 * * * *",
                "UTC",
                "2026-11-25T23:59:00Z",
                "2026-11-26T00:00:00Z",
            ),
            (
                "30 2 * * *",
                "UTC",
                "2026-11-25T03:00:00Z",
                "2026-11-26T02:30:00Z",
            ),
            (
                "0 0 1 * *",
                "UTC",
                "2026-12-15T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "@yearly",
                "UTC",
                "2026-06-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "@weekly",
                "UTC",
                "2026-11-25T00:00:00Z",
                "2026-11-29T00:00:00Z",
            ), // a Sunday
            (
                "0 9 * * MON-FRI",
                "UTC",
                "2026-11-27T10:00:00Z",
                "2026-11-30T09:00:00Z",
            ),
            (
                "0 0 29 2 *",
                "UTC",
                "2026-03-01T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ),
            (
                "1-10/3 * * * *",
                "UTC",
                "2026-11-25T00:04:00Z",
                "2026-11-25T00:07:00Z",
            ),
            (
                "5/20 * * * *",
                "UTC",
                "2026-11-25T00:06:00Z",
                "2026-11-25T00:25:00Z",
            ),
            (
                "0 0 * JAN,jul *",
                "UTC",
                "2026-02-01T00:00:00Z",
                "2026-07-01T00:00:00Z",
            ),
            // Both day fields restricted: either matches (the 13th, or a Friday).
            (
                "0 0 13 * FRI",
                "UTC",
                "2026-11-25T00:00:00Z",
                "2026-11-27T00:00:00Z",
            ),
            // One starts with '*': both must match (the 13th, any weekday).
            (
                "0 0 13 * */1",
                "UTC",
                "2026-11-14T00:00:00Z",
                "2026-12-13T00:00:00Z",
            ),
            (
                "0 9 * * *",
                "America/New_York",
                "2026-11-25T00:00:00Z",
                "2026-11-25T14:00:00Z",
            ),
            (
                "0 9 * * *",
                "Asia/Tokyo",
                "2026-11-25T01:00:00Z",
                "2026-11-26T00:00:00Z",
            ),
            // 02:30 does not exist on 2026-03-08 in New York: fires right after the gap.
            (
                "30 2 * * *",
                "America/New_York",
                "2026-03-08T05:00:00Z",
                "2026-03-08T07:30:00Z",
            ),
            // 01:30 happens twice on 2026-11-01 in New York: fires once, the first time.
            (
                "30 1 * * *",
                "America/New_York",
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
            ),
            (
                "30 1 * * *",
                "America/New_York",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
            ),
        ];
        for (spec, zone, after, want) in cases {
            let s = Schedule::parse(spec).expect(spec);
            let tz = time_zone(Some(zone)).expect(zone);
            assert_eq!(
                s.next_after(ts(after), &tz),
                Some(ts(want)),
                "{spec} {zone} after {after}"
            );
        }
    }

    #[test]
    fn unknown_zone_is_named() {
        let err = time_zone(Some("Mars/Olympus"))
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
