//! The lockfile keeps the minimum Rust version that Cargo.toml declares: every package that
//! building the library on this platform pulls in (normal and build dependencies, all
//! features) declares a `rust-version` no newer than ours. postcard 1.2, for one, needs Rust
//! 1.88 and was locked once while we declared 1.82; a user on 1.82 would then not have been
//! able to build at all. `.cargo/config.toml` makes `cargo update` respect the minimum.
//!
//! Dev-dependencies (the test and bench tooling) may need a newer Rust; they are not checked.

use std::collections::{HashMap, HashSet};
use std::process::Command;

/// `1.82`, `1.85.0` → (1, 82, 0).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u64>().expect("a numeric version part"));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn host_triple() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("a host line in rustc -vV")
}

#[test]
fn locked_dependencies_build_with_the_declared_minimum_rust() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--all-features",
        ])
        .args(["--filter-platform", &host_triple()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");

    let packages: HashMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("package id"), p))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("node id"), n))
        .collect();
    let root = meta["resolve"]["root"].as_str().expect("resolve root");
    let ours = version(
        packages[root]["rust_version"]
            .as_str()
            .expect("Cargo.toml declares rust-version"),
    );

    // Walk the normal and build edges from the root (dev edges only at the root are what
    // `cargo metadata` would add; skipping every dev edge leaves the library's own graph).
    let mut seen = HashSet::new();
    let mut todo = vec![root];
    let mut too_new = Vec::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let package = packages[id];
        if let Some(needs) = package["rust_version"].as_str() {
            if version(needs) > ours {
                let name = package["name"].as_str().unwrap_or("?");
                let found = package["version"].as_str().unwrap_or("?");
                too_new.push(format!("{name} {found} needs Rust {needs}"));
            }
        }
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let normal_or_build = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if normal_or_build {
                todo.push(dep["pkg"].as_str().expect("dep pkg"));
            }
        }
    }
    assert!(
        seen.len() > 5,
        "the walk found only {} packages: the metadata is not what this test expects",
        seen.len()
    );
    assert!(
        too_new.is_empty(),
        "Cargo.lock has dependencies newer than the declared minimum Rust {}.{}: {}; \
         run `cargo update -p <name>` (the fallback resolver in .cargo/config.toml picks a \
         compatible version) or raise rust-version in Cargo.toml",
        ours.0,
        ours.1,
        too_new.join(", ")
    );
}
