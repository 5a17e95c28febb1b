//! The docs kept true to the code (no GPU, no model; a second or two):
//!
//! - every error code README.md, `pkg/README.md` and `pkg/index.d.ts` name exists in `src/error.rs`'s table, the table
//!   and `ErrorCode::ALL` list the same codes, and every code is documented in at least one of those files;
//! - every flag README.md shows for a subcommand is in that subcommand's `--help`, every `--help` flag is in README.md,
//!   and every subcommand has a README section (a heading that names `webr1 SUBCOMMAND`);
//! - every numbered section of ARCHITECTURE.md cited anywhere in the repository exists (and so does a section cited
//!   by its title in double quotes after ARCHITECTURE.md and a comma), and the sections are numbered 1, 2, 3, … once
//!   each;
//! - ARCHITECTURE.md's module map names every module under `src/` and every shader, and every repository path the docs
//!   name in a code span or link exists (a `path:function` span also needs `fn function` in that file).
//!
//! README's JS examples are type-checked by the browser tests (`tests/browser/package-users.test.mjs`), where `tsc` is.
//!
//! How README.md places flags: in a section whose heading names `webr1 SUB`, a code span that starts with a flag
//! (`--top-p`, `-p 512`) gives flags of SUB; anywhere, a code span that starts with a subcommand (`bench --shape NAME`)
//! gives that subcommand's flags, and so does a line of a code block that runs `webr1 SUB` (or `cargo run -- SUB`).
//! Flags written elsewhere (`cargo test --release`) are not webr1's and are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use webr1::ErrorCode;

/// The Markdown files whose error codes and paths are checked.
const DOCS: [&str; 4] = ["README.md", "pkg/README.md", "www/README.md", "ARCHITECTURE.md"];

/// Where code may cite ARCHITECTURE.md (`node_modules` and generated files are skipped).
const CITING_DIRS: [&str; 8] = ["src", "shaders", "pkg", "www", "tests", "benches", "scripts", ".ci"];

/// Names in the docs that look like error codes (a code's family, a dot, a name) but are something else.
const NOT_CODES: [(&str, &str); 2] =
    [("chat.completion", "the object name of OpenAI's chat API"), ("tokenizer.chat_template", "a GGUF metadata key")];

/// File extensions: `model.gguf` is a file, not an error code of the `model` family.
const EXTENSIONS: [&str; 16] =
    ["gguf", "json", "jsonl", "js", "mjs", "ts", "rs", "md", "txt", "wasm", "html", "css", "toml", "py", "sh", "wgsl"];

/// Span prefixes that make a code span a path in the repository.
const REPO_DIRS: [&str; 8] = ["src/", "shaders/", "pkg/", "www/", "tests/", "benches/", "scripts/", ".ci/"];
const ROOT_FILES: [&str; 5] = ["README.md", "ARCHITECTURE.md", "Cargo.toml", "Cargo.lock", "rustfmt.toml"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Fails with every problem found, one a line.
fn assert_none(problems: &[String], what: &str) {
    assert!(problems.is_empty(), "{what}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "));
}

// ---------------------------------------------------------------------------------------------------------------
// Markdown, as much of it as the checks need.

#[derive(Debug)]
enum Piece {
    Heading {
        level: usize,
        text: String,
    },
    /// One line of a fenced code block and the block's language.
    Code {
        lang: String,
        text: String,
    },
    /// A code span in prose, `like this` (it may run over a line break).
    Span(String),
    /// The target of a link, `[text](target)`.
    Link(String),
}

/// A piece and the line (1-based) it starts on.
struct Item {
    line: usize,
    piece: Piece,
}

fn markdown(text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut fence: Option<String> = None;
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            prose(&mut paragraph, &mut items);
            fence = if fence.is_some() { None } else { Some(lang.trim().to_string()) };
        } else if let Some(lang) = &fence {
            items.push(Item { line: i + 1, piece: Piece::Code { lang: lang.clone(), text: line.to_string() } });
        } else if let Some(heading) = heading(trimmed) {
            prose(&mut paragraph, &mut items);
            items.push(Item { line: i + 1, piece: heading });
        } else if trimmed.is_empty() {
            prose(&mut paragraph, &mut items);
        } else {
            paragraph.push((i + 1, line));
        }
    }
    prose(&mut paragraph, &mut items);
    items
}

fn heading(line: &str) -> Option<Piece> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let text = line[level..].strip_prefix(' ')?;
    (level > 0).then(|| Piece::Heading { level, text: text.replace('`', "").trim().to_string() })
}

/// The code spans and link targets of a paragraph.
fn prose(paragraph: &mut Vec<(usize, &str)>, items: &mut Vec<Item>) {
    let mut open: Option<(usize, String)> = None;
    for (n, line) in paragraph.drain(..) {
        for (at, ch) in line.char_indices() {
            match (ch, open.as_mut()) {
                ('`', Some(_)) => {
                    let (start, span) = open.take().unwrap();
                    items.push(Item { line: start, piece: Piece::Span(span) });
                }
                ('`', None) => open = Some((n, String::new())),
                (_, Some((_, span))) => span.push(ch),
                ('(', None) if line[..at].ends_with(']') => {
                    let target = line[at + 1..].split(')').next().unwrap_or_default();
                    items.push(Item { line: n, piece: Piece::Link(target.to_string()) });
                }
                _ => {}
            }
        }
        if let Some((_, span)) = open.as_mut() {
            span.push(' ');
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Error codes.

/// The codes of `src/error.rs`'s table (its `//! | \`code\` | when |` rows), in order.
fn error_table() -> Vec<String> {
    let rows = read("src/error.rs");
    let codes: Vec<String> = rows
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    assert!(codes.len() > 10, "src/error.rs has no table of codes (`//! | \\`code\\` | when |` rows)");
    codes
}

fn family(code: &str) -> Option<&str> {
    code.split_once('.').map(|(f, _)| f)
}

/// `text` as an error code mention: `family.name` or `family.*` of a family the table has.
fn code_mention(text: &str, families: &BTreeSet<String>) -> Option<String> {
    let text = text.trim().trim_start_matches('[').trim_end_matches(']');
    let (fam, name) = text.split_once('.')?;
    let snake = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let is_code = families.contains(fam) && (name == "*" || snake(name)) && !EXTENSIONS.contains(&name);
    (is_code && !NOT_CODES.iter().any(|(n, _)| *n == text)).then(|| text.to_string())
}

/// The error codes a Markdown file names: in code spans, and as quoted strings in its code blocks.
fn markdown_codes(file: &str, families: &BTreeSet<String>, table: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for item in markdown(&read(file)) {
        match &item.piece {
            Piece::Span(span) if table.contains(span) => found.push((item.line, span.clone())),
            Piece::Span(span) => found.extend(code_mention(span, families).map(|c| (item.line, c))),
            Piece::Code { text, .. } => {
                let quoted = text.split(['\'', '"']).skip(1).step_by(2);
                found.extend(quoted.filter_map(|q| code_mention(q, families)).map(|c| (item.line, c)));
            }
            _ => {}
        }
    }
    found
}

/// The members of `Webr1ErrorCode` in `pkg/index.d.ts` with their lines: its literal codes (`'aborted'`), and its
/// families (`` `gguf.${string}` `` as `gguf.*`).
fn declared_codes() -> Vec<(usize, String)> {
    let dts = read("pkg/index.d.ts");
    let start = dts.find("type Webr1ErrorCode =").expect("pkg/index.d.ts declares `type Webr1ErrorCode`");
    let union = dts[start..].split(';').next().unwrap();
    let first_line = dts[..start].matches('\n').count() + 1;
    let mut members = Vec::new();
    for (i, line) in union.lines().enumerate() {
        let literal = line.split('\'').nth(1);
        let family = line.split('`').nth(1).and_then(|t| t.strip_suffix(".${string}")).map(|f| format!("{f}.*"));
        members.extend(literal.map(str::to_string).or(family).map(|code| (first_line + i, code)));
    }
    members
}

#[test]
fn error_codes_in_the_docs_exist_and_every_code_is_documented() {
    let table = error_table();
    let families: BTreeSet<String> = table.iter().filter_map(|c| family(c)).map(str::to_string).collect();
    let mut problems = Vec::new();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    for code in all.iter().filter(|c| !table.iter().any(|t| t == *c)) {
        problems.push(format!("`{code}` is in ErrorCode::ALL but not in src/error.rs's table"));
    }
    for code in table.iter().filter(|t| !all.contains(&t.as_str())) {
        problems.push(format!("`{code}` is in src/error.rs's table but not in ErrorCode::ALL"));
    }

    let mut documented = BTreeSet::new();
    let mut check = |file: &str, line: usize, code: &str, problems: &mut Vec<String>| match code.strip_suffix(".*") {
        Some(fam) if !families.contains(fam) => {
            problems.push(format!("{file}:{line} names the code family `{code}`, which src/error.rs does not have"))
        }
        Some(_) => {}
        None if !table.iter().any(|t| t == code) => problems
            .push(format!("{file}:{line} names the error code `{code}`, which src/error.rs's table does not define")),
        None => {
            documented.insert(code.to_string());
        }
    };
    for file in ["README.md", "pkg/README.md"] {
        for (line, code) in markdown_codes(file, &families, &table) {
            check(file, line, &code, &mut problems);
        }
    }
    // The other docs must name only codes that exist, but do not count as documenting them.
    for file in ["www/README.md", "ARCHITECTURE.md"] {
        for (line, code) in markdown_codes(file, &families, &table) {
            if code.strip_suffix(".*").map_or(!table.contains(&code), |fam| !families.contains(fam)) {
                problems
                    .push(format!("{file}:{line} names the error code `{code}`, which src/error.rs does not define"));
            }
        }
    }
    for (line, code) in declared_codes() {
        check("pkg/index.d.ts", line, &code, &mut problems);
    }
    eprintln!("{} codes in src/error.rs; {} of them named in the docs", table.len(), documented.len());
    for code in table.iter().filter(|c| !documented.contains(*c)) {
        problems
            .push(format!("`{code}` (src/error.rs) is documented in none of README.md, pkg/README.md, pkg/index.d.ts"));
    }
    assert_none(&problems, "error codes");
}

// ---------------------------------------------------------------------------------------------------------------
// CLI flags.

fn webr1_help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_webr1")).args(args).arg("--help").output().expect("webr1 runs");
    assert!(out.status.success(), "webr1 {args:?} --help failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("--help is UTF-8")
}

/// The lines of a `--help` section (`Commands:`, `Options:`) up to the next blank line.
fn help_section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines().skip_while(|l| *l != title).skip(1).take_while(|l| !l.trim().is_empty()).collect()
}

/// The subcommands `webr1 --help` lists (without `help`).
fn subcommands() -> Vec<String> {
    let help = webr1_help(&[]);
    let names =
        help_section(&help, "Commands:").into_iter().filter_map(|l| l.split_whitespace().next()).map(String::from);
    let names: Vec<String> = names.filter(|n| n != "help").collect();
    assert!(names.len() > 3, "webr1 --help lists no subcommands:\n{help}");
    names
}

/// Each option of `webr1 SUB --help` as its forms (`["-p", "--prompt"]`), without `--help`.
fn options(sub: &str) -> Vec<Vec<String>> {
    let help = webr1_help(&[sub]);
    let forms = |line: &str| -> Vec<String> {
        let tokens = line.split_whitespace().take_while(|t| t.starts_with('-') || t.starts_with('<'));
        tokens.filter(|t| t.starts_with('-')).map(|t| t.trim_end_matches(',').to_string()).collect()
    };
    let all = help_section(&help, "Options:").into_iter().filter(|l| l.trim_start().starts_with('-')).map(forms);
    all.filter(|f| !f.iter().any(|t| t == "--help" || t == "--version")).collect()
}

/// `token` as a flag (`--top-p`, `-p`, `--seed=1` → `--seed`), without trailing punctuation.
fn flag(token: &str) -> Option<String> {
    let token = token.trim_end_matches([',', ';', ':', '.', ')']).split('=').next().unwrap_or_default();
    let name = token.strip_prefix("--").or_else(|| token.strip_prefix('-').filter(|n| n.len() == 1))?;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    valid.then(|| token.to_string())
}

/// A shell line with quoted strings and the comment removed, as tokens.
fn shell_tokens(line: &str) -> Vec<String> {
    let code = line.split(" #").next().unwrap_or_default();
    let unquoted: String = code.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    let unquoted: String = unquoted.split('\'').step_by(2).collect::<Vec<_>>().join(" ");
    unquoted.split_whitespace().map(String::from).collect()
}

/// The subcommand a shell line runs (`webr1 SUB`, `target/release/webr1 SUB`, `cargo run ... -- SUB`) and the tokens
/// after it.
fn invocation(line: &str, subs: &[String]) -> Option<(String, Vec<String>)> {
    let tokens = shell_tokens(line);
    let cargo_run = tokens.first().is_some_and(|t| t == "cargo") && tokens.get(1).is_some_and(|t| t == "run");
    let at = tokens.iter().position(|t| t == "webr1" || t.ends_with("/webr1") || (cargo_run && t == "--"))?;
    let sub = tokens.get(at + 1).filter(|s| subs.contains(s))?;
    Some((sub.clone(), tokens[at + 2..].to_vec()))
}

/// The flags README.md shows for each subcommand, each with its line.
type Shown = BTreeMap<String, Vec<(usize, String)>>;

/// The flags README.md gives each subcommand, and the subcommands it has a section for.
fn readme_flags(subs: &[String]) -> (Shown, BTreeSet<String>) {
    let mut flags = Shown::new();
    let mut sections = BTreeSet::new();
    let mut current: Option<String> = None;
    for item in markdown(&read("README.md")) {
        let (sub, tokens) = match &item.piece {
            Piece::Heading { text, .. } => {
                current = subs.iter().find(|s| text.contains(&format!("webr1 {s}"))).cloned();
                sections.extend(current.clone());
                continue;
            }
            Piece::Code { lang, text } if ["sh", "bash", ""].contains(&lang.as_str()) => match invocation(text, subs) {
                Some(found) => found,
                None => continue,
            },
            Piece::Span(span) => {
                let tokens: Vec<String> = span.split_whitespace().map(String::from).collect();
                let first = tokens.first().map(String::as_str).unwrap_or_default();
                match first {
                    "webr1" if tokens.len() > 1 && subs.contains(&tokens[1]) => {
                        (tokens[1].clone(), tokens[2..].to_vec())
                    }
                    _ if subs.iter().any(|s| s == first) => (first.to_string(), tokens[1..].to_vec()),
                    _ if first.starts_with('-') && current.is_some() => (current.clone().unwrap(), tokens),
                    _ => continue,
                }
            }
            Piece::Code { .. } | Piece::Link(_) => continue,
        };
        flags.entry(sub).or_default().extend(tokens.iter().filter_map(|t| flag(t)).map(|f| (item.line, f)));
    }
    (flags, sections)
}

#[test]
fn cli_flags_in_readme_match_each_subcommands_help() {
    let subs = subcommands();
    let (readme, sections) = readme_flags(&subs);
    let mut problems = Vec::new();
    for sub in &subs {
        if !sections.contains(sub) {
            problems.push(format!("README.md has no section for `webr1 {sub}` (a heading that names it)"));
        }
        let options = options(sub);
        let shown = readme.get(sub).cloned().unwrap_or_default();
        eprintln!("webr1 {sub}: {} options in --help, {} flags shown in README.md", options.len(), shown.len());
        for (line, f) in &shown {
            if !options.iter().flatten().any(|o| o == f) {
                problems.push(format!("README.md:{line} shows `{sub} {f}`, which `webr1 {sub} --help` does not list"));
            }
        }
        for forms in &options {
            if !shown.iter().any(|(_, f)| forms.contains(f)) {
                problems
                    .push(format!("`webr1 {sub} --help` lists `{}`, which README.md does not show", forms.join(", ")));
            }
        }
    }
    assert_none(&problems, "CLI flags");
}

// ---------------------------------------------------------------------------------------------------------------
// ARCHITECTURE.md: its sections, module map and paths.

/// ARCHITECTURE.md's numbered sections (`### §5 Title`) and the titles of all its headings (without the number).
fn architecture_sections() -> (Vec<u32>, Vec<String>) {
    let mut numbers = Vec::new();
    let mut titles = Vec::new();
    for item in markdown(&read("ARCHITECTURE.md")) {
        if let Piece::Heading { text, .. } = item.piece {
            let numbered = text.strip_prefix('§').and_then(|t| t.split_once(' '));
            match numbered.and_then(|(n, title)| Some((n.parse::<u32>().ok()?, title))) {
                Some((n, title)) => {
                    numbers.push(n);
                    titles.push(title.to_lowercase());
                }
                None => titles.push(text.to_lowercase()),
            }
        }
    }
    (numbers, titles)
}

/// The section numbers at the start of `text` (`§5`, `§5, §6`, `§5 and §6`).
fn section_numbers(text: &str) -> Vec<u32> {
    let mut numbers = Vec::new();
    let mut rest = text;
    loop {
        let t = rest.trim_start_matches([' ', ',']);
        let t = t.strip_prefix("and ").unwrap_or(t);
        let Some(after) = t.strip_prefix('§') else { return numbers };
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse() {
            Ok(n) => numbers.push(n),
            Err(_) => return numbers,
        }
        rest = &after[digits.len()..];
    }
}

/// What a file cites after each mention of ARCHITECTURE.md: section numbers, or a section title in double quotes
/// after a comma.
fn citations(text: &str) -> Vec<(usize, Result<u32, String>)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("ARCHITECTURE.md") {
        let line = text[..at].matches('\n').count() + 1;
        let rest = &text[at + "ARCHITECTURE.md".len()..];
        let numbers = section_numbers(rest);
        found.extend(numbers.iter().map(|&n| (line, Ok(n))));
        let separated = rest.trim_start_matches([',', ':', ' ', '(']);
        if numbers.is_empty() && separated.len() < rest.len() {
            let title = separated.strip_prefix('"').and_then(|t| t.split('"').next()).filter(|t| !t.contains('\n'));
            if let Some(title) = title {
                found.push((line, Err(title.to_string())));
            }
        }
    }
    found
}

/// Every text file under `dir`, skipping `node_modules` and files that are not UTF-8.
fn text_files(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && entry.file_name() != "node_modules" {
            text_files(&path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((path.strip_prefix(root()).unwrap().display().to_string(), text));
        }
    }
}

#[test]
fn architecture_sections_cited_anywhere_exist() {
    let (numbers, titles) = architecture_sections();
    let mut problems = Vec::new();
    let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
    if numbers != expected {
        problems.push(format!("ARCHITECTURE.md numbers its sections {numbers:?}: they must run 1, 2, 3, … once each"));
    }
    let mut files = Vec::new();
    for dir in CITING_DIRS {
        text_files(&root().join(dir), &mut files);
    }
    files.extend(["README.md", "ARCHITECTURE.md"].map(|f| (f.to_string(), read(f))));
    let mut cited = 0;
    for (file, text) in &files {
        for (line, citation) in citations(text) {
            cited += 1;
            match citation {
                Ok(n) if !numbers.contains(&n) => problems
                    .push(format!("{file}:{line} cites ARCHITECTURE.md §{n}, which ARCHITECTURE.md does not have")),
                Err(title) if !titles.contains(&title.to_lowercase()) => problems.push(format!(
                    "{file}:{line} cites ARCHITECTURE.md section \"{title}\", which has no such heading"
                )),
                _ => {}
            }
        }
    }
    // ARCHITECTURE.md's own references (`(§10)`) are to itself.
    let own = read("ARCHITECTURE.md");
    for (at, _) in own.match_indices('§') {
        let line = own[..at].matches('\n').count() + 1;
        for n in section_numbers(&own[at..]).into_iter().filter(|n| !numbers.contains(n)) {
            problems.push(format!("ARCHITECTURE.md:{line} refers to §{n}, which it does not have"));
        }
    }
    eprintln!("{} numbered sections; {cited} citations in {} files", numbers.len(), files.len());
    assert!(cited > 10, "found only {cited} citations of ARCHITECTURE.md in the code: is the search broken?");
    assert_none(&problems, "ARCHITECTURE.md sections");
}

/// Whether a code span names a path in the repository (`src/gpu/`, `tests/gpu_*.rs`, `src/model/forward.rs:build`).
fn repo_path(span: &str) -> Option<(&str, Option<&str>)> {
    let (path, symbol) = match span.split_once(':') {
        Some((p, s)) => (p, Some(s)),
        None => (span, None),
    };
    let is_path = !path.contains(char::is_whitespace)
        && (REPO_DIRS.iter().any(|d| path.starts_with(d)) || ROOT_FILES.contains(&path));
    is_path.then_some((path, symbol))
}

/// Whether `path` exists; a `*` in its last segment matches any run of characters.
fn path_exists(path: &str) -> bool {
    let Some((dir, pattern)) = path.rsplit_once('/').filter(|(_, last)| last.contains('*')) else {
        return root().join(path).exists();
    };
    let (prefix, suffix) = pattern.split_once('*').unwrap();
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else { return false };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        name.len() >= prefix.len() + suffix.len() && name.starts_with(prefix) && name.ends_with(suffix)
    })
}

/// Whether the file at `path` defines `symbol` (its last `::` segment) as a function.
fn defines(path: &str, symbol: &str) -> bool {
    let name = symbol.rsplit("::").next().unwrap_or(symbol);
    let text = read(path);
    ["(", "<"].iter().any(|end| text.contains(&format!("fn {name}{end}")))
        || text.contains(&format!("function {name}("))
}

/// Problems with the paths a Markdown file names (code spans that are repository paths, relative links).
fn path_problems(file: &str) -> Vec<String> {
    let base = Path::new(file).parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for item in markdown(&read(file)) {
        let line = item.line;
        match &item.piece {
            Piece::Span(span) => {
                let Some((path, symbol)) = repo_path(span) else { continue };
                if !path_exists(path) {
                    problems.push(format!("{file}:{line} names `{path}`, which does not exist"));
                } else if let Some(symbol) = symbol.filter(|_| !path.ends_with('/')) {
                    if !defines(path, symbol) {
                        problems.push(format!("{file}:{line} names `{span}`, but {path} has no function `{symbol}`"));
                    }
                }
            }
            Piece::Link(target) if !target.contains("://") && !target.starts_with(['#', '/']) => {
                let path = base.join(target.split('#').next().unwrap_or_default());
                if !root().join(&path).exists() {
                    problems.push(format!("{file}:{line} links to `{target}`, which does not exist"));
                }
            }
            _ => {}
        }
    }
    problems
}

#[test]
fn the_module_map_names_every_module_and_every_named_path_exists() {
    let architecture = read("ARCHITECTURE.md");
    let items = markdown(&architecture);
    let start = items.iter().position(|i| matches!(&i.piece, Piece::Heading { text, .. } if text == "Module map"));
    let start = start.expect("ARCHITECTURE.md has a `## Module map` section") + 1;
    let end = items[start..]
        .iter()
        .position(|i| matches!(i.piece, Piece::Heading { level, .. } if level <= 2))
        .map_or(items.len(), |n| start + n);
    let mapped: BTreeSet<&str> = items[start..end]
        .iter()
        .filter_map(|i| match &i.piece {
            Piece::Span(span) => repo_path(span).map(|(path, _)| path),
            _ => None,
        })
        .collect();
    let mut modules = Vec::new();
    text_files(&root().join("src"), &mut modules);
    text_files(&root().join("shaders"), &mut modules);
    let mut problems: Vec<String> = modules
        .iter()
        .map(|(path, _)| path.as_str())
        .filter(|path| (path.ends_with(".rs") || path.ends_with(".wgsl")) && !mapped.contains(path))
        .map(|path| format!("ARCHITECTURE.md's module map does not name `{path}`"))
        .collect();
    assert!(mapped.len() > 50, "the module map names only {} paths: is the search broken?", mapped.len());
    for file in DOCS {
        problems.extend(path_problems(file));
    }
    assert_none(&problems, "ARCHITECTURE.md's module map and the paths the docs name");
}
