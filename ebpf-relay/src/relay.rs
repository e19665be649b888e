//! Loader and typed API of the XDP relay.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aya::maps::xdp::{DevMapHash, XdpMapError};
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use tracing::{debug, info, warn};

use crate::maps::{
    addr_to_raw, RawAddrKey, RawBlocklistValue, RawFlowKey, RawFlowValue, RawRelayConfig,
    POLICY_LEARN, POLICY_STRICT,
};
use crate::netlink::{self, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
use crate::stats::{Outcome, RelayStats};
use crate::RELAY_OBJECT;

/// Name of the relay program in the object (and in `bpftool prog`).
pub const RELAY_PROG: &str = "portcullis_xdp";
/// Name of the trivial XDP_PASS program (for veth peers).
pub const PASS_PROG: &str = "portcullis_pass";
/// Name of the benchmark bound program (parse, swap, XDP_TX).
pub const BOUND_PROG: &str = "portcullis_bnd";

const FLOWS: &str = "flows";
const BLOCKLIST: &str = "blocklist";
const STATS: &str = "relay_stats";
const CONFIG: &str = "relay_config";
const TX_PORTS: &str = "tx_ports";
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// Errors of the relay loader and API.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The embedded object could not be loaded (verifier, maps, privileges).
    #[error("loading the XDP object failed: {0}")]
    Load(#[from] EbpfError),
    /// A program operation failed.
    #[error("XDP program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    /// A map is missing from the object (build mismatch).
    #[error("map {0} missing from the XDP object")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// Adding the egress interface to the devmap failed.
    #[error("devmap entry for ifindex {ifindex}: {source}")]
    DevMap {
        ifindex: u32,
        #[source]
        source: XdpMapError,
    },
    /// No interface by that name (in the caller's network namespace).
    #[error("unknown interface {0:?}")]
    UnknownInterface(String),
    /// Attaching failed in every allowed mode.
    #[error("attaching to {ifname} failed: {reason}")]
    Attach { ifname: String, reason: String },
    /// Another (not Portcullis) XDP program occupies the interface.
    #[error("interface {ifname} already runs XDP program id {prog_id} ({prog_name:?}), not ours; refusing to replace it")]
    ForeignProgram {
        ifname: String,
        prog_id: u32,
        prog_name: String,
    },
    /// Netlink query or update failed.
    #[error("netlink on {ifname}: {source}")]
    Netlink {
        ifname: String,
        #[source]
        source: io::Error,
    },
    /// Removing a stale program of ours failed.
    #[error("removing stale XDP program id {prog_id} from {ifname}: {reason}")]
    Stale {
        ifname: String,
        prog_id: u32,
        reason: String,
    },
    /// The relay is not attached to that interface.
    #[error("not attached to {0:?}")]
    NotAttached(String),
    /// Addresses of a flow are not all of the key's family.
    #[error("flow {0}: every address of a flow must have the family of its local socket")]
    FamilyMismatch(SocketAddr),
    /// `insert_flow` on an existing key.
    #[error("flow {0} already exists")]
    FlowExists(SocketAddr),
    /// `update_flow` on a missing key.
    #[error("flow {0} does not exist")]
    FlowNotFound(SocketAddr),
    /// BPF_PROG_TEST_RUN failed.
    #[error("test run: {0}")]
    TestRun(String),
}

type Result<T> = std::result::Result<T, RelayError>;

/// Requested attach mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic if the driver refuses.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// Mode actually in use on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Driver mode (XDP_FLAGS_DRV_MODE).
    Native,
    /// Generic mode (XDP_FLAGS_SKB_MODE).
    Generic,
}

impl AttachedMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachedMode::Native => XdpMode::Driver,
            AttachedMode::Generic => XdpMode::Skb,
        }
    }
}

/// What to do with packets from a source other than the expected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePolicy {
    /// Drop them in XDP (latched, strict source).
    Strict,
    /// Pass them to the kernel stack so userspace can decide (learning).
    Learn,
}

/// Forwarding rule for packets arriving on one local relay socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// Source the packets must come from.
    pub expected_source: SocketAddr,
    /// Policy for packets from any other source.
    pub policy: SourcePolicy,
    /// New source: the SBC's egress relay socket.
    pub egress_source: SocketAddr,
    /// New destination: the peer.
    pub peer: SocketAddr,
    /// Egress interface index (in the namespace of the attached interfaces).
    /// Equal to the ingress interface: XDP_TX; otherwise XDP_REDIRECT via
    /// the devmap, which holds every attached interface (and those added by
    /// [`XdpRelay::add_egress_interface`]); any other egress drops the packet
    /// (`drop_no_egress`).
    pub egress_ifindex: u32,
    /// MAC of the egress interface.
    pub src_mac: [u8; 6],
    /// MAC of the next hop towards the peer.
    pub dst_mac: [u8; 6],
}

/// Counters of one flow, maintained by the XDP program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Forwarded packets.
    pub packets: u64,
    /// Forwarded bytes, counted from the IP header.
    pub bytes: u64,
    /// CLOCK_MONOTONIC (`bpf_ktime_get_ns`) of the last forwarded packet, 0 if none.
    pub last_seen_ns: u64,
}

/// One flow as read back from the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// Local relay socket (the key).
    pub local: SocketAddr,
    /// The rule.
    pub spec: FlowSpec,
    /// The counters.
    pub counters: FlowCounters,
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// XDP action returned (`libc`-style: 1 DROP, 2 PASS, 3 TX, 4 REDIRECT).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Average time per run as measured by the kernel.
    pub duration: Duration,
}

/// XDP actions, as returned by the program.
pub mod action {
    /// XDP_ABORTED.
    pub const ABORTED: u32 = 0;
    /// XDP_DROP.
    pub const DROP: u32 = 1;
    /// XDP_PASS.
    pub const PASS: u32 = 2;
    /// XDP_TX.
    pub const TX: u32 = 3;
    /// XDP_REDIRECT.
    pub const REDIRECT: u32 = 4;
}

/// Which program of the object to test-run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The relay.
    Relay,
    /// The bare swap-and-XDP_TX bound (benchmark reference).
    Bound,
    /// The trivial XDP_PASS program (cost of the test-run loop itself).
    Pass,
}

#[derive(Debug)]
struct Attachment {
    ifname: String,
    ifindex: u32,
    mode: AttachedMode,
    link: Option<XdpLinkId>,
}

/// Options for [`XdpRelay::load`].
#[derive(Clone, Copy, Debug)]
pub struct RelayOptions {
    /// Capacity of the flow map.
    pub max_flows: u32,
    /// Capacity of the source blocklist.
    pub max_blocklist: u32,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            max_flows: crate::maps::MAX_FLOWS,
            max_blocklist: 65536,
        }
    }
}

/// The loaded relay: program, maps and its attachments. Dropping it detaches
/// the program from every interface.
pub struct XdpRelay {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    egress_only: Vec<u32>,
    extra_loaded: Vec<&'static str>,
}

impl std::fmt::Debug for XdpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpRelay")
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

fn ifindex_of(ifname: &str) -> Result<u32> {
    let c = CString::new(ifname).map_err(|_| RelayError::UnknownInterface(ifname.to_string()))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(RelayError::UnknownInterface(ifname.to_string()));
    }
    Ok(idx)
}

fn xdp_prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    let prog = ebpf.program_mut(name).ok_or(RelayError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    prog.try_into()
        .map_err(|source| RelayError::Program { name, source })
}

fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .map(|p| p.name_as_str().unwrap_or("").to_string())
}

/// BPF_LINK_DETACH on the link with id `link_id`: the program leaves the
/// interface now, even if another process still holds a copy of the link fd
/// (a child between fork and exec, for instance).
fn detach_link_by_id(link_id: u32) -> std::result::Result<(), String> {
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let mut attr = [0u32; 32];
    attr[0] = link_id;
    // SAFETY: attr is a zeroed bpf_attr of sufficient size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as u32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "BPF_LINK_GET_FD_BY_ID: {}",
            io::Error::last_os_error()
        ));
    }
    let mut attr = [0u32; 32];
    attr[0] = fd as u32;
    // SAFETY: as above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as u32,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: fd was returned by the kernel to us and is not used elsewhere.
    unsafe { libc::close(fd as i32) };
    if rc < 0 {
        return Err(format!("BPF_LINK_DETACH: {err}"));
    }
    Ok(())
}

/// Detaches the bpf_link holding program `prog_id`, if any; returns whether
/// one was found.
fn detach_link_of_program(prog_id: u32) -> std::result::Result<bool, String> {
    let link = aya::programs::loaded_links()
        .filter_map(|l| l.ok())
        .find(|l| l.program_id() == prog_id);
    match link {
        Some(l) => detach_link_by_id(l.id()).map(|()| true),
        None => Ok(false),
    }
}

fn flow_value(local: SocketAddr, spec: &FlowSpec) -> Result<RawFlowValue> {
    let (kf, _) = addr_to_raw(local.ip());
    let (ef, expected) = addr_to_raw(spec.expected_source.ip());
    let (sf, new_src) = addr_to_raw(spec.egress_source.ip());
    let (df, new_dst) = addr_to_raw(spec.peer.ip());
    if ef != kf || sf != kf || df != kf {
        return Err(RelayError::FamilyMismatch(local));
    }
    Ok(RawFlowValue {
        expected_src_addr: expected,
        expected_src_port: spec.expected_source.port().to_be(),
        policy: match spec.policy {
            SourcePolicy::Strict => POLICY_STRICT,
            SourcePolicy::Learn => POLICY_LEARN,
        },
        flags: 0,
        new_src_addr: new_src,
        new_dst_addr: new_dst,
        new_src_port: spec.egress_source.port().to_be(),
        new_dst_port: spec.peer.port().to_be(),
        egress_ifindex: spec.egress_ifindex,
        src_mac: spec.src_mac,
        dst_mac: spec.dst_mac,
        packets: 0,
        bytes: 0,
        last_seen_ns: 0,
    })
}

fn flow_entry(k: &RawFlowKey, v: &RawFlowValue) -> Option<FlowEntry> {
    let local = k.to_socket()?;
    let ip = |a: &[u8; 16]| crate::maps::addr_from_raw(k.family, a);
    Some(FlowEntry {
        local,
        spec: FlowSpec {
            expected_source: SocketAddr::new(
                ip(&v.expected_src_addr)?,
                u16::from_be(v.expected_src_port),
            ),
            policy: if v.policy == POLICY_LEARN {
                SourcePolicy::Learn
            } else {
                SourcePolicy::Strict
            },
            egress_source: SocketAddr::new(ip(&v.new_src_addr)?, u16::from_be(v.new_src_port)),
            peer: SocketAddr::new(ip(&v.new_dst_addr)?, u16::from_be(v.new_dst_port)),
            egress_ifindex: v.egress_ifindex,
            src_mac: v.src_mac,
            dst_mac: v.dst_mac,
        },
        counters: FlowCounters {
            packets: v.packets,
            bytes: v.bytes,
            last_seen_ns: v.last_seen_ns,
        },
    })
}

impl XdpRelay {
    /// Loads the embedded object and the relay program (not attached yet).
    /// Needs CAP_BPF/CAP_NET_ADMIN (root).
    pub fn load(opts: RelayOptions) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, opts.max_flows)
            .map_max_entries(BLOCKLIST, opts.max_blocklist)
            .load(RELAY_OBJECT)?;
        xdp_prog(&mut ebpf, RELAY_PROG)?
            .load()
            .map_err(|source| RelayError::Program {
                name: RELAY_PROG,
                source,
            })?;
        info!(max_flows = opts.max_flows, "XDP relay program loaded");
        Ok(Self {
            ebpf,
            attachments: Vec::new(),
            egress_only: Vec::new(),
            extra_loaded: Vec::new(),
        })
    }

    /// Attaches the relay to `ifname` (in the caller's network namespace; the
    /// interface index and the devmap entry are resolved there, so call it
    /// from the namespace that owns the interface).
    /// A stale Portcullis program left on the interface is removed first; a
    /// foreign XDP program is an error.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<AttachedMode> {
        let ifindex = ifindex_of(ifname)?;
        if let Some(a) = self.attachments.iter().find(|a| a.ifindex == ifindex) {
            return Ok(a.mode);
        }
        remove_stale(ifname, ifindex)?;
        // Redirect target for flows leaving through this interface.
        self.ensure_tx_port(ifindex)?;
        let tries: &[AttachedMode] = match mode {
            AttachMode::Auto => &[AttachedMode::Native, AttachedMode::Generic],
            AttachMode::Native => &[AttachedMode::Native],
            AttachMode::Generic => &[AttachedMode::Generic],
        };
        let prog = xdp_prog(&mut self.ebpf, RELAY_PROG)?;
        let mut reasons = Vec::new();
        for m in tries {
            match prog.attach_to_if_index(ifindex, m.xdp_mode()) {
                Ok(link) => {
                    info!(ifname, ifindex, mode = ?m, "XDP relay attached");
                    self.attachments.push(Attachment {
                        ifname: ifname.to_string(),
                        ifindex,
                        mode: *m,
                        link: Some(link),
                    });
                    return Ok(*m);
                }
                Err(e) => {
                    warn!(ifname, mode = ?m, error = %e, "XDP attach failed");
                    reasons.push(format!("{m:?}: {e}"));
                }
            }
        }
        Err(RelayError::Attach {
            ifname: ifname.to_string(),
            reason: reasons.join("; "),
        })
    }

    /// Interfaces the relay is attached to: (name, ifindex, mode).
    pub fn attachments(&self) -> Vec<(String, u32, AttachedMode)> {
        self.attachments
            .iter()
            .map(|a| (a.ifname.clone(), a.ifindex, a.mode))
            .collect()
    }

    /// Detaches the relay from `ifname`.
    pub fn detach(&mut self, ifname: &str) -> Result<()> {
        let pos = self
            .attachments
            .iter()
            .position(|a| a.ifname == ifname)
            .ok_or_else(|| RelayError::NotAttached(ifname.to_string()))?;
        let mut a = self.attachments.remove(pos);
        if !self.egress_only.contains(&a.ifindex) {
            self.remove_tx_port(a.ifindex);
        }
        if let Some(link) = a.link.take() {
            let owned = xdp_prog(&mut self.ebpf, RELAY_PROG)?
                .take_link(link)
                .map_err(|source| RelayError::Program {
                    name: RELAY_PROG,
                    source,
                })?;
            // Closing our fd alone is not enough when a forked child still
            // holds a copy: detach the link explicitly, then drop it.
            match FdLink::try_from(owned) {
                Ok(fd_link) => {
                    match fd_link.info() {
                        Ok(info) => {
                            if let Err(e) = detach_link_by_id(info.id()) {
                                warn!(ifname, error = %e, "explicit link detach failed; closing it");
                            }
                        }
                        Err(e) => warn!(ifname, error = %e, "link info unavailable; closing it"),
                    }
                    drop(fd_link);
                }
                // A netlink attachment (kernels without bpf_link for XDP):
                // dropping it detached it.
                Err(e) => debug!(ifname, error = %e, "netlink XDP attachment dropped"),
            }
        }
        info!(ifname, "XDP relay detached");
        Ok(())
    }

    /// Detaches from every interface; errors are logged.
    pub fn detach_all(&mut self) {
        let names: Vec<String> = self.attachments.iter().map(|a| a.ifname.clone()).collect();
        for n in names {
            if let Err(e) = self.detach(&n) {
                warn!(ifname = %n, error = %e, "XDP detach failed");
            }
        }
    }

    fn flows_map(&self) -> Result<HashMap<&MapData, RawFlowKey, RawFlowValue>> {
        let m = self.ebpf.map(FLOWS).ok_or(RelayError::MissingMap(FLOWS))?;
        HashMap::try_from(m).map_err(|source| RelayError::Map {
            name: FLOWS,
            source,
        })
    }

    fn flows_map_mut(&mut self) -> Result<HashMap<&mut MapData, RawFlowKey, RawFlowValue>> {
        let m = self
            .ebpf
            .map_mut(FLOWS)
            .ok_or(RelayError::MissingMap(FLOWS))?;
        HashMap::try_from(m).map_err(|source| RelayError::Map {
            name: FLOWS,
            source,
        })
    }

    fn check_egress(&self, local: SocketAddr, ifindex: u32) {
        if !self.attachments.iter().any(|a| a.ifindex == ifindex)
            && !self.egress_only.contains(&ifindex)
        {
            warn!(%local, ifindex, "flow egress interface is neither attached nor an egress interface: \
                 only packets arriving on that same interface are forwarded (XDP_TX), others are dropped");
        }
    }

    /// Registers `ifname` (in the caller's network namespace) as a redirect
    /// target without attaching the relay to it. Attached interfaces are
    /// registered automatically.
    pub fn add_egress_interface(&mut self, ifname: &str) -> Result<u32> {
        let ifindex = ifindex_of(ifname)?;
        self.ensure_tx_port(ifindex)?;
        if !self.egress_only.contains(&ifindex) {
            self.egress_only.push(ifindex);
        }
        Ok(ifindex)
    }

    /// Adds `ifindex` to the devmap. The kernel resolves it in the caller's
    /// network namespace, so this runs where the interface was looked up.
    fn ensure_tx_port(&mut self, ifindex: u32) -> Result<()> {
        let m = self
            .ebpf
            .map_mut(TX_PORTS)
            .ok_or(RelayError::MissingMap(TX_PORTS))?;
        let mut dm: DevMapHash<&mut MapData> =
            DevMapHash::try_from(m).map_err(|source| RelayError::Map {
                name: TX_PORTS,
                source,
            })?;
        if dm.get(ifindex, 0).is_ok() {
            return Ok(());
        }
        dm.insert(ifindex, ifindex, None, 0)
            .map_err(|source| RelayError::DevMap { ifindex, source })?;
        debug!(ifindex, "egress interface added to tx_ports");
        Ok(())
    }

    fn remove_tx_port(&mut self, ifindex: u32) {
        let Some(m) = self.ebpf.map_mut(TX_PORTS) else {
            return;
        };
        if let Ok(mut dm) = DevMapHash::<&mut MapData>::try_from(m) {
            if let Err(e) = dm.remove(ifindex) {
                debug!(ifindex, error = %e, "tx_ports entry not removed");
            }
        }
    }

    fn read_raw(&self, local: SocketAddr) -> Result<Option<RawFlowValue>> {
        match self.flows_map()?.get(&RawFlowKey::from_socket(local), 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(RelayError::Map {
                name: FLOWS,
                source,
            }),
        }
    }

    /// Installs a new flow for the local relay socket `local`; fails if one
    /// exists. Counters start at zero.
    pub fn insert_flow(&mut self, local: SocketAddr, spec: &FlowSpec) -> Result<()> {
        let v = flow_value(local, spec)?;
        self.check_egress(local, spec.egress_ifindex);
        match self
            .flows_map_mut()?
            .insert(RawFlowKey::from_socket(local), v, BPF_NOEXIST)
        {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                return Err(RelayError::FlowExists(local))
            }
            Err(source) => {
                return Err(RelayError::Map {
                    name: FLOWS,
                    source,
                })
            }
        }
        debug!(%local, peer = %spec.peer, "flow inserted");
        Ok(())
    }

    /// Replaces the rule of an existing flow, keeping its counters. Packets
    /// forwarded between the read of the counters and the write are not
    /// counted (the map has no atomic read-modify-write from userspace).
    pub fn update_flow(&mut self, local: SocketAddr, spec: &FlowSpec) -> Result<()> {
        let mut v = flow_value(local, spec)?;
        let old = self
            .read_raw(local)?
            .ok_or(RelayError::FlowNotFound(local))?;
        v.packets = old.packets;
        v.bytes = old.bytes;
        v.last_seen_ns = old.last_seen_ns;
        self.check_egress(local, spec.egress_ifindex);
        match self
            .flows_map_mut()?
            .insert(RawFlowKey::from_socket(local), v, BPF_EXIST)
        {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                return Err(RelayError::FlowNotFound(local))
            }
            Err(source) => {
                return Err(RelayError::Map {
                    name: FLOWS,
                    source,
                })
            }
        }
        debug!(%local, peer = %spec.peer, "flow updated");
        Ok(())
    }

    /// Removes a flow; packets to `local` go to the kernel stack from the next
    /// packet on. Returns its state as read just before the removal (packets
    /// forwarded in between are not in it), or `None` if there was no such flow.
    pub fn remove_flow(&mut self, local: SocketAddr) -> Result<Option<FlowEntry>> {
        let last = self.flow(local)?;
        match self
            .flows_map_mut()?
            .remove(&RawFlowKey::from_socket(local))
        {
            Ok(()) => {}
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(None)
            }
            Err(source) => {
                return Err(RelayError::Map {
                    name: FLOWS,
                    source,
                })
            }
        }
        debug!(%local, "flow removed");
        Ok(last)
    }

    /// One flow with its counters.
    pub fn flow(&self, local: SocketAddr) -> Result<Option<FlowEntry>> {
        let k = RawFlowKey::from_socket(local);
        Ok(self.read_raw(local)?.and_then(|v| flow_entry(&k, &v)))
    }

    /// Counters of one flow.
    pub fn flow_counters(&self, local: SocketAddr) -> Result<Option<FlowCounters>> {
        Ok(self.flow(local)?.map(|e| e.counters))
    }

    /// Every flow. Entries with a malformed key (not written by this API) are skipped.
    pub fn flows(&self) -> Result<Vec<FlowEntry>> {
        let map = self.flows_map()?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (k, v) = item.map_err(|source| RelayError::Map {
                name: FLOWS,
                source,
            })?;
            if let Some(e) = flow_entry(&k, &v) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Global counters by outcome, summed over CPUs.
    pub fn stats(&self) -> Result<RelayStats> {
        let m = self.ebpf.map(STATS).ok_or(RelayError::MissingMap(STATS))?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(m).map_err(|source| RelayError::Map {
                name: STATS,
                source,
            })?;
        let mut counts = [0u64; 13];
        for o in Outcome::ALL {
            let per_cpu = arr.get(&o.index(), 0).map_err(|source| RelayError::Map {
                name: STATS,
                source,
            })?;
            counts[o.index() as usize] = per_cpu.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(RelayStats::from_counts(counts))
    }

    fn set_blocklist_enabled(&mut self, enabled: bool) -> Result<()> {
        let m = self
            .ebpf
            .map_mut(CONFIG)
            .ok_or(RelayError::MissingMap(CONFIG))?;
        let mut arr: Array<&mut MapData, RawRelayConfig> =
            Array::try_from(m).map_err(|source| RelayError::Map {
                name: CONFIG,
                source,
            })?;
        let mut cfg = arr.get(&0, 0).map_err(|source| RelayError::Map {
            name: CONFIG,
            source,
        })?;
        cfg.blocklist_enabled = u32::from(enabled);
        arr.set(0, cfg, 0).map_err(|source| RelayError::Map {
            name: CONFIG,
            source,
        })
    }

    fn blocklist_map_mut(
        &mut self,
    ) -> Result<HashMap<&mut MapData, RawAddrKey, RawBlocklistValue>> {
        let m = self
            .ebpf
            .map_mut(BLOCKLIST)
            .ok_or(RelayError::MissingMap(BLOCKLIST))?;
        HashMap::try_from(m).map_err(|source| RelayError::Map {
            name: BLOCKLIST,
            source,
        })
    }

    /// Drops every IP packet from `ip` in XDP (any protocol, any port).
    pub fn block_source(&mut self, ip: IpAddr) -> Result<()> {
        self.blocklist_map_mut()?
            .insert(RawAddrKey::from_ip(ip), RawBlocklistValue::default(), 0)
            .map_err(|source| RelayError::Map {
                name: BLOCKLIST,
                source,
            })?;
        self.set_blocklist_enabled(true)?;
        info!(%ip, "source blocklisted in XDP");
        Ok(())
    }

    /// Removes `ip` from the blocklist; returns whether it was there.
    pub fn unblock_source(&mut self, ip: IpAddr) -> Result<bool> {
        let existed = match self.blocklist_map_mut()?.remove(&RawAddrKey::from_ip(ip)) {
            Ok(()) => true,
            Err(MapError::KeyNotFound) => false,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                false
            }
            Err(source) => {
                return Err(RelayError::Map {
                    name: BLOCKLIST,
                    source,
                })
            }
        };
        let empty = self.blocked_sources()?.is_empty();
        if empty {
            self.set_blocklist_enabled(false)?;
        }
        Ok(existed)
    }

    /// Blocklisted sources with their drop counters.
    pub fn blocked_sources(&self) -> Result<Vec<(IpAddr, u64)>> {
        let m = self
            .ebpf
            .map(BLOCKLIST)
            .ok_or(RelayError::MissingMap(BLOCKLIST))?;
        let map: HashMap<&MapData, RawAddrKey, RawBlocklistValue> =
            HashMap::try_from(m).map_err(|source| RelayError::Map {
                name: BLOCKLIST,
                source,
            })?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (k, v) = item.map_err(|source| RelayError::Map {
                name: BLOCKLIST,
                source,
            })?;
            if let Some(ip) = k.to_ip() {
                out.push((ip, v.drops));
            }
        }
        Ok(out)
    }

    /// Runs `program` once per `repeat` on `frame` with BPF_PROG_TEST_RUN
    /// (no interface needed). The relay's maps and counters are the live ones.
    pub fn test_run(
        &mut self,
        program: Program,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutput> {
        let name = match program {
            Program::Relay => RELAY_PROG,
            Program::Bound => BOUND_PROG,
            Program::Pass => PASS_PROG,
        };
        if program != Program::Relay && !self.extra_loaded.contains(&name) {
            xdp_prog(&mut self.ebpf, name)?
                .load()
                .map_err(|source| RelayError::Program { name, source })?;
            self.extra_loaded.push(name);
        }
        let prog = xdp_prog(&mut self.ebpf, name)?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: repeat.max(1),
            ..TestRunOptions::default()
        };
        let r = prog
            .test_run(opts)
            .map_err(|e| RelayError::TestRun(e.to_string()))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutput {
            action: r.return_value,
            frame: out,
            duration: r.duration,
        })
    }
}

impl Drop for XdpRelay {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Removes a Portcullis relay program left on `ifname` by an earlier process
/// (netlink-attached or held by a pinned bpf_link). Any other program is left
/// alone and reported as [`RelayError::ForeignProgram`].
fn remove_stale(ifname: &str, ifindex: u32) -> Result<()> {
    let att = netlink::xdp_attachment(ifindex).map_err(|source| RelayError::Netlink {
        ifname: ifname.to_string(),
        source,
    })?;
    for (prog_id, flags) in [
        (att.native_prog_id, XDP_FLAGS_DRV_MODE),
        (att.generic_prog_id, XDP_FLAGS_SKB_MODE),
    ] {
        let Some(prog_id) = prog_id else { continue };
        let name = program_name(prog_id).unwrap_or_default();
        if name != RELAY_PROG {
            return Err(RelayError::ForeignProgram {
                ifname: ifname.to_string(),
                prog_id,
                prog_name: name,
            });
        }
        warn!(ifname, prog_id, "removing stale Portcullis XDP program");
        match netlink::set_xdp_fd(ifindex, -1, flags) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // Attached through a bpf_link (pinned by someone).
                match detach_link_of_program(prog_id) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(RelayError::Stale {
                            ifname: ifname.to_string(),
                            prog_id,
                            reason: "netlink says busy and no link holds it".into(),
                        })
                    }
                    Err(reason) => {
                        return Err(RelayError::Stale {
                            ifname: ifname.to_string(),
                            prog_id,
                            reason,
                        })
                    }
                }
            }
            Err(e) => {
                return Err(RelayError::Stale {
                    ifname: ifname.to_string(),
                    prog_id,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// The trivial XDP_PASS program attached to one interface (for the far end of
/// a veth pair, whose frames sent by XDP_TX/XDP_REDIRECT are only delivered if
/// that end runs XDP). Detached on drop.
pub struct PassProgram {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    ifname: String,
}

impl std::fmt::Debug for PassProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassProgram")
            .field("ifname", &self.ifname)
            .finish_non_exhaustive()
    }
}

impl PassProgram {
    /// Loads and attaches the pass program to `ifname` in native mode
    /// (generic if `generic`), in the caller's network namespace.
    pub fn attach(ifname: &str, generic: bool) -> Result<Self> {
        let ifindex = ifindex_of(ifname)?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, 1)
            .map_max_entries(BLOCKLIST, 1)
            .load(RELAY_OBJECT)?;
        let prog = xdp_prog(&mut ebpf, PASS_PROG)?;
        prog.load().map_err(|source| RelayError::Program {
            name: PASS_PROG,
            source,
        })?;
        let mode = if generic {
            XdpMode::Skb
        } else {
            XdpMode::Driver
        };
        let link = prog
            .attach_to_if_index(ifindex, mode)
            .map_err(|e| RelayError::Attach {
                ifname: ifname.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            ebpf,
            link: Some(link),
            ifname: ifname.to_string(),
        })
    }
}

impl Drop for PassProgram {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            if let Ok(p) = xdp_prog(&mut self.ebpf, PASS_PROG) {
                if let Err(e) = p.detach(link) {
                    warn!(ifname = %self.ifname, error = %e, "detaching pass program failed");
                }
            }
        }
    }
}

/// XDP programs attached to `ifname` in the caller's network namespace, as
/// reported by the kernel over netlink.
pub fn xdp_attachment(ifname: &str) -> Result<netlink::XdpAttachment> {
    let ifindex = ifindex_of(ifname)?;
    netlink::xdp_attachment(ifindex).map_err(|source| RelayError::Netlink {
        ifname: ifname.to_string(),
        source,
    })
}

/// Attaches the relay program of `relay`'s object to `ifname` through plain
/// netlink, without a bpf_link, so it outlives the process: this is how a
/// "stale" program looks to the next start. For tests of stale cleanup only.
#[doc(hidden)]
pub fn attach_detached_copy_for_tests(ifname: &str, generic: bool) -> Result<u32> {
    use std::os::fd::{AsFd, AsRawFd};
    let ifindex = ifindex_of(ifname)?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(FLOWS, 1)
        .map_max_entries(BLOCKLIST, 1)
        .load(RELAY_OBJECT)?;
    let prog = xdp_prog(&mut ebpf, RELAY_PROG)?;
    prog.load().map_err(|source| RelayError::Program {
        name: RELAY_PROG,
        source,
    })?;
    let fd = prog.fd().map_err(|source| RelayError::Program {
        name: RELAY_PROG,
        source,
    })?;
    let flags = if generic {
        XDP_FLAGS_SKB_MODE
    } else {
        XDP_FLAGS_DRV_MODE
    };
    netlink::set_xdp_fd(ifindex, fd.as_fd().as_raw_fd(), flags).map_err(|source| {
        RelayError::Netlink {
            ifname: ifname.to_string(),
            source,
        }
    })?;
    Ok(ifindex)
}
