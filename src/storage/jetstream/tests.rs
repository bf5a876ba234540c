//! The JetStream store against a real `nats-server` (one per test, fresh port and store
//! directory; SKIP when none is installed, except in CI): large checkpoints, leases contended by
//! two clients, takeover after a holder stops, fencing of a stale holder, and a server restart
//! in the middle of writes. The shared contract runs in `storage::tests`.

use std::time::Duration;

use super::*;
use crate::storage::tests::{checkpoint, delta, job};
use crate::tests::support::NatsServer;

/// The lease TTL and heartbeat of these tests.
const TTL: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_millis(500);
/// The bound of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

async fn store_on(server: &NatsServer, config: JetStreamConfig) -> JetStreamStorage {
    let client = async_nats::connect(server.url()).await.unwrap();
    JetStreamStorage::new(client, config)
}

fn config() -> JetStreamConfig {
    JetStreamConfig::default()
        .lease(TTL, HEARTBEAT)
        .write_timeout(Duration::from_secs(15))
}

/// Claims `job` on `store`, trying again while another holder has it, within [`DEADLINE`].
async fn claim_when_free(store: &JetStreamStorage, job: &str) -> Claim {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match store.claim(job).await {
                Ok(claim) => return claim,
                Err(StoreError::Claimed { .. }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("claim failed: {e}"),
            }
        }
    })
    .await
    .expect("the job was not free within the deadline")
}

fn event(job: &str, run: &str, seq: u64) -> Event {
    let mut e = delta(job, run, &format!("e{seq}"), 1000 + seq, 1);
    e.set_job_seq(seq);
    e
}

#[tokio::test]
async fn a_five_megabyte_checkpoint_goes_through_the_object_store() {
    let Some(server) =
        NatsServer::start("a_five_megabyte_checkpoint_goes_through_the_object_store")
    else {
        return;
    };
    let store = store_on(&server, config()).await;
    let mut big = checkpoint("job1", "run1", "big", 1);
    big.extra
        .insert("padding".into(), "x".repeat(5 * 1024 * 1024).into());
    big.job_seq = Some(3);
    let claim = store.claim("job1").await.unwrap();
    store.store_checkpoint(&big).await.unwrap();
    let mut small = checkpoint("job1", "run1", "small", 2);
    small.job_seq = Some(4);
    store.store_checkpoint(&small).await.unwrap();
    drop(claim);

    // A second store (another client) reads both back.
    let reader = store_on(&server, config()).await;
    assert_eq!(
        reader.retrieve_checkpoint("job1", "big").await.unwrap(),
        big
    );
    let all = reader.checkpoints_by_job("job1").await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], big);
    assert_eq!(all[1], small);
    assert_eq!(reader.last_job_seq("job1").await.unwrap(), 4);
}

#[tokio::test]
async fn two_stores_contending_for_a_job_exactly_one_wins() {
    let Some(server) = NatsServer::start("two_stores_contending_for_a_job_exactly_one_wins") else {
        return;
    };
    let (a, b) = (
        store_on(&server, config()).await,
        store_on(&server, config()).await,
    );
    a.ensure_ready().await.unwrap();
    for round in 0..5 {
        let job = format!("job{round}");
        let (ra, rb) = tokio::join!(a.claim(&job), b.claim(&job));
        let (winner, refused) = match (ra, rb) {
            (Ok(w), Err(r)) | (Err(r), Ok(w)) => (w, r),
            (Ok(_), Ok(_)) => panic!("both stores claimed {job}"),
            (Err(x), Err(y)) => panic!("nobody claimed {job}: {x}; {y}"),
        };
        assert!(
            matches!(&refused, StoreError::Claimed { holder, .. } if holder.contains("store ")),
            "{refused}"
        );
        assert_eq!(winner.job_id(), job);
        // Dropping the winner's claim releases it for the other store.
        let token = winner.token();
        drop(winner);
        let second = claim_when_free(&b, &job).await;
        assert!(second.token() > token);
    }
}

#[tokio::test]
async fn a_dead_holders_job_is_taken_over_after_the_lease_ttl() {
    let Some(server) = NatsServer::start("a_dead_holders_job_is_taken_over_after_the_lease_ttl")
    else {
        return;
    };
    let holder_client = async_nats::connect(server.url()).await.unwrap();
    let holder = JetStreamStorage::new(holder_client.clone(), config());
    let taker = store_on(&server, config()).await;
    let held = holder.claim("job1").await.unwrap();
    // Well past a heartbeat: the lease is renewed, not expired.
    tokio::time::sleep(TTL + HEARTBEAT).await;
    assert!(matches!(
        taker.claim("job1").await,
        Err(StoreError::Claimed { .. })
    ));
    // The holder's connection goes away without releasing anything (as when its process
    // dies): its heartbeats stop, the server expires the lease, and the taker gets the job.
    holder_client.drain().await.unwrap();
    let taken = claim_when_free(&taker, "job1").await;
    assert!(taken.token() > held.token());
    drop(held);
}

#[tokio::test]
async fn a_stale_holder_writes_nothing_after_a_takeover() {
    let Some(server) = NatsServer::start("a_stale_holder_writes_nothing_after_a_takeover") else {
        return;
    };
    let stale = store_on(&server, config()).await;
    let new = store_on(&server, config()).await;
    let old_claim = stale.claim("job1").await.unwrap();
    let lost = old_claim.lost();
    stale
        .store_checkpoint(&checkpoint("job1", "run1", "c1", 1))
        .await
        .unwrap();
    stale.store_event(&event("job1", "run1", 1)).await.unwrap();

    // The holder pauses (its heartbeats stop, and it does not notice time passing); the
    // server expires the lease and another store takes the job over.
    stale.freeze_heartbeats();
    let new_claim = claim_when_free(&new, "job1").await;
    assert!(
        !old_claim.is_lost(),
        "the paused holder noticed nothing yet"
    );

    // Its next writes are refused by the server (the key-value write) and then locally (the
    // event); the engine learns of it through the claim.
    let refused = stale
        .store_checkpoint(&checkpoint("job1", "run1", "c2", 2))
        .await
        .unwrap_err();
    assert!(refused.is_claim_lost(), "{refused}");
    assert!(!refused.is_retryable());
    let refused = stale
        .store_event(&event("job1", "run1", 2))
        .await
        .unwrap_err();
    assert!(refused.is_claim_lost(), "{refused}");
    assert!(
        tokio::time::timeout(DEADLINE, lost)
            .await
            .expect("the lost claim was not signalled")
    );
    assert!(old_claim.is_lost());
    let refused = stale.store_job(&job("job1", 1)).await.unwrap_err();
    assert!(refused.is_claim_lost(), "{refused}");

    // The new holder writes; nothing of the stale one's later writes exists.
    new.store_checkpoint(&checkpoint("job1", "run1", "c2b", 2))
        .await
        .unwrap();
    new.store_event(&event("job1", "run1", 2)).await.unwrap();
    let ids: Vec<String> = new
        .checkpoints_by_job("job1")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c1", "c2b"]);
    let events = new.event_contents("job1", "run1", None).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.job_seq).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
    assert!(new.retrieve_job("job1").await.unwrap().is_none());
    drop(new_claim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_writes_loses_nothing_acknowledged_and_duplicates_nothing() {
    let Some(mut server) = NatsServer::start(
        "a_server_restart_mid_writes_loses_nothing_acknowledged_and_duplicates_nothing",
    ) else {
        return;
    };
    const WRITES: u64 = 60;
    // A lease long enough to outlive the restart: the writes stay fenced throughout.
    let store = store_on(
        &server,
        JetStreamConfig::default()
            .lease(Duration::from_secs(30), Duration::from_secs(1))
            .write_timeout(Duration::from_secs(20)),
    )
    .await;
    let claim = store.claim("job1").await.unwrap();
    let (progress, mut acked) = tokio::sync::mpsc::unbounded_channel();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for seq in 1..=WRITES {
                let mut cp = checkpoint("job1", "run1", &format!("c{seq}"), seq as u32);
                cp.job_seq = Some(seq);
                store.store_checkpoint(&cp).await?;
                store.store_event(&event("job1", "run1", seq)).await?;
                let _ = progress.send(seq);
            }
            Ok::<_, StoreError>(())
        })
    };
    // A reader on its own connection keeps asking for the last number throughout: it waits
    // for the server instead of failing, and never sees the number go back.
    let reader = {
        let reader = store_on(&server, config()).await;
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < WRITES {
                let last = reader.last_job_seq("job1").await?;
                assert!(last >= seen, "last_job_seq went back from {seen} to {last}");
                seen = last;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, StoreError>(())
        })
    };
    // Restart once a third of the writes were acknowledged.
    tokio::time::timeout(DEADLINE, async {
        while acked.recv().await.is_some_and(|seq| seq < WRITES / 3) {}
    })
    .await
    .unwrap();
    tokio::task::block_in_place(|| server.restart());
    tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writes did not finish within 60 s")
        .unwrap()
        .expect("a write failed across the restart");
    tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("the reader did not see the last write")
        .unwrap()
        .expect("a read failed across the restart");
    assert!(!claim.is_lost());

    let reader = store_on(&server, config()).await;
    let events = reader.event_contents("job1", "run1", None).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.job_seq.unwrap())
            .collect::<Vec<_>>(),
        (1..=WRITES).collect::<Vec<_>>()
    );
    let checkpoints = reader.checkpoints_by_job("job1").await.unwrap();
    assert_eq!(checkpoints.len(), WRITES as usize);
    assert_eq!(reader.last_job_seq("job1").await.unwrap(), WRITES);
    drop(claim);
}

#[tokio::test]
async fn last_job_seq_reads_the_job_the_last_checkpoint_and_the_last_event() {
    let Some(server) =
        NatsServer::start("last_job_seq_reads_the_job_the_last_checkpoint_and_the_last_event")
    else {
        return;
    };
    let store = store_on(&server, config()).await;
    assert_eq!(store.last_job_seq("job1").await.unwrap(), 0);
    let mut record = job("job1", 1);
    record.job_seq = Some(5);
    store.store_job(&record).await.unwrap();
    assert_eq!(store.last_job_seq("job1").await.unwrap(), 5);
    store.store_event(&event("job1", "run1", 6)).await.unwrap();
    assert_eq!(store.last_job_seq("job1").await.unwrap(), 6);
    let mut cp = checkpoint("job1", "run1", "c7", 7);
    cp.job_seq = Some(7);
    store.store_checkpoint(&cp).await.unwrap();
    assert_eq!(store.last_job_seq("job1").await.unwrap(), 7);
    // A claim writes its records after the last event; the answer stays.
    store.store_event(&event("job1", "run1", 8)).await.unwrap();
    let claim = store.claim("job1").await.unwrap();
    assert_eq!(store.last_job_seq("job1").await.unwrap(), 8);
    // Another job's records do not count.
    let mut other = checkpoint("job2", "run1", "c99", 1);
    other.job_seq = Some(99);
    store.store_checkpoint(&other).await.unwrap();
    assert_eq!(store.last_job_seq("job1").await.unwrap(), 8);
    drop(claim);
}

#[tokio::test]
async fn an_event_written_twice_is_stored_once() {
    let Some(server) = NatsServer::start("an_event_written_twice_is_stored_once") else {
        return;
    };
    let store = store_on(&server, config()).await;
    let e = event("job1", "run1", 1);
    store.store_event(&e).await.unwrap();
    store.store_event(&e).await.unwrap();
    assert_eq!(
        store.event_contents("job1", "run1", None).await.unwrap(),
        [e]
    );
}

/// The holder process of [`a_killed_holder_process_loses_its_job_after_the_lease_ttl`], not a
/// test of its own (ignored; that test runs it with `--ignored --exact`): claims `job1` on the
/// server `PERSTACK_TEST_LEASE_HOLDER` names, says so on stdout, and holds it until killed.
#[tokio::test]
#[ignore = "run as a child process by a_killed_holder_process_loses_its_job_after_the_lease_ttl"]
async fn lease_holder_process() {
    let url = std::env::var("PERSTACK_TEST_LEASE_HOLDER").expect("PERSTACK_TEST_LEASE_HOLDER");
    let store = JetStreamStorage::new(async_nats::connect(url).await.unwrap(), config());
    let _claim = store.claim("job1").await.unwrap();
    println!("CLAIMED");
    tokio::time::sleep(DEADLINE * 3).await;
}

/// Kills the child when dropped (a failing assertion included).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_killed_holder_process_loses_its_job_after_the_lease_ttl() {
    use std::io::BufRead;
    let Some(server) =
        NatsServer::start("a_killed_holder_process_loses_its_job_after_the_lease_ttl")
    else {
        return;
    };
    let mut child = KillOnDrop(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "storage::jetstream::tests::lease_holder_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PERSTACK_TEST_LEASE_HOLDER", server.url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (said, claimed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("CLAIMED") {
                let _ = said.send(());
            }
        }
    });
    tokio::task::spawn_blocking(move || claimed.recv_timeout(DEADLINE))
        .await
        .unwrap()
        .expect("the holder process did not claim the job");

    let taker = store_on(&server, config()).await;
    match taker.claim("job1").await {
        Err(StoreError::Claimed { holder, .. }) => assert!(
            holder.starts_with(&format!("pid {} on ", child.0.id())),
            "{holder}"
        ),
        other => panic!("expected the holder process's claim, got {other:?}"),
    }
    // kill -9: nothing is released; the server expires the lease.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    drop(claim_when_free(&taker, "job1").await);
}
