//! The mbox splitter consumes every byte, and splitting a growing buffer (as the streamed reader does) gives the
//! same pieces as splitting the whole file at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mover_core::source::mbox::{Splitter, split_all};

fuzz_target!(|input: (u16, &[u8])| {
    let (step, data) = input;
    let whole = split_all(data); // asserts that the pieces cover the input exactly
    let step = (step as usize % 4096).max(1);
    let mut s = Splitter::new();
    let (mut at, mut avail, mut streamed) = (0usize, 0usize, Vec::new());
    loop {
        let eof = avail >= data.len();
        match s.next(&data[at..avail.min(data.len())], eof) {
            Some(seg) => {
                at += seg.len();
                streamed.push(seg);
            }
            None if eof => break,
            None => avail += step,
        }
    }
    assert_eq!(at, data.len());
    assert_eq!(streamed, whole);
});
