//! [`JetStreamConfig`]: the limits and timings of a [`JetStreamStorage`](super::JetStreamStorage)
//! (replicas, lease TTL and heartbeat, how long an operation keeps trying, event retention).

use std::time::Duration;

/// Limits and timings of a [`JetStreamStorage`](super::JetStreamStorage).
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Replicas of every stream and bucket this store creates: 1 for a single server, 3 (or
    /// 5) on a clustered one. Ignored for streams that already exist.
    pub replicas: usize,
    /// How long a claim outlives its holder's last acknowledged heartbeat. The server removes
    /// the lease then, and another worker can take the job. Whole seconds (rounded up), at
    /// least one.
    pub lease_ttl: Duration,
    /// How often the holder renews its lease; well under [`JetStreamConfig::lease_ttl`] (a
    /// third is usual), or a slow round trip loses the claim. A store uses at most half the
    /// TTL, whatever is set here.
    pub heartbeat: Duration,
    /// How long one operation keeps trying while the server does not answer (a restart, a
    /// partition) before it fails with [`StoreError::Unavailable`](crate::storage::StoreError::Unavailable).
    pub write_timeout: Duration,
    /// How long stored events are kept; zero keeps them until deleted. Ignored for an existing
    /// stream.
    pub event_max_age: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            replicas: 1,
            lease_ttl: Duration::from_secs(15),
            heartbeat: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            event_max_age: Duration::ZERO,
        }
    }
}

impl JetStreamConfig {
    /// The lease TTL and heartbeat interval.
    pub fn lease(mut self, ttl: Duration, heartbeat: Duration) -> Self {
        self.lease_ttl = ttl;
        self.heartbeat = heartbeat;
        self
    }

    /// Replicas of the streams and buckets this store creates.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How long an operation keeps trying through a disconnect.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How long stored events are kept (zero: until deleted).
    pub fn event_max_age(mut self, age: Duration) -> Self {
        self.event_max_age = age;
        self
    }
}
