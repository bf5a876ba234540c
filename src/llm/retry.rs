//! The one retry policy: how long to wait before the next generation after `n` consecutive
//! failures. The *whether* lives in the agent machine (retryable + `retryCount < maxRetries`,
//! each retry a visible `retry` event); this module only computes the wait, on the tokio clock
//! so tests run with paused time.

use std::time::Duration;

/// The longest `Retry-After` the engine honours; a server asking for more gets this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The wait before retry number `retry_count` (0 = first attempt, no wait): exponential
/// backoff with jitter, or the server's `Retry-After` (capped at [`MAX_RETRY_AFTER`]) when
/// that is longer. A server never makes the engine retry sooner than its own backoff.
pub(crate) fn wait(retry_count: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = backoff(retry_count);
    match retry_after {
        Some(asked) if retry_count > 0 => backoff.max(asked.min(MAX_RETRY_AFTER)),
        _ => backoff,
    }
}

/// Exponential backoff with jitter: base 2^(n-1) × 500 ms, capped at 30 s, ±20 % jitter.
pub(crate) fn backoff(retry_count: u32) -> Duration {
    if retry_count == 0 {
        return Duration::ZERO;
    }
    let exp = retry_count.saturating_sub(1).min(16);
    let base_ms = (500u64 << exp).min(30_000);
    let jitter = rand::random_range(0.8..1.2);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    Duration::from_millis((base_ms as f64 * jitter) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert!(backoff(1) <= Duration::from_millis(600));
        assert!(backoff(3) >= Duration::from_millis(1600));
        assert!(backoff(30) <= Duration::from_millis(36_000));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let secs = Duration::from_secs;
        assert_eq!(wait(1, Some(secs(7))), secs(7));
        assert_eq!(wait(1, Some(secs(3600))), MAX_RETRY_AFTER);
        // Shorter than the backoff: the backoff stands.
        let w = wait(3, Some(Duration::ZERO));
        assert!(w >= Duration::from_millis(1600) && w <= Duration::from_millis(2400));
        // The first attempt never waits.
        assert_eq!(wait(0, Some(secs(7))), Duration::ZERO);
    }
}
