//! Splitting mbox files into messages, byte-exactly.
//!
//! An mbox is a sequence of messages, each introduced by a "From_" line. Nothing is unescaped: mboxo and mboxrd
//! `>From ` quoting stays exactly as stored, and the bytes between From_ lines are split into the message and the
//! separator (the blank line before the next From_), both recorded, so the file reassembles to the same bytes.
//!
//! A From_ line is a line starting with `From ` that
//! - is a Mozilla-style `From -` line (Thunderbird writes these, sometimes without a blank line before), or
//! - follows a blank line (or starts the file) and carries an asctime-like date (a `hh:mm` time and a 4-digit year)
//!   or a single address-like token (`From 1844347792267117879@xxx`, as in Gmail exports).
//!
//! Body lines such as "From Russia with love" are therefore not boundaries even where a writer did not escape them.
//! When a message's header carries `Content-Length` and the stated length lands exactly at the end of the file or
//! at the next From_ line, that boundary wins (Content-Length–delimited mboxes do not escape `From ` in bodies).
//! Bytes before the first From_ line (a UTF-8 byte-order mark, or garbage) form a preamble carried as opaque data.

use memchr::memmem;

/// Largest run of bytes without a From_ line emitted as one preamble piece while streaming.
const PREAMBLE_CHUNK: usize = 1 << 20;

/// One piece of an mbox, as lengths from the start of the buffer passed to [`Splitter::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// Bytes that are not part of any message (before the first From_ line).
    Preamble {
        /// Length.
        len: usize,
    },
    /// A From_ line, the message after it, and the separator after the message.
    Message {
        /// Length of the From_ line including its line ending.
        from_len: usize,
        /// Length of the message.
        msg_len: usize,
        /// Length of the separator (0, 1 for `\n`, 2 for `\r\n`).
        trail_len: usize,
    },
}

impl Seg {
    /// Total length.
    pub fn len(&self) -> usize {
        match *self {
            Seg::Preamble { len } => len,
            Seg::Message { from_len, msg_len, trail_len } => from_len + msg_len + trail_len,
        }
    }

    /// Whether the piece has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Stateful splitter: call [`Splitter::next`] with the unconsumed bytes, consume the returned piece, repeat.
#[derive(Debug, Default)]
pub struct Splitter {
    started: bool,
}

/// How many bytes of a file's head [`sniff`] looks at.
pub const SNIFF_LEN: usize = 64 * 1024;

/// Whether `head` (the first [`SNIFF_LEN`] bytes of a file) is an mbox: a From_ line at the start (after an optional
/// UTF-8 BOM), or, for an mbox whose start is damaged, a dated From_ line after a blank line further in.
pub fn sniff(head: &[u8]) -> bool {
    let start = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let line = match memchr::memchr(b'\n', start) {
        Some(i) => &start[..i],
        None => start,
    };
    if is_from_line(line.strip_suffix(b"\r").unwrap_or(line), true) {
        return true;
    }
    // Further in, accept only the strict form: a blank line, then From_ with an address and a date (not `From -`).
    for i in memmem::find_iter(head, b"\n\nFrom ").chain(memmem::find_iter(head, b"\n\r\nFrom ")) {
        let start = i + if head[i + 1] == b'\r' { 3 } else { 2 };
        if let Some(line) = line_at(head, start, false)
            && !line.starts_with(b"From -")
            && is_from_line(line, true)
        {
            return true;
        }
    }
    false
}

/// Whether `line` (without its `\n`) is a From_ line; `after_blank` says whether a blank line (or the start of the
/// file) precedes it.
pub fn is_from_line(line: &[u8], after_blank: bool) -> bool {
    let Some(rest) = line.strip_prefix(b"From ") else { return false };
    if line.len() > 1000 || memchr::memchr(0, line).is_some() {
        return false;
    }
    let rest = rest.trim_ascii();
    if rest.starts_with(b"-") {
        return true;
    }
    if !after_blank {
        return false;
    }
    let single_token = !rest.is_empty() && !rest.iter().any(|b| b.is_ascii_whitespace());
    if single_token && rest.contains(&b'@') {
        return true;
    }
    let has_time = rest.windows(5).any(|w| {
        w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == b':' && w[3].is_ascii_digit() && w[4].is_ascii_digit()
    });
    let has_year = rest.split(|b| !b.is_ascii_digit()).any(|run| run.len() == 4);
    has_time && has_year
}

fn preceded_by_blank(buf: &[u8], line_start: usize) -> bool {
    let before = &buf[..line_start];
    line_start == 0 || before.ends_with(b"\n\n") || before.ends_with(b"\n\r\n")
}

/// Length of the line ending(s) at `buf[at..]`: up to `max` line endings (`\n` or `\r\n`).
fn skip_newlines(buf: &[u8], mut at: usize, max: usize) -> usize {
    let start = at;
    for _ in 0..max {
        if buf[at..].starts_with(b"\n") {
            at += 1;
        } else if buf[at..].starts_with(b"\r\n") {
            at += 2;
        } else {
            break;
        }
    }
    at - start
}

/// The value of a `Content-Length:` header in a header block, if there is exactly one well-formed one.
fn content_length(headers: &[u8]) -> Option<usize> {
    let mut found = None;
    for line in headers.split(|&b| b == b'\n') {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            let v = std::str::from_utf8(&line[15..]).ok()?.trim();
            if found.is_some() {
                return None;
            }
            found = Some(v.parse().ok()?);
        }
    }
    found
}

/// Where the next From_ line starts.
enum Found {
    At(usize),
    NeedMore,
    None,
}

/// The line starting at `start`, without its line ending, or `None` if it is not complete yet.
fn line_at(buf: &[u8], start: usize, eof: bool) -> Option<&[u8]> {
    let end = match memchr::memchr(b'\n', &buf[start..]) {
        Some(i) => start + i,
        None if eof => buf.len(),
        None => return None,
    };
    let line = &buf[start..end];
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// The first From_ line starting at a line start at or after `from` (`from` itself must be a line start).
fn find_from_line(buf: &[u8], from: usize, eof: bool) -> Found {
    let mut cursor = from;
    if buf[from..].starts_with(b"From ") {
        match line_at(buf, from, eof) {
            None => return Found::NeedMore,
            Some(line) if is_from_line(line, preceded_by_blank(buf, from)) => return Found::At(from),
            Some(_) => cursor = from + 1,
        }
    }
    loop {
        // A "\n" at or after cursor - 1 puts the line start at or after cursor.
        let base = cursor.saturating_sub(1).max(from);
        let Some(j) = memmem::find(&buf[base..], b"\nFrom ") else { return Found::None };
        let start = base + j + 1;
        match line_at(buf, start, eof) {
            None => return Found::NeedMore,
            Some(line) if is_from_line(line, preceded_by_blank(buf, start)) => return Found::At(start),
            Some(_) => cursor = start + 1,
        }
    }
}

impl Splitter {
    /// A splitter at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next piece at the start of `buf`, or `None` if more bytes are needed (or `buf` is empty at `eof`).
    pub fn next(&mut self, buf: &[u8], eof: bool) -> Option<Seg> {
        if buf.is_empty() {
            return None;
        }
        if !self.started {
            // A UTF-8 byte-order mark is its own preamble; a From_ line right after it starts the file.
            let skip = if buf.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
            let first = if buf[skip..].starts_with(b"From ") {
                match line_at(buf, skip, eof) {
                    None => return None,
                    Some(line) if is_from_line(line, true) => Found::At(skip),
                    Some(_) => find_from_line(buf, 0, eof),
                }
            } else {
                find_from_line(buf, 0, eof)
            };
            match first {
                Found::At(0) => self.started = true,
                Found::At(p) => {
                    self.started = true;
                    return Some(Seg::Preamble { len: p });
                }
                Found::NeedMore if !eof => return None,
                Found::None | Found::NeedMore => {
                    if eof {
                        return Some(Seg::Preamble { len: buf.len() });
                    }
                    if buf.len() > PREAMBLE_CHUNK {
                        // Keep the last partial line: a From_ line may start there.
                        let cut = memchr::memrchr(b'\n', buf).map(|i| i + 1).unwrap_or(buf.len());
                        return Some(Seg::Preamble { len: cut });
                    }
                    return None;
                }
            }
        }

        // buf starts with a From_ line.
        let from_len = match memchr::memchr(b'\n', buf) {
            Some(i) => i + 1,
            None if eof => return Some(Seg::Message { from_len: buf.len(), msg_len: 0, trail_len: 0 }),
            None => return None,
        };
        let body = &buf[from_len..];

        // Content-Length, when it lands exactly on a boundary.
        match crate::split::header_end(body) {
            Some(he) => {
                if let Some(n) = content_length(&body[..he]) {
                    let end = from_len + he + n;
                    if end > buf.len() {
                        if !eof {
                            return None;
                        }
                    } else {
                        let t = skip_newlines(buf, end, 2);
                        let next = end + t;
                        let ok = if next == buf.len() {
                            eof
                        } else {
                            matches!(find_from_line(buf, next, eof), Found::At(p) if p == next)
                        };
                        if ok {
                            return Some(Seg::Message { from_len, msg_len: he + n, trail_len: t });
                        }
                    }
                }
            }
            None if !eof => return None,
            None => {}
        }

        let end = match find_from_line(buf, from_len, eof) {
            Found::At(p) => p,
            Found::NeedMore => return None,
            Found::None if eof => buf.len(),
            Found::None => return None,
        };
        let content = &buf[from_len..end];
        let trail_len = if content.ends_with(b"\r\n\r\n") {
            2
        } else if content.ends_with(b"\n\n") {
            1
        } else {
            0
        };
        Some(Seg::Message { from_len, msg_len: content.len() - trail_len, trail_len })
    }
}

/// Split a whole in-memory mbox into pieces (for tests and small files).
pub fn split_all(data: &[u8]) -> Vec<Seg> {
    let mut s = Splitter::new();
    let mut at = 0;
    let mut out = Vec::new();
    while let Some(seg) = s.next(&data[at..], true) {
        at += seg.len();
        out.push(seg);
    }
    assert_eq!(at, data.len(), "splitter must consume every byte");
    out
}

/// Split `data` as the streamed reader does: the splitter sees windows that grow by `step` bytes until the end.
/// Equal to [`split_all`] for every `step` (the unit tests and the `mbox_split` fuzz target check exactly that).
pub fn split_streamed(data: &[u8], step: usize) -> Vec<Seg> {
    let step = step.max(1);
    let mut s = Splitter::new();
    let (mut at, mut avail, mut out) = (0usize, 0usize, Vec::new());
    loop {
        let eof = avail >= data.len();
        match s.next(&data[at..avail.min(data.len())], eof) {
            Some(seg) => {
                at += seg.len();
                out.push(seg);
            }
            None if eof => break,
            None => avail += step,
        }
    }
    assert_eq!(at, data.len(), "splitter must consume every byte");
    out
}

/// Mail flags from `Status:` and `X-Status:` headers in a header block (e.g. `RO` + `A` → `"ROA"`).
pub fn status_flags(headers: &[u8]) -> Option<String> {
    let mut flags = String::new();
    let mut start = 0;
    // Lines found with memchr (a header block is a few KiB; a byte-by-byte split cost 2 % of an Enron migration).
    let ends = memchr::memchr_iter(b'\n', headers).chain(std::iter::once(headers.len()));
    for end in ends {
        let line = &headers[start..end];
        start = end + 1;
        if !matches!(line.first(), Some(b's' | b'S' | b'x' | b'X')) {
            continue;
        }
        let value = if line.len() >= 7 && line[..7].eq_ignore_ascii_case(b"status:") {
            &line[7..]
        } else if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"x-status:") {
            &line[9..]
        } else {
            continue;
        };
        for &b in value.trim_ascii() {
            if b.is_ascii_alphabetic() && !flags.contains(b as char) {
                flags.push(b as char);
            }
        }
    }
    if flags.is_empty() { None } else { Some(flags) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(data: &[u8]) -> Vec<(String, String, String)> {
        let mut at = 0;
        let mut out = Vec::new();
        for seg in split_all(data) {
            let s = |a: usize, b: usize| String::from_utf8_lossy(&data[a..b]).into_owned();
            match seg {
                Seg::Preamble { len } => out.push(("PRE".into(), s(at, at + len), String::new())),
                Seg::Message { from_len, msg_len, trail_len } => out.push((
                    s(at, at + from_len),
                    s(at + from_len, at + from_len + msg_len),
                    s(at + from_len + msg_len, at + from_len + msg_len + trail_len),
                )),
            }
            at += seg.len();
        }
        out
    }

    #[test]
    fn classic_mboxo() {
        let m = b"From a@b Mon Apr 18 14:23:23 2022\nSubject: x\n\nhello\n>From me\n\nFrom MAILER-DAEMON Mon Apr 18 14:23:23 2022\nSubject: y\n\nbye\n";
        let got = messages(m);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, "Subject: x\n\nhello\n>From me\n");
        assert_eq!(got[0].2, "\n");
        assert_eq!(got[1].1, "Subject: y\n\nbye\n");
        assert_eq!(got[1].2, "");
    }

    #[test]
    fn body_from_lines_are_not_boundaries() {
        let m = b"From -\nSubject: a\n\nFrom Russia with love\n\nFrom 10:30 the meeting\nend\n\nFrom - Mon Jun  3 12:50:27 1996\nSubject: b\n\nx\n";
        let got = messages(m);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1.contains("From Russia with love"));
        // A Mozilla From - line without a blank line before it still starts a message.
        let m = b"From - \nSubject: a\n\nbody\nFrom - \nSubject: b\n\nbody\n";
        assert_eq!(messages(m).len(), 2);
    }

    #[test]
    fn bom_crlf_and_preamble() {
        let m = b"\xEF\xBB\xBFFrom - \r\nSubject: a\r\n\r\nx\r\n\r\nFrom - \r\nSubject: b\r\n\r\ny\r\n";
        let got = messages(m);
        assert_eq!(got[0].0, "PRE");
        assert_eq!(got[1].2, "\r\n");
        assert_eq!(got.len(), 3);
        let m = b"garbage line\nmore\n\nFrom a@b Sat Jan  1 00:00:00 2000\n\nbody\n";
        let got = messages(m);
        assert_eq!(got[0], ("PRE".into(), "garbage line\nmore\n\n".into(), String::new()));
        assert_eq!(got.len(), 2);
        assert_eq!(messages(b"no from line at all\n"), vec![("PRE".into(), "no from line at all\n".into(), "".into())]);
    }

    #[test]
    fn content_length_wins() {
        let body = "line\n\nFrom someone Sat Jan  1 00:00:00 2000 unescaped\nmore\n";
        let m = format!(
            "From - Sat Jan  1 00:00:00 2000\nContent-Length: {}\n\n{body}\nFrom - Sun Jan  2 00:00:00 2000\nSubject: 2\n\nx\n",
            body.len()
        );
        let got = messages(m.as_bytes());
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1.ends_with(body));
        // A wrong Content-Length is ignored.
        let m = "From - Sat Jan  1 00:00:00 2000\nContent-Length: 3\n\nabcdef\n\nFrom - x\n\nz\n";
        assert_eq!(messages(m.as_bytes()).len(), 2);
    }

    #[test]
    fn streaming_matches_whole() {
        let m = b"\xEF\xBB\xBFFrom a@b Mon Apr 18 14:23:23 2022\nSubject: x\n\nhello\n\nFrom b@c Mon Apr 18 14:23:24 2022\r\nA: b\r\n\r\nbody\r\n\r\nFrom -\nContent-Length: 2\n\nab\nFrom - \n\n";
        let whole = split_all(m);
        for step in 1..m.len() {
            assert_eq!(split_streamed(m, step), whole, "step {step}");
        }
    }

    #[test]
    fn sniffing() {
        assert!(sniff(b"From a@b Mon Apr 18 14:23:23 2022\nX: y\n"));
        assert!(sniff(b"\xEF\xBB\xBFFrom -\r\nX: y\r\n"));
        assert!(sniff(b"\x00garbage\n\nFrom a@b Mon Apr 18 14:23:23 2022\nX: y\n"));
        assert!(!sniff(b"Subject: x\n\nFrom - something\n"));
        assert!(!sniff(b"Subject: x\n\nbody\nFrom a@b Mon Apr 18 14:23:23 2022\n"));
        assert!(!sniff(b"1 100 7\n"));
    }

    #[test]
    fn flags() {
        assert_eq!(status_flags(b"Subject: x\nStatus: RO\nX-Status: A\n\n"), Some("ROA".into()));
        assert_eq!(status_flags(b"Subject: x\n\n"), None);
        // CRLF, no final line end, flags repeated, a header that only starts like one.
        assert_eq!(status_flags(b"status: R\r\nX-Mailer: y\r\nx-status: FR"), Some("RF".into()));
        assert_eq!(status_flags(b"Statusx: R\nSubject: Status: O"), None);
    }
}
