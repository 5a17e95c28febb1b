//! A coverage-guided mutation fuzzer on stable Rust, in process and persistent (each target's state, such as a
//! vocabulary, is built once and every input runs against it).
//!
//! - **Coverage**: built with LLVM's SanitizerCoverage (`-C passes=sancov-module` with `trace-pc-guard`, which stable
//!   rustc accepts; `fuzz/run.sh` sets the flags), every edge of every crate calls
//!   [`__sanitizer_cov_trace_pc_guard`], which counts hits in a map. An input that reaches an edge, or an edge's hit
//!   count bucket (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+), never seen before joins the corpus, as in AFL. Without
//!   the flags (inside `cargo test`) the same loop runs as a plain mutation fuzzer over the seeds.
//! - **Mutations**: bit flips, random and "interesting" bytes and integers, arithmetic on 1/4/8-byte fields,
//!   deletions, duplications, insertions, dictionary words, splices of two corpus entries; 1 to 8 stacked per input.
//! - **Limits**: [`CountingAlloc`] aborts when live heap memory would pass [`MEMORY_LIMIT`] (1 GiB); a watchdog thread
//!   aborts when one input runs longer than [`HANG_LIMIT`]. Both first write the input to the crash directory. A
//!   panic is caught, its input written there too, and counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Live heap bytes above which the process aborts.
pub const MEMORY_LIMIT: usize = 1 << 30;
/// The longest one input may run.
pub const HANG_LIMIT: Duration = Duration::from_secs(10);

// ---- Coverage ------------------------------------------------------------------------------------------------------

const MAP: usize = 1 << 20;
static mut COUNTERS: [u8; MAP] = [0; MAP];
static mut TOUCHED: [u32; MAP] = [0; MAP];
static N_TOUCHED: AtomicUsize = AtomicUsize::new(0);
static GUARDS: AtomicU32 = AtomicU32::new(0);

/// Called once per instrumented module: numbers its edges.
///
/// # Safety
/// Called by the instrumentation with a valid `[start, stop)` range of guards.
#[no_mangle]
pub unsafe extern "C" fn __sanitizer_cov_trace_pc_guard_init(mut start: *mut u32, stop: *mut u32) {
    if start == stop || *start != 0 {
        return;
    }
    while start < stop {
        *start = GUARDS.fetch_add(1, Ordering::Relaxed) % (MAP as u32 - 1) + 1;
        start = start.add(1);
    }
}

/// Called on every instrumented edge: counts the hit (saturating) and remembers which entries were touched.
///
/// # Safety
/// Called by the instrumentation with a guard numbered by the init function.
#[no_mangle]
pub unsafe extern "C" fn __sanitizer_cov_trace_pc_guard(guard: *mut u32) {
    let index = *guard as usize & (MAP - 1);
    let counter = (std::ptr::addr_of_mut!(COUNTERS) as *mut u8).add(index);
    if *counter == 0 {
        let n = N_TOUCHED.load(Ordering::Relaxed);
        if n < MAP {
            *(std::ptr::addr_of_mut!(TOUCHED) as *mut u32).add(n) = index as u32;
            N_TOUCHED.store(n + 1, Ordering::Relaxed);
        }
    }
    *counter = (*counter).saturating_add(1);
}

/// Edges numbered by the instrumentation (0 without it).
pub fn instrumented_edges() -> u32 {
    GUARDS.load(Ordering::Relaxed)
}

fn bucket(hits: u8) -> u8 {
    match hits {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

/// Hands each map entry touched since the last call to `f` (its index and hit count) and clears it. While it runs,
/// the trace callback records nothing (the touched count reads as full), so that the harness's own edges never
/// overwrite the list being read.
fn take_touched(mut f: impl FnMut(usize, u8)) {
    let n = N_TOUCHED.swap(MAP, Ordering::SeqCst).min(MAP);
    for i in 0..n {
        // SAFETY: indices below MAP, written by the trace callback, which records nothing meanwhile.
        unsafe {
            let index = *(std::ptr::addr_of!(TOUCHED) as *const u32).add(i) as usize;
            let counter = (std::ptr::addr_of_mut!(COUNTERS) as *mut u8).add(index);
            f(index, *counter);
            *counter = 0;
        }
    }
    N_TOUCHED.store(0, Ordering::SeqCst);
}

/// The buckets seen per map entry over the whole run.
struct Virgin(Vec<u8>);

impl Virgin {
    /// Takes the last input's hits out of the map; whether they reached anything new.
    fn absorb(&mut self) -> bool {
        let mut new = false;
        take_touched(|index, hits| {
            let b = bucket(hits);
            if self.0[index] & b != b {
                self.0[index] |= b;
                new = true;
            }
        });
        new
    }

    fn edges(&self) -> usize {
        self.0.iter().filter(|&&b| b != 0).count()
    }
}

// ---- Memory --------------------------------------------------------------------------------------------------------

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and aborting before they pass [`MEMORY_LIMIT`].
pub struct CountingAlloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            count(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

fn count(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
    if live > MEMORY_LIMIT {
        die(b"allocation past the 1 GiB limit");
    }
}

/// The most heap memory live at once so far.
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

// ---- Crashes -------------------------------------------------------------------------------------------------------

/// The input being run (pointer, length) and where to write it if the process must abort; read without allocating.
static CURRENT_PTR: AtomicUsize = AtomicUsize::new(0);
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
static mut ABORT_FILE: Option<std::fs::File> = None;
static DYING: AtomicBool = AtomicBool::new(false);

/// Writes the current input to the abort file and aborts, allocating nothing.
fn die(why: &[u8]) -> ! {
    if !DYING.swap(true, Ordering::SeqCst) {
        let mut stderr = std::io::stderr();
        let _ = stderr.write_all(b"\nfuzz: ");
        let _ = stderr.write_all(why);
        let _ = stderr.write_all(b"; the input is in the crash directory as `abort-input`\n");
        // SAFETY: set once before fuzzing starts; the input lives until the run that uses it returns.
        unsafe {
            if let Some(file) = (*std::ptr::addr_of!(ABORT_FILE)).as_ref() {
                let (ptr, len) = (CURRENT_PTR.load(Ordering::SeqCst), CURRENT_LEN.load(Ordering::SeqCst));
                if ptr != 0 {
                    let mut file = file;
                    let _ = file.write_all(std::slice::from_raw_parts(ptr as *const u8, len));
                }
            }
        }
    }
    std::process::abort()
}

thread_local! {
    /// The message of the last panic, for the report.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// When the input now running started, in milliseconds since [`epoch`] plus one (0: none is running).
static EXEC_STARTED_MS: AtomicU64 = AtomicU64::new(0);

/// The process's one clock for the watchdog.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Starts the watchdog thread, once per process.
fn start_watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(200));
            let started = EXEC_STARTED_MS.load(Ordering::Relaxed);
            if started != 0 && now_ms() > started + HANG_LIMIT.as_millis() as u64 {
                die(b"one input ran longer than the 10 s limit (a hang)");
            }
        });
    });
}

// ---- Mutation ------------------------------------------------------------------------------------------------------

/// xorshift64*: fast, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u64; 12] =
    [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x7fff_ffff, 0xffff_ffff, 1 << 32, u64::MAX];

/// One mutated copy of `parent`, at most `max_len` bytes.
fn mutate(rng: &mut Rng, parent: &[u8], corpus: &[Vec<u8>], dictionary: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut data = parent.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = data.len();
        let at = rng.below(len.max(1));
        match rng.below(13) {
            0 if len > 0 => data[at] ^= 1 << rng.below(8),
            1 if len > 0 => data[at] = rng.next() as u8,
            2 if len > 0 => data[at] = data[at].wrapping_add(rng.below(35) as u8).wrapping_sub(17),
            3 | 4 if len >= 8 => {
                let width = [1, 2, 4, 8][rng.below(4)];
                let at = rng.below(len - width + 1);
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                data[at..at + width].copy_from_slice(&value[..width]);
            }
            5 if len >= 4 => {
                let at = rng.below(len - 3);
                let mut field = [0u8; 4];
                field.copy_from_slice(&data[at..at + 4]);
                let delta = rng.below(65) as u32;
                let value = u32::from_le_bytes(field).wrapping_add(delta).wrapping_sub(32);
                data[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            6 if len > 1 => {
                let n = 1 + rng.below((len - at).min(64));
                data.drain(at..(at + n).min(len));
            }
            7 if len > 0 => {
                let n = 1 + rng.below((len - at).min(64));
                let copy = data[at..(at + n).min(len)].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, copy);
            }
            8 => {
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                let to = rng.below(len + 1);
                data.splice(to..to, bytes);
            }
            9 | 10 if !dictionary.is_empty() => {
                let word = &dictionary[rng.below(dictionary.len())];
                let to = rng.below(len + 1);
                if rng.below(2) == 0 || to + word.len() > len {
                    data.splice(to..to, word.iter().copied());
                } else {
                    data[to..to + word.len()].copy_from_slice(word);
                }
            }
            11 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[cut..]);
            }
            _ if len > 2 => data.truncate(len - 1 - rng.below(len / 2)),
            _ => data.push(rng.next() as u8),
        }
        data.truncate(max_len);
    }
    data
}

// ---- The loop ------------------------------------------------------------------------------------------------------

/// What runs one input through a target.
pub type RunInput = Box<dyn FnMut(&[u8])>;

/// A fuzz target: its name, the function one input runs through (it panics on a failed check), its seeds, its
/// dictionary and its largest input.
pub struct Target {
    pub name: &'static str,
    pub run: RunInput,
    pub seeds: Vec<Vec<u8>>,
    pub dictionary: Vec<Vec<u8>>,
    pub max_len: usize,
}

/// How a run went.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub target: String,
    pub executions: u64,
    pub corpus: usize,
    /// Map entries reached (edges, up to collisions in the map); 0 without instrumentation.
    pub edges: usize,
    pub panics: Vec<PathBuf>,
    pub seconds: f64,
    pub peak_heap_bytes: usize,
}

/// Where to stop and where to write.
pub struct Budget {
    pub executions: u64,
    pub time: Duration,
    pub seed: u64,
    /// Where crashing inputs are written.
    pub crash_dir: PathBuf,
    /// A directory whose files join the corpus at the start, and where new corpus entries are saved.
    pub corpus_dir: Option<PathBuf>,
}

/// Runs `target` on its seeds and the corpus directory's files, then on mutations until the budget is spent.
pub fn fuzz(mut target: Target, budget: &Budget) -> Report {
    let started = Instant::now();
    std::fs::create_dir_all(&budget.crash_dir).expect("the crash directory");
    let abort_path = budget.crash_dir.join(format!("abort-input-{}", target.name));
    // SAFETY: set before any input runs; read only by `die`.
    unsafe {
        *std::ptr::addr_of_mut!(ABORT_FILE) = std::fs::File::create(&abort_path).ok();
    }
    start_watchdog();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()))));

    let mut corpus: Vec<Vec<u8>> = std::mem::take(&mut target.seeds);
    if let Some(dir) = &budget.corpus_dir {
        std::fs::create_dir_all(dir).expect("the corpus directory");
        corpus.extend(read_dir_files(dir));
    }
    corpus.retain(|c| c.len() <= target.max_len);
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut virgin = Virgin(vec![0; MAP]);
    let mut report = Report { target: target.name.to_string(), ..Report::default() };
    let mut run_one = |input: &[u8], report: &mut Report, target: &mut Target| -> bool {
        CURRENT_PTR.store(input.as_ptr() as usize, Ordering::SeqCst);
        CURRENT_LEN.store(input.len(), Ordering::SeqCst);
        EXEC_STARTED_MS.store(now_ms(), Ordering::Relaxed);
        take_touched(|_, _| {}); // the harness's own edges since the last input
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(input)));
        EXEC_STARTED_MS.store(0, Ordering::Relaxed);
        report.executions += 1;
        if outcome.is_err() {
            let path = save(&budget.crash_dir, target.name, input);
            if report.panics.is_empty() {
                let why = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
                eprintln!("fuzz {}: the first panic ({}): {why}", target.name, path.display());
            }
            report.panics.push(path);
        }
        virgin.absorb()
    };
    let seeds = corpus.clone();
    for input in &seeds {
        run_one(input, &mut report, &mut target);
    }
    let mut rng = Rng::new(budget.seed);
    while report.executions < budget.executions && started.elapsed() < budget.time {
        let parent = corpus[rng.below(corpus.len())].clone();
        let child = mutate(&mut rng, &parent, &corpus, &target.dictionary, target.max_len);
        if run_one(&child, &mut report, &mut target) {
            if let Some(dir) = &budget.corpus_dir {
                save(dir, target.name, &child);
            }
            corpus.push(child);
        }
    }
    std::panic::set_hook(previous);
    CURRENT_PTR.store(0, Ordering::SeqCst);
    std::fs::remove_file(&abort_path).ok();
    report.corpus = corpus.len();
    report.edges = virgin.edges();
    report.seconds = started.elapsed().as_secs_f64();
    report.peak_heap_bytes = peak_bytes();
    report
}

/// Writes `input` as `<dir>/<target>-<hash>`; returns the path.
fn save(dir: &Path, target: &str, input: &[u8]) -> PathBuf {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x1_0000_01b3));
    let path = dir.join(format!("{target}-{hash:016x}"));
    std::fs::write(&path, input).ok();
    path
}

/// The files of a directory, sorted by name (none when it does not exist).
pub fn read_dir_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect(),
        Err(_) => return Vec::new(),
    };
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}
