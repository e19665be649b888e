//! Compiles the XDP program (bpf/relay.bpf.c) with clang and probes the C layout
//! of the shared map types (bpf/layout.c) so the Rust mirror can be tested
//! against it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL_HINT: &str = "install the Debian packages `clang`, `llvm` and `libbpf-dev` \
     (apt-get install clang llvm libbpf-dev linux-libc-dev), or point $CLANG at a clang binary";

fn fail(msg: &str) -> ! {
    panic!("\n\nebpf-relay build error: {msg}\n  -> {INSTALL_HINT}\n\n");
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    let bpf_dir = manifest.join("bpf");
    for f in ["relay.bpf.c", "relay.h", "layout.c"] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(_) | Err(_) => fail(&format!("`{clang}` (clang) was not found or does not run")),
    }

    // libbpf headers (bpf_helpers.h) and the asm/ headers of linux-libc-dev.
    let include_dirs = ["/usr/include", "/usr/local/include"];
    if !include_dirs
        .iter()
        .any(|d| Path::new(d).join("bpf/bpf_helpers.h").exists())
    {
        fail("<bpf/bpf_helpers.h> not found (package libbpf-dev)");
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => fail(&format!("unsupported target arch {other}")),
    };
    let asm_dir = format!("/usr/include/{multiarch}");
    if !Path::new(&asm_dir).join("asm/types.h").exists()
        && !Path::new("/usr/include/asm/types.h").exists()
    {
        fail("<asm/types.h> not found (package linux-libc-dev)");
    }

    let obj = out.join("relay.bpf.o");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{asm_dir}"))
        .arg("-c")
        .arg(bpf_dir.join("relay.bpf.c"))
        .arg("-o")
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile bpf/relay.bpf.c ({s}); see the messages above"),
        Err(e) => fail(&format!("could not run `{clang}`: {e}")),
    }

    // Layout probe: compile layout.c for the host, run it, keep its output.
    let probe = out.join("layout-probe");
    let status = Command::new(&clang)
        .args(["-O0", "-Wall", "-Werror"])
        .arg(bpf_dir.join("layout.c"))
        .arg("-o")
        .arg(&probe)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile bpf/layout.c ({s})"),
        Err(e) => fail(&format!("could not run `{clang}`: {e}")),
    }
    let output = match Command::new(&probe).output() {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => panic!("layout probe failed: {}", o.status),
        Err(e) => panic!("could not run the layout probe {}: {e}", probe.display()),
    };
    if let Err(e) = std::fs::write(out.join("c_layout.rs"), output) {
        panic!("cannot write c_layout.rs: {e}");
    }
}
