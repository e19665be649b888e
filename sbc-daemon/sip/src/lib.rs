//! Zero-copy SIP message layer of Portcullis.
//!
//! Owns the SIP message model: parsing requests and responses while keeping the raw
//! bytes (RFC 3261 7, 7.3 incl. folding and compact forms, 7.5, 18.3; tolerance per
//! RFC 4475), lazily typed header views (Via, From/To, Call-ID, CSeq, Contact, Route,
//! Record-Route, Max-Forwards, Content-Length/Type, Expires, Supported/Require), URIs
//! (RFC 3261 19.1), semantic validation (RFC 3261 8.2, 16.3), edits with a writer that
//! copies unedited bytes verbatim, and stream framing (RFC 3261 18.3, RFC 5626 4.4.1).
//!
//! It does not own transactions, dialogs or transports.
//!
//! ```
//! use portcullis_sip::{Bytes, HeaderName, SipMessage};
//! let raw = Bytes::from_static(b"OPTIONS sip:b@example.com SIP/2.0\r\n\
//! v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
//! f: <sip:a@example.com>;tag=9\r\nt: <sip:b@example.com>\r\ni: c1\r\n\
//! CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n");
//! let mut msg = SipMessage::parse(raw.clone())?;
//! assert_eq!(msg.top_via()?.branch(), Some("z9hG4bK1"));
//! assert_eq!(msg.to_bytes(), raw); // no edits: the very same bytes
//! msg.prepend_header(HeaderName::Via, "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKsbc");
//! msg.set_header(HeaderName::MaxForwards, "69");
//! let out = msg.to_bytes();
//! assert!(out.starts_with(b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1"));
//! # Ok::<(), portcullis_sip::ParseError>(())
//! ```

mod cseq;
mod edit;
mod error;
mod framing;
mod header;
mod message;
mod method;
mod name_addr;
mod params;
mod uri;
mod validate;
mod via;

pub use bytes::Bytes;
pub use cseq::CSeq;
pub use error::ParseError;
pub use framing::{frame, Framing};
pub use header::{expand_compact, Header, HeaderName};
pub use message::{SipMessage, MAX_HEADER_LINES};
pub use method::{is_token, Method};
pub use name_addr::{Contact, NameAddr};
pub use params::Params;
pub use uri::SipUri;
pub use via::Via;
