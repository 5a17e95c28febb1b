//! webr1's CPU reference dequantisers against golden values from an independent implementation: llama.cpp's Python
//! `gguf` package (`gguf.quants.dequantize`), written by `scripts/gen-quant-golden.py` into `tests/fixtures/quant/`.
//!
//! - `random.json`: seeded random blocks of every supported type, plus awkward ones (all zero, all quant bits set with
//!   negative scales, extreme f16 scales), and F32/F16/BF16 values with infinities, NaN and subnormals.
//! - `models.json`: rows of real tensors of the test models, read here straight from the model file at the recorded
//!   offset (`WEBR1_MODELS`, default `~/.cache/webr1-test-models`). A missing model skips loudly, or fails when
//!   `CI=true`; qwen15 rows are only checked with `WEBR1_SLOW=1`.
//!
//! ggml dequantises in f32 with one rounding per operation, and webr1 does the same operations in the same order, so
//! the results are expected to be bit-identical; the tolerance `1e-6 * max(1, |want|)` only leaves room for a
//! last-bit difference and would catch any real error.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::mem::size_of;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde::Deserialize;
use webr1::quant::{
    dequantize, dequantize_to_vec, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8_0, GgmlType,
};
use webr1::ErrorCode;

// ---------------------------------------------------------------------------------------------------------------------
// Fixtures

#[derive(Deserialize)]
struct RandomFixture {
    cases: Vec<RandomCase>,
}

#[derive(Deserialize)]
struct RandomCase {
    #[serde(rename = "type")]
    ty: String,
    case: String,
    n: usize,
    bytes_hex: String,
    f32_le_hex: String,
}

#[derive(Deserialize)]
struct ModelFixture {
    rows: Vec<ModelRow>,
}

#[derive(Deserialize)]
struct ModelRow {
    model: String,
    tensor: String,
    #[serde(rename = "type")]
    ty: String,
    row: u64,
    n: usize,
    offset: u64,
    length: usize,
    fnv1a64: String,
    f32_le_hex: String,
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant").join(name)
}

fn load_fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd-length hex string");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit pair")).collect()
}

fn f32s_from_hex(hex: &str) -> Vec<f32> {
    from_hex(hex).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn ggml_type(name: &str) -> GgmlType {
    (0..64).filter_map(GgmlType::from_id).find(|t| t.name() == name).unwrap_or_else(|| panic!("unknown type {name}"))
}

/// 64-bit FNV-1a, the row checksum `gen-quant-golden.py` records next to the sha256.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

// ---------------------------------------------------------------------------------------------------------------------
// Comparison

/// Checks `got` against `want` with `|got - want| <= 1e-6 * max(1, |want|)` (NaN matches NaN, infinities must be
/// equal), panicking with the type, the first failing index and both values. Returns the largest absolute difference.
fn assert_close(what: &str, ty: GgmlType, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: {ty}: length");
    let mut max_diff = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() || w.is_infinite() {
            (g.is_nan() && w.is_nan()) || g == w
        } else {
            (g - w).abs() <= 1e-6 * w.abs().max(1.0)
        };
        assert!(
            ok,
            "{what}: {ty}: first mismatch at index {i}: webr1 {g:e} ({:#010x}), gguf {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
        if w.is_finite() {
            max_diff = max_diff.max((g - w).abs());
        }
    }
    max_diff
}

// ---------------------------------------------------------------------------------------------------------------------
// Seeded random and awkward blocks

#[test]
fn random_blocks_match_gguf() {
    let fixture: RandomFixture = load_fixture("random.json");
    for case in &fixture.cases {
        let ty = ggml_type(&case.ty);
        let bytes = from_hex(&case.bytes_hex);
        let want = f32s_from_hex(&case.f32_le_hex);
        assert_eq!(want.len(), case.n, "{} {}: fixture length", case.ty, case.case);

        let got = dequantize_to_vec(ty, &bytes, case.n).unwrap_or_else(|e| panic!("{ty} {}: {e}", case.case));
        let max_diff = assert_close(&case.case, ty, &got, &want);
        eprintln!("{:>5} {:<6} {:>4} values  max |diff| {max_diff:e}", ty.name(), case.case, case.n);
    }
}

#[test]
fn random_blocks_read_from_unaligned_bytes() {
    let fixture: RandomFixture = load_fixture("random.json");
    for case in &fixture.cases {
        let ty = ggml_type(&case.ty);
        let mut shifted = vec![0xAAu8];
        shifted.extend(from_hex(&case.bytes_hex));
        let mut got = vec![0.0f32; case.n];
        dequantize(ty, &shifted[1..], &mut got).unwrap_or_else(|e| panic!("{ty} {}: {e}", case.case));
        assert_close(&format!("{} (unaligned)", case.case), ty, &got, &f32s_from_hex(&case.f32_le_hex));
    }
}

#[test]
fn random_fixture_covers_every_supported_type() {
    let fixture: RandomFixture = load_fixture("random.json");
    let covered: BTreeSet<GgmlType> = fixture.cases.iter().map(|c| ggml_type(&c.ty)).collect();
    assert_eq!(covered, GgmlType::SUPPORTED.into_iter().collect());
}

// ---------------------------------------------------------------------------------------------------------------------
// Real tensors of the test models

fn models_dir() -> PathBuf {
    match std::env::var_os("WEBR1_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/webr1-test-models"),
    }
}

/// The model's path, or `None` (after a loud SKIP) when it is missing; a missing model fails the test when `CI=true`.
fn model_file(model: &str) -> Option<PathBuf> {
    let path = models_dir().join(format!("{model}.gguf"));
    if path.is_file() {
        return Some(path);
    }
    let message =
        format!("{} not found (set WEBR1_MODELS or run ../shared/scripts/fetch-test-models.sh)", path.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and {message}");
    eprintln!("SKIP: quant golden rows of {model}: {message}");
    None
}

fn read_row(path: &Path, row: &ModelRow) -> Vec<u8> {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut bytes = vec![0u8; row.length];
    file.seek(SeekFrom::Start(row.offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .unwrap_or_else(|e| panic!("reading {} bytes at {} of {}: {e}", row.length, row.offset, path.display()));
    bytes
}

/// Checks every fixture row of `model`; returns how many rows it checked (0 when the model is missing).
fn check_model_rows(model: &str) -> usize {
    let Some(path) = model_file(model) else { return 0 };
    let fixture: ModelFixture = load_fixture("models.json");
    let rows: Vec<&ModelRow> = fixture.rows.iter().filter(|r| r.model == model).collect();
    assert!(!rows.is_empty(), "models.json has no rows of {model}");
    for row in &rows {
        let ty = ggml_type(&row.ty);
        let what = format!("{model} {} row {}", row.tensor, row.row);
        let bytes = read_row(&path, row);
        assert_eq!(
            format!("{:016x}", fnv1a64(&bytes)),
            row.fnv1a64,
            "{what}: the bytes at offset {} differ from those the fixture was made from (another model file?)",
            row.offset
        );
        let got = dequantize_to_vec(ty, &bytes, row.n).unwrap_or_else(|e| panic!("{what}: {e}"));
        let max_diff = assert_close(&what, ty, &got, &f32s_from_hex(&row.f32_le_hex));
        eprintln!("{:>5} {what}: {} values  max |diff| {max_diff:e}", ty.name(), row.n);
    }
    rows.len()
}

#[test]
fn smol135_rows_match_gguf() {
    check_model_rows("smol135");
}

#[test]
fn qwen05_rows_match_gguf() {
    check_model_rows("qwen05");
}

/// qwen15 is 1.1 GB and CI only fetches it for the slow suite.
#[test]
fn qwen15_rows_match_gguf_slow() {
    if std::env::var("WEBR1_SLOW").as_deref() != Ok("1") {
        eprintln!("SKIP: quant golden rows of qwen15: set WEBR1_SLOW=1 to check them");
        return;
    }
    check_model_rows("qwen15");
}

// ---------------------------------------------------------------------------------------------------------------------
// Sizes and errors

#[test]
fn block_structs_match_ggml_type_sizes() {
    let blocks = [
        (GgmlType::Q4_0, size_of::<BlockQ4_0>(), 32),
        (GgmlType::Q4_1, size_of::<BlockQ4_1>(), 32),
        (GgmlType::Q5_0, size_of::<BlockQ5_0>(), 32),
        (GgmlType::Q5_1, size_of::<BlockQ5_1>(), 32),
        (GgmlType::Q8_0, size_of::<BlockQ8_0>(), 32),
        (GgmlType::Q2_K, size_of::<BlockQ2K>(), 256),
        (GgmlType::Q3_K, size_of::<BlockQ3K>(), 256),
        (GgmlType::Q4_K, size_of::<BlockQ4K>(), 256),
        (GgmlType::Q5_K, size_of::<BlockQ5K>(), 256),
        (GgmlType::Q6_K, size_of::<BlockQ6K>(), 256),
    ];
    for (ty, bytes, elements) in blocks {
        assert_eq!(ty.type_size(), bytes as u64, "{ty} type size");
        assert_eq!(ty.block_size(), elements, "{ty} block size");
        assert!(ty.is_supported(), "{ty}");
    }
}

#[test]
fn wrong_byte_length_is_a_usage_error() {
    for ty in GgmlType::SUPPORTED {
        let n = ty.block_size() as usize * 2;
        let right = ty.type_size() as usize * 2;
        for len in [0, right - 1, right + 1, right * 2] {
            let err = dequantize(ty, &vec![0u8; len], &mut vec![0.0; n]).expect_err("wrong length accepted");
            assert_eq!(err.code, ErrorCode::Usage, "{ty} with {len} bytes: {err}");
        }
        assert!(dequantize(ty, &vec![0u8; right], &mut vec![0.0; n]).is_ok(), "{ty}");
    }
}

#[test]
fn partial_block_is_a_usage_error() {
    for ty in GgmlType::SUPPORTED.into_iter().filter(|t| t.block_size() > 1) {
        let n = ty.block_size() as usize + 1;
        let err = dequantize(ty, &vec![0u8; ty.type_size() as usize], &mut vec![0.0; n]).expect_err("partial block");
        assert_eq!(err.code, ErrorCode::Usage, "{ty}: {err}");
        assert!(err.message.contains("block"), "{ty}: {err}");
    }
}

#[test]
fn unsupported_types_are_refused() {
    for ty in [GgmlType::IQ2_XXS, GgmlType::IQ4_NL, GgmlType::Q8_K, GgmlType::Q8_1, GgmlType::I8, GgmlType::MXFP4] {
        let n = ty.block_size() as usize;
        let bytes = vec![0u8; ty.type_size() as usize];
        let err = dequantize(ty, &bytes, &mut vec![0.0; n]).expect_err("unsupported type accepted");
        assert_eq!(err.code(), "quant.unsupported_type", "{ty}: {err}");
        assert_eq!(dequantize_to_vec(ty, &bytes, n).map_err(|e| e.code), Err(ErrorCode::QuantUnsupportedType));
    }
}

proptest! {
    /// Any bytes, lengths right or off by one: the right number of floats or an error, never a panic.
    #[test]
    fn dequantize_never_panics(
        ty_index in 0..GgmlType::SUPPORTED.len(),
        blocks in 0usize..4,
        byte_delta in -1i64..=1,
        element_delta in 0usize..=1,
        pool in proptest::collection::vec(any::<u8>(), 900),
    ) {
        let ty = GgmlType::SUPPORTED[ty_index];
        let n = blocks * ty.block_size() as usize + element_delta;
        let len = (blocks as i64 * ty.type_size() as i64 + byte_delta).max(0) as usize;
        let bytes = &pool[..len];
        let fits = ty.row_bytes(n as u64) == Some(len as u64);
        let result = dequantize_to_vec(ty, bytes, n);
        prop_assert_eq!(result.is_ok(), fits, "{} n={} len={}", ty, n, len);
        if let Ok(values) = result {
            prop_assert_eq!(values.len(), n);
        }
    }
}
