//! The layering of DESIGN §3, read from the code: which top-level modules of `src/` the non-test
//! code of each names (`crate::x`), checked for import cycles and for the leaves staying leaves.
//! `scripts/module-graph.py` prints the same graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Drop every `#[cfg(test)]` item: a `mod … { … }` block (braces matched) or a `mod …;` line.
fn strip_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(j) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..j]);
        let after = &rest[j..];
        let brace = after.find('{');
        let semi = after.find(';');
        match (brace, semi) {
            (_, Some(s)) if brace.is_none_or(|b| s < b) => rest = &after[s + 1..],
            (Some(b), _) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = "",
        }
    }
    out.push_str(rest);
    out
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() || (name != "lib" && name != "main") {
            modules.insert(name);
        }
    }
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let file = path.file_name().unwrap().to_string_lossy();
        if !modules.contains(&top) || file == "tests.rs" {
            continue;
        }
        let text = without_comments(&strip_tests(&std::fs::read_to_string(&path).unwrap()));
        let mut named = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let after = &text[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for part in group.split(',') {
                    named.insert(part.trim().split("::").next().unwrap_or("").to_owned());
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                named.insert(after[..end].to_owned());
            }
        }
        let edges = graph.get_mut(&top).unwrap();
        edges.extend(
            named
                .into_iter()
                .filter(|m| modules.contains(m) && *m != top),
        );
    }
    graph
}

/// The modules that reach `from` through the graph (itself excluded unless on a cycle).
fn reachable(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&String> = graph[from].iter().collect();
    while let Some(m) = todo.pop() {
        if seen.insert(m.clone()) {
            todo.extend(graph[m].iter());
        }
    }
    seen
}

#[test]
fn no_import_cycle_among_the_top_level_modules() {
    let graph = module_graph();
    assert!(graph.len() >= 14, "modules found: {graph:?}");
    let cycles: Vec<&String> = graph
        .keys()
        .filter(|m| reachable(&graph, m).contains(*m))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules on an import cycle: {cycles:?}\n{graph:#?}"
    );
}

#[test]
fn the_leaves_stay_leaves_and_the_top_stays_on_top() {
    let graph = module_graph();
    for leaf in ["error", "metrics", "consensus", "slashing"] {
        assert!(graph[leaf].is_empty(), "{leaf} names {:?}", graph[leaf]);
    }
    let allowed: BTreeSet<String> = ["consensus", "error"].map(String::from).into();
    assert!(
        graph["config"].is_subset(&allowed),
        "config names {:?}",
        graph["config"]
    );
    // HTTP, the command line and the benchmarks are the top: only the command line and the
    // benchmarks name the API, and nothing names the command line.
    for (module, names) in &graph {
        if names.contains("api") {
            assert!(
                ["cli", "bench"].contains(&module.as_str()),
                "{module} names api"
            );
        }
        assert!(!names.contains("cli"), "{module} names cli");
        if ["keys", "scheduler", "devices", "duties"].contains(&module.as_str()) {
            assert!(!names.contains("app"), "{module} names app");
        }
    }
    let main =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    assert!(
        main.contains("hsm_signer::cli::main()") && main.lines().count() < 10,
        "main.rs does more than call cli::main():\n{main}"
    );
}
