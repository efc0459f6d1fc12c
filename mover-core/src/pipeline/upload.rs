//! Stage 4: uploads of sealed packs, as tokio tasks limited by a byte budget.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::pack::SealedPack;

pub(super) struct Uploader {
    pub(super) handle: Handle,
    pub(super) store: DynStore,
    pub(super) budget: Arc<Semaphore>,
    pub(super) budget_kib: u32,
    pub(super) tasks: tokio::task::JoinSet<Result<u64>>,
    pub(super) stored: u64,
    pub(super) packs: u64,
    pub(super) progress: Option<Arc<Progress>>,
    /// The dedupe index cache: a pack this host stored is added as soon as its index is, so the next pass does
    /// not read it back from the destination.
    pub(super) cache: Option<crate::index::IndexCache>,
}

impl Uploader {
    pub(super) fn reap(&mut self) -> Result<()> {
        while let Some(done) = self.tasks.try_join_next() {
            self.stored += done.map_err(|e| Error::new(ErrorKind::Other, format!("upload task failed: {e}")))??;
        }
        Ok(())
    }

    /// Store a sealed pack and then its index. With `streamed`, the pack's object was written as it grew and
    /// `sealed.data` is only its end (table and trailer): it is appended and the object committed.
    pub(super) fn upload(
        &mut self,
        sealed: SealedPack,
        streamed: Option<Box<dyn crate::store::ObjectWriter>>,
    ) -> Result<()> {
        self.reap()?;
        // A streamed pack is charged its whole size too: its bytes are on their way to disk rather than in memory,
        // but the budget also bounds how many packs are being flushed at once.
        let bytes = streamed.as_ref().map_or(sealed.data.len() as u64, |w| w.written() + sealed.data.len() as u64);
        let kib = ((bytes >> 10).min(u32::MAX as u64) as u32).clamp(1, self.budget_kib);
        let permit = self
            .handle
            .block_on(self.budget.clone().acquire_many_owned(kib))
            .map_err(|_| Error::new(ErrorKind::Cancelled, "upload budget closed"))?;
        let store = self.store.clone();
        let progress = self.progress.clone();
        let cache = self.cache.clone();
        self.packs += 1;
        self.tasks.spawn_on(
            async move {
                let _permit = permit;
                let started = Instant::now();
                // The pack first: an index names only a pack that is already durable.
                let key = layout::pack_key(&sealed.id);
                let pack_bytes = match streamed {
                    None => create(&store, &key, &sealed.data).await?,
                    Some(mut w) => {
                        let tail = sealed.data.clone();
                        let commit = move || -> Result<u64> {
                            w.write(&tail)?;
                            let n = w.written();
                            Ok(if w.commit()? == PutOutcome::Written { n } else { 0 })
                        };
                        tokio::task::spawn_blocking(commit)
                            .await
                            .map_err(|e| Error::new(ErrorKind::Other, format!("pack write task failed: {e}")))?
                            .map_err(|e| e.context(format!("uploading {key}")))?
                    }
                };
                let written = pack_bytes + create(&store, &layout::index_key(&sealed.id), &sealed.index).await?;
                if let Some(cache) = cache {
                    // Best effort, like every use of the cache (a few KiB appended; waited for, so that the pass,
                    // and the process, do not end in the middle of it).
                    let pack = sealed.decoded;
                    let _ = tokio::task::spawn_blocking(move || cache.add(&pack)).await;
                }
                let ms = started.elapsed().as_millis() as u64;
                tracing::debug!(pack = %sealed.id, bytes = pack_bytes, index = sealed.index.len(), ms, "pack stored");
                if let Some(p) = progress {
                    p.stored.fetch_add(written, Ordering::Relaxed);
                }
                Ok(written)
            },
            &self.handle,
        );
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<u64> {
        while let Some(done) = self.handle.block_on(self.tasks.join_next()) {
            self.stored += done.map_err(|e| Error::new(ErrorKind::Other, format!("upload task failed: {e}")))??;
        }
        Ok(self.stored)
    }
}

/// Create `key` (never overwrite: content-addressed or freshly named, so an existing object already holds these
/// bytes); returns the bytes written (0 when it was already there).
async fn create(store: &DynStore, key: &str, data: &Bytes) -> Result<u64> {
    let outcome =
        store.put(key, data.clone(), PutMode::Create).await.map_err(|e| e.context(format!("uploading {key}")))?;
    Ok(if outcome == PutOutcome::Written { data.len() as u64 } else { 0 })
}
