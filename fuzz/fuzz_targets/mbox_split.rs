//! The mbox splitter consumes every byte, and splitting a growing buffer (as the streamed reader does) gives the
//! same pieces as splitting the whole file at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mover_core::source::mbox::{split_all, split_streamed};

fuzz_target!(|input: (u16, &[u8])| {
    let (step, data) = input;
    let whole = split_all(data); // asserts that the pieces cover the input exactly
    assert_eq!(split_streamed(data, step as usize % 4096), whole);
});
