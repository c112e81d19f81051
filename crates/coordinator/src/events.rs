//! What changed, as it happens, for the dashboard's live updates.
//!
//! The gRPC handlers publish an [`Event`] after each change of the job model
//! they commit; the dashboard streams them to browsers (server-sent events).
//! Every event gets the next id, and the last [`REPLAY`] are kept so that a
//! page that reconnects with the id it last saw misses nothing; a page that
//! fell further behind is told to reload its snapshot ([`Replay::Reset`]).
//! Publishing never blocks a handler: a slow reader loses its place in the
//! broadcast channel, not the coordinator's time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sweep_core::metrics::EpochMetrics;
use tokio::sync::broadcast;

use crate::store::JobRow;

/// Events kept for pages that reconnect.
pub const REPLAY: usize = 4096;

/// One change, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A job changed state (leased, running, done, failed, requeued).
    Job(JobView),
    /// A job reported an epoch.
    Epoch {
        job_id: String,
        sweep: String,
        variant: String,
        seed: u64,
        epochs: u32,
        metrics: EpochMetrics,
    },
    /// Many jobs of a sweep changed at once (submitted, cancelled, leases
    /// expired, results written): the page reloads its snapshot.
    Sweep { sweep: String },
    /// A worker registered.
    Worker { name: String },
}

impl Event {
    /// The sweep the event belongs to (None: of interest to every page).
    pub fn sweep(&self) -> Option<&str> {
        match self {
            Event::Job(job) => Some(&job.sweep),
            Event::Epoch { sweep, .. } | Event::Sweep { sweep } => Some(sweep),
            Event::Worker { .. } => None,
        }
    }

    /// The SSE event name: what the page's listener is registered for.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Job(_) => "job",
            Event::Epoch { .. } => "epoch",
            Event::Sweep { .. } => "sweep",
            Event::Worker { .. } => "worker",
        }
    }
}

/// A job as the dashboard's grid shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub sweep: String,
    pub variant: String,
    pub seed: u64,
    pub state: &'static str,
    pub attempt: u32,
    pub worker: String,
    pub epoch: u32,
    pub epochs: u32,
    /// Final test accuracy, once the job succeeded.
    pub test_acc: Option<f64>,
    pub error: String,
}

impl From<&JobRow> for JobView {
    fn from(job: &JobRow) -> Self {
        JobView {
            job_id: job.id.clone(),
            sweep: job.sweep.clone(),
            variant: job.variant.clone(),
            seed: job.seed,
            state: job.state.as_str(),
            attempt: job.attempt,
            worker: job.worker.clone().unwrap_or_default(),
            epoch: job.epochs_done,
            epochs: job.epochs,
            test_acc: job
                .final_metrics
                .as_ref()
                .and_then(|m| m.test)
                .map(|t| t.test_acc),
            error: job.error.clone().unwrap_or_default(),
        }
    }
}

/// An event as it is sent: serialized once, however many pages follow.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    pub json: String,
}

/// An event with its id, shared by every subscriber.
pub type Numbered = (u64, Arc<Published>);

/// Where a subscriber starts.
pub enum Replay {
    /// The events after the id asked for, then the live ones.
    From(Vec<Numbered>),
    /// The id asked for is no longer kept: reload, then follow.
    Reset,
}

/// The publish side, held by [`crate::service::Shared`].
pub struct EventBus {
    /// The kept events and the id of the last one. One lock for both, so
    /// that a subscriber sees each event exactly once: in its replay or live.
    kept: Mutex<(VecDeque<Numbered>, u64)>,
    live: broadcast::Sender<Numbered>,
}

impl Default for EventBus {
    /// Ids start at the current time in microseconds, so that an id a page
    /// kept from a previous coordinator is never taken for one of this one's.
    fn default() -> Self {
        let first = crate::store::now_ms().max(0) as u64 * 1000;
        EventBus {
            kept: Mutex::new((VecDeque::with_capacity(REPLAY), first)),
            live: broadcast::Sender::new(REPLAY),
        }
    }
}

impl EventBus {
    pub fn publish(&self, event: Event) {
        // Plain strings and finite numbers (metrics are checked on arrival):
        // serializing cannot fail, and an empty object would be harmless.
        let json = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
        let published = Arc::new(Published { event, json });
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.1 += 1;
        let numbered = (kept.1, published);
        if kept.0.len() == REPLAY {
            kept.0.pop_front();
        }
        kept.0.push_back(numbered.clone());
        // No subscriber is not an error.
        let _ = self.live.send(numbered);
    }

    /// The id of the last event published. A snapshot read
    /// after this call holds every change up to it.
    pub fn last_id(&self) -> u64 {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// The events after `after` (None: only new ones), and the live stream.
    pub fn subscribe(&self, after: Option<u64>) -> (Replay, broadcast::Receiver<Numbered>) {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.subscribe();
        let (events, last) = (&kept.0, kept.1);
        let replay = match after {
            None => Replay::From(Vec::new()),
            Some(after) if after > last => Replay::Reset,
            Some(after) => {
                let oldest = events.front().map_or(last + 1, |(id, _)| *id);
                if after + 1 < oldest {
                    Replay::Reset
                } else {
                    Replay::From(
                        events
                            .iter()
                            .filter(|(id, _)| *id > after)
                            .cloned()
                            .collect(),
                    )
                }
            }
        };
        (replay, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> Event {
        Event::Worker { name: name.into() }
    }

    fn ids(replay: Replay) -> Option<Vec<u64>> {
        match replay {
            Replay::From(events) => Some(events.iter().map(|(id, _)| *id).collect()),
            Replay::Reset => None,
        }
    }

    #[test]
    fn a_reconnecting_reader_gets_exactly_what_it_missed() {
        let bus = EventBus::default();
        let base = bus.last_id();
        for i in 0..5 {
            bus.publish(worker(&format!("w{i}")));
        }
        let (replay, mut live) = bus.subscribe(Some(base + 3));
        assert_eq!(ids(replay), Some(vec![base + 4, base + 5]));
        bus.publish(worker("w5"));
        assert_eq!(live.try_recv().expect("live event").0, base + 6);
        assert_eq!(bus.last_id(), base + 6);
        let (replay, _) = bus.subscribe(Some(base + 6));
        assert_eq!(ids(replay), Some(vec![]));
    }

    #[test]
    fn a_reader_too_far_behind_or_from_another_life_must_reload() {
        let earlier = EventBus::default();
        earlier.publish(worker("w"));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let bus = EventBus::default();
        let base = bus.last_id();
        for i in 0..REPLAY + 10 {
            bus.publish(worker(&format!("w{i}")));
        }
        // Event 10 was dropped: 11 is the oldest kept.
        let (replay, _) = bus.subscribe(Some(base + 9));
        assert!(ids(replay).is_none());
        let (replay, _) = bus.subscribe(Some(base + 10));
        assert_eq!(ids(replay).map(|v| v.len()), Some(REPLAY));
        // An id of a previous coordinator's is behind this one's first.
        let (replay, _) = bus.subscribe(Some(earlier.last_id()));
        assert!(ids(replay).is_none());
        let (replay, _) = bus.subscribe(Some(u64::MAX));
        assert!(ids(replay).is_none());
    }
}
