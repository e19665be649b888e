//! Memory held for cached registrations (issue: SBC signalling, benchmark): 100,000
//! registrations in the upstream-registration cache (flow, client Contact, token) and, for
//! comparison, in the standalone registrar's location store. Heap bytes are counted with a
//! counting global allocator.
//!
//! Run: `cargo run --release -p sbc-daemon --example registration_memory [count]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use sbc_daemon::registrar::location::{ContactUpdate, LocationStore};
use sbc_daemon::registrar::upstream::RegistrationCache;
use sbc_daemon::transport::{ListenerId, Source, Transport};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded to the system allocator with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn flow(i: u32) -> Source {
    Source {
        listener: ListenerId(0),
        transport: Transport::Udp,
        remote: SocketAddr::new(
            Ipv4Addr::from(0xCB00_7100u32 + (i >> 16)).into(),
            1024 + (i & 0xffff) as u16 % 60000,
        ),
        conn: None,
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let now = Instant::now();

    let before = LIVE.load(Ordering::Relaxed);
    let mut cache = RegistrationCache::default();
    for i in 0..n {
        let aor = format!("user{i}@voip.example.com");
        let contact = format!(
            "sip:user{i}@192.168.{}.{}:5060;transport=udp",
            (i >> 8) & 0xff,
            i & 0xff
        );
        let tok = cache.token_for(
            now,
            &aor,
            &contact,
            ";+sip.instance=\"<urn:uuid:0000>\"",
            flow(i),
            &format!("{i:08x}-reg@192.168.1.1"),
        );
        cache.confirm(now, &tok, 3600, 60);
    }
    let cache_bytes = LIVE.load(Ordering::Relaxed) - before;

    let before = LIVE.load(Ordering::Relaxed);
    let mut store = LocationStore::new(10);
    for i in 0..n {
        let c = ContactUpdate {
            uri: format!(
                "sip:user{i}@192.168.{}.{}:5060;transport=udp",
                (i >> 8) & 0xff,
                i & 0xff
            ),
            params: ";+sip.instance=\"<urn:uuid:0000>\"".to_string(),
            expires: 3600,
            nated: true,
        };
        let _ = store.update(
            now,
            &format!("user{i}"),
            &format!("{i:08x}-reg@192.168.1.1"),
            1,
            flow(i),
            &[c],
        );
    }
    let store_bytes = LIVE.load(Ordering::Relaxed) - before;

    let mb = |b: isize| b as f64 / (1024.0 * 1024.0);
    println!("registrations: {n}");
    println!(
        "upstream registration cache (throttling): {:8.1} MiB ({} bytes each)",
        mb(cache_bytes),
        cache_bytes / n as isize
    );
    println!(
        "standalone location store:                {:8.1} MiB ({} bytes each)",
        mb(store_bytes),
        store_bytes / n as isize
    );
    println!("goal: <= 100 MB for 100,000 cached registrations");
    assert_eq!(cache.len(), n as usize);
    assert_eq!(store.len(), n as usize);
}
