//! Helpers of the privileged datapath tests (root guard, and the netns topology
//! of ebpf-relay's tests, shared through a path module).
#![allow(dead_code)]

// The netns topology helper of the XDP relay tests, shared rather than copied.
#[path = "../../../ebpf-relay/tests/common/netns.rs"]
pub mod netns;

/// Returns true if the test may run. Not root: panics with a clear message,
/// unless PORTCULLIS_SKIP_PRIVILEGED=1, in which case prints a loud SKIPPED
/// line and returns false.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var("PORTCULLIS_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: needs root (XDP, netns); PORTCULLIS_SKIP_PRIVILEGED=1 ***"
        );
        return false;
    }
    panic!(
        "{test} needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces). Run as root, or set \
         PORTCULLIS_SKIP_PRIVILEGED=1 to skip privileged tests explicitly."
    );
}

/// An RTP packet (G.711, 160 bytes of payload).
pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5u8, 160));
    p
}
