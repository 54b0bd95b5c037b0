//! The span-aware readers the checker is built from: each reads one key of a TOML table as a
//! type, records a [`Diagnostic`] naming the field when it is the wrong type or out of range, and
//! returns `None` so the walk continues and reports every error in one run.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::Diagnostic;

// === impl Checker ===

/// Walks one document, collecting every diagnostic.
pub(super) struct Checker<'s> {
    pub(super) src: &'s str,
    pub(super) file: &'s str,
    pub(super) diags: Vec<Diagnostic>,
}

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// Where something was first defined, for "duplicate" messages.
pub(super) struct Seen {
    pub(super) line: usize,
}

impl<'s> Checker<'s> {
    pub(super) fn finish(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| (d.line, d.column));
        self.diags
    }

    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.src[line_start..offset].chars().count() + 1;
        (line, column)
    }

    pub(super) fn error(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn line_of(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    // --- generic field access ---

    pub(super) fn keys(&mut self, t: &DeTable<'_>, path: &str, allowed: &[&str]) {
        for key in t.keys() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                let msg = format!("unknown key (expected one of: {})", allowed.join(", "));
                self.error(key.span(), &join(path, key.get_ref()), msg);
            }
        }
    }

    pub(super) fn string(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
    ) -> Option<Spanned<String>> {
        let v = get(t, key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), s.to_string())),
            other => {
                self.type_error(v.span(), &join(path, key), "a string", other);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, t: &DeTable<'_>, path: &str, key: &str) -> Option<bool> {
        let v = get(t, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.type_error(v.span(), &join(path, key), "true or false", other);
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn integer(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<Spanned<i64>> {
        let v = get(t, key)?;
        let field = join(path, key);
        let DeValue::Integer(i) = v.get_ref() else {
            self.type_error(v.span(), &field, "an integer", v.get_ref());
            return None;
        };
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(Spanned::new(v.span(), n)),
            _ => {
                let msg = format!("must be between {min} and {max}, got {i}");
                self.error(v.span(), &field, msg);
                None
            }
        }
    }

    pub(super) fn number(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
    ) -> Option<Spanned<f64>> {
        let v = get(t, key)?;
        let n = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            other => {
                self.type_error(v.span(), &join(path, key), "a number", other);
                return None;
            }
        };
        n.map(|n| Spanned::new(v.span(), n))
    }

    /// A duration: `"500ms"`, `"5s"`, `"2m"`, `"1h"`, or an integer number of seconds (as nginx).
    /// Zero is rejected: every duration in the config is a timeout or an interval.
    pub(super) fn duration(&mut self, t: &DeTable<'_>, path: &str, key: &str) -> Option<Duration> {
        let v = get(t, key)?;
        let field = join(path, key);
        let d = match v.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(Duration::from_secs),
            DeValue::String(s) => parse_duration(s),
            other => {
                self.type_error(v.span(), &field, "a duration such as \"5s\"", other);
                return None;
            }
        };
        match d {
            Some(d) if !d.is_zero() => Some(d),
            Some(_) => {
                self.error(v.span(), &field, "must be greater than zero");
                None
            }
            None => {
                let msg = "invalid duration (expected a number with a unit: ms, s, m or h, e.g. \"500ms\")";
                self.error(v.span(), &field, msg);
                None
            }
        }
    }

    pub(super) fn table<'a, 'i>(
        &mut self,
        t: &'a DeTable<'i>,
        path: &str,
        key: &str,
    ) -> Option<(&'a DeTable<'i>, Range<usize>)> {
        let v = get(t, key)?;
        match v.get_ref() {
            DeValue::Table(inner) => Some((inner, v.span())),
            other => {
                self.type_error(v.span(), &join(path, key), "a table", other);
                None
            }
        }
    }

    /// An array; a single value is accepted as an array of one when `lenient`.
    pub(super) fn array<'a, 'i>(
        &mut self,
        t: &'a DeTable<'i>,
        path: &str,
        key: &str,
    ) -> Option<&'a DeArray<'i>> {
        let v = get(t, key)?;
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                self.type_error(v.span(), &join(path, key), "an array", other);
                None
            }
        }
    }

    pub(super) fn type_error(
        &mut self,
        span: Range<usize>,
        field: &str,
        expected: &str,
        found: &DeValue<'_>,
    ) {
        let msg = format!("expected {expected}, found {}", found.type_str());
        self.error(span, field, msg);
    }

    /// Strings from a field that may be one string or an array of strings.
    pub(super) fn strings(
        &mut self,
        t: &DeTable<'_>,
        path: &str,
        key: &str,
    ) -> Option<Vec<Spanned<String>>> {
        let v = get(t, key)?;
        let field = join(path, key);
        match v.get_ref() {
            DeValue::String(s) => Some(vec![Spanned::new(v.span(), s.to_string())]),
            DeValue::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, item) in a.iter().enumerate() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                        other => {
                            let f = format!("{field}[{i}]");
                            self.type_error(item.span(), &f, "a string", other);
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.type_error(v.span(), &field, "a string or an array of strings", other);
                None
            }
        }
    }

    pub(super) fn address(&mut self, s: &Spanned<String>, field: &str) -> Option<SocketAddr> {
        match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = format!(
                    "invalid address `{}` (expected IP:PORT, e.g. 127.0.0.1:8080; the proxy does no DNS)",
                    s.get_ref()
                );
                self.error(s.span(), field, msg);
                None
            }
        }
    }

    // --- the document ---
}

// === helpers ===

pub(super) fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a Value<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}
