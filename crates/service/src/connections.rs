//! The connections one listener has open, and who gives way at the cap.
//!
//! A connection is *idle* while no request of it is in flight: from its accept until its
//! first request's headers are read, and again between a response's last byte and the next
//! request's headers (keep-alive). At the cap, a newcomer takes the slot of the connection that
//! has been idle the longest, which is told to close; a connection with a request in flight is
//! never chosen, so only when every open connection has one is a newcomer refused. One client
//! holding many idle connections therefore cannot keep others out: its oldest connections make
//! room for each new one, and the number open stays at the cap.
//!
//! Choosing a victim and a request starting are decided under one lock, so a connection is
//! either evicted before its request starts (and the request is refused, unread) or its
//! request runs to the end.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

/// The open connections of one listener, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct OpenConnections {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// The idle connections, longest idle first.
    idle: BTreeSet<(Instant, u64)>,
}

#[derive(Debug)]
struct Entry {
    /// Since when the connection has been idle; `None` while a request is in flight.
    idle_since: Option<Instant>,
    /// Dropped to evict the connection (its [`ConnectionSlot::evicted`] then resolves).
    _eviction: oneshot::Sender<()>,
}

/// What became of a new connection.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A slot was free.
    Admitted(ConnectionSlot),
    /// The slot of the longest-idle connection, which is told to close.
    AdmittedByEviction(ConnectionSlot),
    /// Every open connection has a request in flight.
    Refused,
}

impl OpenConnections {
    /// Room for `capacity` connections.
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds a slot for a connection just accepted: a free one, else the slot of the
    /// connection idle the longest.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let mut state = self.state();
        let mut evicted = false;
        if state.open.len() >= self.capacity {
            let Some(victim) = state.idle.pop_first() else {
                return Admission::Refused;
            };
            state.open.remove(&victim.1);
            evicted = true;
        }
        let id = state.next_id;
        state.next_id += 1;
        let now = Instant::now();
        let (sender, eviction) = oneshot::channel();
        let entry = Entry {
            idle_since: Some(now),
            _eviction: sender,
        };
        state.open.insert(id, entry);
        state.idle.insert((now, id));
        let slot = ConnectionSlot {
            requests: RequestTracker {
                id,
                connections: Arc::clone(self),
            },
            eviction,
        };
        if evicted {
            Admission::AdmittedByEviction(slot)
        } else {
            Admission::Admitted(slot)
        }
    }
}

/// One connection's place among the open ones; freed when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    requests: RequestTracker,
    eviction: oneshot::Receiver<()>,
}

impl ConnectionSlot {
    /// Resolves once another connection has taken this slot; the connection must then close.
    pub(crate) async fn evicted(&mut self) {
        // The sender is never used: dropping it is the signal.
        let _ = (&mut self.eviction).await;
    }

    /// What the connection's requests report their start and end to.
    pub(crate) fn requests(&self) -> RequestTracker {
        self.requests.clone()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let RequestTracker { id, connections } = &self.requests;
        let mut state = connections.state();
        if let Some(Entry {
            idle_since: Some(since),
            ..
        }) = state.open.remove(id)
        {
            state.idle.remove(&(since, *id));
        }
    }
}

/// Marks a connection's requests in flight, which keeps it from being evicted.
#[derive(Clone, Debug)]
pub(crate) struct RequestTracker {
    id: u64,
    connections: Arc<OpenConnections>,
}

impl RequestTracker {
    /// A request of this connection has started; `None` if the connection was evicted first
    /// (the request must then be refused without being read).
    pub(crate) fn start(&self) -> Option<RequestInFlight> {
        let mut state = self.connections.state();
        let entry = state.open.get_mut(&self.id)?;
        if let Some(since) = entry.idle_since.take() {
            state.idle.remove(&(since, self.id));
        }
        Some(RequestInFlight(self.clone()))
    }
}

/// A request in flight; dropping it (once the response's last byte is written, or the
/// connection is gone) makes its connection idle again.
#[derive(Debug)]
pub(crate) struct RequestInFlight(RequestTracker);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let RequestTracker { id, connections } = &self.0;
        let mut state = connections.state();
        let now = Instant::now();
        if let Some(entry) = state.open.get_mut(id) {
            entry.idle_since = Some(now);
            state.idle.insert((now, *id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(admission: Admission) -> ConnectionSlot {
        match admission {
            Admission::Admitted(slot) | Admission::AdmittedByEviction(slot) => slot,
            Admission::Refused => panic!("refused"),
        }
    }

    fn is_evicted(slot: &mut ConnectionSlot) -> bool {
        slot.eviction
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let connections = OpenConnections::new(2);
        let mut first = slot(connections.admit());
        let mut second = slot(connections.admit());
        let third = connections.admit();
        assert!(matches!(third, Admission::AdmittedByEviction(_)));
        assert!(is_evicted(&mut first));
        assert!(!is_evicted(&mut second));
    }

    #[test]
    fn a_connection_with_a_request_in_flight_is_never_evicted() {
        let connections = OpenConnections::new(2);
        let mut busy = slot(connections.admit());
        let in_flight = busy.requests().start().expect("not evicted");
        let mut idle = slot(connections.admit());
        let _newcomer = slot(connections.admit());
        assert!(is_evicted(&mut idle));
        assert!(!is_evicted(&mut busy));
        // With every open connection busy, a newcomer is refused.
        let _also_busy = _newcomer.requests().start().expect("not evicted");
        assert!(matches!(connections.admit(), Admission::Refused));
        // Once its response is written the connection is idle again, and evictable.
        drop(in_flight);
        assert!(matches!(
            connections.admit(),
            Admission::AdmittedByEviction(_)
        ));
        assert!(is_evicted(&mut busy));
    }

    #[test]
    fn a_request_on_an_evicted_connection_does_not_start() {
        let connections = OpenConnections::new(1);
        let evicted = slot(connections.admit());
        let _newcomer = slot(connections.admit());
        assert!(evicted.requests().start().is_none());
    }

    #[test]
    fn a_closed_connection_frees_its_slot() {
        let connections = OpenConnections::new(1);
        let first = slot(connections.admit());
        drop(first);
        assert!(matches!(connections.admit(), Admission::Admitted(_)));
    }
}
