//! Garbage in, errors out: bounded random and mutated inputs must never
//! panic or hang, and every error must carry a sane location.

use std::collections::HashMap;

use portcullis_config::*;

/// Small deterministic PRNG (xorshift64*), fixed seeds: failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ": ",
    ",",
    "- ",
    "#",
    "&a ",
    "*a",
    "!tag ",
    "!!str ",
    "|",
    ">",
    "'",
    "\"",
    "%YAML 1.2",
    "---",
    "...",
    "\n",
    "\n  ",
    "\n    ",
    "\t",
    " ",
    "${",
    "$${",
    "}",
    "$1",
    "${file:/dev/null}",
    "${X:-1}",
    "<<: ",
    "name",
    "interfaces",
    "listeners",
    "proto",
    "udp",
    "port",
    "70000",
    "0",
    "5060",
    "127.0.0.1",
    "::1",
    "~",
    "null",
    "true",
    "é",
    "\u{feff}",
    "\\",
    "a",
    "zz",
    "trunks",
    "routes",
    "group",
    "interface",
    "?",
    "@",
    "`",
];

fn opts() -> LoadOptions {
    let mut env = HashMap::new();
    env.insert("X".to_string(), "${Y}".to_string());
    LoadOptions {
        env: EnvSource::Map(env),
        overrides: Vec::new(),
    }
}

fn check(text: &str) {
    match load_str_with(text, "fuzz.yaml", &opts()) {
        Ok(cfg) => {
            // Whatever validated must render and load back to the same thing.
            let shown = render_effective(&cfg);
            let again = load_str_with(&shown, "again.yaml", &opts());
            assert_eq!(again.as_ref().ok(), Some(&cfg), "{text:?}\n{shown}");
        }
        Err(e) => {
            assert!(!e.errors.is_empty());
            let lines = text.split('\n').count();
            for x in &e.errors {
                assert_eq!(x.file, "fuzz.yaml");
                assert!(x.line >= 1 && x.line <= lines + 1, "{x} in {text:?}");
                assert!(x.column >= 1, "{x} in {text:?}");
                assert!(!x.message.is_empty());
            }
        }
    }
}

#[test]
fn random_token_soup_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let n = rng.below(60);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(rng.pick(TOKENS));
        }
        check(&s);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let n = rng.below(200);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn mutated_example_never_panics() {
    let base = include_str!("../examples/sbc.yaml");
    let mut rng = Rng(7);
    let mut valid = 0;
    for _ in 0..400 {
        let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(lines.len());
            match rng.below(6) {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                2 => {
                    let j = rng.below(lines.len());
                    lines.swap(i, j);
                }
                3 => {
                    let l = &mut lines[i];
                    let cut = rng.below(l.len() + 1);
                    if l.is_char_boundary(cut) {
                        l.truncate(cut);
                    }
                }
                4 => {
                    let t = rng.pick(TOKENS);
                    let l = &mut lines[i];
                    let at = rng.below(l.len() + 1);
                    if l.is_char_boundary(at) {
                        l.insert_str(at, t);
                    }
                }
                _ => {
                    lines[i] = format!(" {}", lines[i]);
                }
            }
        }
        let text = lines.join("\n");
        if load_str_with(&text, "fuzz.yaml", &opts()).is_ok() {
            valid += 1;
        }
        check(&text);
    }
    // Sanity: the mutations are not all fatal (comment edits etc. still load).
    assert!(valid > 0);
}

#[test]
fn deep_nesting_is_rejected_without_stack_overflow() {
    for s in [
        "[".repeat(100_000),
        "{a: ".repeat(20_000),
        "- ".repeat(20_000),
        format!("interfaces: {}", "[".repeat(50_000)),
    ] {
        let e = load_str_with(&s, "fuzz.yaml", &opts()).unwrap_err();
        assert!(!e.errors.is_empty());
    }
}

#[test]
fn alias_bombs_are_bounded() {
    let mut doc = String::from("interfaces:\n  - &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        doc.push_str(&format!(
            "  - &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = load_str_with(&doc, "bomb.yaml", &opts()).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
}

#[test]
fn override_garbage_never_panics() {
    let mut rng = Rng(99);
    for _ in 0..1000 {
        let mut ov = String::new();
        for _ in 0..rng.below(8) {
            ov.push_str(rng.pick(&[
                "interfaces",
                "[0]",
                "[1]",
                "[",
                "]",
                ".",
                "=",
                "listeners",
                "port",
                "5070",
                "{",
                "}",
                "x",
                "sip",
                "timers",
                "t1_ms",
                "=[",
                "\n",
                "é",
            ]));
        }
        let o = LoadOptions {
            env: EnvSource::Map(HashMap::new()),
            overrides: vec![ov],
        };
        let _ = load_file_with(None, &o);
    }
}
