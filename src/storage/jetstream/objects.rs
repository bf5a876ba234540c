//! Checkpoints too large for one message, in the object store: stored and read back whole,
//! trying again through a disconnect until a deadline.

use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use tokio::io::AsyncReadExt;

use super::wire::unavailable;
use crate::storage::StoreError;

/// Reads object `name` whole, trying again through disconnects until `deadline`.
pub(super) async fn get_object(
    objects: &ObjectStore,
    name: &str,
    deadline: Duration,
) -> Result<Vec<u8>, StoreError> {
    let mut body = Vec::new();
    let started = tokio::time::Instant::now();
    loop {
        let read = async {
            let mut reader = objects.get(name).await.map_err(|e| e.to_string())?;
            body.clear();
            reader
                .read_to_end(&mut body)
                .await
                .map_err(|e| e.to_string())
        };
        match read.await {
            Ok(_) => return Ok(body),
            Err(e) if started.elapsed() < deadline => {
                tracing::debug!(error = %e, "reading a large checkpoint failed; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(unavailable("read", &e)),
        }
    }
}

/// Stores `body` as object `name`, trying again through disconnects until `deadline`.
pub(super) async fn put_object(
    objects: &ObjectStore,
    name: &str,
    body: &[u8],
    deadline: Duration,
) -> Result<(), StoreError> {
    let started = tokio::time::Instant::now();
    loop {
        let mut reader = body;
        match objects.put(name, &mut reader).await {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() < deadline => {
                tracing::debug!(error = %e, "storing a large checkpoint failed; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(unavailable("store checkpoint", &e)),
        }
    }
}
