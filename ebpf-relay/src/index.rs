//! Userspace side of the `flow_index` array: a direct-mapped (by local UDP
//! port) copy of the flow map that the XDP program reads with an inlined array
//! lookup instead of a hash lookup.
//!
//! The array is `BPF_F_MMAPABLE` and written here through a shared mapping
//! with a sequence lock: `seq` odd while a slot is written, the body written
//! in between, then `seq` even again. The program copies a slot only between
//! two equal, even reads of `seq` and otherwise looks the flow up in the
//! `flows` hash map, which this crate always updates first (insert, update)
//! or last (remove), so a packet never sees a torn rule.
//!
//! The reader in BPF has only compiler barriers between its loads; that is a
//! correct seqlock reader where loads are not reordered with each other (x86
//! TSO). Elsewhere the slots are never filled: every flow stays hash-only
//! (`SLOT_F_HASH`), same semantics at the hash lookup's cost.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use crate::maps::{RawFlowSlot, RawFlowValue, PORT_SLOTS, SLOT_F_HASH};

/// Whether slots carry flows on this architecture (see the module docs).
pub(crate) const FAST_INDEX: bool = cfg!(target_arch = "x86_64");

const SLOT_SIZE: usize = std::mem::size_of::<RawFlowSlot>();
const LEN: usize = PORT_SLOTS as usize * SLOT_SIZE;

/// The mmap()ed `flow_index` array. Only this process writes it (one writer:
/// methods take `&mut self`).
pub(crate) struct FlowIndex {
    base: *mut RawFlowSlot,
}

// SAFETY: the mapping is owned by this value and only written through
// `&mut self`; the kernel side only reads it.
unsafe impl Send for FlowIndex {}
// SAFETY: `&self` gives no access to the mapping.
unsafe impl Sync for FlowIndex {}

impl FlowIndex {
    /// Maps the array behind `fd` (created with BPF_F_MMAPABLE and
    /// `PORT_SLOTS` entries of `struct flow_slot`).
    pub(crate) fn map(fd: impl AsFd) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's data, of exactly the
        // array's size (a multiple of the page size is not needed by mmap).
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: p.cast::<RawFlowSlot>(),
        })
    }

    fn slot(&self, port: u16) -> *mut RawFlowSlot {
        // SAFETY: port < PORT_SLOTS (65536), inside the mapping.
        unsafe { self.base.add(usize::from(port)) }
    }

    /// Reads slot `port` (for tests and diagnostics).
    pub(crate) fn read(&self, port: u16) -> RawFlowSlot {
        // SAFETY: inside the mapping; a racing reader is impossible (one
        // writer, `&self`), the kernel never writes.
        unsafe { ptr::read_volatile(self.slot(port)) }
    }

    /// Writes slot `port` under the sequence lock.
    fn write(&mut self, port: u16, family: u8, flags: u8, local_addr: [u8; 16], v: RawFlowValue) {
        let slot = self.slot(port);
        // SAFETY: `seq` is the first, 4-byte aligned field of the slot,
        // inside the mapping; AtomicU32 has the layout of u32.
        let seq = unsafe { &*ptr::addr_of_mut!((*slot).seq).cast::<AtomicU32>() };
        let odd = seq.load(Ordering::Relaxed) | 1;
        seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: field pointers inside the mapping; volatile so that every
        // store is emitted between the two fences.
        unsafe {
            ptr::write_volatile(ptr::addr_of_mut!((*slot).family), family);
            ptr::write_volatile(ptr::addr_of_mut!((*slot).flags), flags);
            ptr::write_volatile(ptr::addr_of_mut!((*slot).pad), [0; 2]);
            ptr::write_volatile(ptr::addr_of_mut!((*slot).local_addr), local_addr);
            ptr::write_volatile(ptr::addr_of_mut!((*slot).v), v);
        }
        fence(Ordering::Release);
        seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Puts a flow in slot `port`. `others`: more flows with this port are
    /// only in the hash map.
    pub(crate) fn set(
        &mut self,
        port: u16,
        family: u8,
        addr: [u8; 16],
        v: RawFlowValue,
        others: bool,
    ) {
        let flags = if others { SLOT_F_HASH } else { 0 };
        self.write(port, family, flags, addr, v);
    }

    /// Empties slot `port`; `others`: flows with this port remain in the hash map.
    pub(crate) fn clear(&mut self, port: u16, others: bool) {
        let flags = if others { SLOT_F_HASH } else { 0 };
        self.write(port, 0, flags, [0; 16], RawFlowValue::default());
    }

    /// Test hook: the state of a slot whose writer stopped half-way (odd
    /// sequence number, body partly overwritten).
    pub(crate) fn simulate_torn(&mut self, port: u16) {
        let slot = self.slot(port);
        // SAFETY: as in `write`.
        let seq = unsafe { &*ptr::addr_of_mut!((*slot).seq).cast::<AtomicU32>() };
        seq.store(seq.load(Ordering::Relaxed) | 1, Ordering::Release);
        // SAFETY: field pointer inside the mapping.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*slot).v), RawFlowValue::default()) };
    }

    /// Sets or clears SLOT_F_HASH, keeping the slot's flow.
    pub(crate) fn set_others(&mut self, port: u16, others: bool) {
        let cur = self.read(port);
        let flags = if others { SLOT_F_HASH } else { 0 };
        if cur.flags != flags {
            self.write(port, cur.family, flags, cur.local_addr, cur.v);
        }
    }
}

impl Drop for FlowIndex {
    fn drop(&mut self) {
        // SAFETY: the mapping created in `map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), LEN) };
    }
}
