#![no_main]

//! Feeds arbitrary bytes to the frame decoder; see
//! `setlist_core::wire::fuzz_decode_roundtrip` for the invariant.

use libfuzzer_sys::fuzz_target;

// The wire module is pure Rust and only uses `super::` paths, so it compiles
// here from source. Depending on setlist-core instead would drag libtorch
// (which the model code links) into every sanitizer build.
#[allow(dead_code)]
#[path = "../../core/src/wire/mod.rs"]
mod wire;

fuzz_target!(|bytes: &[u8]| wire::fuzz_decode_roundtrip(bytes));
