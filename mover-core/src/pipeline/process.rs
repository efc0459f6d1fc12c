//! Stage 2: split, hash and compress pieces (runs on rayon, order kept by the caller).

use bytes::Bytes;

use super::*;
use crate::compress::{self, Codec};
use crate::source::mbox;

pub(super) struct Processor<'a> {
    pub(super) index: &'a BlobIndex,
    pub(super) level: i32,
    pub(super) max_blob: usize,
}

impl Processor<'_> {
    pub(super) fn blobs(&self, data: &[u8]) -> Result<Vec<BlobOut>> {
        let mut out = Vec::with_capacity(1);
        for r in split::chunks(data.len(), self.max_blob) {
            let raw = &data[r];
            let id = ContentId::of(raw);
            let stored = if self.index.contains(&id) {
                None
            } else {
                Some(match compress::compress(raw, self.level)? {
                    Some(c) => (Codec::Zstd, Bytes::from(c)),
                    None => (Codec::None, Bytes::copy_from_slice(raw)),
                })
            };
            out.push(BlobOut { id, raw_len: raw.len() as u64, stored });
        }
        Ok(out)
    }

    pub(super) fn process(&self, ev: Event) -> Result<Event> {
        let Event::PieceIn(p) = ev else { return Ok(ev) };
        Ok(Event::PieceOut(match p {
            PieceIn::Msg { offset, from, msg, trail, mapped, mbox } => {
                // A mapped file can change under us: hash and compress a private copy, so that the id always
                // matches the stored bytes (a torn copy is caught by the version check at the end of the file).
                let msg = if mapped { Bytes::copy_from_slice(&msg) } else { msg };
                let hlen = split::header_len(&msg);
                let flags = if mbox { mbox::status_flags(&msg[..hlen]) } else { None };
                let mut parts = vec![(PartKind::Header, self.blobs(&msg[..hlen])?)];
                if hlen < msg.len() {
                    parts.push((PartKind::Body, self.blobs(&msg[hlen..])?));
                }
                let hash = if parts.iter().map(|p| p.1.len()).sum::<usize>() == 1 {
                    parts[0].1[0].id
                } else {
                    ContentId::of(&msg)
                };
                PieceOut::Msg { offset, from, trail, parts, hash, len: msg.len() as u64, flags }
            }
            PieceIn::Data { offset, data, mapped } => {
                let data = if mapped { Bytes::copy_from_slice(&data) } else { data };
                PieceOut::Data { offset, len: data.len() as u64, blobs: self.blobs(&data)? }
            }
        }))
    }
}
