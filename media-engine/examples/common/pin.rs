//! `--pin` for the relay benchmarks: the relay under test (our `relay-*` worker threads, or
//! every thread of rtpengine) runs on the last CPU, the load (generator, receivers, echo: the
//! rest of the benchmark process) on the others, the same for every relay and round.
//!
//! Unpinned, where a thread runs is the scheduler's choice of the moment, and on this 2-vCPU
//! VM the cost of a datagram moves with it: waking a receiver on the same CPU is a queue
//! insertion, on the other an inter-processor interrupt (a VM exit here), charged to whoever
//! sent the datagram. rtpengine measured 6.4 and 10.9 us per packet for the same loopback load
//! in two runs an hour apart; pinned, both relays always pay the cross-CPU wake-up, as a
//! relay does whose peers are other hosts.

use std::io;

/// Which CPUs the relay and the load get.
#[derive(Clone, Debug)]
pub struct Placement {
    pub relay: usize,
    pub load: Vec<usize>,
}

impl Placement {
    /// The last CPU this process may use for the relay, the others for the load.
    pub fn new() -> io::Result<Placement> {
        let mine = affinity(0)?;
        let Some((&relay, load)) = mine.split_last() else {
            return Err(io::Error::other("no CPU in this process's affinity mask"));
        };
        if load.is_empty() {
            return Err(io::Error::other(
                "--pin needs at least 2 CPUs (one for the relay, one for the load)",
            ));
        }
        Ok(Placement {
            relay,
            load: load.to_vec(),
        })
    }

    /// Pins the calling thread to the load CPUs; threads and processes it starts later
    /// inherit that (the relay's are moved by [`Placement::pin_relay`]).
    pub fn pin_self_to_load(&self) -> io::Result<()> {
        set_affinity(0, &self.load)
    }

    /// Pins the threads of process `pid` whose name starts with one of `prefixes` (every
    /// thread when empty) to the relay CPU; returns how many. Threads they start later
    /// inherit it.
    pub fn pin_relay(&self, pid: u32, prefixes: &[&str]) -> io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let e = e?;
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if !prefixes.is_empty() {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if !prefixes.iter().any(|p| comm.starts_with(p)) {
                    continue;
                }
            }
            match set_affinity(tid, &[self.relay]) {
                Ok(()) => n += 1,
                // The thread ended meanwhile.
                Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(n)
    }

    pub fn describe(&self) -> String {
        let load: Vec<String> = self.load.iter().map(usize::to_string).collect();
        format!(
            "relay on CPU {}, load on CPU {}",
            self.relay,
            load.join(",")
        )
    }
}

/// The CPUs thread `tid` (0: the calling thread) may run on, ascending.
fn affinity(tid: i32) -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the size of `set`, which the kernel fills.
    let rc =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads `set` in bounds for any index below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

fn set_affinity(tid: i32, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as in `affinity`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: CPU_SET ignores indices beyond the set (ours come from the kernel).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the size passed is the size of `set`.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
