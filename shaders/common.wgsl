// Helpers every webr1 shader includes first (`#include "common.wgsl"` as its first line, before any declaration,
// because `enable f16;` must precede them).
//
// Macros it reads:
//   F16             defined: activations are stored as f16 (needs the device feature shader-f16); math stays f32.
//   ENABLE_F16      defined: the shader uses f16 values of its own (needs shader-f16) while its activations may be f32.
//   WORKGROUP_SIZE  invocations per workgroup (1-D), set by the Rust dispatch function.

#ifdef F16
enable f16;
#define ACT f16
#else
#ifdef ENABLE_F16
enable f16;
#endif
#define ACT f32
#endif

// The index of this workgroup in a 1-D grid that Rust folded into two dimensions when it exceeded
// `max_compute_workgroups_per_dimension` (65535 on most devices): workgroup (x, y) is number y * num_workgroups.x + x.
// Grids that were folded hold a few spare workgroups at the end: bound-check against the real count.
fn flat_workgroup(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>) -> u32 {
    return workgroup_id.y * num_workgroups.x + workgroup_id.x;
}
