//! SIP request methods (RFC 3261 7.1, 27.4 and the extension RFCs).
//!
//! Methods are case-sensitive tokens: `INVITE` is [`Method::Invite`], `invite` is
//! `Method::Other("invite")`.

use std::fmt;

/// A SIP request method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// REGISTER (RFC 3261).
    Register,
    /// OPTIONS (RFC 3261).
    Options,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other extension method, exactly as written.
    Other(String),
}

impl Method {
    /// The method token as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }

    /// Maps a method token to a [`Method`] (case-sensitive, RFC 3261 7.1).
    ///
    /// This does not check that `s` is a valid `token`; see [`is_token`].
    pub fn parse(s: &str) -> Method {
        Self::from_bytes(s.as_bytes()).unwrap_or_else(|| Method::Other(s.to_owned()))
    }

    /// Known methods only, without allocating.
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3261 25.1 `token` characters as a lookup table.
const TOKEN_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

/// RFC 3261 25.1 `token` character.
#[inline]
pub(crate) fn is_token_char(c: u8) -> bool {
    TOKEN_CHARS[usize::from(c)]
}

/// True if `s` is a non-empty RFC 3261 `token`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_round_trip() {
        for m in [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "REGISTER",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "PRACK",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "MESSAGE",
            "PUBLISH",
        ] {
            let parsed = Method::parse(m);
            assert!(!matches!(parsed, Method::Other(_)), "{m}");
            assert_eq!(parsed.as_str(), m);
            assert_eq!(parsed.to_string(), m);
        }
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::parse("invite"), Method::Other("invite".into()));
        assert_eq!(Method::parse("NEWMETHOD").as_str(), "NEWMETHOD");
    }

    #[test]
    fn token_rules() {
        assert!(is_token("!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token(""));
        assert!(!is_token("IN VITE"));
        assert!(!is_token("INV<ITE"));
    }
}
