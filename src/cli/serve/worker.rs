//! The one engine behind the server: a thread of its own that owns the model and runs jobs first in, first out, and
//! a bounded queue in front of it. A job's events go back on a channel; when the client has gone (the channel is
//! closed) a waiting job is skipped and a running one is aborted, so the engine is free for the next. A job holds its
//! place in the queue through the [`Ticket`] its client's response holds: a client that leaves gives its place back
//! at once, not when the engine reaches its job. When the GPU
//! device was lost (a driver reset), the running job ends with `gpu.device_lost` and the next one first loads the
//! model again on a new device.

use super::super::openai::{bad_field, BadRequest};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;
use webr1::chat::ToolFormat;
use webr1::engine::{Compiler, EngineOptions, Event, Request};
use webr1::{err, Error, Result};

/// What a job reports back.
#[derive(Debug)]
pub enum JobEvent {
    Event(Event),
    Error(Error),
}

pub struct Job {
    /// The request's number, for the log.
    pub n: u64,
    pub request: Request,
    pub events: UnboundedSender<JobEvent>,
}

/// A place in the queue, given back when dropped.
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Compiles a request's response format or tool grammar on the HTTP side, so that a schema the engine cannot use is
/// a 400 before the request waits in the queue (the engine compiles it again when the request runs).
pub struct Checker {
    compiler: std::sync::Arc<Compiler>,
    format: ToolFormat,
}

impl Checker {
    pub fn check(&self, request: &Request) -> std::result::Result<(), BadRequest> {
        if let Some(format) = &request.format {
            self.compiler.compile(format).map_err(|e| bad_field("response_format", &e))?;
        }
        if let Some(tools) = request.tools.as_ref().filter(|t| t.active()) {
            self.compiler.compile_tool_grammar(&self.format.grammar(tools)).map_err(|e| bad_field("tools", &e))?;
        }
        Ok(())
    }
}

/// The queue is full: the client should retry later (HTTP 429).
#[derive(Debug)]
pub struct QueueFull;

/// The handle the HTTP side holds.
pub struct Worker {
    jobs: mpsc::Sender<Job>,
    /// Jobs admitted whose clients are still there: the running one and those waiting.
    pending: Arc<AtomicUsize>,
    /// The most jobs admitted at once.
    capacity: usize,
    /// The context the engine allocated, in tokens.
    context_length: usize,
    /// The engine's GPU device, for [`Worker::lose_device`].
    device: Arc<Mutex<Option<wgpu::Device>>>,
}

impl Worker {
    /// Loads the model on a new thread and returns once it is ready (or failed to load), with the checker of its
    /// requests' constraints.
    pub fn start(path: PathBuf, options: EngineOptions, queue: usize) -> Result<(Worker, Checker)> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready, loaded) = mpsc::channel::<Result<(usize, Checker)>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let device = Arc::new(Mutex::new(None));
        let current = device.clone();
        std::thread::Builder::new()
            .name("webr1-engine".into())
            .spawn(move || {
                let loaded = crate::cli::load_engine(&path, options.clone()).and_then(|mut engine| {
                    Ok((Checker { compiler: engine.compiler()?, format: engine.tool_format() }, engine))
                });
                let mut engine = match loaded {
                    Ok((checker, engine)) => {
                        *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(engine.gpu().device().clone());
                        let _ = ready.send(Ok((engine.context_length(), checker)));
                        engine
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    if let Some(lost) = engine.gpu().lost() {
                        match reload(&path, &options, &lost) {
                            Ok(fresh) => {
                                *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh.gpu().device().clone());
                                engine = fresh;
                            }
                            Err(e) => {
                                let _ = job.events.send(JobEvent::Error(e));
                                continue;
                            }
                        }
                    }
                    run_job(&mut engine, job);
                }
            })
            .map_err(|e| err!(Usage, "cannot start the engine thread: {e}"))?;
        let (context_length, checker) =
            loaded.recv().map_err(|_| err!(Usage, "the engine thread stopped while loading the model"))??;
        Ok((Worker { jobs, pending, capacity: queue.saturating_add(1), context_length, device }, checker))
    }

    /// Tokens of context the engine allocated.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Destroys the engine's GPU device now, even in the middle of a generation: the device is lost as in a driver
    /// reset (a test hook).
    pub fn lose_device(&self) {
        if let Some(device) = self.device.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            eprintln!("webr1: destroying the GPU device (test hook)");
            device.destroy();
        }
    }

    /// Queues a job behind the others, or refuses it when `capacity` jobs are already admitted. The place is held
    /// until the returned [`Ticket`] is dropped (when the client has its answer, or has gone).
    pub fn submit(&self, job: Job) -> std::result::Result<Ticket, QueueFull> {
        self.pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.capacity).then_some(n + 1))
            .map_err(|_| QueueFull)?;
        let ticket = Ticket(self.pending.clone());
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            let _ = job.events.send(JobEvent::Error(err!(Usage, "the engine has stopped")));
        }
        Ok(ticket)
    }

    /// Jobs running or waiting.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

/// The model loaded again on a new device, after `lost`.
fn reload(path: &std::path::Path, options: &EngineOptions, lost: &Error) -> Result<webr1::engine::Engine> {
    eprintln!("webr1: {}; loading the model again on a new device", lost.message);
    let started = std::time::Instant::now();
    let engine = crate::cli::load_engine(path, options.clone())?;
    eprintln!("webr1: the model is loaded again ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(engine)
}

/// Runs one job to its end, aborting it as soon as its client is gone. A panic inside is reported to the client and
/// the engine carries on with the next job.
fn run_job(engine: &mut webr1::engine::Engine, job: Job) {
    if job.events.is_closed() {
        eprintln!("webr1: #{} skipped: its client left while it waited", job.n);
        return;
    }
    let start = std::time::Instant::now();
    let events = job.events.clone();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let abort = engine.abort_handle();
        let mut generation = match engine.generate(job.request) {
            Ok(g) => g,
            Err(e) => {
                let _ = job.events.send(JobEvent::Error(e));
                return;
            }
        };
        pollster::block_on(async {
            while let Some(event) = generation.next().await {
                let sent = match event {
                    Ok(event) => {
                        if let Event::Done(finish) = &event {
                            log_finish(job.n, finish, start);
                        }
                        job.events.send(JobEvent::Event(event))
                    }
                    Err(e) => job.events.send(JobEvent::Error(e)),
                };
                if sent.is_err() {
                    abort.abort();
                }
            }
        });
    }));
    if outcome.is_err() {
        let _ = events.send(JobEvent::Error(err!(Usage, "internal error while generating (a bug in webr1)")));
    }
}

/// One line per finished request on standard error.
fn log_finish(n: u64, finish: &webr1::engine::Finish, start: std::time::Instant) {
    let u = &finish.usage;
    eprintln!(
        "webr1: #{n} {}: {} prompt tokens ({} cached), {} generated, {:.1}s",
        finish.reason.as_str(),
        u.prompt_tokens,
        u.cached_tokens,
        u.completion_tokens,
        start.elapsed().as_secs_f64()
    );
}
