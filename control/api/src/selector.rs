//! Kubernetes label selectors: the string form (`app=web,tier!=db,env in (a,b)`)
//! used on the command line and in list/watch requests, and the structured
//! `LabelSelector` (matchLabels + matchExpressions) used inside objects.
//!
//! Both forms compile to one [`Selector`]: a conjunction of [`Requirement`]s.
//! The grammar follows `k8s.io/apimachinery/pkg/labels`:
//!
//! ```text
//! selector    = [ requirement { "," requirement } ]
//! requirement = key ( "=" | "==" | "!=" ) value
//!             | key ( "in" | "notin" ) "(" value { "," value } ")"
//!             | key | "!" key
//! ```
//!
//! An empty selector matches every object. Note the difference, in a Service,
//! between an absent selector ("this Service has no selector; its endpoints are
//! managed by hand") and an empty one: callers decide that before building a
//! `Selector`, since both would compile to the empty conjunction here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Why a selector could not be parsed or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string form is malformed at `position` (a byte offset into `input`).
    #[error("unable to parse label selector {input:?} at position {position}: {message}")]
    Syntax {
        input: String,
        position: usize,
        message: String,
    },
    /// A key or value is not a valid label key/value.
    #[error("invalid label selector {part:?}: {message}")]
    InvalidPart { part: String, message: String },
    /// A matchExpressions entry is inconsistent (unknown operator, values where
    /// none are allowed, or none where some are required).
    #[error("invalid matchExpressions[{index}] (key {key:?}): {message}")]
    Expression {
        index: usize,
        key: String,
        message: String,
    },
}

/// One condition on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`: the label exists with this value.
    Equals { key: String, value: String },
    /// `key!=value`: the label is absent or has another value.
    NotEquals { key: String, value: String },
    /// `key in (a,b)`: the label exists with one of these values.
    In {
        key: String,
        values: BTreeSet<String>,
    },
    /// `key notin (a,b)`: the label is absent or has none of these values.
    NotIn {
        key: String,
        values: BTreeSet<String>,
    },
    /// `key`: the label exists.
    Exists { key: String },
    /// `!key`: the label does not exist.
    DoesNotExist { key: String },
}

impl Requirement {
    /// The label key this requirement talks about.
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals { key, .. }
            | Requirement::NotEquals { key, .. }
            | Requirement::In { key, .. }
            | Requirement::NotIn { key, .. }
            | Requirement::Exists { key }
            | Requirement::DoesNotExist { key } => key,
        }
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals { key, value } => labels.get(key) == Some(value),
            Requirement::NotEquals { key, value } => labels.get(key) != Some(value),
            Requirement::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn { key, values } => {
                labels.get(key).is_none_or(|v| !values.contains(v))
            }
            Requirement::Exists { key } => labels.contains_key(key),
            Requirement::DoesNotExist { key } => !labels.contains_key(key),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join =
            |v: &BTreeSet<String>| v.iter().map(String::as_str).collect::<Vec<_>>().join(",");
        match self {
            Requirement::Equals { key, value } => write!(f, "{key}={value}"),
            Requirement::NotEquals { key, value } => write!(f, "{key}!={value}"),
            Requirement::In { key, values } => write!(f, "{key} in ({})", join(values)),
            Requirement::NotIn { key, values } => write!(f, "{key} notin ({})", join(values)),
            Requirement::Exists { key } => write!(f, "{key}"),
            Requirement::DoesNotExist { key } => write!(f, "!{key}"),
        }
    }
}

/// A label selector: every requirement must hold (comma means AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector requiring exactly these labels (a Service's `spec.selector`).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        Self {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement::Equals {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }
    }

    /// Builds a selector from requirements (already validated by the caller).
    pub fn from_requirements(requirements: Vec<Requirement>) -> Self {
        Self { requirements }
    }

    /// The requirements, in the order they were written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the selector has no requirement and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the string form. The empty string (or only whitespace) is the
    /// empty selector.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input)?.selector()
    }

    /// Compiles a structured `LabelSelector` (matchLabels AND matchExpressions).
    pub fn from_label_selector(ls: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in ls.match_labels.iter().flatten() {
            validate_key(k)?;
            validate_value(v)?;
            requirements.push(Requirement::Equals {
                key: k.clone(),
                value: v.clone(),
            });
        }
        for (index, e) in ls.match_expressions.iter().flatten().enumerate() {
            let err = |message: &str| SelectorError::Expression {
                index,
                key: e.key.clone(),
                message: message.to_string(),
            };
            validate_key(&e.key)?;
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            for v in &values {
                validate_value(v)?;
            }
            let key = e.key.clone();
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(err("values must be non-empty for operators In and NotIn"));
                }
                "In" => Requirement::In { key, values },
                "NotIn" => Requirement::NotIn { key, values },
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(err(
                        "values must be empty for operators Exists and DoesNotExist",
                    ));
                }
                "Exists" => Requirement::Exists { key },
                "DoesNotExist" => Requirement::DoesNotExist { key },
                other => {
                    return Err(err(&format!(
                        "unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                    )));
                }
            };
            requirements.push(r);
        }
        Ok(Self { requirements })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a label key: optional DNS-subdomain prefix and `/`, then a name of
/// at most 63 characters, alphanumeric at both ends, `-_.` inside.
pub fn validate_key(key: &str) -> Result<(), SelectorError> {
    let bad = |message: String| {
        Err(SelectorError::InvalidPart {
            part: key.to_string(),
            message,
        })
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return bad(
                "the prefix before '/' must be a DNS subdomain of 1 to 253 characters".into(),
            );
        }
        if !p.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        }) {
            return bad(format!("prefix {p:?} is not a lower-case DNS subdomain"));
        }
    }
    if name.is_empty() {
        return bad("the name part must not be empty".into());
    }
    check_name_chars(name).map_err(|message| SelectorError::InvalidPart {
        part: key.to_string(),
        message,
    })
}

/// Checks a label value: empty, or at most 63 characters, alphanumeric at both
/// ends, `-_.` inside.
pub fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_chars(value).map_err(|message| SelectorError::InvalidPart {
        part: value.to_string(),
        message,
    })
}

fn check_name_chars(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "must be no more than 63 characters (has {})",
            s.len()
        ));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let last = s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first || !last || !s.chars().all(ok_inner) {
        return Err("must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
            .into());
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s:?}"),
            Tok::Not => f.write_str("'!'"),
            Tok::Eq => f.write_str("'='"),
            Tok::DoubleEq => f.write_str("'=='"),
            Tok::NotEq => f.write_str("'!='"),
            Tok::Open => f.write_str("'('"),
            Tok::Close => f.write_str("')'"),
            Tok::Comma => f.write_str("','"),
            Tok::End => f.write_str("end of input"),
        }
    }
}

/// A recursive-descent parser over a pre-lexed token list.
struct Parser<'a> {
    input: &'a str,
    toks: Vec<(usize, Tok)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Result<Self, SelectorError> {
        let mut toks = Vec::new();
        let b = input.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let start = i;
            let tok = match c {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    i += 1;
                    continue;
                }
                b'!' if b.get(i + 1) == Some(&b'=') => {
                    i += 2;
                    Tok::NotEq
                }
                b'!' => {
                    i += 1;
                    Tok::Not
                }
                b'=' if b.get(i + 1) == Some(&b'=') => {
                    i += 2;
                    Tok::DoubleEq
                }
                b'=' => {
                    i += 1;
                    Tok::Eq
                }
                b'(' => {
                    i += 1;
                    Tok::Open
                }
                b')' => {
                    i += 1;
                    Tok::Close
                }
                b',' => {
                    i += 1;
                    Tok::Comma
                }
                b'<' | b'>' => {
                    return Err(SelectorError::Syntax {
                        input: input.to_string(),
                        position: i,
                        message: "the operators '<' and '>' are not supported".into(),
                    });
                }
                _ => {
                    while i < b.len()
                        && !matches!(
                            b[i],
                            b' ' | b'\t'
                                | b'\n'
                                | b'\r'
                                | b'!'
                                | b'='
                                | b'('
                                | b')'
                                | b','
                                | b'<'
                                | b'>'
                        )
                    {
                        i += 1;
                    }
                    // Splitting on ASCII bytes keeps UTF-8 boundaries intact.
                    Tok::Ident(input[start..i].to_string())
                }
            };
            toks.push((start, tok));
        }
        toks.push((input.len(), Tok::End));
        Ok(Self {
            input,
            toks,
            pos: 0,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos].1
    }

    fn next(&mut self) -> (usize, Tok) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err(&self, position: usize, message: String) -> SelectorError {
        SelectorError::Syntax {
            input: self.input.to_string(),
            position,
            message,
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if *self.peek() == Tok::End {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                (_, Tok::Comma) => continue,
                (_, Tok::End) => break,
                (p, t) => {
                    return Err(self.err(p, format!("expected ',' or end of input, found {t}")));
                }
            }
        }
        Ok(Selector { requirements })
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            (_, Tok::Ident(k)) => {
                validate_key(&k)?;
                Ok(k)
            }
            (p, t) => Err(self.err(p, format!("expected a label key, found {t}"))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if *self.peek() == Tok::Not {
            self.next();
            let key = self.key()?;
            return Ok(Requirement::DoesNotExist { key });
        }
        let key = self.key()?;
        match self.peek().clone() {
            Tok::Comma | Tok::End => Ok(Requirement::Exists { key }),
            Tok::Eq | Tok::DoubleEq => {
                self.next();
                let value = self.value()?;
                Ok(Requirement::Equals { key, value })
            }
            Tok::NotEq => {
                self.next();
                let value = self.value()?;
                Ok(Requirement::NotEquals { key, value })
            }
            Tok::Ident(op) if op == "in" || op == "notin" => {
                self.next();
                let values = self.value_set()?;
                Ok(if op == "in" {
                    Requirement::In { key, values }
                } else {
                    Requirement::NotIn { key, values }
                })
            }
            t => {
                let p = self.toks[self.pos].0;
                Err(self.err(
                    p,
                    format!(
                        "expected an operator (=, ==, !=, in, notin) after key {key:?}, found {t}"
                    ),
                ))
            }
        }
    }

    /// A value after `=`/`!=`; may be empty (`a=` means "a is the empty string").
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek().clone() {
            Tok::Ident(v) => {
                self.next();
                validate_value(&v)?;
                Ok(v)
            }
            Tok::Comma | Tok::End => Ok(String::new()),
            t => {
                let p = self.toks[self.pos].0;
                Err(self.err(p, format!("expected a label value, found {t}")))
            }
        }
    }

    fn value_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            (_, Tok::Open) => {}
            (p, t) => return Err(self.err(p, format!("expected '(' after in/notin, found {t}"))),
        }
        let mut values = BTreeSet::new();
        loop {
            match self.next() {
                (_, Tok::Ident(v)) => {
                    validate_value(&v)?;
                    values.insert(v);
                }
                (p, t) => {
                    return Err(self.err(p, format!("expected a value in the set, found {t}")));
                }
            }
            match self.next() {
                (_, Tok::Comma) => continue,
                (_, Tok::Close) => break,
                (p, t) => {
                    return Err(self.err(
                        p,
                        format!("expected ',' or ')' in the value set, found {t}"),
                    ));
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_and_match_table() {
        // (selector, labels, expected match)
        type Labels<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Labels, bool)] = &[
            ("", &[], true),
            ("", &[("a", "b")], true),
            ("app=web", &[("app", "web")], true),
            ("app=web", &[("app", "db")], false),
            ("app=web", &[], false),
            ("app==web", &[("app", "web")], true),
            ("app!=web", &[("app", "db")], true),
            ("app!=web", &[], true),
            ("app!=web", &[("app", "web")], false),
            ("env in (prod, staging)", &[("env", "prod")], true),
            ("env in (prod,staging)", &[("env", "dev")], false),
            ("env in (prod)", &[], false),
            ("env notin (prod)", &[], true),
            ("env notin (prod)", &[("env", "prod")], false),
            ("env notin (prod)", &[("env", "dev")], true),
            ("app", &[("app", "")], true),
            ("app", &[("other", "x")], false),
            ("!app", &[("other", "x")], true),
            ("!app", &[("app", "x")], false),
            ("app=web,tier=fe", &[("app", "web"), ("tier", "fe")], true),
            ("app=web,tier=fe", &[("app", "web"), ("tier", "be")], false),
            (" app = web , !canary ", &[("app", "web")], true),
            ("app=", &[("app", "")], true),
            ("app=", &[("app", "x")], false),
            ("example.com/role=x", &[("example.com/role", "x")], true),
        ];
        for (sel, l, want) in cases {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(s.matches(&labels(l)), *want, "selector {sel:?} on {l:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        // (input, a fragment the error message must contain)
        let cases: &[(&str, &str)] = &[
            ("app=web,", "expected a label key, found end of input"),
            ("=web", "expected a label key, found '='"),
            ("app in prod", "expected '(' after in/notin"),
            ("app in ()", "expected a value in the set, found ')'"),
            ("app in (a", "expected ',' or ')'"),
            ("app web", "expected an operator"),
            ("app=web tier=fe", "expected ',' or end of input"),
            ("-bad=x", "\"-bad\""),
            ("app=-x", "\"-x\""),
            ("a>1", "'<' and '>'"),
            ("Example.com/x=y", "not a lower-case DNS subdomain"),
        ];
        for (input, frag) in cases {
            let e = Selector::parse(input).expect_err(input).to_string();
            assert!(e.contains(frag), "{input:?}: error {e:?} lacks {frag:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        let cases = [
            ("app=web", "app=web"),
            ("app==web", "app=web"),
            ("a!=b,c", "a!=b,c"),
            ("env in (b, a)", "env in (a,b)"),
            ("env notin (x)", "env notin (x)"),
            ("!a", "!a"),
            ("", ""),
        ];
        for (input, want) in cases {
            let s = Selector::parse(input).unwrap();
            assert_eq!(s.to_string(), want);
            assert_eq!(Selector::parse(&s.to_string()).unwrap(), s, "{input}");
        }
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_selector_table() {
        let ls = |ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: if ml.is_empty() {
                None
            } else {
                Some(labels(ml))
            },
            match_expressions: if me.is_empty() { None } else { Some(me) },
        };
        // (selector, labels, expected match)
        type Labels<'a> = &'a [(&'a str, &'a str)];
        let cases: Vec<(LabelSelector, Labels, bool)> = vec![
            (LabelSelector::default(), &[("a", "b")], true),
            (
                ls(&[("app", "web")], vec![]),
                &[("app", "web"), ("x", "y")],
                true,
            ),
            (ls(&[("app", "web")], vec![]), &[("app", "db")], false),
            (
                ls(&[], vec![expr("env", "In", Some(&["a", "b"]))]),
                &[("env", "b")],
                true,
            ),
            (
                ls(&[], vec![expr("env", "NotIn", Some(&["a"]))]),
                &[("env", "a")],
                false,
            ),
            (
                ls(&[], vec![expr("env", "Exists", None)]),
                &[("env", "a")],
                true,
            ),
            (
                ls(&[], vec![expr("env", "DoesNotExist", Some(&[]))]),
                &[("env", "a")],
                false,
            ),
            (
                ls(&[("app", "web")], vec![expr("env", "Exists", None)]),
                &[("app", "web")],
                false,
            ),
        ];
        for (sel, l, want) in cases {
            let s = Selector::from_label_selector(&sel).unwrap();
            assert_eq!(s.matches(&labels(l)), want, "{sel:?} on {l:?}");
        }
        assert!(
            Selector::from_label_selector(&LabelSelector::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn label_selector_errors() {
        let cases = [
            (expr("env", "In", None), "non-empty"),
            (expr("env", "Exists", Some(&["a"])), "must be empty"),
            (expr("env", "Gt", Some(&["1"])), "unknown operator"),
        ];
        for (e, frag) in cases {
            let ls = LabelSelector {
                match_expressions: Some(vec![e]),
                ..Default::default()
            };
            let err = Selector::from_label_selector(&ls)
                .expect_err(frag)
                .to_string();
            assert!(err.contains(frag), "{err:?} lacks {frag:?}");
            assert!(err.contains("matchExpressions[0]"), "{err:?}");
        }
    }

    #[test]
    fn from_map_requires_every_label() {
        let s = Selector::from_map(&labels(&[("a", "1"), ("b", "2")]));
        assert_eq!(s.to_string(), "a=1,b=2");
        assert!(s.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!s.matches(&labels(&[("a", "1")])));
    }
}
