//! A build without the dev-dependencies (`cargo install`, `cargo build`, what users and
//! `scripts/ci-cross-check.sh` run) must resolve every crate it shares with `cargo test` with
//! the same features. Otherwise the crate and everything above it (tract-core, burn-flex and
//! the rest) has a second build: 7.5 minutes on two cores, paid by the install test in every
//! clean-clone run of the suite. Cargo.toml pins the features that the dev-dependencies would
//! otherwise add (fastrand, proptest's bit-set); this test finds a new one.

use std::collections::BTreeMap;
use std::process::Command;

/// `cargo tree` for distill-edge with `features` and the edge kinds `edges`: package (name and
/// version) -> its enabled features.
fn resolved(features: &[&str], edges: &str) -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(distill_edge::testing::source_root())
        .args(["tree", "--locked", "--offline", "-p", "distill-edge"])
        .args(features)
        .args(["-e", edges, "--prefix", "none", "--format", "{p}|{f}"])
        .output()
        .expect("spawn cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        // The workspace's own packages carry their path; the features of distill-edge
        // itself are the command line's.
        if package.contains('(') && package.contains('/') {
            continue;
        }
        let features: Vec<String> = features
            .split(',')
            .filter(|f| !f.is_empty())
            .map(String::from)
            .collect();
        // A crate can be listed twice with different features: built for the target, and
        // for the host under a proc macro. Keep the union on both sides (so a difference on
        // the host side alone would go unseen; dev-dependencies do not change that side).
        let entry: &mut Vec<String> = map.entry(package.trim().to_string()).or_default();
        for f in features {
            if !entry.contains(&f) {
                entry.push(f);
            }
        }
        entry.sort();
    }
    map
}

fn check(features: &[&str]) {
    // Normal edges only: dev-dependencies change the features of what is built for the
    // target; build scripts and proc macros are resolved apart (resolver 2 and later).
    let without = resolved(features, "normal");
    let with = resolved(features, "normal,dev");
    assert!(without.len() > 100, "cargo tree listed {}", without.len());
    let differ: Vec<String> = without
        .iter()
        .filter_map(|(package, f)| {
            let dev = &with[package];
            (dev != f).then(|| {
                format!(
                    "{package}: [{}] vs [{}] in tests",
                    f.join(","),
                    dev.join(",")
                )
            })
        })
        .collect();
    assert!(
        differ.is_empty(),
        "with {features:?}, the dev-dependencies change the features of crates a plain build \
         shares with the tests (pin them in Cargo.toml's [dependencies]):\n{}",
        differ.join("\n")
    );
}

#[test]
fn dev_dependencies_add_no_features_to_shared_crates() {
    check(&[]);
    check(&["--features", "ort"]);
}
