//! Records the version of tract the binary runs models with, for `onnx-prune --version`.
//!
//! The version is read from `Cargo.lock` (shipped in the published crate as well), the lock file
//! the build resolved its dependencies with: `cargo install --locked` and every workspace build
//! use exactly that version.

use std::path::Path;

use serde::Deserialize;

/// The part of `Cargo.lock` read here.
#[derive(Deserialize)]
struct Lockfile {
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
}

fn main() {
    // Read when the script runs, not baked in when it is compiled: a build script binary can be
    // reused by a checkout at another path sharing the target directory.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let lock = Path::new(&manifest_dir).join("Cargo.lock");
    println!("cargo::rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock)
        .unwrap_or_else(|e| panic!("{}: {e}: build with the lock file", lock.display()));
    let parsed: Lockfile =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
    let versions: Vec<&str> = parsed
        .package
        .iter()
        .filter(|p| p.name == "tract-onnx")
        .map(|p| p.version.as_str())
        .collect();
    let [version] = versions[..] else {
        panic!(
            "{}: expected one tract-onnx package, found versions {versions:?}",
            lock.display()
        );
    };
    println!("cargo::rustc-env=ONNX_PRUNE_TRACT_VERSION={version}");
}
