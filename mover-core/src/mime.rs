//! MIME-aware splitting: attachment bodies stored **decoded**, with a recipe that re-encodes them byte for byte.
//!
//! The same attachment re-sent in a reply or a forward is wrapped differently each time (another base64 line
//! length, other boundaries and headers), so its encoded bytes rarely repeat while its decoded bytes do. [`split`]
//! cuts a message into [`Piece`]s whose concatenation is exactly the message: everything stays [`Piece::Raw`]
//! except the bodies of MIME leaf parts whose base64 or quoted-printable text is exactly what [`encode`] produces
//! from the decoded bytes and a small [`Recipe`] (line width, line ending, final line ending, padding, ...). Those
//! become [`Piece::Encoded`] and can be stored as a blob of decoded bytes plus the recipe.
//!
//! ```text
//!  header block ─ Raw            Content-Type: multipart/mixed; boundary=b
//!  preamble, delimiters ─ Raw    --b
//!  part headers ─ Raw            Content-Transfer-Encoding: base64
//!  leaf body ─ Encoded           SGVsbG8gd29y...  (decoded bytes + recipe, checked: encode(decoded) == these bytes)
//!  trailing blank lines ─ Raw
//!  close delimiter, epilogue ─ Raw
//! ```
//!
//! **Exactness is checked, never assumed.** A candidate body is kept as `Encoded` only if re-encoding it with the
//! recipe detected from its layout gives the original bytes. Quoted-printable is re-encoded and compared; base64 is
//! checked without writing the encoding: its line layout line by line, and its text by a strict decode, which
//! accepts exactly the canonical encoding of what it decodes to (a property test and, in debug builds, an assertion
//! that compares with [`encode`] keep that true). Restore therefore only
//! ever runs [`encode`]: it never guesses. Anything that cannot be parsed with confidence (no boundary, too deep,
//! garbage) stays `Raw`, and the reasons are counted in [`SplitStats`]. The functions never fail and never panic,
//! whatever the input.
//!
//! The MIME walk is our own byte-exact scan, not a general parser: it needs only `Content-Type` (type and
//! `boundary`) and `Content-Transfer-Encoding` of each part, and where each part's body starts and ends.
//! - Header names are matched case-insensitively; folded values are unfolded; the first occurrence counts.
//! - A delimiter is `--boundary` at the start of a line, optionally followed by `--` (close), spaces or tabs, and a
//!   line ending (LF or CRLF) or the end of the enclosing body. The line ending before it belongs to the delimiter
//!   (RFC 2046 §5.1.1), so it stays raw, as do preamble and epilogue.
//! - A multipart without a close delimiter ends where its enclosing body ends; a multipart without a boundary
//!   parameter, or in which no delimiter is found, stays raw (`parse_error`).
//! - `message/rfc822` and `message/global` parts are walked as embedded messages; parts of `multipart/digest`
//!   without a `Content-Type` are `message/rfc822` (RFC 2046 §5.1.5). Nesting deeper than [`MAX_DEPTH`] stays raw.
//!
//! What re-encodes exactly (anything else is kept raw, counted by [`RawReason`]):
//! - **base64** (standard alphabet): lines of one width (every line but the last exactly `width` characters; or one
//!   unbroken line), one line ending throughout (LF or CRLF), with or without a line ending after the last line,
//!   padded (or unpadded throughout), zero trailing bits. Blank lines before the data and white space after it stay
//!   raw pieces around the encoded one.
//! - **quoted-printable** as canonical encoders write it: `=XX` in upper case only where needed (bytes outside
//!   printable ASCII, `=`, space or tab at the end of a hard line), soft breaks so that no line passes `width`
//!   (counting the `=`), never inside an `=XX`, either with look-ahead (Python's `email`, most clients) or without
//!   ([`Recipe::eager`]). The decoded text keeps the hard line endings as they are in the message.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use memchr::{memchr, memmem};
use serde::{Deserialize, Serialize};

use crate::split::header_len;

/// Smallest part body (in encoded bytes) worth storing decoded: below this a separate blob costs more than it can
/// save by deduplication. [`Options::min_len`] overrides it.
pub const MIN_ENCODED_LEN: usize = 256;

/// Smallest quoted-printable part body (in encoded bytes) worth storing decoded. Quoted-printable is mostly the text
/// of the message itself, which its sender encoded once and nobody re-wraps: decoding it found 37 KB more duplicates
/// in the 49 MB usrp sample, while splitting the text into more blobs made the packs 1.2 % larger there (0.3 %
/// smaller on Enron) and the decode and exact re-encode check cost 12–20 % of the CPU of a migration. Text
/// attachments of this size and more are still decoded. [`Options::min_qp_len`] overrides it.
pub const MIN_QP_LEN: usize = 16 * 1024;

/// Deepest nesting of multiparts and embedded messages that is walked; deeper structure stays raw. Real mail
/// rarely nests beyond 5; the bound keeps hostile input from costing more than `MAX_DEPTH` scans of the message.
pub const MAX_DEPTH: usize = 32;

/// The version of the encoding rules that [`encode`] implements and that [`split`] writes into every [`Recipe`].
pub const RECIPE_VERSION: u8 = 1;

/// One piece of a message; the concatenation of a message's pieces (raw bytes as they are, encoded ones through
/// [`encode`]) is exactly the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes kept as they are: headers, delimiters, preamble and epilogue, and parts that were not encoded exactly.
    Raw(&'a [u8]),
    /// The body of a base64 or quoted-printable leaf part, stored decoded.
    Encoded {
        /// The decoded content (what deduplicates across messages).
        decoded: Vec<u8>,
        /// How to turn `decoded` back into the original bytes.
        recipe: Recipe,
        /// Length of the original (encoded) bytes, i.e. of `encode(&decoded, &recipe)`.
        original_len: usize,
    },
}

impl Piece<'_> {
    /// Length of the original bytes this piece stands for.
    pub fn original_len(&self) -> usize {
        match self {
            Piece::Raw(b) => b.len(),
            Piece::Encoded { original_len, .. } => *original_len,
        }
    }
}

/// A content transfer encoding that a [`Recipe`] can reproduce.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferEncoding {
    /// Base64 (RFC 2045 §6.8), standard alphabet.
    #[serde(rename = "b64")]
    Base64,
    /// Quoted-printable (RFC 2045 §6.7) as canonical encoders write it.
    #[serde(rename = "qp")]
    QuotedPrintable,
}

/// How decoded bytes are re-encoded into the original text: small, and written into the manifest as JSON, e.g.
/// `{"v":1,"e":"b64","w":76,"eol":true}`.
///
/// Compatibility: fields added later default to the version-1 behaviour when absent, and a change that alters the
/// output bumps [`RECIPE_VERSION`]. A reader refuses what it does not know rather than guess: unknown fields fail to
/// deserialize, and [`Recipe::validate`] rejects unknown versions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Version of the encoding rules ([`RECIPE_VERSION`]).
    #[serde(rename = "v")]
    pub version: u8,
    /// The transfer encoding.
    #[serde(rename = "e")]
    pub encoding: TransferEncoding,
    /// Line width. Base64: characters per line (every line but the last has exactly this many; 0 means one line
    /// with no line breaks). Quoted-printable: the longest physical line, counting the `=` of a soft line break.
    #[serde(rename = "w")]
    pub width: u32,
    /// Line endings are CRLF (otherwise LF).
    #[serde(default, skip_serializing_if = "is_false")]
    pub crlf: bool,
    /// Base64: the last line ends with a line ending. (Quoted-printable: unused, false; a final line ending is part
    /// of the decoded text.)
    #[serde(default, skip_serializing_if = "is_false")]
    pub eol: bool,
    /// Base64: the final quantum is written without `=` padding. (Quoted-printable: unused, false.)
    #[serde(default, skip_serializing_if = "is_false")]
    pub nopad: bool,
    /// Quoted-printable: the encoder does not look ahead, so it breaks a hard line as soon as a physical line would
    /// pass `width - 1` characters, even when the rest of the hard line would end within `width` (seen from
    /// several mail clients). (Base64: unused, false.)
    #[serde(default, skip_serializing_if = "is_false")]
    pub eager: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why a recipe read back from a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// Written by a newer version of the rules than this build knows.
    #[error("MIME recipe version {0} is not supported (this build knows version {RECIPE_VERSION})")]
    Version(u8),
    /// A field combination [`split`] never produces.
    #[error("MIME recipe is invalid: {0}")]
    Invalid(&'static str),
}

impl Recipe {
    /// Checks that this build can reproduce the bytes this recipe describes (restore calls it before [`encode`]).
    pub fn validate(&self) -> Result<(), RecipeError> {
        if self.version != RECIPE_VERSION {
            return Err(RecipeError::Version(self.version));
        }
        if self.encoding == TransferEncoding::QuotedPrintable {
            if self.width < 4 {
                return Err(RecipeError::Invalid("quoted-printable width below 4"));
            }
            if self.eol || self.nopad {
                return Err(RecipeError::Invalid("base64 flags on a quoted-printable recipe"));
            }
        } else if self.eager {
            return Err(RecipeError::Invalid("quoted-printable flag on a base64 recipe"));
        }
        Ok(())
    }
}

/// Why a part was kept raw. Every leaf part that is not encoded is counted under exactly one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RawReason {
    /// The part's transfer encoding is neither base64 nor quoted-printable (7bit, 8bit, binary, none, unknown).
    NotBase64OrQp,
    /// The body is shorter than the minimum ([`MIN_ENCODED_LEN`], [`MIN_QP_LEN`] for quoted-printable) or empty.
    TooSmall,
    /// The structure could not be parsed with confidence (a multipart without a boundary or without any
    /// delimiter, or nesting deeper than [`MAX_DEPTH`]): the whole entity is raw.
    ParseError,
    /// Base64 whose lines are not all of one width (besides a shorter last line), or with mixed line endings or
    /// blank lines inside.
    B64LineLayout,
    /// Base64 with characters outside the alphabet (stray spaces, `=` inside the data, truncated quantum).
    B64Invalid,
    /// Base64 that decodes but does not re-encode identically (partial padding, non-zero trailing bits).
    B64Noncanonical,
    /// Quoted-printable with an `=` that is neither a soft line break nor `=XX`.
    QpInvalid,
    /// Quoted-printable that decodes but is not what the canonical encoder writes (other line breaking, lower-case
    /// hex, unencoded trailing space or 8-bit bytes, needlessly encoded characters, ...).
    QpNoncanonical,
}

impl RawReason {
    /// Every reason, in report order.
    pub const ALL: [RawReason; 8] = [
        RawReason::NotBase64OrQp,
        RawReason::TooSmall,
        RawReason::ParseError,
        RawReason::B64LineLayout,
        RawReason::B64Invalid,
        RawReason::B64Noncanonical,
        RawReason::QpInvalid,
        RawReason::QpNoncanonical,
    ];

    /// The snake_case name used in reports (the field name in [`RawCounts`]).
    pub fn as_str(self) -> &'static str {
        match self {
            RawReason::NotBase64OrQp => "not_base64_or_qp",
            RawReason::TooSmall => "too_small",
            RawReason::ParseError => "parse_error",
            RawReason::B64LineLayout => "b64_line_layout",
            RawReason::B64Invalid => "b64_invalid",
            RawReason::B64Noncanonical => "b64_noncanonical",
            RawReason::QpInvalid => "qp_invalid",
            RawReason::QpNoncanonical => "qp_noncanonical",
        }
    }

    /// Whether this is a re-encode mismatch (a base64 or quoted-printable candidate that was not exact).
    pub fn is_reencode_mismatch(self) -> bool {
        !matches!(self, RawReason::NotBase64OrQp | RawReason::TooSmall | RawReason::ParseError)
    }
}

/// Parts kept raw, counted by [`RawReason`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
#[allow(missing_docs)] // one counter per `RawReason`, documented there
pub struct RawCounts {
    pub not_base64_or_qp: u64,
    pub too_small: u64,
    pub parse_error: u64,
    pub b64_line_layout: u64,
    pub b64_invalid: u64,
    pub b64_noncanonical: u64,
    pub qp_invalid: u64,
    pub qp_noncanonical: u64,
}

impl RawCounts {
    fn slot(&mut self, r: RawReason) -> &mut u64 {
        match r {
            RawReason::NotBase64OrQp => &mut self.not_base64_or_qp,
            RawReason::TooSmall => &mut self.too_small,
            RawReason::ParseError => &mut self.parse_error,
            RawReason::B64LineLayout => &mut self.b64_line_layout,
            RawReason::B64Invalid => &mut self.b64_invalid,
            RawReason::B64Noncanonical => &mut self.b64_noncanonical,
            RawReason::QpInvalid => &mut self.qp_invalid,
            RawReason::QpNoncanonical => &mut self.qp_noncanonical,
        }
    }

    /// The count for one reason.
    pub fn get(&self, r: RawReason) -> u64 {
        match r {
            RawReason::NotBase64OrQp => self.not_base64_or_qp,
            RawReason::TooSmall => self.too_small,
            RawReason::ParseError => self.parse_error,
            RawReason::B64LineLayout => self.b64_line_layout,
            RawReason::B64Invalid => self.b64_invalid,
            RawReason::B64Noncanonical => self.b64_noncanonical,
            RawReason::QpInvalid => self.qp_invalid,
            RawReason::QpNoncanonical => self.qp_noncanonical,
        }
    }

    /// Adds one part kept raw for reason `r`.
    pub fn add(&mut self, r: RawReason) {
        *self.slot(r) += 1;
    }

    /// `(reason name, count)` for every reason, in report order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RawReason::ALL.into_iter().map(|r| (r.as_str(), self.get(r)))
    }

    /// All parts kept raw.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }

    /// Candidates (base64 or quoted-printable, large enough) whose re-encoding would differ.
    pub fn reencode_mismatch(&self) -> u64 {
        RawReason::ALL.into_iter().filter(|r| r.is_reencode_mismatch()).map(|r| self.get(r)).sum()
    }
}

/// What [`split_with`] did to one message (or, merged, to many).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct SplitStats {
    /// Parts stored decoded.
    pub encoded_parts: u64,
    /// Of which quoted-printable (the rest is base64).
    pub encoded_qp_parts: u64,
    /// Original bytes covered by [`Piece::Encoded`] pieces.
    pub encoded_bytes: u64,
    /// Decoded bytes of those pieces.
    pub decoded_bytes: u64,
    /// Leaf parts kept raw, by reason.
    pub raw: RawCounts,
}

impl SplitStats {
    /// Adds `other`'s counters to these.
    pub fn merge(&mut self, other: &SplitStats) {
        self.encoded_parts += other.encoded_parts;
        self.encoded_qp_parts += other.encoded_qp_parts;
        self.encoded_bytes += other.encoded_bytes;
        self.decoded_bytes += other.decoded_bytes;
        for r in RawReason::ALL {
            *self.raw.slot(r) += other.raw.get(r);
        }
    }
}

/// Tuning of [`split_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Smallest part body considered for decoding, in encoded bytes ([`MIN_ENCODED_LEN`] by default).
    pub min_len: usize,
    /// Smallest quoted-printable part body considered for decoding, in encoded bytes ([`MIN_QP_LEN`] by default;
    /// the larger of this and `min_len` applies).
    pub min_qp_len: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { min_len: MIN_ENCODED_LEN, min_qp_len: MIN_QP_LEN }
    }
}

impl Options {
    /// Every part of at least `min_len` encoded bytes is considered, quoted-printable or base64.
    pub fn all_from(min_len: usize) -> Self {
        Options { min_len, min_qp_len: min_len }
    }
}

/// Splits `msg` with the default [`Options`]; see the module docs.
pub fn split(msg: &[u8]) -> Vec<Piece<'_>> {
    split_with(msg, &Options::default()).0
}

thread_local! {
    /// [`Walker`]'s scratch buffers, kept per thread between messages.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Scratch buffers larger than this (a huge attachment) are freed after the message rather than kept.
const SCRATCH_KEEP: usize = 8 << 20;

/// Splits `msg` with the default [`Options`] and reports why parts were kept raw.
pub fn split_with_stats(msg: &[u8]) -> (Vec<Piece<'_>>, SplitStats) {
    split_with(msg, &Options::default())
}

/// Splits `msg` into pieces whose concatenation is exactly `msg` (see [`reassemble`]); the bodies of leaf parts
/// whose encoding [`encode`] reproduces exactly become [`Piece::Encoded`]. Never fails: what cannot be parsed stays
/// raw. An empty message gives no pieces; adjacent raw bytes are always one piece.
pub fn split_with<'a>(msg: &'a [u8], opts: &Options) -> (Vec<Piece<'a>>, SplitStats) {
    // The scratch buffers live on with the thread (a worker splits message after message): a fresh buffer per
    // message would be faulted in and cleared by the kernel every time, which cost more than the encode check.
    let (strip, check) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let mut w = Walker {
        msg,
        min_len: opts.min_len.max(1),
        min_qp_len: opts.min_qp_len.max(opts.min_len).max(1),
        spans: Vec::new(),
        stats: SplitStats::default(),
        strip,
        check,
    };
    w.entity(0, msg.len(), 0, Implicit::TextPlain);
    let (mut strip, mut check) = (std::mem::take(&mut w.strip), std::mem::take(&mut w.check));
    if strip.capacity() <= SCRATCH_KEEP && check.capacity() <= SCRATCH_KEEP {
        strip.clear();
        check.clear();
        SCRATCH.with(|s| *s.borrow_mut() = (strip, check));
    }
    let mut pieces = Vec::with_capacity(2 * w.spans.len() + 1);
    let mut at = 0;
    for s in w.spans {
        // Spans come in document order and never overlap; anything else would be a bug, so drop it (stays raw).
        if s.start < at || s.end > msg.len() || s.start >= s.end {
            debug_assert!(false, "MIME span out of order");
            continue;
        }
        if s.start > at {
            pieces.push(Piece::Raw(&msg[at..s.start]));
        }
        pieces.push(Piece::Encoded { decoded: s.decoded, recipe: s.recipe, original_len: s.end - s.start });
        at = s.end;
    }
    if at < msg.len() {
        pieces.push(Piece::Raw(&msg[at..]));
    }
    (pieces, w.stats)
}

/// The original bytes of `pieces`, concatenated (what restore does, and what every test checks).
pub fn reassemble(pieces: &[Piece<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.iter().map(Piece::original_len).sum());
    for p in pieces {
        match p {
            Piece::Raw(b) => out.extend_from_slice(b),
            Piece::Encoded { decoded, recipe, .. } => encode_into(decoded, recipe, &mut out),
        }
    }
    out
}

/// Re-encodes `decoded` as `recipe` says: exactly the original bytes of the part body it was split from.
pub fn encode(decoded: &[u8], recipe: &Recipe) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(decoded, recipe, &mut out);
    out
}

/// [`encode`], appending to `out` (reserves the exact size up front for base64).
///
/// Never panics; a recipe that fails [`Recipe::validate`] still produces some bytes, which restore's content
/// hash check then rejects.
pub fn encode_into(decoded: &[u8], recipe: &Recipe, out: &mut Vec<u8>) {
    let eol: &[u8] = if recipe.crlf { b"\r\n" } else { b"\n" };
    match recipe.encoding {
        TransferEncoding::Base64 => b64_encode(decoded, recipe.width as usize, eol, recipe.eol, !recipe.nopad, out),
        TransferEncoding::QuotedPrintable => qp_encode(decoded, recipe.width as usize, recipe.eager, eol, out),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The walk.

/// A body range that became an encoded piece.
struct Span {
    start: usize,
    end: usize,
    decoded: Vec<u8>,
    recipe: Recipe,
}

/// Content type of a part without a `Content-Type` header.
#[derive(Clone, Copy)]
enum Implicit {
    TextPlain,
    /// Inside `multipart/digest`.
    Rfc822,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cte {
    Base64,
    QuotedPrintable,
    Other,
}

enum Kind {
    Multipart { boundary: Option<Vec<u8>>, digest: bool },
    Message,
    Leaf,
}

struct Walker<'a> {
    msg: &'a [u8],
    min_len: usize,
    min_qp_len: usize,
    spans: Vec<Span>,
    stats: SplitStats,
    /// Scratch: base64 text without line endings, a chunk at a time ([`B64_CHUNK`]; a one-line text whole).
    strip: Vec<u8>,
    /// Scratch: a quoted-printable hard line's re-encoding, compared with the original.
    check: Vec<u8>,
}

impl Walker<'_> {
    /// An entity (message or part) in `msg[s..e]`: header block, then body.
    fn entity(&mut self, s: usize, e: usize, depth: usize, default: Implicit) {
        if depth > MAX_DEPTH {
            self.stats.raw.add(RawReason::ParseError);
            return;
        }
        let hl = header_len(&self.msg[s..e]);
        let (kind, cte) = headers(&self.msg[s..s + hl], default);
        let bs = s + hl;
        match kind {
            Kind::Multipart { boundary: Some(b), digest } => self.multipart(bs, e, &b, depth, digest),
            Kind::Multipart { boundary: None, .. } => self.stats.raw.add(RawReason::ParseError),
            // An embedded message is walked unless it is itself transfer-encoded (not allowed, but seen).
            Kind::Message if cte == Cte::Other => self.entity(bs, e, depth + 1, Implicit::TextPlain),
            Kind::Message | Kind::Leaf => self.leaf(bs, e, cte),
        }
    }

    /// The body `msg[bs..e]` of a multipart with boundary `b`.
    fn multipart(&mut self, bs: usize, e: usize, b: &[u8], depth: usize, digest: bool) {
        let body = &self.msg[bs..e];
        let mut pat = Vec::with_capacity(b.len() + 2);
        pat.extend_from_slice(b"--");
        pat.extend_from_slice(b);
        let finder = memmem::Finder::new(&pat);
        let default = if digest { Implicit::Rfc822 } else { Implicit::TextPlain };
        let mut pos = 0;
        let mut part: Option<usize> = None;
        let mut found = false;
        while let Some(i) = finder.find(&body[pos..]) {
            let p = pos + i;
            pos = p + 1;
            if p > 0 && body[p - 1] != b'\n' {
                continue;
            }
            let mut q = p + pat.len();
            let close = body[q..].starts_with(b"--");
            if close {
                q += 2;
            }
            while q < body.len() && (body[q] == b' ' || body[q] == b'\t') {
                q += 1;
            }
            let line_end = if q == body.len() {
                q
            } else if body[q] == b'\n' {
                q + 1
            } else if body[q..].starts_with(b"\r\n") {
                q + 2
            } else {
                continue; // `--boundary` followed by something else: content, not a delimiter
            };
            found = true;
            if let Some(ps) = part {
                // The line ending before the delimiter belongs to the delimiter.
                let pe = if body[p - 1] == b'\n' && p >= 2 && body[p - 2] == b'\r' { p - 2 } else { p - 1 };
                self.entity(bs + ps, bs + pe.max(ps), depth + 1, default);
            }
            if close {
                part = None;
                break;
            }
            part = Some(line_end);
            pos = line_end;
        }
        if let Some(ps) = part {
            // No close delimiter: the last part runs to the end of the enclosing body.
            self.entity(bs + ps, e, depth + 1, default);
        }
        if !found {
            self.stats.raw.add(RawReason::ParseError);
        }
    }

    /// A leaf body `msg[bs..e]`.
    fn leaf(&mut self, bs: usize, e: usize, cte: Cte) {
        let r = match cte {
            Cte::Other => Err(RawReason::NotBase64OrQp),
            _ if e - bs < self.min_len => Err(RawReason::TooSmall),
            Cte::QuotedPrintable if e - bs < self.min_qp_len => Err(RawReason::TooSmall),
            Cte::Base64 => self.base64(bs, e),
            Cte::QuotedPrintable => self.quoted_printable(bs, e),
        };
        match r {
            Ok(span) => {
                self.stats.encoded_parts += 1;
                self.stats.encoded_qp_parts += (span.recipe.encoding == TransferEncoding::QuotedPrintable) as u64;
                self.stats.encoded_bytes += (span.end - span.start) as u64;
                self.stats.decoded_bytes += span.decoded.len() as u64;
                self.spans.push(span);
            }
            Err(reason) => self.stats.raw.add(reason),
        }
    }

    /// A base64 body: leading blank lines and trailing white space stay raw; the data lines in between, with the
    /// line ending after the last one, become the span if they re-encode exactly.
    fn base64(&mut self, bs: usize, e: usize) -> Result<Span, RawReason> {
        let body = &self.msg[bs..e];
        let lead = body.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
        // The data ends at the first blank line: what follows (a signature, a list footer) stays raw.
        let blank = blank_line_end(&body[lead..]);
        debug_assert_eq!(blank, header_len(&body[lead..]));
        let data_end =
            body[..lead + blank].iter().rposition(|&c| !matches!(c, b'\r' | b'\n' | b' ' | b'\t')).map_or(0, |i| i + 1);
        if data_end <= lead {
            return Err(RawReason::B64Invalid);
        }
        // ... unless more base64 follows: then it is one body with a blank line inside.
        let rest = &body[lead + blank..];
        let next = rest.iter().position(|c| !c.is_ascii_whitespace()).map_or(&rest[..0], |i| &rest[i..]);
        let next = trim(&next[..memchr(b'\n', next).unwrap_or(next.len())]);
        if !next.is_empty() && next.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')) {
            return Err(RawReason::B64LineLayout);
        }
        let data = &body[lead..data_end];
        let after = &body[data_end..];
        let (width, crlf) = match memchr(b'\n', data) {
            Some(i) if i > 0 && data[i - 1] == b'\r' => (i - 1, true),
            Some(i) => (i, false),
            None => (0, after.starts_with(b"\r\n")),
        };
        if width > u32::MAX as usize {
            return Err(RawReason::B64LineLayout);
        }
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let final_eol = after.starts_with(eol);

        // The text without line endings is decoded a chunk of whole lines at a time, in a scratch buffer that stays
        // in cache, rather than copied whole once more before decoding (which also kept a buffer of up to twice the
        // largest attachment's size per worker). Every chunk but the last is whole quads of plain alphabet, as the
        // middle of a canonical text is; the last holds the end of the text, with any padding.
        //
        // The text's length if the layout is good (each line `width` long but the last, each ended by `eol` but the
        // last): the decoded buffer is taken for it once the layout is known to be good as far as the first chunk.
        let text_len = match width {
            0 => data.len(),
            w => data.len().saturating_sub(((data.len() + eol.len()).div_ceil(w + eol.len()) - 1) * eol.len()),
        };
        let cap = text_len / 4 * 3 + 3;
        let mut decoded: Option<Vec<u8>> = None;
        self.strip.clear();
        let mut chunked = true;
        let strip = &mut self.strip;
        let dec = &mut decoded;
        let layout = b64_lines(data, width, crlf, |text| {
            if !chunked {
                return; // not canonical: only the layout is still checked; the text is decoded whole below
            }
            if strip.len() >= B64_CHUNK {
                let whole = strip.len() / 4 * 4;
                let out = dec.get_or_insert_with(|| crate::buffers::take(cap));
                let before = out.len();
                // No padding in the middle of the text: the unpadded engine refuses `=` (the length says so again).
                chunked = strict_decode(false, &strip[..whole], out) && out.len() - before == whole / 4 * 3;
                strip.copy_within(whole.., 0);
                strip.truncate(strip.len() - whole);
            }
            strip.extend_from_slice(text);
        });
        if let Err(reason) = layout {
            if let Some(d) = decoded {
                crate::buffers::give(d);
            }
            return Err(reason);
        }
        let mut decoded = decoded.unwrap_or_else(|| crate::buffers::take(cap));
        // The chunks decoded so far were multiples of 4 long: the rest is as long, modulo 4, as the whole text.
        let mut nopad = !self.strip.len().is_multiple_of(4);
        if !(chunked && strict_decode(!nopad, &self.strip, &mut decoded)) {
            // Not canonical (or not base64): decode the whole text as one, which also says why.
            decoded.clear();
            self.strip.clear();
            let strip = &mut self.strip;
            let layout = b64_lines(data, width, crlf, |text| strip.extend_from_slice(text));
            nopad = !self.strip.len().is_multiple_of(4);
            if let Err(reason) = layout.and_then(|()| self.b64_whole(&mut decoded, nopad)) {
                crate::buffers::give(decoded);
                return Err(reason);
            }
        }
        let recipe = Recipe {
            version: RECIPE_VERSION,
            encoding: TransferEncoding::Base64,
            width: width as u32,
            crlf,
            eol: final_eol,
            nopad,
            eager: false,
        };
        let end = data_end + if final_eol { eol.len() } else { 0 };
        // The line layout was checked above (it is what `encode` lays out for this recipe), and the text without
        // line endings is canonical (the strict decode): the part re-encodes exactly.
        debug_assert!({
            let mut text = Vec::new();
            b64_lines(data, width, crlf, |t| text.extend_from_slice(t)).is_ok()
                && b64_reencodes_to(&decoded, !recipe.nopad, &text)
                && text.len() == text_len
        });
        debug_assert!({
            let mut check = Vec::new();
            encode_into(&decoded, &recipe, &mut check);
            check[..] == body[lead..end]
        });
        Ok(Span { start: bs + lead, end: bs + end, decoded, recipe })
    }

    /// The strict decode of the whole text in `self.strip` into `decoded`, or why it is not canonical base64.
    fn b64_whole(&self, decoded: &mut Vec<u8>, nopad: bool) -> Result<(), RawReason> {
        // A strict decoder accepts exactly the canonical encodings (alphabet only, padding as `encode` writes it,
        // zero trailing bits): a text it decodes is the one `encode` writes for the result, so no re-encoding is
        // needed to know the part restores exactly. Only a rejected text is decoded again, leniently, to say why.
        let strict = if nopad { &STANDARD_NO_PAD } else { &STANDARD };
        if strict.decode_vec(&self.strip, decoded).is_ok() {
            return Ok(());
        }
        decoded.clear();
        Err(if memchr(b'\n', &self.strip).is_some() {
            // A line ending inside a line the layout check took whole: the lines are not all `width` long.
            RawReason::B64LineLayout
        } else {
            match LAX.decode_vec(&self.strip, decoded) {
                Ok(_) => RawReason::B64Noncanonical,
                Err(_) => RawReason::B64Invalid,
            }
        })
    }

    /// A quoted-printable body, all of it, if the canonical encoder reproduces it.
    fn quoted_printable(&mut self, bs: usize, e: usize) -> Result<Span, RawReason> {
        let body = &self.msg[bs..e];
        let decoded = qp_decode(body).ok_or(RawReason::QpInvalid)?;
        let crlf = matches!(memchr(b'\n', body), Some(i) if i > 0 && body[i - 1] == b'\r');
        // Width: the longest soft-broken line (with its `=`); without soft breaks, anything not below the longest
        // line (76 if that is shorter) gives the same bytes.
        let (mut soft, mut longest) = (0usize, 0usize);
        let mut at = 0;
        while at < body.len() {
            let nl = memchr(b'\n', &body[at..]).map_or(body.len(), |i| at + i);
            let mut line = &body[at..nl];
            if crlf && nl < body.len() {
                line = line.strip_suffix(b"\r").unwrap_or(line);
            }
            if line.last() == Some(&b'=') {
                soft = soft.max(line.len());
            }
            longest = longest.max(line.len());
            at = nl + 1;
        }
        // A soft-broken line is 1 or 2 shorter than the width when an `=XX` did not fit: the width is the longest
        // soft-broken line or up to 2 more (76 first, the common one). Without soft breaks, any width not below the
        // longest line (76 if that is shorter) gives the same bytes.
        let mut widths = if soft > 0 { [soft, soft + 1, soft + 2] } else { [longest.max(76); 3] };
        widths.sort_by_key(|&w| w.abs_diff(76));
        let mut recipe = Recipe {
            version: RECIPE_VERSION,
            encoding: TransferEncoding::QuotedPrintable,
            width: 0,
            crlf,
            eol: false,
            nopad: false,
            eager: false,
        };
        // A body without any line break does not say which line ending encodes: try CRLF too (a decoded LF is
        // then `=0A`).
        let crlfs: &[bool] = if memchr(b'\n', body).is_some() { &[crlf] } else { &[false, true] };
        // The look-ahead encoder first (Python's and most others), then the eager one (differs only with soft breaks).
        let eagers: &[bool] = if soft > 0 { &[false, true] } else { &[false] };
        let exact = eagers.iter().any(|&eager| {
            recipe.eager = eager;
            crlfs.iter().any(|&crlf| {
                recipe.crlf = crlf;
                let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                widths.into_iter().enumerate().any(|(i, w)| {
                    if (i > 0 && w == widths[i - 1]) || w < 4 || w > u32::MAX as usize {
                        return false;
                    }
                    recipe.width = w as u32;
                    self.check.clear();
                    qp_encode_checked(&decoded, w, eager, eol, &mut self.check, Some(body))
                })
            })
        });
        if !exact {
            return Err(RawReason::QpNoncanonical);
        }
        debug_assert!(encode(&decoded, &recipe) == body, "a quoted-printable part kept decoded re-encodes exactly");
        Ok(Span { start: bs, end: e, decoded, recipe })
    }
}

/// The part kind and transfer encoding from a header block.
fn headers(h: &[u8], default: Implicit) -> (Kind, Cte) {
    let mut ctype: Option<Vec<u8>> = None;
    let mut cte: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < h.len() && (ctype.is_none() || cte.is_none()) {
        let line_end = memchr(b'\n', &h[i..]).map_or(h.len(), |j| i + j + 1);
        // The field runs on over continuation lines (starting with a space or tab).
        let mut j = line_end;
        while j < h.len() && (h[j] == b' ' || h[j] == b'\t') {
            j = memchr(b'\n', &h[j..]).map_or(h.len(), |k| j + k + 1);
        }
        let field = &h[i..j];
        let first_line = line_end - i;
        i = j;
        if matches!(field.first(), Some(b' ' | b'\t')) {
            continue; // continuation lines at the very start
        }
        let Some(colon) = memchr(b':', &field[..first_line]) else { continue };
        let name = trim(&field[..colon]);
        let slot = if name.eq_ignore_ascii_case(b"content-type") {
            &mut ctype
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            &mut cte
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(field[colon + 1..].iter().copied().filter(|&c| c != b'\r' && c != b'\n').collect());
        }
    }
    let cte = match cte.as_deref().map(trim) {
        Some(v) if v.eq_ignore_ascii_case(b"base64") => Cte::Base64,
        Some(v) if v.eq_ignore_ascii_case(b"quoted-printable") => Cte::QuotedPrintable,
        _ => Cte::Other,
    };
    let kind = match ctype {
        None => match default {
            Implicit::TextPlain => Kind::Leaf,
            Implicit::Rfc822 => Kind::Message,
        },
        Some(v) => content_type(&v),
    };
    (kind, cte)
}

/// The kind of a `Content-Type` value (unfolded), with the `boundary` parameter of a multipart.
fn content_type(v: &[u8]) -> Kind {
    let end = memchr(b';', v).unwrap_or(v.len());
    let mtype = trim(&v[..end]);
    let is = |t: &[u8]| mtype.eq_ignore_ascii_case(t);
    if mtype.len() >= 10 && mtype[..10].eq_ignore_ascii_case(b"multipart/") {
        Kind::Multipart { boundary: param(&v[end..], b"boundary"), digest: is(b"multipart/digest") }
    } else if is(b"message/rfc822") || is(b"message/global") {
        Kind::Message
    } else {
        Kind::Leaf
    }
}

/// The value of parameter `want` in `; name=value; name="quoted \" value"` (the first occurrence, non-empty).
fn param(mut s: &[u8], want: &[u8]) -> Option<Vec<u8>> {
    let is_ws = |c: &u8| matches!(c, b' ' | b'\t');
    while let Some(rest) = s.strip_prefix(b";") {
        let rest = &rest[rest.iter().take_while(|c| is_ws(c)).count()..];
        let name_end = rest.iter().position(|&c| c == b'=' || c == b';').unwrap_or(rest.len());
        let name = trim(&rest[..name_end]);
        let mut value = Vec::new();
        let mut at = name_end;
        if rest.get(at) == Some(&b'=') {
            at += 1;
            at += rest[at..].iter().take_while(|c| is_ws(c)).count();
            if rest.get(at) == Some(&b'"') {
                at += 1;
                while at < rest.len() {
                    match rest[at] {
                        b'"' => {
                            at += 1;
                            break;
                        }
                        b'\\' if at + 1 < rest.len() => {
                            value.push(rest[at + 1]);
                            at += 2;
                        }
                        c => {
                            value.push(c);
                            at += 1;
                        }
                    }
                }
            } else {
                let n = rest[at..].iter().take_while(|&&c| c != b';' && !is_ws(&c)).count();
                value.extend_from_slice(&rest[at..at + n]);
                at += n;
            }
        }
        if name.eq_ignore_ascii_case(want) && !value.is_empty() {
            return Some(value);
        }
        s = &rest[at..];
        s = &s[memchr(b';', s).unwrap_or(s.len())..];
    }
    None
}

fn trim(s: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let a = s.iter().position(|c| !ws(c)).unwrap_or(s.len());
    let b = s.iter().rposition(|c| !ws(c)).map_or(a, |i| i + 1);
    &s[a..b]
}

// ---------------------------------------------------------------------------------------------------------------
// Base64.

/// Decodes whatever the alphabet allows, padded or not, with any trailing bits: whether the text is canonical is
/// decided by comparing the re-encoding, which also says why in the counts.
const LAX: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Where the first blank line of `text` ends (as [`header_len`], which `text` must not start with a line ending
/// for): found by searching for a line ending followed by an empty line, not line by line.
fn blank_line_end(text: &[u8]) -> usize {
    debug_assert!(!text.starts_with(b"\n") && !text.starts_with(b"\r\n"));
    let lf = memmem::find(text, b"\n\n");
    let crlf = memmem::find(&text[..lf.map_or(text.len(), |i| i + 2)], b"\n\r\n");
    match (lf, crlf) {
        (_, Some(k)) => k + 3,
        (Some(k), None) => k + 2,
        (None, None) => text.len(),
    }
}

/// Appends the strict decode of `text` (with padding: `pad`) to `out`: whether `text` is canonical base64, the text
/// `encode` writes for what it decodes to. SIMD (about 13 GB/s here, against 4 GB/s for the `base64` crate's
/// engine, which made base64 decoding a twentieth of a migration's CPU); it accepts exactly what the `base64`
/// crate's strict engines (`STANDARD`, `STANDARD_NO_PAD`: canonical padding, no trailing bits) accept, with the same
/// bytes (test `simd_decode_is_the_strict_decode`), and those are what [`Walker::b64_whole`] uses to say why a
/// text is not canonical.
fn strict_decode(pad: bool, text: &[u8], out: &mut Vec<u8>) -> bool {
    let engine = if pad { &base64_simd::STANDARD } else { &base64_simd::STANDARD_NO_PAD };
    let len = out.len();
    let ok = engine.decode_append(text, out).is_ok();
    if !ok {
        out.truncate(len);
    }
    ok
}

/// Base64 text is decoded this much at a time (see [`Walker::base64`]); 16 bytes under the fuzzer (fuzz/), whose
/// short inputs then cross chunk boundaries all the time.
const B64_CHUNK: usize = if cfg!(fuzzing) { 16 } else { 64 << 10 };

/// Calls `line` with the text of each line of the base64 data `data` (without its line ending), in order, if the
/// lines are laid out as [`encode`] lays them out: each `width` long and ended by `\r\n` (`crlf`) or `\n`, but the last,
/// which is 1..=`width` long and whose line ending is not in `data`. Lines of exactly `width` go by without a search
/// for their line ending (a line ending inside such a line is left in the text, which the strict decode refuses);
/// the first line that is not one of them is taken apart line by line.
fn b64_lines(data: &[u8], width: usize, crlf: bool, mut line: impl FnMut(&[u8])) -> Result<(), RawReason> {
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut at = 0;
    if width > 0 {
        let step = width + eol.len();
        while at + step < data.len() && &data[at + width..at + step] == eol {
            line(&data[at..at + width]);
            at += step;
        }
    }
    while let Some(i) = memchr(b'\n', &data[at..]) {
        let nl = at + i;
        let end = if crlf {
            if nl == at || data[nl - 1] != b'\r' {
                return Err(RawReason::B64LineLayout);
            }
            nl - 1
        } else {
            nl
        };
        if end - at != width {
            return Err(RawReason::B64LineLayout);
        }
        line(&data[at..end]);
        at = nl + 1;
    }
    let last = data.len() - at;
    if last == 0 || (width > 0 && last > width) {
        return Err(RawReason::B64LineLayout);
    }
    line(&data[at..]);
    Ok(())
}

/// Whether base64 of `decoded` (padded with `pad`) is exactly `text`, compared block by block without building it.
fn b64_reencodes_to(decoded: &[u8], pad: bool, text: &[u8]) -> bool {
    const BLOCK: usize = 3 * 1024;
    let engine = if pad { &STANDARD } else { &STANDARD_NO_PAD };
    let mut buf = [0u8; BLOCK / 3 * 4];
    let mut at = 0;
    for chunk in decoded.chunks(BLOCK) {
        // Every block but the last is a multiple of 3 bytes, so it encodes on its own without padding.
        let Ok(n) = engine.encode_slice(chunk, &mut buf) else { return false };
        if text.get(at..at + n) != Some(&buf[..n]) {
            return false;
        }
        at += n;
    }
    at == text.len()
}

/// Encodes into the end of the reserved output, then moves the lines forward into place, inserting line endings:
/// one allocation, no scratch buffer, whatever the width.
fn b64_encode(decoded: &[u8], width: usize, eol: &[u8], final_eol: bool, pad: bool, out: &mut Vec<u8>) {
    let n = decoded.len();
    let tail = match n % 3 {
        0 => 0,
        _ if pad => 4,
        r => r + 1,
    };
    let enc_len = n / 3 * 4 + tail;
    if enc_len == 0 {
        return;
    }
    let lines = if width == 0 { 1 } else { enc_len.div_ceil(width) };
    let breaks = lines - 1 + final_eol as usize;
    let start = out.len();
    let total = enc_len + breaks * eol.len();
    out.resize(start + total, 0);
    let mut src = start + total - enc_len;
    let engine = if pad { &STANDARD } else { &STANDARD_NO_PAD };
    let written = engine.encode_slice(decoded, &mut out[src..]).unwrap_or(0);
    debug_assert_eq!(written, enc_len);
    let mut dst = start;
    let mut left = enc_len;
    while left > 0 {
        let k = if width == 0 { left } else { left.min(width) };
        // dst + remaining breaks × eol == src, so a line never overwrites text not yet moved.
        out.copy_within(src..src + k, dst);
        src += k;
        dst += k;
        left -= k;
        if left > 0 || final_eol {
            out[dst..dst + eol.len()].copy_from_slice(eol);
            dst += eol.len();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Quoted-printable.

/// Decodes `=XX` (either case) and removes soft line breaks (`=` + LF or CRLF); every other byte, line endings
/// included, is taken as it is. `None` on any other `=`.
fn qp_decode(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = crate::buffers::take(body.len());
    let mut at = 0;
    while let Some(i) = memchr(b'=', &body[at..]) {
        let p = at + i;
        out.extend_from_slice(&body[at..p]);
        let r = &body[p + 1..];
        at = if r.starts_with(b"\n") {
            p + 2
        } else if r.starts_with(b"\r\n") {
            p + 3
        } else {
            let (hi, lo) = (hex(*r.first()?)?, hex(*r.get(1)?)?);
            out.push((hi << 4) | lo);
            p + 3
        };
    }
    out.extend_from_slice(&body[at..]);
    Some(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The canonical encoder (as Python's `email.quoprimime` and most mail clients write it): hard line breaks are the
/// recipe's line ending in the decoded text; printable ASCII except `=` is literal, and so are space and tab except
/// at the end of a hard line; everything else is `=XX` in upper-case hex. A hard line whose encoding is longer than
/// `width` is broken greedily into physical lines of at most `width - 1` characters plus the `=` of the soft break,
/// never inside an `=XX`.
fn qp_encode(decoded: &[u8], width: usize, eager: bool, eol: &[u8], out: &mut Vec<u8>) {
    qp_encode_checked(decoded, width, eager, eol, out, None);
}

/// [`qp_encode`] into `out`; or, with `expect`, whether the encoding is exactly `expect`: each hard line's encoding
/// is compared as soon as it is written and then dropped from `out` (which ends as it started, so a large body needs
/// no buffer of its size), and the first difference stops the encoding, so a mismatch costs little.
fn qp_encode_checked(
    decoded: &[u8],
    width: usize,
    eager: bool,
    eol: &[u8],
    out: &mut Vec<u8>,
    expect: Option<&[u8]>,
) -> bool {
    let width = width.max(4);
    let start = out.len();
    let mut rest = decoded;
    let mut matched = 0; // bytes of `expect` already compared equal
    let finder = memmem::Finder::new(eol);
    loop {
        let next = finder.find(rest);
        let line = &rest[..next.unwrap_or(rest.len())];
        qp_line(line, width, eager, eol, out);
        if let Some(i) = next {
            out.extend_from_slice(eol);
            rest = &rest[i + eol.len()..];
        }
        if let Some(want) = expect {
            let written = &out[start..];
            if want.len() - matched < written.len() || *written != want[matched..matched + written.len()] {
                out.truncate(start);
                return false;
            }
            matched += written.len();
            out.truncate(start);
        }
        if next.is_none() {
            return expect.is_none_or(|want| matched == want.len());
        }
    }
}

/// Bytes that are literal wherever they stand: printable ASCII except `=`.
const QP_SAFE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'!';
    while c <= b'~' {
        t[c as usize] = c != b'=';
        c += 1;
    }
    t
};

fn qp_literal(c: u8, last: bool) -> bool {
    QP_SAFE[c as usize] || (!last && (c == b' ' || c == b'\t'))
}

/// One hard line (without its line ending).
/// With `eager`, every physical line stays within `width - 1` characters (no look-ahead at the end of the line).
fn qp_line(line: &[u8], width: usize, eager: bool, eol: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let n = line.len();
    // The common case: short enough, nothing to encode.
    if n + (eager as usize) <= width
        && line.iter().all(|&c| QP_SAFE[c as usize] || c == b' ' || c == b'\t')
        && line.last().is_none_or(|&c| QP_SAFE[c as usize])
    {
        out.extend_from_slice(line);
        return;
    }
    let tok = |i: usize| if qp_literal(line[i], i + 1 == n) { 1 } else { 3 };
    let mut remaining: usize = (0..n).map(tok).sum();
    let mut fits = !eager && remaining <= width;
    let mut cur = 0;
    for (i, &c) in line.iter().enumerate() {
        let k = tok(i);
        if !fits && cur > 0 && cur + k > width - 1 {
            out.push(b'=');
            out.extend_from_slice(eol);
            cur = 0;
            fits = !eager && remaining <= width;
        }
        if k == 1 {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'=', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        }
        cur += k;
        remaining -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Base64 as an encoder with the given layout writes it (written independently of `encode`).
    fn wrap(data: &[u8], width: usize, crlf: bool, final_eol: bool, pad: bool) -> Vec<u8> {
        let text = if pad { STANDARD.encode(data) } else { STANDARD_NO_PAD.encode(data) };
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let lines: Vec<&[u8]> =
            if width == 0 { vec![text.as_bytes()] } else { text.as_bytes().chunks(width).collect() };
        let mut out = lines.join(eol);
        if final_eol {
            out.extend_from_slice(eol);
        }
        out
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
    }

    /// A multipart/mixed message with a text part and one attachment whose body is `body`.
    fn message(boundary: &str, cte: &str, body: &[u8], nl: &str) -> Vec<u8> {
        let mut m = format!(
            "From: a@example.com{nl}Content-Type: multipart/mixed;{nl}\tboundary=\"{boundary}\"{nl}{nl}preamble{nl}\
             --{boundary}{nl}Content-Type: text/plain{nl}{nl}hello{nl}--{boundary}{nl}\
             content-type: application/pdf; name=\"a;b.pdf\"{nl}Content-Transfer-Encoding: {cte}{nl}{nl}"
        )
        .into_bytes();
        m.extend_from_slice(body);
        m.extend_from_slice(format!("{nl}--{boundary}--{nl}epilogue{nl}").as_bytes());
        m
    }

    fn encoded(pieces: &[Piece<'_>]) -> Vec<(Vec<u8>, Recipe)> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Encoded { decoded, recipe, .. } => Some((decoded.clone(), recipe.clone())),
                Piece::Raw(_) => None,
            })
            .collect()
    }

    /// Splits, checks that the pieces rebuild `msg` exactly and that raw pieces are maximal, returns the parts.
    /// Quoted-printable and base64 from the same size on, so that the encoders are tested on short bodies too.
    fn check(msg: &[u8]) -> (Vec<(Vec<u8>, Recipe)>, SplitStats) {
        check_with(msg, &Options::all_from(MIN_ENCODED_LEN))
    }

    /// The quoted-printable recipe most mail is written with: 76 columns, LF, look-ahead.
    fn qp76() -> Recipe {
        Recipe {
            version: 1,
            encoding: TransferEncoding::QuotedPrintable,
            width: 76,
            crlf: false,
            eol: false,
            nopad: false,
            eager: false,
        }
    }

    #[test]
    fn quoted_printable_decoded_only_from_attachment_size() {
        let recipe = qp76();
        let short = b"caf\xe9 cr\xe8me, ".repeat(200);
        let body = encode(&short, &recipe);
        assert!(body.len() >= MIN_ENCODED_LEN && body.len() < MIN_QP_LEN);
        let (parts, stats) = check_with(&message("q", "quoted-printable", &body, "\n"), &Options::default());
        assert!(parts.is_empty());
        assert_eq!(stats.raw.too_small, 1);
        let long = b"caf\xe9 cr\xe8me, ".repeat(2000);
        let body = encode(&long, &recipe);
        assert!(body.len() >= MIN_QP_LEN);
        let (parts, _) = check_with(&message("q", "quoted-printable", &body, "\n"), &Options::default());
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, long);
        // base64 of the short text is still decoded by default.
        let b64 = wrap(&short, 76, false, true, true);
        let (parts, _) = check_with(&message("b", "base64", &b64, "\n"), &Options::default());
        assert_eq!(parts[0].0, short);
    }

    fn check_with(msg: &[u8], opts: &Options) -> (Vec<(Vec<u8>, Recipe)>, SplitStats) {
        let (pieces, stats) = split_with(msg, opts);
        assert_eq!(reassemble(&pieces), msg);
        for p in &pieces {
            if let Piece::Encoded { decoded, recipe, original_len } = p {
                assert_eq!(encode(decoded, recipe).len(), *original_len);
                recipe.validate().unwrap();
            }
        }
        assert!(pieces.windows(2).all(|w| !matches!(w, [Piece::Raw(_), Piece::Raw(_)])));
        assert!(pieces.iter().all(|p| p.original_len() > 0));
        (encoded(&pieces), stats)
    }

    #[test]
    fn base64_attachment_becomes_encoded() {
        let data = payload(3000, 7);
        for nl in ["\n", "\r\n"] {
            let body = wrap(&data, 76, nl == "\r\n", true, true);
            let msg = message("b1", "base64", &body, nl);
            let (parts, stats) = check(&msg);
            assert_eq!(parts.len(), 1, "{nl:?}");
            assert_eq!(parts[0].0, data);
            let r = &parts[0].1;
            assert_eq!((r.width, r.crlf, r.eol, r.nopad), (76, nl == "\r\n", true, false));
            assert_eq!(stats.encoded_parts, 1);
            assert_eq!(stats.encoded_bytes, body.len() as u64);
            assert_eq!(stats.raw.not_base64_or_qp, 1); // the text part
            // The piece is exactly the attachment body; the blank line and delimiter around it stay raw.
            let (pieces, _) = split_with_stats(&msg);
            assert!(matches!(&pieces[..], [Piece::Raw(_), Piece::Encoded { .. }, Piece::Raw(_)]));
        }
    }

    #[test]
    fn rewrapped_attachments_share_decoded_bytes() {
        let data = payload(5000, 42);
        let a = message("one", "base64", &wrap(&data, 76, false, true, true), "\n");
        let b = message("=_two_=", "BASE64", &wrap(&data, 72, true, true, true), "\r\n");
        let c = message("three", "base64", &wrap(&data, 0, false, false, true), "\n");
        let (pa, pb, pc) = (check(&a).0, check(&b).0, check(&c).0);
        assert_eq!(pa[0].0, data);
        assert_eq!(pb[0].0, data);
        assert_eq!(pc[0].0, data);
        assert_eq!((pa[0].1.width, pb[0].1.width, pc[0].1.width), (76, 72, 0));
    }

    #[test]
    fn every_layout_round_trips() {
        let data = payload(1000, 1);
        for width in [0, 4, 60, 63, 64, 72, 76, 77, 100, 1336, 5000] {
            for (crlf, final_eol, pad) in (0..8).map(|b| (b & 1 != 0, b & 2 != 0, b & 4 != 0)) {
                for len in [998, 999, 1000] {
                    let body = wrap(&data[..len], width, crlf, final_eol, pad);
                    let msg = message("b", "base64", &body, if crlf { "\r\n" } else { "\n" });
                    let (parts, _) = check(&msg);
                    assert_eq!(parts.len(), 1, "width {width} crlf {crlf} eol {final_eol} pad {pad} len {len}");
                    assert_eq!(parts[0].0, &data[..len]);
                }
            }
        }
    }

    /// Base64 text longer than a decode chunk ([`B64_CHUNK`]) is decoded a chunk at a time: still every layout is
    /// decoded exactly, and a flaw anywhere (around the chunk boundaries too) is judged as the whole text is: kept
    /// raw, for the reason the strict and lenient decoders give on the whole text.
    #[test]
    fn long_base64_is_judged_as_one_text() {
        let data = payload(B64_CHUNK / 4 * 3 + 20_000, 9);
        for width in [0, 63, 64, 76, 77, 5000] {
            for (crlf, pad) in [(false, true), (true, false)] {
                for len in [data.len() - 2, data.len() - 1, data.len()] {
                    let body = wrap(&data[..len], width, crlf, true, pad);
                    let msg = message("b", "base64", &body, if crlf { "\r\n" } else { "\n" });
                    let (parts, _) = check(&msg);
                    assert_eq!(parts.len(), 1, "width {width} crlf {crlf} pad {pad} len {len}");
                    assert_eq!(parts[0].0, &data[..len]);
                }
            }
        }
        // Flaws in the text around the first chunk boundary (a chunk ends on a whole line and a whole quad) and at
        // its end: a padded quad inside ("QQ==", which decodes alone), padding alone, a byte outside the alphabet, a
        // line ending inside a line.
        let text_len = STANDARD.encode(&data).len();
        for width in [76, 77] {
            let at: Vec<usize> = (B64_CHUNK - 8..B64_CHUNK + 2 * width + 8).chain(text_len - 6..text_len).collect();
            for &p in &at {
                for flaw in [&b"QQ=="[..], b"=", b"*", b"\n"] {
                    let mut text = STANDARD.encode(&data).into_bytes();
                    // (A line ending near the end changes where the data ends, not only the text.)
                    if p + flaw.len() > text.len() || (flaw == b"\n" && p > text_len - 2 * width) {
                        continue;
                    }
                    text[p..p + flaw.len()].copy_from_slice(flaw);
                    let body: Vec<u8> = text.chunks(width).collect::<Vec<_>>().join(&b"\n"[..]);
                    let msg = message("b", "base64", &body, "\n");
                    let (parts, stats) = check(&msg);
                    let whole = STANDARD.decode(&text);
                    let what = format!("width {width}, {flaw:?} at {p}");
                    match whole {
                        Ok(d) => assert_eq!((parts.len(), &parts[0].0), (1, &d), "{what}"),
                        Err(_) => {
                            assert!(parts.is_empty(), "{what}");
                            let r = &stats.raw;
                            let reason = if memchr(b'\n', &text).is_some() {
                                (1, 0, 0)
                            } else if LAX.decode(&text).is_ok() {
                                (0, 0, 1)
                            } else {
                                (0, 1, 0)
                            };
                            assert_eq!((r.b64_line_layout, r.b64_invalid, r.b64_noncanonical), reason, "{what}");
                        }
                    }
                }
            }
        }
    }

    /// [`strict_decode`] (SIMD) accepts exactly the texts the `base64` crate's strict engines accept, with the same
    /// bytes: every text of up to 5 symbols over an alphabet with each kind of trailing bits, padding, a byte outside
    /// the alphabet, a line ending and NUL (checked offline up to 8 symbols, every text of up to 3 bytes, and up to
    /// 5 symbols of the whole alphabet). Such short texts take base64-simd's scalar path; its SIMD paths (from 38
    /// symbols on) are checked by `simd_decode_is_the_strict_decode_with_any_byte_anywhere` and the property test
    /// `simd_decode_is_the_strict_decode_on_long_texts`.
    #[test]
    fn simd_decode_is_the_strict_decode() {
        let alphabet = b"ABCDEQgw+/=*\n\0";
        let mut text = Vec::new();
        for len in 0..=5u32 {
            for mut k in 0..alphabet.len().pow(len) {
                text.clear();
                for _ in 0..len {
                    text.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                for pad in [true, false] {
                    let reference = if pad { &STANDARD } else { &STANDARD_NO_PAD };
                    let mut out = b"kept".to_vec();
                    let ok = strict_decode(pad, &text, &mut out);
                    let want = reference.decode(&text).ok().map(|d| [&b"kept"[..], &d].concat());
                    assert_eq!(ok.then_some(out), want, "pad {pad} text {:?}", String::from_utf8_lossy(&text));
                }
            }
        }
    }

    /// Every byte value at every position of texts long enough for base64-simd's SIMD paths: the same verdict and
    /// bytes as the `base64` crate's strict engines, and `out` left as it was when the text is refused.
    #[test]
    fn simd_decode_is_the_strict_decode_with_any_byte_anywhere() {
        for (n, pad) in [(75, true), (76, false), (224, true), (226, false)] {
            let data = payload(n, 5);
            let good = if pad { STANDARD.encode(&data) } else { STANDARD_NO_PAD.encode(&data) }.into_bytes();
            let reference = if pad { &STANDARD } else { &STANDARD_NO_PAD };
            for at in 0..good.len() {
                for byte in 0..=255u8 {
                    let mut text = good.clone();
                    text[at] = byte;
                    let mut out = b"kept".to_vec();
                    let ok = strict_decode(pad, &text, &mut out);
                    let what = format!("{n} bytes, pad {pad}, {byte:#x} at {at}");
                    match reference.decode(&text) {
                        Ok(d) => assert!(ok && out == [&b"kept"[..], &d].concat(), "{what}"),
                        Err(_) => assert!(!ok && out == b"kept", "{what}"),
                    }
                }
            }
        }
    }

    #[test]
    fn trailing_and_leading_whitespace_stay_raw() {
        let data = payload(600, 3);
        let mut body = b"\n".to_vec();
        body.extend(wrap(&data, 76, false, true, true));
        body.extend_from_slice(b"\n  \n\t\n");
        let msg = message("b", "base64", &body, "\n");
        let (pieces, _) = split_with_stats(&msg);
        assert_eq!(reassemble(&pieces), msg);
        let Piece::Encoded { decoded, original_len, .. } = &pieces[1] else { panic!("{pieces:?}") };
        assert_eq!(decoded, &data);
        assert_eq!(*original_len, wrap(&data, 76, false, true, true).len());
    }

    #[test]
    fn text_after_the_data_stays_raw() {
        let data = payload(700, 8);
        for nl in ["\n", "\r\n"] {
            let mut body = wrap(&data, 76, nl == "\r\n", true, true);
            let enc_len = body.len();
            body.extend(format!("{nl}Cheerio!{nl}{nl}-- {nl}list footer{nl}").as_bytes());
            let msg = message("b", "base64", &body, nl);
            let (pieces, _) = split_with_stats(&msg);
            assert_eq!(reassemble(&pieces), msg);
            let Piece::Encoded { decoded, original_len, .. } = &pieces[1] else { panic!("{pieces:?}") };
            assert_eq!((decoded, *original_len), (&data, enc_len));
        }
    }

    #[test]
    fn noncanonical_base64_stays_raw() {
        let data = payload(900, 9);
        let good = wrap(&data, 76, false, true, true);
        let reason = |body: &[u8]| {
            let msg = message("b", "base64", body, "\n");
            let (parts, stats) = check(&msg);
            assert!(parts.is_empty(), "{:?}", String::from_utf8_lossy(body));
            let r: Vec<_> =
                RawReason::ALL.into_iter().filter(|r| r.is_reencode_mismatch() && stats.raw.get(*r) > 0).collect();
            assert_eq!(stats.raw.reencode_mismatch(), 1);
            r[0]
        };
        // Mixed line lengths: one line re-wrapped shorter.
        let mut mixed = good.clone();
        mixed.insert(40, b'\n');
        assert_eq!(reason(&mixed), RawReason::B64LineLayout);
        // Mixed line endings.
        let mut ends = good.clone();
        ends.insert(76, b'\r');
        assert_eq!(reason(&ends), RawReason::B64LineLayout);
        // Stray white space inside a line (same line length).
        let mut stray = good.clone();
        stray[100] = b' ';
        assert_eq!(reason(&stray), RawReason::B64Invalid);
        // A blank line inside the data.
        let mut blank = good.clone();
        blank.insert(77, b'\n');
        assert_eq!(reason(&blank), RawReason::B64LineLayout);
        // Partial padding: `=` where `==` is expected.
        let short = wrap(&data[..898], 76, false, true, true);
        assert!(short.ends_with(b"==\n"));
        assert_eq!(
            reason(&short[..short.len() - 2].iter().chain(b"\n").copied().collect::<Vec<_>>()),
            RawReason::B64Noncanonical
        );
        // Non-zero trailing bits: "QR==" decodes like "QQ==".
        let mut bits = short.clone();
        let i = bits.len() - 4;
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        bits[i] = ABC[ABC.iter().position(|&c| c == bits[i]).unwrap() + 1];
        assert_eq!(reason(&bits), RawReason::B64Noncanonical);
        // Padding in the middle (two encodings glued together).
        let mut glued = wrap(&data[..100], 0, false, false, true);
        glued.extend(wrap(&data[..400], 0, false, true, true));
        assert_eq!(reason(&glued), RawReason::B64Invalid);
        // Unpadded throughout is a layout the recipe records (it re-encodes exactly).
        let nopad = wrap(&data[..898], 76, false, true, false);
        let (parts, _) = check(&message("b", "base64", &nopad, "\n"));
        assert!(parts[0].1.nopad);
        assert_eq!(parts[0].0, &data[..898]);
    }

    #[test]
    fn too_small_and_other_encodings_stay_raw() {
        let (parts, stats) = check(&message("b", "base64", &wrap(b"tiny", 76, false, true, true), "\n"));
        assert!(parts.is_empty());
        assert_eq!((stats.raw.too_small, stats.raw.not_base64_or_qp), (1, 1));
        let (parts, stats) = check(&message("b", "8bit", &payload(1000, 0), "\n"));
        assert!(parts.is_empty());
        assert_eq!(stats.raw.not_base64_or_qp, 2);
        let small = Options::all_from(4);
        let msg = message("b", "base64", &wrap(b"tiny", 76, false, true, true), "\n");
        assert_eq!(encoded(&split_with(&msg, &small).0)[0].0, b"tiny");
    }

    #[test]
    fn single_part_message_and_headers() {
        let data = payload(2000, 5);
        let mut msg =
            b"Subject: x\r\nCONTENT-TRANSFER-ENCODING :\r\n base64\r\nContent-Type: image/png\r\n\r\n".to_vec();
        msg.extend(wrap(&data, 64, true, true, true));
        let (parts, _) = check(&msg);
        assert_eq!(parts[0].0, data);
        assert_eq!(parts[0].1.width, 64);
        // Without a blank line everything is header.
        let (parts, _) = check(b"Content-Transfer-Encoding: base64\nQUJD");
        assert!(parts.is_empty());
    }

    #[test]
    fn nested_multipart_digest_and_rfc822() {
        let d1 = payload(700, 1);
        let d2 = payload(800, 2);
        let d3 = payload(900, 3);
        let inner_msg = message("inner-msg", "base64", &wrap(&d3, 76, false, true, true), "\n");
        let mut m = b"Content-Type: Multipart/Mixed; boundary=outer\n\n--outer\n\
            Content-Type: multipart/alternative;\n boundary=\"alt\"\n\n--alt\nContent-Transfer-Encoding: base64\n\n"
            .to_vec();
        m.extend(wrap(&d1, 76, false, true, true));
        m.extend_from_slice(
            b"\n--alt--\n\n--outer\nContent-Type: multipart/digest; boundary=dig\n\n\
              --dig\n\nContent-Transfer-Encoding: base64\n\n",
        );
        m.extend(wrap(&d2, 60, false, true, true));
        m.extend_from_slice(b"\n--dig--\n--outer\nContent-Type: message/rfc822\n\n");
        m.extend(&inner_msg);
        m.extend_from_slice(b"\n--outer--\n");
        let (parts, stats) = check(&m);
        let decoded: Vec<_> = parts.into_iter().map(|p| p.0).collect();
        assert_eq!(decoded, vec![d1, d2, d3]);
        assert_eq!(stats.raw.parse_error, 0);
    }

    #[test]
    fn boundaries_are_byte_exact() {
        let data = payload(600, 4);
        let body = wrap(&data, 76, false, true, true);
        // `--b` followed by other characters is content, not a delimiter; padding after a delimiter is allowed.
        let mut m =
            b"Content-Type: multipart/mixed; boundary=b\n\n--bb\n--b  \nContent-Transfer-Encoding: base64\n\n".to_vec();
        m.extend(&body);
        m.extend_from_slice(b"--b \t\n\n--b--x\n");
        let (parts, _) = check(&m);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, data);
        // A missing close delimiter: the part runs to the end.
        let mut m = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\n".to_vec();
        m.extend(&body);
        assert_eq!(check(&m).0[0].0, data);
        // No boundary parameter, or no delimiter: raw, counted.
        let mut m = b"Content-Type: multipart/mixed\n\n--b\nContent-Transfer-Encoding: base64\n\n".to_vec();
        m.extend(&body);
        let (parts, stats) = check(&m);
        assert!(parts.is_empty());
        assert_eq!(stats.raw.parse_error, 1);
        let (parts, stats) = check(&message("b", "base64", &body, "\n").replace_boundary());
        assert!(parts.is_empty());
        assert_eq!(stats.raw.parse_error, 1);
    }

    trait ReplaceBoundary {
        fn replace_boundary(&self) -> Vec<u8>;
    }
    impl ReplaceBoundary for Vec<u8> {
        /// Declares another boundary than the one used.
        fn replace_boundary(&self) -> Vec<u8> {
            let i = memmem::find(self, b"boundary=\"b\"").unwrap();
            let mut v = self.clone();
            v[i + 10] = b'z';
            v
        }
    }

    #[test]
    fn deep_nesting_stays_raw() {
        let mut m = Vec::new();
        for i in 0..100 {
            m.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n").as_bytes());
        }
        m.extend_from_slice(b"Content-Transfer-Encoding: base64\n\n");
        m.extend(wrap(&payload(600, 0), 76, false, true, true));
        let (parts, stats) = check(&m);
        assert!(parts.is_empty());
        assert_eq!(stats.raw.parse_error, 1);
    }

    /// `(text, Python's email.quoprimime.body_encode(text, 76, eol), eol is CRLF)`: the canonical encoder we
    /// reproduce. The last five are random text of `abc =\t\xe9.\n`.
    const PY_QP: &[(&[u8], &[u8], bool)] = &[
        (b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \x0ab=c\x09x \x0a\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\x0a", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=\x0aaaaaa=20\x0ab=3Dc\x09x=20\x0a=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=\x0a=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9=E9\x0a", false),
        (b"Hello world, this is a long line of text that will need to be wrapped because it exceeds 76 chars. = sign and tabs\x09here.\x0aHello world, this is a long line of text that will need to be wrapped because it exceeds 76 chars. = sign and tabs\x09here.\x0aHello world, this is a long line of text that will need to be wrapped because it exceeds 76 chars. = sign and tabs\x09here.\x0a", b"Hello world, this is a long line of text that will need to be wrapped becau=\x0ase it exceeds 76 chars. =3D sign and tabs\x09here.\x0aHello world, this is a long line of text that will need to be wrapped becau=\x0ase it exceeds 76 chars. =3D sign and tabs\x09here.\x0aHello world, this is a long line of text that will need to be wrapped becau=\x0ase it exceeds 76 chars. =3D sign and tabs\x09here.\x0a", false),
        (b"line with trailing tab\x09\x0d\x0axxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xff\xfe\x0d\x0ayyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy=\x0d\x0aend", b"line with trailing tab=09\x0d\x0axxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=\x0d\x0a=FF=FE\x0d\x0ayyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy=\x0d\x0a=3D\x0d\x0aend", true),
        (b"=\x09\x0aa. acb\x09. \xe9\x0ab a \xe9=c\xe9cbc.ccaa  cc=\x09 \x0a c \xe9=a\x09\xe9cc=b\x09=a\x09b=\x09=.\x09c..ca=a\x09\xe9a\x0a\xe9\x09\xe9a.ac b .\x09\x0a\x09\x0a=.b\x09=a\xe9b \x09\x0a\x09c\x09=\x0ab=\x09=cbc=.cab\x0a\xe9a \x09=.\xe9caa.\x09 cc\xe9bc\xe9\x09ca\xe9=c.c\x0a..\x09.==.\xe9cb\xe9\x0ac.\x09cb.=\x0a\x0a\x0a\x09b\x09a=\x09\x0a=.==\x09ca.\x0a=\x09=.=\x0a\x09\x09=\x09\xe9\x09c.\x09\x09\x0ac\x0ac \x09.=b\xe9c\x0a\xe9=\x0a=a c.c ca. cacb\x09c. \x0aa\xe9.\x09\xe9b  \x09a\x09\xe9=\xe9b\x0a\x09a\x0a=b=\x0a\x0a\x09=\x09c\xe9\xe9\x0a\x09.cc\xe9. cb\x09a\xe9b\x09\x0ac\x09\xe9\xe9\xe9 .=.\xe9\xe9c==.=\xe9a\x09=.=c.ab. =ac\xe9a.\x0a\x0a= .a .=c==..\x0abac==\x0a\x09=\x0aa.\x09\x09caa=\x0a.b\x0a a\xe9\xe9.\xe9.\xe9 =.b=a\xe9=.=cc.\x0a.\x09\x0ac\xe9\x0aab =bba\x09\xe9b\xe9.abb bc=.ccc\xe9", b"=3D=09\x0aa. acb\x09. =E9\x0ab a =E9=3Dc=E9cbc.ccaa  cc=3D\x09=20\x0a c =E9=3Da\x09=E9cc=3Db\x09=3Da\x09b=3D\x09=3D.\x09c..ca=3Da\x09=E9a\x0a=E9\x09=E9a.ac b .=09\x0a=09\x0a=3D.b\x09=3Da=E9b =09\x0a\x09c\x09=3D\x0ab=3D\x09=3Dcbc=3D.cab\x0a=E9a \x09=3D.=E9caa.\x09 cc=E9bc=E9\x09ca=E9=3Dc.c\x0a..\x09.=3D=3D.=E9cb=E9\x0ac.\x09cb.=3D\x0a\x0a\x0a\x09b\x09a=3D=09\x0a=3D.=3D=3D\x09ca.\x0a=3D\x09=3D.=3D\x0a\x09\x09=3D\x09=E9\x09c.\x09=09\x0ac\x0ac \x09.=3Db=E9c\x0a=E9=3D\x0a=3Da c.c ca. cacb\x09c.=20\x0aa=E9.\x09=E9b  \x09a\x09=E9=3D=E9b\x0a\x09a\x0a=3Db=3D\x0a\x0a\x09=3D\x09c=E9=E9\x0a\x09.cc=E9. cb\x09a=E9b=09\x0ac\x09=E9=E9=E9 .=3D.=E9=E9c=3D=3D.=3D=E9a\x09=3D.=3Dc.ab. =3Dac=E9a.\x0a\x0a=3D .a .=3Dc=3D=3D..\x0abac=3D=3D\x0a\x09=3D\x0aa.\x09\x09caa=3D\x0a.b\x0a a=E9=E9.=E9.=E9 =3D.b=3Da=E9=3D.=3Dcc.\x0a.=09\x0ac=E9\x0aab =3Dbba\x09=E9b=E9.abb bc=3D.ccc=E9", false),
        (b"cb a\x0ab\xe9b=ab\xe9ca\xe9b\x09..\x09\x09ac=c\x0a=\x0a\x0a =b\x0a ==\x0ac \x09.\xe9cca\x09babb\x0a. \xe9..\x09b\x0aa\x0a\xe9ac\xe9 bb. c\xe9\x09 =\x09\x09\xe9\xe9c\x09=\xe9\x09\x0aa c\xe9bbaac  a..\x09a\xe9.=\xe9\x09..b ccb\x09\xe9.c\x0a=b=c= a.a\x09\x09\x09aa..cb\x09=. ca a b\xe9\x09=c.\x09=b.c c a\xe9=a.a.\xe9caa\x0a\x0a\x09bb .b.a a.\xe9aa=\xe9.=aa c\x0a\xe9 \x0a b\x09bb\x0acb a.\x0a\x09.\xe9\xe9\x0aca=. \x0abc=.b=\xe9\x09cc\x0ab. b\xe9 =a. a =\x09bb\xe9\x09\xe9\x0aa=ca.caa\xe9=b\xe9\x0ac\x09b=cc=.\x09=ab\x0a\x0aaabac\x09\xe9=a \x0a\xe9c\x09 \x09\x09accb=\x0acc.\xe9\xe9b\x09\x09. .\xe9c.ac\x0a..abc\xe9a aa .\x09\xe9.  = =\x0a\x0a\x09 \x09\x09 a.\xe9\x09cc .\xe9abc\xe9b= \x09..\x0ab \xe9ab\x0ac\xe9a\x09a=\x0a\xe9\x0a.\x0a\xe9.\x0aa\x0ac\xe9\x09a\x0a ==bab\x09", b"cb a\x0ab=E9b=3Dab=E9ca=E9b\x09..\x09\x09ac=3Dc\x0a=3D\x0a\x0a =3Db\x0a =3D=3D\x0ac \x09.=E9cca\x09babb\x0a. =E9..\x09b\x0aa\x0a=E9ac=E9 bb. c=E9\x09 =3D\x09\x09=E9=E9c\x09=3D=E9=09\x0aa c=E9bbaac  a..\x09a=E9.=3D=E9\x09..b ccb\x09=E9.c\x0a=3Db=3Dc=3D a.a\x09\x09\x09aa..cb\x09=3D. ca a b=E9\x09=3Dc.\x09=3Db.c c a=E9=3Da.a.=E9caa\x0a\x0a\x09bb .b.a a.=E9aa=3D=E9.=3Daa c\x0a=E9=20\x0a b\x09bb\x0acb a.\x0a\x09.=E9=E9\x0aca=3D.=20\x0abc=3D.b=3D=E9\x09cc\x0ab. b=E9 =3Da. a =3D\x09bb=E9\x09=E9\x0aa=3Dca.caa=E9=3Db=E9\x0ac\x09b=3Dcc=3D.\x09=3Dab\x0a\x0aaabac\x09=E9=3Da=20\x0a=E9c\x09 \x09\x09accb=3D\x0acc.=E9=E9b\x09\x09. .=E9c.ac\x0a..abc=E9a aa .\x09=E9.  =3D =3D\x0a\x0a\x09 \x09\x09 a.=E9\x09cc .=E9abc=E9b=3D \x09..\x0ab =E9ab\x0ac=E9a\x09a=3D\x0a=E9\x0a.\x0a=E9.\x0aa\x0ac=E9\x09a\x0a =3D=3Dbab=09", false),
        (b"\xe9=a= bab=\x09\x0a .\x0abb \x09\x0a\xe9\xe9a\xe9\xe9c\x0a \x09\xe9\x09b\x0a\x09 b ===bcb\xe9c b\x0a\xe9\xe9 \xe9.\x0a =\xe9=b\x09c\xe9acb=\x0ac\xe9 \x09b\x09ba.c\x0ab\x09 .\xe9 .ba cbb\x09c\x09b.\x09c\x0ab\x09bb  \x09\x09c.b \xe9\x0a.\xe9ab\x09ca.\xe9\x09b.=ab.\x09 \x09\xe9c=.bb=\xe9\x09b\x0a\xe9a \xe9 =bc=b\x0a.\xe9c\x0a\xe9 b.\x09cbac\x09aa=\x0a.\xe9\x0aba  .a.\x0ab=.\x0aaac\xe9\x0a\xe9a a\xe9\xe9\xe9\xe9ac\x09c= \xe9b\x09 \xe9\xe9 =c.\x09=abc.bb\xe9a\xe9c a.\x09.c. b\x09aac\xe9b=c\x09\x09 c=\x0a\x0ab=bb\xe9\x09=\x09.\x0a. c=a\x0aa\xe9c .aaa \xe9 \x0a =a\x0a a\xe9\x09a\x0a=..bb\x09\x0a=\xe9\xe9=cb.a \x0a\xe9b\x0a=\x0a\x09\xe9c.\x09b.a .aabb\x09c\x09\x09==.cb==a=\xe9c =.cca\x09\x0aba.a.aa\xe9b\xe9\x0a. \x0abbbab.=\x0a\x0ab=b\xe9==.==a\x09\x0a..\xe9c =\x09 .bc\x09b\xe9.\x0a\xe9", b"=E9=3Da=3D bab=3D=09\x0a .\x0abb =09\x0a=E9=E9a=E9=E9c\x0a \x09=E9\x09b\x0a\x09 b =3D=3D=3Dbcb=E9c b\x0a=E9=E9 =E9.\x0a =3D=E9=3Db\x09c=E9acb=3D\x0ac=E9 \x09b\x09ba.c\x0ab\x09 .=E9 .ba cbb\x09c\x09b.\x09c\x0ab\x09bb  \x09\x09c.b =E9\x0a.=E9ab\x09ca.=E9\x09b.=3Dab.\x09 \x09=E9c=3D.bb=3D=E9\x09b\x0a=E9a =E9 =3Dbc=3Db\x0a.=E9c\x0a=E9 b.\x09cbac\x09aa=3D\x0a.=E9\x0aba  .a.\x0ab=3D.\x0aaac=E9\x0a=E9a a=E9=E9=E9=E9ac\x09c=3D =E9b\x09 =E9=E9 =3Dc.\x09=3Dabc.bb=E9a=E9c a.\x09.c. b\x09aac=\x0a=E9b=3Dc\x09\x09 c=3D\x0a\x0ab=3Dbb=E9\x09=3D\x09.\x0a. c=3Da\x0aa=E9c .aaa =E9=20\x0a =3Da\x0a a=E9\x09a\x0a=3D..bb=09\x0a=3D=E9=E9=3Dcb.a=20\x0a=E9b\x0a=3D\x0a\x09=E9c.\x09b.a .aabb\x09c\x09\x09=3D=3D.cb=3D=3Da=3D=E9c =3D.cca=09\x0aba.a.aa=E9b=E9\x0a.=20\x0abbbab.=3D\x0a\x0ab=3Db=E9=3D=3D.=3D=3Da=09\x0a..=E9c =3D\x09 .bc\x09b=E9.\x0a=E9", false),
        (b"c c.c\x0a.\x09ac\xe9=.\x0a\x0a \x0a c\xe9\x0a=\x09=b =\xe9\x09\x0a=.bbb\x09bb=ca\x0a\xe9c\x09=b\xe9\x09b=b=\x09\xe9\xe9bb=bcab\x0a\xe9b.\xe9b \xe9a\x0a=b\x0a\x09\x09b.\xe9bc b\x0abb\x0a\xe9\xe9b==\x0a.\xe9a \x0ac\xe9c \x09\x0abc=a.=.\x0a\x0a==c=..\xe9bc .b. c cb.=.c.b==\x09a\x0a\x0ab a\x09..\x0a=\x09a=c\x0a\xe9=\xe9\x09c= aa.c=\xe9=\xe9.\x09\x0a\x0a\x09ac.a\x0a..\x09a \x0aa.b cc\x0a \xe9b\xe9\xe9 =a  b\x0a\x09\xe9= b\x09\x0a\x0a.a=\x0aac\xe9a.a  bc....=\x0aba. a.\x0a b\x09 b\x0a\x09bc \xe9aa\xe9a= \xe9\xe9cb\xe9  c\xe9.c\xe9a=.\x0a =b \xe9\xe9\x0a.  \x09=a \x0ac\x09b\xe9\x09c=ca\x0ac\xe9ba\x0a.\x09b.c\x09aa\x09.=.\x09\x0a\xe9c\xe9\xe9\x0a.a .=b\x0ab\x0a. b\x09bb\x09\xe9c\x09\x09a=b\x0abba.\x0a. .=c\xe9=.b\x0a =b=b\xe9=\xe9bc\x09\xe9b\x09 \x09b.\x09b.\x09a.a ===.\x0a\x0a\x09\x0a\x0ab", b"c c.c\x0a.\x09ac=E9=3D.\x0a\x0a=20\x0a c=E9\x0a=3D\x09=3Db =3D=E9=09\x0a=3D.bbb\x09bb=3Dca\x0a=E9c\x09=3Db=E9\x09b=3Db=3D\x09=E9=E9bb=3Dbcab\x0a=E9b.=E9b =E9a\x0a=3Db\x0a\x09\x09b.=E9bc b\x0abb\x0a=E9=E9b=3D=3D\x0a.=E9a=20\x0ac=E9c =09\x0abc=3Da.=3D.\x0a\x0a=3D=3Dc=3D..=E9bc .b. c cb.=3D.c.b=3D=3D\x09a\x0a\x0ab a\x09..\x0a=3D\x09a=3Dc\x0a=E9=3D=E9\x09c=3D aa.c=3D=E9=3D=E9.=09\x0a\x0a\x09ac.a\x0a..\x09a=20\x0aa.b cc\x0a =E9b=E9=E9 =3Da  b\x0a\x09=E9=3D b=09\x0a\x0a.a=3D\x0aac=E9a.a  bc....=3D\x0aba. a.\x0a b\x09 b\x0a\x09bc =E9aa=E9a=3D =E9=E9cb=E9  c=E9.c=E9a=3D.\x0a =3Db =E9=E9\x0a.  \x09=3Da=20\x0ac\x09b=E9\x09c=3Dca\x0ac=E9ba\x0a.\x09b.c\x09aa\x09.=3D.=09\x0a=E9c=E9=E9\x0a.a .=3Db\x0ab\x0a. b\x09bb\x09=E9c\x09\x09a=3Db\x0abba.\x0a. .=3Dc=E9=3D.b\x0a =3Db=3Db=E9=3D=E9bc\x09=E9b\x09 \x09b.\x09b.\x09a.a =3D=3D=3D.\x0a\x0a=09\x0a\x0ab", false),
        (b"\x0a.\xe9 \xe9\xe9bcb.\x09a=\x09\xe9bca.c=ababb===\xe9 a\xe9.=c\x09\x0a\x0a\xe9..ac\x09.\x09bb.=\x09\x09b\xe9\xe9.=cc\x0a.\x09=cc\xe9a\xe9\x09= c\xe9\x0a.b=\xe9a  \xe9 .\x0aab\x0a=b\x09\x09\x09caa .a=.\x0a a \x09\x09 \x09.aab b=b bb\x09\x09=\xe9c==b\xe9c .a=. a\x0a \xe9b=.a=a.cbb \x09\x09 .aa\x09\x0a\xe9\x09\x09= =.ca  a=b   \xe9 =c cb. .==bc.\x0ab\x09.\x0aa=a\x0acc=\xe9=.\x09c .\x0a\x0a ba.c=\x0aa =c=\xe9=b\x09=b a =\xe9.=b.\xe9.c\xe9.\x0aa\xe9a \x0a=\x09\x0ac\x09\xe9c\xe9 a= \xe9..\x0ac....  \x09 cbb..\x0aaca.cbab\xe9.cba\x09\xe9\x0a\x0a\x09 c.\x0a.\x0a\x09a\x09a.a  \x0a===  .b.. \x09\xe9= \x09\xe9a\x09bc \x09= \x09 =b\x0a.=b\x0a\x0a=acbb.=c\x0a \x09\x09ca\xe9\xe9\xe9ab=\x0a\xe9bba\x09=\x0a.cc\x09\x0a==b\xe9\xe9\x0aa..=.b=\x0ab \xe9b", b"\x0a.=E9 =E9=E9bcb.\x09a=3D\x09=E9bca.c=3Dababb=3D=3D=3D=E9 a=E9.=3Dc=09\x0a\x0a=E9..ac\x09.\x09bb.=3D\x09\x09b=E9=E9.=3Dcc\x0a.\x09=3Dcc=E9a=E9\x09=3D c=E9\x0a.b=3D=E9a  =E9 .\x0aab\x0a=3Db\x09\x09\x09caa .a=3D.\x0a a \x09\x09 \x09.aab b=3Db bb\x09\x09=3D=E9c=3D=3Db=E9c .a=3D. a\x0a =E9b=3D.a=3Da.cbb \x09\x09 .aa=09\x0a=E9\x09\x09=3D =3D.ca  a=3Db   =E9 =3Dc cb. .=3D=3Dbc.\x0ab\x09.\x0aa=3Da\x0acc=3D=E9=3D.\x09c .\x0a\x0a ba.c=3D\x0aa =3Dc=3D=E9=3Db\x09=3Db a =3D=E9.=3Db.=E9.c=E9.\x0aa=E9a=20\x0a=3D=09\x0ac\x09=E9c=E9 a=3D =E9..\x0ac....  \x09 cbb..\x0aaca.cbab=E9.cba\x09=E9\x0a\x0a\x09 c.\x0a.\x0a\x09a\x09a.a =20\x0a=3D=3D=3D  .b.. \x09=E9=3D \x09=E9a\x09bc \x09=3D \x09 =3Db\x0a.=3Db\x0a\x0a=3Dacbb.=3Dc\x0a \x09\x09ca=E9=E9=E9ab=3D\x0a=E9bba\x09=3D\x0a.cc=09\x0a=3D=3Db=E9=E9\x0aa..=3D.b=3D\x0ab =E9b", false),
    ];

    #[test]
    fn quoted_printable_canonical() {
        let mut exact = 0;
        for (i, &(text, py, crlf)) in PY_QP.iter().enumerate() {
            let recipe = Recipe {
                version: 1,
                encoding: TransferEncoding::QuotedPrintable,
                width: 76,
                crlf,
                eol: false,
                nopad: false,
                eager: false,
            };
            let ours = encode(text, &recipe) == py;
            assert!(ours || i >= 3, "case {i}: {:?}", String::from_utf8_lossy(&encode(text, &recipe)));
            let msg = message("q", "quoted-printable", py, if crlf { "\r\n" } else { "\n" });
            let (parts, stats) = check_with(&msg, &Options::all_from(1));
            if ours {
                exact += 1;
                assert_eq!(parts.len(), 1, "case {i}: {stats:?}");
                assert_eq!(parts[0].0, text);
            } else {
                assert_eq!(stats.raw.qp_noncanonical, 1);
            }
        }
        assert!(exact >= 6, "{exact}");
    }

    #[test]
    fn quoted_printable_eager_encoder() {
        // A 76-character hard line: the look-ahead encoder leaves it whole, the eager one breaks it before the last
        // character (as seen on the usrp-users list).
        let mut text = b"x".repeat(300);
        text.extend_from_slice(b"\n");
        text.extend(b"y".repeat(76));
        text.extend_from_slice(b"\n");
        let mut body = b"x".repeat(75);
        for _ in 0..3 {
            body.extend_from_slice(b"=\n");
            body.extend(b"x".repeat(75));
        }
        body.extend_from_slice(b"\n");
        body.extend(b"y".repeat(75));
        body.extend_from_slice(b"=\ny\n");
        let (parts, _) = check(&message("q", "quoted-printable", &body, "\n"));
        assert_eq!(parts[0].0, text);
        assert_eq!((parts[0].1.width, parts[0].1.eager), (76, true));
    }

    #[test]
    fn noncanonical_quoted_printable_stays_raw() {
        let text = b"caf\xe9 = cr\xe8me br\xfbl\xe9e, ".repeat(20);
        let recipe = qp76();
        let good = encode(&text, &recipe);
        let reason = |body: &[u8]| {
            let (parts, stats) = check(&message("q", "quoted-printable", body, "\n"));
            assert!(parts.is_empty());
            assert_eq!(stats.raw.reencode_mismatch(), 1);
            if stats.raw.qp_invalid == 1 { RawReason::QpInvalid } else { RawReason::QpNoncanonical }
        };
        assert_eq!(check(&message("q", "quoted-printable", &good, "\n")).0[0].0, text);
        // Lower-case hex.
        let lower: Vec<u8> = String::from_utf8(good.clone()).unwrap().replace("=E9", "=e9").into_bytes();
        assert_eq!(reason(&lower), RawReason::QpNoncanonical);
        // Needlessly encoded letter.
        let needless: Vec<u8> = String::from_utf8(good.clone()).unwrap().replacen("caf", "=63af", 1).into_bytes();
        assert_eq!(reason(&needless), RawReason::QpNoncanonical);
        // A soft break earlier than the encoder would put it.
        let mut early = good.clone();
        early.splice(10..10, b"=\n".iter().copied());
        assert_eq!(reason(&early), RawReason::QpNoncanonical);
        // Unencoded trailing space before a hard break.
        let mut trailing = b"x".repeat(300);
        trailing.extend_from_slice(b" \nend\n");
        assert_eq!(reason(&trailing), RawReason::QpNoncanonical);
        // A bare `=`.
        let mut bare = good.clone();
        bare.extend_from_slice(b"=Z1");
        assert_eq!(reason(&bare), RawReason::QpInvalid);
    }

    // ---- Property tests -------------------------------------------------------------------------------------

    /// One base64 attachment of a generated message.
    #[derive(Debug, Clone)]
    struct Att {
        data: Vec<u8>,
        width: usize,
        crlf: bool,
        final_eol: bool,
        pad: bool,
        blank_lines: usize,
        /// 0: a part of the top multipart, 1: inside a nested multipart/alternative, 2: inside a message/rfc822.
        nest: u8,
    }

    fn att() -> impl Strategy<Value = Att> {
        (
            prop::collection::vec(any::<u8>(), 1..1500),
            prop_oneof![Just(0usize), Just(60), Just(64), Just(72), Just(76), 1..200usize],
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0..3usize,
            0..3u8,
        )
            .prop_map(|(data, width, crlf, final_eol, pad, blank_lines, nest)| Att {
                data,
                width,
                crlf,
                final_eol,
                pad,
                blank_lines,
                nest,
            })
    }

    /// A message holding `atts`, with line endings `nl` in its own structure (possibly not those of the bodies).
    fn build(atts: &[Att], nl: &str) -> Vec<u8> {
        let mut m = format!("Subject: t{nl}MIME-Version: 1.0{nl}Content-Type: multipart/mixed; boundary=top{nl}{nl}")
            .into_bytes();
        for (i, a) in atts.iter().enumerate() {
            let mut part =
                format!("Content-Type: application/octet-stream{nl}Content-Transfer-Encoding: base64{nl}{nl}")
                    .into_bytes();
            part.extend(wrap(&a.data, a.width, a.crlf, a.final_eol, a.pad));
            part.extend(nl.repeat(a.blank_lines).as_bytes());
            let part = match a.nest {
                0 => part,
                1 => {
                    let mut p = format!("Content-Type: multipart/alternative; boundary=\"in{i}\"{nl}{nl}--in{i}{nl}")
                        .into_bytes();
                    p.extend(part);
                    p.extend(format!("{nl}--in{i}--{nl}").as_bytes());
                    p
                }
                _ => {
                    let mut p = format!("Content-Type: message/rfc822{nl}{nl}From: x{nl}").into_bytes();
                    p.extend(part);
                    p
                }
            };
            m.extend(format!("--top{nl}").as_bytes());
            m.extend(part);
            m.extend(nl.as_bytes());
        }
        m.extend(format!("--top--{nl}").as_bytes());
        m
    }

    fn mime_token() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"Content-Type: multipart/mixed; boundary=b\n".to_vec()),
            Just(b"content-type: Multipart/Digest;\r\n boundary=\"c\"\r\n".to_vec()),
            Just(b"Content-Type: message/rfc822\n".to_vec()),
            Just(b"Content-Transfer-Encoding: base64\n".to_vec()),
            Just(b"Content-Transfer-Encoding: quoted-printable\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"--b\n".to_vec()),
            Just(b"--b--\n".to_vec()),
            Just(b"--c\r\n".to_vec()),
            Just(b"--c--".to_vec()),
            Just(b"QUJDRA==\n".to_vec()),
            Just(b"QUJDREVG\r\n".to_vec()),
            Just(b"QUJD".to_vec()),
            Just(b"=41=\n".to_vec()),
            Just(b"=\r\n".to_vec()),
            Just(b" \t\0\xff=".to_vec()),
            prop::collection::vec(any::<u8>(), 0..6),
        ]
    }

    proptest! {
        // No regression files: this module owns no file but its own.
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn simd_decode_is_the_strict_decode_on_long_texts(
            data in prop::collection::vec(any::<u8>(), 0..400),
            flaws in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(&b"=*\nA/\0"[..])), 0..3),
            pad in any::<bool>(),
        ) {
            let mut text = if pad { STANDARD.encode(&data) } else { STANDARD_NO_PAD.encode(&data) }.into_bytes();
            for (at, byte) in flaws {
                if !text.is_empty() {
                    let i = at.index(text.len());
                    text[i] = byte;
                }
            }
            let mut out = Vec::new();
            let ok = strict_decode(pad, &text, &mut out);
            let reference = if pad { &STANDARD } else { &STANDARD_NO_PAD };
            prop_assert_eq!(ok.then_some(out), reference.decode(&text).ok());
        }

        #[test]
        fn arbitrary_bytes_round_trip(msg in prop::collection::vec(any::<u8>(), 0..3000)) {
            check(&msg);
            check_with(&msg, &Options::all_from(1));
        }

        #[test]
        fn mime_token_soup_round_trips(tokens in prop::collection::vec(mime_token(), 0..60)) {
            let msg = tokens.concat();
            check(&msg);
            check_with(&msg, &Options::all_from(1));
        }

        #[test]
        fn generated_attachments_decode_exactly(
            atts in prop::collection::vec(att(), 1..4),
            crlf in any::<bool>(),
        ) {
            let msg = build(&atts, if crlf { "\r\n" } else { "\n" });
            let (parts, stats) = check_with(&msg, &Options::all_from(1));
            let decoded: Vec<_> = parts.into_iter().map(|p| p.0).collect();
            let want: Vec<_> = atts.iter().map(|a| a.data.clone()).collect();
            prop_assert_eq!(decoded, want, "{:?}", stats);
        }

        #[test]
        fn mutated_messages_round_trip(
            atts in prop::collection::vec(att(), 1..3),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
        ) {
            let mut msg = build(&atts, "\n");
            for (at, byte, op) in edits {
                let i = at.index(msg.len());
                match op {
                    0 => msg[i] = byte,
                    1 => msg.insert(i, byte),
                    _ => { msg.remove(i); }
                }
            }
            check(&msg);
            check_with(&msg, &Options::all_from(1));
        }

        #[test]
        fn quoted_printable_round_trips(
            text in prop::collection::vec(prop_oneof![
                4 => b'a'..=b'z', 1 => Just(b' '), 1 => Just(b'\t'), 1 => Just(b'='), 1 => Just(b'\n'),
                1 => Just(b'\r'), 1 => any::<u8>(),
            ], 1..1500),
            crlf in any::<bool>(),
            width in prop_oneof![Just(76u32), 4..120u32],
            eager in any::<bool>(),
        ) {
            let recipe = Recipe {
                version: 1,
                encoding: TransferEncoding::QuotedPrintable,
                width,
                crlf,
                eol: false,
                nopad: false,
            eager,
            };
            let body = encode(&text, &recipe);
            prop_assert_eq!(qp_decode(&body), Some(text.clone()));
            let msg = message("q", "quoted-printable", &body, "\n");
            let (parts, stats) = check_with(&msg, &Options::all_from(1));
            prop_assert_eq!(parts.len(), 1, "{:?} {:?}", stats, String::from_utf8_lossy(&body));
            prop_assert_eq!(&parts[0].0, &text);
        }

        /// What the splitter relies on instead of re-encoding: a text the strict engines decode is exactly the
        /// encoding of what it decodes to (padding, trailing bits and stray `=` included).
        #[test]
        fn strict_base64_decode_accepts_only_canonical_text(
            text in prop::collection::vec(prop_oneof![
                8 => prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".to_vec()),
                2 => Just(b'='), 1 => Just(b'\n'),
            ], 0..14),
        ) {
            let nopad = !text.len().is_multiple_of(4);
            let strict = if nopad { &STANDARD_NO_PAD } else { &STANDARD };
            if let Ok(decoded) = strict.decode(&text) {
                prop_assert!(b64_reencodes_to(&decoded, !nopad, &text), "{:?}", String::from_utf8_lossy(&text));
            }
        }

        #[test]
        fn encode_never_panics(
            decoded in prop::collection::vec(any::<u8>(), 0..300),
            qp in any::<bool>(),
            width in any::<u32>(),
            flags in any::<(bool, bool, bool, u8, bool)>(),
        ) {
            let r = Recipe {
                version: flags.3,
                encoding: if qp { TransferEncoding::QuotedPrintable } else { TransferEncoding::Base64 },
                width: width % 300,
                crlf: flags.0,
                eol: flags.1,
                nopad: flags.2,
                eager: flags.4,
            };
            let out = encode(&decoded, &r);
            if !qp && (!r.nopad || !decoded.len().is_multiple_of(3)) {
                // Whatever the layout, base64 decodes back.
                let text: Vec<u8> = out.iter().copied().filter(|c| !matches!(c, b'\r' | b'\n')).collect();
                prop_assert_eq!(LAX.decode(text).unwrap(), decoded);
            }
        }
    }

    #[test]
    fn recipe_json_is_small_and_strict() {
        let r = Recipe {
            version: 1,
            encoding: TransferEncoding::Base64,
            width: 76,
            crlf: false,
            eol: true,
            nopad: false,
            eager: false,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"v":1,"e":"b64","w":76,"eol":true}"#);
        assert_eq!(serde_json::from_str::<Recipe>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Recipe>(r#"{"v":1,"e":"b64","w":76,"wrap":"x"}"#).is_err());
        assert!(serde_json::from_str::<Recipe>(r#"{"v":1,"e":"uu","w":76}"#).is_err());
        let newer: Recipe = serde_json::from_str(r#"{"v":2,"e":"qp","w":76}"#).unwrap();
        assert_eq!(newer.validate(), Err(RecipeError::Version(2)));
        let stats = SplitStats::default();
        let json = serde_json::to_string(&stats).unwrap();
        assert!(json.contains("\"not_base64_or_qp\":0"), "{json}");
    }

    // ---- Real corpora and speed -----------------------------------------------------------------------------

    /// The shared corpora (`../shared/corpora` from the workspace, or `MOVER_CORPORA`), if present.
    fn corpora() -> Option<std::path::PathBuf> {
        let dir = std::env::var_os("MOVER_CORPORA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora"));
        dir.is_dir().then_some(dir)
    }

    /// Every message under `dir`: mbox files split into messages, any other file taken as one message.
    fn messages(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                messages(&p, out);
            } else if p.is_file() {
                let data = std::fs::read(&p).unwrap();
                if crate::source::mbox::sniff(&data[..data.len().min(crate::source::mbox::SNIFF_LEN)]) {
                    let mut at = 0;
                    for seg in crate::source::mbox::split_all(&data) {
                        if let crate::source::mbox::Seg::Message { from_len, msg_len, .. } = seg {
                            out.push(data[at + from_len..at + from_len + msg_len].to_vec());
                        }
                        at += seg.len();
                    }
                } else {
                    out.push(data);
                }
            }
        }
    }

    /// Exact reconstruction of every message of every shared corpus, and how much becomes encoded. Skipped (with a
    /// message) when the corpora are absent. `cargo test --release -p mover-core --lib mime::tests::corpora --
    /// --nocapture` prints the figures.
    #[test]
    fn corpora_round_trip() {
        let Some(root) = corpora() else {
            eprintln!("SKIPPED mime corpora_round_trip: no shared corpora (set MOVER_CORPORA)");
            return;
        };
        let mut names: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for dir in names.into_iter().filter(|p| p.is_dir()) {
            let mut msgs = Vec::new();
            messages(&dir, &mut msgs);
            let (mut total, mut stats) = (0u64, SplitStats::default());
            for m in &msgs {
                let (pieces, s) = split_with(m, &Options::all_from(MIN_ENCODED_LEN));
                assert!(reassemble(&pieces) == *m, "{}: a message does not reassemble", dir.display());
                total += m.len() as u64;
                stats.merge(&s);
            }
            let raw: Vec<_> = stats.raw.iter().filter(|(_, n)| *n > 0).collect();
            eprintln!(
                "{}: {} messages, {} bytes; {} parts encoded ({} quoted-printable), {} bytes ({:.1}% of all \
                 bytes) -> {} decoded; kept raw: {:?}",
                dir.file_name().unwrap().to_string_lossy(),
                msgs.len(),
                total,
                stats.encoded_parts,
                stats.encoded_qp_parts,
                stats.encoded_bytes,
                100.0 * stats.encoded_bytes as f64 / total.max(1) as f64,
                stats.decoded_bytes,
                raw
            );
        }
    }

    /// `cargo test --release -p mover-core --lib mime::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "micro-benchmark: run in release mode"]
    fn bench_split() {
        use std::time::Instant;
        let mut sets: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        let atts: Vec<Att> = (0..4)
            .map(|i| Att {
                data: payload(400_000 + i * 1000, i as u8),
                width: 76,
                crlf: false,
                final_eol: true,
                pad: true,
                blank_lines: 0,
                nest: 0,
            })
            .collect();
        sets.push(("synthetic 4 x 400 KB base64".into(), vec![build(&atts, "\n")]));
        let text = b"Plain text, with a few =E9 accents and long lines that need soft breaks. ".repeat(20_000);
        let recipe = qp76();
        sets.push((
            "synthetic 1.5 MB quoted-printable".into(),
            vec![message("q", "quoted-printable", &encode(&text, &recipe), "\n")],
        ));
        if let Some(root) = corpora() {
            for name in ["usrp-users-maildir", "enron-mbox"] {
                let mut msgs = Vec::new();
                if root.join(name).is_dir() {
                    messages(&root.join(name), &mut msgs);
                    sets.push((name.into(), msgs));
                }
            }
        }
        for (name, msgs) in sets {
            let bytes: usize = msgs.iter().map(Vec::len).sum();
            let mut best = f64::MAX;
            let mut encoded = 0;
            for _ in 0..5 {
                let t = Instant::now();
                encoded = 0;
                for m in &msgs {
                    encoded += split_with_stats(m).1.encoded_bytes;
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            eprintln!(
                "{name}: {:.1} MB in {:.1} ms: {:.0} MB/s ({:.0}% encoded)",
                bytes as f64 / 1e6,
                best * 1e3,
                bytes as f64 / 1e6 / best,
                100.0 * encoded as f64 / bytes as f64
            );
        }
    }
}
