//! Background jobs that must run on one replica at a time: the session sweeper, the trigger
//! sweep, approval expiry and the apps' deploy sweep. Each holds a named lease in the store ([`crate::store`]'s
//! `leases` table), renewed every third of its TTL; a job runs only while its replica holds
//! the lease, and stops before the lease could have expired unrenewed. A replica that dies
//! stops renewing, and another one takes the job within a TTL and a retry; one that shuts
//! down releases its leases for the others to take at once.
//!
//! On SQLite there is one replica per data file, and jobs run without leases.
//!
//! Jobs whose work is split by claims in the store already (snapshot builds, the Slack
//! outbox, cron firings) need no lease for correctness; the trigger sweep holds one anyway so
//! that one replica, not all, reads every project's triggers each second.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::store::Store;

/// How long a lease lasts unrenewed: the longest a dead replica's jobs wait for another.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// A store call that takes longer than this counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// This replica's leases.
#[derive(Clone)]
pub struct Leases {
    store: Store,
    holder: Arc<str>,
    ttl: Duration,
    /// SQLite: one process per data file, so jobs run without asking anyone.
    alone: bool,
}

impl Leases {
    pub fn new(store: Store) -> Self {
        let alone = !store.has_wake_channel();
        Leases {
            alone,
            ..Self::with_ttl(store, LEASE_TTL)
        }
    }

    /// With a TTL other than [`LEASE_TTL`] (tests).
    pub fn with_ttl(store: Store, ttl: Duration) -> Self {
        Leases {
            store,
            holder: crate::store::new_id().into(),
            ttl,
            alone: false,
        }
    }

    /// This replica's name as a lease holder.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Runs `job` whenever this replica holds the lease `name`, until `shutdown` turns true.
    /// `job` gets a future that resolves when it must stop (the lease is being lost, or the
    /// replica shuts down); it is started again when the lease is taken again.
    pub async fn run_singleton<F, Fut>(
        &self,
        name: &'static str,
        mut shutdown: watch::Receiver<bool>,
        mut job: F,
    ) where
        F: FnMut(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut + Send,
        Fut: Future<Output = ()> + Send,
    {
        if self.alone {
            job(Box::pin(async move { turned_true(&mut shutdown).await })).await;
            return;
        }
        let renew_every = self.ttl / 3;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let Taken::Held(valid_until) = self.take(name).await else {
                // Someone else holds it, or the store is unreachable: ask again later, a
                // little off the others' beat.
                let wait = renew_every + jitter(renew_every / 4);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = turned_true(&mut shutdown) => return,
                }
            };
            tracing::info!(lease = name, holder = %self.holder, "running as the only replica");
            let (stop, stopped) = watch::channel(false);
            let until: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
                let mut stopped = stopped;
                turned_true(&mut stopped).await
            });
            let running = job(until);
            tokio::pin!(running);
            let mut valid_until = valid_until;
            let mut next_renewal = Instant::now() + renew_every;
            let ended_by_shutdown = loop {
                tokio::select! {
                    () = &mut running => break false,
                    () = turned_true(&mut shutdown) => {
                        let _ = stop.send(true);
                        running.as_mut().await;
                        break true;
                    }
                    () = tokio::time::sleep_until(next_renewal.min(valid_until)) => {
                        if Instant::now() >= valid_until {
                            tracing::warn!(lease = name, "lease not renewed in time; stopping the job");
                            let _ = stop.send(true);
                            running.as_mut().await;
                            break false;
                        }
                        match self.take(name).await {
                            Taken::Held(until) => {
                                valid_until = until;
                                next_renewal = Instant::now() + renew_every;
                            }
                            // Another replica took it (this one was presumed dead).
                            Taken::Refused => {
                                tracing::warn!(lease = name, "lease taken by another replica; stopping the job");
                                let _ = stop.send(true);
                                running.as_mut().await;
                                break false;
                            }
                            // The store did not answer: retry soon, while the lease lasts.
                            Taken::Unanswered => next_renewal = Instant::now() + renew_every / 3,
                        }
                    }
                }
            };
            if ended_by_shutdown {
                let released = tokio::time::timeout(
                    CALL_TIMEOUT,
                    self.store.release_lease(name, &self.holder),
                )
                .await;
                if !matches!(released, Ok(Ok(()))) {
                    tracing::warn!(
                        lease = name,
                        "could not release the lease; it expires on its own"
                    );
                }
                return;
            }
        }
    }

    /// Takes or renews the lease; when this replica has it, the instant until which it may
    /// act on it (judged from before the call, so a slow answer shortens it).
    async fn take(&self, name: &str) -> Taken {
        let asked = Instant::now();
        let ttl_ms = self.ttl.as_millis() as i64;
        match tokio::time::timeout(
            CALL_TIMEOUT,
            self.store.try_lease(name, &self.holder, now_ms(), ttl_ms),
        )
        .await
        {
            Ok(Ok(true)) => Taken::Held(asked + self.ttl),
            Ok(Ok(false)) => Taken::Refused,
            Ok(Err(e)) => {
                tracing::warn!(lease = name, error = %e, "taking a lease");
                Taken::Unanswered
            }
            Err(_) => {
                tracing::warn!(lease = name, "taking a lease timed out");
                Taken::Unanswered
            }
        }
    }
}

/// What asking for a lease came to.
enum Taken {
    /// This replica holds it until then.
    Held(Instant),
    /// Another replica holds it.
    Refused,
    /// The store did not answer.
    Unanswered,
}

/// Resolves once `rx` holds true (or its sender is gone).
async fn turned_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A random duration below `max`, so that replicas do not ask in lockstep.
fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random::<u64>() % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::TestDb;
    use std::sync::atomic::{AtomicUsize, Ordering};

    crate::store::tests::both_backends!(
        one_replica_runs_the_job_and_another_takes_over,
        a_replica_that_cannot_renew_stops_its_job
    );

    /// Each replica's job counts its runs in `runs[i]` and marks itself running in `now[i]`.
    fn spawn_replica(
        leases: Leases,
        i: usize,
        runs: Arc<[AtomicUsize; 2]>,
        now: Arc<[AtomicUsize; 2]>,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            leases
                .run_singleton("test-job", rx, |until| {
                    let (runs, now) = (runs.clone(), now.clone());
                    async move {
                        runs[i].fetch_add(1, Ordering::SeqCst);
                        now[i].store(1, Ordering::SeqCst);
                        until.await;
                        now[i].store(0, Ordering::SeqCst);
                    }
                })
                .await
        });
        (shutdown, task)
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn one_replica_runs_the_job_and_another_takes_over(db: TestDb) {
        let ttl = Duration::from_millis(600);
        let runs: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let now: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let a = Leases::with_ttl(db.store.clone(), ttl);
        let b = Leases::with_ttl(db.store.clone(), ttl);
        let (stop_a, task_a) = spawn_replica(a, 0, runs.clone(), now.clone());
        until("a to run", || now[0].load(Ordering::SeqCst) == 1).await;
        let (stop_b, task_b) = spawn_replica(b, 1, runs.clone(), now.clone());
        // Several TTLs later b has still not run: a renews.
        let later = Instant::now() + ttl * 4;
        while Instant::now() < later {
            assert_eq!(
                now[1].load(Ordering::SeqCst),
                0,
                "both replicas ran the job"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // a shuts down: it stops its job and releases, and b takes over.
        stop_a.send(true).unwrap();
        task_a.await.unwrap();
        assert_eq!(now[0].load(Ordering::SeqCst), 0);
        until("b to take over", || now[1].load(Ordering::SeqCst) == 1).await;

        // b dies without releasing: a third replica takes over once the lease expired.
        task_b.abort();
        let _ = task_b.await;
        drop(stop_b);
        let c = Leases::with_ttl(db.store.clone(), ttl);
        let now_c: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let (stop_c, task_c) = spawn_replica(c, 0, runs.clone(), now_c.clone());
        until("c to take over from a dead b", || {
            now_c[0].load(Ordering::SeqCst) == 1
        })
        .await;
        stop_c.send(true).unwrap();
        task_c.await.unwrap();
        assert_eq!(runs[1].load(Ordering::SeqCst), 1);
    }

    async fn a_replica_that_cannot_renew_stops_its_job(db: TestDb) {
        let ttl = Duration::from_millis(600);
        let runs: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let now: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let a = Leases::with_ttl(db.store.clone(), ttl);
        let (stop_a, task_a) = spawn_replica(a, 0, runs.clone(), now.clone());
        until("a to run", || now[0].load(Ordering::SeqCst) == 1).await;
        // The store goes away: renewals fail, and the job stops when the lease would have
        // expired, since another replica could take it from then on.
        db.store.close().await;
        until("a's job to stop", || now[0].load(Ordering::SeqCst) == 0).await;
        stop_a.send(true).unwrap();
        task_a.await.unwrap();
    }
}
