//! No two modules of the daemon import each other, directly or around a circle: data
//! flows one way (server → connection → methods → broker → store), so each room can be
//! read, tested and changed without the ones above it.
//!
//! Two graphs, with a top-level module (a file, or a directory with its `mod.rs`) as one
//! node, and neither may have a circle: the `use crate::…` declarations of every file
//! under `src/`, and every `crate::…` path, declared or written inline.
//! Hand-written rather than a module-graph tool: it needs only the top-level modules,
//! runs in milliseconds with the unit tests, and adds nothing for CI to install.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules its `use crate::…` declarations (or its `crate::` paths) name.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The modules the inline `crate::<name>::…` paths of a file name (comments aside).
fn path_modules(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let name: String = line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// The `crate::<name>` modules one `use` declaration names (`use crate::{a::X, b};` names
/// both `a` and `b`).
fn used_modules(declaration: &str) -> Vec<String> {
    let Some(at) = declaration.find("crate::") else {
        return Vec::new();
    };
    let rest = &declaration[at + "crate::".len()..];
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    // Top-level items of the group: split at commas outside nested braces.
    let (mut depth, mut start, mut names) = (0usize, 0usize, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(ident(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(ident(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// The `use` declarations of a Rust file (one string each, however many lines it spans).
fn use_declarations(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    for line in source.lines() {
        let line = line.trim();
        if let Some(decl) = &mut open {
            decl.push_str(line);
        } else if ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .any(|p| line.starts_with(p))
        {
            open = Some(line.to_string());
        }
        if open.as_deref().is_some_and(|d| d.ends_with(';')) {
            out.extend(open.take());
        }
    }
    out
}

/// Which references make an edge: `use` declarations only, or every `crate::` path.
#[derive(Clone, Copy)]
enum Edges {
    Uses,
    Paths,
}

fn add_file(graph: &mut Graph, module: &str, path: &Path, edges: Edges) {
    let source = std::fs::read_to_string(path).unwrap();
    let mut names: Vec<String> = use_declarations(&source)
        .iter()
        .flat_map(|d| used_modules(d))
        .collect();
    if let Edges::Paths = edges {
        names.extend(path_modules(&source));
    }
    graph
        .entry(module.to_string())
        .or_default()
        .extend(names.into_iter().filter(|m| m != module));
}

fn add_dir(graph: &mut Graph, module: &str, dir: &Path, edges: Edges) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            add_dir(graph, module, &path, edges);
        } else if path.extension().is_some_and(|e| e == "rs") {
            add_file(graph, module, &path, edges);
        }
    }
}

/// The import graph of the top-level modules under `src`.
fn graph_of(src: &Path, edges: Edges) -> Graph {
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            add_dir(&mut graph, &name, &path, edges);
        } else if path.extension().is_some_and(|e| e == "rs") {
            add_file(&mut graph, &name, &path, edges);
        }
    }
    graph
}

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// One circle of the graph (`a → b → a`), if it has any.
fn a_circle(graph: &Graph) -> Option<Vec<String>> {
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(graph, next, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn the_daemon_modules_import_each_other_in_no_circle() {
    let graph = graph_of(&src(), Edges::Uses);
    assert!(
        graph.get("broker").is_some_and(|e| e.contains("store")),
        "the graph was not read: {graph:?}"
    );
    if let Some(circle) = a_circle(&graph) {
        panic!("import circle: {}", circle.join(" → "));
    }
}

#[test]
fn inline_paths_close_no_circle() {
    let graph = graph_of(&src(), Edges::Paths);
    assert!(
        graph.get("broker").is_some_and(|e| e.contains("machine")),
        "the inline paths were not read: {graph:?}"
    );
    if let Some(circle) = a_circle(&graph) {
        panic!("circle of crate:: paths: {}", circle.join(" → "));
    }
}

#[test]
fn a_circle_is_found_through_grouped_and_multi_line_imports() {
    let decls = use_declarations(
        "use std::sync::Arc;\nuse crate::{\n    a::X,\n    b::{Y, Z},\n};\npub(crate) use crate::c::W;\n// use crate::d;\n",
    );
    assert_eq!(decls.len(), 3, "{decls:?}");
    let used: Vec<String> = decls.iter().flat_map(|d| used_modules(d)).collect();
    assert_eq!(used, ["a", "b", "c"]);

    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "d")] {
        graph.entry(from.into()).or_default().insert(to.into());
    }
    assert_eq!(a_circle(&graph), None);
    graph.entry("d".into()).or_default().insert("b".into());
    assert_eq!(
        a_circle(&graph).unwrap(),
        ["b", "c", "d", "b"].map(String::from)
    );
}
