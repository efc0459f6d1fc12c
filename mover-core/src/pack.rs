//! Packs: many small compressed blobs in one object, so a mailbox of 50,000 messages costs a few PUTs.
//!
//! A pack object is `MVPACK01`, the stored blobs back to back, a copy of the pack index, the index length (u64 LE)
//! and `MVPKEND1`. The same index is also written as its own small object (`index/<id>.idx`) so that the dedupe
//! index can be loaded without reading packs; the copy inside the pack makes a pack readable on its own if its index
//! object is ever lost. Every blob is found with one range read: the manifest records pack, offset and length.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::compress::Codec;
use crate::error::{Error, Result};
use crate::id::{ContentId, PackId};

/// Magic at the start of a pack object.
pub const PACK_MAGIC: &[u8; 8] = b"MVPACK01";
/// Magic at the end of a pack object.
pub const PACK_END_MAGIC: &[u8; 8] = b"MVPKEND1";
/// Magic at the start of a pack index.
pub const INDEX_MAGIC: &[u8; 8] = b"MVIDX001";
const ENTRY_LEN: usize = 32 + 8 + 8 + 8 + 1;

/// Where a blob is stored and how to decode it: everything needed to read it back with one range read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobLoc {
    /// The pack holding the blob.
    #[serde(rename = "p")]
    pub pack: PackId,
    /// Offset of the stored bytes inside the pack object.
    #[serde(rename = "o")]
    pub offset: u64,
    /// Length of the stored (possibly compressed) bytes.
    #[serde(rename = "l")]
    pub len: u64,
    /// Length of the raw bytes.
    #[serde(rename = "r")]
    pub raw_len: u64,
    /// How the stored bytes are encoded.
    #[serde(rename = "c", with = "codec_u8")]
    pub codec: Codec,
}

mod codec_u8 {
    use super::Codec;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(c: &Codec, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*c as u8)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Codec, D::Error> {
        Codec::from_u8(u8::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One blob's entry in a pack index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The blob.
    pub id: ContentId,
    /// Where it is.
    pub loc: BlobLoc,
}

/// Accumulates stored blobs into one pack.
#[derive(Debug)]
pub struct PackWriter {
    id: PackId,
    buf: BytesMut,
    entries: Vec<IndexEntry>,
}

/// A finished pack, ready to upload: the pack object and its index object.
#[derive(Debug, Clone)]
pub struct SealedPack {
    /// The pack's id.
    pub id: PackId,
    /// The pack object.
    pub data: Bytes,
    /// The index object (also embedded at the end of `data`).
    pub index: Bytes,
    /// The entries of the index.
    pub entries: Vec<IndexEntry>,
}

impl PackWriter {
    /// A new, empty pack.
    pub fn new(id: PackId, capacity: usize) -> Self {
        // Room for the blobs, plus the index and trailer that `seal` appends (57 bytes per entry; a pack of small
        // blobs rarely holds more than a few per KiB).
        let mut buf = BytesMut::with_capacity(capacity + capacity / 8 + 4096);
        buf.put_slice(PACK_MAGIC);
        PackWriter { id, buf, entries: Vec::new() }
    }

    /// The pack's id.
    pub fn id(&self) -> PackId {
        self.id
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append a stored blob; returns where it will be.
    pub fn add(&mut self, id: ContentId, stored: &[u8], raw_len: u64, codec: Codec) -> BlobLoc {
        let loc = BlobLoc { pack: self.id, offset: self.buf.len() as u64, len: stored.len() as u64, raw_len, codec };
        self.buf.put_slice(stored);
        self.entries.push(IndexEntry { id, loc });
        loc
    }

    /// Finish the pack: append the index and trailer.
    pub fn seal(mut self) -> SealedPack {
        let index = encode_index(&self.entries);
        self.buf.put_slice(&index);
        self.buf.put_u64_le(index.len() as u64);
        self.buf.put_slice(PACK_END_MAGIC);
        SealedPack { id: self.id, data: self.buf.freeze(), index, entries: self.entries }
    }
}

/// Encode a pack index: magic, count (u32 LE), entries, and the BLAKE3 of all that.
pub fn encode_index(entries: &[IndexEntry]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + 4 + entries.len() * ENTRY_LEN + 32);
    b.put_slice(INDEX_MAGIC);
    b.put_u32_le(entries.len() as u32);
    for e in entries {
        b.put_slice(e.id.as_bytes());
        b.put_u64_le(e.loc.offset);
        b.put_u64_le(e.loc.len);
        b.put_u64_le(e.loc.raw_len);
        b.put_u8(e.loc.codec as u8);
    }
    let sum = blake3::hash(&b);
    b.put_slice(sum.as_bytes());
    b.freeze()
}

/// Decode a pack index of pack `pack`, checking its checksum.
pub fn decode_index(pack: PackId, data: &[u8]) -> Result<Vec<IndexEntry>> {
    let bad = |why: &str| Error::corrupt(format!("index of pack {pack}: {why}"));
    if data.len() < 8 + 4 + 32 || &data[..8] != INDEX_MAGIC {
        return Err(bad("not a mover pack index"));
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err(bad("checksum mismatch"));
    }
    let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    if body.len() != 12 + count * ENTRY_LEN {
        return Err(bad("length does not match entry count"));
    }
    let mut out = Vec::with_capacity(count);
    for e in body[12..].chunks_exact(ENTRY_LEN) {
        let id = ContentId::from_bytes(e[..32].try_into().expect("32 bytes"));
        let u = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().expect("8 bytes"));
        let loc = BlobLoc { pack, offset: u(32), len: u(40), raw_len: u(48), codec: Codec::from_u8(e[56])? };
        out.push(IndexEntry { id, loc });
    }
    Ok(out)
}

/// Read the index embedded at the end of a whole pack object (recovery when an index object is missing).
pub fn index_from_pack(pack: PackId, data: &[u8]) -> Result<Vec<IndexEntry>> {
    let bad = |why: &str| Error::corrupt(format!("pack {pack}: {why}"));
    if data.len() < 8 + 16 || &data[..8] != PACK_MAGIC || &data[data.len() - 8..] != PACK_END_MAGIC {
        return Err(bad("not a mover pack"));
    }
    let ilen = u64::from_le_bytes(data[data.len() - 16..data.len() - 8].try_into().expect("8 bytes")) as usize;
    let start = (data.len() - 16).checked_sub(ilen).ok_or_else(|| bad("index length out of range"))?;
    decode_index(pack, &data[start..data.len() - 16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip() {
        let mut w = PackWriter::new(PackId::fresh(), 1024);
        let a = w.add(ContentId::of(b"a"), b"aaaa", 4, Codec::None);
        let b = w.add(ContentId::of(b"b"), b"bb", 9, Codec::Zstd);
        let sealed = w.seal();
        assert_eq!(&sealed.data[a.offset as usize..(a.offset + a.len) as usize], b"aaaa");
        assert_eq!(&sealed.data[b.offset as usize..(b.offset + b.len) as usize], b"bb");
        let idx = decode_index(sealed.id, &sealed.index).unwrap();
        assert_eq!(idx, sealed.entries);
        assert_eq!(index_from_pack(sealed.id, &sealed.data).unwrap(), sealed.entries);
        let mut broken = sealed.index.to_vec();
        broken[20] ^= 1;
        assert!(decode_index(sealed.id, &broken).is_err());
    }
}
