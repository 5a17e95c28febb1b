//! `webr1 bench --profile`: where a decode token's time, dispatches, bytes and waits go (see
//! `webr1::engine::Profile` for how each number is measured), and the prefill of `-p` tokens by GEMM, attention and
//! the rest. `--json` prints one object: the model and adapter, the decode profile's fields at the top level, and the
//! first `-p` size's prefill profile under `prefill` (`null` with `-p 0`), every size's under `prefills`.

use super::{tokens, BenchArgs, Description};
use serde_json::{json, Value};
use webr1::engine::{Engine, Profile};
use webr1::{err, Result};

pub(super) fn run(engine: &mut Engine, d: &Description, args: &BenchArgs, prompts: &[usize]) -> Result<()> {
    if args.n_gen == 0 {
        return Err(err!(Usage, "--profile profiles decode steps: give -n 1 or more"));
    }
    let n_vocab = engine.tokenizer().n_vocab();
    let warmup = !args.no_warmup;
    let session = engine.session();
    let prefills = prompts
        .iter()
        .map(|&n| pollster::block_on(session.profile_prefill(&tokens(n, n_vocab), warmup)))
        .collect::<Result<Vec<_>>>()?;
    let decode = pollster::block_on(session.profile_decode(tokens(1, n_vocab)[0], args.n_gen, warmup))?;
    match args.json {
        true => println!("{}", to_json(d, &decode, &prefills)?),
        false => print_text(d, &decode, &prefills),
    }
    Ok(())
}

/// The object `--profile --json` prints: `prefill` is the first `-p` size's profile (`null` without one), `prefills`
/// every size's.
fn to_json(d: &Description, decode: &Profile, prefills: &[Profile]) -> Result<Value> {
    let as_value = |p: &Profile| serde_json::to_value(p).map_err(|e| err!(Usage, "profile to JSON: {e}"));
    let mut out = json!({
        "model_type": d.model,
        "model_size": d.size,
        "model_n_params": d.params,
        "backends": d.backend,
        "gpu_info": d.adapter,
        "shaders": d.shaders,
    });
    if let (Value::Object(out), Value::Object(fields)) = (&mut out, as_value(decode)?) {
        out.extend(fields);
        out.insert("prefill".into(), prefills.first().map(as_value).transpose()?.unwrap_or(Value::Null));
        let all = prefills.iter().map(as_value).collect::<Result<Vec<_>>>()?;
        out.insert("prefills".into(), Value::Array(all));
    }
    Ok(out)
}

const MB: f64 = 1e6;

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

fn percent(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1} %", v * 100.0))
}

fn print_text(d: &Description, decode: &Profile, prefills: &[Profile]) {
    let first = decode.positions[0];
    println!(
        "decode profile: {} ({}) on {} ({}), {} shaders; {} greedy steps at positions {first}..={}",
        d.model,
        super::super::info::human_bytes(d.size),
        d.adapter,
        d.backend,
        d.shaders,
        decode.tokens,
        decode.positions[1],
    );
    println!("{}", timing_line(decode));
    print_ops(decode);
    let p = decode;
    println!(
        "dispatches per token: {:.1} = {} layers × {:.1} + {:.1} outside the layers; submits per token: {:.2}",
        p.dispatches_per_token,
        p.n_layer,
        p.dispatches_per_layer,
        p.dispatches_outside_layers_per_token,
        p.submits_per_token
    );
    println!(
        "CPU waits per token: {:.2}, of which left the GPU idle: {:.2}",
        p.waits_per_token, p.idle_waits_per_token
    );
    println!(
        "bytes read per token: {:.2} MB = weights {:.2} + KV {:.3} + activations {:.2}; written {:.2} MB",
        p.bytes_read_per_token / MB,
        p.weight_bytes_read_per_token / MB,
        p.kv_bytes_read_per_token / MB,
        p.activation_bytes_read_per_token / MB,
        p.bytes_written_per_token / MB,
    );
    let needed = p.weight_bytes as f64 + p.kv_bytes_needed_per_token;
    println!(
        "a token needs: weights {:.2} MB + KV {:.3} MB; bytes read are {:.1} % of that",
        p.weight_bytes as f64 / MB,
        p.kv_bytes_needed_per_token / MB,
        100.0 * p.bytes_read_per_token / needed.max(1.0),
    );
    println!(
        "wall time per token: {:.2} ms ({:.2} tok/s, {:.2} GB/s of bytes read); GPU time per token: {}",
        p.wall_ms_per_token,
        p.tokens_per_second,
        p.bytes_read_per_token / (p.wall_ms_per_token * 1e6).max(1e-9),
        match (p.gpu_ms_per_token, p.timed_wall_ms_per_token) {
            (Some(g), Some(w)) => format!("{g:.2} ms ({:.1} % of the timed run's wall time)", 100.0 * g / w),
            _ => "-".into(),
        },
    );
    for p in prefills {
        println!();
        println!("prefill profile: {} tokens in {} submissions at positions 0..={}", p.tokens, p.steps, p.positions[1]);
        println!("{}", timing_line(p));
        println!(
            "| {:<12} | {:>11} | {:>12} | {:>8} | {:>13} |",
            "class", "calls/token", "GPU ms/token", "share", "MB read/token"
        );
        println!("| {:-<12} | {:->10}: | {:->11}: | {:->7}: | {:->12}: |", "", "", "", "", "");
        for c in &p.classes {
            println!(
                "| {:<12} | {:>11.2} | {:>12} | {:>8} | {:>13.3} |",
                c.class,
                c.calls_per_token,
                ms(c.gpu_ms_per_token),
                percent(c.share),
                c.bytes_read_per_token / MB
            );
        }
        println!(
            "dispatches per token: {:.2}; CPU waits per token: {:.3}; wall time per token: {:.2} ms ({:.2} tok/s); \
             GPU time per token: {}",
            p.dispatches_per_token,
            p.waits_per_token,
            p.wall_ms_per_token,
            p.tokens_per_second,
            ms(p.gpu_ms_per_token),
        );
    }
}

fn timing_line(p: &Profile) -> String {
    match (p.gpu_ms_per_token, p.timed_wall_ms_per_token) {
        (Some(_), Some(wall)) => format!(
            "GPU time: timestamp queries around each dispatch (a compute pass per dispatch; that run took {wall:.2} ms \
             per token of wall time)"
        ),
        _ => "GPU time: this adapter has no timestamp-query, so no time per op; wall time per token below".into(),
    }
}

fn print_ops(p: &Profile) {
    println!(
        "| {:<36} | {:>11} | {:>12} | {:>8} | {:>13} | {:>8} |",
        "op", "calls/token", "GPU ms/token", "share", "MB read/token", "GB/s"
    );
    println!("| {:-<36} | {:->10}: | {:->11}: | {:->7}: | {:->12}: | {:->7}: |", "", "", "", "", "", "");
    for row in &p.ops {
        println!(
            "| {:<36} | {:>11.2} | {:>12} | {:>8} | {:>13.3} | {:>8} |",
            row.op,
            row.calls_per_token,
            ms(row.gpu_ms_per_token),
            percent(row.share),
            row.bytes_read_per_token / MB,
            row.gb_per_s.map_or("-".into(), |g| format!("{g:.2}")),
        );
    }
    let gb_per_s = p.gpu_ms_per_token.map(|g| p.bytes_read_per_token / (g * 1e6).max(1e-9));
    println!(
        "| {:<36} | {:>11.2} | {:>12} | {:>8} | {:>13.3} | {:>8} |",
        "total",
        p.dispatches_per_token,
        ms(p.gpu_ms_per_token),
        percent(p.gpu_ms_per_token.map(|_| 1.0)),
        p.bytes_read_per_token / MB,
        gb_per_s.map_or("-".into(), |g| format!("{g:.2}")),
    );
}
