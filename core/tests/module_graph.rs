//! The core's top-level modules layer: no two of them import each other,
//! directly or through others. A cycle means two modules can only be read,
//! changed and tested together (and it is how `ledger` once had to know
//! the data-table format, and `auth` the payload parsers).
//!
//! Reads `src/` with `syn`, from `lib.rs` down its `mod` declarations,
//! leaving out everything under `#[cfg(test)]`: a test may use any module.
//! An edge `a -> b` is any `crate::b…` path in module `a` or below it, in a
//! `use`, an expression, a type or a macro's body.

// Reads files: native only (the wasm test run has no filesystem).
#![cfg(not(target_arch = "wasm32"))]
// A test from top to bottom: a failure to read is the report.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// Module `a` uses module `b`, from these files.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// The top-level modules a file's non-test code names after `crate::`.
#[derive(Default)]
struct Uses {
    modules: BTreeSet<String>,
    /// `mod x;` declarations (not under `#[cfg(test)]`): files to read next.
    children: Vec<String>,
}

impl Uses {
    fn tokens(&mut self, stream: TokenStream) {
        let trees: Vec<TokenTree> = stream.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" => {
                    if let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (trees.get(i + 1), trees.get(i + 2))
                    {
                        if a.as_char() == ':' && b.as_char() == ':' {
                            match trees.get(i + 3) {
                                Some(TokenTree::Ident(m)) => {
                                    self.modules.insert(m.to_string());
                                }
                                Some(TokenTree::Group(g)) => self.group(g.stream()),
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `crate::{a::X, b}` inside a macro: the first name of each entry.
    fn group(&mut self, stream: TokenStream) {
        let mut first = true;
        for tree in stream {
            match &tree {
                TokenTree::Ident(m) if first => {
                    self.modules.insert(m.to_string());
                    first = false;
                }
                TokenTree::Punct(p) if p.as_char() == ',' => first = true,
                _ => first = false,
            }
        }
    }

    fn use_tree(&mut self, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => self.modules.insert(p.ident.to_string()),
            syn::UseTree::Name(n) => self.modules.insert(n.ident.to_string()),
            syn::UseTree::Rename(r) => self.modules.insert(r.ident.to_string()),
            syn::UseTree::Group(g) => {
                g.items.iter().for_each(|t| self.use_tree(t));
                true
            }
            syn::UseTree::Glob(_) => false,
        };
    }
}

impl<'ast> Visit<'ast> for Uses {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => return visit::visit_item(self, item),
        };
        if is_cfg_test(attrs) {
            return;
        }
        match item {
            syn::Item::Mod(m) if m.content.is_none() => self.children.push(m.ident.to_string()),
            syn::Item::Use(u) => {
                if let syn::UseTree::Path(p) = &u.tree {
                    if p.ident == "crate" {
                        self.use_tree(&p.tree);
                    }
                }
            }
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let skip = match item {
            syn::ImplItem::Fn(f) => is_cfg_test(&f.attrs),
            syn::ImplItem::Const(c) => is_cfg_test(&c.attrs),
            _ => false,
        };
        if !skip {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next()) {
            if first.ident == "crate" {
                self.modules.insert(second.ident.to_string());
            }
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// The file of module `path` (`["reconcile", "cycle"]`).
fn module_file(path: &[String]) -> Option<PathBuf> {
    let base = path.iter().fold(src(), |p, m| p.join(m));
    let flat = base.with_extension("rs");
    let nested = base.join("mod.rs");
    [flat, nested].into_iter().find(|f| f.is_file())
}

fn graph() -> Graph {
    let mut graph = Graph::new();
    let mut files_read = 0;
    let mut todo: Vec<Vec<String>> = Vec::new();
    let root = fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut uses = Uses::default();
    uses.visit_file(&syn::parse_file(&root).unwrap());
    todo.extend(uses.children.into_iter().map(|c| vec![c]));
    while let Some(path) = todo.pop() {
        let file = module_file(&path).unwrap_or_else(|| panic!("no file for module {path:?}"));
        let text = fs::read_to_string(&file).unwrap();
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut uses = Uses::default();
        uses.visit_file(&parsed);
        files_read += 1;
        let top = &path[0];
        let shown = file.strip_prefix(src()).unwrap().display().to_string();
        for m in uses.modules.into_iter().filter(|m| m != top) {
            graph
                .entry(top.clone())
                .or_default()
                .entry(m)
                .or_default()
                .insert(shown.clone());
        }
        for child in uses.children {
            let mut p = path.clone();
            p.push(child);
            todo.push(p);
        }
    }
    assert!(
        files_read > 30,
        "read only {files_read} files: is the walk broken?"
    );
    graph
}

/// A cycle through `start`, if any: the modules in order.
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flat_map(|e| e.keys()) {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_module_graph_is_acyclic() {
    let graph = graph();
    // The walk sees the edges it must: a broken reader would pass anything.
    assert!(graph["reconcile"].contains_key("ledger"));
    assert!(graph["intake"].contains_key("sources"));
    for start in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, start) {
            let hops: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| format!("  {a} -> {b} (in {:?})", graph[a][b]))
                .collect();
            panic!(
                "the core's modules import each other in a cycle:\n{}",
                hops.join("\n")
            );
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(a.into())
            .or_default()
            .insert(b.into(), BTreeSet::new());
    }
    assert_eq!(
        cycle_from(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(cycle_from(&graph, "d"), None);
}
