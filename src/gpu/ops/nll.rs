//! Scoring for perplexity (`shaders/nll.wgsl`): the negative log-likelihood of a target token under each row of logits,
//! so that a whole batch of predictions is scored on the GPU and only one `f32` per token comes back.

use super::{index_u32, params, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// `nll[r] = log(Σ_j exp(logits[r, j])) − logits[r, targets[r]]` for every row of the f32 `logits` (`[rows, n_vocab]`),
/// with `targets` `u32 [rows]` and `nll` `f32 [rows]`. A target id outside the vocabulary gives −1.
pub fn nll(gpu: &Gpu, logits: &Tensor, targets: &Tensor, nll: &Tensor) -> Result<Dispatch> {
    let rows = logits.rows();
    if logits.dtype() != DType::F32 || logits.cols() == 0 {
        return Err(err!(
            Usage,
            "nll: logits must be f32 [rows, n_vocab], got {} {:?}",
            logits.dtype().name(),
            logits.shape()
        ));
    }
    if targets.dtype() != DType::U32 || targets.len() != rows {
        return Err(err!(
            Usage,
            "nll: targets must be u32 [{rows}], got {} {:?}",
            targets.dtype().name(),
            targets.shape()
        ));
    }
    if nll.dtype() != DType::F32 || nll.len() != rows {
        return Err(err!(Usage, "nll: nll must be f32 [{rows}], got {} {:?}", nll.dtype().name(), nll.shape()));
    }
    if nll.same_buffer(logits) || nll.same_buffer(targets) {
        return Err(err!(Usage, "nll: nll must be a buffer of its own"));
    }
    let n_vocab = index_u32("nll", "the vocabulary", logits.cols())?;
    index_u32("nll", "the logits", logits.len())?;
    let rows = index_u32("nll", "the row count", rows)?;
    Dispatch::new(
        gpu,
        Launch {
            shader: "nll",
            entry: "nll_rows",
            macros: Macros::new().u32("WORKGROUP_SIZE", WORKGROUP_SIZE),
            params: &params([n_vocab, rows, 0, 0]),
            bindings: vec![Some(Bind::Tensor(logits)), Some(Bind::Tensor(targets)), Some(Bind::Tensor(nll))],
            workgroups: grid(gpu, "nll", rows)?,
        },
    )
}
