//! Zero-copy `;name[=value]` parameter lists (RFC 3261 19.1.1 uri-parameters, 20
//! generic-param, 20.42 via-params).
//!
//! A [`Params`] borrows the raw text of the parameter section and is parsed on each
//! lookup; there are rarely more than a handful of parameters, so a scan is cheaper than
//! building an index. White space around `;` and `=` (SWS, folding included) is ignored and
//! quoted values are returned with their quotes, exactly as written.

use crate::header::{is_lws, skip_quoted, trim_lws};

/// A borrowed list of `;name[=value]` parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// Wraps raw parameter text, with or without the leading `;`.
    pub fn new(raw: &'a str) -> Params<'a> {
        Params { raw }
    }

    /// The raw parameter text as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// True if there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Value of the first parameter called `name` (case-insensitive):
    /// `None` if absent, `Some(None)` if present without `=value`.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// True if a parameter called `name` is present (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The parameters in order, as (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        ParamIter {
            s: self.raw,
            pos: 0,
        }
    }
}

struct ParamIter<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.s.as_bytes();
        loop {
            if self.pos >= b.len() {
                return None;
            }
            let start = self.pos;
            let mut i = start;
            let mut eq = None;
            while i < b.len() {
                match b[i] {
                    b';' => break,
                    b'=' if eq.is_none() => {
                        eq = Some(i);
                        i += 1;
                    }
                    b'"' => i = skip_quoted(b, i).unwrap_or(b.len()),
                    _ => i += 1,
                }
            }
            let end = i.min(b.len());
            self.pos = end + 1;
            let (name, value) = match eq {
                Some(e) => (
                    self.s.get(start..e).unwrap_or(""),
                    Some(trim_lws(self.s.get(e + 1..end).unwrap_or(""))),
                ),
                None => (self.s.get(start..end).unwrap_or(""), None),
            };
            let name = trim_lws(name);
            if name.is_empty() && value.is_none() {
                continue;
            }
            return Some((name, value));
        }
    }
}

/// Index of the first `;` at top level (outside quotes), if any.
pub(crate) fn find_semicolon(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => return Some(i),
            b'"' => i = skip_quoted(b, i)?,
            _ => i += 1,
        }
    }
    None
}

/// Checks that every parameter name is a token and every value a token, host-ish word or
/// quoted string (used by the strict validators, not by lookups).
pub(crate) fn params_well_formed(p: &Params<'_>) -> bool {
    p.iter().all(|(n, v)| {
        !n.is_empty()
            && n.bytes().all(crate::method::is_token_char)
            && match v {
                None => true,
                Some(v) if v.starts_with('"') => skip_quoted(v.as_bytes(), 0) == Some(v.len()),
                Some(v) => !v.is_empty() && !v.bytes().any(|c| is_lws(c) || c == b'"'),
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_flags() {
        let p = Params::new(";branch=z9hG4bK1 ; RPORT ;received = 10.0.0.1;;x=\"a;b\"");
        assert_eq!(p.get("branch"), Some(Some("z9hG4bK1")));
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(p.get("received"), Some(Some("10.0.0.1")));
        assert_eq!(p.get("x"), Some(Some("\"a;b\"")));
        assert_eq!(p.get("nope"), None);
        assert!(p.has("Branch"));
        assert_eq!(p.iter().count(), 4);
        assert!(params_well_formed(&p));
        assert!(Params::new("").is_empty());
        assert!(Params::new(" ; ;").is_empty());
    }

    #[test]
    fn malformed_is_detected_by_validator() {
        assert!(!params_well_formed(&Params::new(";=x")));
        assert!(!params_well_formed(&Params::new(";a=\"open")));
        assert!(!params_well_formed(&Params::new(";a=b c")));
    }

    #[test]
    fn top_level_semicolon() {
        assert_eq!(find_semicolon("\"a;b\" x;y"), Some(7));
        assert_eq!(find_semicolon("abc"), None);
    }
}
