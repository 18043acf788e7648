//! Polling with deadlines: the only way a test waits for the cluster.

use std::time::{Duration, Instant};

/// Default deadline for a cluster to reach a state (debug build, 2 cores).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between probes.
pub const POLL: Duration = Duration::from_millis(100);

/// Probes until `probe` returns `Ok`, and panics after `timeout` with what the
/// last probe saw. `probe` returns `Err(description)` while the condition does
/// not hold yet.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}
