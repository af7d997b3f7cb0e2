//! The layers of ARCHITECTURE.md hold: every `crate::` path in `src/` names
//! a module on a lower layer than the module it is written in (or that
//! module itself). Read from the table in ARCHITECTURE.md, so the document
//! and the code cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// module → layer, from the rows `| 6 | `pipeline` | … |` of ARCHITECTURE.md.
fn layers() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let layer = cells.first()?.parse::<u32>().ok()?;
            let module = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((module.to_string(), layer))
        })
        .collect()
}

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

/// The top-level module a file of `src/` belongs to (`src/pipeline/authn/jwt.rs` → `pipeline`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The modules a line names through `crate::x` or `crate::{x, y::z}`.
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
            for item in inner.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn every_import_in_src_points_down_the_layers_of_architecture_md() {
    let layers = layers();
    assert!(layers.len() > 10, "the layer table was not found");
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let from = module_of(&src, file);
        if from == "lib" {
            continue;
        }
        let Some(&from_layer) = layers.get(&from) else {
            wrong.push(format!(
                "{}: module `{from}` has no layer in ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // code only: doc comments may name any module
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for to in named_modules(line) {
                if to == from {
                    continue;
                }
                match layers.get(&to) {
                    Some(&to_layer) if to_layer < from_layer => {}
                    Some(&to_layer) => wrong.push(format!(
                        "{}:{}: `{from}` (layer {from_layer}) imports `{to}` (layer {to_layer})",
                        file.display(),
                        n + 1
                    )),
                    None => wrong.push(format!(
                        "{}:{}: `crate::{to}` has no layer in ARCHITECTURE.md",
                        file.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layer_reader_sees_both_import_forms() {
    assert_eq!(named_modules("use crate::store::{Store, now};"), ["store"]);
    assert_eq!(
        named_modules("use crate::{auth, metrics};"),
        ["auth", "metrics"]
    );
    assert_eq!(
        named_modules("let x = crate::vocab::now() + crate::config::X;"),
        ["vocab", "config"]
    );
    assert!(named_modules("use super::Identity;").is_empty());
}
