//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator
//! replicas can run and only one reconciles.
//!
//! The protocol is the one `client-go`'s leader election and
//! `kube-controller-manager` use, so the Lease reads the same in `kubectl
//! get lease -o yaml` and any tool that understands those reads ours:
//! `holderIdentity`, `leaseDurationSeconds`, `acquireTime` / `renewTime`
//! (`MicroTime`) and `leaseTransitions`, incremented each time the lease
//! changes hands.
//!
//! Design choices, and why:
//! - **Every write is optimistic** (a replace carrying the `resourceVersion`
//!   that was read, or a create that fails when the Lease exists): two
//!   candidates that both think the lease is free cannot both get it; the
//!   loser sees a conflict, reads again and finds the winner.
//! - **The decision is a pure function** ([`decide`]) of the Lease, the
//!   clock and this process's identity, so each case (absent, mine, held and
//!   fresh, expired, released, clocks that disagree) is a unit test rather
//!   than a scenario against an API server.
//! - **Expiry is `renewTime + leaseDurationSeconds`**, the holder's own
//!   duration (it is what the holder promised to renew within), measured on
//!   this process's wall clock. The renew time counts no later than when this
//!   process first saw that record, so a holder whose clock runs ahead (a
//!   `renewTime` in the future) delays a takeover by at most one duration
//!   after its last write, instead of for as long as its clock is off.
//! - **A holder gives up on its own monotonic clock**: when a renewal has not
//!   succeeded within `renew_deadline` of the last success it reports the
//!   lease lost, and the caller must stop at once. Because `renew_deadline`
//!   is shorter than `lease_duration` (checked), the old leader has stopped
//!   before anyone may take over, as long as the replicas' wall clocks agree
//!   within the difference (5 s with the defaults; NTP does far better).
//! - **A graceful shutdown hands the lease over** ([`Leadership::release`]):
//!   the holder clears `holderIdentity`, and a waiting replica takes a lease
//!   with no holder at its next look (within `retry_period`), instead of
//!   waiting out the duration. Dropping a [`Leadership`] stops renewing
//!   without handing over, as a crash would: the others take over at expiry.
//! - **A Lease someone else wrote, or deleted, is lost**: the holder never
//!   fights back, and it never recreates a deleted Lease, since a candidate
//!   may already have done so and be leading.
//! - **Transient API errors are retried; refusals are not**: a missing
//!   permission or namespace will not fix itself, so [`Elector::acquire`]
//!   returns them as errors that say what to grant or create.
//! - Identities must be unique per process (the pod name is): the holder of
//!   the lease's identity is taken to be this process.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a lease lasts, and how its holder and candidates pace themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long after its last renewal a lease may be taken over. Written to
    /// the Lease in whole seconds (rounded up).
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it reports the lease
    /// lost; shorter than `lease_duration`, so it has stopped before anyone
    /// else may take over.
    pub renew_deadline: Duration,
    /// How often the holder renews, and a candidate looks again.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// `client-go`'s defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// Refuses timings with which two replicas could lead at once, or a
    /// holder could not renew in time.
    pub fn check(&self) -> Result<(), LeaderError> {
        let LeaseTiming {
            lease_duration,
            renew_deadline,
            retry_period,
        } = *self;
        let problem = if retry_period.is_zero() {
            Some("retry_period is zero; give it a positive duration, e.g. 2 s".to_string())
        } else if lease_duration < Duration::from_secs(1) {
            Some(format!(
                "lease_duration ({lease_duration:?}) is under a second, the Lease's unit; give it at least 1 s, e.g. 15 s"
            ))
        } else if renew_deadline >= lease_duration {
            Some(format!(
                "renew_deadline ({renew_deadline:?}) must be shorter than lease_duration ({lease_duration:?}): a leader that cannot renew must stop before another replica may take over"
            ))
        } else if retry_period >= renew_deadline {
            Some(format!(
                "retry_period ({retry_period:?}) must be shorter than renew_deadline ({renew_deadline:?}), so the holder tries to renew more than once before giving up"
            ))
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(LeaderError::Timing(p)))
    }

    /// `lease_duration` in the Lease's whole seconds, rounded up, so the
    /// others never wait less than this process assumes.
    fn duration_seconds(&self) -> i32 {
        let millis = self.lease_duration.as_millis();
        i32::try_from(millis.div_ceil(1000)).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election timing: {0}")]
    Timing(String),
    #[error("the API server refused to {action} Lease {lease} ({answer}); {hint}")]
    Refused {
        action: &'static str,
        /// `namespace/name`.
        lease: String,
        /// The API server's code, reason and message.
        answer: String,
        hint: &'static str,
    },
}

/// What a candidate does next, given the Lease as it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, held by this process.
    Create,
    /// This process holds it (e.g. it restarted under the same identity):
    /// renew it, keeping its acquire time and transitions.
    Renew,
    /// It is free: released (no holder), or its holder let it expire. Take
    /// it; `leaseTransitions` goes up by one.
    TakeOver { from: Option<String> },
    /// Another process holds it and it has not expired: look again later.
    Wait {
        holder: String,
        expires_in: Duration,
    },
}

/// The decision of a candidate named `me` that read `current` at wall time
/// `now`, having first seen this record (holder and renew time) at
/// `seen_since` (at most `now`). `timing` gives the duration of a lease that
/// states none.
pub fn decide(
    current: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    seen_since: Timestamp,
    timing: &LeaseTiming,
) -> Decision {
    let Some(spec) = current else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver { from: None };
    }
    if holder == me {
        return Decision::Renew;
    }
    // A holder that states no (or a nonsensical) duration gets ours: the
    // only safe reading is that it renews on the same terms.
    let duration = spec
        .lease_duration_seconds
        .filter(|&s| s > 0)
        .map_or(timing.lease_duration, |s| Duration::from_secs(s as u64));
    // A lease with a holder but no time at all is counted from when it was
    // first seen: waited out once, never taken at sight, never forever.
    let written = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map_or(seen_since, |t| t.0);
    let renewed = written.min(seen_since).min(now);
    let age = Duration::try_from(now.duration_since(renewed)).unwrap_or_default();
    match duration.checked_sub(age) {
        Some(left) if !left.is_zero() => Decision::Wait {
            holder: holder.to_string(),
            expires_in: left,
        },
        _ => Decision::TakeOver {
            from: Some(holder.to_string()),
        },
    }
}

/// The spec of a Lease held by `me` from `now`: created, taken over, or
/// renewed, depending on `previous` (the spec as read, `None` if there was
/// no Lease).
pub fn holding(
    previous: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    timing: &LeaseTiming,
) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    let renewing = spec.holder_identity.as_deref() == Some(me);
    if !renewing || spec.acquire_time.is_none() {
        spec.acquire_time = Some(MicroTime(now));
    }
    if !renewing {
        spec.lease_transitions = Some(match previous {
            None => 0,
            Some(p) => p.lease_transitions.unwrap_or(0).saturating_add(1),
        });
    }
    spec.holder_identity = Some(me.to_string());
    spec.lease_duration_seconds = Some(timing.duration_seconds());
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// The spec of a Lease handed back at `now`: no holder, so a candidate takes
/// it at sight, and a one-second duration for tools that only compare times.
pub fn released(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

/// Why a [`Leadership`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another process wrote the Lease: it holds it now (or cleared it).
    TakenOver { holder: Option<String> },
    /// Someone deleted the Lease.
    Deleted,
    /// No renewal succeeded within the renew deadline.
    NotRenewed { within: Duration, error: String },
    /// The renewal task ended without saying why (it panicked).
    RenewalStopped,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::TakenOver { holder: Some(h) } => write!(f, "{h} took the lease over"),
            Lost::TakenOver { holder: None } => {
                write!(f, "another process cleared the lease's holder")
            }
            Lost::Deleted => write!(f, "someone deleted the lease"),
            Lost::NotRenewed { within, error } => write!(
                f,
                "the lease could not be renewed within {within:?} (last error: {error})"
            ),
            Lost::RenewalStopped => write!(f, "the lease's renewal task stopped unexpectedly"),
        }
    }
}

/// A candidate for one Lease under one identity.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

/// What one look at the Lease led to.
enum Step {
    Acquired {
        lease: Box<Lease>,
        at: Instant,
    },
    /// Someone else wrote in between: read again at once.
    Raced,
    Wait(Duration),
}

/// A failed API call: a timeout, or what the API server (or the way to it)
/// said.
enum CallError {
    Kube(kube::Error),
    TimedOut(Duration),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Kube(e) => write!(f, "{e}"),
            CallError::TimedOut(after) => {
                write!(f, "the API server did not answer within {after:?}")
            }
        }
    }
}

impl From<kube::Error> for CallError {
    fn from(e: kube::Error) -> Self {
        CallError::Kube(e)
    }
}

/// Whether a write failed because someone else wrote first: a conflict, a
/// create that found the Lease there, or a replace that found it deleted.
/// Either way, reading it again tells what to do.
fn someone_else_wrote(e: &kube::Error, replacing: bool) -> bool {
    matches!(e, kube::Error::Api(s)
        if s.is_conflict() || s.is_already_exists() || (replacing && s.is_not_found()))
}

async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(CallError::Kube),
        Err(_) => Err(CallError::TimedOut(limit)),
    }
}

/// The holder a Lease names, `None` for none (or an empty one).
fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

impl Elector {
    /// A candidate named `identity` (unique per process: the pod name) for
    /// the Lease `namespace/lease_name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: lease_name.to_string(),
            identity: identity.to_string(),
            timing,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this process holds the lease (creating it if absent,
    /// taking it over once released or expired); then a background task
    /// renews it every `retry_period` until [`Leadership::lost`] or
    /// [`Leadership::release`]. Errors only where waiting cannot help (bad
    /// timing, no permission, no namespace); transient failures are logged
    /// and retried. Dropping the future mid-way may leave the Lease held by
    /// this identity, unrenewed: it then expires like a crashed holder's.
    pub async fn acquire(&self) -> Result<Leadership, LeaderError> {
        self.timing.check()?;
        let mut seen: Option<Seen> = None;
        let mut waiting_for: Option<String> = None;
        loop {
            match self.look(&mut seen, &mut waiting_for).await {
                Ok(Step::Acquired { lease, at }) => {
                    tracing::info!(
                        lease = %format_args!("{}/{}", self.namespace, self.name),
                        identity = %self.identity,
                        transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0),
                        "acquired the leader lease"
                    );
                    return Ok(Leadership::start(self.clone(), *lease, at));
                }
                Ok(Step::Raced) => {}
                Ok(Step::Wait(pause)) => tokio::time::sleep(pause).await,
                Err(CallError::Kube(kube::Error::Api(status)))
                    if matches!(status.code, 401 | 403 | 404 | 422) =>
                {
                    let (action, hint) = match status.code {
                        401 | 403 => (
                            "read or write",
                            "give the operator's ServiceAccount a Role that allows get, create and update on leases.coordination.k8s.io in that namespace",
                        ),
                        404 => (
                            "create",
                            "the namespace does not exist: create it, or give the operator the namespace it runs in",
                        ),
                        _ => (
                            "write",
                            "the lease name and the identity must be valid Kubernetes names (lower-case letters, digits, '-' and '.')",
                        ),
                    };
                    return Err(LeaderError::Refused {
                        action,
                        lease: format!("{}/{}", self.namespace, self.name),
                        answer: format!("{} {}: {}", status.code, status.reason, status.message),
                        hint,
                    });
                }
                Err(e) => {
                    tracing::warn!(
                        lease = %format_args!("{}/{}", self.namespace, self.name),
                        "cannot read or write the leader lease, trying again in {:?}: {e}",
                        self.timing.retry_period
                    );
                    tokio::time::sleep(self.timing.retry_period).await;
                }
            }
        }
    }

    /// Reads the Lease, decides, and acts on the decision once.
    async fn look(
        &self,
        seen: &mut Option<Seen>,
        waiting_for: &mut Option<String>,
    ) -> Result<Step, CallError> {
        let limit = self.timing.renew_deadline;
        let current = bounded(limit, self.api.get_opt(&self.name)).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let record = (
            spec.and_then(|s| s.holder_identity.clone()),
            spec.and_then(|s| s.renew_time.clone()),
        );
        let first_seen = match seen {
            Some(s) if s.record == record => s.at,
            _ => {
                seen.insert(Seen {
                    record,
                    at: Instant::now(),
                })
                .at
            }
        };
        let at = Instant::now();
        let now = Timestamp::now();
        // Measured on the monotonic clock, so a wall clock stepped back
        // while waiting cannot make the record look newer than it is.
        let seen_since = now
            .checked_sub(first_seen.elapsed())
            .unwrap_or(Timestamp::MIN);
        let decision = decide(spec, &self.identity, now, seen_since, &self.timing);
        let replacing = !matches!(decision, Decision::Create);
        let written = match decision {
            Decision::Wait { holder, expires_in } => {
                if waiting_for.as_deref() != Some(holder.as_str()) {
                    tracing::info!(
                        lease = %format_args!("{}/{}", self.namespace, self.name),
                        %holder,
                        "another replica leads; waiting for its lease to be released or to expire (in {expires_in:?} unless renewed)"
                    );
                    *waiting_for = Some(holder);
                }
                return Ok(Step::Wait(expires_in.min(self.timing.retry_period)));
            }
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(holding(None, &self.identity, now, &self.timing)),
                };
                bounded(limit, self.api.create(&PostParams::default(), &lease)).await
            }
            Decision::Renew | Decision::TakeOver { .. } => {
                let mut lease = current.clone().unwrap_or_default();
                lease.spec = Some(holding(spec, &self.identity, now, &self.timing));
                bounded(
                    limit,
                    self.api.replace(&self.name, &PostParams::default(), &lease),
                )
                .await
            }
        };
        match written {
            Ok(lease) => Ok(Step::Acquired {
                lease: Box::new(lease),
                at,
            }),
            Err(CallError::Kube(e)) if someone_else_wrote(&e, replacing) => Ok(Step::Raced),
            Err(e) => Err(e),
        }
    }

    /// Renews `lease` (as this process last wrote it) once, reading it again
    /// after a conflict to find out whether it is still ours.
    async fn renew(&self, lease: &Lease) -> Result<Result<Lease, Lost>, kube::Error> {
        let mut current = lease.clone();
        loop {
            if holder_of(&current) != Some(self.identity.as_str()) {
                return Ok(Err(Lost::TakenOver {
                    holder: holder_of(&current).map(str::to_string),
                }));
            }
            let mut next = current.clone();
            next.spec = Some(holding(
                current.spec.as_ref(),
                &self.identity,
                Timestamp::now(),
                &self.timing,
            ));
            match self
                .api
                .replace(&self.name, &PostParams::default(), &next)
                .await
            {
                Ok(written) => return Ok(Ok(written)),
                Err(e) if someone_else_wrote(&e, true) => match self.api.get_opt(&self.name).await?
                {
                    Some(read) => current = read,
                    None => return Ok(Err(Lost::Deleted)),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// Clears the holder of `lease` if it is still this process's.
    async fn hand_over(&self, lease: Lease) -> Result<bool, kube::Error> {
        let mut current = lease;
        loop {
            if holder_of(&current) != Some(self.identity.as_str()) {
                return Ok(false);
            }
            let mut next = current.clone();
            next.spec = current.spec.as_ref().map(|s| released(s, Timestamp::now()));
            match self
                .api
                .replace(&self.name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if someone_else_wrote(&e, true) => match self.api.get_opt(&self.name).await?
                {
                    Some(read) => current = read,
                    None => return Ok(false),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// Renews every `retry_period` until the lease is lost; `lease` is kept
    /// as last written, for the hand-over.
    async fn renew_until_lost(&self, lease: &mut Lease, mut renewed: Instant) -> Lost {
        let timing = self.timing;
        loop {
            tokio::time::sleep_until(renewed + timing.retry_period).await;
            let deadline = renewed + timing.renew_deadline;
            let mut last_error = String::from("none");
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Lost::NotRenewed {
                        within: timing.renew_deadline,
                        error: last_error,
                    };
                }
                let attempt = Instant::now();
                match bounded(left, self.renew(lease)).await {
                    Ok(Ok(written)) => {
                        *lease = written;
                        renewed = attempt;
                        break;
                    }
                    Ok(Err(lost)) => return lost,
                    Err(e) => {
                        tracing::warn!(
                            lease = %format_args!("{}/{}", self.namespace, self.name),
                            "cannot renew the leader lease ({left:?} left before giving it up): {e}"
                        );
                        last_error = e.to_string();
                        let pause = timing
                            .retry_period
                            .min(deadline.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }
}

/// A record (holder, renew time) and when this process first saw it.
struct Seen {
    record: (Option<String>, Option<MicroTime>),
    at: Instant,
}

/// This process holds the lease; a background task renews it.
#[must_use = "dropping a Leadership stops renewing the lease; keep it while reconciling"]
pub struct Leadership {
    elector: Elector,
    /// `None` while leading; why it ended once lost.
    state: watch::Receiver<Option<Lost>>,
    stop: Option<oneshot::Sender<()>>,
    /// Ends with the Lease as last written when stopped, `None` when lost.
    task: Option<JoinHandle<Option<Lease>>>,
}

impl Leadership {
    fn start(elector: Elector, lease: Lease, renewed: Instant) -> Leadership {
        let (state_tx, state) = watch::channel(None);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let renewer = elector.clone();
        let task = tokio::spawn(async move {
            let mut lease = lease;
            let lost = tokio::select! {
                biased;
                _ = &mut stopped => None,
                lost = renewer.renew_until_lost(&mut lease, renewed) => Some(lost),
            };
            match lost {
                None => Some(lease),
                Some(lost) => {
                    tracing::warn!(
                        lease = %format_args!("{}/{}", renewer.namespace, renewer.name),
                        identity = %renewer.identity,
                        "lost the leader lease: {lost}"
                    );
                    let _ = state_tx.send(Some(lost));
                    None
                }
            }
        });
        Leadership {
            elector,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Whether the lease is still this process's, as far as it knows.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().is_none()
    }

    /// Resolves when leadership is lost (no renewal succeeded within
    /// `renew_deadline`, or another process wrote or deleted the lease): the
    /// caller must stop reconciling at once. Cancel-safe, for `select!`.
    pub async fn lost(&mut self) -> Lost {
        match self.state.wait_for(Option::is_some).await {
            Ok(lost) => lost.clone().unwrap_or(Lost::RenewalStopped),
            Err(_) => Lost::RenewalStopped,
        }
    }

    /// On graceful shutdown: stops renewing and hands the lease over at once
    /// (no holder), so another replica takes over without waiting out the
    /// duration. Bounded by `renew_deadline`; a failure is logged, and the
    /// lease then simply expires.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let last = match self.task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        let Some(lease) = last else {
            return; // lost already: nothing of ours to hand over
        };
        let elector = &self.elector;
        let where_ = format!("{}/{}", elector.namespace, elector.name);
        match bounded(elector.timing.renew_deadline, elector.hand_over(lease)).await {
            Ok(true) => tracing::info!(lease = %where_, "released the leader lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                lease = %where_,
                "cannot release the leader lease; another replica takes over when it expires: {e}"
            ),
        }
    }
}

impl Drop for Leadership {
    /// Stops renewing without handing over, as a crash would.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator runs these on a multi-threaded runtime: they must be
    /// `Send`. Checked when this compiles.
    #[allow(dead_code)]
    async fn calls_can_move_between_threads(elector: Elector) {
        fn send<T: Send>(_: T) {}
        send(elector.acquire());
        let mut leadership = elector.acquire().await.unwrap();
        send(leadership.lost());
        send(leadership.release());
    }

    fn timing() -> LeaseTiming {
        LeaseTiming::default()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).unwrap()
    }

    fn held(holder: Option<&str>, renewed: Option<i64>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            acquire_time: renewed.map(|s| MicroTime(at(s - 100))),
            lease_duration_seconds: seconds,
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }
    }

    fn wait(holder: &str, secs: u64) -> Decision {
        Decision::Wait {
            holder: holder.into(),
            expires_in: Duration::from_secs(secs),
        }
    }

    fn take_from(holder: &str) -> Decision {
        Decision::TakeOver {
            from: Some(holder.into()),
        }
    }

    #[test]
    fn an_absent_lease_is_created() {
        assert_eq!(decide(None, "a", at(0), at(0), &timing()), Decision::Create);
    }

    #[test]
    fn a_lease_held_by_me_is_renewed_even_when_expired() {
        let spec = held(Some("a"), Some(0), Some(15));
        assert_eq!(
            decide(Some(&spec), "a", at(5), at(5), &timing()),
            Decision::Renew
        );
        // A restart under the same identity finds its old, expired lease.
        assert_eq!(
            decide(Some(&spec), "a", at(500), at(500), &timing()),
            Decision::Renew
        );
    }

    #[test]
    fn a_fresh_lease_held_by_another_is_waited_for_until_it_expires() {
        let spec = held(Some("b"), Some(0), Some(15));
        assert_eq!(
            decide(Some(&spec), "a", at(5), at(5), &timing()),
            wait("b", 10)
        );
        assert_eq!(
            decide(Some(&spec), "a", at(14), at(1), &timing()),
            wait("b", 1)
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_exactly_at_expiry() {
        let spec = held(Some("b"), Some(0), Some(15));
        assert_eq!(
            decide(Some(&spec), "a", at(15), at(3), &timing()),
            take_from("b")
        );
        assert_eq!(
            decide(Some(&spec), "a", at(3600), at(3), &timing()),
            take_from("b")
        );
        let just_before = at(15).checked_sub(Duration::from_millis(1)).unwrap();
        assert_eq!(
            decide(Some(&spec), "a", just_before, at(3), &timing()),
            Decision::Wait {
                holder: "b".into(),
                expires_in: Duration::from_millis(1)
            }
        );
    }

    #[test]
    fn the_holders_duration_counts_not_mine() {
        // The holder promised to renew within 60 s: it is not expired at 20 s
        // even though this candidate's own duration is 15 s.
        let spec = held(Some("b"), Some(0), Some(60));
        assert_eq!(
            decide(Some(&spec), "a", at(20), at(20), &timing()),
            wait("b", 40)
        );
        // No duration, or a nonsensical one: ours.
        for seconds in [None, Some(0), Some(-5)] {
            let spec = held(Some("b"), Some(0), seconds);
            assert_eq!(
                decide(Some(&spec), "a", at(5), at(5), &timing()),
                wait("b", 10),
                "{seconds:?}"
            );
        }
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        for holder in [None, Some("")] {
            let spec = held(holder, Some(0), Some(1));
            assert_eq!(
                decide(Some(&spec), "a", at(0), at(0), &timing()),
                Decision::TakeOver { from: None },
                "{holder:?}"
            );
        }
        // What `released` writes reads as released.
        let handed = released(&held(Some("b"), Some(0), Some(15)), at(3));
        assert_eq!(
            decide(Some(&handed), "a", at(3), at(3), &timing()),
            Decision::TakeOver { from: None }
        );
    }

    #[test]
    fn a_renew_time_in_the_future_delays_a_takeover_by_one_duration_at_most() {
        // The holder's clock runs an hour ahead: its renewTime is an hour
        // from now. Counted from when this candidate first saw it.
        let spec = held(Some("b"), Some(3600), Some(15));
        assert_eq!(
            decide(Some(&spec), "a", at(0), at(0), &timing()),
            wait("b", 15)
        );
        assert_eq!(
            decide(Some(&spec), "a", at(10), at(0), &timing()),
            wait("b", 5)
        );
        assert_eq!(
            decide(Some(&spec), "a", at(15), at(0), &timing()),
            take_from("b")
        );
    }

    #[test]
    fn a_seen_since_after_now_is_read_as_now() {
        // A caller's clock stepped back: never a wait longer than a duration.
        let spec = held(Some("b"), Some(100), Some(15));
        assert_eq!(
            decide(Some(&spec), "a", at(50), at(200), &timing()),
            wait("b", 15)
        );
    }

    #[test]
    fn a_lease_with_a_holder_but_no_times_is_waited_out_once() {
        let spec = held(Some("b"), None, Some(15));
        assert_eq!(
            decide(Some(&spec), "a", at(0), at(0), &timing()),
            wait("b", 15)
        );
        assert_eq!(
            decide(Some(&spec), "a", at(15), at(0), &timing()),
            take_from("b")
        );
        // With only an acquire time, that counts.
        let spec = LeaseSpec {
            acquire_time: Some(MicroTime(at(0))),
            ..held(Some("b"), None, Some(15))
        };
        assert_eq!(
            decide(Some(&spec), "a", at(16), at(16), &timing()),
            take_from("b")
        );
    }

    #[test]
    fn holding_counts_transitions_only_when_the_lease_changes_hands() {
        let t = timing();
        let created = holding(None, "a", at(0), &t);
        assert_eq!(created.holder_identity.as_deref(), Some("a"));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(created.renew_time, Some(MicroTime(at(0))));

        let renewed = holding(Some(&created), "a", at(2), &t);
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(2))));

        let taken = holding(Some(&renewed), "b", at(30), &t);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(30))));

        // Taking a released lease is a transition too, as in client-go.
        let after_release = holding(Some(&released(&taken, at(40))), "a", at(41), &t);
        assert_eq!(after_release.lease_transitions, Some(2));
        assert_eq!(after_release.lease_duration_seconds, Some(15));
    }

    #[test]
    fn the_duration_is_written_in_whole_seconds_rounded_up() {
        let t = |ms| LeaseTiming {
            lease_duration: Duration::from_millis(ms),
            ..LeaseTiming::default()
        };
        assert_eq!(t(15_000).duration_seconds(), 15);
        assert_eq!(t(2_500).duration_seconds(), 3);
        assert_eq!(t(1_000).duration_seconds(), 1);
    }

    #[test]
    fn timings_that_could_let_two_lead_are_refused() {
        assert!(LeaseTiming::default().check().is_ok());
        let s = Duration::from_secs;
        let err = |lease, renew, retry| {
            LeaseTiming {
                lease_duration: s(lease),
                renew_deadline: s(renew),
                retry_period: s(retry),
            }
            .check()
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            err(10, 10, 2),
            "leader election timing: renew_deadline (10s) must be shorter than lease_duration (10s): a leader that cannot renew must stop before another replica may take over"
        );
        assert!(err(15, 10, 10).contains("retry_period (10s) must be shorter than renew_deadline"));
        assert!(err(15, 10, 0).contains("retry_period is zero"));
        assert!(err(0, 0, 0).contains("retry_period is zero"));
        let short = LeaseTiming {
            lease_duration: Duration::from_millis(500),
            renew_deadline: Duration::from_millis(300),
            retry_period: Duration::from_millis(100),
        };
        assert!(
            short
                .check()
                .unwrap_err()
                .to_string()
                .contains("under a second")
        );
    }

    #[test]
    fn why_a_lease_was_lost_reads_as_a_sentence() {
        assert_eq!(
            Lost::TakenOver {
                holder: Some("operator-1".into())
            }
            .to_string(),
            "operator-1 took the lease over"
        );
        assert_eq!(
            Lost::NotRenewed {
                within: Duration::from_secs(10),
                error: "connection refused".into()
            }
            .to_string(),
            "the lease could not be renewed within 10s (last error: connection refused)"
        );
    }
}
