//! The `hsm-signer` binary: everything is in the library's `cli` module.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    hsm_signer::cli::main()
}
