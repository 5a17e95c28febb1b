//! `webr1 serve MODEL`: an OpenAI-compatible HTTP server over one engine.
//!
//! `POST /v1/chat/completions` (streamed as server-sent events ending in `data: [DONE]`, or whole), `GET /v1/models`,
//! `GET /health`. Requests wait their turn first in, first out, in a bounded queue (429 when it is full); a client that
//! disconnects aborts its own generation; a malformed request gets a 400 with an OpenAI-style error body. The server
//! listens on 127.0.0.1 unless told otherwise; `--api-key` requires `Authorization: Bearer KEY`; `--cors` lets web pages
//! on other origins call it.

mod worker;

use super::openai::{self, BadRequest, Meta};
use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use webr1::engine::Event;
use webr1::{err, ErrorCode, Result};
use worker::{Job, JobEvent, Worker};

/// How often a stream that is waiting in the queue sends an SSE comment, so that a client that left is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

#[derive(Args)]
pub struct ServeArgs {
    /// A GGUF file, an https:// URL or hf:OWNER/REPO/FILE.gguf (default: DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M).
    model: Option<String>,
    /// The address to listen on; anything but a loopback address exposes the model to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0 picks a free one; the address is printed on standard error).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 requests.
    #[arg(long)]
    api_key: Option<String>,
    /// Allow web pages on any origin to call the server (CORS).
    #[arg(long)]
    cors: bool,
    /// Requests that may wait behind the running one; more get HTTP 429.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Tokens of context to allocate, at most the model's own (default: the largest that fits the GPU and
    /// --gpu-memory, up to the model's own and 32768).
    #[arg(long)]
    ctx: Option<usize>,
    /// Use only f32 shaders (no shader-f16, no subgroups).
    #[arg(long)]
    f32: bool,
    #[command(flatten)]
    device: super::DeviceArgs,
}

struct App {
    worker: Worker,
    model: String,
    api_key: Option<String>,
    cors: bool,
    next_id: AtomicU64,
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let path = super::model::resolve(args.model.as_deref())?;
    let loopback = args.host == "localhost" || args.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        eprintln!(
            "webr1: warning: listening on {} lets other machines use this model and your GPU{}",
            args.host,
            if args.api_key.is_none() { " (and no --api-key is set)" } else { "" }
        );
    }
    let worker = Worker::start(path.clone(), super::engine_options(args.f32, args.ctx, &args.device), args.queue)?;
    let app = Arc::new(App {
        worker,
        model: super::model::display_name(&path),
        api_key: args.api_key.clone(),
        cors: args.cors,
        next_id: AtomicU64::new(1),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| err!(ServerBind, "cannot start the server's runtime: {e}"))?;
    runtime.block_on(serve(app, &args.host, args.port))
}

async fn serve(app: Arc<App>, host: &str, port: u16) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| err!(ServerBind, "cannot listen on {host}:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| err!(ServerBind, "cannot listen on {host}:{port}: {e}"))?;
    eprintln!("webr1: serving {} at http://{addr}/v1 (Ctrl-C stops)", app.model);
    let router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| err!(ServerBind, "the server stopped: {e}"))
}

/// CORS (when enabled) and the API key, before any route.
async fn guard(State(app): State<Arc<App>>, request: HttpRequest, next: Next) -> Response {
    if app.cors && request.method() == Method::OPTIONS {
        return with_cors(Response::builder().status(StatusCode::NO_CONTENT).body(Body::empty()).unwrap_or_default());
    }
    let needs_key = request.uri().path().starts_with("/v1/");
    let response = match &app.api_key {
        Some(key) if needs_key && !bearer_matches(request.headers(), key) => error_response(
            StatusCode::UNAUTHORIZED,
            "a valid API key is required: send Authorization: Bearer KEY",
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        _ => next.run(request).await,
    };
    if app.cors {
        with_cors(response)
    } else {
        response
    }
}

fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    response
}

/// Compares the bearer token without stopping at the first differing byte.
fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    let (a, b) = (given.as_bytes(), key.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .unwrap_or_default()
}

fn error_response(status: StatusCode, message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Response {
    json_response(status, &openai::error_body(message, kind, param, code))
}

fn bad_request(e: &BadRequest) -> Response {
    error_response(StatusCode::BAD_REQUEST, &e.message, "invalid_request_error", e.param.as_deref(), None)
}

/// An engine error as HTTP: the caller's fault (400) or webr1's (500).
fn engine_error(e: &webr1::Error) -> Response {
    let status = match e.code {
        ErrorCode::Usage | ErrorCode::ChatBadMessages | ErrorCode::ChatTemplate | ErrorCode::ContextFull => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let kind = if status == StatusCode::BAD_REQUEST { "invalid_request_error" } else { "server_error" };
    error_response(status, &e.message, kind, None, Some(e.code()))
}

async fn not_found(request: HttpRequest) -> Response {
    let message = format!("no route for {} {}", request.method(), request.uri().path());
    error_response(StatusCode::NOT_FOUND, &message, "invalid_request_error", None, Some("not_found"))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok", "model": app.model, "pending": app.worker.pending()}))
}

async fn models(State(app): State<Arc<App>>) -> Response {
    let model = json!({"id": app.model, "object": "model", "created": 0, "owned_by": "webr1"});
    json_response(StatusCode::OK, &json!({"object": "list", "data": [model]}))
}

async fn chat_completions(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let chat = match openai::parse_chat_request(&body) {
        Ok(chat) => chat,
        Err(e) => return bad_request(&e),
    };
    let n = app.next_id.fetch_add(1, Ordering::SeqCst);
    let meta = Meta::new(format!("chatcmpl-{n}"), app.model.clone());
    let (events, rx) = unbounded_channel();
    if app.worker.submit(Job { n, request: chat.request, events }).is_err() {
        eprintln!("webr1: #{n} refused: the queue is full");
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "the server is busy: its queue of requests is full; retry later",
            "rate_limit_error",
            None,
            Some("queue_full"),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    if chat.stream {
        stream_response(Stream { rx, meta, include_usage: chat.include_usage, n, started: false, done: false })
    } else {
        whole_response(rx, meta).await
    }
}

async fn whole_response(mut rx: UnboundedReceiver<JobEvent>, meta: Meta) -> Response {
    let (mut content, mut reasoning) = (String::new(), String::new());
    while let Some(event) = rx.recv().await {
        match event {
            JobEvent::Event(Event::Reasoning(t)) => reasoning.push_str(&t),
            JobEvent::Event(Event::Content(t)) => content.push_str(&t),
            JobEvent::Event(Event::Done(finish)) => {
                return json_response(StatusCode::OK, &openai::completion(&meta, &content, &reasoning, &finish));
            }
            JobEvent::Error(e) => return engine_error(&e),
        }
    }
    engine_error(&err!(Usage, "the engine stopped before the answer was complete"))
}

/// A streamed answer: the events of one job as `chat.completion.chunk`s.
struct Stream {
    rx: UnboundedReceiver<JobEvent>,
    meta: Meta,
    include_usage: bool,
    /// The request's number, for the log.
    n: u64,
    started: bool,
    done: bool,
}

impl Stream {
    fn data(&self, value: &Value) -> String {
        format!("data: {value}\n\n")
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> String {
        self.data(&openai::chunk(&self.meta, delta, finish_reason, self.include_usage))
    }

    /// The next piece of the event stream, or `None` at its end.
    async fn next_piece(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(self.delta(json!({"role": "assistant", "content": ""}), None));
        }
        let event = match tokio::time::timeout(KEEP_ALIVE, self.rx.recv()).await {
            Err(_) => return Some(": waiting\n\n".to_string()),
            Ok(None) => {
                self.done = true;
                let e = err!(Usage, "the engine stopped before the answer was complete");
                return Some(self.error(&e));
            }
            Ok(Some(event)) => event,
        };
        Some(match event {
            JobEvent::Event(Event::Reasoning(t)) => self.delta(json!({"content": null, "reasoning_content": t}), None),
            JobEvent::Event(Event::Content(t)) => self.delta(json!({"content": t, "reasoning_content": null}), None),
            JobEvent::Event(Event::Done(finish)) => {
                self.done = true;
                let mut out = self.delta(json!({}), Some(openai::finish_reason(&finish)));
                if self.include_usage {
                    out.push_str(&self.data(&openai::usage_chunk(&self.meta, &finish.usage)));
                }
                out.push_str("data: [DONE]\n\n");
                out
            }
            JobEvent::Error(e) => {
                self.done = true;
                self.error(&e)
            }
        })
    }

    fn error(&self, e: &webr1::Error) -> String {
        eprintln!("webr1: #{} failed: {} [{}]", self.n, e.message, e.code());
        let body = openai::error_body(&e.message, "server_error", None, Some(e.code()));
        format!("{}data: [DONE]\n\n", self.data(&body))
    }
}

fn stream_response(stream: Stream) -> Response {
    let pieces = futures_util::stream::unfold(stream, |mut stream| async move {
        let piece = stream.next_piece().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(piece)), stream))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(pieces))
        .unwrap_or_default()
}
