//! The read side's share of the server's time: the query API and the status page wait for
//! their turn rather than crowd out the receiver.
//!
//! Reads are cheap one by one, but a client requesting them in a loop keeps the process busy,
//! and whatever CPU they take is taken from the receiver that shares it (on a server with one
//! core, every delivery's acknowledgement waits behind them). [`ReadBudget`] lets at most
//! [`READS_AT_ONCE`] reads run at a time and, after each, makes the next one wait in
//! proportion to how long it took, so that reads kept busy use at most their share of the wall
//! clock ([`READ_SHARE`]). A read that cannot start within [`QUEUE_DEADLINE`] answers 503 with
//! `Retry-After`. Only the routes given to [`with_read_budget`] wait (route assembly gives it
//! every route behind the token): the webhook route and the health checks are never behind it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The share of the wall clock that reads kept busy may take, by default.
pub const READ_SHARE: f64 = 0.25;
/// Reads that run at once, by default; more wait for their turn.
pub const READS_AT_ONCE: usize = 2;
/// Longest a read waits for its turn before it is answered 503.
pub const QUEUE_DEADLINE: Duration = Duration::from_secs(5);
/// Longest pause one read imposes on the next, however long it took (a read that waited on the
/// database cost the process little).
const LONGEST_REST: Duration = Duration::from_millis(100);

/// How much of the server's time reads may take; see the module's documentation.
#[derive(Debug)]
pub struct ReadBudget {
    /// The share of the wall clock, in (0, 1].
    share: f64,
    /// One permit per read that may run at once.
    running: Semaphore,
    /// When the next read may start.
    rested_until: Mutex<Instant>,
}

impl Default for ReadBudget {
    fn default() -> Self {
        Self::new(READ_SHARE, READS_AT_ONCE)
    }
}

impl ReadBudget {
    /// Reads taking at most `share` of the wall clock (clamped to (0, 1]; 1 never pauses),
    /// `at_once` of them at a time (at least 1).
    pub fn new(share: f64, at_once: usize) -> Self {
        Self {
            share: share.clamp(f64::MIN_POSITIVE, 1.0),
            running: Semaphore::new(at_once.max(1)),
            rested_until: Mutex::new(Instant::now()),
        }
    }

    /// The pause owed after a read that took `took`: what keeps reads at their share.
    fn rest_after(&self, took: Duration) -> Duration {
        took.mul_f64((1.0 - self.share) / self.share)
            .min(LONGEST_REST)
    }

    /// Waits until a read may start: a permit, then the rest owed by the reads before.
    async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        let permit = self
            .running
            .acquire()
            .await
            .expect("the semaphore is never closed");
        loop {
            let until = *self.rested_until.lock().expect("not poisoned");
            if until <= Instant::now() {
                return permit;
            }
            tokio::time::sleep_until(until).await;
        }
    }

    /// Records that a read ended after taking `took`.
    fn charge(&self, took: Duration) {
        let rest = self.rest_after(took);
        let mut rested_until = self.rested_until.lock().expect("not poisoned");
        *rested_until = (*rested_until).max(Instant::now()) + rest;
    }
}

/// `routes`, each request waiting for its turn in `budget` (a fallback for unknown paths
/// included).
pub fn with_read_budget(routes: Router, budget: Arc<ReadBudget>) -> Router {
    routes.layer(middleware::from_fn_with_state(budget, take_turn))
}

async fn take_turn(
    State(budget): State<Arc<ReadBudget>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = tokio::time::timeout(QUEUE_DEADLINE, budget.turn()).await else {
        return too_busy();
    };
    let started = Instant::now();
    let response = next.run(request).await;
    budget.charge(started.elapsed());
    response
}

/// 503: reads are queued beyond [`QUEUE_DEADLINE`]; the client may come back in a second.
fn too_busy() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"error": "too many reads waiting; retry later"})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use axum::body::Body;
    use axum::routing::get;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;

    /// How long the test handler works per read.
    const WORK: Duration = Duration::from_millis(40);

    fn request(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("a valid request")
    }

    /// A route that records when each of its reads started and ended, working [`WORK`] each.
    fn timed_routes(log: Arc<StdMutex<Vec<(Instant, Instant)>>>) -> Router {
        Router::new().route(
            "/read",
            get(move || {
                let log = Arc::clone(&log);
                async move {
                    let started = Instant::now();
                    tokio::time::sleep(WORK).await;
                    log.lock()
                        .expect("not poisoned")
                        .push((started, Instant::now()));
                    "read"
                }
            }),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_waits_for_the_rest_its_predecessor_owes() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let share = 0.5;
        let routes = with_read_budget(
            timed_routes(Arc::clone(&log)),
            Arc::new(ReadBudget::new(share, 1)),
        );
        for _ in 0..3 {
            let answer = routes
                .clone()
                .oneshot(request("/read"))
                .await
                .expect("answered");
            assert_eq!(answer.status(), StatusCode::OK);
        }
        let log = log.lock().expect("not poisoned");
        assert_eq!(log.len(), 3);
        let owed = WORK.mul_f64((1.0 - share) / share);
        for pair in log.windows(2) {
            let (previous_end, next_start) = (pair[0].1, pair[1].0);
            assert!(
                next_start - previous_end >= owed,
                "the next read started {:?} after the previous one ended, owing {owed:?}",
                next_start - previous_end
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_share_never_pauses() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let routes = with_read_budget(
            timed_routes(Arc::clone(&log)),
            Arc::new(ReadBudget::new(1.0, 1)),
        );
        for _ in 0..2 {
            routes
                .clone()
                .oneshot(request("/read"))
                .await
                .expect("answered");
        }
        let log = log.lock().expect("not poisoned");
        assert_eq!(log[1].0, log[0].1);
    }

    /// Routes whose `/stuck` reads never end until `release` is notified, beside `/open`,
    /// which is not behind the budget, as the webhook route is not.
    fn stuck_and_open(budget: Arc<ReadBudget>, release: Arc<Notify>) -> Router {
        let capped = Router::new().route(
            "/stuck",
            get(move || {
                let release = Arc::clone(&release);
                async move {
                    release.notified().await;
                    "done"
                }
            }),
        );
        with_read_budget(capped, budget).route("/open", get(|| async { "open" }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_queued_past_the_deadline_is_answered_503_with_retry_after() {
        let release = Arc::new(Notify::new());
        let routes = stuck_and_open(Arc::new(ReadBudget::new(0.5, 1)), Arc::clone(&release));
        let holding = tokio::spawn(routes.clone().oneshot(request("/stuck")));
        tokio::task::yield_now().await;
        let started = Instant::now();
        let answer = routes
            .clone()
            .oneshot(request("/stuck"))
            .await
            .expect("answered");
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "1");
        assert!(started.elapsed() >= QUEUE_DEADLINE);
        release.notify_one();
        assert_eq!(
            holding.await.expect("ran").expect("answered").status(),
            StatusCode::OK
        );
    }

    #[tokio::test(start_paused = true)]
    async fn routes_outside_the_budget_never_wait_for_it() {
        let release = Arc::new(Notify::new());
        let routes = stuck_and_open(Arc::new(ReadBudget::new(0.5, 1)), Arc::clone(&release));
        let holding = tokio::spawn(routes.clone().oneshot(request("/stuck")));
        let queued = tokio::spawn(routes.clone().oneshot(request("/stuck")));
        tokio::task::yield_now().await;
        let started = Instant::now();
        let answer = routes
            .clone()
            .oneshot(request("/open"))
            .await
            .expect("answered");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(started.elapsed(), Duration::ZERO, "no time passed");
        release.notify_waiters();
        holding.await.expect("ran").expect("answered");
        queued.abort();
    }
}
