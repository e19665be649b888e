//! Media interfaces (realms) as the engine needs them: a name, the local media address the
//! datapath binds, an optional advertised address written into SDP instead (1:1 NAT, S-20),
//! and the RTP port range. sbcd builds these from its configuration.

use std::net::IpAddr;

/// One media interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInterface {
    pub name: String,
    /// Address the relay sockets are bound to.
    pub address: IpAddr,
    /// Address written into `c=`/`o=`/`a=rtcp` when set (public side of a 1:1 NAT).
    pub advertised_address: Option<IpAddr>,
    /// First relay port (rounded up to even).
    pub port_min: u16,
    /// Last relay port (inclusive).
    pub port_max: u16,
}

impl MediaInterface {
    /// The address peers must send media to, as written into SDP.
    pub fn sdp_address(&self) -> IpAddr {
        self.advertised_address.unwrap_or(self.address)
    }
}

/// Port usage of one interface, for metrics (`sbc_media_ports{state}` style gauges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUsage {
    pub interface: String,
    pub total: usize,
    pub used: usize,
    pub free: usize,
}
