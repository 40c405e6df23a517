//! The operator's leader election against a real API server
//! (`../shared/k8s`, see `setlist_tests::k8s`): two candidates for one
//! Lease, as two operator replicas would be. Short timings (seconds, not the
//! production 15 s), and time bounds generous enough for a loaded machine:
//! they tell a hand-over from a wait for expiry, nothing finer.
//!
//! The candidates run as the operator's ServiceAccount with the rights the
//! Helm chart grants it (`setlist_tests::k8s::operator_kubeconfig`: one
//! Lease by name, in its own namespace); "someone else" writing the Lease
//! is the admin.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use setlist_operator::leader::{Elector, Leadership, LeaseTiming, Lost};
use setlist_tests::k8s::{Namespace, control_plane, operator_kubeconfig};
use std::path::Path;
use std::time::{Duration, Instant};

async fn client(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("the kubeconfig is usable");
    kube::Client::try_from(config).expect("a client")
}

fn timing(lease_secs: u64) -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(lease_secs),
        renew_deadline: Duration::from_secs(lease_secs) * 2 / 3,
        retry_period: Duration::from_millis(500),
    }
}

/// The Lease's name: the chart's default, the one its Role grants.
const LEASE: &str = "setlist-operator";

/// The operator's ServiceAccount's client, as the chart grants it.
async fn operator_client(ns: &Namespace) -> kube::Client {
    client(&operator_kubeconfig(&ns.kubeconfig, &ns.name)).await
}

/// Two candidates, `a` and `b`, for the Lease in a fresh namespace, and
/// the admin's view of the Leases.
async fn candidates(ns: &Namespace, timing: LeaseTiming) -> (Elector, Elector, Api<Lease>) {
    let client = operator_client(ns).await;
    let elector = |identity| Elector::new(client.clone(), &ns.name, LEASE, identity, timing);
    (
        elector("operator-a"),
        elector("operator-b"),
        Api::namespaced(self::client(&ns.kubeconfig).await, &ns.name),
    )
}

async fn acquire_within(elector: &Elector, limit: Duration) -> Leadership {
    tokio::time::timeout(limit, elector.acquire())
        .await
        .unwrap_or_else(|_| panic!("{} acquires within {limit:?}", elector.identity()))
        .expect("acquire does not fail")
}

async fn holder(leases: &Api<Lease>) -> (Option<String>, i32) {
    let spec = leases.get(LEASE).await.unwrap().spec.unwrap();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_other_waits_and_takes_over_at_once_on_release() {
    let ns = Namespace::new(&control_plane(), "leader-release");
    // A duration long enough that a take-over well within it can only come
    // from the release.
    let (a, b, leases) = candidates(&ns, timing(10)).await;

    let first = acquire_within(&a, Duration::from_secs(30)).await;
    assert!(first.is_leader());
    assert_eq!(holder(&leases).await, (Some("operator-a".into()), 0));

    // b waits for longer than a lease lasts: a keeps renewing it.
    let b_waits = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await }
    });
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(!b_waits.is_finished(), "b acquired a lease a was renewing");
    assert!(first.is_leader());
    assert_eq!(holder(&leases).await.0.as_deref(), Some("operator-a"));

    let released = Instant::now();
    first.release().await;
    let mut second = tokio::time::timeout(Duration::from_secs(30), b_waits)
        .await
        .expect("b acquires after a releases")
        .unwrap()
        .unwrap();
    let took = released.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "b took {took:?} to take a released lease over: it waited for expiry, not the hand-over"
    );
    assert!(second.is_leader());
    assert_eq!(holder(&leases).await, (Some("operator-b".into()), 1));
    // Nothing takes it from b meanwhile.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), second.lost())
            .await
            .is_err()
    );
    second.release().await;
    assert_eq!(holder(&leases).await.0, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_renewing_is_replaced_after_the_lease_expires() {
    let ns = Namespace::new(&control_plane(), "leader-expiry");
    let (a, b, leases) = candidates(&ns, timing(3)).await;

    let first = acquire_within(&a, Duration::from_secs(30)).await;
    let b_waits = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!b_waits.is_finished(), "b acquired a lease a holds");

    // As a crashed replica: no renewals, no hand-over.
    let stopped = Instant::now();
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(30), b_waits)
        .await
        .expect("b acquires once a's lease expires")
        .unwrap()
        .unwrap();
    let took = stopped.elapsed();
    // a's last renewal was at most a retry period (0.5 s) before it stopped.
    assert!(
        took >= Duration::from_millis(2_000),
        "b took the lease {took:?} after a stopped renewing, before it expired (3 s)"
    );
    assert!(second.is_leader());
    assert_eq!(holder(&leases).await, (Some("operator-b".into()), 1));

    // a, back under the same identity, waits for b now.
    assert!(
        tokio::time::timeout(Duration::from_secs(4), a.acquire())
            .await
            .is_err(),
        "a took the lease back from a renewing b"
    );
    second.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_is_overwritten_is_told_it_lost() {
    let ns = Namespace::new(&control_plane(), "leader-lost");
    let (a, _, leases) = candidates(&ns, timing(3)).await;
    let mut first = acquire_within(&a, Duration::from_secs(30)).await;

    // Someone else writes the lease, as a replica that thought it expired
    // would.
    let mut lease = leases.get(LEASE).await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .unwrap();

    let lost = tokio::time::timeout(Duration::from_secs(10), first.lost())
        .await
        .expect("the holder learns it lost the lease within a few renewals");
    assert_eq!(
        lost,
        Lost::TakenOver {
            holder: Some("intruder".into())
        }
    );
    assert!(!first.is_leader());
    // The holder does not fight back, and releasing a lost lease leaves the
    // new holder's alone.
    first.release().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holder(&leases).await.0.as_deref(), Some("intruder"));

    // A deleted lease is lost too, and not made again by its old holder: a
    // candidate may have made it already.
    // (The intruder's lease goes first: the account may hold one name only.)
    leases
        .delete(LEASE, &Default::default())
        .await
        .expect("the lease is deleted");
    let c = Elector::new(
        operator_client(&ns).await,
        &ns.name,
        LEASE,
        "operator-c",
        timing(3),
    );
    let mut third = acquire_within(&c, Duration::from_secs(30)).await;
    leases
        .delete(LEASE, &Default::default())
        .await
        .expect("the lease is deleted");
    let lost = tokio::time::timeout(Duration::from_secs(10), third.lost())
        .await
        .expect("the holder learns its lease was deleted");
    assert_eq!(lost, Lost::Deleted);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(leases.get_opt(LEASE).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_says_what_to_grant_or_create() {
    let kubeconfig = control_plane();
    let client = client(&kubeconfig).await;
    let elector = Elector::new(
        client,
        "no-such-namespace-for-leases",
        "operator",
        "operator-a",
        timing(3),
    );
    let err = tokio::time::timeout(Duration::from_secs(30), elector.acquire())
        .await
        .expect("a missing namespace is reported, not waited on")
        .err()
        .expect("no lease in a namespace that does not exist");
    let message = err.to_string();
    assert!(
        message.contains("Lease no-such-namespace-for-leases/operator")
            && message.contains("the namespace does not exist"),
        "{message}"
    );
}
