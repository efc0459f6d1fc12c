//! Stage 2: split, hash and compress pieces (runs on rayon, order kept by the caller).
//!
//! A message becomes its header block and its body (both compressed with the destination's dictionaries when
//! there are some); when MIME splitting is on, base64 and quoted-printable part bodies that re-encode exactly are stored
//! decoded ([`crate::mime`]), the raw bytes between them as body blobs, or inline when they are small.

use bytes::Bytes;

use super::*;
use crate::compress::{self, Codec, Dictionary};
use crate::mime;
use crate::source::mbox;

/// Raw pieces between attachments up to this size are kept inline in the manifest.
pub(super) const INLINE_MAX: usize = 192;

pub(super) struct Processor<'a> {
    pub(super) index: &'a BlobIndex,
    pub(super) level: i32,
    pub(super) max_blob: usize,
    pub(super) mime: bool,
    pub(super) dicts: crate::dictionary::Dictionaries,
}

impl Processor<'_> {
    pub(super) fn blobs(&self, data: &[u8], dict: Option<&'static Dictionary>) -> Result<Vec<BlobOut>> {
        let mut out = Vec::with_capacity(1);
        for r in split::chunks(data.len(), self.max_blob) {
            let raw = &data[r];
            let id = ContentId::of(raw);
            let stored = if self.index.contains(&id) {
                None
            } else {
                let compressed = match dict {
                    Some(d) => compress::compress_with_dict(raw, d)?.map(|c| (Codec::ZstdDict, c)),
                    None => compress::compress(raw, self.level)?.map(|c| (Codec::Zstd, c)),
                };
                Some(match compressed {
                    Some((codec, c)) => (codec, Bytes::from(c)),
                    None => (Codec::None, Bytes::copy_from_slice(raw)),
                })
            };
            out.push(BlobOut { id, raw_len: raw.len() as u64, stored });
        }
        Ok(out)
    }

    fn dict_for(&self, kind: PartKind, len: usize) -> Option<&'static Dictionary> {
        match kind {
            PartKind::Header => self.dicts.headers,
            PartKind::Body if len <= crate::dictionary::SMALL_BODY_MAX => self.dicts.bodies,
            _ => None,
        }
    }

    fn raw_part(&self, kind: PartKind, data: &[u8]) -> Result<PartOut> {
        let (blobs, inline) = if kind == PartKind::Body && data.len() <= INLINE_MAX {
            (Vec::new(), Some(Bytes::copy_from_slice(data)))
        } else {
            (self.blobs(data, self.dict_for(kind, data.len()))?, None)
        };
        Ok(PartOut { kind, blobs, inline, recipe: None, original_len: data.len() as u64 })
    }

    /// The parts of a message: header block, then body (raw, or raw pieces and decoded attachments).
    fn message_parts(&self, msg: &[u8]) -> Result<(Vec<PartOut>, mime::SplitStats)> {
        let hlen = split::header_len(msg);
        let mut parts = vec![self.raw_part(PartKind::Header, &msg[..hlen])?];
        if hlen == msg.len() {
            return Ok((parts, mime::SplitStats::default()));
        }
        let body = &msg[hlen..];
        let (pieces, stats) = if self.mime && body.len() >= mime::MIN_ENCODED_LEN {
            mime::split_with_stats(msg)
        } else {
            (Vec::new(), mime::SplitStats::default())
        };
        if !pieces.iter().any(|p| matches!(p, mime::Piece::Encoded { .. })) {
            // Nothing stored decoded: the body is one raw part (as blobs, however small: bodies dedupe).
            parts.push(PartOut {
                kind: PartKind::Body,
                blobs: self.blobs(body, self.dict_for(PartKind::Body, body.len()))?,
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
                parts.push(self.raw_part(PartKind::Body, &msg[a..b])?);
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
                        let mut parts = vec![self.raw_part(PartKind::Header, &msg[..hlen])?];
                        parts.push(self.raw_part(PartKind::Body, body)?);
                        return Ok((parts, stats));
                    }
                    flush(&mut pending, &mut parts)?;
                    parts.push(PartOut {
                        kind: PartKind::Attachment,
                        blobs: self.blobs(&decoded, None)?,
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
                let msg = if mapped { Bytes::copy_from_slice(&msg) } else { msg };
                let (parts, mime) = self.message_parts(&msg)?;
                let flags = if mbox { mbox::status_flags(&msg[..parts[0].original_len as usize]) } else { None };
                let single = parts.len() == 1 && parts[0].blobs.len() == 1;
                let hash = if single { parts[0].blobs[0].id } else { ContentId::of(&msg) };
                let mime = Box::new(mime);
                PieceOut::Msg { offset, from, trail, parts, hash, len: msg.len() as u64, flags, mime }
            }
            PieceIn::Data { offset, data, mapped } => {
                let data = if mapped { Bytes::copy_from_slice(&data) } else { data };
                PieceOut::Data { offset, len: data.len() as u64, blobs: self.blobs(&data, None)? }
            }
        }))
    }
}
