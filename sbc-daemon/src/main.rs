//! `sbcd`: see [`sbc_daemon::cli`].

fn main() -> std::process::ExitCode {
    sbc_daemon::cli::main()
}
