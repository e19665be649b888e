//! The `a=setup` attribute (RFC 4145 4, RFC 5763 5, RFC 8842 5) and the DTLS role it gives.
//!
//! Role matrix, from our side (`local`, `remote`), whichever of us offered:
//!
//! | local \ remote | active        | passive       | actpass        | holdconn |
//! |----------------|---------------|---------------|----------------|----------|
//! | active         | error (both clients) | **client** | **client** (1) | error |
//! | passive        | **server**    | error (both servers) | **server** (1) | error |
//! | actpass        | **server**    | **client**    | error (2)      | error    |
//! | holdconn       | error         | error         | error          | error    |
//!
//! (1) We answered `active`/`passive` to an `actpass` offer (the normal answer case), or we
//! offered `active`/`passive` and the peer wrongly answered `actpass`: the peer accepted
//! either role, so it takes the other one.
//! (2) Two `actpass` (an answer must not use it, RFC 8842 5.3): no role can be derived
//! without a tie-breaker, and guessing would make both ends wait (server/server) or both
//! send ClientHellos (client/client); the caller must fix the answer (see [`answer_setup`]).
//!
//! Every accepted combination gives the two ends opposite roles, so one side always sends
//! the ClientHello: no deadlock.

use std::fmt;

/// The value of `a=setup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl Setup {
    /// The SDP token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::ActPass => "actpass",
            Self::HoldConn => "holdconn",
        }
    }

    /// Parses an `a=setup` value (case-insensitive, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        [Self::Active, Self::Passive, Self::ActPass, Self::HoldConn]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// The value to assume when `a=setup` is absent (RFC 4145 4: `active` in an offer,
    /// `passive` in an answer).
    pub fn default_when_absent(in_offer: bool) -> Self {
        if in_offer {
            Self::Active
        } else {
            Self::Passive
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of the DTLS handshake we play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We send the ClientHello (`a=setup:active`).
    Client,
    /// We wait for the ClientHello (`a=setup:passive`).
    Server,
}

impl Role {
    /// The other end's role.
    pub fn opposite(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// Why no DTLS role follows from a pair of `a=setup` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("a=setup:holdconn: no DTLS connection is to be set up now")]
    HoldConn,
    #[error("both sides are a=setup:{0}: the handshake could never start or would collide")]
    Conflict(Setup),
    #[error("both sides are a=setup:actpass: the answer must choose active or passive")]
    BothActPass,
}

/// The DTLS role for our `local` `a=setup` and the peer's `remote` one (see the module
/// documentation for the matrix).
pub fn dtls_role(local: Setup, remote: Setup) -> Result<Role, SetupError> {
    use Setup::*;
    match (local, remote) {
        (HoldConn, _) | (_, HoldConn) => Err(SetupError::HoldConn),
        (Active, Passive) | (Active, ActPass) | (ActPass, Passive) => Ok(Role::Client),
        (Passive, Active) | (Passive, ActPass) | (ActPass, Active) => Ok(Role::Server),
        (Active, Active) => Err(SetupError::Conflict(Active)),
        (Passive, Passive) => Err(SetupError::Conflict(Passive)),
        (ActPass, ActPass) => Err(SetupError::BothActPass),
    }
}

/// The `a=setup` we answer to an offer's `remote_offer` (RFC 5763 5: `actpass` is answered
/// `active`, so we send the ClientHello and the offerer need not wait for our answer to know
/// its role; `active` is answered `passive`, `passive` `active`, `holdconn` `holdconn`).
pub fn answer_setup(remote_offer: Setup) -> Setup {
    match remote_offer {
        Setup::ActPass | Setup::Passive => Setup::Active,
        Setup::Active => Setup::Passive,
        Setup::HoldConn => Setup::HoldConn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Setup; 4] = [
        Setup::Active,
        Setup::Passive,
        Setup::ActPass,
        Setup::HoldConn,
    ];

    #[test]
    fn every_accepted_pair_gives_opposite_roles() {
        let mut accepted = 0;
        for l in ALL {
            for r in ALL {
                match (dtls_role(l, r), dtls_role(r, l)) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b.opposite(), "{l}/{r}");
                        accepted += 1;
                    }
                    (Err(_), Err(_)) => {}
                    other => panic!("{l}/{r} asymmetric: {other:?}"),
                }
            }
        }
        // active/passive, active/actpass, passive/actpass, both orders.
        assert_eq!(accepted, 6);
    }

    #[test]
    fn answers_to_every_offer_resolve() {
        for offer in [Setup::ActPass, Setup::Active, Setup::Passive] {
            let answer = answer_setup(offer);
            assert_ne!(answer, Setup::ActPass);
            let offerer = dtls_role(offer, answer).unwrap();
            let answerer = dtls_role(answer, offer).unwrap();
            assert_eq!(offerer, answerer.opposite());
        }
        assert_eq!(answer_setup(Setup::ActPass), Setup::Active);
        assert_eq!(
            dtls_role(Setup::HoldConn, answer_setup(Setup::HoldConn)),
            Err(SetupError::HoldConn)
        );
    }

    #[test]
    fn parse_and_defaults() {
        assert_eq!(Setup::parse(" ActPass "), Some(Setup::ActPass));
        assert_eq!(Setup::parse("HOLDCONN"), Some(Setup::HoldConn));
        assert_eq!(Setup::parse("actpas"), None);
        assert_eq!(Setup::default_when_absent(true), Setup::Active);
        assert_eq!(Setup::default_when_absent(false), Setup::Passive);
        // An offer without a=setup (active) answered passive: we, the answerer, are server.
        assert_eq!(
            dtls_role(Setup::default_when_absent(false), Setup::Active),
            Ok(Role::Server)
        );
    }
}
