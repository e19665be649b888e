//! Records the versions of the TLS and DTLS libraries this build links, from the workspace's
//! Cargo.lock, for the `sbc_build_info` metric (S-35). A lock file that cannot be read gives
//! "unknown", never a failed build.

use std::path::Path;

fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            let v = lines.next()?.trim();
            return v
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string);
        }
    }
    None
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lock_path = Path::new(&manifest).join("..").join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    for (var, krate) in [
        ("PORTCULLIS_RUSTLS_VERSION", "rustls"),
        ("PORTCULLIS_DTLS_VERSION", "rtc-dtls"),
    ] {
        let v = locked_version(&lock, krate).unwrap_or_else(|| "unknown".into());
        println!("cargo:rustc-env={var}={v}");
    }
}
