//! Python peers for end-to-end tests: one venv per requirements file under the e2e work
//! root (created once, reused), so scripted peers (pylibsrtp, ...) run with pinned packages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{HarnessError, Result};

/// The scripts directory (`tests/python`).
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The python of a venv with `tests/python/requirements.txt` installed; `import_check` is
/// a module that must import afterwards.
pub fn venv_python(import_check: &str) -> Result<PathBuf> {
    let dir = crate::env::work_root().join("python-venv");
    let python = dir.join("bin").join("python");
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", &format!("import {import_check}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&python) {
        return Ok(python);
    }
    std::fs::create_dir_all(crate::env::work_root())
        .map_err(|e| HarnessError::io("creating the e2e work root", e))?;
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output()
        .map_err(|e| HarnessError::io("running python3 -m venv (install python3-venv)", e))?;
    if !out.status.success() {
        return Err(HarnessError::Parse(format!(
            "python3 -m venv failed (install python3-venv): {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let req = scripts_dir().join("requirements.txt");
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(&req)
        .output()
        .map_err(|e| HarnessError::io("running pip", e))?;
    if !out.status.success() || !ok(&python) {
        return Err(HarnessError::Parse(format!(
            "pip install -r {} failed: {}{}",
            req.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(python)
}
