//! MODEL arguments: a local path, an `http(s)://` URL, `hf:owner/repo/file.gguf` (a file in a Hugging Face
//! repository) or `hf:owner/repo:QUANT` (the repository's file of that quantisation, found in its file listing;
//! `$HF_ENDPOINT` replaces `https://huggingface.co`, as in Hugging Face's own tools). A URL is downloaded once into the cache (`$WEBR1_CACHE`, else the platform's cache directory) and the
//! cached file is used from then on; see [`super::download`].

use super::download::{parse_sha256, Expected};
use std::path::{Path, PathBuf};
use webr1::{err, Result};

/// webr1's catalogue of known models, shared with the demo site (`www/models.json`): its `default` entry is the model
/// used when none is named (DeepSeek-R1-Distill-Qwen-1.5B, Q4_K_M, 1.1 GB).
const CATALOGUE: &str = include_str!("../../www/models.json");

fn broken_catalogue(what: &str) -> webr1::Error {
    err!(Usage, "webr1's model catalogue (www/models.json) is broken: {what}")
}

/// The catalogue's models.
fn catalogue_models(catalogue: &str) -> Result<(serde_json::Value, Vec<serde_json::Value>)> {
    let mut catalogue: serde_json::Value =
        serde_json::from_str(catalogue).map_err(|e| broken_catalogue(&e.to_string()))?;
    match catalogue.get_mut("models").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(models)) => Ok((catalogue, models)),
        _ => Err(broken_catalogue("no models")),
    }
}

/// The URL of the catalogue's default model.
pub fn default_model() -> Result<String> {
    let (catalogue, models) = catalogue_models(CATALOGUE)?;
    let id = catalogue["default"].as_str().ok_or_else(|| broken_catalogue("no default"))?;
    let model = models.iter().find(|m| m["id"] == id).ok_or_else(|| broken_catalogue(&format!("no model {id}")))?;
    model["url"].as_str().map(str::to_string).ok_or_else(|| broken_catalogue(&format!("{id} has no url")))
}

/// The sha256 that a catalogue gives for the file at `url`: none when no entry has that URL or its `sha256` is null.
fn catalogue_sha256(catalogue: &str, url: &str) -> Result<Option<Expected>> {
    let (_, models) = catalogue_models(catalogue)?;
    let Some(model) = models.iter().find(|m| m["url"] == url) else { return Ok(None) };
    match &model["sha256"] {
        serde_json::Value::Null => Ok(None),
        value => {
            let digest = value.as_str().and_then(parse_sha256);
            let id = model["id"].as_str().unwrap_or(url);
            let digest = digest.ok_or_else(|| broken_catalogue(&format!("{id}'s sha256 is not 64 hex digits")))?;
            Ok(Some(Expected { digest, source: "webr1's catalogue (www/models.json)".into() }))
        }
    }
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Url(String),
    /// `hf:owner/repo:QUANT`: a file to find in the repository's listing.
    HfQuant {
        owner: String,
        repo: String,
        quant: String,
    },
}

/// Where Hugging Face repositories live.
pub const HF_ENDPOINT: &str = "https://huggingface.co";

/// `$HF_ENDPOINT` (a mirror) or [`HF_ENDPOINT`].
pub fn hf_endpoint() -> String {
    let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
    endpoint.map_or(HF_ENDPOINT.to_string(), |e| e.trim().trim_end_matches('/').to_string())
}

/// Reads a MODEL argument without touching the disk or the network.
pub fn parse(arg: &str) -> Result<Source> {
    if let Some(spec) = arg.strip_prefix("hf:") {
        return hf_source(spec, &hf_endpoint());
    }
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        cache_relative_path(arg)?; // reject what cannot be cached before anything else happens
        return Ok(Source::Url(arg.to_string()));
    }
    Ok(Source::Path(PathBuf::from(arg)))
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// An `hf:` name (without the prefix) against a Hugging Face endpoint.
fn hf_source(spec: &str, endpoint: &str) -> Result<Source> {
    let usage = || {
        err!(
            Usage,
            "'hf:{spec}' is not a Hugging Face file name: write hf:OWNER/REPO/FILE.gguf or hf:OWNER/REPO:QUANT, \
             e.g. hf:unsloth/DeepSeek-R1-Distill-Qwen-1.5B-GGUF:Q4_K_M"
        )
    };
    let mut parts = spec.splitn(3, '/');
    let (owner, repo, file) = match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(r), Some(f)) => (o, r, f),
        (Some(owner), Some(repo_quant), None) => {
            let (repo, quant) = repo_quant.split_once(':').ok_or_else(usage)?;
            let quant_ok = !quant.is_empty() && quant.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok(owner) || !name_ok(repo) || !quant_ok {
                return Err(usage());
            }
            return Ok(Source::HfQuant { owner: owner.into(), repo: repo.into(), quant: quant.into() });
        }
        _ => return Err(usage()),
    };
    let file_ok = file.split('/').all(|seg| {
        name_ok(seg) || (!seg.is_empty() && seg != "." && seg != ".." && !seg.contains(['?', '#', '%', '\\']))
    });
    if !name_ok(owner) || !name_ok(repo) || !file_ok || file.chars().any(char::is_control) {
        return Err(usage());
    }
    Ok(Source::Url(format!("{endpoint}/{owner}/{repo}/resolve/main/{file}")))
}

/// The GGUF file of quantisation `quant` among a repository's files: `NAME-Q4_K_M.gguf` (or `.Q4_K_M.gguf`), or the
/// first part of a split model (`NAME-Q4_K_M-00001-of-00003.gguf`); case does not matter.
pub fn pick_quant(files: &[String], quant: &str) -> Result<String> {
    let q = quant.to_ascii_lowercase();
    let matches: Vec<&String> = files
        .iter()
        .filter(|f| {
            let lower = f.to_ascii_lowercase();
            let Some(stem) = lower.strip_suffix(".gguf") else { return false };
            let stem = stem.split_once("-00001-of-").map_or(stem, |(head, _)| head);
            !stem.contains("-of-0") && (stem.ends_with(&format!("-{q}")) || stem.ends_with(&format!(".{q}")))
        })
        .collect();
    match matches[..] {
        [one] => Ok(one.clone()),
        [] => {
            let ggufs: Vec<&str> = files.iter().map(String::as_str).filter(|f| f.ends_with(".gguf")).collect();
            Err(err!(Usage, "no {quant} file in this repository; its GGUF files: {}", ggufs.join(", ")))
        }
        _ => {
            let names: Vec<&str> = matches.iter().map(|s| s.as_str()).collect();
            Err(err!(Usage, "several {quant} files: {}; name one as hf:OWNER/REPO/FILE", names.join(", ")))
        }
    }
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
    let default;
    let arg = match arg {
        Some(arg) => arg,
        None => {
            default = default_model()?;
            &default
        }
    };
    match parse(arg)? {
        Source::Path(path) => Ok(path),
        Source::Url(url) => fetch(&url),
        Source::HfQuant { owner, repo, quant } => {
            let endpoint = hf_endpoint();
            let files = super::download::list_hf_files(&endpoint, &owner, &repo)?;
            let file = pick_quant(&files, &quant)?;
            fetch(&format!("{endpoint}/{owner}/{repo}/resolve/main/{file}"))
        }
    }
}

/// The cached file of a URL, downloaded first when it is not there (and checked against the catalogue's sha256 for
/// that URL, when it gives one).
fn fetch(url: &str) -> Result<PathBuf> {
    let root = cache_dir()?;
    let dest = root.join(cache_relative_path(url)?);
    if !super::cache::usable(&dest)? {
        let downloaded = super::download::download(url, &dest, catalogue_sha256(CATALOGUE, url)?);
        if downloaded.is_err() {
            remove_empty_leftovers(&root, &dest);
        }
        downloaded?;
    }
    Ok(dest)
}

/// After a failed download: an empty `.part` file and the folders made for it, when nothing else is in them (a `.part`
/// with bytes stays, so that the next try resumes it).
fn remove_empty_leftovers(root: &Path, dest: &Path) {
    let part = super::download::part_path(dest);
    if std::fs::metadata(&part).is_ok_and(|m| m.len() == 0) {
        std::fs::remove_file(&part).ok();
    }
    let mut dir = dest.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        if std::fs::remove_dir(d).is_err() {
            break; // not empty
        }
        dir = d.parent();
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
    fn the_default_model_comes_from_the_catalogue() {
        let url = default_model().unwrap();
        assert!(
            url.starts_with("https://huggingface.co/") && url.ends_with("DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"),
            "{url}"
        );
        assert_eq!(parse(&url).unwrap(), Source::Url(url.clone()));
    }

    #[test]
    fn the_catalogue_gives_a_sha256_for_its_urls_when_it_knows_one() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let catalogue = format!(
            r#"{{"default": "a", "models": [
                {{"id": "a", "url": "https://h/a.gguf", "sha256": null}},
                {{"id": "b", "url": "https://h/b.gguf", "sha256": "{abc}"}},
                {{"id": "c", "url": "https://h/c.gguf", "sha256": "not hex"}},
                {{"id": "d", "url": "https://h/d.gguf", "sha256": 12}}
            ]}}"#
        );
        assert_eq!(catalogue_sha256(&catalogue, "https://h/a.gguf").unwrap(), None);
        assert_eq!(catalogue_sha256(&catalogue, "https://h/elsewhere.gguf").unwrap(), None);
        let b = catalogue_sha256(&catalogue, "https://h/b.gguf").unwrap().unwrap();
        assert_eq!(super::super::download::sha256_hex(&b.digest), abc);
        assert!(b.source.contains("catalogue"), "{}", b.source);
        for url in ["https://h/c.gguf", "https://h/d.gguf"] {
            let e = catalogue_sha256(&catalogue, url).unwrap_err();
            assert!(e.message.contains("sha256 is not 64 hex digits"), "{e}");
        }
        // webr1's own catalogue: every entry's sha256 is null or a digest.
        let (_, models) = catalogue_models(CATALOGUE).unwrap();
        for model in &models {
            catalogue_sha256(CATALOGUE, model["url"].as_str().unwrap()).unwrap();
        }
    }

    /// `owner/repo/path/to/file.gguf` → `https://huggingface.co/owner/repo/resolve/main/path/to/file.gguf`.
    fn hf_url(spec: &str) -> Result<String> {
        match hf_source(spec, HF_ENDPOINT)? {
            Source::Url(url) => Ok(url),
            _ => Err(err!(Usage, "'hf:{spec}' names no file")),
        }
    }

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
        assert!(hf_source("owner/repo:", HF_ENDPOINT).is_err());
        assert!(hf_source("owner/repo:Q4/../x", HF_ENDPOINT).is_err());
    }

    #[test]
    fn hf_quant_names_pick_their_file_from_the_listing() {
        let spec = hf_source("bartowski/R1-GGUF:q4_k_m", HF_ENDPOINT).unwrap();
        let want = Source::HfQuant { owner: "bartowski".into(), repo: "R1-GGUF".into(), quant: "q4_k_m".into() };
        assert_eq!(spec, want);
        let files: Vec<String> = [
            "README.md",
            "R1-Q4_K_M.gguf",
            "R1-Q4_K_S.gguf",
            "R1-Q8_0.gguf",
            "big/R1-Q6_K-00001-of-00002.gguf",
            "big/R1-Q6_K-00002-of-00002.gguf",
            "R1.Q5_0.gguf",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(pick_quant(&files, "q4_k_m").unwrap(), "R1-Q4_K_M.gguf");
        assert_eq!(pick_quant(&files, "Q8_0").unwrap(), "R1-Q8_0.gguf");
        assert_eq!(pick_quant(&files, "Q6_K").unwrap(), "big/R1-Q6_K-00001-of-00002.gguf");
        assert_eq!(pick_quant(&files, "Q5_0").unwrap(), "R1.Q5_0.gguf");
        let none = pick_quant(&files, "Q2_K").unwrap_err().message;
        assert!(none.contains("R1-Q8_0.gguf") && !none.contains("README"), "{none}");
        let two = [String::from("a-Q4_0.gguf"), String::from("b-Q4_0.gguf")];
        assert!(pick_quant(&two, "Q4_0").unwrap_err().message.contains("several"));
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
