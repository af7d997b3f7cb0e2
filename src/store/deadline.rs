//! The deadline of a store call (SPEC §14, `database.timeout_ms`) for a
//! backend whose calls can hang on the network: [`bounded`] gives up on a
//! call, the wait for a pooled connection and the query together, with
//! [`StoreError::Unavailable`], so a partition (connections open, no bytes)
//! answers 503 `STORE_UNAVAILABLE` within the deadline instead of hanging.
//! PostgreSQL applies it once per call ([`super::sql::Backend::run`]).
//!
//! A call that gave up is dropped mid-flight; then `after_deadline` runs so
//! the connections that may be stuck leave the pool and the next call opens
//! a fresh one: the store recovers as soon as the database answers again.
//! SQLite enforces the same deadline inside its calls (see [`super::sqlite`]),
//! where a call either completes or rolls back.

use std::future::Future;
use std::time::Duration;

use super::{StoreError, StoreResult};

/// Runs `call`, or gives up after `timeout`: counts the metric, drops the
/// call, then runs `after_deadline`.
pub async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    call: impl Future<Output = StoreResult<T>>,
    after_deadline: impl FnOnce(),
) -> StoreResult<T> {
    // `let`, not `match` on the expression: the abandoned call (and the
    // connection it holds) must be dropped before `after_deadline` runs
    let outcome = tokio::time::timeout(timeout, call).await;
    match outcome {
        Ok(result) => result,
        Err(_) => {
            crate::metrics::store_deadline_exceeded();
            after_deadline();
            Err(StoreError::Unavailable(format!(
                "{what}: no answer within {} ms (deadline)",
                timeout.as_millis()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A call that never answers gives up at the deadline, counted, after
    /// dropping the call and before telling the backend.
    #[tokio::test]
    async fn a_call_that_never_answers_gives_up_at_its_deadline() {
        struct Held(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Held {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = Held(dropped.clone());
        let before = crate::metrics::STORE_TIMEOUTS.get();
        let start = Instant::now();
        let mut told = false;
        let e = bounded(
            Duration::from_millis(200),
            "user_by_id",
            async move {
                let _held = held;
                std::future::pending::<StoreResult<()>>().await
            },
            || {
                assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
                told = true;
            },
        )
        .await
        .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("user_by_id"), "{e}");
        assert!(e.to_string().contains("deadline"), "{e}");
        assert!(told);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(900),
            "{took:?}"
        );
        assert!(crate::metrics::STORE_TIMEOUTS.get() > before);
        // an answer within the deadline is the answer
        assert_eq!(
            bounded(Duration::from_secs(1), "ping", async { Ok(7) }, || {
                panic!("not at the deadline")
            })
            .await
            .unwrap(),
            7
        );
    }
}
