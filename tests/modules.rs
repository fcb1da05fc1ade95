//! The module graph of `src/` has no cycles (issue 10): a module may use those below it,
//! never one that uses it back, so each can be read — and changed — knowing only what it
//! builds on. A module's children are its parts: a parent and its descendants may use each
//! other; two modules neither of which contains the other may not, in either direction
//! through any chain. The graph is read from the source, as a newcomer would: a module of the
//! library (`src/x.rs`, `src/x/mod.rs`, `src/x/y.rs`) or of the command line uses another
//! when its code (not its comments) names it by `crate::`, `super::`, `self::`, the
//! library's name, or the name of a sibling or child module it declared. A parent that
//! only declares a child (`mod x;`, `pub use x::…` re-exports) does not use it: those are
//! how a module shows its parts, and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path, as `serve::conn` (the library's root is `lib`, the binary's `main`).
type Module = String;

/// Every `.rs` file under `dir`, with its module path.
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<Module, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("src").flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            if path.is_dir() {
                walk(&path, &join(prefix, &name), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "mod" => prefix.to_string(),
                    "lib" | "main" if prefix.is_empty() => name.clone(),
                    _ => join(prefix, &name),
                };
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}::{name}") }
}

fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(p, _)| p)
}

/// The code of a file without comments and string literals (so a path in a doc or a
/// message is not a use).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            // A string literal (raw strings are not used for paths in this crate's code).
            let raw_hashes = text[..i].bytes().rev().take_while(|&c| c == b'#').count();
            let is_raw = i > raw_hashes && b[i - raw_hashes - 1] == b'r';
            i += 1;
            if is_raw {
                let close = format!("\"{}", "#".repeat(raw_hashes));
                match text[i..].find(&close) {
                    Some(k) => i += k + close.len(),
                    None => i = b.len(),
                }
            } else {
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A character literal such as ':' (a lifetime has no closing quote).
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The modules `module` (whose code is `src`) uses, among `all`.
fn uses(module: &str, src: &str, all: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let lib_side = !(module == "main" || module.starts_with("cli"));
    let mut found = BTreeSet::new();
    // Re-exports and declarations are how a module shows its parts: not uses.
    let body: String = src
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ")
                || t.starts_with("mod ")
                || t.starts_with("pub mod "))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let words: Vec<&str> =
        body.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).filter(|w| w.contains("::")).collect();
    // A `use a::{b, c::d}` is read as paths a::b and a::c::d.
    let mut paths: Vec<String> = words.iter().map(|w| w.trim_matches(':').to_string()).collect();
    for stmt in body.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("use ") else { continue };
        if let Some((head, group)) = rest.split_once("::{") {
            for item in group.trim_end_matches('}').split(',') {
                let item = item.trim().split("::").next().unwrap_or("").trim_matches(|c: char| c == '{' || c == '}');
                paths.push(format!("{head}::{item}"));
            }
        }
    }
    // `self` is the module, `super` its parent; a bare first name is a child it declared.
    let root = |m: &str| if m == "lib" || m == "main" { String::new() } else { m.to_string() };
    let this = root(module);
    for path in paths {
        let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        let mut at = match parts.first().copied() {
            // The library seen from the binary is another crate: no cycle can go through it.
            Some("iis_tagger") if !lib_side => continue,
            Some("crate" | "iis_tagger") => {
                parts.remove(0);
                String::new()
            }
            Some("self") => {
                parts.remove(0);
                this.clone()
            }
            Some("super") => {
                let mut at = this.clone();
                while parts.first() == Some(&"super") {
                    parts.remove(0);
                    at = parent(&at).to_string();
                }
                at
            }
            Some(first) if all.contains_key(&join(&this, first)) => this.clone(),
            _ => continue,
        };
        // The deepest module the path names (`super::Item` names the parent itself).
        let side_root = if lib_side { "lib" } else { "main" };
        let mut target = Some(if at.is_empty() { side_root.to_string() } else { at.clone() });
        for p in parts {
            let next = join(&at, p);
            if all.contains_key(&next) {
                target = Some(next.clone());
                at = next;
            } else {
                break;
            }
        }
        // A module's children are its parts: a parent and a child (or any descendant) may
        // use each other; what may not is two modules neither of which contains the other.
        let within = |a: &str, b: &str| b.starts_with(&format!("{a}::"));
        if let Some(t) = target.filter(|t| t != module && !within(t, module) && !within(module, t)) {
            // The library seen from the binary is another crate: cycles through it cannot be.
            let t_lib = !(t == "main" || t.starts_with("cli"));
            if lib_side == t_lib {
                found.insert(t);
            }
        }
    }
    found
}

/// The cycles of a graph (its strongly connected components of more than one module).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's algorithm, iterative enough for a few hundred modules (recursion is fine).
    struct State<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let all = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    all.iter()
        .map(|(m, path)| {
            let src = code(&std::fs::read_to_string(path).expect("source"));
            (m.clone(), uses(m, &src, &all))
        })
        .collect()
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = graph();
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| graph[m].iter().filter(|t| c.contains(t)).map(move |t| format!("{m} -> {t}")))
                .collect();
            format!("  {}\n    {}", c.join(", "), edges.join("\n    "))
        })
        .collect();
    assert!(found.is_empty(), "modules that use each other:\n{}", explain.join("\n"));
}

/// The reader finds what it should: a cycle written into a graph is seen, and the edges of a
/// few modules known to use others are there (so an empty answer is not a reader that
/// reads nothing).
#[test]
fn the_reader_sees_uses_and_cycles() {
    let graph = graph();
    assert!(graph["cli::follow"].contains("cli::hangup"), "{:?}", graph["cli::follow"]);
    assert!(graph["prefilter"].contains("rules"), "{:?}", graph["prefilter"]);
    assert!(graph["serve::conn"].contains("serve::budget"), "{:?}", graph["serve::conn"]);
    let mut with_cycle = graph.clone();
    with_cycle.get_mut("rules").expect("rules").insert("prefilter".into());
    assert!(
        cycles(&with_cycle).iter().any(|c| c.contains(&"rules".to_string()) && c.contains(&"prefilter".to_string()))
    );
}
