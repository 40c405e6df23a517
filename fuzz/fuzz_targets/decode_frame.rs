#![no_main]

//! Feeds arbitrary bytes to the frame decoder; see
//! `setlist_core::wire::fuzz_decode_roundtrip` for the invariant.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| setlist_core::wire::fuzz_decode_roundtrip(bytes));
