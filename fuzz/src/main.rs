//! `webr1-fuzz TARGET [EXECUTIONS] [SECONDS]`: one target of `tests/fuzz/targets.rs` under the coverage-guided loop
//! of `tests/fuzz/harness.rs`, its corpus kept in `$WEBR1_FUZZ_DIR/TARGET` (default `~/.cache/webr1-fuzz`) between
//! runs, crashing inputs written to `$WEBR1_FUZZ_DIR/crashes`. Build it with `fuzz/run.sh`, which adds the
//! SanitizerCoverage flags. Prints one JSON line: executions, corpus size, edges reached, panics, seconds, peak heap.

#[path = "../../tests/fuzz/harness.rs"]
mod harness;
#[path = "../../tests/fuzz/targets.rs"]
mod targets;

#[allow(dead_code)]
#[path = "../../src/cli/openai.rs"]
mod openai;

#[global_allocator]
static ALLOC: harness::CountingAlloc = harness::CountingAlloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(mut target) = args.get(1).and_then(|name| targets::by_name(name)) else {
        eprintln!("usage: webr1-fuzz TARGET [EXECUTIONS] [SECONDS]; targets: {}", targets::all().join(", "));
        std::process::exit(2);
    };
    let executions = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let seconds = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX / 4);
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    let dir = std::env::var_os("WEBR1_FUZZ_DIR").map_or(home.join(".cache/webr1-fuzz"), std::path::PathBuf::from);
    target.seeds.extend(harness::read_dir_files(&targets::regressions(target.name)));
    let name = target.name;
    let budget = harness::Budget {
        executions,
        time: std::time::Duration::from_secs(seconds),
        seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
        crash_dir: dir.join("crashes"),
        corpus_dir: Some(dir.join(name)),
    };
    if harness::instrumented_edges() == 0 {
        eprintln!("webr1-fuzz: built without coverage instrumentation (use fuzz/run.sh): mutations only");
    }
    let report = harness::fuzz(target, &budget);
    println!(
        "{}",
        serde_json::json!({
            "target": report.target,
            "executions": report.executions,
            "corpus": report.corpus,
            "edges": report.edges,
            "instrumented_edges": harness::instrumented_edges(),
            "panics": report.panics,
            "seconds": report.seconds,
            "executions_per_second": report.executions as f64 / report.seconds.max(1e-9),
            "peak_heap_bytes": report.peak_heap_bytes,
        })
    );
    if !report.panics.is_empty() {
        std::process::exit(1);
    }
}
