//! CronJob: the schedule (standard 5-field cron, as Kubernetes' robfig/cron
//! parser accepts it), policies and the job template.

use k8s_openapi::api::batch::v1::CronJob;

use super::{FieldError, quote, validate_object_meta, validate_pod_spec};

/// The fields of a cron line: name, lowest, highest, names for values.
const FIELDS: &[(&str, u32, u32, &[&str])] = &[
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of month", 1, 31, &[]),
    (
        "month",
        1,
        12,
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    ),
    (
        "day of week",
        0,
        6,
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ),
];

const MACROS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn value(s: &str, lo: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(lo + u32::try_from(i).unwrap_or(0));
    }
    s.parse::<u32>()
        .map_err(|_| format!("failed to parse int from {s}"))
}

/// Checks one comma-separated field of a cron line.
fn field(
    expr: &str,
    (_, lo, hi, names): (&str, u32, u32, &[&str]),
    wildcard_q: bool,
) -> Result<(), String> {
    for part in expr.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(s) = step {
            let n = s
                .parse::<u32>()
                .map_err(|_| format!("failed to parse int from {s}"))?;
            if n == 0 {
                return Err(format!("step of range should be a positive number: {part}"));
            }
        }
        if range == "*" || (wildcard_q && range == "?") {
            continue;
        }
        let (a, b) = match range.split_once('-') {
            Some((a, b)) => (value(a, lo, names)?, value(b, lo, names)?),
            None => {
                let v = value(range, lo, names)?;
                (v, if step.is_some() { hi } else { v })
            }
        };
        if a < lo {
            return Err(format!(
                "beginning of range ({a}) below minimum ({lo}): {part}"
            ));
        }
        if b > hi {
            return Err(format!("end of range ({b}) above maximum ({hi}): {part}"));
        }
        if a > b {
            return Err(format!(
                "beginning of range ({a}) beyond end of range ({b}): {part}"
            ));
        }
    }
    Ok(())
}

/// Why a schedule does not parse (robfig/cron's wording), if it does not.
pub fn schedule_error(schedule: &str) -> Option<String> {
    let s = schedule.trim();
    if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
        return Some("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if s.starts_with('@') {
        return (!MACROS.contains(&s)).then(|| format!("unrecognized descriptor: {s}"));
    }
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 5 {
        return Some(format!(
            "expected exactly 5 fields, found {}: [{}]",
            parts.len(),
            parts.join(" ")
        ));
    }
    parts
        .iter()
        .zip(FIELDS)
        .enumerate()
        .find_map(|(i, (p, f))| field(p, *f, i == 2 || i == 4).err())
}

const CONCURRENCY: &[&str] = &["Allow", "Forbid", "Replace"];

/// Validates a CronJob.
pub fn validate_cron_job(cj: &CronJob) -> Vec<FieldError> {
    let mut errs = validate_object_meta("CronJob", true, &cj.metadata);
    // The Job name is the CronJob name plus 11 characters (Kubernetes' limit).
    if let Some(n) = cj.metadata.name.as_deref()
        && n.len() > 52
    {
        errs.push(FieldError::invalid(
            "metadata.name",
            quote(n),
            "must be no more than 52 characters",
        ));
    }
    let Some(spec) = &cj.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    if spec.schedule.trim().is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else if let Some(e) = schedule_error(&spec.schedule) {
        errs.push(FieldError::invalid(
            "spec.schedule",
            quote(&spec.schedule),
            e,
        ));
    }
    if let Some(tz) = spec.time_zone.as_deref()
        && (tz.is_empty()
            || tz.contains("..")
            || tz.starts_with('/')
            || !tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+')))
    {
        errs.push(FieldError::invalid(
            "spec.timeZone",
            quote(tz),
            "unknown time zone",
        ));
    }
    if let Some(p) = spec.concurrency_policy.as_deref()
        && !CONCURRENCY.contains(&p)
    {
        errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            p,
            CONCURRENCY,
        ));
    }
    if let Some(d) = spec.starting_deadline_seconds
        && d < 0
    {
        errs.push(FieldError::invalid(
            "spec.startingDeadlineSeconds",
            d.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    for (f, v) in [
        (
            "spec.successfulJobsHistoryLimit",
            spec.successful_jobs_history_limit,
        ),
        (
            "spec.failedJobsHistoryLimit",
            spec.failed_jobs_history_limit,
        ),
    ] {
        if let Some(n) = v
            && n < 0
        {
            errs.push(FieldError::invalid(
                f,
                n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let base = "spec.jobTemplate.spec.template.spec";
    match spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.as_ref())
    {
        None => errs.push(FieldError::required(base, "")),
        Some(ps) => {
            if ps.restart_policy.is_none() {
                errs.push(FieldError::required(format!("{base}.restartPolicy"), ""));
            }
            errs.extend(validate_pod_spec(ps, base, &["OnFailure", "Never"]));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let ok = [
            "*/5 * * * *",
            "0 3 * * 1-5",
            "30 2 1,15 * *",
            "0 0 * JAN,jul sun",
            "0 0 ? * *",
            "@hourly",
            "15 10-20/2 * * *",
        ];
        for s in ok {
            assert_eq!(schedule_error(s), None, "{s}");
        }
        let bad = [
            ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            ("x * * * *", "failed to parse int from x"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            ("@every-day", "unrecognized descriptor: @every-day"),
            (
                "TZ=UTC 0 * * * *",
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ),
        ];
        for (s, want) in bad {
            assert_eq!(schedule_error(s).as_deref(), Some(want), "{s}");
        }
    }
}
