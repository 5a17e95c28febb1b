//! webr1: the distilled DeepSeek-R1 reasoning models on the user's own GPU.
//!
//! This crate is the engine every front end shares: the browser package (wasm32 + WebGPU), the native `webr1` binary and
//! Rust users. The modules follow the path a model takes from bytes to text:
//!
//! - [`gguf`]: the GGUF header, parsed incrementally from byte chunks as they arrive;
//! - [`quant`]: the GGML block formats and their CPU reference dequantisers;
//! - [`config`]: the model hyper-parameters, typed, from the header's metadata;
//! - [`tokenizer`]: the model's own vocabulary as a tokenizer that matches llama.cpp id for id;
//! - [`chat`]: the model's chat template, rendered safely, and the reasoning/answer split of R1's output;
//! - [`synth`]: models with random weights at the R1 shapes, for benchmarks.

pub mod chat;
pub mod config;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod quant;
pub mod synth;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, ErrorCode, Result};
