//! Builds the eBPF programs of `tracer-ebpf` for the bpfel target and places the object in OUT_DIR,
//! where `src/runq.rs` includes it.
//!
//! The eBPF build uses the workspace's pinned stable toolchain with `RUSTC_BOOTSTRAP=1` (for
//! `-Z build-std=core`) so the compiler's LLVM matches bpf-linker's (LLVM 22); `cargo xtask setup`
//! installs rust-src and bpf-linker. `AYA_BUILD_SKIP=1` skips the eBPF build (the agent then
//! reports the tracer as unavailable at run time).
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("tracer-ebpf");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // An empty object: loading it fails with a clear message instead of the build failing.
        fs::write(&object, b"")?;
        return Ok(());
    }
    // rustup tells cargo which toolchain the workspace pinned; build the eBPF with the same one.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.95.0".to_string());
    let toolchain: &'static str = Box::leak(toolchain.into_boxed_str());
    // SAFETY: build scripts are single-threaded at this point.
    #[allow(unsafe_code)]
    unsafe {
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain),
    )
    .map_err(|e| {
        format!(
            "building the eBPF programs failed ({e:#}); run `cargo xtask setup` \
             (installs rust-src and bpf-linker) or set AYA_BUILD_SKIP=1 to build without them"
        )
    })?;
    Ok(())
}
