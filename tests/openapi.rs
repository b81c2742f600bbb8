//! `docs/openapi.yaml` against the code. There is no YAML parser among the dependencies, so the
//! document is read as text, by indentation:
//!
//! - every `MessageType::ALL` wire name and every `MessageType::ALIASES` alias is a key of the
//!   sign request's discriminator mapping, to a schema whose `type` enum names it; the 18 types
//!   map to 18 schemas, and each alias to its type's;
//! - the documented paths and their methods are exactly the routes the router registers: the
//!   list below, which is itself checked against every `.route("…", …)` call in the non-test
//!   code under `src/api/` (`mod.rs`, `keymanager.rs`, `distributed.rs`), axum placeholders
//!   converted;
//! - every `$ref` to a component names one that is defined;
//! - a cheap YAML sanity check: no tab characters, every line's indentation even.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hsm_signer::consensus::MessageType;

/// The routes the router serves, as OpenAPI paths, with their methods (sorted).
const ROUTES: [(&str, &[&str]); 14] = [
    ("/api/v1/eth2/sign/{identifier}", &["post"]),
    ("/api/v1/eth2/sign", &["post"]),
    ("/api/v1/eth2/publicKeys", &["get"]),
    ("/api/v1/eth2/distributed/accounts", &["get"]),
    ("/api/v1/eth2/distributed/accounts/{identifier}", &["get"]),
    ("/api/v1/eth2/distributed/sign/{identifier}", &["post"]),
    ("/api/v1/eth2/distributed/sign", &["post"]),
    ("/upcheck", &["get"]),
    ("/healthcheck", &["get"]),
    ("/metrics", &["get"]),
    ("/reload", &["get", "post"]),
    ("/admin/devices/{name}", &["post"]),
    ("/admin/participants/{name}", &["post"]),
    ("/eth/v1/keystores", &["delete", "get", "post"]),
];

/// The HTTP methods OpenAPI has a key for (and axum a method router for).
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const DOC: &str = "docs/openapi.yaml";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn doc() -> String {
    read(&repo(DOC))
}

// ---- Reading YAML by indentation ---------------------------------------------------------------

/// A line's leading spaces.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether a line holds content (not blank, not a comment).
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// One entry of a block mapping: its line, its key and its inline value (quotes removed; empty
/// when the value is a nested block).
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    key: String,
    value: String,
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
        .unwrap_or(s)
}

/// The entries of the mapping under the key on line `at` (the top level for `None`): the
/// content lines two spaces deeper than it, up to the next line no deeper than it. Block
/// scalars' lines are deeper still, and sequence items are not mapping entries.
fn entries(lines: &[&str], at: Option<usize>) -> Vec<Entry> {
    let (start, depth) = match at {
        Some(i) => (i + 1, indent(lines[i]) + 2),
        None => (0, 0),
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start) {
        if !is_content(line) {
            continue;
        }
        let n = indent(line);
        if n < depth {
            break;
        }
        let t = line.trim();
        if n != depth || t.starts_with("- ") {
            continue;
        }
        let (key, value) = match t.split_once(": ") {
            Some((k, v)) => (k, v),
            None => (t.strip_suffix(':').unwrap_or(t), ""),
        };
        out.push(Entry {
            line: i,
            key: unquote(key).to_owned(),
            value: unquote(value).to_owned(),
        });
    }
    out
}

/// The entry `key` under the key on line `at` (the top level for `None`).
fn child(lines: &[&str], at: Option<usize>, key: &str) -> Entry {
    let where_ = at.map_or("the top level".to_owned(), |i| lines[i].trim().to_owned());
    entries(lines, at)
        .into_iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("{DOC}: no `{key}` under {where_}"))
}

/// The entry at `path` from the top level.
fn at_path(lines: &[&str], path: &[&str]) -> Entry {
    let mut at = None;
    let mut entry = None;
    for key in path {
        let e = child(lines, at, key);
        at = Some(e.line);
        entry = Some(e);
    }
    entry.expect("a non-empty path")
}

/// A flow sequence of plain scalars, `[A, B]`.
fn flow_list(value: &str) -> Vec<String> {
    value
        .trim()
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{DOC}: `{value}` is not a flow sequence"))
        .split(',')
        .map(|s| unquote(s).to_owned())
        .collect()
}

// ---- Reading the router --------------------------------------------------------------------------

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a source file without its test module and its comment lines.
fn non_test_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `args` calls `name(` (not as the tail of a longer identifier).
fn calls(args: &str, name: &str) -> bool {
    let pattern = format!("{name}(");
    args.match_indices(&pattern).any(|(i, _)| {
        args[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// An axum route path as OpenAPI writes it: `{x}` stays, `{*x}`, `:x` and `*x` become `{x}`.
fn openapi_path(axum_path: &str) -> String {
    axum_path
        .split('/')
        .map(|segment| {
            if let Some(name) = segment
                .strip_prefix("{*")
                .and_then(|s| s.strip_suffix('}'))
                .or_else(|| segment.strip_prefix(':'))
                .or_else(|| segment.strip_prefix('*'))
            {
                format!("{{{name}}}")
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `.route("path", method(…)…)` of `code`: the path as OpenAPI writes it, and the methods.
fn routes_in(code: &str, file: &Path) -> Vec<(String, BTreeSet<String>)> {
    const CALL: &str = ".route(";
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(CALL) {
        let after = &rest[i + CALL.len()..];
        let open = after.find('"').unwrap_or(after.len());
        assert!(
            after[..open].trim().is_empty(),
            "{}: a `.route(` whose path is not a string literal; list it here by hand",
            file.display()
        );
        let path_len = after[open + 1..]
            .find('"')
            .unwrap_or_else(|| panic!("{}: unterminated route path", file.display()));
        let path = &after[open + 1..open + 1 + path_len];
        // The call's arguments end at its closing parenthesis.
        let mut depth = 1usize;
        let mut end = after.len();
        for (j, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &after[open + 1 + path_len + 1..end];
        let methods: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| calls(args, m))
            .map(|m| (*m).to_owned())
            .collect();
        assert!(
            !methods.is_empty(),
            "{}: route {path:?} has no method this test recognises: {args:?}",
            file.display()
        );
        out.push((openapi_path(path), methods));
        rest = &after[end..];
    }
    out
}

/// Every route the non-test code under `src/api/` registers, with its methods, and the files
/// that registered routes.
fn registered_routes() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut files = Vec::new();
    rust_files(&repo("src/api"), &mut files);
    files.sort();
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut registering = BTreeSet::new();
    for file in &files {
        let code = non_test_code(&read(file));
        for other in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !code.contains(other),
                "{}: `{other}` registers routes this test cannot read; extend it",
                file.display()
            );
        }
        let found = routes_in(&code, file);
        if !found.is_empty() {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            registering.insert(name);
        }
        for (path, methods) in found {
            routes.entry(path).or_default().extend(methods);
        }
    }
    (routes, registering)
}

// ---- The tests -----------------------------------------------------------------------------------

#[test]
fn every_message_type_and_alias_is_a_sign_request_schema_of_the_document() {
    let text = doc();
    let lines: Vec<&str> = text.lines().collect();
    let schemas = at_path(&lines, &["components", "schemas"]);
    let defined: BTreeMap<String, usize> = entries(&lines, Some(schemas.line))
        .into_iter()
        .map(|e| (e.key, e.line))
        .collect();
    let sign_request = at_path(&lines, &["components", "schemas", "SignRequest"]);
    let discriminator = child(&lines, Some(sign_request.line), "discriminator");
    assert_eq!(
        child(&lines, Some(discriminator.line), "propertyName").value,
        "type"
    );
    let mapping: BTreeMap<String, String> = entries(
        &lines,
        Some(child(&lines, Some(discriminator.line), "mapping").line),
    )
    .into_iter()
    .map(|e| (e.key, e.value))
    .collect();

    // The schema `name` maps to, and the names its `type` enum allows.
    let schema_of = |name: &str| -> (String, Vec<String>) {
        assert!(
            text.contains(name),
            "{DOC} does not mention message type {name}"
        );
        let target = mapping.get(name).unwrap_or_else(|| {
            panic!("{DOC}: {name} is not in SignRequest's discriminator mapping")
        });
        let schema = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{DOC}: {name} maps to {target}, not a schema"));
        let line = *defined
            .get(schema)
            .unwrap_or_else(|| panic!("{DOC}: {name} maps to undefined schema {schema}"));
        let properties = child(&lines, Some(line), "properties");
        let kind = child(&lines, Some(properties.line), "type");
        let allowed = flow_list(&child(&lines, Some(kind.line), "enum").value);
        (schema.to_owned(), allowed)
    };

    let mut schemas_of_types = BTreeSet::new();
    for kind in MessageType::ALL {
        let name = kind.as_str();
        let (schema, allowed) = schema_of(name);
        assert!(
            allowed.iter().any(|a| a == name),
            "{DOC}: schema {schema} (for {name}) has `type` enum {allowed:?}"
        );
        assert!(
            schemas_of_types.insert(schema.clone()),
            "{DOC}: {name} shares schema {schema} with another type"
        );
    }
    assert_eq!(schemas_of_types.len(), MessageType::ALL.len());

    for (alias, kind) in MessageType::ALIASES {
        let (schema, allowed) = schema_of(alias);
        let (own, _) = schema_of(kind.as_str());
        assert_eq!(
            schema, own,
            "{DOC}: alias {alias} maps to {schema}, but {kind} to {own}"
        );
        assert!(
            allowed.iter().any(|a| a == alias),
            "{DOC}: schema {schema} does not allow the alias {alias} in its `type` enum: {allowed:?}"
        );
    }

    // Nothing else is mapped: no type the signer would refuse.
    let known: BTreeSet<&str> = MessageType::ALL
        .iter()
        .map(|t| t.as_str())
        .chain(MessageType::ALIASES.iter().map(|(a, _)| *a))
        .collect();
    for name in mapping.keys() {
        assert!(
            known.contains(name.as_str()),
            "{DOC}: SignRequest maps {name}, which the signer does not accept"
        );
    }
}

#[test]
fn the_documented_paths_and_methods_are_exactly_the_routes_the_router_registers() {
    let expected: BTreeMap<String, BTreeSet<String>> = ROUTES
        .iter()
        .map(|(path, methods)| {
            let methods = methods.iter().map(|m| (*m).to_owned()).collect();
            ((*path).to_owned(), methods)
        })
        .collect();
    assert_eq!(expected.len(), ROUTES.len(), "a path listed twice");

    // The list is the code's: every `.route(` under src/api/, and nothing more.
    let (registered, registering) = registered_routes();
    for file in ["mod.rs", "keymanager.rs"] {
        assert!(
            registering.contains(file),
            "no `.route(` found in src/api/{file}: this test no longer reads the router"
        );
    }
    assert_eq!(
        registered, expected,
        "src/api/ registers other routes than this test lists: update ROUTES and {DOC}"
    );

    // The document: every path with every method, and no path the server does not serve.
    let text = doc();
    let lines: Vec<&str> = text.lines().collect();
    let paths = child(&lines, None, "paths");
    let documented: BTreeMap<String, BTreeSet<String>> = entries(&lines, Some(paths.line))
        .into_iter()
        .map(|p| {
            let methods = entries(&lines, Some(p.line))
                .into_iter()
                .map(|e| e.key)
                .filter(|k| METHODS.contains(&k.as_str()))
                .collect();
            (p.key, methods)
        })
        .collect();
    for (path, methods) in &expected {
        assert!(
            text.contains(path.as_str()),
            "{DOC} does not mention route {path}"
        );
        let Some(have) = documented.get(path) else {
            panic!("{DOC}: route {path} is not under `paths`");
        };
        assert_eq!(have, methods, "{DOC}: the methods of {path}");
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{DOC} documents a path the router does not serve"
    );
}

#[test]
fn the_route_reader_reads_paths_placeholders_and_methods() {
    let code = r#"
        Router::new()
            .route("/a/{id}", post(a::sign))
            .route_layer(layer)
            .route(
                "/b/:name/c",
                axum::routing::get(b::get_it).delete(b::delete),
            )
            .route("/files/{*rest}", put(f::put_file))
            .route("/legacy/*rest", patch(target(1)))
    "#;
    let found = routes_in(code, Path::new("example.rs"));
    let set = |m: &[&str]| m.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        found,
        vec![
            ("/a/{id}".to_owned(), set(&["post"])),
            ("/b/{name}/c".to_owned(), set(&["delete", "get"])),
            ("/files/{rest}".to_owned(), set(&["put"])),
            ("/legacy/{rest}".to_owned(), set(&["patch"])),
        ]
    );
    assert_eq!(
        non_test_code(
            "a\n// .route(\"/x\", get(x))\nb\n#[cfg(test)]\nmod t { .route(\"/y\", get(y)) }"
        ),
        "a\nb"
    );
}

#[test]
fn every_component_reference_names_a_defined_component() {
    let text = doc();
    let lines: Vec<&str> = text.lines().collect();
    let components = child(&lines, None, "components");
    let defined: BTreeMap<String, BTreeSet<String>> = entries(&lines, Some(components.line))
        .into_iter()
        .map(|section| {
            let names = entries(&lines, Some(section.line))
                .into_iter()
                .map(|e| e.key)
                .collect();
            (section.key, names)
        })
        .collect();
    const PREFIX: &str = "#/components/";
    let mut count = 0;
    for (n, line) in lines.iter().enumerate() {
        for (i, _) in line.match_indices(PREFIX) {
            let reference = &line[i + PREFIX.len()..];
            let end = reference
                .find(|c: char| c == '\'' || c == '"' || c.is_whitespace())
                .unwrap_or(reference.len());
            let (section, name) = reference[..end]
                .split_once('/')
                .unwrap_or_else(|| panic!("{DOC}:{}: malformed reference", n + 1));
            assert!(
                defined.get(section).is_some_and(|s| s.contains(name)),
                "{DOC}:{}: #/components/{section}/{name} is not defined",
                n + 1
            );
            count += 1;
        }
    }
    assert!(count > 100, "only {count} references found");
}

#[test]
fn info_gives_the_version_and_the_remote_signing_api_it_follows() {
    let text = doc();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("openapi: 3.0.")),
        "{DOC} is not an OpenAPI 3.0 document"
    );
    assert_eq!(at_path(&lines, &["info", "version"]).value, "0.20.0");
    let description = at_path(&lines, &["info", "description"]);
    let body: String = lines[description.line + 1..]
        .iter()
        .take_while(|l| !is_content(l) || indent(l) > indent(lines[description.line]))
        .map(|l| format!("{l}\n"))
        .collect();
    for needle in ["v1.4.0", "PR #29", "16,384", "2 MiB"] {
        assert!(
            body.contains(needle),
            "{DOC}: info.description does not say {needle:?}"
        );
    }
}

#[test]
fn the_yaml_has_no_tabs_and_even_indentation() {
    let text = doc();
    assert!(!text.contains('\t'), "{DOC} contains a tab character");
    assert!(!text.contains('\r'), "{DOC} contains a carriage return");
    for (n, line) in text.lines().enumerate() {
        assert!(
            indent(line) % 2 == 0,
            "{DOC}:{}: odd indentation ({} spaces): {line:?}",
            n + 1,
            indent(line)
        );
    }
}
