//! Which failed compute nodes to replace, decided from what the pods say:
//! a pure function, so every rule (the reasons, one at a time per part, the
//! back-off) is tested without a cluster.
//!
//! A node is replaced by deleting its pod: its StatefulSet makes a new one
//! under the same name, with a fresh cache volume, wherever the scheduler
//! puts it, and the name keeps the node's Kafka group identity.

use crate::crd::Replacement;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// Restarts in a row, while waiting in CrashLoopBackOff, that make a node
/// crash-looping rather than unlucky.
pub const CRASH_LOOP_RESTARTS: i32 = 3;
/// The first wait between two replacements of one part; it doubles with
/// each replacement within [`BACKOFF_WINDOW`], up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
pub const BACKOFF_WINDOW: Duration = Duration::from_secs(1800);
/// Replacements within the window after which the part is `Degraded`:
/// replacing does not help, a person should look.
pub const REPEATED: usize = 3;

/// Why a node is replaced (the reason in Events, status and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    CrashLoop,
    Unready,
    SliceMismatch,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CrashLoop => "CrashLoop",
            Reason::Unready => "Unready",
            Reason::SliceMismatch => "SliceMismatch",
        }
    }
}

/// What the operator knows of one compute node's pod.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    pub pod: String,
    pub uid: String,
    pub part: String,
    pub terminating: bool,
    pub ready: bool,
    /// Since when the pod has been as `ready` says (its Ready condition's
    /// last transition, else its creation).
    pub since: Timestamp,
    pub restarts: i32,
    /// `CrashLoopBackOff` and the like, while the container waits.
    pub waiting_reason: Option<String>,
    /// The last exit: its code and message, for people.
    pub last_exit: Option<String>,
    /// `/readyz`'s sentence, where the operator could read it.
    pub readiness: Option<String>,
}

impl NodeHealth {
    /// What a pod's status says; None for a pod without the part label.
    pub fn of(pod: &Pod, part_label: &str) -> Option<NodeHealth> {
        let meta = &pod.metadata;
        let part = meta.labels.as_ref()?.get(part_label)?.clone();
        let status = pod.status.as_ref();
        let ready_condition = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let ready = ready_condition.is_some_and(|c| c.status == "True");
        let created = meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let since = ready_condition
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(created);
        let container = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first());
        let waiting_reason = container
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        let last_exit = container
            .and_then(|c| c.last_state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                let mut text = format!("exit code {}", t.exit_code);
                if let Some(signal) = t.signal {
                    text.push_str(&format!(" (signal {signal})"));
                }
                if let Some(message) = t.message.as_deref().filter(|m| !m.trim().is_empty()) {
                    text.push_str(": ");
                    text.push_str(message.trim());
                }
                text
            });
        Some(NodeHealth {
            pod: meta.name.clone()?,
            uid: meta.uid.clone()?,
            part,
            terminating: meta.deletion_timestamp.is_some(),
            ready,
            since,
            restarts: container.map(|c| c.restart_count).unwrap_or(0),
            waiting_reason,
            last_exit,
            readiness: None,
        })
    }

    /// Whether the node should be replaced now, and why, given the grace
    /// an unready node has.
    pub fn failure(&self, now: Timestamp, grace: Duration) -> Option<(Reason, String)> {
        if self.terminating || self.ready {
            return None;
        }
        if let Some(readiness) = &self.readiness
            && readiness.contains("the slice was refused")
        {
            return Some((Reason::SliceMismatch, readiness.clone()));
        }
        if self.waiting_reason.as_deref() == Some("CrashLoopBackOff")
            && self.restarts >= CRASH_LOOP_RESTARTS
        {
            let exit = self.last_exit.as_deref().unwrap_or("no exit recorded");
            return Some((
                Reason::CrashLoop,
                format!(
                    "crash-looping after {} restarts, last {exit}",
                    self.restarts
                ),
            ));
        }
        let unready_for = elapsed(self.since, now);
        if unready_for >= grace {
            let why = self
                .readiness
                .as_deref()
                .unwrap_or("its readiness probe fails");
            return Some((
                Reason::Unready,
                format!(
                    "unready for {}s (grace {}s): {why}",
                    unready_for.as_secs(),
                    grace.as_secs()
                ),
            ));
        }
        None
    }

    /// A short sentence on what is wrong with an unready node, for status.
    pub fn problem(&self) -> String {
        if let Some(readiness) = &self.readiness {
            return readiness.clone();
        }
        match (&self.waiting_reason, &self.last_exit) {
            (Some(waiting), Some(exit)) => format!("{waiting}, last {exit}"),
            (Some(waiting), None) => waiting.clone(),
            (None, _) if self.terminating => "terminating".into(),
            _ => "not ready".into(),
        }
    }
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    now.duration_since(since)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// One replacement to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub pod: String,
    pub uid: String,
    pub part: String,
    pub reason: Reason,
    pub message: String,
}

/// A part whose replacements wait: the cluster is `Degraded` while so.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub part: String,
    pub message: String,
}

/// The wait before the next replacement of a part that was replaced
/// `recent` times within the window.
pub fn backoff(recent: usize) -> Duration {
    if recent == 0 {
        return Duration::ZERO;
    }
    let doublings = (recent - 1).min(16) as u32;
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The replacements to make now across the cluster's compute nodes: at most
/// one per part, none in a part with a pod already going away, none before
/// the part's back-off since its last replacement has passed.
pub fn decide(
    nodes: &[NodeHealth],
    history: &[Replacement],
    now: Timestamp,
    grace: Duration,
) -> (Vec<Decision>, Vec<Held>) {
    let mut parts: Vec<&str> = nodes.iter().map(|n| n.part.as_str()).collect();
    parts.sort_unstable();
    parts.dedup();
    let mut decisions = Vec::new();
    let mut held = Vec::new();
    for part in parts {
        let pods: Vec<&NodeHealth> = nodes.iter().filter(|n| n.part == part).collect();
        if pods.iter().any(|n| n.terminating) {
            continue;
        }
        let Some((node, (reason, message))) = pods
            .iter()
            .find_map(|n| n.failure(now, grace).map(|f| (n, f)))
        else {
            continue;
        };
        let recent: Vec<Timestamp> = history
            .iter()
            .filter(|r| r.part == part)
            .filter_map(|r| r.at.parse::<Timestamp>().ok())
            .filter(|at| elapsed(*at, now) < BACKOFF_WINDOW)
            .collect();
        let last = recent.iter().max();
        let wait = backoff(recent.len());
        if let Some(last) = last
            && elapsed(*last, now) < wait
        {
            let next = last.checked_add(wait).unwrap_or(now);
            let mut text = format!(
                "{part}: pod {} {}: replaced {} times in {} min; next replacement not before {next}",
                node.pod,
                message,
                recent.len(),
                BACKOFF_WINDOW.as_secs() / 60,
            );
            if recent.len() >= REPEATED {
                text.push_str(": replacing does not help; look at the pod's logs and events");
            }
            held.push(Held {
                part: part.to_string(),
                message: text,
            });
            continue;
        }
        decisions.push(Decision {
            pod: node.pod.clone(),
            uid: node.uid.clone(),
            part: part.to_string(),
            reason,
            message,
        });
    }
    (decisions, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    fn ago(seconds: i64) -> Timestamp {
        now().checked_sub(jiff_seconds(seconds)).unwrap()
    }

    fn jiff_seconds(seconds: i64) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::from_secs(seconds)
    }

    fn node(pod: &str, part: &str) -> NodeHealth {
        NodeHealth {
            pod: pod.into(),
            uid: format!("uid-{pod}"),
            part: part.into(),
            terminating: false,
            ready: true,
            since: ago(600),
            restarts: 0,
            waiting_reason: None,
            last_exit: None,
            readiness: None,
        }
    }

    fn crash_looping(pod: &str, part: &str) -> NodeHealth {
        NodeHealth {
            ready: false,
            since: ago(20),
            restarts: 4,
            waiting_reason: Some("CrashLoopBackOff".into()),
            last_exit: Some("exit code 137 (signal 9)".into()),
            ..node(pod, part)
        }
    }

    fn replaced(part: &str, seconds_ago: i64) -> Replacement {
        Replacement {
            pod: format!("demo-{part}-0"),
            part: part.into(),
            reason: "CrashLoop".into(),
            message: String::new(),
            at: ago(seconds_ago).to_string(),
        }
    }

    const GRACE: Duration = Duration::from_secs(120);

    #[test]
    fn healthy_nodes_are_left_alone() {
        let nodes = [
            node("demo-stage-0-0", "stage-0"),
            node("demo-stage-0-1", "stage-0"),
        ];
        assert_eq!(decide(&nodes, &[], now(), GRACE), (vec![], vec![]));
    }

    #[test]
    fn a_crash_looping_node_is_replaced_saying_how_it_exited() {
        let nodes = [
            crash_looping("demo-stage-1-0", "stage-1"),
            node("demo-stage-1-1", "stage-1"),
        ];
        let (decisions, held) = decide(&nodes, &[], now(), GRACE);
        assert!(held.is_empty());
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].pod, "demo-stage-1-0");
        assert_eq!(decisions[0].reason, Reason::CrashLoop);
        assert_eq!(
            decisions[0].message,
            "crash-looping after 4 restarts, last exit code 137 (signal 9)"
        );
    }

    #[test]
    fn a_node_that_restarted_once_or_twice_is_given_its_chance() {
        let mut unlucky = crash_looping("demo-stage-1-0", "stage-1");
        unlucky.restarts = CRASH_LOOP_RESTARTS - 1;
        assert_eq!(decide(&[unlucky], &[], now(), GRACE).0, vec![]);
    }

    #[test]
    fn an_unready_node_is_replaced_only_after_the_grace_period() {
        let mut unready = node("demo-shard-0-0", "shard-0");
        unready.ready = false;
        unready.since = ago(119);
        assert!(
            decide(std::slice::from_ref(&unready), &[], now(), GRACE)
                .0
                .is_empty()
        );
        unready.since = ago(121);
        unready.readiness = Some("not ready: the Kafka brokers are not reachable".into());
        let (decisions, _) = decide(&[unready], &[], now(), GRACE);
        assert_eq!(decisions[0].reason, Reason::Unready);
        assert_eq!(
            decisions[0].message,
            "unready for 121s (grace 120s): not ready: the Kafka brokers are not reachable"
        );
    }

    #[test]
    fn a_refused_slice_is_replaced_at_once() {
        let mut refused = node("demo-stage-0-0", "stage-0");
        refused.ready = false;
        refused.since = ago(3);
        refused.readiness = Some("not ready: the slice was refused: sha256 mismatch".into());
        let (decisions, _) = decide(&[refused], &[], now(), GRACE);
        assert_eq!(decisions[0].reason, Reason::SliceMismatch);
        assert!(decisions[0].message.contains("sha256 mismatch"));
    }

    #[test]
    fn never_more_than_one_node_of_a_part_at_a_time() {
        let nodes = [
            crash_looping("demo-stage-0-0", "stage-0"),
            crash_looping("demo-stage-0-1", "stage-0"),
        ];
        assert_eq!(decide(&nodes, &[], now(), GRACE).0.len(), 1);
        let mut going = crash_looping("demo-stage-0-1", "stage-0");
        going.terminating = true;
        let nodes = [crash_looping("demo-stage-0-0", "stage-0"), going];
        assert!(
            decide(&nodes, &[], now(), GRACE).0.is_empty(),
            "one is already going away"
        );
        // Parts are independent.
        let nodes = [
            crash_looping("demo-stage-0-0", "stage-0"),
            crash_looping("demo-shard-0-0", "shard-0"),
        ];
        assert_eq!(decide(&nodes, &[], now(), GRACE).0.len(), 2);
    }

    #[test]
    fn replacements_that_do_not_help_back_off_and_say_so() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(120));
        assert_eq!(backoff(10), MAX_BACKOFF);

        let nodes = [crash_looping("demo-stage-0-0", "stage-0")];
        // Replaced 10 s ago: wait out 30 s.
        let (decisions, held) = decide(&nodes, &[replaced("stage-0", 10)], now(), GRACE);
        assert!(decisions.is_empty());
        assert!(
            held[0]
                .message
                .starts_with("stage-0: pod demo-stage-0-0 crash-looping"),
            "{}",
            held[0].message
        );
        // 31 s ago: again.
        assert_eq!(
            decide(&nodes, &[replaced("stage-0", 31)], now(), GRACE)
                .0
                .len(),
            1
        );
        // Three in the window: 120 s between, and the message says replacing does not help.
        let history = [
            replaced("stage-0", 100),
            replaced("stage-0", 300),
            replaced("stage-0", 500),
        ];
        let (decisions, held) = decide(&nodes, &history, now(), GRACE);
        assert!(decisions.is_empty());
        assert!(
            held[0].message.contains("replaced 3 times in 30 min"),
            "{}",
            held[0].message
        );
        assert!(
            held[0].message.contains("replacing does not help"),
            "{}",
            held[0].message
        );
        // Old replacements no longer count; other parts' never do.
        let history = [replaced("stage-0", 4000), replaced("stage-1", 5)];
        assert_eq!(decide(&nodes, &history, now(), GRACE).0.len(), 1);
    }

    #[test]
    fn a_pod_status_is_read_as_a_kubelet_writes_it() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "demo-stage-1-0", "uid": "u1",
                "labels": { "setlist.dev/part": "stage-1" },
                "creationTimestamp": "2026-12-03T11:00:00Z",
            },
            "status": {
                "conditions": [{ "type": "Ready", "status": "False", "lastTransitionTime": "2026-12-03T11:58:00Z" }],
                "containerStatuses": [{
                    "name": "compute-node", "image": "x", "imageID": "", "ready": false, "restartCount": 5,
                    "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                    "lastState": { "terminated": { "exitCode": 1, "message": "slice checksum mismatch\n" } },
                }],
            },
        }))
        .unwrap();
        let health = NodeHealth::of(&pod, "setlist.dev/part").unwrap();
        assert_eq!(health.part, "stage-1");
        assert!(!health.ready);
        assert_eq!(health.since, ago(120));
        assert_eq!(
            health.problem(),
            "CrashLoopBackOff, last exit code 1: slice checksum mismatch"
        );
        let (reason, message) = health.failure(now(), GRACE).unwrap();
        assert_eq!(reason, Reason::CrashLoop);
        assert_eq!(
            message,
            "crash-looping after 5 restarts, last exit code 1: slice checksum mismatch"
        );
    }
}
