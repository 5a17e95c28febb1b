//! One error type for the whole engine: a stable machine-readable [`ErrorCode`] and a message a person can act on.
//!
//! The codes are part of webr1's public surface (the JS API turns them into `Error.code`, the CLI prints them), so they
//! never change meaning. Every code webr1 can return is listed here, in one place:
//!
//! | code | when |
//! |---|---|
//! | `io.not_found` | a model file does not exist |
//! | `io.is_directory` | a directory was given where a model file belongs |
//! | `io.not_a_file` | a device, FIFO or socket was given where a model file belongs (it is refused before it is opened) |
//! | `io.read` | reading a file or stream failed |
//! | `io.write` | writing a file failed (the download cache, standard output) |
//! | `download.failed` | a model URL could not be fetched or its transfer broke off: a network error, an unreachable Hugging Face listing, a missing part of a split model (the message names the URL and how to pass a local file instead) |
//! | `download.http` | the server of a model URL answered with an HTTP error status, or ignored a Range request when resuming |
//! | `download.verify` | a downloaded model's size differs from what the server announced, its sha256 differs from the one known for it (webr1's catalogue, or a server's `X-Linked-Etag` / `ETag` of 64 hex digits, as Hugging Face sends; the download is then deleted), or the file changed between requests |
//! | `download.interrupted` | a download broke off and could not be resumed (webr1 resumes a few times with Range requests first) |
//! | `server.bind` | `webr1 serve` or `webr1 web` cannot listen on the address asked for |
//! | `gguf.bad_magic` | the bytes do not start with `GGUF` |
//! | `gguf.unsupported_version` | a GGUF version other than 2 or 3 |
//! | `gguf.truncated` | the bytes end inside the header, or a count or length in it claims more bytes than the file has |
//! | `gguf.too_large` | a count, length, nesting depth or header size above webr1's caps |
//! | `gguf.bad_utf8` | a key or string value that is not UTF-8 |
//! | `gguf.bad_value_type` | an unknown metadata value type, or a bool byte other than 0 or 1 |
//! | `gguf.duplicate_key` | a metadata key appears twice |
//! | `gguf.bad_alignment` | `general.alignment` is zero, not a power of two, or not a `u32` |
//! | `gguf.bad_tensor_type` | an unknown GGML tensor type id |
//! | `gguf.bad_shape` | zero or too many dimensions, an empty or overflowing shape, or rows that are not whole blocks |
//! | `gguf.duplicate_tensor` | two tensors with the same name |
//! | `gguf.tensor_misaligned` | a tensor offset that is not a multiple of the alignment |
//! | `gguf.tensor_overlap` | two tensors that share bytes |
//! | `gguf.tensor_out_of_range` | a tensor that lies outside the data section |
//! | `gguf.bad_split` | split files whose `split.no` / `split.count` / file names do not agree |
//! | `gguf.missing_key` | a required metadata key is absent |
//! | `gguf.wrong_type` | a metadata key holds a value of another type than the one required |
//! | `quant.unsupported_type` | a GGML type webr1 knows but does not compute with (IQ formats, ...) |
//! | `config.unsupported_architecture` | `general.architecture` other than `qwen2` or `llama` |
//! | `config.bad_value` | a hyper-parameter that is missing a tensor, inconsistent or out of range |
//! | `tokenizer.unsupported_model` | `tokenizer.ggml.model` other than `gpt2` (byte-level BPE) |
//! | `tokenizer.unsupported_pre` | a `tokenizer.ggml.pre` webr1 does not know (never guessed) |
//! | `tokenizer.bad_vocab` | token, type or merge arrays that disagree or hold bad entries |
//! | `tokenizer.encode` | tokenisation failed |
//! | `chat.no_template` | the model has no `tokenizer.chat_template` |
//! | `chat.template` | the chat template failed to compile or render |
//! | `chat.bad_messages` | messages that are not `{role, content}` objects |
//! | `webgpu.unavailable` | no GPU adapter: the browser has no WebGPU (or it is switched off), or natively no Vulkan/Metal/DX12 driver |
//! | `gpu.device` | the adapter refused to create a device with the features and limits webr1 asked for |
//! | `gpu.out_of_memory` | the GPU could not allocate a buffer (caught with an error scope, never a hang) |
//! | `gpu.device_lost` | the GPU device was lost (driver reset, tab in the background too long, device destroyed) |
//! | `gpu.limits` | a tensor, row or dispatch that the device's limits (binding size, buffer size) cannot hold; the message names the numbers |
//! | `gpu.validation` | the GPU rejected an operation webr1 issued (a bug in webr1: please report it with the message) |
//! | `gpu.shader` | a WGSL shader failed to preprocess (bad directive, unknown include or macro) |
//! | `model.too_large` | the model's memory plan does not fit, found before anything is allocated: a row of a weight or one layer's keys larger than one GPU binding, or more bytes in all than the budget given (`--gpu-memory`, `gpuMemory`); the message names the numbers and what would fit (a shorter context, a smaller quantisation) |
//! | `synth.vocab` | `webr1 synth` or `bench --shape` for a llama shape without `--vocab`, or a vocabulary that does not fit the shape (a file without tokens, tokens beyond the shape's vocabulary that are not padding, a special token id outside it) |
//! | `structured.schema` | a JSON schema (`response_format`, `--json-schema`, a tool's `parameters`) that webr1 cannot constrain to: not valid JSON or not a schema, nested deeper than 64 levels, larger than 256 KiB, an `enum` of more than 1,024 values, a keyword llguidance does not implement (the message names it), or a schema over llguidance's own size limits |
//! | `structured.grammar` | a Lark grammar (`grammar`, `--grammar`) or a regular expression (`regex`) that does not compile, or is over llguidance's limits |
//! | `structured.dead_end` | during generation the constraint admits no next token (or its matcher failed): the answer so far cannot be completed, so generation stops rather than return text that does not match |
//! | `tools.invalid` | malformed `tools` (not `{type: "function", function: {name, parameters}}`, a duplicate or bad name), a `tool_choice` that is not `auto`, `none`, `required` or a listed function, an assistant `tool_calls` entry without an `id`, a `tool` message without a `tool_call_id` |
//! | `context.full` | the prompt does not fit in the context that was allocated |
//! | `aborted` | the caller aborted a load or a generation |
//! | `usage` | a bad argument to a webr1 call or command (a context longer than the model's own, a size of 0 or a malformed one, ...) |

use std::fmt;

/// Stable error codes; see the module docs for when each is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    IoNotFound,
    IoIsDirectory,
    IoNotAFile,
    IoRead,
    IoWrite,
    DownloadFailed,
    DownloadHttp,
    DownloadVerify,
    DownloadInterrupted,
    ServerBind,
    GgufBadMagic,
    GgufUnsupportedVersion,
    GgufTruncated,
    GgufTooLarge,
    GgufBadUtf8,
    GgufBadValueType,
    GgufDuplicateKey,
    GgufBadAlignment,
    GgufBadTensorType,
    GgufBadShape,
    GgufDuplicateTensor,
    GgufTensorMisaligned,
    GgufTensorOverlap,
    GgufTensorOutOfRange,
    GgufBadSplit,
    GgufMissingKey,
    GgufWrongType,
    QuantUnsupportedType,
    ConfigUnsupportedArchitecture,
    ConfigBadValue,
    TokenizerUnsupportedModel,
    TokenizerUnsupportedPre,
    TokenizerBadVocab,
    TokenizerEncode,
    ChatNoTemplate,
    ChatTemplate,
    ChatBadMessages,
    WebgpuUnavailable,
    GpuDevice,
    GpuOutOfMemory,
    GpuDeviceLost,
    GpuLimits,
    GpuValidation,
    GpuShader,
    ModelTooLarge,
    SynthVocab,
    StructuredSchema,
    StructuredGrammar,
    StructuredDeadEnd,
    ToolsInvalid,
    ContextFull,
    Aborted,
    Usage,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::IoNotFound,
        Self::IoIsDirectory,
        Self::IoNotAFile,
        Self::IoRead,
        Self::IoWrite,
        Self::DownloadFailed,
        Self::DownloadHttp,
        Self::DownloadVerify,
        Self::DownloadInterrupted,
        Self::ServerBind,
        Self::GgufBadMagic,
        Self::GgufUnsupportedVersion,
        Self::GgufTruncated,
        Self::GgufTooLarge,
        Self::GgufBadUtf8,
        Self::GgufBadValueType,
        Self::GgufDuplicateKey,
        Self::GgufBadAlignment,
        Self::GgufBadTensorType,
        Self::GgufBadShape,
        Self::GgufDuplicateTensor,
        Self::GgufTensorMisaligned,
        Self::GgufTensorOverlap,
        Self::GgufTensorOutOfRange,
        Self::GgufBadSplit,
        Self::GgufMissingKey,
        Self::GgufWrongType,
        Self::QuantUnsupportedType,
        Self::ConfigUnsupportedArchitecture,
        Self::ConfigBadValue,
        Self::TokenizerUnsupportedModel,
        Self::TokenizerUnsupportedPre,
        Self::TokenizerBadVocab,
        Self::TokenizerEncode,
        Self::ChatNoTemplate,
        Self::ChatTemplate,
        Self::ChatBadMessages,
        Self::WebgpuUnavailable,
        Self::GpuDevice,
        Self::GpuOutOfMemory,
        Self::GpuDeviceLost,
        Self::GpuLimits,
        Self::GpuValidation,
        Self::GpuShader,
        Self::ModelTooLarge,
        Self::SynthVocab,
        Self::StructuredSchema,
        Self::StructuredGrammar,
        Self::StructuredDeadEnd,
        Self::ToolsInvalid,
        Self::ContextFull,
        Self::Aborted,
        Self::Usage,
    ];

    /// The stable text of the code, e.g. `gguf.bad_magic`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IoNotFound => "io.not_found",
            Self::IoIsDirectory => "io.is_directory",
            Self::IoNotAFile => "io.not_a_file",
            Self::IoRead => "io.read",
            Self::IoWrite => "io.write",
            Self::DownloadFailed => "download.failed",
            Self::DownloadHttp => "download.http",
            Self::DownloadVerify => "download.verify",
            Self::DownloadInterrupted => "download.interrupted",
            Self::ServerBind => "server.bind",
            Self::GgufBadMagic => "gguf.bad_magic",
            Self::GgufUnsupportedVersion => "gguf.unsupported_version",
            Self::GgufTruncated => "gguf.truncated",
            Self::GgufTooLarge => "gguf.too_large",
            Self::GgufBadUtf8 => "gguf.bad_utf8",
            Self::GgufBadValueType => "gguf.bad_value_type",
            Self::GgufDuplicateKey => "gguf.duplicate_key",
            Self::GgufBadAlignment => "gguf.bad_alignment",
            Self::GgufBadTensorType => "gguf.bad_tensor_type",
            Self::GgufBadShape => "gguf.bad_shape",
            Self::GgufDuplicateTensor => "gguf.duplicate_tensor",
            Self::GgufTensorMisaligned => "gguf.tensor_misaligned",
            Self::GgufTensorOverlap => "gguf.tensor_overlap",
            Self::GgufTensorOutOfRange => "gguf.tensor_out_of_range",
            Self::GgufBadSplit => "gguf.bad_split",
            Self::GgufMissingKey => "gguf.missing_key",
            Self::GgufWrongType => "gguf.wrong_type",
            Self::QuantUnsupportedType => "quant.unsupported_type",
            Self::ConfigUnsupportedArchitecture => "config.unsupported_architecture",
            Self::ConfigBadValue => "config.bad_value",
            Self::TokenizerUnsupportedModel => "tokenizer.unsupported_model",
            Self::TokenizerUnsupportedPre => "tokenizer.unsupported_pre",
            Self::TokenizerBadVocab => "tokenizer.bad_vocab",
            Self::TokenizerEncode => "tokenizer.encode",
            Self::ChatNoTemplate => "chat.no_template",
            Self::ChatTemplate => "chat.template",
            Self::ChatBadMessages => "chat.bad_messages",
            Self::WebgpuUnavailable => "webgpu.unavailable",
            Self::GpuDevice => "gpu.device",
            Self::GpuOutOfMemory => "gpu.out_of_memory",
            Self::GpuDeviceLost => "gpu.device_lost",
            Self::GpuLimits => "gpu.limits",
            Self::GpuValidation => "gpu.validation",
            Self::GpuShader => "gpu.shader",
            Self::ModelTooLarge => "model.too_large",
            Self::SynthVocab => "synth.vocab",
            Self::StructuredSchema => "structured.schema",
            Self::StructuredGrammar => "structured.grammar",
            Self::StructuredDeadEnd => "structured.dead_end",
            Self::ToolsInvalid => "tools.invalid",
            Self::ContextFull => "context.full",
            Self::Aborted => "aborted",
            Self::Usage => "usage",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable [`ErrorCode`] and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The stable code text, e.g. `gguf.truncated`.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

/// `Error::new` in a shorter form: `err!(GgufTruncated, "header ends at byte {n}")`.
#[macro_export]
macro_rules! err {
    ($code:ident, $($fmt:tt)+) => {
        $crate::error::Error::new($crate::error::ErrorCode::$code, format!($($fmt)+))
    };
}
