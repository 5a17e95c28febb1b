//! MODEL arguments: a local path, an `http(s)://` URL, or `hf:owner/repo/file.gguf` (a file in a Hugging Face
//! repository). A URL is downloaded once into the cache (`$WEBR1_CACHE`, else the platform's cache directory) and the
//! cached file is used from then on; see [`super::download`].

use std::path::{Path, PathBuf};
use webr1::{err, Result};

/// The model used when none is named: DeepSeek-R1-Distill-Qwen-1.5B, Q4_K_M (1.1 GB).
pub const DEFAULT_MODEL: &str =
    "hf:unsloth/DeepSeek-R1-Distill-Qwen-1.5B-GGUF/DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf";

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Url(String),
}

/// Reads a MODEL argument without touching the disk or the network.
pub fn parse(arg: &str) -> Result<Source> {
    if let Some(spec) = arg.strip_prefix("hf:") {
        return hf_url(spec).map(Source::Url);
    }
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        cache_relative_path(arg)?; // reject what cannot be cached before anything else happens
        return Ok(Source::Url(arg.to_string()));
    }
    Ok(Source::Path(PathBuf::from(arg)))
}

/// `owner/repo/path/to/file.gguf` → `https://huggingface.co/owner/repo/resolve/main/path/to/file.gguf`.
pub fn hf_url(spec: &str) -> Result<String> {
    let usage = || {
        err!(Usage, "'hf:{spec}' is not a Hugging Face file name: write hf:OWNER/REPO/FILE.gguf, e.g. {DEFAULT_MODEL}")
    };
    let mut parts = spec.splitn(3, '/');
    let (owner, repo, file) = match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(r), Some(f)) => (o, r, f),
        (Some(_), Some(r), None) if r.contains(':') => {
            return Err(err!(
                Usage,
                "'hf:{spec}': picking a file by quantisation needs a repository listing, which webr1 does not fetch; \
                 name the file instead: hf:OWNER/REPO/FILE.gguf"
            ))
        }
        _ => return Err(usage()),
    };
    let name_ok = |s: &str| {
        !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let file_ok = file.split('/').all(|seg| {
        name_ok(seg) || (!seg.is_empty() && seg != "." && seg != ".." && !seg.contains(['?', '#', '%', '\\']))
    });
    if !name_ok(owner) || !name_ok(repo) || !file_ok || file.chars().any(char::is_control) {
        return Err(usage());
    }
    Ok(format!("https://huggingface.co/{owner}/{repo}/resolve/main/{file}"))
}

/// The cache directory: `$WEBR1_CACHE`, else `webr1` in the platform's cache directory.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEBR1_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("webr1"))
        .ok_or_else(|| err!(Usage, "no cache directory is known on this system; set WEBR1_CACHE to one"))
}

/// Where a URL's file lives inside the cache: `host/path/segments`, each segment checked so that no URL can name a
/// file outside the cache.
pub fn cache_relative_path(url: &str) -> Result<PathBuf> {
    let bad = || err!(Usage, "cannot use the URL {url:?}: expected http(s)://HOST/PATH/FILE.gguf");
    let rest = url.split_once("://").map(|(_, r)| r).ok_or_else(bad)?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    let host = host.rsplit('@').next().unwrap_or_default().replace(':', "_");
    let mut out = PathBuf::new();
    for seg in std::iter::once(host.as_str()).chain(path.split('/')) {
        let clean: String =
            seg.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.+=~".contains(c) { c } else { '_' }).collect();
        if clean.is_empty() || clean.chars().all(|c| c == '.') {
            return Err(bad());
        }
        out.push(clean);
    }
    if out.components().count() < 2 {
        return Err(bad());
    }
    Ok(out)
}

/// The local file of a MODEL argument (the default model when there is none), downloading it first when needed.
pub fn resolve(arg: Option<&str>) -> Result<PathBuf> {
    match parse(arg.unwrap_or(DEFAULT_MODEL))? {
        Source::Path(path) => Ok(path),
        Source::Url(url) => {
            let dest = cache_dir()?.join(cache_relative_path(&url)?);
            if !dest.exists() {
                super::download::download(&url, &dest)?;
            }
            Ok(dest)
        }
    }
}

/// A short name for a model file, as the server and the benchmark print it.
pub fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_resolve_to_the_resolve_url() {
        let cases = [
            (
                "unsloth/DeepSeek-R1-Distill-Qwen-1.5B-GGUF/DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf",
                "https://huggingface.co/unsloth/DeepSeek-R1-Distill-Qwen-1.5B-GGUF/resolve/main/\
                 DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf",
            ),
            ("a/b/sub/dir/m.gguf", "https://huggingface.co/a/b/resolve/main/sub/dir/m.gguf"),
        ];
        for (spec, want) in cases {
            assert_eq!(hf_url(spec).unwrap(), want);
            assert_eq!(parse(&format!("hf:{spec}")).unwrap(), Source::Url(want.to_string()));
        }
    }

    #[test]
    fn bad_hf_names_are_usage_errors() {
        for spec in ["", "owner", "owner/repo", "owner/repo/", "../repo/f.gguf", "o/../f.gguf", "o/r/../x", "o/r/a?b"] {
            let e = hf_url(spec).unwrap_err();
            assert_eq!(e.code(), "usage", "{spec:?}: {e}");
        }
        assert!(hf_url("owner/repo:Q4_K_M").unwrap_err().message.contains("name the file"));
    }

    #[test]
    fn paths_and_urls_are_told_apart() {
        assert_eq!(parse("models/x.gguf").unwrap(), Source::Path("models/x.gguf".into()));
        assert_eq!(parse("HTTPS://h/x.gguf").unwrap(), Source::Url("HTTPS://h/x.gguf".into()));
        assert_eq!(parse("http://127.0.0.1:8/m.gguf").unwrap(), Source::Url("http://127.0.0.1:8/m.gguf".into()));
    }

    #[test]
    fn cache_paths_stay_inside_the_cache() {
        let p = cache_relative_path("https://huggingface.co/o/r/resolve/main/f.gguf?download=true").unwrap();
        assert_eq!(p, PathBuf::from("huggingface.co/o/r/resolve/main/f.gguf"));
        assert_eq!(cache_relative_path("http://127.0.0.1:9/m.gguf").unwrap(), PathBuf::from("127.0.0.1_9/m.gguf"));
        for url in ["https://h/../../etc/passwd", "https://h/a//b", "https://h", "https://h/", "https://h/./x"] {
            assert!(cache_relative_path(url).is_err(), "{url}");
        }
    }
}
