//! A tiny WGSL preprocessor, driven from Rust by a typed builder.
//!
//! WGSL has no preprocessor of its own; webr1 specialises one source file per op family into its variants (f16 or
//! f32 storage, subgroup or shared-memory reductions, block sizes per quant format) with a handful of C-like directives,
//! as web-rwkv and llama.cpp's WebGPU backend do:
//!
//! - `#define NAME VALUE` (VALUE may be empty: a flag for `#ifdef`); redefining a name is an error, so a default in a
//!   shader is written `#ifndef NAME` / `#define NAME 256` / `#endif`;
//! - `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif`, nested to any depth;
//! - `#include "file.wgsl"` from the embedded shader table; a file is included once per shader (later includes of the
//!   same file are skipped, like `#pragma once`), so helper files can include each other freely.
//!
//! Outside directives, every whole identifier that names a macro is replaced by its value, recursively (`BLOCK` does
//! not touch `BLOCK_SIZE`; numbers such as `1e6` or `0x1fu` are never split into identifiers). Directive lines become
//! empty lines so the line numbers of a shader's own text are kept in compiler messages.
//!
//! Mistakes (unbalanced directives, unknown includes or directives, recursive macros, bad names) are programmer errors,
//! but they come back as `gpu.shader` errors, never panics.

use std::collections::{BTreeMap, HashSet};

use crate::{err, Result};

/// The macros a shader variant is compiled with: a typed builder whose values are formatted as WGSL literals.
///
/// `Macros` is ordered and hashable: it is part of the pipeline cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Macros {
    defs: BTreeMap<String, String>,
    /// The first bad name or value given to the builder, reported by [`preprocess`].
    invalid: Option<String>,
}

impl Macros {
    pub fn new() -> Self {
        Self::default()
    }

    /// `NAME` becomes the WGSL literal `{value}u`.
    pub fn u32(self, name: &str, value: u32) -> Self {
        self.text(name, &format!("{value}u"))
    }

    /// `NAME` becomes the WGSL literal `{value}i` (in parentheses when negative, so `a-NAME` stays valid).
    pub fn i32(self, name: &str, value: i32) -> Self {
        match value < 0 {
            true => self.text(name, &format!("({value}i)")),
            false => self.text(name, &format!("{value}i")),
        }
    }

    /// `NAME` becomes an exact WGSL `f32` literal (shortest round-trip form, `f` suffix; parenthesised when negative).
    /// The value must be finite: WGSL has no literal for infinities or NaN.
    pub fn f32(mut self, name: &str, value: f32) -> Self {
        if !value.is_finite() {
            self.invalid.get_or_insert_with(|| format!("macro {name}: {value} has no WGSL literal"));
            return self;
        }
        let literal = format!("{value:?}f");
        match value.is_sign_negative() {
            true => self.text(name, &format!("({literal})")),
            false => self.text(name, &literal),
        }
    }

    /// Defines `NAME` (as `true`) when `on`, and leaves it undefined otherwise: `#ifdef NAME` follows the flag.
    pub fn bool(mut self, name: &str, on: bool) -> Self {
        match on {
            true => self.text(name, "true"),
            false => {
                self.defs.remove(name);
                self
            }
        }
    }

    /// `NAME` becomes `value` verbatim, e.g. `text("T", "f16")`.
    pub fn text(mut self, name: &str, value: &str) -> Self {
        if !is_identifier(name) {
            self.invalid.get_or_insert_with(|| format!("macro name '{name}' is not an identifier"));
        } else if value.contains('\n') {
            self.invalid.get_or_insert_with(|| format!("macro {name}: value spans several lines"));
        } else {
            self.defs.insert(name.to_string(), value.trim().to_string());
        }
        self
    }

    pub fn is_defined(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.defs.get(name).map(String::as_str)
    }

    /// `NAME=VALUE` pairs in name order, for labels and messages.
    pub fn describe(&self) -> String {
        self.defs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Preprocesses the shader `name` with `macros`, resolving it and its `#include`s through `lookup` (file name without
/// the `.wgsl` suffix → source).
pub fn preprocess<'a>(name: &str, macros: &Macros, lookup: &dyn Fn(&str) -> Option<&'a str>) -> Result<String> {
    if let Some(why) = &macros.invalid {
        return Err(err!(GpuShader, "shader {name}: {why}"));
    }
    let source = lookup(name).ok_or_else(|| err!(GpuShader, "unknown shader '{name}'"))?;
    let mut state =
        State { defs: macros.defs.clone(), included: HashSet::from([name.to_string()]), out: String::new() };
    state.file(name, source, lookup)?;
    Ok(state.out)
}

struct State {
    defs: BTreeMap<String, String>,
    included: HashSet<String>,
    out: String,
}

/// One open `#ifdef`/`#ifndef`: whether its enclosing text is live, its condition, whether `#else` was seen.
struct Branch {
    parent_live: bool,
    condition: bool,
    in_else: bool,
    line: usize,
}

impl Branch {
    fn live(&self) -> bool {
        self.parent_live && (self.condition != self.in_else)
    }
}

impl State {
    fn file<'a>(&mut self, file: &str, source: &str, lookup: &dyn Fn(&str) -> Option<&'a str>) -> Result<()> {
        let mut branches: Vec<Branch> = Vec::new();
        for (index, line) in source.lines().enumerate() {
            let at = format!("{file}.wgsl:{}", index + 1);
            let live = branches.last().is_none_or(Branch::live);
            let Some(directive) = line.trim_start().strip_prefix('#') else {
                if live {
                    let expanded = self.expand(line, &mut Vec::new()).map_err(|e| err!(GpuShader, "{at}: {e}"))?;
                    self.out.push_str(&expanded);
                }
                self.out.push('\n');
                continue;
            };
            let (word, rest) = directive.trim().split_once(char::is_whitespace).unwrap_or((directive.trim(), ""));
            let rest = rest.trim();
            match word {
                "ifdef" | "ifndef" => {
                    let name = single_name(rest).ok_or_else(|| err!(GpuShader, "{at}: #{word} needs one name"))?;
                    let defined = self.defs.contains_key(name);
                    branches.push(Branch {
                        parent_live: live,
                        condition: defined == (word == "ifdef"),
                        in_else: false,
                        line: index + 1,
                    });
                }
                "else" => match branches.last_mut() {
                    Some(b) if !b.in_else => b.in_else = true,
                    Some(b) => return Err(err!(GpuShader, "{at}: second #else for the #if of line {}", b.line)),
                    None => return Err(err!(GpuShader, "{at}: #else without #ifdef")),
                },
                "endif" => {
                    branches.pop().ok_or_else(|| err!(GpuShader, "{at}: #endif without #ifdef"))?;
                }
                "define" if live => self.define(rest).map_err(|e| err!(GpuShader, "{at}: {e}"))?,
                "include" if live => {
                    let included = include_name(rest).ok_or_else(|| {
                        err!(GpuShader, "{at}: #include needs a quoted file name ending in .wgsl, got '{rest}'")
                    })?;
                    if self.included.insert(included.to_string()) {
                        let text = lookup(included)
                            .ok_or_else(|| err!(GpuShader, "{at}: unknown include \"{included}.wgsl\""))?;
                        self.file(included, text, lookup)?;
                    }
                }
                "define" | "include" => {}
                _ => return Err(err!(GpuShader, "{at}: unknown directive #{word}")),
            }
            self.out.push('\n');
        }
        match branches.last() {
            Some(b) => Err(err!(GpuShader, "{file}.wgsl:{}: #ifdef/#ifndef without #endif", b.line)),
            None => Ok(()),
        }
    }

    fn define(&mut self, rest: &str) -> std::result::Result<(), String> {
        let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if !is_identifier(name) {
            return Err(format!("#define needs a name, got '{name}'"));
        }
        if self.defs.contains_key(name) {
            return Err(format!("#define {name}: already defined (wrap a default in #ifndef {name})"));
        }
        self.defs.insert(name.to_string(), value.trim().to_string());
        Ok(())
    }

    /// Replaces every macro identifier in `text`, recursively; `active` holds the macros being expanded.
    fn expand(&self, text: &str, active: &mut Vec<String>) -> std::result::Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let word = c.is_ascii_alphanumeric() || c == b'_';
            if !word {
                let next = text[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[i..i + next]);
                i += next;
                continue;
            }
            // A token: an identifier, or a number whose letters (`1e6`, `0x1fu`) are not identifiers.
            let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
            let token = &text[i..end];
            match self.defs.get(token).filter(|_| !c.is_ascii_digit()) {
                Some(_) if active.iter().any(|a| a == token) => {
                    return Err(format!("macro {token} expands to itself ({})", active.join(" -> ")));
                }
                Some(value) => {
                    active.push(token.to_string());
                    out.push_str(&self.expand(value, active)?);
                    active.pop();
                }
                None => out.push_str(token),
            }
            i = end;
        }
        Ok(out)
    }
}

fn single_name(rest: &str) -> Option<&str> {
    Some(rest).filter(|r| is_identifier(r))
}

fn include_name(rest: &str) -> Option<&str> {
    let quoted = rest.strip_prefix('"')?.strip_suffix('"')?;
    quoted.strip_suffix(".wgsl").filter(|stem| !stem.is_empty() && !stem.contains('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(files: &[(&'static str, &'static str)], macros: &Macros) -> Result<String> {
        let lookup = |name: &str| files.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
        preprocess(files[0].0, macros, &lookup)
    }

    fn code(text: &str) -> Vec<&str> {
        text.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn builder_formats_wgsl_literals() {
        let m = Macros::new()
            .u32("BLOCK_BYTES", 144)
            .i32("NEG", -3)
            .f32("EPS", 1e-6)
            .f32("ONE", 1.0)
            .f32("MINUS", -0.5)
            .bool("F16", true)
            .bool("SUBGROUPS", false)
            .text("T", "f32");
        assert_eq!(m.get("BLOCK_BYTES"), Some("144u"));
        assert_eq!(m.get("NEG"), Some("(-3i)"));
        assert_eq!(m.get("EPS"), Some("1e-6f"));
        assert_eq!(m.get("ONE"), Some("1.0f"));
        assert_eq!(m.get("MINUS"), Some("(-0.5f)"));
        assert_eq!(m.get("F16"), Some("true"));
        assert!(!m.is_defined("SUBGROUPS"));
        assert_eq!(m.get("T"), Some("f32"));
        // A flag switched off after being switched on is undefined again.
        assert!(!m.bool("F16", false).is_defined("F16"));
    }

    #[test]
    fn substitutes_whole_identifiers_only() {
        let files = [("main", "let a = BLOCK + BLOCK_SIZE + MY_BLOCK + BLOCK2;\nlet b: T = 1e6 + 0x1fu + e6;")];
        let m = Macros::new().u32("BLOCK", 32).u32("BLOCK_SIZE", 256).text("T", "f16").text("e6", "oops");
        let out = run(&files, &m).unwrap();
        assert_eq!(code(&out), ["let a = 32u + 256u + MY_BLOCK + BLOCK2;", "let b: f16 = 1e6 + 0x1fu + oops;"]);
    }

    #[test]
    fn source_defines_expand_recursively_and_keep_line_numbers() {
        let files = [("main", "#define TWICE (WG * 2u)\n#define FLAG\nlet x = TWICE;\n#ifdef FLAG\nflag;\n#endif")];
        let out = run(&files, &Macros::new().u32("WG", 64)).unwrap();
        assert_eq!(out.lines().nth(2), Some("let x = (64u * 2u);"));
        assert_eq!(out.lines().nth(4), Some("flag;"));
        assert_eq!(out.lines().count(), 6);
    }

    #[test]
    fn nested_conditionals() {
        let src = "#ifdef A\na;\n#ifndef B\na_not_b;\n#else\na_b;\n#endif\n#else\nnot_a;\n#ifdef B\nnot_a_b;\n#endif\n#endif\nend;";
        let files = [("main", src)];
        let cases = [
            (Macros::new().bool("A", true), vec!["a;", "a_not_b;", "end;"]),
            (Macros::new().bool("A", true).bool("B", true), vec!["a;", "a_b;", "end;"]),
            (Macros::new(), vec!["not_a;", "end;"]),
            (Macros::new().bool("B", true), vec!["not_a;", "not_a_b;", "end;"]),
        ];
        for (m, want) in cases {
            assert_eq!(code(&run(&files, &m).unwrap()), want, "{}", m.describe());
        }
    }

    #[test]
    fn inactive_branches_ignore_defines_and_includes() {
        let files = [("main", "#ifdef OFF\n#define X 1\n#include \"missing.wgsl\"\n#endif\n#ifndef X\nno_x;\n#endif")];
        assert_eq!(code(&run(&files, &Macros::new()).unwrap()), ["no_x;"]);
    }

    #[test]
    fn includes_resolve_once_and_see_macros() {
        let files = [
            ("main", "#include \"common.wgsl\"\n#include \"quant.wgsl\"\nmain_body(N);"),
            ("common", "#define N 7u\nfn common() {}"),
            ("quant", "#include \"common.wgsl\"\nfn quant() -> T { return T(N); }"),
        ];
        let out = run(&files, &Macros::new().text("T", "f32")).unwrap();
        assert_eq!(code(&out), ["fn common() {}", "fn quant() -> f32 { return f32(7u); }", "main_body(7u);"]);
    }

    #[test]
    fn mistakes_are_errors_not_panics() {
        let bad = [
            ("#ifdef A\nx;", "without #endif"),
            ("x;\n#endif", "#endif without"),
            ("#else", "#else without"),
            ("#ifdef A\n#else\n#else\n#endif", "second #else"),
            ("#include \"nowhere.wgsl\"", "unknown include"),
            ("#include nowhere", "quoted file name"),
            ("#if A", "unknown directive #if"),
            ("#ifdef", "needs one name"),
            ("#ifdef A B", "needs one name"),
            ("#define N 1\n#define N 2", "already defined"),
            ("#define 9N 1", "needs a name"),
            ("#define LOOP (LOOP + 1)\nlet x = LOOP;", "expands to itself"),
            ("#define P Q\n#define Q P\nlet x = P;", "expands to itself"),
        ];
        for (src, want) in bad {
            let leaked: &'static str = Box::leak(src.to_string().into_boxed_str());
            let e = run(&[("main", leaked)], &Macros::new()).expect_err(src);
            assert_eq!(e.code, crate::ErrorCode::GpuShader);
            assert!(e.message.contains(want), "{src:?}: {}", e.message);
        }
        let e = run(&[("main", "x;")], &Macros::new().f32("EPS", f32::NAN)).unwrap_err();
        assert!(e.message.contains("no WGSL literal"), "{}", e.message);
        let e = run(&[("main", "x;")], &Macros::new().u32("not a name", 1)).unwrap_err();
        assert!(e.message.contains("not an identifier"), "{}", e.message);
        let e = preprocess("absent", &Macros::new(), &|_| None).unwrap_err();
        assert!(e.message.contains("unknown shader"), "{}", e.message);
    }

    #[test]
    fn builder_values_take_part_in_conditions_and_errors_name_the_line() {
        let files = [("main", "ok;\n#ifdef F16\nenable f16;\n#endif\n#bogus")];
        let e = run(&files, &Macros::new().bool("F16", true)).unwrap_err();
        assert!(e.message.starts_with("main.wgsl:5:"), "{}", e.message);
    }
}
