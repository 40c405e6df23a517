#![no_main]

//! Feeds arbitrary bytes to the uploaded-playlist parser; see
//! `setlist_core::playlist_file::fuzz_parse` for the invariant.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| setlist_core::playlist_file::fuzz_parse(bytes));
