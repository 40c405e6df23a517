//! The cluster's status from what the operator observed: a pure function,
//! so the conditions and their sentences are tested directly.
//!
//! Conditions follow Kubernetes' conventions: `Available` (every part has
//! a ready pod, so answers come from the model), `Progressing` (workloads
//! are rolling out or scaling), `Degraded` (something needs a person:
//! parts short of replicas for a reason, replacements held back),
//! `ModelReady` (the slices were read and match the spec).

use crate::crd::{PartStatus, RecommenderClusterStatus, ReplacementStatus};
use crate::desired::Workload;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// One workload as observed: its pods' readiness and what is wrong with the
/// unready ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub workload: Workload,
    pub ready: u32,
    /// The workload controller has caught up with the latest spec and
    /// every pod runs it.
    pub rolled_out: bool,
    /// `(pod, problem)` for pods that are not ready.
    pub problems: Vec<(String, String)>,
}

/// What the reconcile pass came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The slices could not be read or do not match the spec.
    ModelNotReady {
        reason: &'static str,
        message: String,
    },
    /// The spec cannot be applied for another reason.
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// Objects applied (or, when paused, left alone).
    Applied {
        model_version: String,
        parts: Vec<Observed>,
        /// Parts whose replacements wait (see `replace::Held`).
        held: Vec<String>,
        paused: bool,
    },
}

/// The status for `generation` after `outcome`, keeping what must persist
/// from `previous` (replacement history, conditions' transition times).
pub fn status(
    previous: Option<&RecommenderClusterStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    replacements: ReplacementStatus,
    now: Timestamp,
) -> RecommenderClusterStatus {
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        // The transition time moves only when the status does.
        let since = previous_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    let mut status = RecommenderClusterStatus {
        observed_generation: generation,
        replacements,
        ..RecommenderClusterStatus::default()
    };
    match outcome {
        Outcome::ModelNotReady { reason, message } | Outcome::Invalid { reason, message } => {
            let model_ok = matches!(outcome, Outcome::Invalid { .. });
            // What runs keeps running on its old objects; say so.
            let previous_model = previous.and_then(|p| p.model_version.clone());
            status.model_version = previous_model;
            status.parts = previous.map(|p| p.parts.clone()).unwrap_or_default();
            status.ready_parts = previous.and_then(|p| p.ready_parts.clone());
            status.phase = Some(
                if model_ok {
                    "Degraded"
                } else {
                    "ModelNotReady"
                }
                .into(),
            );
            let available = previous_conditions
                .iter()
                .find(|c| c.type_ == "Available")
                .is_some_and(|c| c.status == "True");
            status.conditions = vec![
                condition(
                    "Available",
                    available,
                    if available {
                        "PreviousSpecServing"
                    } else {
                        "NotApplied"
                    },
                    "the current spec is not applied; see ModelReady and Degraded".into(),
                ),
                condition("Progressing", false, reason, message.clone()),
                condition("Degraded", true, reason, message.clone()),
                if model_ok {
                    previous_conditions
                        .iter()
                        .find(|c| c.type_ == "ModelReady")
                        .cloned()
                        .unwrap_or_else(|| {
                            condition("ModelReady", true, "SlicesRead", String::new())
                        })
                } else {
                    condition("ModelReady", false, reason, message.clone())
                },
            ];
        }
        Outcome::Applied {
            model_version,
            parts,
            held,
            paused,
        } => {
            status.model_version = Some(model_version.clone());
            status.parts = parts
                .iter()
                .map(|p| PartStatus {
                    part: p.workload.part.clone(),
                    ready: p.ready,
                    desired: p.workload.replicas,
                })
                .collect();
            let complete = parts
                .iter()
                .filter(|p| p.ready >= p.workload.replicas)
                .count();
            status.ready_parts = Some(format!("{complete}/{}", parts.len()));
            let missing: Vec<&Observed> = parts.iter().filter(|p| p.ready == 0).collect();
            let short: Vec<String> = parts
                .iter()
                .filter(|p| p.ready < p.workload.replicas)
                .map(describe)
                .collect();
            let available = missing.is_empty();
            let rolling = parts.iter().any(|p| !p.rolled_out) || !short.is_empty();
            let degraded = !held.is_empty() || (!short.is_empty() && !rolling_only(parts));
            status.conditions = vec![
                condition(
                    "Available",
                    available,
                    if available {
                        "AllPartsServing"
                    } else {
                        "PartsDown"
                    },
                    if available {
                        format!("every part has a ready pod; model {model_version}")
                    } else {
                        missing
                            .iter()
                            .map(|p| describe(p))
                            .collect::<Vec<_>>()
                            .join("; ")
                    },
                ),
                if *paused {
                    condition(
                        "Progressing",
                        false,
                        "Paused",
                        "spec.paused is true: the operator changes nothing".into(),
                    )
                } else {
                    condition(
                        "Progressing",
                        rolling,
                        if rolling { "RollingOut" } else { "Complete" },
                        if rolling {
                            short.join("; ")
                        } else {
                            format!("{} parts at their desired replicas", parts.len())
                        },
                    )
                },
                condition(
                    "Degraded",
                    degraded,
                    if !held.is_empty() {
                        "ReplacementsBackingOff"
                    } else if degraded {
                        "PartsShort"
                    } else {
                        "AsExpected"
                    },
                    if !held.is_empty() {
                        held.join("; ")
                    } else if degraded {
                        short.join("; ")
                    } else {
                        "nothing needs a person".into()
                    },
                ),
                condition(
                    "ModelReady",
                    true,
                    "SlicesRead",
                    format!("model {model_version}: the slices match the spec"),
                ),
            ];
            status.phase = Some(
                if *paused {
                    "Paused"
                } else if degraded {
                    "Degraded"
                } else if rolling || !available {
                    "Progressing"
                } else {
                    "Running"
                }
                .into(),
            );
        }
    }
    status
}

/// Short of replicas only because pods are starting: none has a problem
/// other than not being ready yet.
fn rolling_only(parts: &[Observed]) -> bool {
    parts.iter().flat_map(|p| &p.problems).all(|(_, problem)| {
        problem == "not ready" || problem.contains("joining the consumer group")
    })
}

/// "stage-1: 0/2 ready: pod demo-stage-1-0 CrashLoopBackOff, last exit code 1"
fn describe(part: &Observed) -> String {
    let mut text = format!(
        "{}: {}/{} ready",
        part.workload.part, part.ready, part.workload.replicas
    );
    for (pod, problem) in part.problems.iter().take(3) {
        text.push_str(&format!(": pod {pod} {problem}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    fn part(name: &str, replicas: u32, ready: u32, problems: &[(&str, &str)]) -> Observed {
        Observed {
            workload: Workload {
                part: name.into(),
                name: format!("demo-{name}"),
                replicas,
                compute: true,
            },
            ready,
            rolled_out: true,
            problems: problems
                .iter()
                .map(|(p, w)| (p.to_string(), w.to_string()))
                .collect(),
        }
    }

    fn applied(parts: Vec<Observed>, held: Vec<String>) -> Outcome {
        Outcome::Applied {
            model_version: "v4".into(),
            parts,
            held,
            paused: false,
        }
    }

    fn get<'a>(status: &'a RecommenderClusterStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_cluster_with_every_replica_ready_is_running() {
        let outcome = applied(
            vec![part("stage-0", 2, 2, &[]), part("shard-0", 1, 1, &[])],
            vec![],
        );
        let status = status(None, Some(3), &outcome, ReplacementStatus::default(), now());
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.ready_parts.as_deref(), Some("2/2"));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(get(&status, "Available").status, "True");
        assert_eq!(get(&status, "Progressing").status, "False");
        assert_eq!(get(&status, "Degraded").status, "False");
        assert_eq!(get(&status, "ModelReady").status, "True");
        assert_eq!(status.model_version.as_deref(), Some("v4"));
    }

    #[test]
    fn a_part_with_no_ready_pod_says_which_pod_and_why() {
        let outcome = applied(
            vec![
                part("stage-0", 2, 2, &[]),
                part(
                    "stage-1",
                    2,
                    0,
                    &[(
                        "demo-stage-1-0",
                        "CrashLoopBackOff, last exit code 1: slice checksum mismatch",
                    )],
                ),
            ],
            vec![],
        );
        let status = status(None, Some(1), &outcome, ReplacementStatus::default(), now());
        let available = get(&status, "Available");
        assert_eq!(available.status, "False");
        assert_eq!(
            available.message,
            "stage-1: 0/2 ready: pod demo-stage-1-0 CrashLoopBackOff, last exit code 1: slice checksum mismatch"
        );
        assert_eq!(get(&status, "Degraded").status, "True");
        assert_eq!(status.phase.as_deref(), Some("Degraded"));
        assert_eq!(status.ready_parts.as_deref(), Some("1/2"));
    }

    #[test]
    fn pods_that_are_only_starting_are_progress_not_degradation() {
        let outcome = applied(
            vec![part("stage-0", 2, 1, &[("demo-stage-0-1", "not ready")])],
            vec![],
        );
        let status = status(None, Some(1), &outcome, ReplacementStatus::default(), now());
        assert_eq!(get(&status, "Progressing").status, "True");
        assert_eq!(get(&status, "Degraded").status, "False");
        assert_eq!(get(&status, "Degraded").message, "nothing needs a person");
        assert_eq!(status.phase.as_deref(), Some("Progressing"));
    }

    #[test]
    fn held_replacements_make_the_cluster_degraded_with_their_reason() {
        let outcome = applied(
            vec![part(
                "stage-0",
                1,
                0,
                &[("demo-stage-0-0", "CrashLoopBackOff")],
            )],
            vec!["stage-0: pod demo-stage-0-0 crash-looping: replacing does not help".into()],
        );
        let status = status(None, Some(1), &outcome, ReplacementStatus::default(), now());
        let degraded = get(&status, "Degraded");
        assert_eq!(degraded.reason, "ReplacementsBackingOff");
        assert!(degraded.message.contains("replacing does not help"));
    }

    #[test]
    fn slices_that_do_not_match_keep_what_runs_and_say_what_to_change() {
        let running = status(
            None,
            Some(1),
            &applied(vec![part("stage-0", 1, 1, &[])], vec![]),
            ReplacementStatus::default(),
            now(),
        );
        let outcome = Outcome::ModelNotReady {
            reason: "SlicesDoNotMatch",
            message: "spec.stages.count is 3 but the slices … are cut into 2 stages".into(),
        };
        let later: Timestamp = "2026-12-03T12:05:00Z".parse().unwrap();
        let status = status(
            Some(&running),
            Some(2),
            &outcome,
            ReplacementStatus::default(),
            later,
        );
        let model = get(&status, "ModelReady");
        assert_eq!(
            (model.status.as_str(), model.reason.as_str()),
            ("False", "SlicesDoNotMatch")
        );
        assert!(model.message.contains("cut into 2 stages"));
        assert_eq!(status.phase.as_deref(), Some("ModelNotReady"));
        let available = get(&status, "Available");
        assert_eq!(available.status, "True", "the previous spec still serves");
        assert_eq!(
            available.last_transition_time,
            Time(now()),
            "unchanged status keeps its transition time"
        );
        assert_eq!(model.last_transition_time, Time(later));
        assert_eq!(status.model_version.as_deref(), Some("v4"));
    }

    #[test]
    fn paused_is_its_own_phase() {
        let outcome = Outcome::Applied {
            model_version: "v4".into(),
            parts: vec![part("stage-0", 1, 1, &[])],
            held: vec![],
            paused: true,
        };
        let status = status(None, Some(1), &outcome, ReplacementStatus::default(), now());
        assert_eq!(status.phase.as_deref(), Some("Paused"));
        assert_eq!(get(&status, "Progressing").reason, "Paused");
    }
}
