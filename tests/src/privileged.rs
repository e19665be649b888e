//! Guard for tests that need root (network namespaces, packet capture).

/// Environment variable that turns a failing privileged test into a loud skip.
pub const SKIP_ENV: &str = "PORTCULLIS_SKIP_PRIVILEGED";

/// Returns `true` if the test may run. When not root: panics with a clear message,
/// unless `PORTCULLIS_SKIP_PRIVILEGED=1`, in which case it prints a SKIPPED line and
/// returns `false` (the caller returns early). It never passes silently.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        // Written to the stderr handle directly (not eprintln!) so that the test
        // harness's output capture does not hide it for a "passing" test.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "!!!!! SKIPPED {test}: needs root (network namespaces); {SKIP_ENV}=1 is set !!!!!"
        );
        return false;
    }
    panic!(
        "{test} needs root (it creates network namespaces and veth pairs). Run the tests as \
         root, or set {SKIP_ENV}=1 to skip them explicitly."
    );
}

/// Panics with an install hint if `program` is not on PATH.
pub fn require_tool(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` not found on PATH: install the Debian package `{package}` \
         (see .ci/packages/test-e2e.txt)"
    );
}
