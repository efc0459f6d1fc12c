//! Where the mail comes from: legacy stores on the local file system.
//!
//! A [`Source`] walks a store in a stable order (depth first, names sorted bytewise) and yields [`Entry`]s:
//! directories, regular files and symbolic links, each with its metadata; files are opened lazily. The walk knows
//! Maildir structure (a directory with `cur/` or `new/` is a Maildir, and the files directly in its `cur/`, `new/`
//! and `tmp/` are messages), which covers a single Maildir, a Maildir++ root with `.Folder.Sub` folders, and a tree
//! of Maildirs (fs layout). Other files are classified by content: mbox folder files start with a From_ line
//! ([`mbox::sniff`]); everything else (`dovecot-uidlist`, `subscriptions`, indexes) is carried as opaque bytes.
//!
//! A Source knows nothing about stores: it only says what is there and hands out bytes.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod dir;
pub mod maildir;
pub mod mbox;
pub mod read;

use dir::{Child, Lstat, list_dir, lstat_at};

pub use read::{Content, OpenFile, ReadPolicy, Stat};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file; `maildir` names the Maildir subdirectory (`cur`, `new`, `tmp`) when it is a message there.
    File {
        /// `Some("cur")` etc. for Maildir messages.
        maildir: Option<&'static str>,
    },
    /// A symbolic link (never followed).
    Symlink {
        /// Its target, verbatim.
        target: Vec<u8>,
    },
    /// A socket, FIFO or device: not mail, reported and skipped.
    Special,
}

/// One thing found in a store.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the source root, `/`-separated bytes; for a single-file source, the file name.
    pub rel: Vec<u8>,
    /// The directory `rel` is relative to ([`Entry::abs`] is made on demand: a re-run that finds a file unchanged
    /// never needs it).
    pub(crate) base: std::sync::Arc<Path>,
    /// What it is.
    pub kind: EntryKind,
    /// Metadata from the walk (`lstat`).
    pub stat: Stat,
    /// The directory the walk found it in, open: the file is opened relative to it (no lookup of the whole path).
    pub(crate) dir: Option<std::sync::Arc<std::fs::File>>,
}

impl Entry {
    /// Where it is on disk: the source's path joined with [`Entry::rel`].
    pub fn abs(&self) -> PathBuf {
        if self.rel.is_empty() { self.base.to_path_buf() } else { join_abs(&self.base, &self.rel) }
    }

    /// The last component of its path.
    fn name(&self) -> &[u8] {
        self.rel.rsplit(|&c| c == b'/').next().unwrap_or(&self.rel)
    }
}

/// An error while walking, with the path it concerns.
#[derive(Debug)]
pub struct WalkError {
    /// Path relative to the source root.
    pub rel: Vec<u8>,
    /// What went wrong.
    pub error: Error,
}

/// A mail store to read from.
pub trait Source: Send {
    /// The next entry in walk order, `None` at the end.
    fn next_entry(&mut self) -> Option<std::result::Result<Entry, WalkError>>;

    /// Open a file entry for reading.
    fn open(&self, entry: &Entry) -> Result<OpenFile> {
        read::open(&entry.abs())
    }

    /// Open a file entry the walk has just found, for its first read: the version to check after reading may be the
    /// one the walk saw (a file replaced or changed since is then read again, through [`Source::open`]).
    fn open_walked(&self, entry: &Entry) -> Result<OpenFile> {
        self.open(entry)
    }

    /// Whether the source is a directory tree (restores into a directory) or a single file.
    fn is_dir(&self) -> bool;
}

/// Order of paths in a walk: component by component, each compared bytewise. Manifests are written in this order,
/// which lets the next pass carry unchanged files over by merging two sorted streams.
///
/// Paths have no empty components and no NUL bytes, so this is bytewise order with `/` below every other byte:
/// where two paths first differ, a `/` ends a component that is a prefix of the other path's. Comparing with one
/// pass over the common prefix is what a re-run does once per file ([`walk_cmp_components`] is the definition).
pub fn walk_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        None => a.len().cmp(&b.len()),
        Some(i) => {
            let key = |c: u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
            key(a[i]).cmp(&key(b[i]))
        }
    }
}

/// [`walk_cmp`] as its definition says it: component by component.
#[cfg(test)]
fn walk_cmp_components(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

struct Frame {
    abs: PathBuf,
    rel: Vec<u8>,
    /// The directory, open: it was listed through it, and its entries' `lstat`s and opens are relative to it (no
    /// walk of the whole path per file).
    dir: std::sync::Arc<std::fs::File>,
    /// The names of its entries, each ended by a NUL, in the order listed: one buffer per directory.
    names: Vec<u8>,
    /// Its entries, sorted by name.
    children: std::vec::IntoIter<Child>,
    /// `lstat`s of the next children, taken ahead on two threads in a large directory ([`Frame::next_child`]).
    ahead: std::collections::VecDeque<std::io::Result<Lstat>>,
    /// This directory is the `cur`/`new`/`tmp` of a Maildir.
    maildir_sub: Option<&'static str>,
    /// This directory is a Maildir (has `cur/` or `new/`).
    is_maildir: bool,
}

/// A Maildir, Maildir++ root, tree of Maildirs, mbox file or directory of mbox files on the local file system.
#[derive(Debug)]
pub struct FsSource {
    root: std::sync::Arc<Path>,
    single: Option<Entry>,
    stack: Vec<FrameDebug>,
    is_dir: bool,
    started: bool,
    /// Entries walked ahead by a thread of its own ([`FsSource::walk_ahead`]).
    ahead: Option<Ahead>,
}

type WalkItem = std::result::Result<Entry, WalkError>;

/// The receiving end of a walk on its own thread: entries in chunks, each from one directory; an empty chunk ends
/// the walk.
struct Ahead {
    rx: std::sync::mpsc::Receiver<Vec<WalkItem>>,
    chunk: std::vec::IntoIter<WalkItem>,
    walker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ahead")
    }
}

/// Chunks a walk on its own thread may have ready ahead of the caller. A chunk holds the entries of one directory
/// (at most [`AHEAD_CHUNK`]), so the chunks waiting hold at most this many directories open.
const AHEAD_CHUNKS: usize = 4;
/// Entries per chunk at most.
const AHEAD_CHUNK: usize = 256;

// Frames hold iterators; keep Debug simple.
struct FrameDebug(Frame);
impl std::fmt::Debug for FrameDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({})", self.0.abs.display())
    }
}

fn lstat(path: &Path) -> std::io::Result<Stat> {
    std::fs::symlink_metadata(path).map(|m| Stat::of(&m))
}

impl FsSource {
    /// Open a source at `path`: a directory tree or a single (mbox) file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(format!("source {}", root.display()), e))?;
        if meta.is_dir() {
            Ok(FsSource::tree(root))
        } else if meta.is_file() {
            let name =
                root.file_name().ok_or_else(|| Error::config(format!("source {} has no file name", root.display())))?;
            let entry = Entry {
                rel: name.as_bytes().to_vec(),
                base: root.parent().unwrap_or(Path::new("")).into(),
                kind: EntryKind::File { maildir: None },
                stat: Stat::of(&meta),
                dir: None,
            };
            Ok(FsSource {
                root: root.into(),
                single: Some(entry),
                stack: Vec::new(),
                is_dir: false,
                started: false,
                ahead: None,
            })
        } else {
            Err(Error::config(format!("source {} is neither a directory nor a regular file", root.display())))
        }
    }

    /// The root path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walk on a thread of its own, a few directories ahead of the caller: listing directories and taking the
    /// `lstat` of every entry is most of a pass in which nothing changed, and the caller (the pipeline's reader)
    /// then only compares each file with the previous pass. Same entries, same order, same errors; each entry's
    /// `lstat` is still taken before the entry is handed out, and a directory is listed right after its own
    /// `lstat`, as without. If the thread cannot be started the walk stays on the caller's thread.
    pub fn walk_ahead(self) -> Self {
        if !self.is_dir || self.started || self.ahead.is_some() {
            return self;
        }
        let fresh = FsSource::tree(self.root.to_path_buf());
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<WalkItem>>(AHEAD_CHUNKS);
        let mut walk = self;
        let spawned = std::thread::Builder::new().name("mover-walk".into()).spawn(move || {
            let mut chunk: Vec<WalkItem> = Vec::new();
            let mut dir: Option<std::sync::Arc<std::fs::File>> = None;
            while let Some(item) = walk.next_entry() {
                let item_dir = item.as_ref().ok().and_then(|e| e.dir.clone());
                let other_dir = match (&dir, &item_dir) {
                    (Some(a), Some(b)) => !std::sync::Arc::ptr_eq(a, b),
                    _ => false,
                };
                if !chunk.is_empty() && (other_dir || chunk.len() >= AHEAD_CHUNK) {
                    if tx.send(std::mem::take(&mut chunk)).is_err() {
                        return; // the caller stopped walking
                    }
                    dir = None;
                }
                if item_dir.is_some() {
                    dir = item_dir;
                }
                chunk.push(item);
            }
            if !chunk.is_empty() && tx.send(chunk).is_err() {
                return;
            }
            let _ = tx.send(Vec::new()); // the end of the walk
        });
        match spawned {
            Ok(walker) => {
                FsSource { ahead: Some(Ahead { rx, chunk: Vec::new().into_iter(), walker: Some(walker) }), ..fresh }
            }
            Err(e) => {
                tracing::debug!("walking on the reader's thread: {e}");
                fresh
            }
        }
    }

    /// A directory tree at `root`, not walked yet.
    fn tree(root: PathBuf) -> Self {
        FsSource { root: root.into(), single: None, stack: Vec::new(), is_dir: true, started: false, ahead: None }
    }

    fn frame(abs: PathBuf, rel: Vec<u8>, maildir_sub: Option<&'static str>) -> std::io::Result<Frame> {
        let dir = read::open_dir(&abs)?;
        let (names, mut children) = list_dir(&dir, &abs)?;
        children.sort_unstable_by(|a, b| a.name(&names).cmp(b.name(&names)));
        let is_maildir =
            maildir_sub.is_none() && children.iter().any(|c| c.is_dir && matches!(c.name(&names), b"cur" | b"new"));
        Ok(Frame {
            abs,
            rel,
            dir: std::sync::Arc::new(dir),
            names,
            children: children.into_iter(),
            ahead: Default::default(),
            maildir_sub,
            is_maildir,
        })
    }
}

/// Directories with at least this many entries left have their entries' `lstat`s taken ahead, on two threads.
const STAT_AHEAD_MIN: usize = 256;
/// Entries whose `lstat`s are taken ahead at a time.
const STAT_AHEAD: usize = 4096;

impl Frame {
    /// The next child and its `lstat`. A pass that finds nothing changed is mostly `lstat`s of message files, one
    /// thread's work while the workers idle: in a large directory they are taken a window ahead, half of them on a
    /// helper thread (each is still the walk's view of that entry, taken before the entry is read; files are opened
    /// without following links and checked against it after reading).
    fn next_child(&mut self) -> Option<(Child, std::io::Result<Lstat>)> {
        if self.ahead.is_empty() && self.children.len() >= STAT_AHEAD_MIN {
            let window = &self.children.as_slice()[..self.children.len().min(STAT_AHEAD)];
            self.ahead = stat_ahead(&self.dir, &self.names, window);
        }
        let child = self.children.next()?;
        let lstat = || lstat_at(&self.dir, child.c_name(&self.names));
        let meta = match self.ahead.pop_front() {
            // A directory is walked into by path: its lstat is taken again just before, as without the look-ahead,
            // so that one replaced by a symbolic link meanwhile is recorded as the link, never followed.
            Some(Ok(m)) if m.is_dir() => lstat(),
            Some(taken) => taken,
            None => lstat(),
        };
        Some((child, meta))
    }
}

/// The `lstat`s of `window`, in order: the second half on a helper thread (inline if it cannot be started).
fn stat_ahead(
    dir: &std::fs::File,
    names: &[u8],
    window: &[Child],
) -> std::collections::VecDeque<std::io::Result<Lstat>> {
    let (first, second) = window.split_at(window.len() / 2);
    let stat = |part: &[Child]| part.iter().map(|c| lstat_at(dir, c.c_name(names))).collect::<Vec<_>>();
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new().name("mover-walk".into()).spawn_scoped(scope, || stat(second));
        let mut out: std::collections::VecDeque<_> = stat(first).into();
        match helper.map(|h| h.join()) {
            Ok(Ok(rest)) => out.extend(rest),
            _ => out.extend(stat(second)),
        }
        out
    })
}

/// `parent/name` in one allocation (`Path::join` copies `parent` and then grows the copy).
fn join_abs(parent: &Path, name: &[u8]) -> PathBuf {
    let parent = parent.as_os_str().as_bytes();
    let mut abs = Vec::with_capacity(parent.len() + 1 + name.len());
    abs.extend_from_slice(parent);
    if !parent.is_empty() && !parent.ends_with(b"/") {
        abs.push(b'/');
    }
    abs.extend_from_slice(name);
    PathBuf::from(std::ffi::OsString::from_vec(abs))
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut r = Vec::with_capacity(parent.len() + 1 + name.len());
        r.extend_from_slice(parent);
        r.push(b'/');
        r.extend_from_slice(name);
        r
    }
}

impl Source for FsSource {
    fn next_entry(&mut self) -> Option<std::result::Result<Entry, WalkError>> {
        if !self.is_dir {
            return self.single.take().map(Ok);
        }
        if let Some(ahead) = &mut self.ahead {
            loop {
                if let Some(item) = ahead.chunk.next() {
                    return Some(item);
                }
                match ahead.rx.recv() {
                    Ok(chunk) if chunk.is_empty() => return None,
                    Ok(chunk) => ahead.chunk = chunk.into_iter(),
                    Err(_) if ahead.walker.is_none() => return None,
                    // The walk's thread stopped before the end of the walk: it panicked. Panic here too, as the
                    // walk on this thread would have: a walk cut short must fail the pass, never pass for the
                    // whole source (the files it did not reach would be missing from the manifest).
                    Err(_) => match ahead.walker.take().map(|w| w.join()) {
                        Some(Err(panic)) => std::panic::resume_unwind(panic),
                        _ => panic!("the walk's thread ended before the end of the walk"),
                    },
                }
            }
        }
        if !self.started {
            self.started = true;
            // The root itself comes first, with an empty path: its permissions (mail directories are usually
            // private) and times are restored onto the target directory.
            let root = lstat(&self.root).map(|stat| Entry {
                rel: Vec::new(),
                base: self.root.clone(),
                kind: EntryKind::Dir,
                stat,
                dir: None,
            });
            match Self::frame(self.root.to_path_buf(), Vec::new(), None) {
                Ok(f) => self.stack.push(FrameDebug(f)),
                Err(e) => {
                    return Some(Err(WalkError {
                        rel: Vec::new(),
                        error: Error::io(format!("listing source {}", self.root.display()), e),
                    }));
                }
            }
            match root {
                Ok(entry) => return Some(Ok(entry)),
                Err(e) => {
                    let error = Error::io(format!("stat {}", self.root.display()), e);
                    return Some(Err(WalkError { rel: Vec::new(), error }));
                }
            }
        }
        loop {
            let top = &mut self.stack.last_mut()?.0;
            let Some((child, meta)) = top.next_child() else {
                self.stack.pop();
                continue;
            };
            let name = child.name(&top.names);
            #[cfg(test)]
            assert!(name != b"mover-test-walk-panics", "a walk that panics (test)");
            // Made here only for directories and links; files have theirs on demand (`Entry::abs`).
            let abs = || join_abs(&top.abs, name);
            let rel = join_rel(&top.rel, name);
            let found = match meta {
                Ok(m) => m,
                Err(e) => {
                    return Some(Err(WalkError { rel, error: Error::io(format!("stat {}", abs().display()), e) }));
                }
            };
            if found.is_dir() {
                let sub =
                    if top.is_maildir { maildir::SUBDIRS.iter().copied().find(|s| s.as_bytes() == name) } else { None };
                let entry = Entry {
                    rel: rel.clone(),
                    base: self.root.clone(),
                    kind: EntryKind::Dir,
                    stat: found.stat,
                    dir: None,
                };
                let abs = abs();
                match Self::frame(abs.clone(), rel.clone(), sub) {
                    Ok(f) => self.stack.push(FrameDebug(f)),
                    Err(e) => {
                        return Some(Err(WalkError { rel, error: Error::io(format!("listing {}", abs.display()), e) }));
                    }
                }
                return Some(Ok(entry));
            }
            let kind = if found.is_file() {
                EntryKind::File { maildir: top.maildir_sub }
            } else if found.is_symlink() {
                let abs = abs();
                match std::fs::read_link(&abs) {
                    Ok(t) => EntryKind::Symlink { target: t.as_os_str().as_bytes().to_vec() },
                    Err(e) => {
                        return Some(Err(WalkError {
                            rel,
                            error: Error::io(format!("readlink {}", abs.display()), e),
                        }));
                    }
                }
            } else {
                EntryKind::Special
            };
            let dir = if matches!(kind, EntryKind::File { .. }) { Some(top.dir.clone()) } else { None };
            return Some(Ok(Entry { rel, base: self.root.clone(), kind, stat: found.stat, dir }));
        }
    }

    fn is_dir(&self) -> bool {
        self.is_dir
    }

    /// Relative to the directory the walk listed, and checked after reading against the walk's `lstat`: one
    /// `openat` and no `fstat` per file (a file replaced or changed since the walk fails that check and is read
    /// again through [`Source::open`], which takes a fresh `fstat`).
    fn open_walked(&self, entry: &Entry) -> Result<OpenFile> {
        match &entry.dir {
            Some(dir) => read::open_in(dir, OsStr::from_bytes(entry.name()), &entry.abs(), entry.stat),
            _ => self.open(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The one-pass comparison is the component-by-component one, for paths as walks make them (non-empty
        /// components, no NUL) over an alphabet with `/` and the bytes either side of it.
        #[test]
        fn walk_cmp_is_component_order(
            a in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(b".-0/a\xff".to_vec()), 1..4), 0..4),
            b in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(b".-0/a\xff".to_vec()), 1..4), 0..4),
        ) {
            let path = |parts: Vec<Vec<u8>>| -> Vec<u8> {
                let parts: Vec<Vec<u8>> = parts.into_iter().map(|p| p.into_iter().filter(|&c| c != b'/').collect()).filter(|p: &Vec<u8>| !p.is_empty()).collect();
                parts.join(&b'/')
            };
            let (a, b) = (path(a), path(b));
            proptest::prop_assert_eq!(walk_cmp(&a, &b), walk_cmp_components(&a, &b));
        }
    }

    #[test]
    fn walk_order_and_maildir_detection() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in ["cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp", "a.b", "a/cur", "a/x"] {
            std::fs::create_dir_all(p.join(dir)).unwrap();
        }
        std::fs::write(p.join("cur/1:2,S"), "x").unwrap();
        std::fs::write(p.join(".Sent/new/2"), "x").unwrap();
        std::fs::write(p.join("a/x/notmail"), "x").unwrap();
        std::fs::write(p.join("dovecot-uidlist"), "x").unwrap();
        std::os::unix::fs::symlink("cur", p.join("link")).unwrap();
        let mut s = FsSource::open(p).unwrap();
        let mut got = Vec::new();
        while let Some(e) = s.next_entry() {
            let e = e.unwrap();
            got.push((String::from_utf8(e.rel).unwrap(), e.kind));
        }
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| walk_cmp(a.as_bytes(), b.as_bytes()));
        assert_eq!(names, sorted, "walk order is walk_cmp order");
        let kind = |n: &str| got.iter().find(|(m, _)| m == n).unwrap().1.clone();
        assert_eq!(kind("cur/1:2,S"), EntryKind::File { maildir: Some("cur") });
        assert_eq!(kind(".Sent/new/2"), EntryKind::File { maildir: Some("new") });
        assert_eq!(kind("a/x/notmail"), EntryKind::File { maildir: None });
        assert_eq!(kind("dovecot-uidlist"), EntryKind::File { maildir: None });
        assert_eq!(kind("link"), EntryKind::Symlink { target: b"cur".to_vec() });
        assert_eq!(kind("a/x"), EntryKind::Dir);
        assert!(walk_cmp(b"a/x", b"a.b") == Ordering::Less);
    }

    /// A directory replaced by a symbolic link after the look-ahead took its `lstat` is recorded as the link: the
    /// walk does not follow it out of the source.
    #[test]
    fn a_directory_swapped_for_a_link_after_the_look_ahead_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let (src, outside) = (d.path().join("src"), d.path().join("outside"));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "not mail").unwrap();
        for i in 0..300 {
            std::fs::create_dir_all(src.join(format!("d{i:03}"))).unwrap();
        }
        std::fs::write(src.join("d000/m"), "x").unwrap();
        let mut s = FsSource::open(&src).unwrap();
        let mut got = Vec::new();
        // The root, d000 (its lstat and the rest of the window taken ahead) and what d000 holds.
        for _ in 0..3 {
            got.push(s.next_entry().unwrap().unwrap());
        }
        assert_eq!(got[2].rel, b"d000/m");
        std::fs::remove_dir(src.join("d150")).unwrap();
        std::os::unix::fs::symlink(&outside, src.join("d150")).unwrap();
        while let Some(e) = s.next_entry() {
            got.push(e.unwrap());
        }
        assert!(got.iter().all(|e| !e.rel.starts_with(b"d150/")), "the walk followed the link");
        let d150 = got.iter().find(|e| e.rel == b"d150").unwrap();
        assert!(matches!(d150.kind, EntryKind::Symlink { .. }), "{:?}", d150.kind);
    }

    /// In a large directory the walk takes its entries' `lstat`s ahead, in windows, on two threads: every entry still
    /// comes in walk order with its own `lstat` and kind, across window boundaries.
    #[test]
    fn a_large_directory_is_walked_entry_by_entry_as_a_small_one() {
        let d = tempfile::tempdir().unwrap();
        let cur = d.path().join("cur");
        std::fs::create_dir_all(cur.join("sub")).unwrap();
        // With `sub`, a window and STAT_AHEAD_MIN - 1 entries: a window taken ahead, then the rest one by one.
        let n = STAT_AHEAD + STAT_AHEAD_MIN - 2;
        for i in 0..n {
            let name = format!("{:05}.host:2,S", (i * 7919) % n);
            if i % 1000 == 1 {
                std::os::unix::fs::symlink("elsewhere", cur.join(name)).unwrap();
            } else {
                std::fs::write(cur.join(name), vec![b'x'; i % 97]).unwrap();
            }
        }
        let mut s = FsSource::open(d.path()).unwrap();
        let mut got = Vec::new();
        while let Some(e) = s.next_entry() {
            got.push(e.unwrap());
        }
        let mut want: Vec<String> =
            std::fs::read_dir(&cur).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        want.sort();
        let files: Vec<&Entry> = got.iter().filter(|e| e.rel.starts_with(b"cur/")).collect();
        assert_eq!(files.len(), n + 1);
        for (e, name) in files.iter().zip(&want) {
            assert_eq!(e.rel, format!("cur/{name}").into_bytes());
            let lstat = std::fs::symlink_metadata(cur.join(name)).unwrap();
            assert_eq!(e.stat, Stat::of(&lstat), "{name}");
            assert_eq!(e.abs().into_os_string().into_vec(), cur.join(name).into_os_string().into_vec());
            let kind = if lstat.is_dir() {
                EntryKind::Dir
            } else if lstat.file_type().is_symlink() {
                EntryKind::Symlink { target: b"elsewhere".to_vec() }
            } else {
                EntryKind::File { maildir: Some("cur") }
            };
            assert_eq!(e.kind, kind, "{name}");
        }
    }

    /// An entry's path on disk is made on demand: the root for the root, the root joined with the relative path
    /// below it, the path given for a single file.
    #[test]
    fn entries_know_where_they_are() {
        let walk = |mut s: FsSource| {
            let mut got = Vec::new();
            while let Some(e) = s.next_entry() {
                got.push(e.unwrap());
            }
            got
        };
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/cur")).unwrap();
        std::fs::write(d.path().join("a/cur/m1"), b"x").unwrap();
        // Compared as bytes: `Path` equality ignores repeated separators.
        let bytes = |p: PathBuf| p.into_os_string().into_vec();
        let at = |rel: &str| bytes(d.path().join(rel));
        let walked: Vec<(Vec<u8>, Vec<u8>)> =
            walk(FsSource::open(d.path()).unwrap()).into_iter().map(|e| (e.rel.clone(), bytes(e.abs()))).collect();
        assert_eq!(
            walked,
            vec![
                (b"".to_vec(), bytes(d.path().to_path_buf())),
                (b"a".to_vec(), at("a")),
                (b"a/cur".to_vec(), at("a/cur")),
                (b"a/cur/m1".to_vec(), at("a/cur/m1")),
            ]
        );
        let slash = PathBuf::from(format!("{}/", d.path().display()));
        assert_eq!(bytes(walk(FsSource::open(&slash).unwrap())[3].abs()), at("a/cur/m1"));
        let file = d.path().join("a/cur/m1");
        assert_eq!(bytes(walk(FsSource::open(&file).unwrap())[0].abs()), at("a/cur/m1"));
    }

    /// The walk on its own thread hands out the same entries, in the same order, with the same `lstat`s, kinds and
    /// open directories, as the walk on the caller's thread (how many directories the waiting chunks hold open is
    /// tested in tests/integration/memory.rs, under a limit of 64 open files).
    #[test]
    fn a_walk_ahead_is_the_same_walk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in ["cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp", "a/x", "empty"] {
            std::fs::create_dir_all(p.join(dir)).unwrap();
        }
        // A directory large enough for the look-ahead (and more than one chunk), then many one-file folders.
        for i in 0..(AHEAD_CHUNK + STAT_AHEAD_MIN + 7) {
            std::fs::write(p.join(format!("cur/{i:04}.host:2,S")), vec![b'm'; i % 13]).unwrap();
        }
        for f in 0..40 {
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(p.join(format!(".F{f:02}/{sub}"))).unwrap();
            }
            std::fs::write(p.join(format!(".F{f:02}/cur/1.host:2,S")), format!("folder {f}")).unwrap();
        }
        std::fs::write(p.join(".Sent/new/2"), "x").unwrap();
        std::fs::write(p.join("a/x/notmail"), "x").unwrap();
        std::os::unix::fs::symlink("cur", p.join("link")).unwrap();
        let fifo = std::ffi::CString::new(p.join("a/fifo").as_os_str().as_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a NUL-terminated path.
        let made = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
        assert_eq!(made, 0);
        let walk = |mut s: FsSource| {
            let mut got = Vec::new();
            while let Some(e) = s.next_entry() {
                let e = e.unwrap();
                got.push((e.rel, e.kind, e.stat, e.dir.map(|d| Stat::of(&d.metadata().unwrap()))));
            }
            got
        };
        let inline = walk(FsSource::open(p).unwrap());
        assert!(inline.len() > AHEAD_CHUNK + STAT_AHEAD_MIN + 40 * 4);
        assert_eq!(walk(FsSource::open(p).unwrap().walk_ahead()), inline);
        // Stopping early leaves the walk's thread to end on its own.
        let mut s = FsSource::open(p).unwrap().walk_ahead();
        assert!(s.next_entry().is_some());
        drop(s);
    }

    /// A walk on its own thread that panics makes the caller panic too (as the same walk on the caller's thread
    /// would), rather than looking like the end of the source: a pass with a walk cut short must fail, not commit
    /// a manifest without the files the walk did not reach.
    #[test]
    fn a_walk_ahead_that_panics_is_not_the_end_of_the_walk() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("cur")).unwrap();
        for name in ["a", "mover-test-walk-panics", "z"] {
            std::fs::write(d.path().join("cur").join(name), "x").unwrap();
        }
        let mut s = FsSource::open(d.path()).unwrap().walk_ahead();
        let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut n = 0;
            while let Some(e) = s.next_entry() {
                e.unwrap();
                n += 1;
            }
            n
        }));
        let panic = walked.expect_err("the walk ended as if it had reached the end");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"a walk that panics (test)"));
    }
}
