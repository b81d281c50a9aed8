//! Standard 5-field cron schedules, as CronJob's `spec.schedule` takes them
//! (the syntax of robfig/cron's standard parser that Kubernetes uses):
//! `minute hour day-of-month month day-of-week`, each field `*`, `?`, a
//! number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of
//! those; month and weekday names (`JAN`, `MON`); 7 is Sunday too; the
//! macros `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`,
//! `@hourly`. When both day fields are restricted a day matches either (cron's
//! rule); when one starts with `*` both must match.
//!
//! Written here rather than taken from a crate: the `cron` crate wants 6 or 7
//! fields (seconds first), and 5-field crates work on chrono, whose named time
//! zones need chrono-tz (the whole tz database compiled in); this tree already
//! has jiff, whose time zones read the system's zoneinfo. Pure: times go in
//! and come out, no clock is read.

use k8s_openapi::jiff::civil::{Date, DateTime, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};

/// A schedule that could not be parsed, with the reason in cron's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether the day-of-month / day-of-week field started with `*` or `?`.
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// First name's value (JAN = 1, SUN = 0).
    names_base: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_base: 1,
    },
    // 7 is accepted as Sunday and folded onto 0.
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        names_base: 0,
    },
];

fn value(f: &Field, s: &str) -> Result<u32, CronError> {
    if let Some(i) = f.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + f.names_base);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| CronError(format!("{}: {s:?} is not a number", f.name)))?;
    if v < f.min || v > f.max {
        return Err(CronError(format!(
            "{}: {v} is out of range {}-{}",
            f.name, f.min, f.max
        )));
    }
    Ok(v)
}

/// The bits of one field.
fn field_bits(f: &Field, text: &str) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| CronError(format!("{}: bad step {s:?}", f.name)))?;
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = match range {
            "*" | "?" => (f.min, f.max),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(f, a)?, value(f, b)?),
                // "a/n" means a through the maximum, every n.
                None if step.is_some() => (value(f, range)?, f.max),
                None => {
                    let v = value(f, range)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(CronError(format!(
                "{}: range {range:?} is backwards",
                f.name
            )));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    pub fn parse(spec: &str) -> Result<Schedule, CronError> {
        let spec = spec.trim();
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err(CronError(
                "a time zone in the schedule is not supported; use spec.timeZone".into(),
            ));
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(CronError(format!("unrecognized descriptor {s:?}")));
            }
            s => s,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError(format!(
                "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {}: {spec:?}",
                parts.len()
            )));
        }
        let mut bits = [0u64; 5];
        for (i, (f, text)) in FIELDS.iter().zip(&parts).enumerate() {
            bits[i] = field_bits(f, text)?;
        }
        let mut weekdays = bits[4];
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let star = |s: &str| s.starts_with('*') || s.starts_with('?');
        Ok(Schedule {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays: weekdays as u8,
            days_star: star(parts[2]),
            weekdays_star: star(parts[4]),
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first civil minute at or after `from` that the schedule names,
    /// searching at most five years ahead (None: it never fires, e.g. Feb 30).
    fn next_civil(&self, from: DateTime) -> Option<DateTime> {
        let limit = from.date().year() + 5;
        let mut t = from;
        while t.date().year() <= limit {
            let d = t.date();
            if self.months & (1 << d.month()) == 0 {
                let first = d.first_of_month().checked_add(1.month()).ok()?;
                t = first.to_datetime(Time::midnight());
                continue;
            }
            if !self.day_matches(d) {
                t = d.tomorrow().ok()?.to_datetime(Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                let hour_start = t.date().to_datetime(Time::new(t.hour(), 0, 0, 0).ok()?);
                t = hour_start.checked_add(1.hour()).ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The first time strictly after `after` that the schedule fires, read in
    /// `tz`. A time skipped by a DST change fires at the first instant after
    /// the gap; a time repeated by one fires once, the first time.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        // The next whole minute after `after`.
        let minute = local
            .date()
            .to_datetime(Time::new(local.hour(), local.minute(), 0, 0).ok()?);
        let mut from = minute.checked_add(1.minute()).ok()?;
        loop {
            let civil = self.next_civil(from)?;
            let ts = tz.to_ambiguous_timestamp(civil).compatible().ok()?;
            if ts > after {
                return Some(ts);
            }
            from = civil.checked_add(1.minute()).ok()?;
        }
    }
}

/// The time zone named by `spec.timeZone`, from the system's zoneinfo.
/// Without one, Kubernetes uses the controller manager's local zone; weir
/// uses UTC, so a schedule does not change meaning with the host.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| CronError(format!("unknown time zone {n:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn parse_errors_table() {
        let cases = [
            ("* * * *", "expected exactly 5 fields"),
            ("0 0 * * * *", "expected exactly 5 fields"),
            ("60 * * * *", "minute: 60 is out of range 0-59"),
            ("* 24 * * *", "hour: 24 is out of range 0-23"),
            ("* * 0 * *", "day of month: 0 is out of range 1-31"),
            ("* * * 13 *", "month: 13 is out of range 1-12"),
            ("* * * * 8", "day of week: 8 is out of range 0-7"),
            ("*/0 * * * *", "minute: bad step"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "minute: \"x\" is not a number"),
            ("@every 5m", "unrecognized descriptor"),
            ("TZ=UTC 0 * * * *", "use spec.timeZone"),
        ];
        for (spec, want) in cases {
            let err = Schedule::parse(spec).expect_err(spec).to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
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
                "0 9 * * 7",
                "UTC",
                "2026-11-25T00:00:00Z",
                "2026-11-29T09:00:00Z",
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
    fn impossible_dates_never_fire() {
        let s = Schedule::parse("0 0 30 2 *").expect("parses");
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn unknown_zone_is_named() {
        let err = time_zone(Some("Mars/Olympus"))
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
