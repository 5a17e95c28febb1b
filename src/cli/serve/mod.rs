//! `webr1 serve MODEL`: an OpenAI-compatible HTTP server over one engine.
//!
//! `POST /v1/chat/completions` (streamed as server-sent events ending in `data: [DONE]`, or whole), `GET /v1/models`,
//! `GET /health`. Requests wait their turn first in, first out, in a bounded queue (429 when it is full); a client that
//! disconnects aborts its own generation; every error, from a malformed request (400) to a missing route (404), a
//! wrong method (405), a body over [`MAX_BODY_BYTES`] (413), a body that is not JSON (415), a full queue (429) and a
//! bug (500), has OpenAI's error shape. The server listens on 127.0.0.1 unless told otherwise and refuses what web
//! pages could send it uninvited (see [`guard`]); `--api-key` requires `Authorization: Bearer KEY`; `--cors` lets web
//! pages on other origins call it; `--max-tokens-cap` bounds what one request may generate. A lost GPU device fails the
//! running request with `gpu.device_lost`, and the next request loads the model again on a new device.

mod guard;
mod listen;
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
use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Value};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use webr1::engine::Event;
use webr1::{err, ErrorCode, Result};
use worker::{Job, JobEvent, Worker};

/// How often a stream that is waiting in the queue sends an SSE comment, so that a client that left is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// The largest request body accepted (README, `serve`): far more than a full context of text.
pub const MAX_BODY_BYTES: usize = 2 << 20;
/// How long a client may take to send its request body once the headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// A host name clients may reach the server by, besides localhost, 127.0.0.1, [::1] and its own addresses
    /// (repeatable; `*` allows any, as behind a proxy that checks names itself).
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Requests that may wait behind the running one; more get HTTP 429.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Tokens of context to allocate, at most the model's own (default: the largest that fits the GPU and
    /// --gpu-memory, up to the model's own and 32768).
    #[arg(long)]
    ctx: Option<usize>,
    /// The most tokens one request may generate (default: the context); `max_tokens` above it is a 400, and a
    /// request without `max_tokens` gets this limit.
    #[arg(long)]
    max_tokens_cap: Option<usize>,
    /// Use only f32 shaders (no shader-f16, no subgroups).
    #[arg(long)]
    f32: bool,
    #[command(flatten)]
    device: super::DeviceArgs,
    /// Adds `POST /test/lose-device`, which destroys the engine's GPU device (for the device-loss tests).
    #[arg(long, hide = true)]
    test_hooks: bool,
}

struct App {
    worker: Worker,
    /// Compiles each request's schema or tool grammar before it is queued: a bad one is a 400 at once.
    checker: worker::Checker,
    model: String,
    /// The SHA-256 of `--api-key`, compared in constant time.
    api_key: Option<[u8; 32]>,
    cors: bool,
    allow_hosts: Vec<String>,
    /// The port the server listens on.
    port: u16,
    max_tokens_cap: usize,
    /// The model's tokenizer and chat template, to refuse a prompt that does not fit before it is queued.
    prompter: Arc<Prompter>,
    next_id: AtomicU64,
}

/// Counts a conversation's prompt tokens as the engine will, from the model file's own header.
struct Prompter {
    tokenizer: webr1::tokenizer::Tokenizer,
    template: Option<webr1::chat::ChatTemplate>,
    ctx: usize,
}

impl Prompter {
    fn new(path: &std::path::Path, ctx: usize) -> Result<Prompter> {
        let model = super::open_model(path)?;
        let metadata = model.metadata();
        let template = match metadata.get_str("tokenizer.chat_template")? {
            Some(_) => Some(webr1::chat::ChatTemplate::from_metadata(metadata)?),
            None => None,
        };
        Ok(Prompter { tokenizer: webr1::tokenizer::Tokenizer::from_metadata(metadata)?, template, ctx })
    }

    /// `context.full` (or a template error) when the conversation's prompt leaves no room in the context.
    fn check(&self, request: &webr1::engine::Request) -> Result<()> {
        let (webr1::engine::Input::Messages(messages), Some(template)) = (&request.input, &self.template) else {
            return Ok(()); // the engine says why
        };
        let prompt = template.prompt(&self.tokenizer, messages)?;
        webr1::engine::check_prompt_fits(prompt.ids.len(), self.ctx)
    }
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
    if args.max_tokens_cap == Some(0) {
        return Err(err!(Usage, "--max-tokens-cap must be at least 1"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| err!(ServerBind, "cannot start the server's runtime: {e}"))?;
    // Listen first, so that a port in use is reported before the model loads.
    let listener = runtime.block_on(tokio::net::TcpListener::bind((args.host.as_str(), args.port)));
    let listener = listener.map_err(|e| err!(ServerBind, "cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = listener.local_addr().map_err(|e| err!(ServerBind, "cannot listen on {}: {e}", args.host))?;
    let (worker, checker) =
        Worker::start(path.clone(), super::engine_options(args.f32, args.ctx, &args.device), args.queue)?;
    let ctx = worker.context_length();
    let prompter = Arc::new(Prompter::new(&path, ctx)?);
    let app = Arc::new(App {
        worker,
        checker,
        model: super::model::display_name(&path),
        api_key: args.api_key.as_deref().map(guard::digest),
        cors: args.cors,
        allow_hosts: args.allow_hosts.clone(),
        port: addr.port(),
        max_tokens_cap: args.max_tokens_cap.unwrap_or(ctx),
        prompter,
        next_id: AtomicU64::new(1),
    });
    eprintln!("webr1: serving {} at http://{addr}/v1 (Ctrl-C stops)", app.model);
    runtime.block_on(listen::serve_connections(listener, router(app, args.test_hooks)));
    Ok(())
}

fn router(app: Arc<App>, test_hooks: bool) -> Router {
    let mut router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health));
    if test_hooks {
        router = router.route("/test/lose-device", post(lose_device));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(axum::middleware::from_fn(catch_panic))
        .with_state(app)
}

/// A panic in a handler is a 500 with OpenAI's error shape, not a dropped connection.
async fn catch_panic(request: HttpRequest, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (a bug in webr1; please report it)",
            "server_error",
            None,
            Some("internal"),
        ),
    }
}

/// The checks of [`guard`] (Host, Origin, CORS, API key, JSON body) before any route.
async fn guard(State(app): State<Arc<App>>, request: HttpRequest, next: Next) -> Response {
    if let Some(refused) = refuse(&app, &request) {
        return if app.cors { with_cors(refused) } else { refused };
    }
    if app.cors && request.method() == Method::OPTIONS {
        return with_cors(Response::builder().status(StatusCode::NO_CONTENT).body(Body::empty()).unwrap_or_default());
    }
    let response = next.run(request).await;
    if app.cors {
        with_cors(response)
    } else {
        response
    }
}

/// Why a request is refused before it reaches its route, as the response to send.
fn refuse(app: &App, request: &HttpRequest) -> Option<Response> {
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let host = text(header::HOST).unwrap_or_default();
    let local = request.extensions().get::<listen::LocalAddr>().map(|a| a.0.ip());
    if !guard::host_allowed(host, app.port, local, &app.allow_hosts) {
        let message = format!(
            "this server does not answer to the host {host:?}: use localhost, 127.0.0.1 or [::1] with port {}, or \
             start it with --allow-host NAME",
            app.port
        );
        return Some(error_response(StatusCode::FORBIDDEN, &message, "invalid_request_error", None, Some("bad_host")));
    }
    if let Some(origin) = text(header::ORIGIN) {
        if !app.cors && !guard::origin_is_own(origin, host) {
            let message = format!(
                "requests from web pages on {origin} are refused: start the server with --cors to let pages on other \
                 origins call it"
            );
            return Some(error_response(StatusCode::FORBIDDEN, &message, "invalid_request_error", None, Some("cors")));
        }
    }
    if app.cors && request.method() == Method::OPTIONS {
        return None; // a preflight carries no key; the request that follows does
    }
    let path = request.uri().path();
    if let Some(key) = &app.api_key {
        if (path.starts_with("/v1/") || path.starts_with("/test/")) && !bearer_matches(headers, key) {
            return Some(error_response(
                StatusCode::UNAUTHORIZED,
                "a valid API key is required: send Authorization: Bearer KEY",
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ));
        }
    }
    if request.method() == Method::POST && !text(header::CONTENT_TYPE).is_some_and(guard::is_json) {
        return Some(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON, sent with Content-Type: application/json",
            "invalid_request_error",
            None,
            Some("unsupported_media_type"),
        ));
    }
    None
}

fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    response
}

/// The bearer token (its scheme in any case) is the key, compared in constant time.
fn bearer_matches(headers: &HeaderMap, key: &[u8; 32]) -> bool {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(guard::bearer_token);
    given.is_some_and(|token| guard::keys_match(token, key))
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
    error_response(StatusCode::BAD_REQUEST, &e.message, "invalid_request_error", e.param.as_deref(), e.code)
}

/// An engine error as HTTP: the caller's fault (400) or webr1's (500).
fn engine_error(e: &webr1::Error) -> Response {
    let status = match e.code {
        ErrorCode::Usage
        | ErrorCode::ChatBadMessages
        | ErrorCode::ChatTemplate
        | ErrorCode::ContextFull
        | ErrorCode::StructuredSchema
        | ErrorCode::StructuredGrammar
        | ErrorCode::ToolsInvalid => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let kind = if status == StatusCode::BAD_REQUEST { "invalid_request_error" } else { "server_error" };
    error_response(status, &e.message, kind, None, Some(e.code()))
}

async fn not_found(request: HttpRequest) -> Response {
    let message = format!("no route for {} {}", request.method(), request.uri().path());
    error_response(StatusCode::NOT_FOUND, &message, "invalid_request_error", None, Some("not_found"))
}

async fn method_not_allowed(request: HttpRequest) -> Response {
    let message = format!("{} does not take {} requests", request.uri().path(), request.method());
    error_response(StatusCode::METHOD_NOT_ALLOWED, &message, "invalid_request_error", None, Some("method_not_allowed"))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok", "model": app.model, "pending": app.worker.pending()}))
}

async fn models(State(app): State<Arc<App>>) -> Response {
    let model = json!({"id": app.model, "object": "model", "created": 0, "owned_by": "webr1"});
    json_response(StatusCode::OK, &json!({"object": "list", "data": [model]}))
}

/// The test hook of `--test-hooks`: destroys the engine's GPU device, as a driver reset would lose it.
async fn lose_device(State(app): State<Arc<App>>) -> Response {
    app.worker.lose_device();
    json_response(StatusCode::OK, &json!({"lost": true}))
}

/// The request body, at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`]; otherwise the response that says why.
async fn read_body(body: Body) -> std::result::Result<Bytes, Box<Response>> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let message = format!("the request body could not be read: {e}");
                Box::new(error_response(StatusCode::BAD_REQUEST, &message, "invalid_request_error", None, None))
            })?;
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                let message = format!("the request body is larger than this server's limit of {MAX_BODY_BYTES} bytes");
                let (kind, code) = ("invalid_request_error", Some("request_too_large"));
                return Err(Box::new(error_response(StatusCode::PAYLOAD_TOO_LARGE, &message, kind, None, code)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    tokio::time::timeout(BODY_TIMEOUT, read).await.unwrap_or_else(|_| {
        let message = format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs());
        let (kind, code) = ("invalid_request_error", Some("timeout"));
        Err(Box::new(error_response(StatusCode::REQUEST_TIMEOUT, &message, kind, None, code)))
    })
}

async fn chat_completions(State(app): State<Arc<App>>, request: HttpRequest) -> Response {
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let mut chat = match openai::parse_chat_request(&body) {
        Ok(chat) => chat,
        Err(e) => return bad_request(&e),
    };
    if let Err(e) = app.checker.check(&chat.request) {
        return bad_request(&e);
    }
    let cap = app.max_tokens_cap;
    match chat.request.max_tokens {
        Some(n) if n > cap => {
            let message = format!("max_tokens is {n}; this server generates at most {cap} tokens per request");
            return bad_request(&BadRequest { message, param: Some("max_tokens".into()), code: None });
        }
        Some(_) => {}
        None => chat.request.max_tokens = Some(cap),
    }
    let (prompter, request) = (app.prompter.clone(), chat.request);
    let checked = tokio::task::spawn_blocking(move || prompter.check(&request).map(|()| request)).await;
    chat.request = match checked {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => return engine_error(&e),
        Err(_) => {
            let message = "internal error while reading the prompt (a bug in webr1; please report it)";
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, message, "server_error", None, Some("internal"));
        }
    };
    let n = app.next_id.fetch_add(1, Ordering::SeqCst);
    let meta = Meta::new(format!("chatcmpl-{n}"), app.model.clone());
    let (events, rx) = unbounded_channel();
    let Ok(ticket) = app.worker.submit(Job { n, request: chat.request, events }) else {
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
    };
    if chat.stream {
        let (include_usage, started, done) = (chat.include_usage, false, false);
        stream_response(Stream { rx, meta, include_usage, n, started, done, _ticket: ticket })
    } else {
        let response = whole_response(rx, meta).await;
        drop(ticket);
        response
    }
}

async fn whole_response(mut rx: UnboundedReceiver<JobEvent>, meta: Meta) -> Response {
    let (mut content, mut reasoning) = (String::new(), String::new());
    while let Some(event) = rx.recv().await {
        match event {
            JobEvent::Event(Event::Reasoning(t)) => reasoning.push_str(&t),
            JobEvent::Event(Event::Content(t)) => content.push_str(&t),
            JobEvent::Event(Event::ToolCall(_)) => {} // the whole calls come with the finish
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
    /// The job's place in the queue, given back when the stream ends or its client leaves.
    _ticket: worker::Ticket,
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
            JobEvent::Event(Event::ToolCall(d)) => self.delta(openai::tool_call_delta(&d), None),
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
