//! The projector's workers: claim calls from the fold queue, fold each from every one of its
//! logged events, and settle the claim with the projections (the queue's protocol is described
//! in `callfold_store`'s `queue` module and in `docs/ARCHITECTURE.md`). Also the full rebuild,
//! swapped into the live projections as it reads the log, and the re-fold of one call.
//!
//! Any number of workers, in any number of processes, may run against one database: each call
//! is folded by one worker at a time, and a worker that dies leaves its claims to expire. The
//! projector only reads the log.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callfold_store::{
    CallKey, ClaimedCalls, ConfigFingerprint, EventTime, FoldedSoFar, LoggedEvent, QueueSweep,
    RebuildRead, RebuildSwap, Settled, Store, StoreError, StoredProjection,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::fold::{FoldEvent, fold, fold_events, mark_late};
use crate::precedence::Precedence;

/// How often a busy worker publishes the queue's depth (an idle one does at every poll).
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Batches one worker keeps in flight while calls wait (see [`Projector::run`]) on a store
/// that writes one transaction at a time (SQLite): the database claims, reads and settles one
/// batch while the worker folds another. A third only waits for the write turn, on the core the
/// worker folds on (catching up on SQLite, 9% slower with three: `docs/benchmarks.md`).
const BATCHES_IN_FLIGHT_ONE_WRITER: usize = 2;

/// Batches one worker keeps in flight while calls wait on a store whose writes run side by side
/// (PostgreSQL): with two, a batch spent most of its time in round trips, with neither the
/// worker's core nor the server's busy; a third overlaps them, until the settles, which take
/// the change counter one at a time, run back to back (catching up on PostgreSQL, 1.05 to 1.16
/// times as fast as with two: `docs/benchmarks.md`).
const BATCHES_IN_FLIGHT_PARALLEL_WRITERS: usize = 3;

/// How many times per lease a worker still folding renews its claim: the lease is renewed
/// with two thirds of it left.
const RENEWALS_PER_LEASE: u32 = 3;
/// Longest a worker holds one claim, in leases. Past it the worker gives the batch up (a read or
/// a settle stuck on a connection gone silent would otherwise be renewed forever) and stops
/// renewing, so its calls go to another worker one lease later and its own loop carries on;
/// the token fences out a settle that would still come.
const MOST_LEASES_HELD: u32 = 12;

/// Aborts a task when dropped: a claim's renewal ends with its fold, and a whole rebuild's read
/// and swap are asked to end with it, however it ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Folds the log into per-call projections.
#[derive(Clone, Debug)]
pub struct Projector {
    store: Store,
    precedence: Precedence,
    batch_calls: i64,
    lease: Duration,
    /// The configuration recorded with every projection this projector writes.
    configuration: Option<ConfigFingerprint>,
    /// Bumped after every settle that wrote projections, for the live streams.
    projected: Arc<watch::Sender<u64>>,
    /// Where this projector's claims stand in the fold queue, shared by its clones: workers of
    /// one process sweep the queue together.
    sweep: Arc<QueueSweep>,
}

/// A rebuild under way (see [`Projector::rebuild`]): where its read of the log stands, what it
/// has folded so far, and the projections waiting for their swap.
#[derive(Debug)]
pub struct Rebuild {
    read: RebuildRead,
    folded: RebuildFolded,
    swap: RebuildSwap,
}

/// What a rebuild has folded so far.
#[derive(Debug)]
struct RebuildFolded {
    /// When the rebuild started: the time every projection it folds records as its update.
    started: EventTime,
    /// Calls folded so far.
    calls: u64,
    /// Log records folded so far.
    records: u64,
}

/// A page of a rebuild's read (see `Store::rebuild_page`).
type RebuildPage = Result<Option<Vec<(CallKey, Vec<LoggedEvent>)>>, StoreError>;

/// A task of a whole rebuild (see [`Projector::rebuild`]): aborted if the rebuild ends first.
struct RebuildTask<T>(AbortOnDrop<Result<T, StoreError>>);

impl<T> RebuildTask<T> {
    /// What the task ended with; its panic, resumed here. Only [`RebuildTask::stop`] aborts
    /// it, and the runtime cancels no task while the rebuild awaits one.
    async fn outcome(&mut self) -> Result<T, StoreError> {
        match (&mut self.0.0).await {
            Ok(outcome) => outcome,
            Err(ended) => std::panic::resume_unwind(ended.into_panic()),
        }
    }

    /// Aborts the task and waits until it has ended, however it ends.
    async fn stop(mut self) {
        self.0.0.abort();
        let _ended = (&mut self.0.0).await;
    }
}

/// A rebuild's swap in its task, which tells the live streams of the process when it changed
/// live projections: after each page (see [`Projector::swap_page`]), and when dropped (the task
/// stopped between two of its batches).
struct AnnouncedSwap {
    projector: Projector,
    swap: RebuildSwap,
}

impl Drop for AnnouncedSwap {
    fn drop(&mut self) {
        self.projector.announce_swapped(&mut self.swap);
    }
}

/// What a whole rebuild did (see [`Projector::rebuild`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// Calls folded from the log and offered to the swap.
    pub calls: u64,
    /// Swap batches followed by a pause because another process had the database open.
    pub pauses: u64,
}

/// What one task of a worker's batches in flight came to (see [`Projector::run`]).
enum BatchStep {
    /// A batch's claim.
    Claimed(Result<ClaimedCalls, StoreError>),
    /// A batch's fold and settle.
    Folded(Result<(), StoreError>),
    /// The queue's depth was published.
    LagRecorded,
}

/// How a run of batches while calls waited ended (see [`Projector::run`]).
struct FoldedWhileWaiting {
    /// A claim found fewer calls than a batch holds, or a batch failed.
    caught_up: bool,
    /// `shutdown` resolved.
    stopping: bool,
    /// When the last claim started.
    last_claim: tokio::time::Instant,
}

/// One event of a call as the projector folds it: its record's seq, its fold event, and whether
/// it arrived late.
struct Arrival {
    seq: i64,
    event: FoldEvent,
    late: bool,
}

/// The usable events of one call's logged records (in seq order), each read once from its
/// body, in arrival order and marked late or not.
fn arrivals(precedence: &Precedence, logged: &[LoggedEvent]) -> Vec<Arrival> {
    mark_late(fold_events(precedence, logged))
        .map(|(record, event, late)| Arrival {
            seq: record.seq,
            event,
            late,
        })
        .collect()
}

/// The projection of one call, folded from scratch from all its `arrivals`; `None` when there
/// are none.
fn project(
    configuration: Option<&ConfigFingerprint>,
    call_key: &CallKey,
    arrivals: Vec<Arrival>,
    updated_at: EventTime,
) -> Option<StoredProjection> {
    let last_seq = arrivals.iter().map(|arrival| arrival.seq).max()?;
    let late_events = arrivals.iter().filter(|arrival| arrival.late).count() as i64;
    let events: Vec<FoldEvent> = arrivals.into_iter().map(|arrival| arrival.event).collect();
    let events_folded = events.len() as i64;
    Some(StoredProjection {
        document: serde_json::to_string(&fold(call_key.as_str(), events)).ok()?,
        call_key: call_key.clone(),
        last_seq,
        late_events,
        events_folded,
        updated_at,
        built_with: configuration.cloned(),
    })
}

/// Records how late each late event of one call's `arrivals` is, once: only those with a seq
/// above `folded_up_to` (the call's projection has counted the others). An event's lateness is
/// how far its payload time is behind the latest one of its call that arrived before it.
fn record_lateness(arrivals: &[Arrival], folded_up_to: i64) {
    let mut latest: Option<EventTime> = None;
    for arrival in arrivals {
        let at = arrival.event.key.event_time;
        if let Some(latest) = latest.filter(|_| arrival.late && arrival.seq > folded_up_to) {
            metrics::histogram!("callfold_event_lateness_seconds").record(latest.seconds_after(at));
        }
        latest = latest.max(Some(at));
    }
}

impl Projector {
    /// A worker over `store` that claims at most `batch_calls` calls at a time, each for
    /// `lease`, renewed while it folds them: if it stops renewing (it died, or lost the
    /// database) and has not settled them by then, another worker may take them over.
    pub fn new(store: Store, precedence: Precedence, batch_calls: i64, lease: Duration) -> Self {
        Self {
            store,
            precedence,
            batch_calls,
            lease,
            configuration: None,
            projected: Arc::new(watch::Sender::new(0)),
            sweep: Arc::default(),
        }
    }

    /// This projector, recording `configuration` (the fingerprint of the linking rules and
    /// the precedence graph it runs with) with every projection it writes, so that a process
    /// with another configuration can tell (see `Store::projections_built_with`).
    pub fn recording(mut self, configuration: ConfigFingerprint) -> Self {
        self.configuration = Some(configuration);
        self
    }

    /// Changes whenever this projector (or a clone of it) has committed projections: what the
    /// live streams of the same process wait on.
    pub fn projected(&self) -> watch::Receiver<u64> {
        self.projected.subscribe()
    }

    /// Folds the calls of `claimed` from the log and settles the claim, renewing its lease
    /// meanwhile, for at most [`MOST_LEASES_HELD`] leases.
    async fn fold_claimed(&self, claimed: &ClaimedCalls) -> Result<Settled, StoreError> {
        let deadline = self.lease * MOST_LEASES_HELD;
        let work = self.while_holding(claimed, self.fold_and_settle(claimed));
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or(Err(StoreError::TimedOut { deadline }))
    }

    /// Runs `work` (the fold of `claimed`) while renewing the claim's lease every
    /// [`RENEWALS_PER_LEASE`]th of it, so that a fold that outlasts its lease keeps its calls
    /// and no other worker folds them meanwhile. The renewal is a task of its own, so a fold
    /// busy computing does not delay it; it ends with `work`, or once the claim holds nothing.
    pub async fn while_holding<T>(
        &self,
        claimed: &ClaimedCalls,
        work: impl Future<Output = T>,
    ) -> T {
        let (store, claimed, lease) = (self.store.clone(), claimed.clone(), self.lease);
        let every = (lease / RENEWALS_PER_LEASE).max(Duration::from_millis(1));
        let renewal = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                match store.renew_claim(&claimed, lease).await {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot renew a claim; it may be lost"),
                }
            }
        });
        let _stop_renewing = AbortOnDrop(renewal);
        work.await
    }

    /// Folds the calls of `claimed` from the log and settles the claim.
    async fn fold_and_settle(&self, claimed: &ClaimedCalls) -> Result<Settled, StoreError> {
        let keys: Vec<CallKey> = claimed.claims.iter().map(|c| c.call_key.clone()).collect();
        // Read after claiming: every append that bumped a claimed version is visible now.
        let (logged, folded_so_far) = self.store.read_claimed_calls(&keys).await?;
        let mut by_call: HashMap<CallKey, Vec<LoggedEvent>> = HashMap::new();
        for event in logged {
            if let Some(call_key) = event.content.call_key() {
                by_call.entry(call_key.clone()).or_default().push(event);
            }
        }
        let previous: HashMap<CallKey, FoldedSoFar> = folded_so_far
            .into_iter()
            .map(|folded| (folded.call_key.clone(), folded))
            .collect();
        let previous_late: i64 = previous.values().map(|p| p.late_events).sum();
        let now = EventTime::now();
        let projections: Vec<StoredProjection> = by_call
            .iter()
            .filter_map(|(call_key, logged)| {
                let arrivals = arrivals(&self.precedence, logged);
                let folded_up_to = previous.get(call_key).map_or(0, |p| p.last_seq);
                record_lateness(&arrivals, folded_up_to);
                project(self.configuration.as_ref(), call_key, arrivals, now)
            })
            .collect();
        let settled = self.store.settle_claims(claimed, &projections).await?;
        if !projections.is_empty() {
            self.projected.send_modify(|settles| *settles += 1);
        }
        let folded_events: i64 = projections.iter().map(|p| p.events_folded).sum();
        let late: i64 = projections.iter().map(|p| p.late_events).sum();
        metrics::counter!("callfold_calls_folded_total")
            .increment((settled.folded + settled.to_refold) as u64);
        metrics::counter!("callfold_events_folded_total").increment(folded_events as u64);
        metrics::counter!("callfold_late_events_total")
            .increment(late.saturating_sub(previous_late).max(0) as u64);
        metrics::counter!("callfold_claims_lost_total").increment(settled.lost as u64);
        Ok(settled)
    }

    /// Claims a batch of marked calls (see `Store::claim_calls`), folds them and settles the
    /// claim. Returns how many calls it claimed: 0 means nothing is waiting (or every waiting
    /// call is claimed).
    pub async fn fold_next_batch(&self) -> Result<usize, StoreError> {
        let claimed = self
            .store
            .claim_calls(&self.sweep, self.batch_calls, self.lease)
            .await?;
        if claimed.claims.is_empty() {
            return Ok(0);
        }
        self.fold_claimed(&claimed).await?;
        Ok(claimed.claims.len())
    }

    /// Re-folds every call from the log and swaps the results into the live projections as it
    /// goes, page by page, while receivers and workers keep running. `progress` hears the number
    /// of log records folded so far and how many the log held when the rebuild started.
    ///
    /// Alone on a SQLite file, its read, fold and swap overlap (see
    /// [`Projector::rebuild_overlapped`]). Otherwise (another process has the file open, or on
    /// PostgreSQL, where that cannot be told) they run one after the other, page by page:
    /// overlapped, they took a larger share of the cores from the receivers beside them, whose
    /// acknowledgements during a rebuild that rewrites every projection went from a p99 of 26 to
    /// 31 ms to one of 63 to 114 ms (`docs/benchmarks.md`).
    pub async fn rebuild(&self, mut progress: impl FnMut(u64, i64)) -> Result<Rebuilt, StoreError> {
        let log_len = self.store.log_len().await?;
        if self.store.opened_by_another_process() == Some(false) {
            return self.rebuild_overlapped(log_len, progress).await;
        }
        let mut rebuild = self.start_rebuild();
        while let Some(folded) = self.fold_rebuild_page(&mut rebuild).await? {
            self.swap_rebuilt(&mut rebuild, folded).await?;
            progress(rebuild.folded.records, log_len);
        }
        let calls = self.finish_rebuild(&mut rebuild).await?;
        Ok(Rebuilt {
            calls,
            pauses: rebuild.swap.pauses(),
        })
    }

    /// [`Projector::rebuild`] with its three steps overlapped: a task reads the pages after the
    /// one being folded, two at most (see `Store::rebuild_page`), and another swaps in those
    /// folded before it (see `Store::swap_rebuilt`), a page behind the fold, or as many as its
    /// queue holds while it pauses. On a machine of several cores a rebuild so takes about as
    /// long as its slowest step rather than the sum of the three. A step that fails ends the
    /// rebuild: the other tasks are stopped and waited for before it returns the failure (or
    /// resumes the panic); what the swap committed before stays.
    async fn rebuild_overlapped(
        &self,
        log_len: i64,
        mut progress: impl FnMut(u64, i64),
    ) -> Result<Rebuilt, StoreError> {
        let Rebuild {
            read,
            mut folded,
            swap,
        } = self.start_rebuild();
        let (mut reader, mut pages) = self.read_ahead(read);
        let (to_swap, mut swapper) = self.swap_behind(swap);
        let mut read_whole = false;
        while let Some(page) = pages.recv().await {
            let calls = match page {
                Ok(Some(calls)) => calls,
                Ok(None) => {
                    read_whole = true;
                    break;
                }
                Err(failed) => {
                    swapper.stop().await;
                    return Err(failed);
                }
            };
            let projections = self.fold_page(&mut folded, &calls);
            if to_swap.send(projections).await.is_err() {
                break;
            }
            progress(folded.records, log_len);
        }
        drop(to_swap);
        let pauses = match swapper.outcome().await {
            Ok(pauses) => pauses,
            Err(failed) => {
                reader.stop().await;
                return Err(failed);
            }
        };
        if !read_whole {
            // The swap went on to the end, so the read stopped before the log's end: it panicked.
            reader.outcome().await?;
        }
        Ok(Rebuilt {
            calls: folded.calls,
            pauses,
        })
    }

    /// A task that reads a rebuild's pages from `read` on, ahead of the one taken, until the
    /// last or the first that fails.
    fn read_ahead(&self, mut read: RebuildRead) -> (RebuildTask<()>, mpsc::Receiver<RebuildPage>) {
        let (pages, taken) = mpsc::channel(1);
        let store = self.store.clone();
        let reader = tokio::spawn(async move {
            loop {
                let page = store.rebuild_page(&mut read).await;
                let last = !matches!(page, Ok(Some(_)));
                if pages.send(page).await.is_err() || last {
                    return Ok(());
                }
            }
        });
        (RebuildTask(AbortOnDrop(reader)), taken)
    }

    /// A task that swaps in the pages of rebuilt projections it is sent with `swap`, then, once
    /// the sender is dropped, what `swap` still holds; it ends with the number of pauses, or at
    /// the first failure. The live streams hear of each change it commits, also when it is
    /// stopped between two batches.
    fn swap_behind(
        &self,
        swap: RebuildSwap,
    ) -> (mpsc::Sender<Vec<StoredProjection>>, RebuildTask<u64>) {
        let (to_swap, mut sent) = mpsc::channel(1);
        let mut swap = AnnouncedSwap {
            projector: self.clone(),
            swap,
        };
        let swapper = tokio::spawn(async move {
            while let Some(folded) = sent.recv().await {
                swap.projector.swap_page(&mut swap.swap, folded).await?;
            }
            swap.projector.swap_the_rest(&mut swap.swap).await?;
            Ok(swap.swap.pauses())
        });
        (to_swap, RebuildTask(AbortOnDrop(swapper)))
    }

    /// A rebuild from the first call of the log, which has read nothing yet.
    pub fn start_rebuild(&self) -> Rebuild {
        Rebuild {
            read: RebuildRead::default(),
            folded: RebuildFolded {
                started: EventTime::now(),
                calls: 0,
                records: 0,
            },
            swap: self.store.rebuild_swap(),
        }
    }

    /// Reads `rebuild`'s next page of the log (see `Store::rebuild_page`) and folds each of its
    /// calls from scratch. Returns their projections, not swapped in yet, or `None` once the
    /// whole log is read.
    pub async fn fold_rebuild_page(
        &self,
        rebuild: &mut Rebuild,
    ) -> Result<Option<Vec<StoredProjection>>, StoreError> {
        let Some(calls) = self.store.rebuild_page(&mut rebuild.read).await? else {
            return Ok(None);
        };
        Ok(Some(self.fold_page(&mut rebuild.folded, &calls)))
    }

    /// Folds each call of a page a rebuild read from scratch, and counts them in `folded`.
    fn fold_page(
        &self,
        folded: &mut RebuildFolded,
        calls: &[(CallKey, Vec<LoggedEvent>)],
    ) -> Vec<StoredProjection> {
        let mut projections = Vec::with_capacity(calls.len());
        for (call_key, logged) in calls {
            folded.calls += 1;
            folded.records += logged.len() as u64;
            let arrivals = arrivals(&self.precedence, logged);
            let configuration = self.configuration.as_ref();
            projections.extend(project(configuration, call_key, arrivals, folded.started));
        }
        projections
    }

    /// Queues `folded`, the projections of `rebuild`'s last page, for their swap into the live
    /// ones, and swaps in what the swap's pacing lets through now: each only over a live one
    /// folded from no more events (see `Store::swap_rebuilt`).
    pub async fn swap_rebuilt(
        &self,
        rebuild: &mut Rebuild,
        folded: Vec<StoredProjection>,
    ) -> Result<(), StoreError> {
        self.swap_page(&mut rebuild.swap, folded).await
    }

    /// Swaps in what `rebuild` still has queued. Returns the number of calls it rebuilt.
    pub async fn finish_rebuild(&self, rebuild: &mut Rebuild) -> Result<u64, StoreError> {
        self.swap_the_rest(&mut rebuild.swap).await?;
        Ok(rebuild.folded.calls)
    }

    /// Queues a page of rebuilt projections in `swap` (see `Store::swap_rebuilt`), then tells the
    /// live streams if it changed live projections.
    async fn swap_page(
        &self,
        swap: &mut RebuildSwap,
        folded: Vec<StoredProjection>,
    ) -> Result<(), StoreError> {
        let swapped = self.store.swap_rebuilt(swap, folded).await;
        self.announce_swapped(swap);
        swapped
    }

    /// Swaps in what `swap` still has queued (see `Store::finish_swap`), then tells the live
    /// streams if it changed live projections.
    async fn swap_the_rest(&self, swap: &mut RebuildSwap) -> Result<(), StoreError> {
        let swapped = self.store.finish_swap(swap).await;
        self.announce_swapped(swap);
        swapped
    }

    /// Tells the live streams of this process when `swap` changed live projections, also in a
    /// call that failed after some of its batches committed.
    fn announce_swapped(&self, swap: &mut RebuildSwap) {
        if swap.take_changed() > 0 {
            self.projected.send_modify(|settles| *settles += 1);
        }
    }

    /// Re-folds one call from the log now, or, when a live worker holds it, marks it so that
    /// worker folds it again. Returns false when the log holds no event of that call.
    pub async fn refold_call(&self, call_key: &CallKey) -> Result<bool, StoreError> {
        if self.store.call_events(call_key).await?.is_empty() {
            return Ok(false);
        }
        self.store.mark_call(call_key).await?;
        let claimed = self.store.claim_call(call_key, self.lease).await?;
        if !claimed.claims.is_empty() {
            self.fold_claimed(&claimed).await?;
        }
        Ok(true)
    }

    /// Publishes how many calls wait to be folded, and how long the oldest has waited.
    async fn record_lag(&self) -> Result<(), StoreError> {
        let depth = self.store.queue_depth().await?;
        metrics::gauge!("callfold_projection_lag_calls").set(depth.calls as f64);
        let waited = depth
            .oldest_marked_at
            .map_or(0.0, |marked| EventTime::now().seconds_after(marked));
        metrics::gauge!("callfold_projection_lag_seconds").set(waited);
        Ok(())
    }

    /// Wakes `wake` on every append any process commits (see `Store::watch_appends`), for as
    /// long as it is polled: after a lost connection it wakes once (appends may have been
    /// missed), waits `retry`, and listens again; the projector polls meanwhile.
    pub async fn listen_for_appends(&self, wake: &Notify, retry: Duration) {
        while let Err(error) = self.store.watch_appends(|| wake.notify_one()).await {
            tracing::warn!(%error, "not notified of appends; polling, listening again soon");
            wake.notify_one();
            tokio::time::sleep(retry).await;
        }
    }

    /// Folds batches until `shutdown` resolves: immediately while calls wait, then on each
    /// `wake` (a new append) or every `poll`, whichever comes first, but no sooner than
    /// `min_interval` after the previous claim: under a steady stream of appends, calls gather
    /// into fewer, larger batches, while an append after a quiet spell is folded at once. While
    /// claims come back full (calls are waiting), several batches are in flight (see
    /// [`Projector::batches_in_flight`]), each a task of its own: the database claims, reads
    /// and settles one while the worker folds another. A failed batch is logged and retried
    /// after `poll`; whatever it claimed waits for its lease to end (on PostgreSQL its
    /// projections may have been written, if only the removal of its marks failed). On
    /// `shutdown`, the batches in flight finish first.
    pub async fn run(
        &self,
        wake: Arc<Notify>,
        poll: Duration,
        min_interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut lag_reported: Option<Instant> = None;
        loop {
            let folded = self
                .fold_while_calls_wait(&mut lag_reported, &mut shutdown)
                .await;
            if folded.stopping {
                return;
            }
            if folded.caught_up {
                self.publish_lag().await;
                lag_reported = Some(Instant::now());
            }
            let pause = if folded.caught_up {
                poll
            } else {
                Duration::ZERO
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = wake.notified(), if folded.caught_up => {}
                _ = tokio::time::sleep(pause) => {}
            }
            if folded.caught_up {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep_until(folded.last_claim + min_interval) => {}
                }
            }
        }
    }

    /// Claims and folds one batch and, for as long as claims come back full and `shutdown`
    /// has not resolved, the next ones, with up to [`Projector::batches_in_flight`] in flight:
    /// the next claim starts as soon as a full one is made. Returns once every batch it claimed
    /// has finished.
    async fn fold_while_calls_wait(
        &self,
        lag_reported: &mut Option<Instant>,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> FoldedWhileWaiting {
        let in_flight = self.batches_in_flight();
        let mut tasks = JoinSet::new();
        let mut folded = FoldedWhileWaiting {
            caught_up: false,
            stopping: false,
            last_claim: tokio::time::Instant::now(),
        };
        tasks.spawn(self.clone().claim_step());
        let (mut batches, mut claiming) = (1, true);
        loop {
            let joined = tokio::select! {
                biased;
                _ = shutdown.as_mut(), if !folded.stopping => {
                    folded.stopping = true;
                    continue;
                }
                joined = tasks.join_next() => joined,
            };
            let step = match joined {
                None => return folded,
                Some(Ok(step)) => step,
                Some(Err(ended)) => match ended.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Cancelled: the runtime is shutting down.
                    Err(_) => {
                        return FoldedWhileWaiting {
                            stopping: true,
                            ..folded
                        };
                    }
                },
            };
            match step {
                BatchStep::Claimed(Ok(claimed)) => {
                    let count = claimed.claims.len();
                    folded.caught_up |= count == 0 || (count as i64) < self.batch_calls;
                    if count == 0 {
                        batches -= 1;
                    } else {
                        tasks.spawn(self.clone().fold_step(claimed));
                    }
                    claiming = false;
                }
                BatchStep::Claimed(Err(error)) | BatchStep::Folded(Err(error)) => {
                    tracing::error!(%error, "projector batch failed; retrying");
                    (batches, claiming, folded.caught_up) = (batches - 1, false, true);
                }
                BatchStep::Folded(Ok(())) => {
                    batches -= 1;
                    if lag_reported.is_none_or(|at| at.elapsed() >= LAG_REPORT_INTERVAL) {
                        *lag_reported = Some(Instant::now());
                        tasks.spawn(self.clone().lag_step());
                    }
                }
                BatchStep::LagRecorded => {}
            }
            if !(claiming || folded.caught_up || folded.stopping) && batches < in_flight {
                folded.last_claim = tokio::time::Instant::now();
                tasks.spawn(self.clone().claim_step());
                (batches, claiming) = (batches + 1, true);
            }
        }
    }

    /// How many batches this worker keeps in flight while calls wait, for its store.
    fn batches_in_flight(&self) -> usize {
        if self.store.writes_one_at_a_time() {
            BATCHES_IN_FLIGHT_ONE_WRITER
        } else {
            BATCHES_IN_FLIGHT_PARALLEL_WRITERS
        }
    }

    /// Claims the next batch (see `Store::claim_calls`).
    async fn claim_step(self) -> BatchStep {
        let claimed = self
            .store
            .claim_calls(&self.sweep, self.batch_calls, self.lease);
        BatchStep::Claimed(claimed.await)
    }

    /// Folds the calls of `claimed` and settles the claim.
    async fn fold_step(self, claimed: ClaimedCalls) -> BatchStep {
        BatchStep::Folded(self.fold_claimed(&claimed).await.map(drop))
    }

    /// Publishes the queue's depth while batches are in flight.
    async fn lag_step(self) -> BatchStep {
        self.publish_lag().await;
        BatchStep::LagRecorded
    }

    /// Publishes the queue's depth, or warns that it cannot be read.
    async fn publish_lag(&self) {
        if let Err(error) = self.record_lag().await {
            tracing::warn!(%error, "cannot read the fold queue's depth");
        }
    }
}
