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
                let pack_key = layout::pack_key(&sealed.id);
                let mut written = 0;
                // Content-addressed or freshly named: never overwrite. AlreadyExists means the bytes are there.
                if store
                    .put(&pack_key, sealed.data.clone(), PutMode::Create)
                    .await
                    .map_err(|e| e.context(format!("uploading pack {pack_key}")))?
                    == PutOutcome::Written
                {
                    written += sealed.data.len() as u64;
                }
                let index_key = layout::index_key(&sealed.id);
                if store
                    .put(&index_key, sealed.index.clone(), PutMode::Create)
                    .await
                    .map_err(|e| e.context(format!("uploading index {index_key}")))?
                    == PutOutcome::Written
                {
                    written += sealed.index.len() as u64;
                }
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
