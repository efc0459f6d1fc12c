//! Maildir name parsing, header-block splitting and Status flags never panic and stay within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let info = mover_core::source::maildir::parse_name(data, "cur");
    assert!(info.uniq.len() <= String::from_utf8_lossy(data).len());
    let h = mover_core::split::header_len(data);
    assert!(h <= data.len());
    let _ = mover_core::source::mbox::status_flags(&data[..h]);
    let _ = mover_core::source::mbox::sniff(data);
});
