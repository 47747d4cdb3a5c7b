//! Re-reading a local directory when it changes.
//!
//! Polls a fingerprint (file names, sizes, modification times) every `interval`; on a change it
//! reloads, and hands the new state on only when it loads cleanly. A broken file is logged with
//! its path and document index and the last good state stays in force.

use std::time::Duration;

use super::{LocalDir, LocalState};

/// Watches `dir` forever (abort the task to stop), calling `on_change` with every good new state.
pub async fn run(dir: LocalDir, interval: Duration, mut on_change: impl FnMut(LocalState)) {
    let mut seen = dir.fingerprint();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = dir.fingerprint();
        if now == seen {
            continue;
        }
        seen = now;
        match dir.load() {
            Ok(state) => {
                tracing::info!(dir = %dir.root().display(), "local resources changed; reloaded");
                on_change(state);
            }
            Err(e) => tracing::error!(error = %e, "local resources changed but cannot be loaded; keeping the last good state"),
        }
    }
}
