//! Element-wise kernels (`shaders/elementwise.wgsl`): residual and bias adds, products, the SwiGLU `silu(gate) * up`
//! of the feed-forward block, and scaling. Math is f32 whatever the storage type.
//!
//! `out` may be the same tensor as the first operand (`add(gpu, &x, &h, &x)` is `x += h`): the in-place variant of the
//! shader is used then. It may not alias the second operand.

use super::{activation, index_u32, params, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::{Access, Extent};
use crate::gpu::{Gpu, Macros, Tensor};
use crate::{err, Result};

/// `out[i] = a[i] + b[i % b.len()]`: a residual add (`b` as long as `a`) or a bias added to every row of `a`
/// (`b` one row long; its length must divide `a`'s).
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Dispatch> {
    binary(gpu, "add", a, b, out, true, None)
}

/// `out[i] = a[i] * b[i % b.len()]` (`b` as long as `a`, or one row broadcast over the rows of `a`).
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Dispatch> {
    binary(gpu, "mul", a, b, out, true, None)
}

/// `out[i] = silu(gate[i]) * up[i]` with `silu(g) = g / (1 + exp(-g))`: the gated activation of the Llama/Qwen FFN.
pub fn silu_mul(gpu: &Gpu, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<Dispatch> {
    binary(gpu, "silu_mul", gate, up, out, false, None)
}

/// [`silu_mul`] of the first `n_tokens` rows only (`[rows, n]` tensors), `n_tokens` read from the engine's `step`
/// tensor (`[n_past, n_tokens, 0, 0]`) when the dispatch runs: the rest of `out` is left as it is.
pub fn silu_mul_rows(gpu: &Gpu, gate: &Tensor, up: &Tensor, out: &Tensor, step: &Tensor) -> Result<Dispatch> {
    super::kv_store::check_step("silu_mul", step)?;
    if [gate, up, out].iter().any(|t| t.same_buffer(step)) {
        return Err(err!(Usage, "silu_mul: step needs a buffer of its own"));
    }
    binary(gpu, "silu_mul", gate, up, out, false, Some(step))
}

/// `out[i] = a[i] * s`.
pub fn scale(gpu: &Gpu, a: &Tensor, s: f32, out: &Tensor) -> Result<Dispatch> {
    let (f16, in_place, len) = check_output(gpu, "scale", a, out)?;
    if !s.is_finite() {
        return Err(err!(Usage, "scale: the factor must be finite, got {s}"));
    }
    let bindings = match in_place {
        true => vec![Some(Bind::Declared(a, Access::READ_WRITE))],
        false => vec![Some(Bind::Tensor(a)), None, Some(Bind::Tensor(out))],
    };
    launch(gpu, "scale", f16, in_place, false, [len, 1, s.to_bits(), 0], bindings)
}

/// An element-wise op of two operands; with `step`, only the step's rows (the shader's STEP_ROWS).
fn binary(
    gpu: &Gpu,
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    broadcast: bool,
    step: Option<&Tensor>,
) -> Result<Dispatch> {
    let (f16, in_place, len) = check_output(gpu, op, a, out)?;
    activation(gpu, op, "b", b)?;
    if b.dtype() != a.dtype() {
        return Err(err!(Usage, "{op}: b is {} but a is {}", b.dtype().name(), a.dtype().name()));
    }
    let fits = match broadcast {
        true => !b.is_empty() && a.len() % b.len() == 0,
        false => b.len() == a.len(),
    };
    if !fits {
        let want = if broadcast { "a length that divides" } else { "the length of" };
        return Err(err!(Usage, "{op}: b has {} elements, it needs {want} a's {}", b.len(), a.len()));
    }
    if b.same_buffer(out) || (in_place && b.same_buffer(a)) {
        return Err(err!(Usage, "{op}: out may be the first operand, never the second"));
    }
    let row_len = index_u32(op, "a row", a.cols())?;
    let mut bindings = match (in_place, step) {
        (true, _) => vec![Some(Bind::Declared(a, Access::READ_WRITE)), Some(Bind::Tensor(b)), None],
        // The step's rows only: the profile counts those.
        (false, Some(_)) => {
            let per_token = |t: &Tensor| u64::from(row_len) * t.byte_size() / t.len().max(1) as u64;
            vec![
                Some(Bind::Declared(a, Access::reads(Extent::PerToken(per_token(a))))),
                Some(Bind::Declared(b, Access::reads(Extent::PerToken(per_token(b))))),
                Some(Bind::Declared(out, Access::writes(Extent::PerToken(per_token(out))))),
            ]
        }
        (false, None) => vec![Some(Bind::Tensor(a)), Some(Bind::Tensor(b)), Some(Bind::Tensor(out))],
    };
    bindings.push(step.map(Bind::Tensor));
    let b_len = index_u32(op, "b", b.len())?;
    launch(gpu, op, f16, in_place, step.is_some(), [len, b_len, 0, row_len], bindings)
}

/// Checks `a` and `out` (same dtype and length); returns (f16, in place, length).
fn check_output(gpu: &Gpu, op: &str, a: &Tensor, out: &Tensor) -> Result<(bool, bool, u32)> {
    let f16 = activation(gpu, op, "a", a)?;
    if out.dtype() != a.dtype() || out.len() != a.len() {
        return Err(err!(
            Usage,
            "{op}: out is {} with {} elements but a is {} with {}",
            out.dtype().name(),
            out.len(),
            a.dtype().name(),
            a.len()
        ));
    }
    Ok((f16, out.same_buffer(a), index_u32(op, "a", a.len())?))
}

/// Builds the dispatch of `entry`; `words` is the shader's `Params` (`len`, `b_len`, `s`, `row_len`).
fn launch(
    gpu: &Gpu,
    entry: &'static str,
    f16: bool,
    in_place: bool,
    step_rows: bool,
    words: [u32; 4],
    bindings: Vec<Option<Bind<'_>>>,
) -> Result<Dispatch> {
    let len = words[0];
    let macros = Macros::new()
        .u32("WORKGROUP_SIZE", WORKGROUP_SIZE)
        .bool("F16", f16)
        .bool("IN_PLACE", in_place)
        .bool("STEP_ROWS", step_rows);
    let workgroups = grid(gpu, entry, len.div_ceil(WORKGROUP_SIZE))?;
    Dispatch::new(gpu, Launch { shader: "elementwise", entry, macros, params: &params(words), bindings, workgroups })
}
