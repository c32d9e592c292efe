//! The architecture stays as documented: every top-level module of `src/` sits in one
//! layer of the table in `src/lib.rs`, and imports only modules of its own layer or the
//! layers below (read from the `crate::<module>` paths in its code, tests included), so
//! no import cycle can form between top-level modules. A new module must be added to the
//! table here and in the crate docs, which this test also checks. And no file grows past
//! 800 lines before its tests, no function past 120 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers of `src/lib.rs`, bottom first.
const LAYERS: &[&[&str]] = &[
    &["util"],
    &["spop"],
    &["decision"],
    &["rules", "limits", "bans"],
    &["engine"],
    &["insight"],
    &["metrics"],
    &["agent"],
    &["server", "ops", "handover", "fleet"],
    &["config"],
    &["reload"],
    &["cli", "serve"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules: `src/<m>.rs` and `src/<m>/`, without `lib.rs` and `main.rs`.
fn modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|e| e == "rs")).then_some(name)
        })
        .filter(|m| m != "lib" && m != "main")
        .collect()
}

/// `module` → the top-level modules its code names as `crate::<m>`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for module in modules() {
        let mut files = Vec::new();
        let (dir, file) = (src().join(&module), src().join(format!("{module}.rs")));
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        if file.is_file() {
            files.push(file);
        }
        let mut uses = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or_default();
                for (at, _) in code.match_indices("crate::") {
                    let rest = &code[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        uses.insert(name);
                    }
                }
            }
        }
        graph.insert(module, uses);
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<String> = modules()
        .into_iter()
        .filter(|m| layer(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer: {unplaced:?}; add them to LAYERS here and to the table in src/lib.rs"
    );
}

#[test]
fn imports_only_point_down_the_layers() {
    let mut upward = Vec::new();
    for (module, uses) in imports() {
        let Some(own) = layer(&module) else { continue };
        for used in uses {
            match layer(&used) {
                Some(l) if l <= own => {}
                Some(l) => upward.push(format!("{module} (layer {own}) -> {used} (layer {l})")),
                None => upward.push(format!("{module} -> {used} (not a module of src/)")),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn there_is_no_import_cycle_between_top_level_modules() {
    // Kahn's algorithm: whatever cannot be ordered is on a cycle.
    let graph = imports();
    let mut pending: BTreeMap<&str, BTreeSet<&str>> = graph
        .iter()
        .map(|(m, uses)| {
            let uses = uses
                .iter()
                .map(String::as_str)
                .filter(|u| graph.contains_key(*u))
                .collect();
            (m.as_str(), uses)
        })
        .collect();
    loop {
        let ready: Vec<&str> = pending
            .iter()
            .filter(|(_, uses)| uses.is_empty())
            .map(|(m, _)| *m)
            .collect();
        if ready.is_empty() {
            break;
        }
        for m in ready {
            pending.remove(m);
            for uses in pending.values_mut() {
                uses.remove(m);
            }
        }
    }
    assert!(
        pending.is_empty(),
        "modules on an import cycle: {pending:?}"
    );
}

#[test]
fn the_crate_docs_list_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let missing: Vec<String> = modules()
        .into_iter()
        .filter(|m| !lib.contains(&format!("[`{m}`]")) || !lib.contains(&format!("pub mod {m};")))
        .collect();
    assert!(
        missing.is_empty(),
        "src/lib.rs does not document: {missing:?}"
    );
}

/// Longest source file, in lines before its `#[cfg(test)]` module.
const MAX_FILE_LINES: usize = 800;
/// Longest function, in lines (rustfmt's layout: from `fn` to its closing brace).
const MAX_FN_LINES: usize = 120;

/// Test-only files: whole files of tests, exempt from the size limits.
fn is_test_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name == "tests.rs"
        || name == "test_support.rs"
        || path.components().any(|c| c.as_os_str() == "tests")
}

#[test]
fn no_file_or_function_is_too_long() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut too_long = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let code = lines
            .iter()
            .position(|l| l.starts_with("#[cfg(test)]"))
            .unwrap_or(lines.len());
        let name = file.strip_prefix(src()).unwrap().display();
        if code > MAX_FILE_LINES {
            too_long.push(format!("{name}: {code} lines before its tests"));
        }
        for (i, line) in lines.iter().enumerate().take(code) {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
                "async fn ",
                "pub async fn ",
                "const fn ",
                "pub const fn ",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p));
            // Declarations without a body (`;`) and one-line bodies end on their line.
            if !is_fn || line.ends_with(';') || line.ends_with('}') {
                continue;
            }
            let closing = format!("{indent}}}");
            if let Some(end) = lines[i + 1..].iter().position(|l| *l == closing) {
                let length = end + 2;
                if length > MAX_FN_LINES {
                    too_long.push(format!("{name}:{}: function of {length} lines", i + 1));
                }
            }
        }
    }
    assert!(too_long.is_empty(), "too long:\n{}", too_long.join("\n"));
}
