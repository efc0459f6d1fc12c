//! Stage 3: dedupe against the index, pack new blobs, spool each file's records until the file is known not to have
//! changed while it was read, then append them to the manifest.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::compress::{self, Codec};
use crate::id::PackId;
use crate::manifest::Part;
use crate::pack::{BlobLoc, PackWriter};
use crate::source::{Entry, Source};

use super::process::Processor;
use super::read::Reader;
use super::upload::Uploader;

/// Segment kinds: small blobs of one kind are compressed together (header blocks with header blocks, …).
const KINDS: usize = 4;

fn kind_slot(kind: Option<PartKind>) -> usize {
    match kind {
        Some(PartKind::Header) => 0,
        Some(PartKind::Body) => 1,
        Some(PartKind::Attachment) => 2,
        None => 3,
    }
}

/// A segment being filled: its number is reserved in the current pack.
pub(super) struct OpenSegment {
    seg: u32,
    raw: Vec<u8>,
    blobs: Vec<(ContentId, u64, u64)>,
}

/// A full segment being compressed on the worker pool.
pub(super) struct PendingSegment {
    seg: u32,
    slot: usize,
    raw_len: u64,
    blobs: Vec<(ContentId, u64, u64)>,
    done: std::sync::mpsc::Receiver<Result<(Codec, Vec<u8>)>>,
}

pub(super) struct Packer {
    pub(super) index: Arc<LazyIndex>,
    /// Full segments are compressed here (the pipeline's worker pool), at most `max_pending` at a time.
    pub(super) pool: Arc<rayon::ThreadPool>,
    pub(super) pending: std::collections::VecDeque<PendingSegment>,
    pub(super) max_pending: usize,
    pub(super) current: Option<PackWriter>,
    /// Where the current pack is streamed as it grows, when the store can ([`crate::store::Store::writer`]);
    /// otherwise the pack is held in memory and uploaded whole when sealed.
    pub(super) sink: Option<Box<dyn crate::store::ObjectWriter>>,
    pub(super) open: [Option<OpenSegment>; KINDS],
    pub(super) pack_target: usize,
    pub(super) segment_target: usize,
    pub(super) standalone_min: usize,
    pub(super) level: i32,
    pub(super) dicts: crate::dictionary::Dictionaries,
    pub(super) uploader: Uploader,
    /// Stored bytes by kind (header, body, attachment, other), counted when segments are written.
    pub(super) stored_by_kind: [u64; KINDS],
    /// A write of the current pack failed: its table may name bytes that are not in its object, so it is never
    /// sealed (the error fails the pass; this makes sure of it).
    pub(super) failed: bool,
}

impl Packer {
    /// Pack `blob` (or find it in the index); `kind` is what it is part of (`None`: not a message).
    pub(super) fn add(&mut self, blob: BlobOut, kind: Option<PartKind>, stats: &mut PassStats) -> Result<BlobRef> {
        let k = match kind {
            Some(PartKind::Header) => &mut stats.breakdown.headers,
            Some(PartKind::Body) => &mut stats.breakdown.bodies,
            Some(PartKind::Attachment) => &mut stats.breakdown.attachments,
            None => &mut stats.breakdown.other,
        };
        if let Some(loc) = self.index.get().get(&blob.id) {
            k.deduplicated_bytes += blob.raw_len;
            stats.deduplicated_blobs += 1;
            stats.deduplicated_bytes += blob.raw_len;
            return Ok(loc);
        }
        k.unique_bytes += blob.raw_len;
        stats.new_blobs += 1;
        stats.new_raw_bytes += blob.raw_len;
        let slot = kind_slot(kind);
        let loc = match blob.data {
            BlobData::Known => {
                return Err(Error::new(ErrorKind::Other, format!("blob {} vanished from the index", blob.id)));
            }
            BlobData::Stored(codec, stored) => {
                self.stored_by_kind[slot] += stored.len() as u64;
                if stored.len() >= self.standalone_min {
                    // A pack of its own, streamed to its object where the store can (not copied into a buffer),
                    // unless the store does more for a put of it (S3 resumes it after a crash: its name is its
                    // content, so the next pass puts it again).
                    let pack = PackId::for_large_blob(&blob.id, &stored, codec as u8);
                    let store = &self.uploader.store;
                    let mut sink = if store.resumes_puts() {
                        None
                    } else {
                        store.writer(&layout::pack_key(&pack), PutMode::Create)?
                    };
                    let mut w = PackWriter::new(pack, if sink.is_some() { 0 } else { stored.len() });
                    let seg = w.reserve();
                    put_segment(
                        &mut w,
                        sink.as_mut(),
                        seg,
                        &stored,
                        blob.raw_len,
                        codec,
                        &[(blob.id, 0, blob.raw_len)],
                    )?;
                    self.uploader.upload(w.seal(), sink)?;
                    BlobLoc { pack, seg, offset: 0, raw_len: blob.raw_len }
                } else {
                    self.make_room(stored.len())?;
                    let w = self.writer()?;
                    let (pack, seg) = (w.id(), w.reserve());
                    self.put(seg, &stored, blob.raw_len, codec, &[(blob.id, 0, blob.raw_len)])?;
                    BlobLoc { pack, seg, offset: 0, raw_len: blob.raw_len }
                }
            }
            BlobData::Raw(raw) => {
                if self.open[slot]
                    .as_ref()
                    .is_some_and(|o| !o.raw.is_empty() && o.raw.len() + raw.len() > self.segment_target)
                {
                    self.close_segment(slot)?;
                }
                if self.open[slot].is_none() {
                    self.make_room(0)?;
                    let seg = self.writer()?.reserve();
                    let raw = crate::buffers::take(self.segment_target);
                    self.open[slot] = Some(OpenSegment { seg, raw, blobs: Vec::new() });
                }
                let pack = self.writer()?.id();
                let o = self.open[slot].as_mut().expect("opened above");
                let offset = o.raw.len() as u64;
                o.raw.extend_from_slice(&raw);
                o.blobs.push((blob.id, offset, blob.raw_len));
                let loc = BlobLoc { pack, seg: o.seg, offset, raw_len: blob.raw_len };
                if o.raw.len() >= self.segment_target {
                    self.close_segment(slot)?;
                }
                loc
            }
        };
        self.index.get().insert_if_absent(blob.id, loc);
        Ok(loc)
    }

    /// Bytes a pack's buffer is allocated for: the target, plus room for every segment that may still be open or
    /// compressing when the target is reached (a reallocation would double the memory the buffer holds).
    fn pack_capacity(&self) -> usize {
        self.pack_target + (KINDS + self.max_pending) * self.segment_target
    }

    /// The current pack, started (and its object opened for streaming, where the store can) if there is none.
    fn writer(&mut self) -> Result<&mut PackWriter> {
        if self.current.is_none() {
            let id = PackId::fresh();
            self.sink = self.uploader.store.writer(&layout::pack_key(&id), PutMode::Create)?;
            // A streamed pack's segments go straight to its object: its buffer only ever holds the magic.
            let capacity = if self.sink.is_some() { 0 } else { self.pack_capacity() };
            self.current = Some(PackWriter::new(id, capacity));
        }
        Ok(self.current.as_mut().expect("set above"))
    }

    /// Write reserved segment `seg` of the current pack.
    fn put(
        &mut self,
        seg: u32,
        stored: &[u8],
        raw_len: u64,
        codec: Codec,
        blobs: &[(ContentId, u64, u64)],
    ) -> Result<()> {
        let w = self.current.as_mut().expect("a segment belongs to the current pack");
        let written = put_segment(w, self.sink.as_mut(), seg, stored, raw_len, codec, blobs);
        self.failed |= written.is_err();
        written
    }

    /// Seal the current pack first if it is full (its written, open and compressing segments, counted raw, reach
    /// the pack target), or if `more` stored bytes would not fit its buffer.
    fn make_room(&mut self, more: usize) -> Result<()> {
        let open: usize = self.open.iter().flatten().map(|o| o.raw.len()).sum::<usize>()
            + self.pending.iter().map(|p| p.raw_len as usize).sum::<usize>();
        let capacity = self.pack_capacity();
        if self.current.as_ref().is_some_and(|w| {
            let committed = w.len() + open;
            !w.is_empty() && (committed >= self.pack_target || committed + more > capacity)
        }) {
            self.seal()?;
        }
        Ok(())
    }

    /// Hand the open segment of kind `slot` to the worker pool to be compressed (with the dictionary of its kind).
    fn close_segment(&mut self, slot: usize) -> Result<()> {
        let Some(o) = self.open[slot].take() else { return Ok(()) };
        let dict = match slot {
            0 => self.dicts.headers,
            1 => self.dicts.bodies,
            _ => None,
        };
        let level = self.level;
        let raw_len = o.raw.len() as u64;
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let raw = o.raw;
        self.pool.spawn(move || {
            let compressed = match dict {
                Some(d) => compress::compress_with_dict(&raw, d).map(|c| c.map(|c| (Codec::ZstdDict, c))),
                None => compress::compress(&raw, level).map(|c| c.map(|c| (Codec::Zstd, c))),
            };
            let _ = tx.send(compressed.map(|c| match c {
                Some(c) => {
                    crate::buffers::give(raw);
                    c
                }
                None => (Codec::None, raw),
            }));
        });
        self.pending.push_back(PendingSegment { seg: o.seg, slot, raw_len, blobs: o.blobs, done });
        self.write_done(self.max_pending)
    }

    /// Write compressed segments into the current pack, oldest first, until at most `keep` are still pending
    /// (waiting for them when needed). A failure leaves a reserved segment unwritten: the pack is never sealed.
    fn write_done(&mut self, keep: usize) -> Result<()> {
        let written = self.write_pending(keep);
        self.failed |= written.is_err();
        written
    }

    fn write_pending(&mut self, keep: usize) -> Result<()> {
        while let Some(front) = self.pending.front() {
            let result = if self.pending.len() > keep {
                front.done.recv().map_err(|_| Error::new(ErrorKind::Other, "a segment compression task died"))?
            } else {
                match front.done.try_recv() {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                }
            };
            let p = self.pending.pop_front().expect("front exists");
            let (codec, stored) = result?;
            self.put(p.seg, &stored, p.raw_len, codec, &p.blobs)?;
            self.stored_by_kind[p.slot] += stored.len() as u64;
            crate::buffers::give(stored);
        }
        Ok(())
    }

    /// Close the open segments and seal and upload the current pack.
    pub(super) fn seal(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::new(ErrorKind::Other, "a write of the current pack failed earlier; it is not sealed"));
        }
        for slot in 0..KINDS {
            self.close_segment(slot)?;
        }
        self.write_done(0)?;
        let sink = self.sink.take();
        if let Some(w) = self.current.take()
            && !w.is_empty()
        {
            self.uploader.upload(w.seal(), sink)?;
        }
        Ok(())
    }
}

/// Records of the file being migrated, held until the file is known not to have changed.
pub(super) struct FileSpool {
    pub(super) lines: Vec<u8>,
    pub(super) count: u64,
    pub(super) messages: u64,
    pub(super) header_bytes: u64,
    pub(super) body_bytes: u64,
    pub(super) other_bytes: u64,
    /// Decoded bytes of attachments.
    pub(super) attachment_bytes: u64,
    pub(super) attachments_deduplicated: u64,
    pub(super) mime: crate::mime::SplitStats,
    pub(super) kind: FileKind,
    pub(super) notes: Vec<(u64, String)>,
}

pub(super) fn encode(record: &Record) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(record).map_err(|e| Error::new(ErrorKind::Other, e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

pub(super) struct Collector<'a> {
    pub(super) packer: Packer,
    pub(super) manifest: ManifestWriter,
    pub(super) stats: PassStats,
    pub(super) quarantine: Vec<QuarantineItem>,
    pub(super) spool: Option<FileSpool>,
    pub(super) processor: Processor<'a>,
    pub(super) opts: &'a MigrateOptions,
    pub(super) source: &'a dyn Source,
    pub(super) source_is_single: bool,
}

impl Collector<'_> {
    pub(super) fn quarantine(&mut self, path: &[u8], offset: Option<u64>, reason: String, stored: bool) -> Result<()> {
        let record = Record::Quarantine { path: ByteStr(path.to_vec()), offset, reason: reason.clone(), stored };
        self.manifest.write(&record)?;
        self.stats.quarantined += 1;
        tracing::warn!(path = %String::from_utf8_lossy(path), ?offset, "quarantined: {reason}");
        self.quarantine.push(QuarantineItem {
            path: String::from_utf8_lossy(path).into_owned(),
            offset,
            reason,
            stored,
        });
        Ok(())
    }

    pub(super) fn handle(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Record(Record::Quarantine { path, offset, reason, stored }) => {
                self.quarantine(&path.0, offset, reason, stored)
            }
            Event::Record(r) => self.manifest.write(&r),
            Event::Reused(carry) => {
                self.manifest.write_lines(&carry.lines, carry.count)?;
                self.stats.files += carry.files;
                self.stats.unchanged_files += carry.files;
                self.stats.messages += carry.messages;
                self.stats.source_bytes += carry.size;
                for note in carry.notes {
                    // Stored in the previous pass with this note, and carried with it: reported again.
                    tracing::warn!(path = %note.path, offset = ?note.offset, "quarantined (unchanged since the previous pass): {}", note.reason);
                    self.stats.quarantined += 1;
                    self.quarantine.push(note);
                }
                if let Some(p) = &self.opts.progress {
                    p.files.fetch_add(carry.files, Ordering::Relaxed);
                    p.messages.fetch_add(carry.messages, Ordering::Relaxed);
                    p.bytes.fetch_add(carry.size, Ordering::Relaxed);
                }
                Ok(())
            }
            Event::FileStart { entry, record } => {
                let kind = match &record {
                    Record::File { kind, .. } => *kind,
                    _ => FileKind::Opaque,
                };
                drop(entry);
                self.spool = Some(FileSpool {
                    lines: encode(&record)?,
                    count: 1,
                    messages: 0,
                    header_bytes: 0,
                    body_bytes: 0,
                    other_bytes: 0,
                    attachment_bytes: 0,
                    attachments_deduplicated: 0,
                    mime: Default::default(),
                    kind,
                    notes: Vec::new(),
                });
                Ok(())
            }
            Event::PieceIn(p) => {
                let out = self.processor.process(Event::PieceIn(p))?;
                self.handle(out)
            }
            Event::PieceOut(p) => self.piece(p),
            Event::Note { offset, reason } => {
                let spool = self.spool.as_mut().ok_or_else(|| Error::new(ErrorKind::Other, "note outside a file"))?;
                spool.notes.push((offset, reason));
                Ok(())
            }
            Event::FileEnd { entry, version, hash } => self.file_end(entry, version, hash),
            Event::FileFailed { entry, offset, error } => {
                self.spool = None;
                self.quarantine(&entry.rel, offset, format!("{}: {error}", entry.abs().display()), false)
            }
        }
    }

    pub(super) fn piece(&mut self, p: PieceOut) -> Result<()> {
        if self.spool.is_none() {
            return Err(Error::new(ErrorKind::Other, "piece outside a file"));
        }
        let record = match p {
            PieceOut::Msg { offset, from, trail, parts, hash, len, flags, mime } => {
                let mut out_parts = Vec::with_capacity(parts.len());
                for part in parts {
                    let mut refs = Vec::with_capacity(part.blobs.len());
                    let mut raw = 0;
                    // Packer::add counts every blob it finds already stored: no second index lookup here.
                    let known_before = self.stats.deduplicated_blobs;
                    for b in part.blobs {
                        raw += b.raw_len;
                        refs.push(self.packer.add(b, Some(part.kind), &mut self.stats)?);
                    }
                    let all_known = self.stats.deduplicated_blobs - known_before == refs.len() as u64;
                    let spool = self.spool.as_mut().expect("checked above");
                    match part.kind {
                        PartKind::Header => spool.header_bytes += part.original_len,
                        PartKind::Body => spool.body_bytes += part.original_len,
                        PartKind::Attachment => {
                            spool.attachment_bytes += raw;
                            if all_known && !refs.is_empty() {
                                spool.attachments_deduplicated += 1;
                            }
                        }
                    }
                    out_parts.push(Part {
                        k: part.kind,
                        blobs: refs,
                        data: part.inline.map(|b| ByteStr(b.to_vec())),
                        recipe: part.recipe,
                    });
                }
                self.spool.as_mut().expect("checked above").mime.merge(&mime);
                self.spool.as_mut().expect("checked above").messages += 1;
                Record::Msg {
                    offset,
                    from: ByteStr(from.to_vec()),
                    parts: out_parts,
                    trail: ByteStr(trail.to_vec()),
                    blake3: hash,
                    len,
                    flags,
                }
            }
            PieceOut::Data { offset, len, blobs } => {
                let mut refs = Vec::with_capacity(blobs.len());
                for b in blobs {
                    refs.push(self.packer.add(b, None, &mut self.stats)?);
                }
                self.spool.as_mut().expect("checked above").other_bytes += len;
                Record::Data { offset, len, blobs: refs }
            }
        };
        let spool = self.spool.as_mut().expect("checked above");
        spool.lines.extend_from_slice(&encode(&record)?);
        spool.count += 1;
        Ok(())
    }

    pub(super) fn file_end(&mut self, entry: Entry, version: Version, hash: Option<ContentId>) -> Result<()> {
        let mut attempt = 0;
        let mut version = version;
        let mut hash = hash;
        loop {
            let stable = version.unchanged()?;
            if stable {
                break;
            }
            attempt += 1;
            self.spool = None;
            if attempt > self.opts.change_retries {
                return self.quarantine(
                    &entry.rel,
                    None,
                    format!(
                        "{}: changed while being read ({attempt} attempts); not stored, the next pass will retry",
                        entry.abs().display()
                    ),
                    false,
                );
            }
            tracing::info!(path = %entry.abs().display(), attempt, "file changed while being read; reading it again");
            // Re-read in this thread, processing each piece as it comes.
            let reader = Reader {
                policy: &self.opts.read,
                max_blob: self.opts.max_blob,
                after_read: self.opts.after_read.as_ref(),
            };
            let mut end = None;
            let mut failed = None;
            // An error of the collector itself (the store failing under a pack being written) fails the pass: it is
            // not the file's fault, and the pack it was writing cannot be trusted. The reader would take it for a
            // failed read of the file and quarantine the file, so it is handed over as a cancellation.
            let mut fatal = None;
            let source = self.source;
            let read = reader.read_file(&entry, source, &mut |ev| match ev {
                Event::FileEnd { version, hash, .. } => {
                    end = Some((version, hash));
                    Ok(())
                }
                Event::FileFailed { offset, error, .. } => {
                    failed = Some((offset, error));
                    Ok(())
                }
                other => self.handle(other).map_err(|e| {
                    fatal = Some(e);
                    Error::new(ErrorKind::Cancelled, "the collector failed")
                }),
            });
            if let Some(e) = fatal {
                return Err(e);
            }
            read?;
            if let Some((offset, error)) = failed {
                self.spool = None;
                return self.quarantine(&entry.rel, offset, format!("{}: {error}", entry.abs().display()), false);
            }
            let (v, h) = end.expect("read_file ends with FileEnd or FileFailed");
            version = v;
            hash = h;
        }
        let mut spool = self.spool.take().ok_or_else(|| Error::new(ErrorKind::Other, "file end outside a file"))?;
        spool.lines.extend_from_slice(&encode(&Record::End { blake3: hash })?);
        spool.count += 1;
        self.manifest.write_lines(&spool.lines, spool.count)?;
        // A single-file source that is not an mbox is carried, but the operator asked for an mbox: say so.
        let size = version.stat().size;
        if self.source_is_single && spool.kind == FileKind::Opaque && size > 0 {
            let reason = format!(
                "{}: does not start with an mbox From_ line (offset 0); carried as opaque data",
                entry.abs().display()
            );
            self.quarantine(&entry.rel, Some(0), reason, true)?;
        }
        for (offset, reason) in std::mem::take(&mut spool.notes) {
            self.quarantine(&entry.rel, Some(offset), format!("{}: {reason}", entry.abs().display()), true)?;
        }
        self.stats.files += 1;
        self.stats.messages += spool.messages;
        self.stats.source_bytes += size;
        self.stats.read_bytes += size;
        self.stats.header_bytes += spool.header_bytes;
        self.stats.body_bytes += spool.body_bytes;
        self.stats.other_bytes += spool.other_bytes;
        self.stats.attachments_deduplicated += spool.attachments_deduplicated;
        self.stats.mime.merge(&spool.mime);
        let b = &mut self.stats.breakdown;
        b.headers.source_bytes += spool.header_bytes;
        b.bodies.source_bytes += spool.body_bytes;
        b.attachments.source_bytes += spool.attachment_bytes;
        b.other.source_bytes += spool.other_bytes;
        if let Some(p) = &self.opts.progress {
            p.files.fetch_add(1, Ordering::Relaxed);
            p.messages.fetch_add(spool.messages, Ordering::Relaxed);
            p.bytes.fetch_add(size, Ordering::Relaxed);
        }
        drop(entry);
        Ok(())
    }
}

/// Write reserved segment `seg` of pack `w`: into its buffer, or, when the pack is streamed to `sink`, straight to its
/// object after whatever the buffer holds.
fn put_segment(
    w: &mut PackWriter,
    sink: Option<&mut Box<dyn crate::store::ObjectWriter>>,
    seg: u32,
    stored: &[u8],
    raw_len: u64,
    codec: Codec,
    blobs: &[(ContentId, u64, u64)],
) -> Result<()> {
    let Some(sink) = sink else {
        w.put(seg, stored, raw_len, codec, blobs);
        return Ok(());
    };
    let head = w.drain();
    w.put_streamed(seg, stored.len(), raw_len, codec, blobs);
    let written = if head.is_empty() { Ok(()) } else { sink.write(&head) };
    written.and_then(|()| sink.write(stored)).map_err(|e| e.context(format!("writing pack {}", w.id())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{decode_index, index_from_pack};

    /// An object writer that appends to a shared buffer.
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl crate::store::ObjectWriter for Sink {
        fn write(&mut self, data: &[u8]) -> Result<()> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(())
        }
        fn written(&self) -> u64 {
            self.0.lock().unwrap().len() as u64
        }
        fn commit(self: Box<Self>) -> Result<PutOutcome> {
            Ok(PutOutcome::Written)
        }
    }

    /// Segments reserved up front and written out of order, as the packer does (a segment's number is handed out
    /// when it opens, its bytes written when its compression ends): streamed to an object, they make the pack the
    /// buffer would have held, whose own table gives back the index.
    #[test]
    fn segments_streamed_out_of_order_make_the_buffered_pack() {
        let id = PackId::fresh();
        let segs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + 300 * i as usize]).collect();
        let blobs = |i: usize| [(ContentId::of(&segs[i]), 0, segs[i].len() as u64)];
        let object = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut sink: Box<dyn crate::store::ObjectWriter> = Box::new(Sink(object.clone()));
        let (mut streamed, mut buffered) = (PackWriter::new(id, 0), PackWriter::new(id, 0));
        let reserved: Vec<u32> = (0..segs.len()).map(|_| streamed.reserve()).collect();
        for _ in &reserved {
            buffered.reserve();
        }
        for i in [3, 0, 4, 1, 2] {
            put_segment(
                &mut streamed,
                Some(&mut sink),
                reserved[i],
                &segs[i],
                segs[i].len() as u64,
                Codec::None,
                &blobs(i),
            )
            .unwrap();
            put_segment(&mut buffered, None, reserved[i], &segs[i], segs[i].len() as u64, Codec::None, &blobs(i))
                .unwrap();
        }
        let (streamed, buffered) = (streamed.seal(), buffered.seal());
        sink.write(&streamed.data).unwrap();
        let object = object.lock().unwrap().clone();
        assert_eq!(object, buffered.data);
        let no_dict = |d: u32| Err(Error::corrupt(format!("no dictionary {d}")));
        assert_eq!(index_from_pack(id, &object, &no_dict).unwrap(), decode_index(id, &streamed.index).unwrap());
    }
}
