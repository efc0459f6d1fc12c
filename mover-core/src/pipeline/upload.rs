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
}

impl Uploader {
    pub(super) fn reap(&mut self) -> Result<()> {
        while let Some(done) = self.tasks.try_join_next() {
            self.stored += done.map_err(|e| Error::new(ErrorKind::Other, format!("upload task failed: {e}")))??;
        }
        Ok(())
    }

    pub(super) fn upload(&mut self, sealed: SealedPack) -> Result<()> {
        self.reap()?;
        let kib = ((sealed.data.len() >> 10) as u32).clamp(1, self.budget_kib);
        let permit = self
            .handle
            .block_on(self.budget.clone().acquire_many_owned(kib))
            .map_err(|_| Error::new(ErrorKind::Cancelled, "upload budget closed"))?;
        let store = self.store.clone();
        let progress = self.progress.clone();
        self.packs += 1;
        self.tasks.spawn_on(
            async move {
                let _permit = permit;
                // The pack first: an index names only a pack that is already durable.
                let written = create(&store, &layout::pack_key(&sealed.id), &sealed.data).await?
                    + create(&store, &layout::index_key(&sealed.id), &sealed.index).await?;
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
