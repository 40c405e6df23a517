//! Asynchronous jobs: `POST /v1/jobs` answers at once and the request runs
//! in the background; `GET /v1/jobs/{id}` reads (or waits for) its end.
//!
//! Memory is bounded by bytes on both sides. A running job holds its
//! request: the bytes of its body are taken from a budget up front, and a
//! job that does not fit is refused (503, retry later). A finished job is
//! kept as its JSON for `ttl` counted from when it *finished* (it enters
//! the finished store then), in a store bounded by bytes that evicts the
//! coldest first and counts what it evicts.

use crate::bytes::{ByteBudget, Held};
use crate::cache::count_evictions;
use crate::lock;
use axum::body::Bytes;
use prometheus::IntCounterVec;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use setlist_core::api::RecommendationResponse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    Pending,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<RecommendationResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Job {
    pub fn finished(&self) -> bool {
        matches!(self.state, JobState::Done | JobState::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobsFull;

/// What a lookup finds.
pub enum Found {
    /// Still running: watch it until it ends.
    Running(watch::Receiver<Job>),
    /// Finished: its JSON.
    Finished(Bytes),
}

pub struct Jobs {
    running: Mutex<HashMap<String, watch::Sender<Job>>>,
    finished: moka::sync::Cache<String, Bytes>,
    room: ByteBudget,
    ttl: Duration,
}

/// What a finished job costs beyond its JSON and id.
const ENTRY_OVERHEAD: usize = 160;

impl Jobs {
    pub fn new(
        running_bytes: usize,
        finished_bytes: u64,
        ttl: Duration,
        evictions: &IntCounterVec,
    ) -> Arc<Jobs> {
        Arc::new(Jobs {
            running: Mutex::new(HashMap::new()),
            finished: moka::sync::Cache::builder()
                .max_capacity(finished_bytes)
                .weigher(|id: &String, json: &Bytes| {
                    u32::try_from(ENTRY_OVERHEAD + id.len() + json.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .eviction_listener(count_evictions(evictions, "jobs"))
                .build(),
            room: ByteBudget::new(running_bytes),
            ttl,
        })
    }

    /// How long a finished job is kept (at most).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Registers a job whose request is `request_bytes` big, or refuses it
    /// when the running jobs hold all the bytes they may.
    pub fn create(self: &Arc<Self>, request_bytes: usize) -> Result<RunningJob, JobsFull> {
        let held = self.room.try_take(request_bytes).ok_or(JobsFull)?;
        let mut running = lock(&self.running);
        let id = loop {
            let id = format!("{:032x}", rand::rng().random::<u128>());
            if !running.contains_key(&id) && !self.finished.contains_key(&id) {
                break id;
            }
        };
        let (job, _) = watch::channel(Job {
            id: id.clone(),
            state: JobState::Pending,
            result: None,
            error: None,
        });
        running.insert(id.clone(), job.clone());
        Ok(RunningJob {
            jobs: self.clone(),
            id,
            job,
            _held: held,
            finished: false,
        })
    }

    pub fn find(&self, id: &str) -> Option<Found> {
        // A job moves to `finished` before it leaves `running`: looked up
        // in this order, it is always in one of them.
        if let Some(job) = lock(&self.running).get(id) {
            return Some(Found::Running(job.subscribe()));
        }
        self.finished.get(id).map(Found::Finished)
    }

    /// Bytes held by running jobs.
    pub fn running_bytes(&self) -> usize {
        self.room.used()
    }

    /// Bytes held by finished jobs, once pending bookkeeping is done.
    pub fn finished_bytes(&self) -> u64 {
        self.finished.run_pending_tasks();
        self.finished.weighted_size()
    }
}

/// A job while it runs; when dropped unfinished (its task panicked or was
/// cancelled), it ends FAILED with the reason, so no job stays RUNNING.
pub struct RunningJob {
    jobs: Arc<Jobs>,
    id: String,
    job: watch::Sender<Job>,
    _held: Held,
    finished: bool,
}

impl RunningJob {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn start(&self) {
        self.job.send_modify(|j| j.state = JobState::Running);
    }

    pub fn done(mut self, result: RecommendationResponse) {
        self.end(JobState::Done, Some(result), None);
    }

    fn end(
        &mut self,
        state: JobState,
        result: Option<RecommendationResponse>,
        error: Option<String>,
    ) {
        self.finished = true;
        self.job.send_modify(|j| {
            j.state = state;
            j.result = result;
            j.error = error;
        });
        // A job is strings, numbers and lists: serialising it cannot fail.
        let json = serde_json::to_vec(&*self.job.borrow()).unwrap_or_default();
        self.jobs.finished.insert(self.id.clone(), json.into());
        lock(&self.jobs.running).remove(&self.id);
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        if !self.finished {
            self.end(
                JobState::Failed,
                None,
                Some("the job stopped unexpectedly; submit it again".into()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;
    use setlist_core::api::Timings;

    fn evictions() -> IntCounterVec {
        IntCounterVec::new(Opts::new("evictions", "Evictions."), &["store", "cause"]).unwrap()
    }

    fn response(unknown: usize) -> RecommendationResponse {
        RecommendationResponse {
            recommendations: vec![],
            model_version: "m1".into(),
            fallback: false,
            fallback_reason: None,
            unknown_tracks: vec!["x".repeat(100); unknown],
            cached: false,
            timings: Timings::default(),
        }
    }

    fn finished_json(jobs: &Jobs, id: &str) -> Option<Job> {
        match jobs.find(id)? {
            Found::Finished(json) => Some(serde_json::from_slice(&json).unwrap()),
            Found::Running(_) => None,
        }
    }

    #[tokio::test]
    async fn a_job_runs_then_is_kept_finished() {
        let jobs = Jobs::new(1 << 20, 1 << 20, Duration::from_secs(600), &evictions());
        let job = jobs.create(100).unwrap();
        let id = job.id().to_string();
        let Some(Found::Running(mut watching)) = jobs.find(&id) else {
            panic!("a new job is running")
        };
        assert_eq!(watching.borrow().state, JobState::Pending);
        job.start();
        job.done(response(1));
        let seen = watching.wait_for(Job::finished).await.unwrap().clone();
        assert_eq!(seen.state, JobState::Done);
        let kept = finished_json(&jobs, &id).expect("kept once finished");
        assert_eq!(kept, seen);
        assert_eq!(
            jobs.running_bytes(),
            0,
            "its request's bytes are given back"
        );
    }

    #[test]
    fn a_job_whose_task_dies_ends_failed() {
        let jobs = Jobs::new(1 << 20, 1 << 20, Duration::from_secs(600), &evictions());
        let job = jobs.create(100).unwrap();
        let id = job.id().to_string();
        drop(job);
        let kept = finished_json(&jobs, &id).unwrap();
        assert_eq!(kept.state, JobState::Failed);
        assert!(kept.error.unwrap().contains("submit it again"));
    }

    /// Issue 7, item 9: the job store swept finished jobs only past 100,000
    /// of them, and counted their TTL from creation.
    #[test]
    fn running_jobs_are_bounded_by_their_bytes() {
        let jobs = Jobs::new(1000, 1 << 20, Duration::from_secs(600), &evictions());
        let first = jobs.create(600).unwrap();
        assert!(jobs.create(600).is_err(), "503: the budget is spent");
        first.done(response(0));
        assert!(jobs.create(600).is_ok(), "finishing gives the bytes back");
    }

    #[test]
    fn finished_jobs_are_bounded_by_bytes_and_evictions_counted() {
        let evictions = evictions();
        let max_bytes = 64 * 1024;
        let jobs = Jobs::new(1 << 20, max_bytes, Duration::from_secs(600), &evictions);
        for _ in 0..100 {
            jobs.create(10).unwrap().done(response(20));
        }
        assert!(jobs.finished_bytes() <= max_bytes);
        assert!(evictions.with_label_values(&["jobs", "size"]).get() > 0);
    }

    #[test]
    fn a_running_job_is_not_in_the_finished_store_so_its_ttl_has_not_started() {
        let jobs = Jobs::new(1 << 20, 1 << 20, Duration::from_secs(600), &evictions());
        let job = jobs.create(10).unwrap();
        assert!(!jobs.finished.contains_key(job.id()));
        let id = job.id().to_string();
        job.done(response(0));
        assert!(jobs.finished.contains_key(&id));
    }
}
