#![no_main]
//! cargo-fuzz target: see `iis_tagger_fuzz::checks::evtx`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iis_tagger_fuzz::checks::evtx(data));
