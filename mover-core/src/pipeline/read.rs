//! Stage 1: walk the source, carry unchanged files over from the previous pass, read and cut the rest.

use bytes::Bytes;

use super::*;
use crate::manifest::{Carried, CarriedReader};
use crate::source::{self, Content, Entry, EntryKind, OpenFile, ReadPolicy, Source, Stat, maildir, mbox};

/// The previous pass's manifest, read in step with the walk.
pub(super) struct PrevCursor {
    pub(super) records: CarriedReader,
    /// Files last changed at or after this are read again even when they look unchanged: the previous pass started at about this time, so it may have read them just before a change that
    /// left the time stamps as they were ([`PrevCursor::new`]).
    pub(super) racy_from_ns: i64,
    /// Files whose stamps were as recorded but that are read again by that rule ([`PassStats::racy_files`]).
    pub(super) racy: Arc<AtomicU64>,
}

/// How long before a pass's start a change of a file may have been stamped: file times come from the kernel's coarse
/// clock, which lags the time the pass read at its start by up to a clock tick (1–10 ms); a second also covers small
/// steps of the clock.
const RACY_MARGIN_NS: i64 = 1_000_000_000;

/// Consecutive files carried over from the previous manifest.
#[derive(Default)]
pub(super) struct Carry {
    pub(super) lines: Vec<u8>,
    /// Records in `lines`.
    pub(super) count: u64,
    pub(super) files: u64,
    pub(super) messages: u64,
    /// Source bytes.
    pub(super) size: u64,
    /// The notes on these files the previous pass recorded (stored anyway, with a quarantine record after the file's
    /// `end`), carried with them and reported again.
    pub(super) notes: Vec<QuarantineItem>,
}

impl PrevCursor {
    /// A cursor over the records of `prev`, the previous pass.
    pub(super) fn new(prev: &Manifest) -> Result<PrevCursor> {
        let started_ns =
            i64::try_from(prev.header.started_ms).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000);
        Ok(PrevCursor {
            records: prev.records()?.carried(),
            racy_from_ns: started_ns.saturating_sub(RACY_MARGIN_NS),
            racy: Arc::default(),
        })
    }

    /// Carry the file at `rel` over into `into` if the previous pass recorded it as the walk found it now: same size,
    /// permission bits, mtime and (where recorded) ctime. Its content, and so its kind, are then taken to be
    /// unchanged, as rsync and every backup tool do. A ctime that moved catches what the others miss: a rewrite that
    /// restored the mtime, a `chmod`. A file changed at about the time the previous pass started is read again
    /// whatever its stamps say (git's "racily clean" files): a change in the same clock tick as that pass's read of
    /// it would leave them as they were. False, and `into` unchanged, if not carried.
    pub(super) fn take_file(&mut self, rel: &[u8], stat: &Stat, into: &mut Carry) -> Result<bool> {
        loop {
            let (recorded, order) = match self.records.peek()? {
                None => return Ok(false),
                Some((Carried::File { size, mode, mtime, ctime }, path)) => {
                    ((size, mode, mtime, ctime), source::walk_cmp(path, rel))
                }
                Some(_) => {
                    self.records.advance();
                    continue;
                }
            };
            match order {
                std::cmp::Ordering::Greater => return Ok(false),
                std::cmp::Ordering::Less => self.skip_block(None)?,
                std::cmp::Ordering::Equal => {
                    let (size, mode, mtime, ctime) = recorded;
                    let same = (size, mode, mtime) == (stat.size, stat.mode, stat.mtime_ns)
                        && ctime.is_none_or(|c| c == stat.ctime_ns);
                    // The last change the previous pass may not have seen: its recorded ctime; where it recorded
                    // none (manifests before ctimes), the later of the mtime and the ctime now, so that a change
                    // since then is read, and the file gets a ctime.
                    let changed = ctime.unwrap_or(mtime.max(stat.ctime_ns));
                    let racy = changed >= self.racy_from_ns;
                    if !same || racy {
                        if same {
                            self.racy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        self.skip_block(None)?;
                        return Ok(false);
                    }
                    self.skip_block(Some((into, rel)))?;
                    into.files += 1;
                    into.size += size;
                    return Ok(true);
                }
            }
        }
    }

    /// Consume one file's records (File … End); with `into`, collect them into its carry, and with them the notes on
    /// the file (at its path) that follow its `end`.
    pub(super) fn skip_block(&mut self, mut into: Option<(&mut Carry, &[u8])>) -> Result<()> {
        while let Some((rec, _)) = self.records.peek()? {
            if let Some((c, _)) = into.as_mut() {
                c.lines.extend_from_slice(self.records.line());
                c.count += 1;
                if rec == Carried::Msg {
                    c.messages += 1;
                }
            }
            self.records.advance();
            if rec == Carried::End {
                let Some((c, path)) = into else { return Ok(()) };
                while let Some((Carried::Note { stored: true }, p)) = self.records.peek()?
                    && p == path
                {
                    let line = self.records.line();
                    let Record::Quarantine { path, offset, reason, stored } = serde_json::from_slice(line)
                        .map_err(|e| Error::corrupt(format!("previous manifest: a quarantine record: {e}")))?
                    else {
                        return Err(Error::corrupt("previous manifest: a note that is not a quarantine record"));
                    };
                    c.lines.extend_from_slice(line);
                    c.count += 1;
                    c.notes.push(QuarantineItem {
                        path: String::from_utf8_lossy(&path.0).into_owned(),
                        offset,
                        reason,
                        stored,
                    });
                    self.records.advance();
                }
                return Ok(());
            }
        }
        Err(Error::corrupt("previous manifest ends inside a file"))
    }
}

/// Reads files and emits their events (used by the reader thread, and by the collector to re-read a file).
pub(super) struct Reader<'a> {
    pub(super) policy: &'a ReadPolicy,
    pub(super) max_blob: usize,
    pub(super) after_read: Option<&'a ReadHook>,
}

impl Reader<'_> {
    /// Classify and read one regular file, emitting FileStart, pieces, and FileEnd (or FileFailed).
    pub(super) fn read_file(
        &self,
        entry: &Entry,
        source: &dyn Source,
        emit: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let opened = source.open_walked(entry);
        // The events carry the entry without the directory it was opened in: events in flight must not hold a
        // descriptor each (a tree of many small folders has as many directories as files in flight).
        let entry = &Entry { dir: None, ..entry.clone() };
        let mut open = match opened {
            Ok(o) => o,
            Err(error) => return emit(Event::FileFailed { entry: entry.clone(), offset: None, error }),
        };
        let content = match source::read::read_content(&mut open, &entry.abs(), self.policy) {
            Ok(c) => c,
            Err(error) => return emit(Event::FileFailed { entry: entry.clone(), offset: None, error }),
        };
        let stat = open.stat;
        let maildir_sub = match entry.kind {
            EntryKind::File { maildir } => maildir,
            _ => None,
        };
        let head_is_mbox = |head: &[u8]| maildir_sub.is_none() && mbox::sniff(head);
        let (kind, content) = match content {
            Content::Whole { data, mapped } => {
                let kind = if maildir_sub.is_some() {
                    FileKind::Maildir
                } else if head_is_mbox(&data[..data.len().min(mbox::SNIFF_LEN)]) {
                    FileKind::Mbox
                } else {
                    FileKind::Opaque
                };
                (kind, Ok((data, mapped)))
            }
            Content::Stream => {
                let mut head = vec![0u8; mbox::SNIFF_LEN];
                let n = read_at(&open.file, &mut head, 0)
                    .map_err(|e| Error::io(format!("reading {}", entry.abs().display()), e));
                let n = match n {
                    Ok(n) => n,
                    Err(error) => return emit(Event::FileFailed { entry: entry.clone(), offset: Some(0), error }),
                };
                let kind = if maildir_sub.is_some() {
                    FileKind::Maildir
                } else if head_is_mbox(&head[..n]) {
                    FileKind::Mbox
                } else {
                    FileKind::Opaque
                };
                (kind, Err(()))
            }
        };
        let rel_name = entry.rel.rsplit(|&b| b == b'/').next().unwrap_or(&entry.rel);
        let record = Record::File {
            path: ByteStr(entry.rel.clone()),
            kind,
            size: stat.size,
            mode: stat.mode,
            mtime: stat.mtime_ns,
            ctime: Some(stat.ctime_ns),
            maildir: maildir_sub.map(|sub| maildir::parse_name(rel_name, sub)),
        };
        emit(Event::FileStart { entry: entry.clone(), record })?;

        let mut hasher = (kind != FileKind::Maildir).then(blake3::Hasher::new);
        let in_memory = matches!(content, Ok((_, false)));
        let result = match content {
            Ok((data, mapped)) => {
                if let Some(h) = hasher.as_mut() {
                    if mapped {
                        h.update_rayon(&data);
                    } else {
                        h.update(&data);
                    }
                }
                // Everything is cut at the end of the file; bytes left over would be a hole in the file's records.
                self.emit_pieces(kind, &data, 0, true, mapped, &mut mbox::Splitter::new(), emit).and_then(|used| {
                    if used == data.len() {
                        Ok(())
                    } else {
                        Err(Error::bad_input(format!(
                            "{}: {} bytes left unsplit at offset {used}",
                            entry.abs().display(),
                            data.len() - used
                        )))
                    }
                })
            }
            Err(()) => self.stream_pieces(kind, entry, &open, hasher.as_mut(), emit),
        };
        if let Err(error) = result {
            if error.kind() == ErrorKind::Cancelled {
                return Err(error);
            }
            return emit(Event::FileFailed { entry: entry.clone(), offset: None, error });
        }
        if let Some(hook) = self.after_read {
            hook(&entry.abs());
        }
        let hash = hasher.map(|h| ContentId::from_hash(h.finalize()));
        let version = if in_memory {
            let unchanged = source::read::unchanged(&open);
            drop(open);
            match unchanged {
                Ok(unchanged) => Version::Checked { stat, unchanged },
                Err(error) => return emit(Event::FileFailed { entry: entry.clone(), offset: None, error }),
            }
        } else {
            Version::Open(open)
        };
        emit(Event::FileEnd { entry: entry.clone(), version, hash })
    }

    /// Emit the pieces found at the start of `buf` (at file offset `base`); returns how many bytes were consumed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_pieces(
        &self,
        kind: FileKind,
        buf: &Bytes,
        base: u64,
        eof: bool,
        mapped: bool,
        splitter: &mut mbox::Splitter,
        emit: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<usize> {
        match kind {
            FileKind::Maildir => {
                emit(Event::PieceIn(PieceIn::Msg {
                    offset: base,
                    from: Bytes::new(),
                    msg: buf.clone(),
                    trail: Bytes::new(),
                    mapped,
                    mbox: false,
                }))?;
                Ok(buf.len())
            }
            FileKind::Opaque => {
                // One piece per blob, so a large mapped file is never copied whole.
                for r in split::chunks(buf.len(), self.max_blob) {
                    let offset = base + r.start as u64;
                    emit(Event::PieceIn(PieceIn::Data { offset, data: buf.slice(r), mapped }))?;
                }
                Ok(buf.len())
            }
            FileKind::Mbox => {
                let mut at = 0usize;
                while let Some(seg) = splitter.next(&buf[at..], eof) {
                    let off = base + at as u64;
                    match seg {
                        mbox::Seg::Preamble { len } => {
                            let data = buf.slice(at..at + len);
                            if !(off == 0 && &data[..] == b"\xEF\xBB\xBF") {
                                emit(Event::Note {
                                    offset: off,
                                    reason: format!(
                                        "{len} bytes at offset {off} before the first From_ line are not a message; carried as opaque data"
                                    ),
                                })?;
                            }
                            emit(Event::PieceIn(PieceIn::Data { offset: off, data, mapped }))?
                        }
                        mbox::Seg::Message { from_len, msg_len, trail_len } => {
                            let m = at + from_len;
                            emit(Event::PieceIn(PieceIn::Msg {
                                offset: off,
                                from: Bytes::copy_from_slice(&buf[at..m]),
                                msg: buf.slice(m..m + msg_len),
                                trail: Bytes::copy_from_slice(&buf[m + msg_len..m + msg_len + trail_len]),
                                mapped,
                                mbox: true,
                            }))?
                        }
                    }
                    at += seg.len();
                }
                Ok(at)
            }
        }
    }

    /// Read a large file in chunks; mbox files are cut into messages across chunk boundaries.
    pub(super) fn stream_pieces(
        &self,
        kind: FileKind,
        entry: &Entry,
        open: &OpenFile,
        mut hasher: Option<&mut blake3::Hasher>,
        emit: &mut dyn FnMut(Event) -> Result<()>,
    ) -> Result<()> {
        let chunk = self.policy.chunk.max(1 << 16);
        let mut pending = bytes::BytesMut::new();
        let mut base = 0u64; // file offset of pending[0]
        let mut pos = 0u64; // file offset of the next read
        let mut splitter = mbox::Splitter::new();
        let size = open.stat.size;
        loop {
            let want = match kind {
                // Opaque and Maildir data is cut at fixed blob boundaries.
                FileKind::Opaque => self.max_blob,
                FileKind::Maildir => usize::MAX,
                // Read at least as much again as is pending, so a large message costs O(n) re-scans.
                FileKind::Mbox => chunk.max(pending.len()),
            };
            let to_read = (want.min(size.saturating_sub(pos) as usize)).min(isize::MAX as usize);
            let old = pending.len();
            pending.resize(old + to_read, 0);
            let n = read_at(&open.file, &mut pending[old..], pos)
                .map_err(|e| Error::io(format!("reading {} at offset {pos}", entry.abs().display()), e))?;
            pending.truncate(old + n);
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&pending[old..]);
            }
            pos += n as u64;
            let eof = n == 0 || pos >= size;
            let buf = pending.split().freeze();
            let used = self.emit_pieces(kind, &buf, base, eof, false, &mut splitter, emit)?;
            base += used as u64;
            pending.extend_from_slice(&buf[used..]);
            if eof {
                if !pending.is_empty() {
                    return Err(Error::bad_input(format!(
                        "{}: {} bytes left unsplit at offset {base}",
                        entry.abs().display(),
                        pending.len()
                    )));
                }
                return Ok(());
            }
        }
    }
}

pub(super) fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Events on their way to the collector, sent in batches of about `batch_bytes`.
struct Batcher {
    events: Vec<Event>,
    weight: usize,
    /// Whether the batch holds a large message ([`Budget`]).
    large: bool,
    batch_bytes: usize,
    tx: std::sync::mpsc::SyncSender<Batch>,
    budget: Arc<Budget>,
}

impl Batcher {
    fn emit(&mut self, ev: Event) -> Result<()> {
        let weight = ev.weight();
        self.large |= matches!(ev, Event::PieceIn(_)) && self.budget.is_large(weight);
        self.weight += weight;
        self.events.push(ev);
        self.send_if_full()
    }

    /// Carry an unchanged file over with `take`, which appends its records to the [`Carry`] it is given and says
    /// whether it did. Unchanged files in a row go to the collector as one event: one buffer of lines, not one per
    /// file.
    fn carry(&mut self, take: impl FnOnce(&mut Carry) -> Result<bool>) -> Result<bool> {
        if !matches!(self.events.last(), Some(Event::Reused(_))) {
            self.events.push(Event::Reused(Carry::default()));
        }
        let Some(Event::Reused(carry)) = self.events.last_mut() else { unreachable!("pushed above") };
        let before = carry.lines.len();
        let carried = take(carry)?;
        let added = carry.lines.len() - before;
        if carry.files == 0 {
            self.events.pop(); // nothing carried in it
        }
        if !carried {
            return Ok(false);
        }
        self.weight += added;
        self.send_if_full()?;
        Ok(true)
    }

    fn send_if_full(&mut self) -> Result<()> {
        if self.weight >= self.batch_bytes { self.send() } else { Ok(()) }
    }

    fn send(&mut self) -> Result<()> {
        let permit = self.budget.acquire(self.weight, self.large);
        self.weight = 0;
        self.large = false;
        let events = std::mem::take(&mut self.events);
        self.tx.send(Batch { events, permit }).map_err(|_| Error::new(ErrorKind::Cancelled, "the collector stopped"))
    }
}

/// The reader thread: walk the source, carry unchanged files over, read the rest, send batches.
pub(super) fn reader_thread(
    mut source: Box<dyn Source>,
    mut prev: Option<PrevCursor>,
    opts: &MigrateOptions,
    index: &LazyIndex,
    tx: std::sync::mpsc::SyncSender<Batch>,
    budget: Arc<Budget>,
) -> Result<()> {
    let reader = Reader { policy: &opts.read, max_blob: opts.max_blob, after_read: opts.after_read.as_ref() };
    let mut out = Batcher { events: Vec::new(), weight: 0, large: false, batch_bytes: opts.batch_bytes, tx, budget };
    while let Some(next) = source.next_entry() {
        let entry = match next {
            Ok(e) => e,
            Err(w) => {
                out.emit(Event::Record(Record::Quarantine {
                    path: ByteStr(w.rel),
                    offset: None,
                    reason: w.error.to_string(),
                    stored: false,
                }))?;
                continue;
            }
        };
        match &entry.kind {
            EntryKind::Dir => {
                out.emit(Event::Record(Record::Dir {
                    path: ByteStr(entry.rel.clone()),
                    mode: entry.stat.mode,
                    mtime: entry.stat.mtime_ns,
                }))?;
            }
            EntryKind::Symlink { target } => {
                out.emit(Event::Record(Record::Symlink {
                    path: ByteStr(entry.rel.clone()),
                    target: ByteStr(target.clone()),
                }))?;
            }
            EntryKind::Special => {
                out.emit(Event::Record(Record::Quarantine {
                    path: ByteStr(entry.rel.clone()),
                    offset: None,
                    reason: format!(
                        "{}: not a regular file, directory or symbolic link (socket, FIFO or device); skipped",
                        entry.abs().display()
                    ),
                    stored: false,
                }))?;
            }
            EntryKind::File { maildir } => {
                let _ = maildir;
                if let Some(prev) = prev.as_mut()
                    && out.carry(|carry| prev.take_file(&entry.rel, &entry.stat, carry))?
                {
                    continue;
                }
                index.load()?;
                reader.read_file(&entry, source.as_ref(), &mut |ev| out.emit(ev))?;
            }
        }
    }
    if !out.events.is_empty() {
        out.send()?;
    }
    tracing::debug!("reader: the whole source is read");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A previous pass that started at `started_ms` and recorded `recs`, as a cursor.
    fn prev(started_ms: u64, recs: &[Record]) -> PrevCursor {
        let mut w = crate::manifest::ManifestWriter::new().unwrap();
        for r in recs {
            w.write(r).unwrap();
        }
        let header = ManifestHeader { started_ms, finished_ms: started_ms, ..crate::manifest::test_header() };
        PrevCursor::new(&Manifest::parse(w.finish(header).unwrap(), "k").unwrap()).unwrap()
    }

    fn file(path: &str, mode: u32, mtime: i64, ctime: Option<i64>) -> Record {
        Record::File { path: ByteStr(path.into()), kind: FileKind::Mbox, size: 10, mode, mtime, ctime, maildir: None }
    }

    /// A file is carried when size, mode, mtime and (where the previous pass recorded it) ctime are as recorded, and
    /// its last change is older than the margin before the previous pass's start (by its ctime, or by its mtime where
    /// no ctime was recorded); any one of them off, and it is read again.
    #[test]
    fn a_file_is_carried_only_when_every_stamp_is_as_recorded_and_older_than_the_previous_pass() {
        const S: i64 = 1_000_000_000;
        let started_ms = 100_000; // 100 s
        let stat = |mode: u32, mtime: i64, ctime: i64| Stat {
            size: 10,
            mtime_ns: mtime,
            ctime_ns: ctime,
            mode,
            ino: 1,
            dev: 1,
        };
        let end = Record::End { blake3: None };
        let carried = |rec: Record, now: Stat| {
            let mut c = Carry::default();
            let mut cursor = prev(started_ms, &[rec, end.clone()]);
            let took = cursor.take_file(b"a", &now, &mut c).unwrap();
            assert_eq!(took, c.files == 1);
            let racy = cursor.racy.load(std::sync::atomic::Ordering::Relaxed);
            assert!(racy == 0 || !took, "a carried file is not counted as read again");
            took
        };
        // Recorded with a ctime.
        assert!(carried(file("a", 0o600, 5 * S, Some(50 * S)), stat(0o600, 5 * S, 50 * S)));
        assert!(!carried(file("a", 0o600, 5 * S, Some(50 * S)), stat(0o640, 5 * S, 50 * S)), "mode");
        assert!(!carried(file("a", 0o600, 5 * S, Some(50 * S)), stat(0o600, 6 * S, 50 * S)), "mtime");
        assert!(!carried(file("a", 0o600, 5 * S, Some(50 * S)), stat(0o600, 5 * S, 51 * S)), "ctime");
        let mut bigger = stat(0o600, 5 * S, 50 * S);
        bigger.size += 1;
        assert!(!carried(file("a", 0o600, 5 * S, Some(50 * S)), bigger), "size");
        // Changed within the margin before the previous pass started, or after: read again.
        assert!(carried(file("a", 0o600, 5 * S, Some(99 * S - 1)), stat(0o600, 5 * S, 99 * S - 1)));
        assert!(!carried(file("a", 0o600, 5 * S, Some(99 * S)), stat(0o600, 5 * S, 99 * S)), "racy");
        assert!(!carried(file("a", 0o600, 5 * S, Some(101 * S)), stat(0o600, 5 * S, 101 * S)), "racy");
        // Recorded without a ctime (older manifests): the later of the mtime and the ctime now decides, and the mode
        // still counts.
        assert!(carried(file("a", 0o600, 5 * S, None), stat(0o600, 5 * S, 50 * S)));
        assert!(!carried(file("a", 0o600, 5 * S, None), stat(0o644, 5 * S, 50 * S)), "mode");
        assert!(!carried(file("a", 0o600, 5 * S, None), stat(0o600, 5 * S, 200 * S)), "changed since, by its ctime");
        assert!(!carried(file("a", 0o600, 99 * S + 5, None), stat(0o600, 99 * S + 5, 50 * S)), "racy by mtime");
    }

    /// The notes on a stored file (quarantine records after its `end`, naming it) are carried with it and reported;
    /// a note on another file that follows is left for that file.
    #[test]
    fn notes_on_a_carried_file_go_with_it() {
        let note = |path: &str, stored| Record::Quarantine {
            path: ByteStr(path.into()),
            offset: Some(0),
            reason: format!("note on {path}"),
            stored,
        };
        let recs = [
            file("a", 0o600, 1, Some(1)),
            Record::End { blake3: None },
            note("a", true),
            note("b", false),
            file("c", 0o600, 1, Some(1)),
            Record::End { blake3: None },
            note("c", true),
            note("c", true),
        ];
        let stat = Stat { size: 10, mtime_ns: 1, ctime_ns: 1, mode: 0o600, ino: 1, dev: 1 };
        let mut cursor = prev(100_000, &recs);
        let mut c = Carry::default();
        assert!(cursor.take_file(b"a", &stat, &mut c).unwrap());
        assert_eq!((c.count, c.notes.len()), (3, 1));
        assert_eq!(c.notes[0].reason, "note on a");
        assert!(cursor.take_file(b"c", &stat, &mut c).unwrap());
        assert_eq!((c.files, c.count, c.notes.len()), (2, 7, 3), "b's note is not carried");
        assert_eq!(c.notes.iter().map(|n| n.path.as_str()).collect::<Vec<_>>(), ["a", "c", "c"]);
        let lines: Vec<Record> =
            c.lines.split_inclusive(|&b| b == b'\n').map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(lines, [&recs[..3], &recs[4..]].concat());
    }

    /// A batch holding a message of a quarter of the budget or more is marked large; one of smaller messages, or of
    /// unchanged files' records however many, is not.
    #[test]
    fn a_batch_with_a_large_message_is_large() {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let mut out = Batcher {
            events: Vec::new(),
            weight: 0,
            large: false,
            batch_bytes: 1 << 20,
            tx,
            budget: Budget::new(8 << 20),
        };
        let msg = |len: usize| {
            let msg = Bytes::from(vec![b'x'; len]);
            Event::PieceIn(PieceIn::Msg {
                offset: 0,
                from: Bytes::new(),
                msg,
                trail: Bytes::new(),
                mapped: false,
                mbox: false,
            })
        };
        for len in [100_000, 1 << 20] {
            out.emit(msg(len)).unwrap();
        }
        out.emit(msg(2 << 20)).unwrap();
        out.carry(|c| {
            c.lines = vec![b'r'; 3 << 20];
            c.files = 1;
            Ok(true)
        })
        .unwrap();
        let large: Vec<bool> = rx.try_iter().map(|b| b.permit.large).collect();
        assert_eq!(large, [false, true, false]);
    }
}
