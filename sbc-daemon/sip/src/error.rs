//! Errors of the SIP message layer.
//!
//! One enum for syntax errors found while indexing a message ([`crate::SipMessage::parse`],
//! [`crate::frame`]), for malformed values found by the lazy typed accessors, and for the
//! semantic checks of [`crate::SipMessage::validate_request`] / `validate_response`.
//! Variants carry enough context (line number, header name, reason) for an operator log line.

/// Why a SIP message, header value or URI was rejected.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Zero bytes, or only line terminators.
    #[error("empty message")]
    Empty,
    /// The request line or status line does not have the shape
    /// `Method SP Request-URI SP SIP-Version` / `SIP-Version SP Status-Code SP Reason-Phrase`.
    #[error("bad start line")]
    BadStartLine,
    /// The method token of the request line contains characters outside `token`.
    #[error("bad method token in request line")]
    BadMethod,
    /// The Request-URI is not a syntactically valid absolute URI.
    #[error("bad Request-URI: {0}")]
    BadRequestUri(&'static str),
    /// The reason phrase contains control characters.
    #[error("bad reason phrase")]
    BadReasonPhrase,
    /// The SIP-Version in the start line is not `SIP/2.0`.
    #[error("unsupported SIP version")]
    BadVersion,
    /// The status code is not three digits in 100..=699.
    #[error("bad status code")]
    BadStatusCode,
    /// A header line is not `token ":" value` (line numbers start at 1 for the start line).
    #[error("bad header line {line}")]
    BadHeader {
        /// 1-based line number in the message (the start line is line 1).
        line: usize,
    },
    /// The header section does not end with an empty line.
    #[error("header section not terminated by an empty line")]
    UnterminatedHeaders,
    /// Content-Length is not a decimal number that fits the limits.
    #[error("bad Content-Length")]
    BadContentLength,
    /// Several Content-Length headers with different values.
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    /// The body is shorter than Content-Length announces.
    #[error("message truncated: body shorter than Content-Length")]
    Truncated,
    /// The message or its header section exceeds the configured maximum.
    #[error("message too large")]
    TooLarge,
    /// A stream-transport message has no Content-Length (RFC 3261 18.3).
    #[error("Content-Length missing on a stream transport")]
    MissingContentLength,
    /// A mandatory header is absent.
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    /// A header that must appear at most once appears several times.
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    /// A typed header value is malformed.
    #[error("bad {header} header: {reason}")]
    BadHeaderValue {
        /// Canonical header name.
        header: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A URI (Request-URI or inside a header) is malformed.
    #[error("bad URI: {0}")]
    BadUri(&'static str),
    /// The CSeq method does not match the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// The body length does not match Content-Length.
    #[error("Content-Length {declared} does not match the body length {actual}")]
    ContentLengthMismatch {
        /// Content-Length value.
        declared: usize,
        /// Body bytes present.
        actual: usize,
    },
}
