//! A small positioned YAML tree (mapping / sequence / scalar, each with its
//! line and column) built from the `granit-parser` event stream that
//! serde-saphyr itself uses, plus a minimal block-style emitter.
//!
//! Typing happens later (in `build`), so every key path can be mapped to the
//! place in the source it came from, and substitution can run on scalar
//! values after parsing without ever producing YAML structure.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest tree accepted after alias expansion (the parser itself limits
/// nesting to a few hundred levels; this guards expansion through aliases).
const MAX_DEPTH: usize = 600;
/// Most nodes accepted after alias expansion ("billion laughs" guard).
const MAX_NODES: usize = 200_000;

/// A source position. `src` indexes the list of source names (the file, or
/// a `--set` override); `line` and `col` are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub src: usize,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
    /// Height of the subtree (1 for a scalar).
    height: usize,
    /// Number of nodes in the subtree.
    count: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar { text: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// A problem found while building the tree: position and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeIssue {
    pub pos: Pos,
    /// Key path of the offending node when known (empty otherwise).
    pub path: String,
    pub message: String,
}

impl Node {
    pub fn scalar(text: impl Into<String>, plain: bool, pos: Pos) -> Node {
        Node {
            pos,
            value: Value::Scalar {
                text: text.into(),
                plain,
            },
            height: 1,
            count: 1,
        }
    }

    pub fn map(entries: Vec<Entry>, pos: Pos) -> Node {
        let height = 1 + entries.iter().map(|e| e.value.height).max().unwrap_or(0);
        let count = 1 + entries.iter().map(|e| e.value.count + 1).sum::<usize>();
        Node {
            pos,
            value: Value::Map(entries),
            height,
            count,
        }
    }

    pub fn seq(items: Vec<Node>, pos: Pos) -> Node {
        let height = 1 + items.iter().map(|n| n.height).max().unwrap_or(0);
        let count = 1 + items.iter().map(|n| n.count).sum::<usize>();
        Node {
            pos,
            value: Value::Seq(items),
            height,
            count,
        }
    }

    /// YAML core-schema null: an empty plain scalar, `~` or `null`.
    pub fn is_null(&self) -> bool {
        match &self.value {
            Value::Scalar { text, plain: true } => {
                matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Pos)>,
        merges: Vec<Node>,
    },
}

struct Builder {
    src: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
    issues: Vec<TreeIssue>,
}

fn pos_of(src: usize, span: &Span) -> Pos {
    Pos {
        src,
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

impl Builder {
    fn fatal(&self, pos: Pos, message: impl Into<String>) -> TreeIssue {
        TreeIssue {
            pos,
            path: self.path(),
            message: message.into(),
        }
    }

    /// Key path of the node being built (the open collections' keys/indexes).
    fn path(&self) -> String {
        let mut p = String::new();
        for f in &self.stack {
            match f {
                Frame::Seq { items, .. } => p.push_str(&format!("[{}]", items.len())),
                Frame::Map {
                    key: Some((k, _)), ..
                } => {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(k);
                }
                Frame::Map { key: None, .. } => {}
            }
        }
        p
    }

    /// A node is complete: remember its anchor and attach it to its parent.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), TreeIssue> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let path = self.path();
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match top {
            Frame::Seq { items, .. } => items.push(node),
            Frame::Map {
                entries,
                key,
                merges,
                ..
            } => match key.take() {
                None => match node.value {
                    // A `<<` key is a merge key (applied at the mapping's end).
                    Value::Scalar { text, .. } => *key = Some((text, node.pos)),
                    _ => {
                        return Err(TreeIssue {
                            pos: node.pos,
                            path,
                            message: "mapping keys must be scalars".into(),
                        })
                    }
                },
                Some((k, key_pos)) => {
                    if k == "<<" {
                        merges.push(node);
                    } else if entries.iter().any(|e| e.key == k) {
                        // `path` already ends with this key (it is pending).
                        self.issues.push(TreeIssue {
                            pos: key_pos,
                            path,
                            message: format!("duplicate key '{k}'"),
                        });
                    } else {
                        entries.push(Entry {
                            key: k,
                            key_pos,
                            value: node,
                        });
                    }
                }
            },
        }
        Ok(())
    }

    /// Apply `<<` merge keys: keys already present win, earlier merges win.
    fn merge(&mut self, entries: &mut Vec<Entry>, merges: Vec<Node>) {
        for m in merges {
            let sources = match m.value {
                Value::Map(src) => vec![src],
                Value::Seq(items) => {
                    let mut v = Vec::new();
                    for item in items {
                        match item.value {
                            Value::Map(src) => v.push(src),
                            _ => self.issues.push(TreeIssue {
                                pos: item.pos,
                                path: self.path(),
                                message: "merge key '<<' expects mappings".into(),
                            }),
                        }
                    }
                    v
                }
                _ => {
                    self.issues.push(TreeIssue {
                        pos: m.pos,
                        path: self.path(),
                        message: "merge key '<<' expects a mapping or a list of mappings".into(),
                    });
                    Vec::new()
                }
            };
            for src in sources {
                for e in src {
                    if !entries.iter().any(|x| x.key == e.key) {
                        entries.push(e);
                    }
                }
            }
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), TreeIssue> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.fatal(
                pos,
                format!("document too large (more than {MAX_NODES} nodes after alias expansion)"),
            ));
        }
        Ok(())
    }

    fn event(&mut self, ev: Event<'_>, pos: Pos) -> Result<(), TreeIssue> {
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.count(1, pos)?;
                let plain = matches!(style, ScalarStyle::Plain);
                self.complete(Node::scalar(text.into_owned(), plain, pos), anchor)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                self.count(1, pos)?;
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(_, anchor, _) => {
                self.count(1, pos)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    merges: Vec::new(),
                });
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => {
                    self.complete(Node::seq(items, pos), anchor)?;
                }
                _ => return Err(self.fatal(pos, "unbalanced sequence end")),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    pos,
                    anchor,
                    mut entries,
                    merges,
                    ..
                }) => {
                    self.merge(&mut entries, merges);
                    self.complete(Node::map(entries, pos), anchor)?;
                }
                _ => return Err(self.fatal(pos, "unbalanced mapping end")),
            },
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(self.fatal(pos, "alias to an unknown anchor"));
                };
                if self.stack.len() + node.height > MAX_DEPTH {
                    return Err(self.fatal(pos, "alias expansion nests too deeply"));
                }
                self.count(node.count, pos)?;
                // The alias is used here: report problems inside it at the alias.
                let node = relocate(node, pos);
                self.complete(node, 0)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Give an alias copy the position of the alias token (all its nodes), so
/// errors point at the place where the value is used.
fn relocate(mut node: Node, pos: Pos) -> Node {
    fn walk(n: &mut Node, pos: Pos) {
        n.pos = pos;
        match &mut n.value {
            Value::Scalar { .. } => {}
            Value::Seq(items) => items.iter_mut().for_each(|i| walk(i, pos)),
            Value::Map(entries) => entries.iter_mut().for_each(|e| {
                e.key_pos = pos;
                walk(&mut e.value, pos);
            }),
        }
    }
    walk(&mut node, pos);
    node
}

/// Result of parsing one source: the root node (None for an empty document)
/// and the non-fatal issues (duplicate keys, bad merges).
pub(crate) struct Parsed {
    pub root: Option<Node>,
    pub issues: Vec<TreeIssue>,
}

/// Parse YAML text into a positioned tree. A syntax error is returned as the
/// single fatal issue.
pub(crate) fn parse(text: &str, src: usize) -> Result<Parsed, TreeIssue> {
    let mut b = Builder {
        src,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        issues: Vec::new(),
    };
    let mut docs = 0usize;
    for item in Parser::new_from_str(text) {
        let (ev, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                let mut message = e.info();
                if message.is_empty() {
                    message = "invalid YAML".into();
                }
                return Err(TreeIssue {
                    pos: Pos {
                        src: b.src,
                        line: m.line().max(1),
                        col: m.col() + 1,
                    },
                    path: String::new(),
                    message: format!("YAML syntax error: {message}"),
                });
            }
        };
        let pos = pos_of(b.src, &span);
        match ev {
            Event::DocumentStart(..) => {
                docs += 1;
                if docs > 1 {
                    return Err(b.fatal(pos, "only one YAML document is allowed"));
                }
                b.anchors.clear();
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            other => b.event(other, pos)?,
        }
    }
    Ok(Parsed {
        root: b.root,
        issues: b.issues,
    })
}

/// Emit a tree as block-style YAML.
pub(crate) fn emit(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(entries) if !entries.is_empty() => emit_map(entries, 0, &mut out),
        Value::Seq(items) if !items.is_empty() => emit_seq(items, 0, &mut out),
        _ => {
            out.push_str(&inline(node));
            out.push('\n');
        }
    }
    out
}

fn inline(node: &Node) -> String {
    match &node.value {
        Value::Scalar { text, plain } => {
            if *plain {
                text.clone()
            } else {
                quote(text)
            }
        }
        Value::Seq(_) => "[]".into(),
        Value::Map(_) => "{}".into(),
    }
}

fn is_block(node: &Node) -> bool {
    match &node.value {
        Value::Seq(items) => !items.is_empty(),
        Value::Map(entries) => !entries.is_empty(),
        Value::Scalar { .. } => false,
    }
}

fn emit_key(key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with('-');
    if simple {
        key.to_string()
    } else {
        quote(key)
    }
}

fn emit_map(entries: &[Entry], indent: usize, out: &mut String) {
    for e in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(&emit_key(&e.key));
        out.push(':');
        match &e.value.value {
            Value::Map(children) if !children.is_empty() => {
                out.push('\n');
                emit_map(children, indent + 2, out);
            }
            Value::Seq(items) if !items.is_empty() => {
                out.push('\n');
                emit_seq(items, indent + 2, out);
            }
            _ => {
                out.push(' ');
                out.push_str(&inline(&e.value));
                out.push('\n');
            }
        }
    }
}

fn emit_seq(items: &[Node], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        if is_block(item) {
            let mut inner = String::new();
            match &item.value {
                Value::Map(children) => emit_map(children, indent + 2, &mut inner),
                Value::Seq(children) => emit_seq(children, indent + 2, &mut inner),
                Value::Scalar { .. } => {}
            }
            // The first line goes right after "- ".
            out.push_str(inner.get(indent + 2..).unwrap_or(""));
        } else {
            out.push_str(&inline(item));
            out.push('\n');
        }
    }
}

/// A YAML double-quoted scalar.
pub(crate) fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                q.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text, 0).unwrap().root.unwrap()
    }

    #[test]
    fn positions_of_keys_and_values() {
        let n = root("a: 1\nb:\n  c: [x, {d: y}]\n");
        let Value::Map(e) = &n.value else { panic!() };
        assert_eq!((e[0].key_pos.line, e[0].key_pos.col), (1, 1));
        assert_eq!((e[0].value.pos.line, e[0].value.pos.col), (1, 4));
        let Value::Map(b) = &e[1].value.value else {
            panic!()
        };
        assert_eq!((b[0].key_pos.line, b[0].key_pos.col), (3, 3));
        let Value::Seq(items) = &b[0].value.value else {
            panic!()
        };
        assert_eq!((items[0].pos.line, items[0].pos.col), (3, 7));
        assert_eq!((items[1].pos.line, items[1].pos.col), (3, 10));
    }

    #[test]
    fn duplicate_key_is_reported() {
        let p = parse("a: 1\nb: 2\na: 3\n", 0).unwrap();
        assert_eq!(p.issues.len(), 1);
        assert_eq!(p.issues[0].pos.line, 3);
        assert!(p.issues[0].message.contains("duplicate key 'a'"));
        assert_eq!(p.issues[0].path, "a");
        let p = parse("x:\n  - {b: 1, b: 2}\n", 0).unwrap();
        assert_eq!(p.issues[0].path, "x[0].b");
        assert_eq!((p.issues[0].pos.line, p.issues[0].pos.col), (2, 12));
    }

    #[test]
    fn aliases_and_merge_keys() {
        let n = root("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n");
        let Value::Map(e) = &n.value else { panic!() };
        let Value::Map(o) = &e[1].value.value else {
            panic!()
        };
        let keys: Vec<_> = o.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["y", "x"]);
        let Value::Scalar { text, .. } = &o[0].value.value else {
            panic!()
        };
        assert_eq!(text, "3");
    }

    #[test]
    fn billion_laughs_is_bounded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&doc, 0).err().unwrap();
        assert!(err.message.contains("too large"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_location() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n", 0).err().unwrap();
        assert!(err.pos.line >= 2, "{err:?}");
        assert!(err.message.starts_with("YAML syntax error"));
    }

    #[test]
    fn second_document_rejected() {
        let err = parse("a: 1\n---\nb: 2\n", 0).err().unwrap();
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn emit_roundtrip() {
        let src = "a: 1\nb:\n  - x\n  - c: \"q: \\\"\"\n    d: []\n  - - 1\n    - 2\ne: {}\n";
        let out = emit(&root(src));
        let again = emit(&root(&out));
        assert_eq!(out, again);
        assert!(out.contains("- c: \"q: \\\"\""), "{out}");
    }
}
