//! Mailbox manifests: what a mailbox was, file by file and message by message, and which blobs rebuild it.
//!
//! A manifest object is `MVMANIF1`, a u32 LE header length, the header as JSON ([`ManifestHeader`], readable with
//! one small range read, so listing a destination is cheap), then a zstd stream of JSON lines, one [`Record`] each.
//! Records follow the source tree in walk order (depth first, names sorted bytewise); a file's record is followed by
//! its pieces (`msg` and `data`) and closed by an `end` record. The next pass of the same mailbox is written as a new
//! manifest; unchanged files are carried over record for record. `docs/FORMAT.md` is the normative description.

use std::io::{BufReader, Read, Seek, Write};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::ContentId;
use crate::pack::BlobLoc;
use crate::report::PassStats;

/// Magic at the start of a manifest object.
pub const MANIFEST_MAGIC: &[u8; 8] = b"MVMANIF1";
/// Name of the manifest format in its header.
pub const MANIFEST_FORMAT: &str = "mover-manifest";
/// Version of the manifest format this build writes.
pub const MANIFEST_VERSION: u32 = 2;
/// How many bytes of a manifest object to read to be sure of having the whole header.
pub const HEADER_READ_LEN: u64 = 64 * 1024;

/// Bytes that are usually text: serialised as a JSON string when they are valid UTF-8, otherwise as
/// `{"b64": "..."}`. Used for paths (file names are bytes on Unix) and for inline mbox separators.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteStr(pub Vec<u8>);

impl ByteStr {
    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Lossy text for people.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl std::fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl From<&[u8]> for ByteStr {
    fn from(b: &[u8]) -> Self {
        ByteStr(b.to_vec())
    }
}

impl Serialize for ByteStr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("b64", &base64::engine::general_purpose::STANDARD.encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for ByteStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(BytesVisitor).map(|b| ByteStr(b.into_owned()))
    }
}

/// [`ByteStr`]'s two forms, borrowed from the input when it is a JSON string without escapes (as most paths are):
/// reading a manifest then allocates nothing for them. A visitor rather than an untagged enum, which would buffer
/// every value first.
struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = std::borrow::Cow<'de, [u8]>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or {\"b64\": string}")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v.as_bytes()))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.as_bytes().to_vec()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.into_bytes()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut b64: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "b64" {
                if b64.is_some() {
                    return Err(serde::de::Error::duplicate_field("b64"));
                }
                b64 = Some(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        let b64 = b64.ok_or_else(|| serde::de::Error::missing_field("b64"))?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(std::borrow::Cow::Owned)
            .map_err(serde::de::Error::custom)
    }
}

/// The kind of a regular file in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// One message in a Maildir `cur/`, `new/` or `tmp/` directory.
    Maildir,
    /// An mbox folder file.
    Mbox,
    /// Any other file, carried as opaque bytes.
    Opaque,
}

/// What a Maildir file name says, parsed (the name itself is kept verbatim as the path).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaildirInfo {
    /// `cur`, `new` or `tmp`.
    pub sub: String,
    /// The unique part of the name (before any `,S=`/`,W=` hints and the info suffix).
    pub uniq: String,
    /// Flags from the `2,FLAGS` info suffix, as written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub flags: String,
    /// The character separating the info suffix (`:`, or `!`/`;` on file systems that forbid `:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sep: Option<char>,
    /// `,S=` size hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `,W=` (RFC 822 size with CRLF) hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsize: Option<u64>,
}

/// The role of a part of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PartKind {
    /// The header block, up to and including the blank line that ends it.
    #[serde(rename = "h")]
    Header,
    /// Body bytes kept as they are (text, MIME part headers and delimiters, parts not stored decoded).
    #[serde(rename = "b")]
    Body,
    /// A base64 or quoted-printable part body stored decoded: its blobs hold the decoded content and its recipe
    /// re-encodes them to the original bytes ([`crate::mime::encode`]).
    #[serde(rename = "a")]
    Attachment,
}

/// A reference to one blob: where it is stored (pack, segment, offset in the segment, raw length). The blob's content
/// id is in the pack's index, which restore reads and checks every blob against; keeping it out of the manifest halves
/// the manifest of a small-message mailbox (32 random bytes per blob do not compress).
pub type BlobRef = BlobLoc;

/// One part of a message: its bytes are its inline `data`, or the concatenation of its blobs (re-encoded with the
/// recipe for an attachment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// What the part is.
    pub k: PartKind,
    /// The blobs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobRef>,
    /// Small raw pieces (MIME delimiters and part headers between attachments) are kept inline: as blobs they would
    /// cost more in index and manifest than they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ByteStr>,
    /// For [`PartKind::Attachment`]: how to re-encode the decoded blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<crate::mime::Recipe>,
}

/// One line of a manifest body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// A directory (also empty ones: Maildir `tmp/` must come back).
    Dir {
        /// Relative path.
        path: ByteStr,
        /// Permission bits.
        mode: u32,
        /// Modification time, ns since the Unix epoch.
        mtime: i64,
    },
    /// A symbolic link, restored as a link with the same target.
    Symlink {
        /// Relative path.
        path: ByteStr,
        /// Link target, verbatim.
        target: ByteStr,
    },
    /// Start of a regular file; its pieces follow, then [`Record::End`].
    File {
        /// Relative path (for a single-file source, the file name).
        path: ByteStr,
        /// How the file was read.
        kind: FileKind,
        /// Size in bytes.
        size: u64,
        /// Permission bits.
        mode: u32,
        /// Modification time, ns since the Unix epoch.
        mtime: i64,
        /// Status change time, ns since the Unix epoch, as the pass found it (absent in manifests of mover before
        /// 0.1's ctime check). A delta pass reads the file again when it moved, even with size and mtime as they
        /// were: a rewrite that restored the mtime, a `chmod`. Restore does not set it (nothing can).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ctime: Option<i64>,
        /// Parsed Maildir name, for Maildir messages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        maildir: Option<MaildirInfo>,
    },
    /// A message: in an mbox, its From_ line, the message, and the separator after it; in a Maildir, the file.
    Msg {
        /// Offset of the piece in the file.
        offset: u64,
        /// The mbox From_ line including its line ending (empty in Maildir).
        #[serde(default, skip_serializing_if = "ByteStr::is_empty")]
        from: ByteStr,
        /// The message's parts.
        parts: Vec<Part>,
        /// Separator bytes after the message (the blank line before the next From_), verbatim.
        #[serde(default, skip_serializing_if = "ByteStr::is_empty")]
        trail: ByteStr,
        /// BLAKE3 of the message (the parts concatenated; without From_ line and separator).
        blake3: ContentId,
        /// Message length in bytes.
        len: u64,
        /// Flags from mbox `Status:`/`X-Status:` headers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<String>,
    },
    /// Bytes that are not a message (opaque files, mbox preambles), as blobs.
    Data {
        /// Offset of the piece in the file.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// The blobs, in order.
        blobs: Vec<BlobRef>,
    },
    /// End of a regular file.
    End {
        /// BLAKE3 of the whole file, where it is not already the one message's hash (Maildir).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blake3: Option<ContentId>,
    },
    /// Something that could not be migrated normally.
    Quarantine {
        /// Relative path.
        path: ByteStr,
        /// Byte offset, where one applies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// Why.
        reason: String,
        /// Whether the bytes are in the manifest anyway (carried opaque).
        stored: bool,
    },
}

/// The header of a manifest: who, when, and the pass's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestHeader {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Mailbox id.
    pub mailbox: String,
    /// Pass number, from 1.
    pub pass: u32,
    /// The source path as given to the migration.
    pub source: String,
    /// Whether the source was a directory tree or a single file.
    pub source_is_dir: bool,
    /// When the pass started, ms since the Unix epoch.
    pub started_ms: u64,
    /// When the pass committed, ms since the Unix epoch.
    pub finished_ms: u64,
    /// The program that wrote it (`mover-core x.y.z`).
    pub tool: String,
    /// Number of records in the body.
    pub records: u64,
    /// BLAKE3 of the compressed body that follows the header.
    pub body_blake3: ContentId,
    /// BLAKE3 of the uncompressed record lines: equal for two passes that found the mailbox identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_blake3: Option<ContentId>,
    /// Counters of this pass.
    pub stats: PassStats,
}

/// Streams records into a compressed temporary file, then frames them with a header.
pub struct ManifestWriter {
    /// The compressed spool, started when the first [`DEFER_MAX`] bytes of records are compressed.
    enc: Option<Spool>,
    records: u64,
    hasher: blake3::Hasher,
    /// Record lines not yet compressed; the first `hashed` bytes of them are hashed. Lines are hashed in blocks of
    /// [`HASH_BLOCK`] (BLAKE3 then hashes many chunks at once instead of one short line at a time; the hash is the
    /// same however the stream is cut) and compressed only from [`DEFER_MAX`] bytes on, or at the end: a delta pass
    /// in which nothing changed compares the records' hash with the previous pass's and drops the manifest, so its
    /// (carried) records are never compressed.
    pending: Vec<u8>,
    hashed: usize,
    /// The previous pass's records, while every byte spooled so far is the same as theirs ([`ManifestWriter::against`]).
    same: Option<SameAsBefore>,
}

/// A writer's view of the previous pass's records: while what would be compressed equals them, it is compared and
/// dropped instead. A delta pass in which little or nothing changed writes mostly carried records; compressing them
/// was most of a no-change pass's work on a mailbox of 20,000 messages (the records are hashed all the same, and
/// the hash decides whether the pass is kept).
struct SameAsBefore {
    prev: Manifest,
    /// The previous records, decompressed; opened on the first comparison.
    records: Option<BufReader<zstd::stream::read::Decoder<'static, BufReader<std::io::Cursor<Bytes>>>>>,
    /// Compare a block at a time from the first record (the previous records are large), rather than from
    /// [`DEFER_MAX`] bytes on (small records are only hashed, as without a previous pass: decompressing them to
    /// compare would cost more than it saves).
    eager: bool,
    /// Bytes found equal (and dropped) so far.
    matched: u64,
    scratch: Vec<u8>,
}

impl SameAsBefore {
    /// Whether the previous records continue with exactly `data` (consumed if so; on a difference the rest of them
    /// is of no further use). An error here (a previous manifest that cannot be decompressed) fails the pass: the
    /// writer is not used after it.
    fn continues_with(&mut self, data: &[u8]) -> Result<bool> {
        let records = match &mut self.records {
            Some(r) => r,
            None => self.records.insert(self.prev.raw_records()?),
        };
        for piece in data.chunks(HASH_BLOCK) {
            self.scratch.resize(piece.len(), 0);
            match records.read_exact(&mut self.scratch) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(Error::corrupt(format!("manifest {}: {e}", self.prev.key))),
            }
            if self.scratch != piece {
                return Ok(false);
            }
        }
        self.matched += data.len() as u64;
        Ok(true)
    }

    /// Whether records are compared as they come, a block at a time (from the start when eager, otherwise once the
    /// first comparison at [`DEFER_MAX`] matched).
    fn comparing(&self) -> bool {
        self.eager || self.matched > 0
    }
}

/// The manifest writer's compressed spool file.
type Spool = zstd::stream::write::Encoder<'static, std::io::BufWriter<std::fs::File>>;

const HASH_BLOCK: usize = 64 << 10;
/// Record bytes held uncompressed before the spool starts (about 15,000 messages' records).
const DEFER_MAX: usize = 4 << 20;

impl std::fmt::Debug for ManifestWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManifestWriter({} records)", self.records)
    }
}

fn tmp_err(e: std::io::Error) -> Error {
    Error::io("writing the manifest spool file", e)
}

impl ManifestWriter {
    /// A writer spooling to an anonymous temporary file (created once there is enough to spool).
    pub fn new() -> Result<Self> {
        Ok(ManifestWriter {
            enc: None,
            records: 0,
            hasher: blake3::Hasher::new(),
            pending: Vec::new(),
            hashed: 0,
            same: None,
        })
    }

    /// A writer for the pass after `prev`: as long as the records written are the same as `prev`'s, they are only
    /// hashed, never compressed, whatever their size. The manifest [`ManifestWriter::finish`] makes is the same
    /// either way.
    pub fn against(prev: &Manifest) -> Result<Self> {
        // Manifests compress about 6:1: a body of an eighth of DEFER_MAX holds records that will be spooled.
        Self::against_with(prev, prev.body.len() >= DEFER_MAX / 8)
    }

    fn against_with(prev: &Manifest, eager: bool) -> Result<Self> {
        let mut w = Self::new()?;
        w.same = Some(SameAsBefore { prev: prev.clone(), records: None, eager, matched: 0, scratch: Vec::new() });
        Ok(w)
    }

    /// Append one record.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::new(crate::ErrorKind::Other, e.to_string()))?;
        line.push(b'\n');
        self.write_lines(&line, 1)
    }

    /// Append already-encoded record lines (each ending in `\n`), e.g. carried over from a previous pass.
    pub fn write_lines(&mut self, lines: &[u8], count: u64) -> Result<()> {
        self.records += count;
        // While the records are the previous pass's, they are compared (and dropped) a block at a time once the
        // comparison has started, however many a call hands over (a carried file's records come in one piece):
        // neither they nor the previous ones are then held in memory. The hash and the compressed spool are the
        // same however the stream is cut.
        if self.same.as_ref().is_some_and(SameAsBefore::comparing) {
            for piece in lines.chunks(HASH_BLOCK) {
                self.append(piece)?;
            }
            return Ok(());
        }
        self.append(lines)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        // Records are spooled once DEFER_MAX of them wait: grown by doubling, the buffer would end twice that size
        // (8 MiB held by the manifest of a large mailbox, for 4 MiB of records).
        let need = self.pending.len() + bytes.len();
        if need > self.pending.capacity() && need > DEFER_MAX / 2 {
            self.pending.reserve_exact(need.max(DEFER_MAX) - self.pending.len());
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() - self.hashed >= HASH_BLOCK {
            self.hasher.update(&self.pending[self.hashed..]);
            self.hashed = self.pending.len();
        }
        let block_due = self.pending.len() >= HASH_BLOCK && self.same.as_ref().is_some_and(SameAsBefore::comparing);
        if self.pending.len() >= DEFER_MAX || block_due {
            self.spool()?;
        }
        Ok(())
    }

    /// Hash and compress everything pending (or, while it is the same as the previous pass's records, drop it).
    fn spool(&mut self) -> Result<()> {
        self.hasher.update(&self.pending[self.hashed..]);
        self.hashed = self.pending.len();
        if let Some(same) = &mut self.same {
            if same.continues_with(&self.pending)? {
                self.pending.clear();
                self.hashed = 0;
                return Ok(());
            }
            self.differs()?;
        }
        Self::encoder(&mut self.enc)?.write_all(&self.pending).map_err(tmp_err)?;
        self.pending.clear();
        self.hashed = 0;
        Ok(())
    }

    /// The compressed spool, started on first use.
    fn encoder(enc: &mut Option<Spool>) -> Result<&mut Spool> {
        if enc.is_none() {
            let file = tempfile::tempfile().map_err(tmp_err)?;
            // Level 1: a manifest is mostly hashes, which do not compress; higher levels cost a fifth of the CPU of a
            // small-message migration for a few percent of the manifest's size.
            let w = std::io::BufWriter::with_capacity(1 << 16, file);
            *enc = Some(zstd::stream::write::Encoder::new(w, 1).map_err(tmp_err)?);
        }
        Ok(enc.as_mut().expect("started above"))
    }

    /// The records are no longer the previous pass's: compress the part that was (read again from the previous
    /// manifest) before anything else.
    fn differs(&mut self) -> Result<()> {
        let Some(same) = self.same.take() else { return Ok(()) };
        if same.matched == 0 {
            return Ok(());
        }
        let key = same.prev.key.clone();
        let mut prefix = same.prev.raw_records()?.take(same.matched);
        let copied = std::io::copy(&mut prefix, Self::encoder(&mut self.enc)?)
            .map_err(|e| Error::corrupt(format!("manifest {key}: reading its records again: {e}")))?;
        if copied != same.matched {
            return Err(Error::corrupt(format!("manifest {key}: its records ended early when read again")));
        }
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// BLAKE3 of the record lines written so far.
    pub fn records_hash(&self) -> ContentId {
        let mut h = self.hasher.clone();
        h.update(&self.pending[self.hashed..]);
        ContentId::from_hash(h.finalize())
    }

    /// Finish: the manifest object with `header` (whose `records` and `body_blake3` are filled in here).
    pub fn finish(mut self, mut header: ManifestHeader) -> Result<Bytes> {
        // Records the same as the previous pass's so far are written out now, in front of the rest.
        self.differs()?;
        self.spool()?;
        let enc = self.enc.take().expect("spool starts the encoder");
        let buf = enc.finish().map_err(tmp_err)?;
        let mut file = buf.into_inner().map_err(|e| tmp_err(e.into_error()))?;
        file.rewind().map_err(tmp_err)?;
        let mut body = Vec::new();
        file.read_to_end(&mut body).map_err(tmp_err)?;
        header.records = self.records;
        header.records_blake3 = Some(ContentId::from_hash(self.hasher.finalize()));
        header.body_blake3 = ContentId::of(&body);
        let head = serde_json::to_vec(&header).map_err(|e| Error::new(crate::ErrorKind::Other, e.to_string()))?;
        let mut out = Vec::with_capacity(12 + head.len() + body.len());
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&body);
        Ok(Bytes::from(out))
    }
}

/// Parse the header from the first bytes of a manifest object; returns it and where the body starts.
pub fn parse_header(data: &[u8], key: &str) -> Result<(ManifestHeader, usize)> {
    let bad = |why: String| Error::corrupt(format!("manifest {key}: {why}"));
    if data.len() < 12 || &data[..8] != MANIFEST_MAGIC {
        return Err(bad("not a mover manifest".into()));
    }
    let len = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
    let head = data.get(12..12 + len).ok_or_else(|| bad("header truncated".into()))?;
    let header: ManifestHeader = serde_json::from_slice(head).map_err(|e| bad(format!("header: {e}")))?;
    if header.format != MANIFEST_FORMAT {
        return Err(bad(format!("format {:?}", header.format)));
    }
    if header.version != MANIFEST_VERSION {
        return Err(bad(format!("version {} is not the one this build reads ({MANIFEST_VERSION})", header.version)));
    }
    Ok((header, 12 + len))
}

/// A whole manifest object, parsed lazily.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The header.
    pub header: ManifestHeader,
    key: String,
    body: Bytes,
}

impl Manifest {
    /// Parse a manifest object read from `key`, checking the body checksum.
    pub fn parse(data: Bytes, key: &str) -> Result<Self> {
        let (header, start) = parse_header(&data, key)?;
        let body = data.slice(start..);
        if ContentId::of(&body) != header.body_blake3 {
            return Err(Error::corrupt(format!("manifest {key}: body checksum mismatch")));
        }
        Ok(Manifest { header, key: key.to_string(), body })
    }

    /// The records, in order, each with its encoded line (for carrying unchanged files over).
    pub fn records(&self) -> Result<RecordReader> {
        Ok(RecordReader::new(self.raw_records()?.into_inner(), self.key.clone()))
    }

    /// The record lines, decompressed, as one stream of bytes.
    fn raw_records(
        &self,
    ) -> Result<BufReader<zstd::stream::read::Decoder<'static, BufReader<std::io::Cursor<Bytes>>>>> {
        let dec = zstd::stream::read::Decoder::with_buffer(BufReader::new(std::io::Cursor::new(self.body.clone())))
            .map_err(|e| Error::corrupt(format!("manifest {}: {e}", self.key)))?;
        Ok(BufReader::with_capacity(1 << 16, dec))
    }
}

/// A record as far as carrying a file over to the next pass needs it ([`RecordReader::carried`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A file's first record, parsed (its path is [`CarriedReader::peek`]'s second value).
    File {
        /// Size in bytes.
        size: u64,
        /// Permission bits.
        mode: u32,
        /// Modification time, ns since the Unix epoch.
        mtime: i64,
        /// Status change time, ns since the Unix epoch (`None` in manifests written before it was recorded).
        ctime: Option<i64>,
    },
    /// A message record (not parsed).
    Msg,
    /// A file's last record.
    End,
    /// A quarantine record (its path is [`CarriedReader::peek`]'s second value): a note on a file that was stored
    /// anyway (`stored`), which follows that file's `end`, or a file that was not stored.
    Note {
        /// Whether the file it names was stored.
        stored: bool,
    },
    /// Any other record.
    Other,
}

/// The kind (`t`) of a record line as mover writes it, `{"t":"<kind>",…` (serde writes an internally tagged
/// enum's tag first); `None` for a line that does not start that way.
fn record_kind(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"{\"t\":\"")?;
    let end = rest.iter().position(|&c| c == b'"')?;
    Some(&rest[..end])
}

/// [`RecordReader`] for carrying files over, a cursor over the records: only file records are parsed; the others
/// (a few hundred bytes of JSON per message, which the previous manifest's body hash already vouches for) are told
/// apart by their kind and copied as they are. On a no-change re-run, parsing every message record was most of the
/// reader's work; the lines are read in place, so a record costs no allocation either.
pub struct CarriedReader {
    records: RecordReader,
    /// The record under the cursor, and the range of its line in `records`' buffer; `None` when the cursor has
    /// been moved past it (the next [`CarriedReader::peek`] reads the next one).
    current: Option<(Carried, std::ops::Range<usize>)>,
    /// The path of the file record under the cursor.
    path: Vec<u8>,
}

impl CarriedReader {
    /// The record under the cursor and, for a file or quarantine record, its path (empty otherwise); `None` at the
    /// end.
    pub fn peek(&mut self) -> Result<Option<(Carried, &[u8])>> {
        if self.current.is_none() {
            let Some(range) = self.records.next_line_range()? else { return Ok(None) };
            let kind = self.classify(range.clone())?;
            self.current = Some((kind, range));
        }
        let (kind, _) = self.current.as_ref().expect("read above");
        let path = if matches!(kind, Carried::File { .. } | Carried::Note { .. }) { &self.path[..] } else { &[][..] };
        Ok(Some((*kind, path)))
    }

    /// The line of the record under the cursor (with its newline), as the previous pass wrote it.
    pub fn line(&self) -> &[u8] {
        self.current.as_ref().map_or(&[][..], |(_, range)| &self.records.buf[range.clone()])
    }

    /// Move past the record under the cursor.
    pub fn advance(&mut self) {
        self.current = None;
    }

    fn classify(&mut self, range: std::ops::Range<usize>) -> Result<Carried> {
        let line = &self.records.buf[range];
        if let Some(f) = file_fields(line) {
            self.path.clear();
            self.path.extend_from_slice(f.path);
            return Ok(Carried::File { size: f.size, mode: f.mode, mtime: f.mtime, ctime: f.ctime });
        }
        let cheap = match record_kind(line) {
            Some(b"file") => {
                // Straight into the fields needed (serde's internally tagged enums buffer every field first).
                #[derive(Deserialize)]
                struct FileLite<'a> {
                    #[serde(borrow, deserialize_with = "borrowed_bytes")]
                    path: std::borrow::Cow<'a, [u8]>,
                    size: u64,
                    mode: u32,
                    mtime: i64,
                    #[serde(default)]
                    ctime: Option<i64>,
                }
                serde_json::from_slice::<FileLite>(line).ok().map(|f| {
                    self.path.clear();
                    self.path.extend_from_slice(&f.path);
                    Carried::File { size: f.size, mode: f.mode, mtime: f.mtime, ctime: f.ctime }
                })
            }
            Some(b"quarantine") => {
                // Few and short: parsed whole.
                #[derive(Deserialize)]
                struct NoteLite<'a> {
                    #[serde(borrow, deserialize_with = "borrowed_bytes")]
                    path: std::borrow::Cow<'a, [u8]>,
                    stored: bool,
                }
                serde_json::from_slice::<NoteLite>(line).ok().map(|n| {
                    self.path.clear();
                    self.path.extend_from_slice(&n.path);
                    Carried::Note { stored: n.stored }
                })
            }
            Some(b"msg") => Some(Carried::Msg),
            Some(b"end") => Some(Carried::End),
            Some(b"dir" | b"symlink" | b"data") => Some(Carried::Other),
            _ => None,
        };
        if let Some(c) = cheap {
            return Ok(c);
        }
        // Not as mover writes it: a full parse says what it is, or why it is not a record.
        Ok(match self.records.parse(line)? {
            Record::File { path, size, mode, mtime, ctime, .. } => {
                self.path = path.0;
                Carried::File { size, mode, mtime, ctime }
            }
            Record::Msg { .. } => Carried::Msg,
            Record::End { .. } => Carried::End,
            Record::Quarantine { path, stored, .. } => {
                self.path = path.0;
                Carried::Note { stored }
            }
            _ => Carried::Other,
        })
    }
}

/// The fields of a file record a delta pass compares, read by [`file_fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileFields<'a> {
    path: &'a [u8],
    size: u64,
    mode: u32,
    mtime: i64,
    ctime: Option<i64>,
}

/// Path, size, mode, mtime and ctime of a file record written as mover writes it: `{"t":"file","path":"…",
/// "kind":"…","size":N,"mode":N,"mtime":N` and optionally `,"ctime":N`, then `,` or `}`, with a path of printable
/// UTF-8 and no escapes. `None` for any other line, which serde then parses: this only spares a re-run the general
/// parser for each unchanged file. What follows is not looked at: the lines come from a manifest whose body hash was
/// checked, and mover writes no junk after these fields and no key twice (a hand-made manifest that does could be
/// read differently than by serde).
fn file_fields(line: &[u8]) -> Option<FileFields<'_>> {
    fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
        let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || (n > 1 && s[0] == b'0') {
            return None;
        }
        let v = s[..n].iter().try_fold(0u64, |v, &c| v.checked_mul(10)?.checked_add(u64::from(c - b'0')))?;
        Some((v, &s[n..]))
    }
    fn signed(s: &[u8]) -> Option<(i64, &[u8])> {
        let (negative, s) = match s.strip_prefix(b"-") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (magnitude, rest) = digits(s)?;
        let v = if negative { 0i64.checked_sub_unsigned(magnitude)? } else { i64::try_from(magnitude).ok()? };
        Some((v, rest))
    }
    let rest = line.strip_prefix(b"{\"t\":\"file\",\"path\":\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    let path = &rest[..end];
    if rest[end] != b'"' || path.iter().any(|&c| c < 0x20) || std::str::from_utf8(path).is_err() {
        return None;
    }
    let rest = rest[end + 1..].strip_prefix(b",\"kind\":\"")?;
    let rest = &rest[memchr::memchr(b'"', rest)? + 1..];
    let (size, rest) = digits(rest.strip_prefix(b",\"size\":")?)?;
    let (mode, rest) = digits(rest.strip_prefix(b",\"mode\":")?)?;
    let mode = u32::try_from(mode).ok()?;
    let (mtime, rest) = signed(rest.strip_prefix(b",\"mtime\":")?)?;
    let (ctime, rest) = match rest.strip_prefix(b",\"ctime\":") {
        Some(r) => signed(r).map(|(c, rest)| (Some(c), rest))?,
        None => (None, rest),
    };
    matches!(rest.first(), Some(b',' | b'}')).then_some(FileFields { path, size, mode, mtime, ctime })
}

fn borrowed_bytes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<std::borrow::Cow<'de, [u8]>, D::Error> {
    d.deserialize_any(BytesVisitor)
}

/// Iterator over the records of a manifest, with their encoded lines.
pub struct RecordReader {
    records: zstd::stream::read::Decoder<'static, BufReader<std::io::Cursor<Bytes>>>,
    /// Decompressed lines; `buf[start..end]` are not read yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    key: String,
    line_no: u64,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordReader({} at line {})", self.key, self.line_no)
    }
}

/// [`RecordReader`]'s buffer to begin with (it grows to hold the longest line).
const RECORD_BUF: usize = 64 << 10;

impl RecordReader {
    fn new(records: zstd::stream::read::Decoder<'static, BufReader<std::io::Cursor<Bytes>>>, key: String) -> Self {
        RecordReader { records, buf: vec![0; RECORD_BUF], start: 0, end: 0, eof: false, key, line_no: 0 }
    }

    /// Only as much parsing as carrying files over needs, see [`CarriedReader`].
    pub fn carried(self) -> CarriedReader {
        CarriedReader { records: self, current: None, path: Vec::new() }
    }

    /// The next line (with its newline, if it has one), as a range of `buf` valid until the next call.
    fn next_line_range(&mut self) -> Result<Option<std::ops::Range<usize>>> {
        let mut searched = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..self.end]) {
                let line = self.start..searched + i + 1;
                self.start = line.end;
                self.line_no += 1;
                return Ok(Some(line));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                self.line_no += 1;
                return Ok(Some(line));
            }
            // Keep the partial line, at the front, and read more after it.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            searched = self.end;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.records.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::corrupt(format!("manifest {} body: {e}", self.key))),
            }
        }
    }

    fn parse(&self, line: &[u8]) -> Result<Record> {
        serde_json::from_slice::<Record>(line)
            .map_err(|e| Error::corrupt(format!("manifest {} record {}: {e}", self.key, self.line_no)))
    }
}

impl Iterator for RecordReader {
    type Item = Result<(Record, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let range = match self.next_line_range() {
            Ok(r) => r?,
            Err(e) => return Some(Err(e)),
        };
        let line = &self.buf[range];
        Some(self.parse(line).map(|r| (r, line.to_vec())))
    }
}

#[cfg(test)]
/// A header for [`ManifestWriter::finish`], which fills in the counts and hashes.
pub(crate) fn test_header() -> ManifestHeader {
    ManifestHeader {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        mailbox: "m".into(),
        pass: 1,
        source: "/x".into(),
        source_is_dir: true,
        started_ms: 1,
        finished_ms: 2,
        tool: "t".into(),
        records: 0,
        body_blake3: ContentId::of(b""),
        records_blake3: None,
        stats: PassStats::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PackId;

    /// The fast reading of a file record's path, size and mtime gives what serde does, for every kind of path and
    /// number mover writes, and declines (leaving it to serde) anything it does not know.
    #[test]
    fn file_fields_are_what_serde_reads() {
        let paths: [&[u8]; 6] =
            [b"cur/1.host:2,S", b"", b"a \"quoted\" name", b"back\\slash", "é/ü".as_bytes(), b"bad\xff"];
        for path in paths {
            for (size, mtime) in [(0, 0), (1, -1), (u64::MAX, i64::MIN), (10, i64::MAX), (123, -1_000_000_007)] {
                for ctime in [None, Some(0), Some(-1), Some(i64::MAX), Some(i64::MIN), Some(1_700_000_000_123_456_789)]
                {
                    for maildir in [None, Some(crate::source::maildir::parse_name(b"1.host:2,S", "cur"))] {
                        for mode in [0o600, 0, u32::MAX] {
                            let rec = Record::File {
                                path: ByteStr(path.to_vec()),
                                kind: FileKind::Maildir,
                                size,
                                mode,
                                mtime,
                                ctime,
                                maildir: maildir.clone(),
                            };
                            let line = serde_json::to_vec(&rec).unwrap();
                            let fast = file_fields(&line);
                            let plain =
                                !path.iter().any(|c| matches!(c, b'"' | b'\\')) && std::str::from_utf8(path).is_ok();
                            assert_eq!(fast.is_some(), plain, "{}", String::from_utf8_lossy(&line));
                            if let Some(f) = fast {
                                assert_eq!(f, FileFields { path, size, mode, mtime, ctime });
                            }
                        }
                    }
                }
            }
        }
        for line in [
            &br#"{"t":"file","path":"a","kind":"maildir","size":01,"mode":1,"mtime":1}"#[..],
            br#"{"t":"file","path":"a","kind":"maildir","size":18446744073709551616,"mode":1,"mtime":1}"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":1,"mtime":-9223372036854775809}"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":1,"mtime":1.5}"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":1,"mtime":"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":1,"mtime":1}"#,
            br#"{"t":"file","kind":"maildir","path":"a","size":1,"mode":1,"mtime":1}"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":4294967296,"mtime":1}"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":1,"mtime":1,"ctime":}"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":1,"mtime":1,"ctime":01}"#,
            br#"{"t":"file","path":"a","kind":"maildir","size":1,"mode":1,"mtime":1,"ctime":1"#,
        ] {
            assert_eq!(file_fields(line), None, "{}", String::from_utf8_lossy(line));
        }
    }

    /// Record lines are read the same whatever their length against the reader's buffer (a line longer than the
    /// buffer, lines across its refills) and with or without a newline at the very end.
    #[test]
    fn record_lines_are_read_whole_whatever_their_length() {
        let reason = |n: usize| "r".repeat(n);
        let recs: Vec<Record> = [10, RECORD_BUF * 3 + 7, 5, RECORD_BUF - 40, RECORD_BUF, 1, 200_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| Record::Quarantine {
                path: ByteStr(format!("q{i}").into_bytes()),
                offset: Some(i as u64),
                reason: reason(n),
                stored: false,
            })
            .collect();
        let mut w = ManifestWriter::new().unwrap();
        for rec in &recs {
            w.write(rec).unwrap();
        }
        let m = Manifest::parse(w.finish(test_header()).unwrap(), "k").unwrap();
        let back: Vec<(Record, Vec<u8>)> = m.records().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(back.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), recs);
        for (r, line) in &back {
            assert_eq!(line, &[serde_json::to_vec(r).unwrap(), b"\n".to_vec()].concat());
        }
        // A body whose last line has no newline still gives that line.
        let body = b"{\"t\":\"end\"}\n{\"t\":\"end\"}";
        let dec = zstd::stream::read::Decoder::with_buffer(BufReader::new(std::io::Cursor::new(Bytes::from(
            zstd::encode_all(&body[..], 1).unwrap(),
        ))))
        .unwrap();
        let lines: Vec<Vec<u8>> = RecordReader::new(dec, "k".into()).map(|r| r.unwrap().1).collect();
        assert_eq!(lines, vec![b"{\"t\":\"end\"}\n".to_vec(), b"{\"t\":\"end\"}".to_vec()]);
    }

    proptest::proptest! {
        /// Whatever a file record holds (any path bytes, any size, mode and time, with or without Maildir info),
        /// the fast reading of the line serde writes for it gives its path, size and mtime, or leaves it to serde.
        #[test]
        fn file_fields_never_misread_a_file_record(
            path in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            size in proptest::prop_oneof![0u64..20, proptest::prelude::any::<u64>()],
            mode in proptest::prelude::any::<u32>(),
            mtime in proptest::prop_oneof![-20i64..20, proptest::prelude::any::<i64>()],
            ctime in proptest::option::of(proptest::prop_oneof![-20i64..20, proptest::prelude::any::<i64>()]),
            maildir in proptest::prelude::any::<bool>(),
        ) {
            let rec = Record::File {
                path: ByteStr(path.clone()),
                kind: if maildir { FileKind::Maildir } else { FileKind::Mbox },
                size,
                mode,
                mtime,
                ctime,
                maildir: maildir.then(|| crate::source::maildir::parse_name(&path, "cur")),
            };
            let line = serde_json::to_vec(&rec).unwrap();
            if let Some(f) = file_fields(&line) {
                proptest::prop_assert_eq!(f, FileFields { path: &path[..], size, mode, mtime, ctime });
            }
            // Printable UTF-8 without quotes or backslashes is read the fast way.
            let plain = std::str::from_utf8(&path).is_ok() && !path.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
            proptest::prop_assert_eq!(file_fields(&line).is_some(), plain);
        }
    }

    #[test]
    fn every_record_kind_is_written_first() {
        // The carry-over path relies on serde writing the tag of an internally tagged enum first.
        let r = BlobLoc { pack: PackId::fresh(), seg: 0, offset: 0, raw_len: 1 };
        let all = [
            (Record::Dir { path: ByteStr(b"d".to_vec()), mode: 0, mtime: 0 }, &b"dir"[..]),
            (Record::Symlink { path: ByteStr(b"l".to_vec()), target: ByteStr(b"t".to_vec()) }, b"symlink"),
            (
                Record::File {
                    path: ByteStr(b"f".to_vec()),
                    kind: FileKind::Mbox,
                    size: 1,
                    mode: 0,
                    mtime: 0,
                    ctime: Some(1),
                    maildir: None,
                },
                b"file",
            ),
            (
                Record::Msg {
                    offset: 0,
                    from: ByteStr::default(),
                    parts: vec![],
                    trail: ByteStr::default(),
                    blake3: ContentId::of(b""),
                    len: 0,
                    flags: None,
                },
                b"msg",
            ),
            (Record::Data { offset: 0, len: 1, blobs: vec![r] }, b"data"),
            (Record::End { blake3: None }, b"end"),
            (
                Record::Quarantine { path: ByteStr(b"q".to_vec()), offset: None, reason: "r".into(), stored: false },
                b"quarantine",
            ),
        ];
        for (rec, kind) in all {
            let line = serde_json::to_vec(&rec).unwrap();
            assert_eq!(record_kind(&line), Some(kind), "{}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn records_round_trip() {
        let r = BlobLoc { pack: PackId::fresh(), seg: 3, offset: 8, raw_len: 20 };
        let recs = vec![
            Record::Dir { path: ByteStr(b"a/cur".to_vec()), mode: 0o700, mtime: 5 },
            Record::File {
                path: ByteStr(b"a/cur/x\xff:2,S".to_vec()),
                kind: FileKind::Maildir,
                size: 20,
                mode: 0o600,
                mtime: -3,
                ctime: Some(7),
                maildir: Some(MaildirInfo { sub: "cur".into(), flags: "S".into(), ..Default::default() }),
            },
            Record::Msg {
                offset: 0,
                from: ByteStr(b"From x\r\n".to_vec()),
                parts: vec![Part { k: PartKind::Header, blobs: vec![r], data: None, recipe: None }],
                trail: ByteStr::default(),
                blake3: ContentId::of(b"y"),
                len: 20,
                flags: None,
            },
            Record::End { blake3: None },
            Record::Quarantine {
                path: ByteStr(b"a/cur/x\xff:2,S".to_vec()),
                offset: Some(0),
                reason: "a note".into(),
                stored: true,
            },
            Record::Quarantine {
                path: ByteStr(b"a/new/y".to_vec()),
                offset: None,
                reason: "unreadable".into(),
                stored: false,
            },
        ];
        let mut w = ManifestWriter::new().unwrap();
        for rec in &recs {
            w.write(rec).unwrap();
        }
        let obj = w.finish(test_header()).unwrap();
        let m = Manifest::parse(obj.clone(), "k").unwrap();
        assert_eq!(m.header.records, 6);
        let back: Vec<Record> = m.records().unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(back, recs);
        // Carrying over reads the same lines and tells the records apart as a full parse does.
        let full: Vec<Vec<u8>> = m.records().unwrap().map(|r| r.unwrap().1).collect();
        let mut cursor = m.records().unwrap().carried();
        let mut carried = Vec::new();
        while let Some((kind, path)) = cursor.peek().unwrap() {
            carried.push((kind, path.to_vec(), cursor.line().to_vec()));
            assert_eq!(cursor.peek().unwrap().unwrap().0, kind, "peeking again stays on the record");
            cursor.advance();
        }
        assert_eq!(carried.iter().map(|c| c.2.clone()).collect::<Vec<_>>(), full);
        let kinds: Vec<(Carried, Vec<u8>)> = carried.into_iter().map(|c| (c.0, c.1)).collect();
        let file = (Carried::File { size: 20, mode: 0o600, mtime: -3, ctime: Some(7) }, b"a/cur/x\xff:2,S".to_vec());
        let other = |c| (c, Vec::new());
        let notes = [
            (Carried::Note { stored: true }, b"a/cur/x\xff:2,S".to_vec()),
            (Carried::Note { stored: false }, b"a/new/y".to_vec()),
        ];
        assert_eq!(
            kinds,
            [vec![other(Carried::Other), file, other(Carried::Msg), other(Carried::End)], notes.to_vec()].concat()
        );
        let mut broken = obj.to_vec();
        let n = broken.len();
        broken[n - 3] ^= 0xff;
        assert!(Manifest::parse(Bytes::from(broken), "k").is_err());
    }

    /// A writer that compares with the previous pass's records instead of compressing them makes the same manifest
    /// as one that does not, whether the records are the same, differ early or late, or are fewer or more.
    #[test]
    fn a_writer_against_the_previous_pass_makes_the_same_manifest() {
        let rec = |i: usize, tag: &str| Record::Dir {
            path: ByteStr(format!("{tag}/{i:09}/cur").into_bytes()),
            mode: 0o700,
            mtime: i as i64,
        };
        let plain = |recs: &[Record]| {
            let mut w = ManifestWriter::new().unwrap();
            for r in recs {
                w.write(r).unwrap();
            }
            w
        };
        // Past DEFER_MAX, so that the spool runs (and compares) before the end.
        let n = 100_000;
        let base: Vec<Record> = (0..n).map(|i| rec(i, "folder")).collect();
        let prev = Manifest::parse(plain(&base).finish(test_header()).unwrap(), "prev").unwrap();
        let changed = |at: usize| {
            let mut v = base.clone();
            v[at] = rec(at, "other");
            v
        };
        let cases: Vec<(&str, Vec<Record>)> = vec![
            ("the same", base.clone()),
            ("changed at the start", changed(5)),
            // Found by a comparison during the pass, after blocks already matched (eagerly; lazily the first
            // comparison, at DEFER_MAX, already sees it).
            ("changed in the middle", changed(n / 2)),
            // Found during the pass after matching, in either mode.
            ("changed at 80 %", changed(n * 4 / 5)),
            ("changed in the last block", changed(n - 3)),
            ("fewer", base[..n - 1000].to_vec()),
            ("a few more", base.iter().cloned().chain((0..10).map(|i| rec(i, "new"))).collect()),
            // The previous records end during the pass, after matching.
            ("many more", base.iter().cloned().chain((0..5000).map(|i| rec(i, "new"))).collect()),
            ("none", Vec::new()),
        ];
        let during_pass = ["changed at 80 %", "many more"];
        for ((what, recs), eager, whole) in
            cases.iter().flat_map(|c| [(c, false, false), (c, true, false), (c, false, true), (c, true, true)])
        {
            let (case, recs) = (*what, recs.clone());
            let what = format!("{case}, eager {eager}, in pieces of 1 MiB {whole}");
            let mut w = ManifestWriter::against_with(&prev, eager).unwrap();
            if whole {
                // Carried files hand over many records at once.
                let lines: Vec<u8> = recs
                    .iter()
                    .flat_map(|r| {
                        let mut l = serde_json::to_vec(r).unwrap();
                        l.push(b'\n');
                        l
                    })
                    .collect();
                let mut rest = &lines[..];
                while !rest.is_empty() {
                    let mut cut = rest.len().min(1 << 20);
                    while cut < rest.len() && rest[cut - 1] != b'\n' {
                        cut += 1;
                    }
                    let count = rest[..cut].iter().filter(|&&c| c == b'\n').count() as u64;
                    w.write_lines(&rest[..cut], count).unwrap();
                    rest = &rest[cut..];
                }
            } else {
                for r in &recs {
                    w.write(r).unwrap();
                }
            }
            let want = plain(&recs);
            assert_eq!(w.records_hash(), want.records_hash(), "{what}");
            assert_eq!(w.records(), recs.len() as u64, "{what}");
            if case == "the same" {
                assert!(w.enc.is_none(), "records the same as before are never compressed");
                assert!(w.same.as_ref().unwrap().matched > DEFER_MAX as u64, "the spool compared them");
                // Eagerly, a block at a time from the start; otherwise from DEFER_MAX on.
                let held = if eager { 2 * HASH_BLOCK } else { 2 * DEFER_MAX };
                assert!(w.pending.capacity() <= held, "{what}: {} bytes held", w.pending.capacity());
                assert_eq!(Some(w.records_hash()), prev.header.records_blake3);
            }
            if during_pass.contains(&case) || (eager && case == "changed in the middle") {
                assert!(w.same.is_none() && w.enc.is_some(), "{what}: the difference is found before the end");
            }
            let got = Manifest::parse(w.finish(test_header()).unwrap(), "got").unwrap();
            assert_eq!(got.header.records_blake3, Some(want.records_hash()), "{what}");
            let back: Vec<Record> = got.records().unwrap().map(|r| r.unwrap().0).collect();
            assert_eq!(back, recs, "{what}");
            assert_eq!(got.body, Manifest::parse(want.finish(test_header()).unwrap(), "want").unwrap().body, "{what}");
        }
        // A small previous pass is only hashed, as without one: its records are not even decompressed.
        let small = Manifest::parse(plain(&base[..100]).finish(test_header()).unwrap(), "small").unwrap();
        let mut w = ManifestWriter::against(&small).unwrap();
        for r in &base[..100] {
            w.write(r).unwrap();
        }
        let same = w.same.as_ref().unwrap();
        assert!(!same.eager && same.records.is_none());
        assert_eq!(Some(w.records_hash()), small.header.records_blake3);
    }

    /// Records are held uncompressed up to `DEFER_MAX`, then spooled: a manifest on either side of that, and records
    /// handed over in pieces of any size, hash and read back the same.
    #[test]
    fn large_manifests_spool_and_hash_the_same_however_written() {
        for n in [10usize, 100_000] {
            let recs: Vec<Record> = (0..n)
                .map(|i| Record::Dir {
                    path: ByteStr(format!("folder/{i:09}/cur").into_bytes()),
                    mode: 0o700,
                    mtime: i as i64,
                })
                .collect();
            let lines: Vec<u8> = recs
                .iter()
                .flat_map(|r| {
                    let mut line = serde_json::to_vec(r).unwrap();
                    line.push(b'\n');
                    line
                })
                .collect();
            // One record at a time, and everything in one piece.
            let mut one = ManifestWriter::new().unwrap();
            for r in &recs {
                one.write(r).unwrap();
            }
            let mut all = ManifestWriter::new().unwrap();
            all.write_lines(&lines, n as u64).unwrap();
            assert_eq!(one.records_hash(), ContentId::of(&lines));
            assert_eq!(all.records_hash(), ContentId::of(&lines));
            assert_eq!(n > 10, lines.len() > DEFER_MAX, "the large case spools before the end");
            for w in [one, all] {
                let m = Manifest::parse(w.finish(test_header()).unwrap(), "k").unwrap();
                assert_eq!(m.header.records, n as u64);
                assert_eq!(m.header.records_blake3, Some(ContentId::of(&lines)));
                let back: Vec<Record> = m.records().unwrap().map(|r| r.unwrap().0).collect();
                assert_eq!(back, recs);
            }
        }
    }
}
