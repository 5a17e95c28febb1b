//! Element-wise kernels (`shaders/elementwise.wgsl`): residual and bias adds, products, the SwiGLU `silu(gate) * up`
//! of the feed-forward block, and scaling. Math is f32 whatever the storage type.
//!
//! `out` may be the same tensor as the first operand (`add(gpu, &x, &h, &x)` is `x += h`): the in-place variant of the
//! shader is used then. It may not alias the second operand.

use super::{activation, index_u32, params, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::profile::Access;
use crate::gpu::{Gpu, Macros, Tensor};
use crate::{err, Result};

/// `out[i] = a[i] + b[i % b.len()]`: a residual add (`b` as long as `a`) or a bias added to every row of `a`
/// (`b` one row long; its length must divide `a`'s).
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Dispatch> {
    binary(gpu, "add", a, b, out, true)
}

/// `out[i] = a[i] * b[i % b.len()]` (`b` as long as `a`, or one row broadcast over the rows of `a`).
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Dispatch> {
    binary(gpu, "mul", a, b, out, true)
}

/// `out[i] = silu(gate[i]) * up[i]` with `silu(g) = g / (1 + exp(-g))`: the gated activation of the Llama/Qwen FFN.
pub fn silu_mul(gpu: &Gpu, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<Dispatch> {
    binary(gpu, "silu_mul", gate, up, out, false)
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
    launch(gpu, "scale", f16, in_place, [len, 1, s.to_bits(), 0], bindings)
}

fn binary(gpu: &Gpu, op: &'static str, a: &Tensor, b: &Tensor, out: &Tensor, broadcast: bool) -> Result<Dispatch> {
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
    let bindings = match in_place {
        true => vec![Some(Bind::Declared(a, Access::READ_WRITE)), Some(Bind::Tensor(b))],
        false => vec![Some(Bind::Tensor(a)), Some(Bind::Tensor(b)), Some(Bind::Tensor(out))],
    };
    let b_len = index_u32(op, "b", b.len())?;
    launch(gpu, op, f16, in_place, [len, b_len, 0, 0], bindings)
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

/// Builds the dispatch of `entry`; `words` is the shader's `Params` (`len`, `b_len`, `s`, padding).
fn launch(
    gpu: &Gpu,
    entry: &'static str,
    f16: bool,
    in_place: bool,
    words: [u32; 4],
    bindings: Vec<Option<Bind<'_>>>,
) -> Result<Dispatch> {
    let len = words[0];
    let macros = Macros::new().u32("WORKGROUP_SIZE", WORKGROUP_SIZE).bool("F16", f16).bool("IN_PLACE", in_place);
    let workgroups = grid(gpu, entry, len.div_ceil(WORKGROUP_SIZE))?;
    Dispatch::new(gpu, Launch { shader: "elementwise", entry, macros, params: &params(words), bindings, workgroups })
}
