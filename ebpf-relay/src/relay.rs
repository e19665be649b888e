//! Loader and typed API of the XDP relay.

use std::collections::{HashMap as StdHashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aya::maps::xdp::{DevMapHash, XdpMapError};
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use aya::programs::links::FdLink;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use tracing::{debug, info, warn};

use crate::index::{FlowIndex, FAST_INDEX};
use crate::maps::{
    addr_to_raw, csum_deltas, RawAddrKey, RawBlocklistValue, RawFlowCounters, RawFlowKey,
    RawFlowSlot, RawFlowValue, RawRelayConfig, FLOW_F_SRC_BLOCKED, POLICY_LEARN, POLICY_STRICT,
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
/// Name of the program that starts the relay clock (a BPF timer storing the
/// coarse monotonic time every 4 ms, read by the relay for `last_seen_ns`).
pub const CLOCK_PROG: &str = "portcullis_clk";

const FLOWS: &str = "flows";
const FLOW_INDEX: &str = "flow_index";
const FLOW_COUNTERS: &str = "flow_counters";
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
    /// Mapping the `flow_index` array into memory failed.
    #[error("mmap of the flow index: {0}")]
    Mmap(#[source] io::Error),
    /// `insert_flow` with `max_flows` flows installed.
    #[error("flow table full ({0} flows)")]
    FlowTableFull(u32),
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
    /// CLOCK_MONOTONIC (coarse: `bpf_ktime_get_coarse_ns` sampled every 4 ms
    /// by a BPF timer, so at most ~8 ms behind) of the last forwarded packet,
    /// 0 if none.
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
    /// The mmap()ed port-indexed copy of the flow map (see `index.rs`).
    index: FlowIndex,
    /// Counter slot of every installed flow.
    slots: StdHashMap<RawFlowKey, u32>,
    /// Free counter slots, reused oldest first.
    free_slots: VecDeque<u32>,
    /// Flow occupying each port's index slot.
    port_owner: StdHashMap<u16, RawFlowKey>,
    /// Other flows with that port (only in the hash map).
    port_others: StdHashMap<u16, Vec<RawFlowKey>>,
    max_flows: u32,
    /// Mirror of the blocklist map's keys (flows from these get FLOW_F_SRC_BLOCKED).
    blocked: HashSet<RawAddrKey>,
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

/// Loads and runs `portcullis_clk` once: it arms the BPF timer that keeps the
/// relay clock (`relay_clock` map) current. The timer stops when the map is
/// freed, i.e. when the relay is dropped.
fn start_clock(ebpf: &mut Ebpf) -> Result<()> {
    let prog = xdp_prog(ebpf, CLOCK_PROG)?;
    prog.load().map_err(|source| RelayError::Program {
        name: CLOCK_PROG,
        source,
    })?;
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .map_err(|e| RelayError::TestRun(format!("{CLOCK_PROG}: {e}")))?;
    if r.return_value != action::PASS {
        return Err(RelayError::TestRun(format!(
            "{CLOCK_PROG} could not start the relay clock timer (action {})",
            r.return_value
        )));
    }
    Ok(())
}

fn prog_run_stats(ebpf: &Ebpf, name: &'static str) -> Result<(Duration, u64)> {
    let prog = ebpf.program(name).ok_or(RelayError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    let xdp: &Xdp = prog
        .try_into()
        .map_err(|source| RelayError::Program { name, source })?;
    let info = xdp
        .info()
        .map_err(|source| RelayError::Program { name, source })?;
    Ok((info.run_time(), info.run_count()))
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

fn flow_value(local: SocketAddr, spec: &FlowSpec, slot: u32) -> Result<RawFlowValue> {
    let (kf, local_addr) = addr_to_raw(local.ip());
    let (ef, expected) = addr_to_raw(spec.expected_source.ip());
    let (sf, new_src) = addr_to_raw(spec.egress_source.ip());
    let (df, new_dst) = addr_to_raw(spec.peer.ip());
    if ef != kf || sf != kf || df != kf {
        return Err(RelayError::FamilyMismatch(local));
    }
    let n = if kf == crate::maps::FAMILY_INET {
        4
    } else {
        16
    };
    // A forwarded packet comes from the expected source to `local`: the
    // checksum deltas of its rewrite are fixed per flow.
    let (csum_ip, csum_udp) = csum_deltas(
        &expected[..n],
        &local_addr[..n],
        &new_src[..n],
        &new_dst[..n],
        [spec.expected_source.port().to_be(), local.port().to_be()],
        [spec.egress_source.port().to_be(), spec.peer.port().to_be()],
    );
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
        slot,
        csum_ip,
        csum_udp,
    })
}

fn flow_entry(k: &RawFlowKey, v: &RawFlowValue, counters: FlowCounters) -> Option<FlowEntry> {
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
        counters,
    })
}

impl XdpRelay {
    /// Loads the embedded object and the relay program (not attached yet).
    /// Needs CAP_BPF/CAP_NET_ADMIN (root).
    pub fn load(opts: RelayOptions) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, opts.max_flows)
            .map_max_entries(FLOW_COUNTERS, opts.max_flows)
            .map_max_entries(BLOCKLIST, opts.max_blocklist)
            .load(RELAY_OBJECT)?;
        start_clock(&mut ebpf)?;
        let index = match ebpf.map(FLOW_INDEX) {
            Some(Map::Array(md)) => FlowIndex::map(md.fd()).map_err(RelayError::Mmap)?,
            Some(_) | None => return Err(RelayError::MissingMap(FLOW_INDEX)),
        };
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
            index,
            slots: StdHashMap::new(),
            free_slots: (0..opts.max_flows).collect(),
            port_owner: StdHashMap::new(),
            port_others: StdHashMap::new(),
            max_flows: opts.max_flows,
            blocked: HashSet::new(),
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

    fn counters_map(&self) -> Result<PerCpuArray<&MapData, RawFlowCounters>> {
        let m = self
            .ebpf
            .map(FLOW_COUNTERS)
            .ok_or(RelayError::MissingMap(FLOW_COUNTERS))?;
        PerCpuArray::try_from(m).map_err(|source| RelayError::Map {
            name: FLOW_COUNTERS,
            source,
        })
    }

    /// Counters of counter slot `slot`, summed over CPUs (last seen: the latest).
    fn read_counters(&self, slot: u32) -> Result<FlowCounters> {
        let per_cpu = self
            .counters_map()?
            .get(&slot, 0)
            .map_err(|source| RelayError::Map {
                name: FLOW_COUNTERS,
                source,
            })?;
        Ok(per_cpu
            .iter()
            .fold(FlowCounters::default(), |acc, c| FlowCounters {
                packets: acc.packets.wrapping_add(c.packets),
                bytes: acc.bytes.wrapping_add(c.bytes),
                last_seen_ns: acc.last_seen_ns.max(c.last_seen_ns),
            }))
    }

    fn zero_counters(&mut self, slot: u32) -> Result<()> {
        let map_err = |source| RelayError::Map {
            name: FLOW_COUNTERS,
            source,
        };
        let syscall = |call, io_error| {
            map_err(MapError::SyscallError(aya::sys::SyscallError {
                call,
                io_error,
            }))
        };
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| syscall("nr_cpus", e))?;
        let zeros = PerCpuValues::try_from(vec![RawFlowCounters::default(); ncpu])
            .map_err(|e| syscall("per-cpu values", e))?;
        let m = self
            .ebpf
            .map_mut(FLOW_COUNTERS)
            .ok_or(RelayError::MissingMap(FLOW_COUNTERS))?;
        let mut arr: PerCpuArray<&mut MapData, RawFlowCounters> =
            PerCpuArray::try_from(m).map_err(map_err)?;
        arr.set(slot, zeros, 0).map_err(map_err)
    }

    /// Puts `key` (already in the hash map with value `v`) in its port's
    /// index slot if the slot is free, else records it as a hash-only flow.
    fn index_add(&mut self, key: RawFlowKey, v: RawFlowValue) {
        let port = u16::from_be(key.port);
        if FAST_INDEX && !self.port_owner.contains_key(&port) {
            let others = self.port_others.get(&port).is_some_and(|o| !o.is_empty());
            self.index.set(port, key.family, key.addr, v, others);
            self.port_owner.insert(port, key);
        } else {
            self.port_others.entry(port).or_default().push(key);
            self.index.set_others(port, true);
        }
    }

    /// Takes `key` out of the index before its removal from the hash map; a
    /// hash-only flow with the same port takes the slot.
    fn index_remove(&mut self, key: RawFlowKey) -> Result<()> {
        let port = u16::from_be(key.port);
        if self.port_owner.get(&port) == Some(&key) {
            self.port_owner.remove(&port);
            let next = self.port_others.get_mut(&port).and_then(|o| o.pop());
            let others = self.port_others.get(&port).is_some_and(|o| !o.is_empty());
            match next {
                Some(k) => match self.read_raw_key(&k)? {
                    Some(v) => {
                        self.index.set(port, k.family, k.addr, v, others);
                        self.port_owner.insert(port, k);
                    }
                    None => self.index.clear(port, others),
                },
                None => self.index.clear(port, others),
            }
        } else if let Some(o) = self.port_others.get_mut(&port) {
            o.retain(|k| *k != key);
            if o.is_empty() {
                self.port_others.remove(&port);
                self.index.set_others(port, false);
            }
        }
        Ok(())
    }

    fn read_raw_key(&self, key: &RawFlowKey) -> Result<Option<RawFlowValue>> {
        match self.flows_map()?.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(RelayError::Map {
                name: FLOWS,
                source,
            }),
        }
    }

    fn with_block_flag(&self, mut v: RawFlowValue, spec: &FlowSpec) -> RawFlowValue {
        if self
            .blocked
            .contains(&RawAddrKey::from_ip(spec.expected_source.ip()))
        {
            v.flags |= FLOW_F_SRC_BLOCKED;
        }
        v
    }

    /// Sets (`on`) or clears FLOW_F_SRC_BLOCKED on every flow expecting
    /// source `ip`, in the hash map and in its index slot.
    fn set_block_flag(&mut self, ip: IpAddr, on: bool) -> Result<()> {
        let (family, addr) = addr_to_raw(ip);
        let mut hits = Vec::new();
        for item in self.flows_map()?.iter() {
            let (k, v) = item.map_err(|source| RelayError::Map {
                name: FLOWS,
                source,
            })?;
            if k.family == family && v.expected_src_addr == addr {
                hits.push((k, v));
            }
        }
        for (k, mut v) in hits {
            if on {
                v.flags |= FLOW_F_SRC_BLOCKED;
            } else {
                v.flags &= !FLOW_F_SRC_BLOCKED;
            }
            self.flows_map_mut()?
                .insert(k, v, BPF_EXIST)
                .map_err(|source| RelayError::Map {
                    name: FLOWS,
                    source,
                })?;
            let port = u16::from_be(k.port);
            if self.port_owner.get(&port) == Some(&k) {
                let others = self.port_others.get(&port).is_some_and(|o| !o.is_empty());
                self.index.set(port, k.family, k.addr, v, others);
            }
        }
        Ok(())
    }

    /// The port-indexed slot the program reads for `port` (diagnostics, tests).
    pub fn index_slot(&self, port: u16) -> RawFlowSlot {
        self.index.read(port)
    }

    /// Test hook: leaves the slot of `port` as a writer interrupted in the
    /// middle would (odd sequence number, flow fields zeroed) or restores it
    /// from the flow map (`busy == false`). The program must then take the
    /// flow from the hash map.
    #[doc(hidden)]
    pub fn simulate_torn_slot(&mut self, port: u16, busy: bool) -> Result<()> {
        if busy {
            self.index.simulate_torn(port);
            return Ok(());
        }
        let others = self.port_others.get(&port).is_some_and(|o| !o.is_empty());
        match self.port_owner.get(&port).copied() {
            Some(k) => match self.read_raw_key(&k)? {
                Some(v) => self.index.set(port, k.family, k.addr, v, others),
                None => self.index.clear(port, others),
            },
            None => self.index.clear(port, others),
        }
        Ok(())
    }

    /// Installs a new flow for the local relay socket `local`; fails if one
    /// exists. Counters start at zero.
    pub fn insert_flow(&mut self, local: SocketAddr, spec: &FlowSpec) -> Result<()> {
        let key = RawFlowKey::from_socket(local);
        flow_value(local, spec, 0)?;
        if self.slots.contains_key(&key) {
            return Err(RelayError::FlowExists(local));
        }
        let slot = self
            .free_slots
            .pop_front()
            .ok_or(RelayError::FlowTableFull(self.max_flows))?;
        let v = self.with_block_flag(flow_value(local, spec, slot)?, spec);
        self.check_egress(local, spec.egress_ifindex);
        let res = self.zero_counters(slot).and_then(|()| {
            match self.flows_map_mut()?.insert(key, v, BPF_NOEXIST) {
                Ok(()) => Ok(()),
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
                {
                    Err(RelayError::FlowExists(local))
                }
                Err(source) => Err(RelayError::Map {
                    name: FLOWS,
                    source,
                }),
            }
        });
        if let Err(e) = res {
            self.free_slots.push_front(slot);
            return Err(e);
        }
        self.slots.insert(key, slot);
        self.index_add(key, v);
        debug!(%local, peer = %spec.peer, slot, "flow inserted");
        Ok(())
    }

    /// Replaces the rule of an existing flow, keeping its counters (they are
    /// separate from the rule: nothing forwarded meanwhile is lost).
    pub fn update_flow(&mut self, local: SocketAddr, spec: &FlowSpec) -> Result<()> {
        let key = RawFlowKey::from_socket(local);
        let slot = *self
            .slots
            .get(&key)
            .ok_or(RelayError::FlowNotFound(local))?;
        let v = self.with_block_flag(flow_value(local, spec, slot)?, spec);
        self.check_egress(local, spec.egress_ifindex);
        // Hash first: while the slot is rewritten the program reads the hash.
        match self.flows_map_mut()?.insert(key, v, BPF_EXIST) {
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
        let port = u16::from_be(key.port);
        if self.port_owner.get(&port) == Some(&key) {
            let others = self.port_others.get(&port).is_some_and(|o| !o.is_empty());
            self.index.set(port, key.family, key.addr, v, others);
        }
        debug!(%local, peer = %spec.peer, "flow updated");
        Ok(())
    }

    /// Removes a flow; packets to `local` go to the kernel stack from the next
    /// packet on. Returns its state as read just before the removal (packets
    /// forwarded in between are not in it), or `None` if there was no such flow.
    pub fn remove_flow(&mut self, local: SocketAddr) -> Result<Option<FlowEntry>> {
        let key = RawFlowKey::from_socket(local);
        let Some(&slot) = self.slots.get(&key) else {
            return Ok(None);
        };
        let last = self.flow(local)?;
        // Index first: once the slot no longer holds the flow the program
        // asks the hash map, from which it is removed next.
        self.index_remove(key)?;
        match self.flows_map_mut()?.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => {
                return Err(RelayError::Map {
                    name: FLOWS,
                    source,
                })
            }
        }
        self.slots.remove(&key);
        // Reused last: a packet still in flight for this flow cannot count
        // into a new flow's fresh counters in practice.
        self.free_slots.push_back(slot);
        debug!(%local, "flow removed");
        Ok(last)
    }

    /// One flow with its counters.
    pub fn flow(&self, local: SocketAddr) -> Result<Option<FlowEntry>> {
        let k = RawFlowKey::from_socket(local);
        let Some(v) = self.read_raw_key(&k)? else {
            return Ok(None);
        };
        let c = self.read_counters(v.slot)?;
        Ok(flow_entry(&k, &v, c))
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
            let c = self.read_counters(v.slot)?;
            if let Some(e) = flow_entry(&k, &v, c) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Cumulative run time and run count of the relay program as kept by the
    /// kernel; they only advance while BPF statistics are enabled
    /// (`aya::sys::enable_stats` or the `kernel.bpf_stats_enabled` sysctl).
    pub fn program_run_stats(&self) -> Result<(Duration, u64)> {
        prog_run_stats(&self.ebpf, RELAY_PROG)
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
        // Flows expecting `ip` are flagged before the address is listed, so
        // the program never forwards from a listed source without looking.
        self.blocked.insert(RawAddrKey::from_ip(ip));
        self.set_block_flag(ip, true)?;
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
        // Unflagged only once the address is out of the map.
        self.blocked.remove(&RawAddrKey::from_ip(ip));
        self.set_block_flag(ip, false)?;
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
        // The object's maps are all created; keep the relay's small here.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, 1)
            .map_max_entries(FLOW_COUNTERS, 1)
            .map_max_entries(FLOW_INDEX, 1)
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

    /// Cumulative run time and run count of this pass program (they advance
    /// only while BPF statistics are enabled): the cost of a trivial program
    /// plus that of the statistics themselves.
    pub fn run_stats(&self) -> Result<(Duration, u64)> {
        prog_run_stats(&self.ebpf, PASS_PROG)
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
