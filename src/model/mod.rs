//! A model on the GPU: its weights ([`weights`]), its KV cache ([`kv_cache`]) and its forward pass as a replayable
//! list of dispatches ([`forward`]).

pub mod forward;
pub mod kv_cache;
pub mod plan;
pub mod weights;

pub use forward::{ActivationShape, Graph, Head, HeadKind, StepInputs};
pub use kv_cache::KvCache;
pub use plan::{MemoryPlan, PlanRequest};
pub use weights::{weight_layout, GateUp, LayerWeights, Stack, WeightLayout, WeightLoader, WeightShape, Weights};
