//! Go functions found in real Go binaries by their `.gopclntab`, stripped or not, checked against
//! the Go toolchain's own answers: the ELF symbol table of the unstripped build and `go tool
//! objdump`'s RET instructions. The kubelet is stripped (`-s -w`), so the stripped build must give
//! the same addresses as the unstripped one.

mod common;

use std::{path::Path, process::Command};

use object::{Object, ObjectSymbol};
use tracer_user::gosym::{GoBinary, GosymError};

/// A program with a function of two return paths that the compiler must keep out of line.
const PROGRAM: &str = r#"package main

import "os"

//go:noinline
func work(n int) int {
	if n > 3 {
		return n * 7
	}
	for i := 0; i < n; i++ {
		n += len(os.Args)
	}
	return n - 1
}

func main() { os.Exit(work(len(os.Args)) & 0) }
"#;

/// Builds PROGRAM into `dir`, plain and stripped (`-s -w`, as Kubernetes builds the kubelet).
fn build(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::write(dir.join("main.go"), PROGRAM).unwrap();
    std::fs::write(dir.join("go.mod"), "module gosymtest\n\ngo 1.22\n").unwrap();
    let plain = dir.join("plain");
    let stripped = dir.join("stripped");
    for (out, flags) in [(&plain, ""), (&stripped, "-s -w")] {
        let status = Command::new(common::which_go())
            .args(["build", "-trimpath", "-ldflags", flags, "-o"])
            .arg(out)
            .arg(".")
            .current_dir(dir)
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-mod=mod")
            .status()
            .expect("running go build (Go is on every machine this project builds on)");
        assert!(status.success(), "go build {flags}");
    }
    (plain, stripped)
}

/// The address of `name` in an unstripped binary's ELF symbol table.
fn symbol_address(binary: &Path, name: &str) -> u64 {
    let data = std::fs::read(binary).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} not in the symbol table of {}", binary.display()))
        .address()
}

/// The RET instructions `go tool objdump` shows in `name` (its own disassembler).
fn objdump_returns(binary: &Path, name: &str) -> Vec<u64> {
    let out = Command::new(common::which_go())
        .args(["tool", "objdump", "-s"])
        .arg(format!("^{}$", name.replace('.', "\\.")))
        .arg(binary)
        .output()
        .expect("go tool objdump");
    assert!(out.status.success(), "go tool objdump failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "RET"))
        // "  main.go:9  0x4912f4  c3  RET"
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("0x"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[test]
fn a_stripped_go_binary_gives_the_functions_and_returns_the_toolchain_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, stripped) = build(dir.path());
    let want_entry = symbol_address(&plain, "main.work");
    let want_returns = objdump_returns(&plain, "main.work");
    assert!(
        want_returns.len() >= 2,
        "objdump shows {want_returns:x?}: the test program should return on two paths"
    );
    for binary in [&plain, &stripped] {
        let data = std::fs::read(binary).unwrap();
        let go = GoBinary::parse(&data).unwrap();
        let f = go.find("main.work").unwrap();
        assert_eq!(f.entry, want_entry, "{}", binary.display());
        assert!(f.end > f.entry);
        let points = go.probe_points("main.work").unwrap();
        let returns: Vec<u64> = points
            .return_offsets
            .iter()
            .map(|&off| off - points.entry_offset + f.entry)
            .collect();
        assert_eq!(returns, want_returns, "{}", binary.display());
        // The file offsets hold what the addresses hold: a RET at each return.
        for &off in &points.return_offsets {
            let at = off as usize;
            if cfg!(target_arch = "x86_64") {
                assert_eq!(data[at], 0xc3, "{}: {off:#x}", binary.display());
            } else {
                assert_eq!(data[at..at + 4], 0xd65f_03c0u32.to_le_bytes());
            }
        }
        assert_eq!(
            go.find("main.nothere").err(),
            Some(GosymError::NotFound("main.nothere".into()))
        );
    }
}

#[test]
fn every_function_of_the_go_toolchains_gofmt_is_where_its_symbol_table_says() {
    // gofmt ships unstripped with Go: its symbol table is the oracle for the whole function table.
    let goroot = Command::new(common::which_go())
        .args(["env", "GOROOT"])
        .output()
        .unwrap();
    let gofmt = Path::new(String::from_utf8_lossy(&goroot.stdout).trim()).join("bin/gofmt");
    let data = std::fs::read(&gofmt).unwrap();
    let go = GoBinary::parse(&data).unwrap();
    let file = object::File::parse(&*data).unwrap();
    // An assembly function and its ABI wrapper share one name in Go's table; the ELF symbol
    // table calls the assembly one `X.abi0`. Each name maps to the addresses of both.
    let mut symbols: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    for s in file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text)
    {
        if let Ok(name) = s.name() {
            let name = name.strip_suffix(".abi0").unwrap_or(name);
            symbols.entry(name).or_default().push(s.address());
        }
    }
    let mut checked = 0;
    for f in go.functions() {
        if let Some(addresses) = symbols.get(f.name.as_str()) {
            assert!(
                addresses.contains(&f.entry),
                "{} at {:#x}, the symbol table says {addresses:x?}",
                f.name,
                f.entry
            );
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} functions compared");
    println!("gofmt: {checked} functions where the symbol table says");
}
