//! Stage 2: split, hash and compress pieces (runs on rayon, order kept by the caller).
//!
//! A message becomes its header block and its body; when MIME splitting is on, base64 and quoted-printable part
//! bodies that re-encode exactly are stored decoded ([`crate::mime`]), the raw bytes between them as body blobs, or
//! inline when they are small. Every blob is hashed here; large blobs are also compressed here (in parallel), small
//! ones are compressed by the collector in segments of their kind ([`crate::pack`]).

use bytes::Bytes;

use super::*;
use crate::compress::{self, Codec};
use crate::mime;
use crate::source::mbox;

/// Raw pieces between attachments up to this size are kept inline in the manifest.
pub(super) const INLINE_MAX: usize = 192;

/// Messages up to this size get their header block's content address and their own hash from one hasher.
const SHARED_HASH_MAX: usize = 2048;

pub(super) struct Processor<'a> {
    pub(super) index: &'a LazyIndex,
    pub(super) level: i32,
    pub(super) max_blob: usize,
    pub(super) mime: bool,
    /// Blobs of at least this many bytes are compressed here, as segments of their own; smaller ones go to the
    /// collector raw, to be compressed together with others of their kind.
    pub(super) solo_min: usize,
}

impl Processor<'_> {
    pub(super) fn blobs(&self, data: &Bytes) -> Result<Vec<BlobOut>> {
        let mut out = Vec::with_capacity(1);
        for r in split::chunks(data.len(), self.max_blob) {
            let raw = data.slice(r);
            let id = ContentId::of(&raw);
            out.push(self.blob(raw, id)?);
        }
        Ok(out)
    }

    /// One blob whose id the caller has computed.
    fn blob(&self, raw: Bytes, id: ContentId) -> Result<BlobOut> {
        let data = if raw.len() < self.solo_min {
            BlobData::Raw(raw.clone())
        } else if self.index.get().contains(&id) {
            BlobData::Known
        } else {
            match compress::compress(&raw, self.level)? {
                // The compressed buffer comes from the pool; it goes back when the collector has packed it.
                Some(c) => BlobData::Stored(Codec::Zstd, crate::buffers::bytes(c)),
                None => BlobData::Stored(Codec::None, raw.clone()),
            }
        };
        Ok(BlobOut { id, raw_len: raw.len() as u64, data })
    }

    fn raw_part(&self, kind: PartKind, data: Bytes) -> Result<PartOut> {
        let original_len = data.len() as u64;
        let (blobs, inline) = if kind == PartKind::Body && data.len() <= INLINE_MAX {
            (Vec::new(), Some(data))
        } else {
            (self.blobs(&data)?, None)
        };
        Ok(PartOut { kind, blobs, inline, recipe: None, original_len })
    }

    /// The parts of a message: header block, then body (raw, or raw pieces and decoded attachments).
    ///
    /// `whole`, when given, is fed the header block. BLAKE3 of a prefix is a snapshot of a hasher fed that prefix,
    /// so the header block's content address then comes from the same pass as the whole message's hash (which the
    /// caller finishes with the body), and the header block is hashed once instead of twice.
    fn message_parts(
        &self,
        msg: &Bytes,
        whole: Option<&mut blake3::Hasher>,
    ) -> Result<(Vec<PartOut>, mime::SplitStats)> {
        let hlen = split::header_len(msg);
        let header = match whole {
            Some(whole) if hlen > 0 && hlen <= self.max_blob => {
                whole.update(&msg[..hlen]);
                let blob = self.blob(msg.slice(..hlen), ContentId::from_hash(whole.finalize()))?;
                PartOut {
                    kind: PartKind::Header,
                    blobs: vec![blob],
                    inline: None,
                    recipe: None,
                    original_len: hlen as u64,
                }
            }
            Some(whole) => {
                whole.update(&msg[..hlen]);
                self.raw_part(PartKind::Header, msg.slice(..hlen))?
            }
            None => self.raw_part(PartKind::Header, msg.slice(..hlen))?,
        };
        let mut parts = vec![header];
        if hlen == msg.len() {
            return Ok((parts, mime::SplitStats::default()));
        }
        let body = msg.slice(hlen..);
        let (pieces, stats) = if self.mime && body.len() >= mime::MIN_ENCODED_LEN {
            mime::split_with_stats(msg)
        } else {
            (Vec::new(), mime::SplitStats::default())
        };
        if !pieces.iter().any(|p| matches!(p, mime::Piece::Encoded { .. })) {
            // Nothing stored decoded: the body is one raw part (as blobs, however small: bodies dedupe).
            parts.push(PartOut {
                kind: PartKind::Body,
                blobs: self.blobs(&body)?,
                inline: None,
                recipe: None,
                original_len: body.len() as u64,
            });
            return Ok((parts, stats));
        }
        // Walk the pieces; the header block (already a part) is cut off the front of the first raw piece.
        let mut at = 0usize;
        let mut pending: Option<(usize, usize)> = None; // raw bytes of msg not yet emitted, as a range
        let flush = |pending: &mut Option<(usize, usize)>, parts: &mut Vec<PartOut>| -> Result<()> {
            if let Some((a, b)) = pending.take()
                && b > a
            {
                parts.push(self.raw_part(PartKind::Body, msg.slice(a..b))?);
            }
            Ok(())
        };
        for piece in pieces {
            let len = piece.original_len();
            match piece {
                mime::Piece::Raw(_) => {
                    let start = at.max(hlen);
                    let end = at + len;
                    if end > start {
                        pending = Some((pending.map(|p| p.0).unwrap_or(start), end));
                    }
                }
                mime::Piece::Encoded { decoded, recipe, original_len } => {
                    if at < hlen {
                        // Cannot happen (the header block is never a part body); keep the message raw if it does.
                        let mut parts = vec![self.raw_part(PartKind::Header, msg.slice(..hlen))?];
                        parts.push(self.raw_part(PartKind::Body, body)?);
                        return Ok((parts, stats));
                    }
                    flush(&mut pending, &mut parts)?;
                    parts.push(PartOut {
                        kind: PartKind::Attachment,
                        blobs: self.blobs(&crate::buffers::bytes(decoded))?,
                        inline: None,
                        recipe: Some(recipe),
                        original_len: original_len as u64,
                    });
                }
            }
            at += len;
        }
        flush(&mut pending, &mut parts)?;
        debug_assert_eq!(at, msg.len(), "mime pieces cover the message");
        Ok((parts, stats))
    }

    pub(super) fn process(&self, ev: Event) -> Result<Event> {
        let Event::PieceIn(p) = ev else { return Ok(ev) };
        Ok(Event::PieceOut(match p {
            PieceIn::Msg { offset, from, msg, trail, mapped, mbox } => {
                // A mapped file can change under us: hash and compress a private copy, so that the id always
                // matches the stored bytes (a torn copy is caught by the version check at the end of the file).
                // The map goes as soon as it is copied: its pages count in the process's memory while it is held.
                let msg = if mapped { copy_out(msg) } else { msg };
                // Up to two BLAKE3 chunks, a hasher is as fast as `blake3::hash` and the header block is hashed
                // once (Enron: 89 -> 80 ms of hashing); on longer messages `blake3::hash` hashes chunks in
                // parallel (SIMD), which a hasher fed the header block first does less well.
                let mut whole = (msg.len() <= SHARED_HASH_MAX).then(blake3::Hasher::new);
                let (parts, mime) = self.message_parts(&msg, whole.as_mut())?;
                let hlen = parts[0].original_len as usize;
                let flags = if mbox { mbox::status_flags(&msg[..hlen]) } else { None };
                let hash = match whole.as_mut() {
                    _ if parts.len() == 1 && parts[0].blobs.len() == 1 => parts[0].blobs[0].id,
                    Some(whole) => ContentId::from_hash(whole.update(&msg[hlen..]).finalize()),
                    None => ContentId::of(&msg),
                };
                debug_assert_eq!(hash, ContentId::of(&msg));
                let mime = Box::new(mime);
                PieceOut::Msg { offset, from, trail, parts, hash, len: msg.len() as u64, flags, mime }
            }
            PieceIn::Data { offset, data, mapped } => {
                let data = if mapped { copy_out(data) } else { data };
                PieceOut::Data { offset, len: data.len() as u64, blobs: self.blobs(&data)? }
            }
        }))
    }
}

/// A private copy of mapped bytes, dropping the map's view.
fn copy_out(mapped: Bytes) -> Bytes {
    Bytes::copy_from_slice(&mapped)
}
