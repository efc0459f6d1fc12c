//! Stage 3: dedupe against the index, pack new blobs, spool each file's records until the file is known not to have
//! changed while it was read, then append them to the manifest.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::id::PackId;
use crate::manifest::Part;
use crate::pack::{BlobLoc, PackWriter};
use crate::source::{self, Entry, OpenFile, Source};

use super::process::Processor;
use super::read::Reader;
use super::upload::Uploader;

pub(super) struct Packer {
    pub(super) index: Arc<BlobIndex>,
    pub(super) current: Option<PackWriter>,
    pub(super) pack_target: usize,
    pub(super) standalone_min: usize,
    pub(super) uploader: Uploader,
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
        if let Some(loc) = self.index.get(&blob.id) {
            k.deduplicated_bytes += blob.raw_len;
            stats.deduplicated_blobs += 1;
            stats.deduplicated_bytes += blob.raw_len;
            return Ok(BlobRef::new(blob.id, loc));
        }
        let Some((codec, stored)) = blob.stored else {
            return Err(Error::new(ErrorKind::Other, format!("blob {} vanished from the index", blob.id)));
        };
        k.unique_bytes += blob.raw_len;
        k.stored_bytes += stored.len() as u64;
        stats.new_blobs += 1;
        stats.new_raw_bytes += blob.raw_len;
        let loc: BlobLoc = if stored.len() >= self.standalone_min {
            let mut w = PackWriter::new(PackId::for_large_blob(&blob.id), stored.len());
            let loc = w.add(blob.id, &stored, blob.raw_len, codec);
            self.uploader.upload(w.seal())?;
            loc
        } else {
            // Seal before the pack would outgrow its buffer: a reallocation would double the memory it holds.
            if self.current.as_ref().is_some_and(|w| !w.is_empty() && w.len() + stored.len() > self.pack_target) {
                self.seal()?;
            }
            let w = self.current.get_or_insert_with(|| PackWriter::new(PackId::fresh(), self.pack_target));
            w.add(blob.id, &stored, blob.raw_len, codec)
        };
        self.index.insert_if_absent(blob.id, loc);
        Ok(BlobRef::new(blob.id, loc))
    }

    pub(super) fn seal(&mut self) -> Result<()> {
        if let Some(w) = self.current.take()
            && !w.is_empty()
        {
            self.uploader.upload(w.seal())?;
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
            Event::Reused { lines, count, messages, size } => {
                self.manifest.write_lines(&lines, count)?;
                self.stats.files += 1;
                self.stats.unchanged_files += 1;
                self.stats.messages += messages;
                self.stats.source_bytes += size;
                if let Some(p) = &self.opts.progress {
                    p.files.fetch_add(1, Ordering::Relaxed);
                    p.messages.fetch_add(messages, Ordering::Relaxed);
                    p.bytes.fetch_add(size, Ordering::Relaxed);
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
            Event::FileEnd { entry, open, hash } => self.file_end(entry, open, hash),
            Event::FileFailed { entry, offset, error } => {
                self.spool = None;
                self.quarantine(&entry.rel, offset, format!("{}: {error}", entry.abs.display()), false)
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

    pub(super) fn file_end(&mut self, entry: Entry, open: OpenFile, hash: Option<ContentId>) -> Result<()> {
        let mut attempt = 0;
        let mut open = open;
        let mut hash = hash;
        loop {
            let stable = source::read::unchanged(&open)?;
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
                        entry.abs.display()
                    ),
                    false,
                );
            }
            tracing::info!(path = %entry.abs.display(), attempt, "file changed while being read; reading it again");
            // Re-read in this thread, processing each piece as it comes.
            let reader = Reader {
                policy: &self.opts.read,
                max_blob: self.opts.max_blob,
                after_read: self.opts.after_read.as_ref(),
            };
            let mut end = None;
            let mut failed = None;
            let source = self.source;
            reader.read_file(&entry, source, &mut |ev| match ev {
                Event::FileEnd { open, hash, .. } => {
                    end = Some((open, hash));
                    Ok(())
                }
                Event::FileFailed { offset, error, .. } => {
                    failed = Some((offset, error));
                    Ok(())
                }
                other => self.handle(other),
            })?;
            if let Some((offset, error)) = failed {
                self.spool = None;
                return self.quarantine(&entry.rel, offset, format!("{}: {error}", entry.abs.display()), false);
            }
            let (o, h) = end.expect("read_file ends with FileEnd or FileFailed");
            open = o;
            hash = h;
        }
        let mut spool = self.spool.take().ok_or_else(|| Error::new(ErrorKind::Other, "file end outside a file"))?;
        spool.lines.extend_from_slice(&encode(&Record::End { blake3: hash })?);
        spool.count += 1;
        self.manifest.write_lines(&spool.lines, spool.count)?;
        // A single-file source that is not an mbox is carried, but the operator asked for an mbox: say so.
        if self.source_is_single && spool.kind == FileKind::Opaque && open.stat.size > 0 {
            let reason = format!(
                "{}: does not start with an mbox From_ line (offset 0); carried as opaque data",
                entry.abs.display()
            );
            self.quarantine(&entry.rel, Some(0), reason, true)?;
        }
        for (offset, reason) in std::mem::take(&mut spool.notes) {
            self.quarantine(&entry.rel, Some(offset), format!("{}: {reason}", entry.abs.display()), true)?;
        }
        self.stats.files += 1;
        self.stats.messages += spool.messages;
        self.stats.source_bytes += open.stat.size;
        self.stats.read_bytes += open.stat.size;
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
            p.bytes.fetch_add(open.stat.size, Ordering::Relaxed);
        }
        drop(entry);
        Ok(())
    }
}
