//! The one retry policy, on the tokio clock: with time paused, a job's virtual duration is the
//! sum of its retry waits, so these tests check the waits exactly without depending on speed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use perstack::engine::{Engine, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::{EventPayload, JobStatus};
use tokio::time::Instant;

const CONFIG: &str = r#"
[experts."solo"]
instruction = "Answer."
"#;

/// Run `solo` on `script` with paused time; the virtual time it took and its retry reasons.
async fn timed(script: &str) -> (Duration, JobStatus, Vec<String>) {
    let cfg = perstack::config::parse(CONFIG, std::path::Path::new("perstack.toml")).unwrap();
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let engine = Engine::builder()
        .settings(Settings::new(cfg.experts))
        .model(Arc::new(
            ScriptedModel::parse(script, "script.toml").unwrap(),
        ))
        .on_event(move |e| {
            if let EventPayload::Retry(r) = &e.event.payload {
                seen.lock().unwrap().push(r.reason.clone());
            }
        })
        .build();
    let start = Instant::now();
    let outcome = engine
        .run("solo", "go")
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let elapsed = start.elapsed();
    let reasons = reasons.lock().unwrap().clone();
    (elapsed, outcome.job.status, reasons)
}

fn failing(error: &str, then: &str) -> String {
    format!(
        "[[turns]]\nexpert = \"solo\"\nerror = {error}\n\n[[turns]]\nexpert = \"solo\"\ntext = \"{then}\"\n"
    )
}

fn within(d: Duration, lo_ms: u64, hi_ms: u64) -> bool {
    d >= Duration::from_millis(lo_ms) && d < Duration::from_millis(hi_ms)
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_its_retry_after_then_succeeds() {
    let script = failing(
        r#"{ status = 429, message = "slow down", retryAfterMs = 7000 }"#,
        "done",
    );
    let (elapsed, status, reasons) = timed(&script).await;
    assert_eq!(status, JobStatus::Completed);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("slow down"), "{reasons:?}");
    assert!(within(elapsed, 7000, 7500), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_capped_at_sixty_seconds() {
    let script = failing(
        r#"{ status = 429, message = "come back tomorrow", retryAfterMs = 86400000 }"#,
        "done",
    );
    let (elapsed, status, _) = timed(&script).await;
    assert_eq!(status, JobStatus::Completed);
    assert!(within(elapsed, 60_000, 60_500), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn without_retry_after_the_backoff_grows_exponentially_with_jitter() {
    // Three 503s: waits of 500, 1000 and 2000 ms, each ±20 %.
    let mut script = String::new();
    for _ in 0..3 {
        script.push_str(
            "[[turns]]\nexpert = \"solo\"\nerror = { status = 503, message = \"unavailable\" }\n\n",
        );
    }
    script.push_str("[[turns]]\nexpert = \"solo\"\ntext = \"done\"\n");
    let (elapsed, status, reasons) = timed(&script).await;
    assert_eq!(status, JobStatus::Completed);
    assert_eq!(reasons.len(), 3);
    assert!(within(elapsed, 2800, 4200), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_shorter_than_the_backoff_does_not_hurry_the_retry() {
    let script = failing(
        r#"{ status = 429, message = "now", retryAfterMs = 0 }"#,
        "done",
    );
    let (elapsed, status, _) = timed(&script).await;
    assert_eq!(status, JobStatus::Completed);
    assert!(within(elapsed, 400, 600), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_stops_at_once_without_waiting() {
    let script = failing(r#"{ status = 400, message = "bad request" }"#, "never");
    let (elapsed, status, reasons) = timed(&script).await;
    assert_eq!(status, JobStatus::StoppedByError);
    assert!(reasons.is_empty());
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
}
