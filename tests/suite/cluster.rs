//! The cluster on NATS JetStream, against a real `nats-server` on 127.0.0.1 (one per test, with
//! a fresh port and store directory; see `common::NatsServer`).

use std::time::Duration;

use super::common::NatsServer;

/// The harness itself: a JetStream key-value entry written before a server restart is read back
/// after it, through a client that reconnected on its own.
#[tokio::test]
async fn nats_server_keeps_jetstream_state_across_a_restart() {
    let Some(mut server) = NatsServer::start("nats_server_keeps_jetstream_state_across_a_restart")
    else {
        return;
    };
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "harness".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    kv.put("k", "v1".into()).await.unwrap();

    server.restart();

    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match kv.get("k").await {
                Ok(Some(value)) => return value,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the value was not readable within 20 s of the restart");
    assert_eq!(&read[..], b"v1");
}
