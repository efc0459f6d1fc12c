//! Recycled byte buffers for the hot paths of a migration: files read whole, open segments, and compressed
//! segments. A buffer of 128 KiB or more would otherwise get fresh pages from the kernel every time (glibc maps
//! allocations that large and unmaps them on free), faulted in and cleared on first touch: on the generated
//! corpus that was most of a migration's 70,000 page faults and a sixth of its CPU time. Buffers come back with
//! [`give`], or when the last [`Bytes`] made by [`bytes`] is dropped. The pool keeps at most [`KEEP`] bytes.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers smaller than this are plain allocations (glibc reuses those without new pages).
pub const MIN: usize = 128 << 10;
/// Bytes of free buffers kept for reuse.
pub const KEEP: usize = 16 << 20;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer of at least `cap` bytes of capacity.
pub fn take(cap: usize) -> Vec<u8> {
    if cap < MIN {
        return Vec::with_capacity(cap);
    }
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    // The smallest free buffer that fits and is not more than twice as large as needed.
    let best = (free.iter().enumerate())
        .filter(|(_, b)| b.capacity() >= cap && b.capacity() <= 2 * cap)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    match best {
        Some(i) => free.swap_remove(i),
        // Exactly `cap`: the memory held stays what the pipeline's budgets count.
        None => Vec::with_capacity(cap),
    }
}

/// `buf` as [`Bytes`] that give the buffer back when dropped.
pub fn bytes(buf: Vec<u8>) -> Bytes {
    if buf.capacity() < MIN {
        return Bytes::from(buf);
    }
    Bytes::from_owner(Recycled(buf))
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// Give `buf` back for reuse (its content is dropped).
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() < MIN {
        return;
    }
    buf.clear();
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    let mut kept: usize = free.iter().map(|b| b.capacity()).sum();
    // Make room by dropping the smallest buffers first; a buffer larger than the whole budget is freed.
    while kept + buf.capacity() > KEEP && !free.is_empty() {
        let i = (free.iter().enumerate()).min_by_key(|(_, b)| b.capacity()).map(|(i, _)| i).unwrap_or(0);
        kept -= free.swap_remove(i).capacity();
    }
    if kept + buf.capacity() <= KEEP {
        free.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused() {
        let mut b = take(MIN * 3);
        b.extend_from_slice(&vec![7u8; MIN * 3 - 1]);
        let ptr = b.as_ptr();
        let bytes = bytes(b);
        assert_eq!(bytes.len(), MIN * 3 - 1);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        // Other tests may take it first; when it comes back to this thread it is the same allocation, empty.
        let again = take(MIN * 3);
        assert!(again.is_empty());
        if again.as_ptr() == ptr {
            assert!(again.capacity() >= MIN * 3);
        }
        assert!(take(100).capacity() >= 100);
    }
}
