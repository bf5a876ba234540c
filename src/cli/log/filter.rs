//! The pure part of `perstack log`: step and field expressions, and the selection of events
//! (filters, then `--offset`/`--take`, then `--context`). No I/O.
//!
//! Grammar:
//!
//! ```text
//! step   := N | >N | >=N | <N | <=N | N-M            (inclusive range, N <= M)
//! filter := .path op value
//! path   := key ( .key | [] )*                          ([] = any element of an array)
//! op     := == | != | > | >= | < | <=
//! value  := "string" | 'string' | number | true | false
//! ```
//!
//! Semantics follow Perstack's `perstack log`: a field that is missing never matches (not even
//! `!=`); with `[]` the condition holds when it holds for any element; `>`, `>=`, `<`, `<=`
//! compare numbers only. `--errors`, `--tools` and `--delegations` each select a fixed set of
//! event types; given together they select the union (Perstack intersects them, which is
//! always empty).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::schema::Event;

/// Event types behind `--errors`.
pub(crate) const ERROR_TYPES: &[&str] = &["stopRunByError", "retry"];
/// Event types behind `--tools`.
pub(crate) const TOOL_TYPES: &[&str] = &["callTools", "resolveToolResults", "callInteractiveTool"];
/// Event types behind `--delegations`.
pub(crate) const DELEGATION_TYPES: &[&str] = &["callDelegate", "stopRunByDelegate"];

/// A malformed `--step` or `--filter` expression; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} expression {input:?}: {reason}")]
pub(crate) struct ExprError {
    what: &'static str,
    input: String,
    reason: String,
}

impl ExprError {
    fn new(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        ExprError {
            what,
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A `--step` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepFilter {
    /// `N`
    Exact(u32),
    /// `>N`
    Gt(u32),
    /// `>=N`
    Ge(u32),
    /// `<N`
    Lt(u32),
    /// `<=N`
    Le(u32),
    /// `N-M`, inclusive.
    Range(u32, u32),
}

impl StepFilter {
    /// Whether step `n` is selected.
    pub(crate) fn matches(self, n: u32) -> bool {
        match self {
            StepFilter::Exact(v) => n == v,
            StepFilter::Gt(v) => n > v,
            StepFilter::Ge(v) => n >= v,
            StepFilter::Lt(v) => n < v,
            StepFilter::Le(v) => n <= v,
            StepFilter::Range(lo, hi) => (lo..=hi).contains(&n),
        }
    }
}

impl FromStr for StepFilter {
    type Err = ExprError;

    fn from_str(input: &str) -> Result<Self, ExprError> {
        let err = |reason: &str| ExprError::new("--step", input, reason);
        let expected = "expected N, >N, >=N, <N, <=N or N-M (step numbers)";
        let number = |s: &str| -> Result<u32, ExprError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(expected));
            }
            s.parse::<u32>()
                .map_err(|_| err("step number is too large"))
        };
        let s = input.trim();
        let parsed = if let Some(rest) = s.strip_prefix(">=") {
            StepFilter::Ge(number(rest)?)
        } else if let Some(rest) = s.strip_prefix("<=") {
            StepFilter::Le(number(rest)?)
        } else if let Some(rest) = s.strip_prefix('>') {
            StepFilter::Gt(number(rest)?)
        } else if let Some(rest) = s.strip_prefix('<') {
            StepFilter::Lt(number(rest)?)
        } else if let Some((lo, hi)) = s.split_once('-') {
            let (lo, hi) = (number(lo)?, number(hi)?);
            if lo > hi {
                return Err(err("the range's start is after its end"));
            }
            StepFilter::Range(lo, hi)
        } else {
            StepFilter::Exact(number(s)?)
        };
        Ok(parsed)
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// An object key.
    Key(String),
    /// `[]`: every element of an array.
    Any,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// A `--filter` expression: `.path op value`, evaluated on an event's JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldFilter {
    path: Vec<Segment>,
    op: Op,
    value: Literal,
}

impl FromStr for FieldFilter {
    type Err = ExprError;

    fn from_str(input: &str) -> Result<Self, ExprError> {
        let err = |reason: &str| ExprError::new("--filter", input, reason);
        let s = input.trim();
        let Some(rest) = s.strip_prefix('.') else {
            return Err(err(
                "expected .<path> <op> <value>, e.g. .toolCalls[].toolName == \"readTextFile\"",
            ));
        };
        let op_at = rest
            .find(['=', '!', '<', '>'])
            .ok_or_else(|| err("missing operator: expected one of == != > >= < <="))?;
        let path = parse_path(rest[..op_at].trim_end()).map_err(|r| err(&r))?;
        let after = &rest[op_at..];
        let (op, len) = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find(|(tok, _)| after.starts_with(tok))
        .map(|(tok, op)| (op, tok.len()))
        .ok_or_else(|| err("unknown operator: expected one of == != > >= < <="))?;
        let value = parse_literal(after[len..].trim()).map_err(|r| err(&r))?;
        if matches!(value, Literal::Str(_) | Literal::Bool(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(err("> >= < <= compare numbers only"));
        }
        Ok(FieldFilter { path, op, value })
    }
}

fn parse_path(p: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    for (i, dotted) in p.split('.').enumerate() {
        let mut part = dotted;
        if part.is_empty() {
            return Err(if i == 0 {
                "missing field name after \".\"".into()
            } else {
                "empty field name in the path".into()
            });
        }
        // `key[]`, `key[][]`: the key, then one `Any` per `[]`.
        let key_end = part.find('[').unwrap_or(part.len());
        let key = &part[..key_end];
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(format!(
                "bad field name {key:?}: use letters, digits and _ (starting with a letter or _)"
            ));
        }
        segments.push(Segment::Key(key.to_owned()));
        part = &part[key_end..];
        while !part.is_empty() {
            match part.strip_prefix("[]") {
                Some(rest) => {
                    segments.push(Segment::Any);
                    part = rest;
                }
                None => {
                    return Err(format!(
                        "unexpected {part:?} in the path: only [] (any element) may follow a field name"
                    ));
                }
            }
        }
    }
    Ok(segments)
}

fn parse_literal(v: &str) -> Result<Literal, String> {
    match v {
        "" => Err("missing value after the operator".into()),
        "true" => Ok(Literal::Bool(true)),
        "false" => Ok(Literal::Bool(false)),
        _ if v.starts_with('"') => serde_json::from_str::<String>(v)
            .map(Literal::Str)
            .map_err(|_| format!("unterminated or malformed string {v}")),
        _ if v.starts_with('\'') => match v.len() >= 2 && v.ends_with('\'') {
            true => Ok(Literal::Str(v[1..v.len() - 1].to_owned())),
            false => Err(format!("unterminated string {v}")),
        },
        _ => v
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Literal::Num)
            .ok_or_else(|| {
                format!("bad value {v}: expected a quoted string, a number, true or false")
            }),
    }
}

impl FieldFilter {
    /// Whether the JSON of an event satisfies the condition.
    pub(crate) fn matches(&self, root: &Value) -> bool {
        let mut found = Vec::new();
        collect(root, &self.path, &mut found);
        found.into_iter().any(|v| self.compare(v))
    }

    fn compare(&self, actual: &Value) -> bool {
        let ord = match (&self.value, actual) {
            (Literal::Str(want), Value::String(got)) => return self.equality(got == want),
            (Literal::Bool(want), Value::Bool(got)) => return self.equality(got == want),
            (Literal::Num(want), Value::Number(got)) => match got.as_f64() {
                Some(got) => got.partial_cmp(want),
                None => None,
            },
            // Different JSON types are never equal, and only numbers are ordered.
            _ => return self.op == Op::Ne,
        };
        let Some(ord) = ord else { return false };
        match self.op {
            Op::Eq => ord.is_eq(),
            Op::Ne => ord.is_ne(),
            Op::Gt => ord.is_gt(),
            Op::Ge => ord.is_ge(),
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
        }
    }

    fn equality(&self, equal: bool) -> bool {
        match self.op {
            Op::Eq => equal,
            Op::Ne => !equal,
            _ => false,
        }
    }
}

/// Every value at `path` under `v`; `[]` fans out over array elements. Missing keys and
/// `[]` on a non-array yield nothing. A path ending in `[]` yields the elements themselves.
fn collect<'a>(v: &'a Value, path: &[Segment], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = path.split_first() else {
        match v {
            // A plain path ending at an array compares its elements, as Perstack does.
            Value::Array(items) => out.extend(items.iter()),
            other => out.push(other),
        }
        return;
    };
    match (first, v) {
        (Segment::Key(k), Value::Object(map)) => {
            if let Some(next) = map.get(k) {
                collect(next, rest, out);
            }
        }
        (Segment::Any, Value::Array(items)) => {
            for item in items {
                collect(item, rest, out);
            }
        }
        _ => {}
    }
}

impl fmt::Display for StepFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepFilter::Exact(v) => write!(f, "{v}"),
            StepFilter::Gt(v) => write!(f, ">{v}"),
            StepFilter::Ge(v) => write!(f, ">={v}"),
            StepFilter::Lt(v) => write!(f, "<{v}"),
            StepFilter::Le(v) => write!(f, "<={v}"),
            StepFilter::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// What to keep from a list of events, and how much of it to show.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    /// `--step`.
    pub(crate) step: Option<StepFilter>,
    /// `--type` (comma-separated types are split here); empty = any type.
    pub(crate) types: Vec<String>,
    /// Union of the `--errors` / `--tools` / `--delegations` sets; empty = no restriction.
    pub(crate) sets: Vec<&'static str>,
    /// `--filter`.
    pub(crate) field: Option<FieldFilter>,
    /// `--offset`: matches to skip.
    pub(crate) offset: usize,
    /// `--take`: matches to show; `None` = all.
    pub(crate) take: Option<usize>,
    /// `--context`: neighbours to add around each shown match.
    pub(crate) context: usize,
}

/// The outcome of [`Selection::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Selected {
    /// Indices into the input, ascending, each with whether it is a match (`false`: context).
    pub(crate) shown: Vec<(usize, bool)>,
    /// Matches before `--offset`/`--take`.
    pub(crate) matched: usize,
}

impl Selection {
    /// Whether `event` passes every filter (pagination aside).
    pub(crate) fn matches(&self, event: &Event) -> bool {
        let kind = event.kind();
        if let Some(step) = self.step
            && !event.step_number.is_some_and(|n| step.matches(n))
        {
            return false;
        }
        if !self.types.is_empty() && !self.types.iter().any(|t| t == kind) {
            return false;
        }
        if !self.sets.is_empty() && !self.sets.contains(&kind) {
            return false;
        }
        match &self.field {
            // An event that cannot become JSON is a bug in the wire types; it matches nothing.
            Some(f) => serde_json::to_value(event).is_ok_and(|v| f.matches(&v)),
            None => true,
        }
    }

    /// Filters `events`, pages the matches, and adds `context` neighbours (taken from all of
    /// `events`) around each shown match.
    pub(crate) fn apply(&self, events: &[Event]) -> Selected {
        let hits: Vec<usize> = (0..events.len())
            .filter(|&i| self.matches(&events[i]))
            .collect();
        let matched = hits.len();
        let page = hits
            .into_iter()
            .skip(self.offset)
            .take(self.take.unwrap_or(usize::MAX));
        let mut marks: Vec<Option<bool>> = vec![None; events.len()];
        for i in page {
            marks[i] = Some(true);
            let lo = i.saturating_sub(self.context);
            let hi = i.saturating_add(self.context).min(events.len() - 1);
            for (j, mark) in marks.iter_mut().enumerate().take(hi + 1).skip(lo) {
                if mark.is_none() && j != i {
                    *mark = Some(false);
                }
            }
        }
        let shown = marks
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| m.map(|is_match| (i, is_match)))
            .collect();
        Selected { shown, matched }
    }
}

#[cfg(test)]
mod tests;
