//! The bounded argon2id pool (SPEC §3, §14 "Overload"). Hashing runs on a
//! few dedicated low-priority threads, never on the proxy's event loop; a
//! full queue or a long wait answers 503 `BUSY` instead of starving the proxy.

use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::oneshot;

use crate::config::PasswordsSection;
use crate::error::Error;
use crate::metrics;

enum Work {
    Hash(String),
    /// Several hashes in one job (backup codes).
    HashMany(Vec<String>),
    /// Which of several hashes `secret` matches (backup codes).
    VerifyAny(String, Vec<String>),
    /// Verify against `Some(hash)`; `None` burns the same time against a dummy hash.
    Verify(String, Option<String>),
}

enum Outcome {
    Hashed(String),
    HashedMany(Vec<String>),
    Matched(Option<usize>),
    Verified(bool),
    TimedOut,
    Failed,
}

struct Job {
    work: Work,
    enqueued: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// Handle to the hashing threads; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    queue: SyncSender<Job>,
    queue_timeout: Duration,
}

impl PasswordHasher {
    /// Starts the worker threads (`workers = 0`: one per spare core, at least one).
    pub fn start(cfg: &PasswordsSection) -> PasswordHasher {
        let workers = if cfg.workers > 0 {
            cfg.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1))
                .unwrap_or(1)
                .max(1)
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue_capacity);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let queue_timeout = Duration::from_millis(cfg.queue_timeout_ms);
        // A real hash to verify against for unknown users, so they cost the same.
        let dummy = hash_now("portcullis-dummy-password").unwrap_or_default();
        for i in 0..workers {
            let rx = rx.clone();
            let dummy = dummy.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = {
                            let Ok(guard) = rx.lock() else { return };
                            match guard.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        };
                        let outcome = if job.enqueued.elapsed() > queue_timeout {
                            Outcome::TimedOut
                        } else {
                            let start = Instant::now();
                            let out = match job.work {
                                Work::Hash(pw) => hash_now(&pw)
                                    .map(Outcome::Hashed)
                                    .unwrap_or(Outcome::Failed),
                                Work::HashMany(secrets) => secrets
                                    .iter()
                                    .map(|s| hash_now(s))
                                    .collect::<Option<Vec<_>>>()
                                    .map(Outcome::HashedMany)
                                    .unwrap_or(Outcome::Failed),
                                Work::VerifyAny(secret, hashes) => Outcome::Matched(
                                    hashes.iter().position(|h| verify_now(&secret, h)),
                                ),
                                Work::Verify(pw, hash) => match hash {
                                    Some(h) => Outcome::Verified(verify_now(&pw, &h)),
                                    None => {
                                        let _ = verify_now(&pw, &dummy);
                                        Outcome::Verified(false)
                                    }
                                },
                            };
                            metrics::PASSWORD_HASH_SECONDS.observe(start.elapsed().as_secs_f64());
                            out
                        };
                        let _ = job.reply.send(outcome);
                    }
                })
                .expect("spawn argon2 worker");
        }
        PasswordHasher {
            queue: tx,
            queue_timeout,
        }
    }

    async fn submit(&self, work: Work) -> Result<Outcome, Error> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work,
            enqueued: Instant::now(),
            reply,
        };
        let retry_after = self.queue_timeout.as_secs().max(1);
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Error::Busy { retry_after }),
            Err(TrySendError::Disconnected(_)) => return Err(Error::Internal),
        }
        match rx.await {
            Ok(Outcome::TimedOut) => Err(Error::Busy { retry_after }),
            Ok(Outcome::Failed) | Err(_) => Err(Error::Internal),
            Ok(outcome) => Ok(outcome),
        }
    }

    /// argon2id PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        match self.submit(Work::Hash(password.to_string())).await? {
            Outcome::Hashed(h) => Ok(h),
            _ => Err(Error::Internal),
        }
    }

    /// argon2id hashes of several secrets (backup codes), in one job.
    pub async fn hash_many(&self, secrets: Vec<String>) -> Result<Vec<String>, Error> {
        match self.submit(Work::HashMany(secrets)).await? {
            Outcome::HashedMany(h) => Ok(h),
            _ => Err(Error::Internal),
        }
    }

    /// The index of the hash in `hashes` that `secret` matches, if any.
    pub async fn verify_any(
        &self,
        secret: &str,
        hashes: Vec<String>,
    ) -> Result<Option<usize>, Error> {
        if hashes.is_empty() {
            return Ok(None);
        }
        match self
            .submit(Work::VerifyAny(secret.to_string(), hashes))
            .await?
        {
            Outcome::Matched(i) => Ok(i),
            _ => Err(Error::Internal),
        }
    }

    /// Checks `password` against `hash`; with `None` (unknown user or no
    /// password set) it does the same work and answers false.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        match self
            .submit(Work::Verify(password.to_string(), hash.map(str::to_string)))
            .await?
        {
            Outcome::Verified(ok) => Ok(ok),
            _ => Err(Error::Internal),
        }
    }
}

/// OWASP argon2id (m=19456 KiB, t=2, p=1), which is `Argon2::default()`.
pub fn hash_now(password: &str) -> Option<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .ok()
        .map(|h| h.to_string())
}

fn verify_now(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashing threads run at the lowest priority (nice 19): during a login
/// storm on 2 cores, nice 10 let proxied p99 reach 2.05× idle, nice 19 kept
/// it at 1.85× with logins still above 20/s (`bench/run.sh`, case 8).
fn lower_priority() {
    // SAFETY: setpriority on the calling thread (tid from gettid) only changes its nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cap: usize) -> PasswordsSection {
        PasswordsSection {
            workers: 1,
            queue_capacity: cap,
            queue_timeout_ms: 10_000,
        }
    }

    #[tokio::test]
    async fn hashes_are_owasp_argon2id_and_verify() {
        let h = PasswordHasher::start(&cfg(4));
        let hash = h.hash("correct horse").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(h.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!h.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!h.verify("anything", None).await.unwrap());
        assert!(!h.verify("anything", Some("not-a-phc")).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy() {
        let h = PasswordHasher::start(&cfg(1));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.hash("some password").await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert!(
            results.iter().any(|r| matches!(r, Err(Error::Busy { .. }))),
            "six hashes at once through a queue of one must refuse some"
        );
        assert!(results.iter().any(|r| r.is_ok()));
    }
}
