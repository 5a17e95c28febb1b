//! `webr1 web`: serves the demo site (`www/` at `/`) and the npm package (`pkg/` at `/pkg/`) on localhost, with the
//! MIME types browsers insist on (`application/wasm` for streaming compilation, `text/javascript` for modules).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use webr1::{err, Result};

#[derive(Args)]
pub struct WebArgs {
    /// The webr1 source tree holding www/ and pkg/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0 picks a free one; the address is printed on standard error).
    #[arg(long, default_value_t = 8000)]
    port: u16,
}

pub fn run(args: &WebArgs) -> Result<()> {
    let www = args.root.join("www");
    if !www.is_dir() {
        return Err(err!(
            IoNotFound,
            "{} has no www/ directory: run webr1 web from the webr1 source tree or pass --root",
            args.root.display()
        ));
    }
    let root = Arc::new(args.root.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| err!(ServerBind, "cannot start the server's runtime: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .map_err(|e| err!(ServerBind, "cannot listen on {}:{}: {e}", args.host, args.port))?;
        let addr = listener.local_addr().map_err(|e| err!(ServerBind, "cannot listen: {e}"))?;
        eprintln!("webr1: the demo is at http://{addr}/ (Ctrl-C stops)");
        let router = Router::new().fallback(move |request: Request| serve_file(root.clone(), request));
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| err!(ServerBind, "the server stopped: {e}"))
    })
}

async fn serve_file(root: Arc<PathBuf>, request: Request) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Some(mut path) = local_path(&root, request.uri().path()) else { return status(StatusCode::NOT_FOUND) };
    if path.is_dir() {
        path.push("index.html");
    }
    let file = path.clone();
    match tokio::task::spawn_blocking(move || std::fs::read(file)).await {
        Ok(Ok(bytes)) => Response::builder()
            .header(header::CONTENT_TYPE, mime_type(&path))
            .header(header::CACHE_CONTROL, "no-cache")
            // Cross-origin isolation, so the page may use SharedArrayBuffer and precise timers.
            .header("cross-origin-opener-policy", "same-origin")
            .header("cross-origin-embedder-policy", "require-corp")
            .body(if request.method() == Method::HEAD { Body::empty() } else { Body::from(bytes) })
            .unwrap_or_default(),
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn status(code: StatusCode) -> Response {
    Response::builder().status(code).body(Body::from(code.to_string())).unwrap_or_default()
}

/// The file a URL path names: `/pkg/...` in `pkg/`, anything else in `www/`. Segments that could leave the tree
/// (`..`, hidden names, backslashes, percent escapes) name nothing.
pub fn local_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let segments: Vec<&str> = url_path.split('/').filter(|s| !s.is_empty()).collect();
    let ok = |s: &&str| !s.starts_with('.') && !s.contains(['\\', '%', ':', '\0']);
    if !segments.iter().all(ok) {
        return None;
    }
    let (base, rest) = match segments.split_first() {
        Some((&"pkg", rest)) => (root.join("pkg"), rest),
        _ => (root.join("www"), &segments[..]),
    };
    Some(rest.iter().fold(base, |p, s| p.join(s)))
}

/// The Content-Type of a file, by its extension.
pub fn mime_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        "ts" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_stay_inside_www_and_pkg() {
        let root = Path::new("/r");
        assert_eq!(local_path(root, "/"), Some(PathBuf::from("/r/www")));
        assert_eq!(local_path(root, "/a/b.js"), Some(PathBuf::from("/r/www/a/b.js")));
        assert_eq!(local_path(root, "/pkg/webr1_bg.wasm"), Some(PathBuf::from("/r/pkg/webr1_bg.wasm")));
        for bad in ["/../etc/passwd", "/pkg/../../x", "/.git/config", "/a/%2e%2e/b", "/a\\..\\b", "/C:/x"] {
            assert_eq!(local_path(root, bad), None, "{bad}");
        }
    }
}
