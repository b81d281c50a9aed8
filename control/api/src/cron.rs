//! Standard 5-field cron schedules, as CronJob's `spec.schedule` takes them:
//! the syntax and the error wording of robfig/cron v3's `ParseStandard`,
//! which Kubernetes uses both to validate and to schedule.
//! `minute hour day-of-month month day-of-week`, each field `*`, `?`, a
//! number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (a through the
//! maximum), or a comma list of those; month and weekday names (`JAN`,
//! `MON`; weekdays 0-6, Sunday = 0); the descriptors `@yearly`/`@annually`,
//! `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`. When both day
//! fields are restricted a day matches either (cron's rule); when one is
//! `*`/`?` (without a step above 1) both must match.
//!
//! One parser for the API server's validation and the CronJob controller,
//! so what is accepted is what runs. Written here rather than taken from a
//! crate: the `cron` crate wants 6 or 7 fields (seconds first), and 5-field
//! crates work on chrono, whose named time zones need chrono-tz; this tree
//! has jiff. Pure: no clock is read, and time zones come in as values (the
//! caller loads them).

use k8s_openapi::jiff::civil::{Date, DateTime, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};

/// A schedule that does not parse, with robfig/cron's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(pub String);

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month / day-of-week is a plain `*` or `?` (robfig's star bit).
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Bounds of one field and the names it accepts (first name = `names_base`).
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_base: u32,
}

const FIELDS: [Bounds; 5] = [
    Bounds {
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    Bounds {
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    Bounds {
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    Bounds {
        min: 1,
        max: 12,
        names: &MONTHS,
        names_base: 1,
    },
    Bounds {
        min: 0,
        max: 6,
        names: &WEEKDAYS,
        names_base: 0,
    },
];

fn err(msg: String) -> CronError {
    CronError(msg)
}

/// Go's `strconv.Atoi` followed by robfig's negative check.
fn parse_int(expr: &str) -> Result<u32, CronError> {
    let n: i64 = expr.parse().map_err(|e: std::num::ParseIntError| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: {why}"
        ))
    })?;
    if n < 0 {
        return Err(err(format!("negative number ({n}) not allowed: {expr}")));
    }
    u32::try_from(n).map_err(|_| {
        err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: value out of range"
        ))
    })
}

fn int_or_name(b: &Bounds, expr: &str) -> Result<u32, CronError> {
    match b.names.iter().position(|n| n.eq_ignore_ascii_case(expr)) {
        Some(i) => Ok(i as u32 + b.names_base),
        None => parse_int(expr),
    }
}

/// One comma-separated part of a field (robfig's `getRange`): its bits and
/// whether it is a star.
fn range_bits(b: &Bounds, expr: &str) -> Result<(u64, bool), CronError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let mut star = false;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        star = true;
        (b.min, b.max)
    } else {
        let start = int_or_name(b, low_and_high[0])?;
        let end = match low_and_high.len() {
            1 => start,
            2 => int_or_name(b, low_and_high[1])?,
            _ => return Err(err(format!("too many hyphens: {expr}"))),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(err(format!("too many slashes: {expr}"))),
    };
    if start < b.min {
        return Err(err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        )));
    }
    if end > b.max {
        return Err(err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        )));
    }
    if start > end {
        return Err(err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(err(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star))
}

/// A whole field: the union of its comma-separated parts (empty parts are
/// skipped, as Go's `strings.FieldsFunc` does).
fn field_bits(b: &Bounds, text: &str) -> Result<(u64, bool), CronError> {
    let mut bits = 0;
    let mut star = false;
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (b2, s) = range_bits(b, part)?;
        bits |= b2;
        star |= s;
    }
    Ok((bits, star))
}

/// Whether a schedule names a time zone (`TZ=` or `CRON_TZ=`), which
/// Kubernetes rejects in favour of `spec.timeZone`.
pub fn has_time_zone(spec: &str) -> bool {
    spec.contains("TZ")
}

impl Schedule {
    /// Parses a schedule. A `TZ=`/`CRON_TZ=` prefix is refused (CronJob
    /// validation reports it with Kubernetes' own message).
    pub fn parse(spec: &str) -> Result<Schedule, CronError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(err("empty spec string".into()));
        }
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err(err(
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into(),
            ));
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with("@every ") => {
                return Err(err(format!(
                    "{s}: @every schedules are not supported; use a 5-field schedule"
                )));
            }
            s if s.starts_with('@') => {
                return Err(err(format!("unrecognized descriptor: {s}")));
            }
            s => s,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                parts.len(),
                parts.join(" ")
            )));
        }
        let mut bits = [(0u64, false); 5];
        for (i, (b, text)) in FIELDS.iter().zip(&parts).enumerate() {
            bits[i] = field_bits(b, text)?;
        }
        Ok(Schedule {
            minutes: bits[0].0,
            hours: bits[1].0 as u32,
            days: bits[2].0 as u32,
            months: bits[3].0 as u16,
            weekdays: bits[4].0 as u8,
            days_star: bits[2].1,
            weekdays_star: bits[4].1,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn parse_errors_in_robfig_wording() {
        let cases = [
            ("", "empty spec string"),
            ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
            (
                "0 0 * * * *",
                "expected exactly 5 fields, found 6: [0 0 * * * *]",
            ),
            ("61 * * * *", "end of range (61) above maximum (59): 61"),
            ("* 24 * * *", "end of range (24) above maximum (23): 24"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("* * * 13 *", "end of range (13) above maximum (12): 13"),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            (
                "x * * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            (
                "-1 * * * *",
                "failed to parse int from : strconv.Atoi: parsing \"\": invalid syntax",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("*/2/3 * * * *", "too many slashes: */2/3"),
            ("@every-day", "unrecognized descriptor: @every-day"),
            ("@every 5m", "@every schedules are not supported"),
            (
                "TZ=UTC 0 * * * *",
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ),
        ];
        for (spec, want) in cases {
            let got = Schedule::parse(spec).expect_err(spec).to_string();
            assert!(got.contains(want), "{spec:?}: {got}");
        }
    }

    #[test]
    fn accepted_schedules() {
        for s in [
            "*/5 * * * *",
            "0 3 * * 1-5",
            "30 2 1,15 * *",
            "0 0 * JAN,jul sun",
            "0 0 ? * *",
            "@hourly",
            "@annually",
            "15 10-20/2 * * *",
            "5/20 * * * *",
            "0 0 1,,15 * *",
        ] {
            assert!(Schedule::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn next_after_in_utc() {
        let cases = [
            (
                "*/15 * * * *",
                "2026-11-25T00:07:30Z",
                "2026-11-25T00:15:00Z",
            ),
            (
                "*/15 * * * *",
                "2026-11-25T00:15:00Z",
                "2026-11-25T00:30:00Z",
            ),
            ("0 0 1 * *", "2026-12-15T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("@weekly", "2026-11-25T00:00:00Z", "2026-11-29T00:00:00Z"),
            (
                "0 9 * * MON-FRI",
                "2026-11-27T10:00:00Z",
                "2026-11-30T09:00:00Z",
            ),
            ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            (
                "5/20 * * * *",
                "2026-11-25T00:06:00Z",
                "2026-11-25T00:25:00Z",
            ),
            // Both day fields restricted: either matches (the 13th, or a Friday).
            (
                "0 0 13 * FRI",
                "2026-11-25T00:00:00Z",
                "2026-11-27T00:00:00Z",
            ),
            // A star (step 1) in one: both must match.
            (
                "0 0 13 * */1",
                "2026-11-14T00:00:00Z",
                "2026-12-13T00:00:00Z",
            ),
            // A stepped star is no star (robfig): either matches; Sunday the 15th.
            (
                "0 0 13 * */2",
                "2026-11-14T00:00:00Z",
                "2026-11-15T00:00:00Z",
            ),
        ];
        for (spec, after, want) in cases {
            let s = Schedule::parse(spec).expect(spec);
            assert_eq!(
                s.next_after(ts(after), &TimeZone::UTC),
                Some(ts(want)),
                "{spec} after {after}"
            );
        }
        let never = Schedule::parse("0 0 30 2 *").expect("parses");
        assert_eq!(
            never.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }
}
