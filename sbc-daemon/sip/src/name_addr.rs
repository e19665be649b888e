//! `name-addr` / `addr-spec` header values: From, To, Contact, Route, Record-Route, Path,
//! Refer-To (RFC 3261 20.10, 20.20, 20.30, 20.34, 20.39 and the grammar of 25.1).
//!
//! Owns [`NameAddr`] (display name, URI, header parameters) and [`Contact`] (`*` or an
//! address). Per RFC 3261 20, parameters after a bare addr-spec belong to the header,
//! not to the URI.

use crate::error::ParseError;
use crate::header::{is_lws, skip_quoted, trim_lws};
use crate::method::is_token_char;
use crate::params::{find_semicolon, Params};
use crate::uri::SipUri;

/// A `[display-name] <URI> *(;param)` or `addr-spec *(;param)` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name: for a quoted string, the text between the quotes (escapes not
    /// decoded); for tokens, the tokens as written. `None` when absent or empty.
    pub display_name: Option<&'a str>,
    /// The URI inside `<>`, or the bare addr-spec.
    pub uri: &'a str,
    /// Header parameters (after `>` or after a bare addr-spec).
    pub params: Params<'a>,
    /// The whole value as written (trimmed).
    pub raw: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Parses one name-addr/addr-spec value; `header` names the header for errors.
    pub fn parse(value: &'a str, header: &'static str) -> Result<NameAddr<'a>, ParseError> {
        let bad = |reason| ParseError::BadHeaderValue { header, reason };
        let v = trim_lws(value);
        if v.is_empty() {
            return Err(bad("empty value"));
        }
        let b = v.as_bytes();
        let (display_name, lt) = if b[0] == b'"' {
            let end = skip_quoted(b, 0).ok_or(bad("unterminated quoted display name"))?;
            let mut i = end;
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            if b.get(i) != Some(&b'<') {
                return Err(bad("quoted display name not followed by <URI>"));
            }
            let dn = &v[1..end - 1];
            (if dn.is_empty() { None } else { Some(dn) }, Some(i))
        } else {
            match v.find('<') {
                Some(lt) => {
                    let dn = trim_lws(&v[..lt]);
                    if !dn.bytes().all(|c| is_token_char(c) || is_lws(c)) {
                        return Err(bad("display name is neither tokens nor a quoted string"));
                    }
                    (if dn.is_empty() { None } else { Some(dn) }, Some(lt))
                }
                None => (None, None),
            }
        };
        match lt {
            Some(lt) => {
                let gt = v[lt..]
                    .find('>')
                    .map(|g| g + lt)
                    .ok_or(bad("missing '>'"))?;
                let uri = &v[lt + 1..gt];
                if uri.is_empty() || uri.bytes().any(|c| is_lws(c) || c == b'<') {
                    return Err(bad("empty URI or white space inside <>"));
                }
                let rest = trim_lws(&v[gt + 1..]);
                if !rest.is_empty() && !rest.starts_with(';') {
                    return Err(bad("unexpected text after '>'"));
                }
                Ok(NameAddr {
                    display_name,
                    uri,
                    params: Params::new(rest),
                    raw: v,
                })
            }
            None => {
                let (uri, params) = match find_semicolon(v) {
                    Some(sc) => (trim_lws(&v[..sc]), &v[sc..]),
                    None => (v, ""),
                };
                if uri.is_empty() || uri.bytes().any(|c| is_lws(c) || c == b'>' || c == b'"') {
                    return Err(bad("bad addr-spec"));
                }
                if !uri.contains(':') {
                    return Err(bad("addr-spec without scheme"));
                }
                // RFC 3261 20: a URI with ',', '?' or ';' must be enclosed in <>.
                if uri.contains('?') || uri.contains(',') {
                    return Err(bad("URI with '?' or ',' must be enclosed in <>"));
                }
                Ok(NameAddr {
                    display_name: None,
                    uri,
                    params: Params::new(params),
                    raw: v,
                })
            }
        }
    }

    /// The `tag` header parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    /// Parses [`NameAddr::uri`] as a sip/sips/tel URI.
    pub fn parse_uri(&self) -> Result<SipUri<'_>, ParseError> {
        SipUri::parse(self.uri)
    }
}

/// One Contact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (REGISTER removal of all bindings).
    Star,
    /// An address with its parameters (`expires`, `q`, ...).
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(value: &'a str) -> Result<Contact<'a>, ParseError> {
        if trim_lws(value) == "*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(value, "Contact").map(Contact::Addr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_display_name() {
        let n = NameAddr::parse(
            r#" "J Rosenberg \\\"" <sip:jdrosen@example.com> ; tag = 98asjd8"#,
            "From",
        )
        .unwrap();
        assert_eq!(n.display_name, Some(r#"J Rosenberg \\\""#));
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(n.parse_uri().unwrap().user, Some("jdrosen"));
    }

    #[test]
    fn token_display_and_bare() {
        let n = NameAddr::parse("Bob Smith <sip:bob@b.example;lr>;expires=60", "Contact").unwrap();
        assert_eq!(n.display_name, Some("Bob Smith"));
        assert_eq!(n.uri, "sip:bob@b.example;lr");
        assert_eq!(n.params.get("expires"), Some(Some("60")));
        let n = NameAddr::parse("sip:bob@b.example;tag=1", "To").unwrap();
        assert_eq!(n.display_name, None);
        assert_eq!(n.uri, "sip:bob@b.example");
        assert_eq!(n.tag(), Some("1"));
    }

    #[test]
    fn star_contact() {
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::Star);
        assert!(matches!(
            Contact::parse("<sip:a@b>").unwrap(),
            Contact::Addr(_)
        ));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "\"open <sip:a@b>",
            "\"x\" sip:a@b",
            "<sip:a@b",
            "<sip:a@b> junk",
            "<sip:a @b>",
            "Bad@Name <sip:a@b>",
            "nocolon",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        ] {
            assert!(NameAddr::parse(bad, "To").is_err(), "{bad:?}");
        }
    }
}
