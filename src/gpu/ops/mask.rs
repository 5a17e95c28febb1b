//! The allowed-token mask of constrained decoding (`shaders/mask.wgsl`): [`apply_mask`] sets the logits of disallowed
//! tokens to -inf in place, so that every sampler setting that follows (greedy, top-k, top-p, min-p, temperature;
//! see [`super::sample`]) can only pick an allowed token.
//!
//! The mask is one bit per token, 32 to a `u32` word, least significant bit first: exactly the words of llguidance's
//! token masks, so the engine uploads them as they are (n_vocab / 8 bytes, 19 KB at R1's 152K vocabulary). The
//! dispatch is built once per logits row and recorded only for constrained steps: unconstrained decoding neither
//! uploads a mask nor runs this kernel (README.md, "Structured output").

use super::{index_u32, params, WORKGROUP_SIZE};
use crate::gpu::dispatch::{grid, Bind, Dispatch, Launch};
use crate::gpu::{DType, Gpu, Macros, Tensor};
use crate::{err, Result};

/// Words of a mask over `n_vocab` tokens.
pub fn mask_words(n_vocab: usize) -> usize {
    n_vocab.div_ceil(32)
}

/// `logits[offset + i] = -inf` for every `i < n_vocab` whose bit in `allowed` (a `u32` tensor of at least
/// [`mask_words`]`(n_vocab)` words) is 0; the other logits are left as they are.
pub fn apply_mask(gpu: &Gpu, logits: &Tensor, offset: usize, n_vocab: usize, allowed: &Tensor) -> Result<Dispatch> {
    if logits.dtype() != DType::F32 {
        return Err(err!(Usage, "apply_mask: logits must be f32, not {}", logits.dtype().name()));
    }
    if n_vocab == 0 || offset.checked_add(n_vocab).is_none_or(|end| end > logits.len()) {
        return Err(err!(
            Usage,
            "apply_mask: {n_vocab} logits at element {offset} do not fit a tensor of {} elements",
            logits.len()
        ));
    }
    let words = mask_words(n_vocab);
    if allowed.dtype() != DType::U32 || allowed.len() < words {
        return Err(err!(
            Usage,
            "apply_mask: the mask must be a u32 tensor of at least {words} words, got {} {:?}",
            allowed.dtype().name(),
            allowed.shape()
        ));
    }
    if allowed.same_buffer(logits) {
        return Err(err!(Usage, "apply_mask: the mask needs a buffer of its own"));
    }
    let n = index_u32("apply_mask", "the vocabulary", n_vocab)?;
    let offset = index_u32("apply_mask", "the logits' end", offset + n_vocab)? - n;
    Dispatch::new(
        gpu,
        Launch {
            shader: "mask",
            entry: "apply_mask",
            macros: Macros::new().u32("WORKGROUP_SIZE", WORKGROUP_SIZE),
            params: &params([n, offset, words as u32, f32::NEG_INFINITY.to_bits()]),
            bindings: vec![Some(Bind::Tensor(logits)), Some(Bind::Tensor(allowed))],
            workgroups: grid(gpu, "apply_mask", n.div_ceil(WORKGROUP_SIZE))?,
        },
    )
}
