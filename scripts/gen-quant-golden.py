#!/usr/bin/env python3
"""Write the golden dequantisation fixtures that tests/quant.rs checks webr1's CPU dequantisers against.

The expected values come from an independent implementation: llama.cpp's own Python package `gguf`
(`gguf.quants.dequantize`, numpy, float32 throughout), never from webr1.

Run from the repository root (a dev-time step; the fixtures are committed, CI does not run this):

    pip install gguf numpy          # gguf 0.19.0 was used
    python3 scripts/gen-quant-golden.py [--models DIR]

DIR defaults to $WEBR1_MODELS, else ~/.cache/webr1-test-models (fill it with ../shared/scripts/fetch-test-models.sh).
It writes two files:

  tests/fixtures/quant/random.json  seeded random blocks for every type webr1 supports, plus awkward blocks
                                    (all zero, all-ones quants with negative scales, extreme f16 scales)
  tests/fixtures/quant/models.json  for each (model, type) in the test models, one tensor and one or two rows:
                                    the absolute file offset and length of the row's raw bytes, their sha256 and
                                    64-bit FNV-1a, and gguf's dequantised values

Encoding: `bytes_hex` is the raw block bytes; `f32_le_hex` is the dequantised values as little-endian f32 bytes
(exact, NaN and infinities included). Re-running with the same inputs reproduces the files byte for byte.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

SEED = 0x5EB21
OUT_DIR = Path("tests/fixtures/quant")

QUANT_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]

# Byte offsets of the f16 fields of each block (ggml-common.h): (scale fields, min fields). Scales get small values
# of either sign, mins (Q4_1/Q5_1 `m`) a wider range; both must stay finite.
HALF_FIELDS = {
    T.Q4_0: ([0], []),
    T.Q4_1: ([0], [2]),
    T.Q5_0: ([0], []),
    T.Q5_1: ([0], [2]),
    T.Q8_0: ([0], []),
    T.Q2_K: ([80, 82], []),
    T.Q3_K: ([108], []),
    T.Q4_K: ([0, 2], []),
    T.Q5_K: ([0, 2], []),
    T.Q6_K: ([208], []),
}

# The test models (see fetch-test-models.sh). qwen15 is only checked when WEBR1_SLOW=1.
MODELS = ["smol135", "qwen05", "qwen15"]

# Rows longer than this get one row (the middle one) instead of two, to keep the fixture small.
TWO_ROWS_MAX_ELEMENTS = 2048


def hex_of(a: np.ndarray) -> str:
    return a.tobytes().hex()


def f32_le_hex(values: np.ndarray) -> str:
    return hex_of(np.ascontiguousarray(values, dtype="<f4"))


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def put_half(block: np.ndarray, offset: int, value: float) -> None:
    block[offset : offset + 2] = np.frombuffer(np.float16(value).astype("<f2").tobytes(), dtype=np.uint8)


def signed_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi))


def random_blocks(rng: np.random.Generator, qtype: T, n_blocks: int) -> np.ndarray:
    """Random quant bytes with sane finite scales (±[1e-3, 0.1]) and mins (±[1e-3, 1])."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scales, mins = HALF_FIELDS[qtype]
    for block in blocks:
        for off in scales:
            put_half(block, off, signed_uniform(rng, 1e-3, 0.1))
        for off in mins:
            put_half(block, off, signed_uniform(rng, 1e-3, 1.0))
    return blocks


def edge_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Three awkward blocks: all zero bytes; every quant bit set with negative scales and mins; random quants under
    the largest finite f16 scale, with the smallest subnormal f16 in any second field."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    zero = np.zeros(type_size, dtype=np.uint8)
    ones = np.full(type_size, 0xFF, dtype=np.uint8)
    extreme = rng.integers(0, 256, size=type_size, dtype=np.uint8)
    fields = HALF_FIELDS[qtype][0] + HALF_FIELDS[qtype][1]
    for i, off in enumerate(fields):
        put_half(ones, off, -0.0625 / (i + 1))
        put_half(extreme, off, 65504.0 if i == 0 else 2.0**-24)
    return np.stack([zero, ones, extreme])


def quant_case(qtype: T, name: str, blocks: np.ndarray) -> dict:
    raw = blocks.reshape(-1)
    values = dequantize(raw, qtype).reshape(-1)
    assert values.dtype == np.float32
    return {"type": qtype.name, "case": name, "n": int(values.size), "bytes_hex": hex_of(raw),
            "f32_le_hex": f32_le_hex(values)}


def float_case(qtype: T, name: str, raw: np.ndarray) -> dict:
    values = dequantize(raw.view(np.uint8), qtype).reshape(-1)
    return {"type": qtype.name, "case": name, "n": int(values.size), "bytes_hex": hex_of(raw.view(np.uint8)),
            "f32_le_hex": f32_le_hex(values)}


def float_cases(rng: np.random.Generator) -> list:
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -2.5]
    f32 = np.concatenate([
        np.array(specials + [1e-45, -1.17549435e-38, 3.4028235e38], dtype="<f4"),
        (rng.standard_normal(54) * 0.05).astype("<f4"),
    ])
    f16 = np.concatenate([
        np.array(specials + [2.0**-24, -(2.0**-14), 65504.0], dtype="<f2"),
        rng.integers(0, 1 << 16, size=54, dtype=np.uint16).view("<f2"),
    ])
    bf16_specials = np.array([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x3F80, 0xC020, 0x0001, 0x8080, 0x7F7F],
                             dtype="<u2")
    bf16 = np.concatenate([bf16_specials, rng.integers(0, 1 << 16, size=54, dtype=np.uint16).astype("<u2")])
    return [float_case(T.F32, "values", f32), float_case(T.F16, "values", f16), float_case(T.BF16, "values", bf16)]


def write_random(path: Path) -> None:
    rng = np.random.default_rng(SEED)
    cases = float_cases(rng)
    for qtype in QUANT_TYPES:
        cases.append(quant_case(qtype, "random", random_blocks(rng, qtype, 3)))
        cases.append(quant_case(qtype, "edge", edge_blocks(rng, qtype)))
    write_json(path, {"generator": "scripts/gen-quant-golden.py", "seed": SEED, "cases": cases})


def pick_tensors(reader: GGUFReader) -> list:
    """Per tensor type, the tensor with the shortest rows (the first of them in file order)."""
    best = {}
    for t in reader.tensors:
        ne0 = int(t.shape[0])
        if t.tensor_type not in best or ne0 < int(best[t.tensor_type].shape[0]):
            best[t.tensor_type] = t
    return [best[k] for k in sorted(best, key=lambda k: k.value)]


def model_rows(model: str, path: Path) -> list:
    reader = GGUFReader(path)
    rows = []
    with open(path, "rb") as f:
        for t in pick_tensors(reader):
            qtype = T(t.tensor_type)
            ne0 = int(t.shape[0])
            n_rows = int(t.n_elements) // ne0
            block_size, type_size = GGML_QUANT_SIZES[qtype]
            row_bytes = ne0 // block_size * type_size
            picks = [n_rows // 2] if ne0 > TWO_ROWS_MAX_ELEMENTS else sorted({0, n_rows // 2})
            for row in picks:
                offset = int(t.data_offset) + row * row_bytes
                f.seek(offset)
                raw = f.read(row_bytes)
                assert len(raw) == row_bytes
                values = dequantize(np.frombuffer(raw, dtype=np.uint8), qtype).reshape(-1)
                assert values.size == ne0
                rows.append({"model": model, "tensor": t.name, "type": qtype.name, "row": row, "n": ne0,
                             "offset": offset, "length": row_bytes, "sha256": hashlib.sha256(raw).hexdigest(),
                             "fnv1a64": fnv1a64(raw), "f32_le_hex": f32_le_hex(values)})
    return rows


def write_models(path: Path, models_dir: Path) -> None:
    rows = []
    for model in MODELS:
        file = models_dir / f"{model}.gguf"
        if not file.exists():
            sys.exit(f"missing {file}: run ../shared/scripts/fetch-test-models.sh (or pass --models DIR)")
        rows += model_rows(model, file)
    write_json(path, {"generator": "scripts/gen-quant-golden.py", "rows": rows})


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main() -> None:
    default_models = os.environ.get("WEBR1_MODELS", str(Path.home() / ".cache" / "webr1-test-models"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path(default_models), help="directory of the test models")
    args = parser.parse_args()
    write_random(OUT_DIR / "random.json")
    write_models(OUT_DIR / "models.json", args.models)


if __name__ == "__main__":
    main()
