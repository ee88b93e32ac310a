//! The module graph is layered, and the build enforces it: every file of `src/` belongs to one
//! layer (docs/architecture.md, "Layout"), and a file may name only files of its own layer or
//! below:
//!
//! 1. rules, parsers and foundations (no state, no I/O beyond reading a file handed to them);
//! 2. state and sources (registry, limits stores, ledger, secrets, detectors, sinks);
//! 3. the protocol-free pipeline (gate, admission, exchange, containment, override service);
//! 4. edges and planes (Envoy, admin, CLI, assembly, server, reload).
//!
//! Files below the edges may not use Envoy's or gRPC's types (`tonic`, `envoy_types`,
//! `prost`, `axum`). A reference is `crate::a::b…` or `super::…`, resolved to the longest
//! module path that is a file, as `../shared/tools/module-loops` resolves them; a `mod.rs`
//! also depends on the children it re-exports. Unit-test modules and test-only files may
//! reach anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

/// Path prefixes (relative to `src/`, most specific wins) and their layer.
const LAYERS: &[(&str, u8)] = &[
    // 1: rules, parsers and foundations
    ("config/", 1),
    ("serde_util.rs", 1),
    ("telemetry.rs", 1),
    ("tasks.rs", 1),
    ("heap.rs", 1),
    ("address_map.rs", 1),
    ("auth/key.rs", 1),
    ("auth/hash.rs", 1),
    ("auth/key_id.rs", 1),
    ("auth/extract.rs", 1),
    ("path.rs", 1),
    ("scope.rs", 1),
    ("providers.rs", 1),
    ("request.rs", 1),
    ("mutation.rs", 1),
    ("denial.rs", 1),
    ("retry_after.rs", 1),
    ("denial_binding.rs", 1),
    ("identity/", 1),
    ("cidr.rs", 1),
    ("model_scope.rs", 1),
    ("verdict.rs", 1),
    ("usage/", 1),
    ("limits/bucket.rs", 1),
    ("limits/policy.rs", 1),
    ("limits/store.rs", 1),
    ("detect/", 1),
    ("notify/config.rs", 1),
    ("notify/notification.rs", 1),
    ("notify/payload.rs", 1),
    ("notify/redact.rs", 1),
    ("audit/entry.rs", 1),
    ("overrides/action.rs", 1),
    ("leaks/report.rs", 1),
    ("leaks/github.rs", 1),
    ("leaks/gitleaks.rs", 1),
    ("leaks/signature.rs", 1),
    ("secrets/fingerprint.rs", 1),
    ("rotation/record.rs", 1),
    // 2: state and sources
    ("auth/", 2),
    ("limits/", 2),
    ("accounting/", 2),
    ("secrets/", 2),
    ("vault/", 2),
    ("consumer_store.rs", 2),
    ("consumer_state.rs", 2),
    ("detect/mod.rs", 2),
    ("notify/", 2),
    ("audit/", 2),
    ("overrides/store.rs", 2),
    ("overrides/broadcast.rs", 2),
    ("rotation/", 2),
    // 3: the pipeline
    ("gate.rs", 3),
    ("pipeline/", 3),
    ("containment.rs", 3),
    ("overrides/", 3),
    ("leaks/", 3),
    ("rotator/", 3),
    // 4: edges and planes
    ("envoy/", 4),
    ("admin/", 4),
    ("cli/", 4),
    ("app.rs", 4),
    ("server.rs", 4),
    ("tls.rs", 4),
    ("reload.rs", 4),
    ("runtime.rs", 4),
    ("lib.rs", 4),
    ("main.rs", 4),
];

const EDGE_CRATES: &[&str] = &["tonic", "envoy_types", "prost", "axum"];

fn layer_of(file: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| {
            file == *prefix || (prefix.ends_with('/') && file.starts_with(prefix))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, layer)| *layer)
}

/// Test-only files: whole files that are `#[cfg(test)]` modules.
fn test_only(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name == "tests.rs" || name.ends_with("_tests.rs")
}

struct Crate {
    /// module path → file (relative to src, `/`-separated)
    modules: BTreeMap<Vec<String>, String>,
}

impl Crate {
    fn load(src: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path
                        .strip_prefix(src)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    let mut parts: Vec<String> = rel
                        .trim_end_matches(".rs")
                        .split('/')
                        .map(str::to_string)
                        .collect();
                    if matches!(
                        parts.last().map(String::as_str),
                        Some("mod" | "lib" | "main")
                    ) {
                        parts.pop();
                    }
                    modules.insert(parts, rel);
                }
            }
        }
        Crate { modules }
    }

    /// The longest prefix of `path` that is a file.
    fn resolve(&self, path: &[String]) -> Option<&String> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.modules.get(&path[..n]))
    }
}

/// The file's text without comments and without its `#[cfg(test)] mod tests { … }`.
fn code(text: &str) -> String {
    let text = match Regex::new(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")
        .unwrap()
        .find(text)
    {
        Some(m) => &text[..m.start()],
        None => text,
    };
    Regex::new(r"//[^\n]*")
        .unwrap()
        .replace_all(text, "")
        .into_owned()
}

/// Every module path the file names, and (for a `mod.rs`) the children it uses.
fn references(module: &[String], file: &str, text: &str) -> Vec<Vec<String>> {
    let groups = Regex::new(r"\b((?:crate|super)(?:::\w+)*)::\{([^{}]*)\}").unwrap();
    let expanded = groups.replace_all(text, |c: &regex::Captures| {
        c[2].split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty() && *item != "self" && *item != "*")
            .map(|item| format!("{}::{item}", &c[1]))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let is_dir_module =
        file.ends_with("mod.rs") || file.ends_with("lib.rs") || file.ends_with("main.rs");
    let mut out = Vec::new();
    for c in Regex::new(r"\b(crate|super)((?:::\w+)+)")
        .unwrap()
        .captures_iter(&expanded)
    {
        let parts: Vec<String> = c[2]
            .trim_start_matches("::")
            .split("::")
            .map(str::to_string)
            .collect();
        let mut target = if &c[1] == "crate" {
            Vec::new()
        } else {
            module[..module.len().saturating_sub(1)].to_vec()
        };
        target.extend(parts);
        out.push(target);
    }
    if is_dir_module {
        for c in Regex::new(r"(?m)^\s*(?:pub(?:\([\w:]+\))?\s+)?use\s+(\w+)::")
            .unwrap()
            .captures_iter(&expanded)
        {
            let mut target = module.to_vec();
            target.push(c[1].to_string());
            out.push(target);
        }
    }
    out
}

#[test]
fn every_file_imports_only_its_own_layer_or_below() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::load(&src);
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    let mut edge_types = Vec::new();
    for (module, file) in &krate.modules {
        if test_only(file) {
            continue;
        }
        let Some(layer) = layer_of(file) else {
            unplaced.push(file.clone());
            continue;
        };
        let text = code(&std::fs::read_to_string(src.join(file)).unwrap());
        for target in references(module, file, &text) {
            let Some(to) = krate.resolve(&target) else {
                continue;
            };
            if to == file || test_only(to) {
                continue;
            }
            let to_layer = layer_of(to).unwrap_or(u8::MAX);
            if to_layer > layer {
                upward.push(format!(
                    "{file} (layer {layer}) -> {to} (layer {to_layer}): {}",
                    target.join("::")
                ));
            }
        }
        if layer < 4 {
            for name in EDGE_CRATES {
                if Regex::new(&format!(r"\b{name}::")).unwrap().is_match(&text) {
                    edge_types.push(format!("{file} (layer {layer}) uses {name}"));
                }
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        unplaced.is_empty(),
        "files in no layer (add them to LAYERS): {unplaced:#?}"
    );
    assert!(
        upward.is_empty(),
        "imports that go up a layer:\n{}",
        upward.join("\n")
    );
    assert!(
        edge_types.is_empty(),
        "Envoy/gRPC types below the edges:\n{}",
        edge_types.join("\n")
    );
}

#[test]
fn the_layer_table_resolves_most_specific_first() {
    assert_eq!(layer_of("detect/config.rs"), Some(1));
    assert_eq!(layer_of("detect/mod.rs"), Some(2));
    assert_eq!(layer_of("overrides/store.rs"), Some(2));
    assert_eq!(layer_of("overrides/service.rs"), Some(3));
    assert_eq!(layer_of("envoy/ext_proc.rs"), Some(4));
    assert_eq!(layer_of("nowhere.rs"), None);
}
