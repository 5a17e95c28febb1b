//! The fuzz targets (`tests/fuzz/targets.rs`) in a short, fixed run: every committed regression input, the seeds
//! from the fixtures, then a fixed number of mutations per target from a fixed seed, under the counting allocator
//! (1 GiB) and the hang watchdog (10 s). Inside `cargo test` there is no coverage instrumentation; the long,
//! coverage-guided runs use the same targets through `fuzz/run.sh` (README, "Tests").

#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/targets.rs"]
mod targets;

#[allow(dead_code)]
#[path = "../src/cli/openai.rs"]
mod openai;

#[global_allocator]
static ALLOC: harness::CountingAlloc = harness::CountingAlloc;

/// Inputs per target in CI (seeds and regressions included): the whole test takes about 10 s.
fn executions(target: &str) -> u64 {
    match target {
        "gguf" | "openai" => 50_000,
        "gguf_chunked" => 20_000,
        "template" => 10_000,
        _ => 4_000,
    }
}

#[test]
fn every_target_survives_its_regressions_seeds_and_a_short_mutation_run() {
    assert_eq!(harness::instrumented_edges(), 0, "cargo test builds without coverage instrumentation");
    let crash_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    let mut failed = Vec::new();
    for name in targets::all() {
        let mut target = targets::by_name(name).expect("a target");
        let regressions = harness::read_dir_files(&targets::regressions(name));
        let n_regressions = regressions.len();
        target.seeds.extend(regressions);
        let budget = harness::Budget {
            executions: executions(name),
            time: std::time::Duration::from_secs(60),
            seed: 0x5eed_f022,
            crash_dir: crash_dir.clone(),
            corpus_dir: None,
        };
        let report = harness::fuzz(target, &budget);
        eprintln!(
            "fuzz {}: {} executions ({n_regressions} regression inputs) in {:.1} s, {} panics, peak heap {:.1} MiB",
            report.target,
            report.executions,
            report.seconds,
            report.panics.len(),
            report.peak_heap_bytes as f64 / (1 << 20) as f64
        );
        assert!(report.executions >= executions(name), "{name} ran its seeds and mutations");
        if !report.panics.is_empty() {
            failed.push(format!("{name}: {:?}", report.panics));
        }
    }
    assert!(failed.is_empty(), "inputs that panicked (replay them from the files): {failed:#?}");
}
