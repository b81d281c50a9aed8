//! Job and CronJob validation, in Kubernetes' (v1.33) wording: job spec
//! ranges, completion modes, pod failure and success policies, the
//! generated selector, what an update may change; CronJob schedules (the
//! parser the controller uses, `crate::cron`), time zones, policies and the
//! job template.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec, PodFailurePolicy, SuccessPolicy};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::{
    FieldError, dns1123_label, qualified_name, quote, render_map, validate_labels,
    validate_object_meta, validate_pod_spec,
};
use crate::cron::{Schedule, has_time_zone};
use crate::selector::Selector;

/// Labels the API server puts on every Job's pod template (and selects on).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

const MAX_PARALLELISM_INDEXED: i32 = 100_000;
const MAX_FAILED_INDEXES: i32 = 100_000;
const COMPLETIONS_SOFT_LIMIT: i32 = 100_000;
const PARALLELISM_LIMIT_HIGH_COMPLETIONS: i32 = 10_000;
const MAX_FAILED_INDEXES_HIGH_COMPLETIONS: i32 = 10_000;
const MAX_POD_FAILURE_RULES: usize = 20;
const MAX_EXIT_CODE_VALUES: usize = 255;
const MAX_CONDITION_PATTERNS: usize = 20;
const MAX_SUCCESS_RULES: usize = 20;
const MAX_SUCCEEDED_INDEXES_LEN: usize = 64 * 1024;

/// Sorted, as Kubernetes lists them (`sets.List`).
const FAILURE_ACTIONS: &[&str] = &["Count", "FailIndex", "FailJob", "Ignore"];
const EXIT_CODE_OPERATORS: &[&str] = &["In", "NotIn"];
const CONDITION_STATUSES: &[&str] = &["False", "True", "Unknown"];
const COMPLETION_MODES: &[&str] = &["NonIndexed", "Indexed"];
const REPLACEMENT_POLICIES: &[&str] = &["Failed", "TerminatingOrFailed"];
const CONCURRENCY: &[&str] = &["Allow", "Forbid", "Replace"];

const NON_NEGATIVE: &str = "must be greater than or equal to 0";

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_list(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

/// Go's `%v` of an int slice: `[1 2 3]`.
fn go_ints(v: &[i32]) -> String {
    let inner: Vec<String> = v.iter().map(i32::to_string).collect();
    format!("[{}]", inner.join(" "))
}

fn non_negative(errs: &mut Vec<FieldError>, field: &str, v: Option<i64>) {
    if let Some(n) = v
        && n < 0
    {
        errs.push(FieldError::invalid(field, n.to_string(), NON_NEGATIVE));
    }
}

/// An error whose value Kubernetes omits (`field.OmitValueType`).
fn invalid_omit(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError::invalid(field, "", detail)
}

// ---------------------------------------------------------------------------
// Index sets ("1,3-5,7")
// ---------------------------------------------------------------------------

/// Parses Kubernetes' compressed index list (`status.completedIndexes`,
/// `successPolicy.rules[].succeededIndexes`): increasing, non-overlapping
/// intervals below `completions`. Returns the intervals (inclusive).
pub fn parse_indexes(s: &str, completions: i32) -> Result<Vec<(i32, i32)>, String> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    let mut last: Option<i32> = None;
    let num = |x: &str| {
        x.parse::<i32>()
            .map_err(|_| format!("cannot convert string to integer for index: {}", quote(x)))
    };
    for interval in s.split(',') {
        let limits: Vec<&str> = interval.split('-').collect();
        if limits.len() > 2 {
            return Err(format!(
                "the fragment {} violates the requirement that an index interval can have at most two parts separated by '-'",
                quote(interval)
            ));
        }
        let x = num(limits[0])?;
        if x >= completions {
            return Err(format!("too large index: {}", quote(limits[0])));
        }
        if let Some(l) = last
            && l >= x
        {
            return Err(format!("non-increasing order, previous: {l}, current: {x}"));
        }
        let mut y = x;
        if limits.len() == 2 {
            y = num(limits[1])?;
            if y >= completions {
                return Err(format!("too large index: {}", quote(limits[1])));
            }
            if x >= y {
                return Err(format!("non-increasing order, previous: {x}, current: {y}"));
            }
        }
        last = Some(y);
        out.push((x, y));
    }
    Ok(out)
}

/// The indexes in a parsed list.
pub fn index_set(intervals: &[(i32, i32)]) -> BTreeSet<i32> {
    intervals.iter().flat_map(|(a, b)| *a..=*b).collect()
}

// ---------------------------------------------------------------------------
// Job
// ---------------------------------------------------------------------------

/// Validates a Job (after defaulting, which generated its selector).
pub fn validate_job(job: &Job) -> Vec<FieldError> {
    let mut errs = validate_object_meta("Job", true, &job.metadata);
    let Some(spec) = &job.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    errs.extend(validate_generated_selector(job, spec));
    errs.extend(validate_job_spec(spec, "spec"));
    match &spec.selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let labels = template_labels(&spec.template);
            match Selector::from_label_selector(sel) {
                Err(e) => errs.push(FieldError::invalid(
                    "spec.selector",
                    quote(&format!("{sel:?}")),
                    e.to_string(),
                )),
                Ok(s) if !s.matches(&labels) => errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    render_map(&labels),
                    "`selector` does not match template `labels`",
                )),
                Ok(_) => {}
            }
        }
    }
    if spec.completion_mode.as_deref() == Some("Indexed")
        && let Some(c) = spec.completions
        && c > 0
    {
        // Pod hostnames are `<job>-<index>`.
        let name = job.metadata.name.clone().unwrap_or_default();
        let host = format!("{name}-{}", c - 1);
        if !dns1123_label(&host).is_empty() {
            errs.push(FieldError::invalid(
                "metadata.name",
                quote(&name),
                format!("will not able to create pod with invalid DNS label: {host}"),
            ));
        }
    }
    errs
}

fn template_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Without `manualSelector`, the template must carry the labels the server
/// generated and the selector must select them.
fn validate_generated_selector(job: &Job, spec: &JobSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.manual_selector == Some(true) {
        return errs;
    }
    let Some(sel) = &spec.selector else {
        return errs;
    };
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    if uid.is_empty() {
        errs.push(FieldError::required("metadata.uid", ""));
    }
    let labels = template_labels(&spec.template);
    let mut expected = BTreeMap::new();
    for (key, want) in [
        (LEGACY_CONTROLLER_UID_LABEL, &uid),
        (LEGACY_JOB_NAME_LABEL, &name),
        (CONTROLLER_UID_LABEL, &uid),
        (JOB_NAME_LABEL, &name),
    ] {
        let field = format!("spec.template.metadata.labels[{key}]");
        match labels.get(key) {
            None => errs.push(FieldError::required(field, want.clone())),
            Some(v) if v != want => errs.push(FieldError::invalid(
                field,
                render_map(&labels),
                format!("must be '{want}'"),
            )),
            Some(_) => {}
        }
        expected.insert(key.to_string(), want.clone());
    }
    if let Ok(s) = Selector::from_label_selector(sel)
        && !s.matches(&expected)
    {
        errs.push(invalid_omit(
            "spec.selector",
            "`selector` not auto-generated",
        ));
    }
    errs
}

/// The checks of a job spec shared by Jobs and CronJob job templates
/// (Kubernetes' `validateJobSpec`), under `path`.
pub fn validate_job_spec(spec: &JobSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let f = |name: &str| format!("{path}.{name}");
    non_negative(
        &mut errs,
        &f("parallelism"),
        spec.parallelism.map(i64::from),
    );
    non_negative(
        &mut errs,
        &f("completions"),
        spec.completions.map(i64::from),
    );
    non_negative(
        &mut errs,
        &f("activeDeadlineSeconds"),
        spec.active_deadline_seconds,
    );
    non_negative(
        &mut errs,
        &f("backoffLimit"),
        spec.backoff_limit.map(i64::from),
    );
    non_negative(
        &mut errs,
        &f("ttlSecondsAfterFinished"),
        spec.ttl_seconds_after_finished.map(i64::from),
    );
    non_negative(
        &mut errs,
        &f("backoffLimitPerIndex"),
        spec.backoff_limit_per_index.map(i64::from),
    );
    if let Some(m) = spec.max_failed_indexes {
        non_negative(&mut errs, &f("maxFailedIndexes"), Some(i64::from(m)));
        if spec.backoff_limit_per_index.is_none() {
            errs.push(FieldError::required(
                f("backoffLimitPerIndex"),
                "when maxFailedIndexes is specified",
            ));
        }
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    if let Some(mode) = spec.completion_mode.as_deref() {
        if !COMPLETION_MODES.contains(&mode) {
            errs.push(FieldError::not_supported(
                f("completionMode"),
                mode,
                COMPLETION_MODES,
            ));
        }
        if indexed {
            validate_indexed_limits(&mut errs, spec, &f);
        }
    }
    if !indexed {
        for (name, v) in [
            ("backoffLimitPerIndex", spec.backoff_limit_per_index),
            ("maxFailedIndexes", spec.max_failed_indexes),
        ] {
            if let Some(n) = v {
                errs.push(FieldError::invalid(
                    f(name),
                    n.to_string(),
                    "requires indexed completion mode",
                ));
            }
        }
    }
    if let Some(pfp) = &spec.pod_failure_policy {
        errs.extend(validate_pod_failure_policy(
            spec,
            pfp,
            &f("podFailurePolicy"),
        ));
    }
    if let Some(sp) = &spec.success_policy {
        if indexed {
            errs.extend(validate_success_policy(spec, sp, &f("successPolicy")));
        } else {
            errs.push(invalid_omit(
                f("successPolicy"),
                "requires indexed completion mode",
            ));
        }
    }
    if let Some(p) = spec.pod_replacement_policy.as_deref() {
        if spec.pod_failure_policy.is_some() {
            if p != "Failed" {
                errs.push(FieldError::not_supported(
                    f("podReplacementPolicy"),
                    p,
                    &["Failed"],
                ));
            }
        } else if !REPLACEMENT_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                f("podReplacementPolicy"),
                p,
                REPLACEMENT_POLICIES,
            ));
        }
    }
    errs.extend(validate_template(spec, &f("template")));
    errs
}

fn validate_indexed_limits(errs: &mut Vec<FieldError>, spec: &JobSpec, f: &dyn Fn(&str) -> String) {
    if spec.completions.is_none() {
        errs.push(FieldError::required(
            f("completions"),
            "when completion mode is Indexed",
        ));
    }
    if let Some(p) = spec.parallelism
        && p > MAX_PARALLELISM_INDEXED
    {
        errs.push(FieldError::invalid(
            f("parallelism"),
            p.to_string(),
            format!(
                "must be less than or equal to {MAX_PARALLELISM_INDEXED} when completion mode is Indexed"
            ),
        ));
    }
    if let Some(m) = spec.max_failed_indexes {
        if spec.completions.is_some_and(|c| m > c) {
            errs.push(FieldError::invalid(
                f("maxFailedIndexes"),
                m.to_string(),
                "must be less than or equal to completions",
            ));
        }
        if m > MAX_FAILED_INDEXES {
            errs.push(FieldError::invalid(
                f("maxFailedIndexes"),
                m.to_string(),
                format!("must be less than or equal to {MAX_FAILED_INDEXES}"),
            ));
        }
    }
    if spec.completions.is_some_and(|c| c > COMPLETIONS_SOFT_LIMIT)
        && spec.backoff_limit_per_index.is_some()
    {
        let tail = format!(
            "when completions are above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index"
        );
        match spec.max_failed_indexes {
            None => errs.push(FieldError::required(
                f("maxFailedIndexes"),
                format!("must be specified when completions is above {COMPLETIONS_SOFT_LIMIT}"),
            )),
            Some(m) if m > MAX_FAILED_INDEXES_HIGH_COMPLETIONS => errs.push(FieldError::invalid(
                f("maxFailedIndexes"),
                m.to_string(),
                format!(
                    "must be less than or equal to {MAX_FAILED_INDEXES_HIGH_COMPLETIONS} {tail}"
                ),
            )),
            Some(_) => {}
        }
        if let Some(p) = spec.parallelism
            && p > PARALLELISM_LIMIT_HIGH_COMPLETIONS
        {
            errs.push(FieldError::invalid(
                f("parallelism"),
                p.to_string(),
                format!(
                    "must be less than or equal to {PARALLELISM_LIMIT_HIGH_COMPLETIONS} {tail}"
                ),
            ));
        }
    }
}

/// The pod template: a valid pod spec whose pods do not restart forever
/// (`OnFailure` or `Never`; only `Never` with a pod failure policy).
fn validate_template(spec: &JobSpec, path: &str) -> Vec<FieldError> {
    let mut errs = validate_labels(
        &template_labels(&spec.template),
        &format!("{path}.metadata.labels"),
    );
    let Some(ps) = &spec.template.spec else {
        errs.push(FieldError::required(format!("{path}.spec"), ""));
        return errs;
    };
    errs.extend(validate_pod_spec(
        ps,
        &format!("{path}.spec"),
        &["Always", "OnFailure", "Never"],
    ));
    let rp_path = format!("{path}.spec.restartPolicy");
    match ps.restart_policy.as_deref() {
        None | Some("") | Some("Always") => errs.push(FieldError::required(
            rp_path,
            "valid values: \"OnFailure\", \"Never\"",
        )),
        Some(rp) if rp != "OnFailure" && rp != "Never" => {
            // validate_pod_spec already named it as unsupported.
        }
        Some(rp) if spec.pod_failure_policy.is_some() && rp != "Never" => {
            errs.push(FieldError::invalid(
                rp_path,
                quote(rp),
                "only \"Never\" is supported when podFailurePolicy is specified",
            ))
        }
        Some(_) => {}
    }
    errs
}

fn validate_pod_failure_policy(
    spec: &JobSpec,
    pfp: &PodFailurePolicy,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rules_path = format!("{path}.rules");
    if pfp.rules.len() > MAX_POD_FAILURE_RULES {
        errs.push(FieldError::invalid(
            &rules_path,
            pfp.rules.len().to_string(),
            format!("must have at most {MAX_POD_FAILURE_RULES} items"),
        ));
    }
    let ps = spec.template.spec.as_ref();
    let containers: BTreeSet<&str> = ps
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| c.name.as_str())
        .collect();
    for (i, rule) in pfp.rules.iter().enumerate() {
        let rp = format!("{rules_path}[{i}]");
        let action = format!("{rp}.action");
        match rule.action.as_str() {
            "" => errs.push(FieldError::required(
                action,
                format!("valid values: {}", go_list(FAILURE_ACTIONS)),
            )),
            "FailIndex" if spec.backoff_limit_per_index.is_none() => {
                errs.push(FieldError::invalid(
                    action,
                    quote("FailIndex"),
                    "requires the backoffLimitPerIndex to be set",
                ))
            }
            a if !FAILURE_ACTIONS.contains(&a) => {
                errs.push(FieldError::not_supported(action, a, FAILURE_ACTIONS))
            }
            _ => {}
        }
        let patterns = rule.on_pod_conditions.as_deref().unwrap_or_default();
        if let Some(oe) = &rule.on_exit_codes {
            let ep = format!("{rp}.onExitCodes");
            let op = format!("{ep}.operator");
            match oe.operator.as_str() {
                "" => errs.push(FieldError::required(
                    op,
                    format!("valid values: {}", go_list(EXIT_CODE_OPERATORS)),
                )),
                o if !EXIT_CODE_OPERATORS.contains(&o) => {
                    errs.push(FieldError::not_supported(op, o, EXIT_CODE_OPERATORS))
                }
                _ => {}
            }
            if let Some(c) = oe.container_name.as_deref()
                && !containers.contains(c)
            {
                errs.push(FieldError::invalid(
                    format!("{ep}.containerName"),
                    quote(c),
                    "must be one of the container or initContainer names in the pod template",
                ));
            }
            let vp = format!("{ep}.values");
            if oe.values.is_empty() {
                errs.push(FieldError::invalid(
                    &vp,
                    "[]",
                    "at least one value is required",
                ));
            } else if oe.values.len() > MAX_EXIT_CODE_VALUES {
                errs.push(FieldError::invalid(
                    &vp,
                    oe.values.len().to_string(),
                    format!("must have at most {MAX_EXIT_CODE_VALUES} items"),
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, v) in oe.values.iter().enumerate() {
                let p = format!("{vp}[{j}]");
                if oe.operator == "In" && *v == 0 {
                    errs.push(FieldError::invalid(
                        &p,
                        "0",
                        "must not be 0 for the In operator",
                    ));
                }
                if !seen.insert(*v) {
                    errs.push(FieldError::duplicate(&p, v.to_string()));
                }
            }
            if oe.values.windows(2).any(|w| w[0] > w[1]) {
                errs.push(FieldError::invalid(
                    &vp,
                    go_ints(&oe.values),
                    "must be ordered",
                ));
            }
        }
        if !patterns.is_empty() {
            let cp = format!("{rp}.onPodConditions");
            if patterns.len() > MAX_CONDITION_PATTERNS {
                errs.push(FieldError::invalid(
                    &cp,
                    patterns.len().to_string(),
                    format!("must have at most {MAX_CONDITION_PATTERNS} items"),
                ));
            }
            for (j, pat) in patterns.iter().enumerate() {
                let pp = format!("{cp}[{j}]");
                for problem in qualified_name(&pat.type_) {
                    errs.push(FieldError::invalid(
                        format!("{pp}.type"),
                        quote(&pat.type_),
                        problem,
                    ));
                }
                let sp = format!("{pp}.status");
                match pat.status.as_str() {
                    "" => errs.push(FieldError::required(
                        sp,
                        format!("valid values: {}", go_list(CONDITION_STATUSES)),
                    )),
                    s if !CONDITION_STATUSES.contains(&s) => {
                        errs.push(FieldError::not_supported(sp, s, CONDITION_STATUSES))
                    }
                    _ => {}
                }
            }
        }
        match (rule.on_exit_codes.is_some(), !patterns.is_empty()) {
            (true, true) => errs.push(invalid_omit(
                &rp,
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (false, false) => errs.push(invalid_omit(
                &rp,
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
    }
    errs
}

fn validate_success_policy(spec: &JobSpec, sp: &SuccessPolicy, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rules_path = format!("{path}.rules");
    if sp.rules.is_empty() {
        errs.push(FieldError::required(
            &rules_path,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if sp.rules.len() > MAX_SUCCESS_RULES {
        errs.push(FieldError::invalid(
            &rules_path,
            sp.rules.len().to_string(),
            format!("must have at most {MAX_SUCCESS_RULES} items"),
        ));
    }
    let completions = spec.completions.unwrap_or(0);
    for (i, rule) in sp.rules.iter().enumerate() {
        let rp = format!("{rules_path}[{i}]");
        if rule.succeeded_count.is_none() && rule.succeeded_indexes.is_none() {
            errs.push(FieldError::required(
                &rp,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = 0i64;
        if let Some(ix) = rule.succeeded_indexes.as_deref() {
            let ip = format!("{rp}.succeededIndexes");
            if ix.len() > MAX_SUCCEEDED_INDEXES_LEN {
                errs.push(FieldError::too_long(&ip, MAX_SUCCEEDED_INDEXES_LEN));
            }
            match parse_indexes(ix, completions) {
                Ok(iv) => total = iv.iter().map(|(a, b)| i64::from(b - a) + 1).sum(),
                Err(e) => errs.push(FieldError::invalid(
                    &ip,
                    quote(ix),
                    format!("error parsing succeededIndexes: {e}"),
                )),
            }
        }
        if let Some(n) = rule.succeeded_count {
            let cp = format!("{rp}.succeededCount");
            non_negative(&mut errs, &cp, Some(i64::from(n)));
            if n > completions {
                errs.push(FieldError::invalid(
                    &cp,
                    n.to_string(),
                    format!(
                        "must be less than or equal to {completions} (the number of specified completions)"
                    ),
                ));
            }
            if rule.succeeded_indexes.is_some() && i64::from(n) > total {
                errs.push(FieldError::invalid(
                    &cp,
                    n.to_string(),
                    format!(
                        "must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)"
                    ),
                ));
            }
        }
    }
    errs
}

/// What a Job update may not change (Kubernetes' `ValidateJobSpecUpdate`):
/// the selector, the pod template (but the scheduling directives of a
/// suspended Job that never started), completions (but an Indexed Job's,
/// together with parallelism), completionMode, podFailurePolicy,
/// backoffLimitPerIndex, managedBy, successPolicy.
pub fn validate_job_update(old: &Job, new: &Job) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (Some(o), Some(n)) = (&old.spec, &new.spec) else {
        return errs;
    };
    const IMMUTABLE: &str = "field is immutable";
    let indexed = n.completion_mode.as_deref() == Some("Indexed");
    if o.completions != n.completions {
        let shown = n.completions.map_or("null".to_string(), |c| c.to_string());
        if !indexed {
            errs.push(FieldError::invalid("spec.completions", shown, IMMUTABLE));
        } else if let Some(c) = n.completions
            && Some(c) != n.parallelism
        {
            errs.push(FieldError::invalid(
                "spec.completions",
                c.to_string(),
                "can only be modified in tandem with spec.parallelism",
            ));
        }
    }
    // A Job stored before selectors were generated has none: nothing to keep.
    if o.selector.is_some() && o.selector != n.selector {
        errs.push(invalid_omit("spec.selector", IMMUTABLE));
    }
    let mut old_template = o.template.clone();
    let new_labels = template_labels(&n.template);
    if o.selector.is_none() && new_labels.contains_key(CONTROLLER_UID_LABEL) {
        // Stored before the server generated selectors: the generated labels are new.
        let labels = old_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for k in [
            LEGACY_CONTROLLER_UID_LABEL,
            LEGACY_JOB_NAME_LABEL,
            CONTROLLER_UID_LABEL,
            JOB_NAME_LABEL,
        ] {
            if let Some(v) = new_labels.get(k) {
                labels.insert(k.to_string(), v.clone());
            }
        }
    }
    let suspended_never_started = o.suspend == Some(true)
        && old
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .is_none();
    if suspended_never_started {
        // Kubernetes lets a queue controller place a suspended Job before it starts.
        let nt = &n.template;
        let om = old_template.metadata.get_or_insert_with(Default::default);
        let nm = nt.metadata.clone().unwrap_or_default();
        om.labels = nm.labels;
        om.annotations = nm.annotations;
        if let (Some(os), Some(ns)) = (old_template.spec.as_mut(), nt.spec.as_ref()) {
            os.node_selector = ns.node_selector.clone();
            os.tolerations = ns.tolerations.clone();
            os.scheduling_gates = ns.scheduling_gates.clone();
            let node_affinity = ns.affinity.as_ref().and_then(|a| a.node_affinity.clone());
            let aff = os.affinity.get_or_insert_with(Default::default);
            aff.node_affinity = node_affinity;
            if aff == &Default::default() && ns.affinity.is_none() {
                os.affinity = None;
            }
        }
    }
    if old_template != n.template {
        errs.push(invalid_omit("spec.template", IMMUTABLE));
    }
    if o.completion_mode != n.completion_mode {
        errs.push(FieldError::invalid(
            "spec.completionMode",
            quote(n.completion_mode.as_deref().unwrap_or_default()),
            IMMUTABLE,
        ));
    }
    if o.pod_failure_policy != n.pod_failure_policy {
        errs.push(invalid_omit("spec.podFailurePolicy", IMMUTABLE));
    }
    if o.backoff_limit_per_index != n.backoff_limit_per_index {
        errs.push(FieldError::invalid(
            "spec.backoffLimitPerIndex",
            n.backoff_limit_per_index
                .map_or("null".to_string(), |c| c.to_string()),
            IMMUTABLE,
        ));
    }
    if o.managed_by != n.managed_by {
        errs.push(invalid_omit("spec.managedBy", IMMUTABLE));
    }
    if o.success_policy != n.success_policy {
        errs.push(invalid_omit("spec.successPolicy", IMMUTABLE));
    }
    errs
}

// ---------------------------------------------------------------------------
// CronJob
// ---------------------------------------------------------------------------

/// Kubernetes' allowed characters of one time zone name component.
fn zone_part_ok(p: &str) -> bool {
    (1..=14).contains(&p.len())
        && p != "."
        && p != ".."
        && !p.starts_with('-')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

/// Validates a CronJob. `known_zone` says whether a time zone name exists
/// (the caller reads the zone database; this crate does no I/O).
pub fn validate_cron_job(cj: &CronJob, known_zone: &dyn Fn(&str) -> bool) -> Vec<FieldError> {
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
    if spec.schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        let sched = quote(&spec.schedule);
        // robfig accepts a TZ= prefix; Kubernetes then refuses it below.
        let without_tz = match spec.schedule.trim_start() {
            s if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") => {
                s.split_once(' ').map_or("", |(_, rest)| rest)
            }
            s => s,
        };
        if let Err(e) = Schedule::parse(without_tz) {
            errs.push(FieldError::invalid("spec.schedule", &sched, e.to_string()));
        }
        if has_time_zone(&spec.schedule) {
            errs.push(FieldError::invalid(
                "spec.schedule",
                &sched,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    non_negative(
        &mut errs,
        "spec.startingDeadlineSeconds",
        spec.starting_deadline_seconds,
    );
    if let Some(tz) = spec.time_zone.as_deref() {
        let field = "spec.timeZone";
        if tz.is_empty() {
            errs.push(FieldError::invalid(
                field,
                quote(tz),
                "timeZone must be nil or non-empty string",
            ));
        } else if !tz.split('/').all(zone_part_ok) {
            errs.push(FieldError::invalid(
                field,
                quote(tz),
                format!("unknown time zone {tz}"),
            ));
        } else if tz.eq_ignore_ascii_case("Local") {
            errs.push(FieldError::invalid(
                field,
                quote(tz),
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ));
        } else if !known_zone(tz) {
            errs.push(FieldError::invalid(
                field,
                quote(tz),
                format!("unknown time zone {tz}"),
            ));
        }
    }
    match spec.concurrency_policy.as_deref() {
        None | Some("") => errs.push(FieldError::required("spec.concurrencyPolicy", "")),
        Some(p) if !CONCURRENCY.contains(&p) => errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            p,
            CONCURRENCY,
        )),
        Some(_) => {}
    }
    match &spec.job_template.spec {
        None => errs.push(FieldError::required("spec.jobTemplate.spec", "")),
        Some(js) => {
            errs.extend(validate_job_spec(js, "spec.jobTemplate.spec"));
            if js.selector.is_some() {
                errs.push(invalid_omit(
                    "spec.jobTemplate.spec.selector",
                    "`selector` will be auto-generated",
                ));
            }
            if js.manual_selector == Some(true) {
                errs.push(FieldError::not_supported(
                    "spec.jobTemplate.spec.manualSelector",
                    "true",
                    &["nil", "false"],
                ));
            }
        }
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
        non_negative(&mut errs, f, v.map(i64::from));
    }
    errs
}

#[cfg(test)]
mod tests;
