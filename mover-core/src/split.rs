//! Splitting a message into the parts that deduplicate: the header block and the body.
//!
//! Whole messages almost never repeat (every copy differs in a `Delivered-To` or `X-Folder` header), but bodies do:
//! the same message delivered to many mailboxes or filed in several folders has the same body under different
//! headers. So a message is stored as two blobs at least. (MIME-aware splitting of attachments is a later stage that
//! adds part kinds; the manifest's part list leaves room for it.)

/// Length of the header block of `msg`: up to and including the first empty line (`\n\n` or `\r\n\r\n`, or a
/// mix). A message without an empty line is all header.
pub fn header_len(msg: &[u8]) -> usize {
    header_end(msg).unwrap_or(msg.len())
}

/// End of the header block of `msg` (just after the empty line), or `None` if there is no empty line.
///
/// Walks line by line, so the cost is the length of the header block, not of the buffer: the mbox splitter calls
/// this on everything that follows a From_ line.
pub fn header_end(msg: &[u8]) -> Option<usize> {
    let mut line = 0;
    loop {
        if msg[line..].starts_with(b"\n") {
            return Some(line + 1);
        }
        if msg[line..].starts_with(b"\r\n") {
            return Some(line + 2);
        }
        line += memchr::memchr(b'\n', &msg[line..])? + 1;
    }
}

/// Fixed-size pieces of at most `max` bytes (the last one shorter): large parts are stored as several blobs so
/// no single blob has to be held whole, and identical large parts still split identically.
pub fn chunks(len: usize, max: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let max = max.max(1);
    (0..len.div_ceil(max)).map(move |i| i * max..((i + 1) * max).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block() {
        assert_eq!(header_len(b"A: b\n\nbody"), 6);
        assert_eq!(header_len(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(header_len(b"A: b\r\nC: d\n\r\nbody\n\n"), 13);
        assert_eq!(header_len(b"no blank line"), 13);
        assert_eq!(header_len(b"\nbody"), 1);
        assert_eq!(header_len(b""), 0);
    }

    #[test]
    fn chunking() {
        assert_eq!(chunks(10, 4).collect::<Vec<_>>(), vec![0..4, 4..8, 8..10]);
        assert_eq!(chunks(0, 4).count(), 0);
        assert_eq!(chunks(8, 4).count(), 2);
    }
}
