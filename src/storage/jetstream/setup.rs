//! The streams and buckets a [`JetStreamStorage`](super::JetStreamStorage) uses ([`Handles`]),
//! created on first use or opened as they are (the table in the parent module's doc).

use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, kv, object_store, stream};

use super::config::JetStreamConfig;
use super::names;
use super::wire::unavailable;
use crate::storage::StoreError;

/// The streams and buckets of a store.
#[derive(Clone)]
pub(crate) struct Handles {
    pub(super) data: Stream,
    pub(super) leases: Stream,
    pub(super) events: Stream,
    pub(super) objects: ObjectStore,
}

/// Creates (or opens) the streams and buckets.
pub(super) async fn create_handles(
    js: &jetstream::Context,
    config: &JetStreamConfig,
) -> Result<Handles, StoreError> {
    let replicas = config.replicas.max(1);
    let data = open_kv(
        js,
        kv::Config {
            bucket: names::DATA_BUCKET.to_owned(),
            description: "perstack jobs, run settings, checkpoints".to_owned(),
            history: 1,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    let leases = open_kv(
        js,
        kv::Config {
            bucket: names::LEASE_BUCKET.to_owned(),
            description: "perstack job leases".to_owned(),
            history: 1,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            // Per-key TTLs; the marker left by an expiry lives one TTL.
            limit_markers: Some(config.lease_ttl.max(Duration::from_secs(1))),
            ..Default::default()
        },
    )
    .await?;
    let events_config = stream::Config {
        name: names::EVENT_STREAM.to_owned(),
        description: Some("perstack stored events, perstack.events.<jobId>".to_owned()),
        subjects: vec![names::EVENT_SUBJECTS.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        max_age: config.event_max_age,
        duplicate_window: Duration::from_secs(120),
        num_replicas: replicas,
        storage: stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    };
    let events = match js.get_or_create_stream(events_config).await {
        Ok(stream) => stream,
        Err(e) => return Err(unavailable("set up", &e)),
    };
    let objects_config = object_store::Config {
        bucket: names::OBJECT_BUCKET.to_owned(),
        description: Some("perstack checkpoints too large for one message".to_owned()),
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let objects = match js.create_object_store(objects_config).await {
        Ok(store) => store,
        Err(create) => js
            .get_object_store(names::OBJECT_BUCKET)
            .await
            .map_err(|_| unavailable("set up", &create))?,
    };
    Ok(Handles {
        data,
        leases,
        events,
        objects,
    })
}

/// Creates a key-value bucket, or opens it when it exists (with whatever limits it has), and
/// returns its stream.
async fn open_kv(js: &jetstream::Context, config: kv::Config) -> Result<Stream, StoreError> {
    let bucket = config.bucket.clone();
    if let Err(create) = js.create_key_value(config).await {
        js.get_key_value(&bucket)
            .await
            .map_err(|_| unavailable("set up", &create))?;
    }
    js.get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| unavailable("set up", &e))
}
