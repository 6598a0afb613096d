//! `layers [SRC]`: the graph of a crate's top-level modules, read from the
//! `crate::` paths in its code (unit tests left out), and its cycles. Layers
//! must point down only: a cycle fails the task, so `scripts/test.sh` keeps
//! `envelope/src` free of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

/// Module → the modules it names.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Reads the top-level modules under `src` and what each one uses.
pub fn graph(src: &Path) -> Result<Graph> {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let path = entry?.path();
        let name = match (path.is_dir(), path.extension()) {
            (true, _) => path.file_name(),
            (false, Some(ext)) if ext == "rs" => path.file_stem(),
            _ => None,
        };
        if let Some(name) = name.and_then(|n| n.to_str()) {
            if name != "main" && name != "lib" {
                modules.insert(name.to_owned());
            }
        }
    }
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for module in &modules {
        let file = src.join(format!("{module}.rs"));
        let files = if file.is_file() {
            vec![file]
        } else {
            rust_files(&src.join(module))?
        };
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            for used in uses(&text) {
                if used != *module && modules.contains(&used) {
                    graph
                        .get_mut(module)
                        .expect("every module is a node")
                        .insert(used);
                }
            }
        }
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            files.push(path);
        }
    }
    Ok(files)
}

/// The top-level modules a file names through `crate::`, outside comments and
/// its unit tests.
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    let mut used = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                used.extend(inner.split(',').filter_map(|item| ident(item.trim_start())));
            } else if let Some(name) = ident(rest) {
                used.insert(name);
            }
        }
    }
    used
}

fn ident(text: &str) -> Option<String> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| text[..end].to_owned())
}

/// Every cycle (strongly connected set of more than one module), sorted.
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Two modules share a cycle when each reaches the other.
    let reach: BTreeMap<&String, BTreeSet<&String>> = graph
        .keys()
        .map(|start| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![start];
            while let Some(m) = todo.pop() {
                for next in &graph[m] {
                    if seen.insert(next) {
                        todo.push(next);
                    }
                }
            }
            (start, seen)
        })
        .collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for (a, reached) in &reach {
        let mut cycle: Vec<String> = reached
            .iter()
            .filter(|b| reach[*b].contains(a))
            .map(|b| (*b).clone())
            .collect();
        if cycle.len() > 1 {
            cycle.sort();
            found.insert(cycle);
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_paths_and_use_groups_are_read_outside_comments_and_tests() {
        let text = "use crate::http::Reply;\nuse crate::{grants::Grants, metrics};\n\
                    // crate::daemon is only named here\nfn f() { crate::logging::chain(e) }\n\
                    #[cfg(test)]\nmod tests {\n    use crate::config;\n}\n";
        let found: Vec<String> = uses(text).into_iter().collect();
        assert_eq!(found, ["grants", "http", "logging", "metrics"]);
    }

    #[test]
    fn a_cycle_is_found_and_a_chain_is_not() {
        let edge = |pairs: &[(&str, &str)]| {
            let mut graph = Graph::new();
            for (a, b) in pairs {
                graph
                    .entry(a.to_string())
                    .or_default()
                    .insert(b.to_string());
                graph.entry(b.to_string()).or_default();
            }
            graph
        };
        assert!(cycles(&edge(&[("a", "b"), ("b", "c")])).is_empty());
        assert_eq!(
            cycles(&edge(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
            [["a", "b", "c"]]
        );
    }

    #[test]
    fn the_envelope_has_no_cycle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../envelope/src");
        let graph = graph(&src).unwrap();
        assert!(graph.contains_key("daemon") && graph["daemon"].contains("grants"));
        assert_eq!(cycles(&graph), Vec::<Vec<String>>::new());
    }
}
