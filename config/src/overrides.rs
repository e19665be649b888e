//! Key paths (`interfaces[0].listeners[1].port`) and the operations on the
//! tree that use them: `--set key.path=value` overrides and redaction of
//! secret values in the rendered effective configuration.

use crate::tree::{self, Entry, Node, Pos, TreeIssue, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Parse `a.b[1].c` into segments.
pub(crate) fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut rest = path;
    if rest.is_empty() {
        return Err("empty key path".into());
    }
    loop {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let key = &rest[..end];
        if key.is_empty() {
            return Err(format!("invalid key path '{path}'"));
        }
        segs.push(Seg::Key(key.to_string()));
        rest = &rest[end..];
        while let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else {
                return Err(format!("invalid key path '{path}': missing ']'"));
            };
            let i: usize = r[..close]
                .parse()
                .map_err(|_| format!("invalid key path '{path}': bad index '{}'", &r[..close]))?;
            segs.push(Seg::Index(i));
            rest = &r[close + 1..];
        }
        if rest.is_empty() {
            return Ok(segs);
        }
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => return Err(format!("invalid key path '{path}'")),
        }
    }
}

fn shift(node: &mut Node, line: usize, col_offset: usize) {
    node.pos.line = line;
    node.pos.col += col_offset;
    match &mut node.value {
        Value::Scalar { .. } => {}
        Value::Seq(items) => items.iter_mut().for_each(|n| shift(n, line, col_offset)),
        Value::Map(entries) => entries.iter_mut().for_each(|e| {
            e.key_pos.line = line;
            e.key_pos.col += col_offset;
            shift(&mut e.value, line, col_offset);
        }),
    }
}

/// Apply one `key.path=value` override (number `n`, 1-based) to the tree.
/// The value is YAML (a scalar, or a flow list/mapping such as `[a, b]`).
/// Positions of the new nodes are `src`, line `n`, column within the
/// override argument.
pub(crate) fn apply(
    root: &mut Option<Node>,
    arg: &str,
    src: usize,
    n: usize,
) -> Result<(), TreeIssue> {
    let at = |col: usize| Pos { src, line: n, col };
    let Some((path, value)) = arg.split_once('=') else {
        return Err(TreeIssue {
            pos: at(1),
            path: String::new(),
            message: format!("invalid override '{arg}': expected key.path=value"),
        });
    };
    let path = path.trim();
    let segs = parse_path(path).map_err(|m| TreeIssue {
        pos: at(1),
        path: String::new(),
        message: m,
    })?;
    let issue = |col: usize, message: String| TreeIssue {
        pos: at(col),
        path: path.to_string(),
        message,
    };
    let value_col = arg.find('=').map_or(1, |i| arg[..i].chars().count() + 2);
    let parsed =
        tree::parse(value, src).map_err(|e| issue(e.pos.col + value_col - 1, e.message))?;
    let mut new = match parsed.root {
        Some(mut node) => {
            shift(&mut node, n, value_col - 1);
            node
        }
        None => Node::scalar("", true, at(value_col)),
    };
    if let Some(i) = parsed.issues.into_iter().next() {
        return Err(issue(i.pos.col + value_col - 1, i.message));
    }
    let mut cur = root.get_or_insert_with(|| Node::map(Vec::new(), at(1)));
    for (k, seg) in segs.iter().enumerate() {
        if cur.is_null() {
            *cur = match seg {
                Seg::Key(_) => Node::map(Vec::new(), at(1)),
                Seg::Index(_) => Node::seq(Vec::new(), at(1)),
            };
        }
        let so_far = render_path(&segs[..k]);
        cur = match (seg, &mut cur.value) {
            (Seg::Key(key), Value::Map(entries)) => {
                let idx = match entries.iter().position(|e| &e.key == key) {
                    Some(i) => i,
                    None => {
                        entries.push(Entry {
                            key: key.clone(),
                            key_pos: at(1),
                            value: Node::scalar("", true, at(value_col)),
                        });
                        entries.len() - 1
                    }
                };
                &mut entries[idx].value
            }
            (Seg::Index(i), Value::Seq(items)) => {
                if *i == items.len() {
                    items.push(Node::scalar("", true, at(value_col)));
                }
                let len = items.len();
                match items.get_mut(*i) {
                    Some(item) => item,
                    None => {
                        return Err(issue(
                            1,
                            format!("index {i} is out of range: {so_far} has {len} items"),
                        ))
                    }
                }
            }
            (Seg::Key(_), _) => {
                return Err(issue(
                    1,
                    format!("cannot set a key inside {so_far}: it is not a mapping"),
                ))
            }
            (Seg::Index(_), _) => {
                return Err(issue(1, format!("cannot index {so_far}: it is not a list")))
            }
        };
    }
    std::mem::swap(cur, &mut new);
    Ok(())
}

fn render_path(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() {
        s.push_str("the document");
    }
    s
}

/// Replace the value at `path` (if present) by a quoted `<redacted>`.
pub(crate) fn redact(root: &mut Node, path: &str) {
    let Ok(segs) = parse_path(path) else { return };
    let mut cur = root;
    for seg in &segs {
        let next = match (seg, &mut cur.value) {
            (Seg::Key(k), Value::Map(entries)) => entries
                .iter_mut()
                .find(|e| &e.key == k)
                .map(|e| &mut e.value),
            (Seg::Index(i), Value::Seq(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    *cur = Node::scalar("<redacted>", false, cur.pos);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("interfaces[0].listeners[1].port").unwrap(),
            vec![
                Seg::Key("interfaces".into()),
                Seg::Index(0),
                Seg::Key("listeners".into()),
                Seg::Index(1),
                Seg::Key("port".into()),
            ]
        );
        assert_eq!(parse_path("a").unwrap(), vec![Seg::Key("a".into())]);
        assert!(parse_path("").is_err());
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a[1").is_err());
        assert!(parse_path(".a").is_err());
        assert!(parse_path("a[0]b").is_err());
    }

    #[test]
    fn apply_creates_and_replaces() {
        let mut root = tree::parse("sip:\n  timers: {t1_ms: 500}\nl: [a]\n", 0)
            .unwrap()
            .root;
        apply(&mut root, "sip.timers.t1_ms=250", 1, 1).unwrap();
        apply(&mut root, "sip.workers=4", 1, 2).unwrap();
        apply(&mut root, "l[1]=b", 1, 3).unwrap();
        apply(&mut root, "new.list=[x, y]", 1, 4).unwrap();
        let out = tree::emit(root.as_ref().unwrap());
        assert!(out.contains("t1_ms: 250"), "{out}");
        assert!(out.contains("workers: 4"), "{out}");
        assert!(out.contains("- b"), "{out}");
        assert!(out.contains("new:\n  list:\n    - x\n    - y"), "{out}");
        let e = apply(&mut root, "l[5]=c", 1, 5).unwrap_err();
        assert!(e.message.contains("out of range"), "{}", e.message);
        let e = apply(&mut root, "sip.timers.t1_ms.x=1", 1, 6).unwrap_err();
        assert!(e.message.contains("not a mapping"), "{}", e.message);
        let e = apply(&mut root, "nothing", 1, 7).unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (7, 1));
        let e = apply(&mut root, "a=[1", 1, 8).unwrap_err();
        assert_eq!(e.pos.line, 8);
    }
}
