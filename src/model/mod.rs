//! A model on the GPU: its weights ([`weights`]), its KV cache ([`kv_cache`]) and its forward pass as a replayable
//! list of dispatches ([`forward`]).

pub mod forward;
pub mod kv_cache;
pub mod weights;

pub use forward::{Graph, Head, HeadKind, StepInputs};
pub use kv_cache::KvCache;
pub use weights::{GateUp, LayerWeights, Stack, WeightLoader, Weights};
