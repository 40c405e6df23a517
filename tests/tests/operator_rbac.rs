//! The operator's RBAC, as the Helm chart (`charts/setlist-operator`)
//! grants it, is sufficient and minimal.
//!
//! Sufficient: every operator test (`operator`, `operator_e2e`,
//! `operator_leader`) runs the operator as the chart's ServiceAccount, with
//! a token the API server minted for it (`setlist_tests::k8s::Operator::start`),
//! and fails when it was refused anything; the test here covers what those
//! do not reach (an Ingress, a Kafka client Secret, Events).
//!
//! Minimal: [`WATCHED`] and [`LEASE`] are the one list of what the code
//! does, each line with where it does it; the rendered rules must be exactly
//! these (a rule the code no longer needs fails here, as does a use whose
//! line is gone), and the API server must refuse the account every other
//! verb, resource and namespace.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use setlist_tests::chart;
use setlist_tests::k8s::{
    Namespace, OPERATOR_RELEASE, Operator, control_plane, install_operator_rbac, kubectl,
    manifest_only, operator_kubeconfig, service_account_kubeconfig, wait_for,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// One rule: API group, resource, verbs, and where in `operator/src` the
/// code makes each call (a string that must be in that file).
struct Rule {
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    /// Only these names (empty: any).
    names: &'static [&'static str],
    uses: &'static [(&'static str, &'static str)],
}

/// What the operator does in every namespace it watches (the ClusterRole,
/// or the watched namespace's Role). `rbac.readKafkaSecrets: false` drops
/// the Secret line.
const WATCHED: &[Rule] = &[
    Rule {
        group: "setlist.dev",
        resource: "recommenderclusters",
        verbs: &["list", "watch", "patch"],
        names: &[],
        uses: &[
            // The controller's reflector lists and watches.
            (
                "reconcile.rs",
                "scoped::<RecommenderCluster>(&client, namespace)",
            ),
            // set_finalizer: a merge patch of metadata.finalizers.
            ("reconcile.rs", "Patch::Merge(&patch)"),
        ],
    },
    Rule {
        group: "setlist.dev",
        resource: "recommenderclusters/status",
        verbs: &["patch"],
        names: &[],
        uses: &[("reconcile.rs", "api.patch_status(")],
    },
    Rule {
        group: "setlist.dev",
        resource: "recommenderclusters/finalizers",
        verbs: &["update"],
        names: &[],
        // Not a call: the API server asks for it on the operator's behalf
        // when an owned object sets blockOwnerDeletion under the
        // OwnerReferencesPermissionEnforcement admission plugin (which the
        // test control plane does not run).
        uses: &[("desired.rs", "block_owner_deletion: Some(true)")],
    },
    Rule {
        group: "apps",
        resource: "statefulsets",
        verbs: &["list", "watch", "create", "patch", "delete"],
        names: &[],
        uses: &[
            (
                "reconcile.rs",
                ".owns(scoped::<StatefulSet>(&client, namespace)",
            ),
            ("reconcile.rs", "&state.stateful_sets"),
        ],
    },
    Rule {
        group: "apps",
        resource: "deployments",
        verbs: &["list", "watch", "create", "patch", "delete"],
        names: &[],
        uses: &[
            (
                "reconcile.rs",
                ".owns(scoped::<Deployment>(&client, namespace)",
            ),
            ("reconcile.rs", "&state.deployments"),
        ],
    },
    Rule {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch", "create", "patch", "delete"],
        names: &[],
        uses: &[
            (
                "reconcile.rs",
                ".owns(scoped::<ConfigMap>(&client, namespace)",
            ),
            ("reconcile.rs", "&state.config_maps"),
        ],
    },
    Rule {
        group: "",
        resource: "services",
        verbs: &["list", "watch", "create", "patch", "delete"],
        names: &[],
        uses: &[
            (
                "reconcile.rs",
                ".owns(scoped::<Service>(&client, namespace)",
            ),
            ("reconcile.rs", "&state.services"),
        ],
    },
    Rule {
        group: "",
        resource: "serviceaccounts",
        verbs: &["list", "create", "patch", "delete"],
        names: &[],
        uses: &[("reconcile.rs", "&state.service_accounts")],
    },
    Rule {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["list", "create", "patch", "delete"],
        names: &[],
        uses: &[("reconcile.rs", "&state.disruption_budgets")],
    },
    Rule {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["list", "create", "patch", "delete"],
        names: &[],
        uses: &[("reconcile.rs", "&state.network_policies")],
    },
    Rule {
        group: "networking.k8s.io",
        resource: "ingresses",
        verbs: &["list", "create", "patch", "delete"],
        names: &[],
        uses: &[("reconcile.rs", "&state.ingresses")],
    },
    Rule {
        group: "",
        resource: "pods",
        verbs: &["list", "watch", "delete"],
        names: &[],
        uses: &[
            ("reconcile.rs", ".watches(scoped::<Pod>(&client, namespace)"),
            ("reconcile.rs", "api.delete(&decision.pod, &params)"),
        ],
    },
    Rule {
        group: "",
        resource: "secrets",
        verbs: &["get"],
        names: &[],
        uses: &[("reconcile.rs", ".get_opt(secret_name)")],
    },
    Rule {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        names: &[],
        // kube's Recorder creates an Event, then patches its series.
        uses: &[("main.rs", "Recorder::new(")],
    },
];

/// Where every object of [`WATCHED`]'s kinds is applied, listed and pruned
/// (one generic function for all of them).
const APPLY_KIND: &[(&str, &str)] = &[
    (
        "reconcile.rs",
        ".list(&ListParams::default().labels(&desired::owned_selector",
    ),
    (
        "reconcile.rs",
        ".patch(&name, &params, &Patch::Apply(object))",
    ),
    (
        "reconcile.rs",
        "api.delete(&name, &DeleteParams::background())",
    ),
];

/// Leader election, in the operator's own namespace only: one Lease, by
/// the chart's default name.
const LEASE: &[Rule] = &[
    Rule {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create"],
        names: &[],
        uses: &[(
            "leader.rs",
            "self.api.create(&PostParams::default(), &lease)",
        )],
    },
    Rule {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "update"],
        names: &["setlist-operator"],
        uses: &[
            ("leader.rs", "self.api.get_opt(&self.name)"),
            ("leader.rs", ".replace(&self.name, &PostParams::default()"),
        ],
    },
];

type Grant = (String, String, String, String);

/// (group, resource, verb, name or "*") of each rule.
fn grants(rules: &[Rule], secrets: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        if rule.resource == "secrets" && !secrets {
            continue;
        }
        for verb in rule.verbs {
            let names: Vec<&str> = if rule.names.is_empty() {
                vec!["*"]
            } else {
                rule.names.to_vec()
            };
            for name in names {
                out.insert((
                    rule.group.to_string(),
                    rule.resource.to_string(),
                    verb.to_string(),
                    name.to_string(),
                ));
            }
        }
    }
    out
}

/// The same of a rendered Role or ClusterRole.
fn rendered_grants(role: &Value) -> BTreeSet<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let mut names = strings(&rule["resourceNames"]);
        if names.is_empty() {
            names.push("*".into());
        }
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for name in &names {
                        out.insert((group.clone(), resource.clone(), verb.clone(), name.clone()));
                    }
                }
            }
        }
    }
    out
}

fn operator_source(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../operator/src")
            .join(file),
    )
    .unwrap()
}

#[test]
fn the_charts_rules_are_exactly_what_the_operator_code_does() {
    // Each use is still in the code: a rule whose use is gone fails here
    // (drop the rule from the chart and from this table).
    for rule in WATCHED.iter().chain(LEASE) {
        for (file, witness) in rule.uses.iter().chain(APPLY_KIND) {
            assert!(
                operator_source(file).contains(witness),
                "{} {:?}: operator/src/{file} no longer has `{witness}`: if the operator no longer \
                 does that, remove the rule from charts/setlist-operator/templates/_helpers.tpl \
                 and this table",
                rule.resource,
                rule.verbs
            );
        }
    }
    let watched = grants(WATCHED, true);
    let lease = grants(LEASE, true);

    // Every namespace: a ClusterRole with exactly WATCHED; the Lease Role
    // in the release's namespace with exactly LEASE.
    let all = chart::render(&json!({}), "setlist-operator", "setlist-system");
    let cluster_role = all.get("ClusterRole", "setlist-operator");
    assert_eq!(rendered_grants(cluster_role), watched);
    let binding = all.get("ClusterRoleBinding", "setlist-operator");
    assert_eq!(binding["roleRef"]["name"], "setlist-operator");
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": "setlist-operator", "namespace": "setlist-system" }])
    );
    let leases = all.get("Role", "setlist-operator-leader-election");
    assert_eq!(leases["metadata"]["namespace"], "setlist-system");
    assert_eq!(rendered_grants(leases), lease);
    assert_eq!(
        all.of_kind("Role").len() + all.of_kind("ClusterRole").len(),
        2,
        "{:?}",
        all.names()
    );

    // One namespace: the same rules in a Role there, nothing cluster-wide.
    let one = chart::render(
        &json!({ "watchNamespace": "music" }),
        "setlist-operator",
        "setlist-system",
    );
    assert!(one.of_kind("ClusterRole").is_empty(), "{:?}", one.names());
    assert!(one.of_kind("ClusterRoleBinding").is_empty());
    let role = one.get("Role", "setlist-operator");
    assert_eq!(role["metadata"]["namespace"], "music");
    assert_eq!(rendered_grants(role), watched);
    let binding = one.get("RoleBinding", "setlist-operator");
    assert_eq!(binding["metadata"]["namespace"], "music");
    assert_eq!(
        binding["subjects"][0]["namespace"], "setlist-system",
        "{binding}"
    );
    assert_eq!(
        rendered_grants(one.get("Role", "setlist-operator-leader-election")),
        lease
    );
    let env = &one.get("Deployment", "setlist-operator")["spec"]["template"]["spec"]["containers"]
        [0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({ "name": "SETLIST_WATCH_NAMESPACE", "value": "music" })),
        "{env}"
    );

    // No Secrets at all when no cluster may name one.
    let no_secrets = chart::render(
        &json!({ "rbac": { "readKafkaSecrets": false } }),
        "setlist-operator",
        "setlist-system",
    );
    assert_eq!(
        rendered_grants(no_secrets.get("ClusterRole", "setlist-operator")),
        grants(WATCHED, false)
    );

    // Another Lease name: the Role follows it.
    let renamed = chart::render(
        &json!({ "leaderElection": { "leaseName": "elsewhere" } }),
        "setlist-operator",
        "setlist-system",
    );
    let role = renamed.get("Role", "setlist-operator-leader-election");
    assert_eq!(role["rules"][1]["resourceNames"], json!(["elsewhere"]));
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("the kubeconfig is usable");
    kube::Client::try_from(config).expect("a client")
}

/// What the API server answers the account itself (SelfSubjectAccessReview,
/// as `kubectl auth can-i`): may it `verb` `group/resource[/sub]`, in
/// `namespace` ("" for all namespaces or cluster-scoped), named `name`?
async fn can(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                verb: Some(verb.into()),
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("the API server answers a SelfSubjectAccessReview")
        .status
        .expect("a review's status")
        .allowed
}

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Namespaced resources the operator must not touch at all, beside those
/// of [`WATCHED`] (whose other verbs are checked too).
const NOT_NEEDED: &[(&str, &str)] = &[
    ("", "pods/exec"),
    ("", "pods/log"),
    ("", "pods/eviction"),
    ("", "serviceaccounts/token"),
    ("", "persistentvolumeclaims"),
    ("", "endpoints"),
    ("", "resourcequotas"),
    ("", "limitranges"),
    ("", "replicationcontrollers"),
    ("apps", "replicasets"),
    ("apps", "daemonsets"),
    ("apps", "statefulsets/scale"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("discovery.k8s.io", "endpointslices"),
    ("autoscaling", "horizontalpodautoscalers"),
];

/// Cluster-scoped resources: none for the operator, whatever the mode.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "nodes"),
    ("", "nodes/status"),
    ("", "persistentvolumes"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    ("storage.k8s.io", "storageclasses"),
    ("certificates.k8s.io", "certificatesigningrequests"),
];

/// Every verb on every resource of [`WATCHED`] and [`NOT_NEEDED`] in
/// `namespace`: allowed exactly where `expected` says.
async fn assert_access(
    client: &kube::Client,
    namespace: &str,
    expected: &BTreeSet<Grant>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let resources = WATCHED
        .iter()
        .map(|r| (r.group, r.resource))
        .chain(NOT_NEEDED.iter().copied());
    for (group, resource) in resources {
        for verb in VERBS {
            let key = (
                group.to_string(),
                resource.to_string(),
                verb.to_string(),
                "*".to_string(),
            );
            let want = expected.contains(&key);
            let got = can(client, verb, group, resource, namespace, None).await;
            if want != got {
                wrong.push(format!(
                    "{verb} {group}/{resource} in {namespace:?}: allowed {got}, expected {want}"
                ));
            }
        }
    }
    wrong
}

/// Nothing cluster-scoped, nothing that would let the account grant itself
/// more, nobody to impersonate.
async fn assert_no_escalation(client: &kube::Client) -> Vec<String> {
    let mut wrong = Vec::new();
    for (group, resource) in CLUSTER_SCOPED {
        for verb in VERBS {
            if can(client, verb, group, resource, "", None).await {
                wrong.push(format!(
                    "{verb} {group}/{resource} (cluster-scoped) is allowed"
                ));
            }
        }
    }
    for (verb, group, resource) in [
        ("escalate", "rbac.authorization.k8s.io", "roles"),
        ("bind", "rbac.authorization.k8s.io", "roles"),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles"),
        ("bind", "rbac.authorization.k8s.io", "clusterroles"),
        ("impersonate", "", "users"),
        ("impersonate", "", "groups"),
        ("impersonate", "", "serviceaccounts"),
        ("approve", "certificates.k8s.io", "signers"),
    ] {
        if can(client, verb, group, resource, "", None).await {
            wrong.push(format!("{verb} {group}/{resource} is allowed"));
        }
    }
    wrong
}

/// The Lease rules: create any, read and renew only the chart's name, in
/// the operator's namespace only, and nothing else.
async fn assert_lease_access(client: &kube::Client, own: &str, other: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let group = "coordination.k8s.io";
    for verb in VERBS {
        for (namespace, name) in [
            (own, Some("setlist-operator")),
            (own, Some("kube-controller-manager")),
            (own, None),
            (other, Some("setlist-operator")),
            (other, None),
            ("kube-system", Some("setlist-operator")),
        ] {
            let want = namespace == own
                && match name {
                    Some("setlist-operator") => ["get", "update", "create"].contains(verb),
                    // A name is not known when create is authorized.
                    None => *verb == "create",
                    Some(_) => *verb == "create",
                };
            let got = can(client, verb, group, "leases", namespace, name).await;
            if want != got {
                wrong.push(format!(
                    "{verb} lease {name:?} in {namespace}: allowed {got}, expected {want}"
                ));
            }
        }
    }
    wrong
}

/// `kubectl` as the account.
fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    kubectl(kubeconfig, args, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_account_is_refused_everything_the_operator_does_not_do() {
    let admin = control_plane();
    let ns = Namespace::new(&admin, "rbac");
    let other = Namespace::new(&admin, "rbac-other");
    let watched = grants(WATCHED, true);
    let none = BTreeSet::new();

    // One namespace (how the operator tests run it): its Role there, the
    // Lease Role, nothing else anywhere.
    let account = operator_kubeconfig(&admin, &ns.name);
    let sa = client(&account).await;
    let mut wrong = assert_access(&sa, &ns.name, &watched).await;
    wrong.extend(assert_access(&sa, &other.name, &none).await);
    wrong.extend(assert_access(&sa, "", &none).await);
    wrong.extend(assert_no_escalation(&sa).await);
    wrong.extend(assert_lease_access(&sa, &ns.name, &other.name).await);

    // `kubectl auth can-i`, as a person would ask it.
    for (args, answer) in [
        (vec!["auth", "can-i", "delete", "namespaces"], "no"),
        (vec!["auth", "can-i", "list", "secrets", "-A"], "no"),
        (
            vec!["auth", "can-i", "list", "secrets", "-n", &ns.name],
            "no",
        ),
        (
            vec!["auth", "can-i", "get", "secrets", "-n", &other.name],
            "no",
        ),
        (
            vec!["auth", "can-i", "create", "pods", "-n", &ns.name],
            "no",
        ),
        (
            vec![
                "auth",
                "can-i",
                "create",
                "pods",
                "--subresource=exec",
                "-n",
                &ns.name,
            ],
            "no",
        ),
        (vec!["auth", "can-i", "bind", "clusterroles"], "no"),
        (
            vec!["auth", "can-i", "escalate", "roles", "-n", &ns.name],
            "no",
        ),
        (vec!["auth", "can-i", "patch", "nodes"], "no"),
        (
            vec!["auth", "can-i", "get", "secrets", "-n", &ns.name],
            "yes",
        ),
        (
            vec![
                "auth",
                "can-i",
                "patch",
                "statefulsets.apps",
                "-n",
                &ns.name,
            ],
            "yes",
        ),
        (
            vec!["auth", "can-i", "delete", "pods", "-n", &ns.name],
            "yes",
        ),
    ] {
        let (_, out, err) = kubectl_as(&account, &args);
        if out.trim() != answer {
            wrong.push(format!(
                "kubectl {}: {out}{err} (expected {answer})",
                args.join(" ")
            ));
        }
    }

    // Real requests, really refused.
    for args in [
        vec!["delete", "namespace", other.name.as_str()],
        vec!["-n", &ns.name, "get", "secrets"],
        vec!["-n", &other.name, "get", "configmaps"],
        vec![
            "-n",
            &ns.name,
            "run",
            "intruder",
            "--image=busybox",
            "--restart=Never",
        ],
        vec!["get", "nodes"],
    ] {
        let (ok, out, err) = kubectl_as(&account, &args);
        if ok || !err.contains("Forbidden") && !err.contains("forbidden") {
            wrong.push(format!(
                "kubectl {} was not refused: {out}{err}",
                args.join(" ")
            ));
        }
    }
    let (ok, _, _) = kubectl(&admin, &["get", "namespace", &other.name], None);
    assert!(
        ok,
        "the namespace the account tried to delete is still there"
    );

    // Every namespace (the chart's default): the same rules cluster-wide,
    // and still nothing cluster-scoped, no Secret listing, no Lease
    // elsewhere. A release of its own, so its ClusterRole's name is too.
    let release = format!("{}-all", ns.name);
    let values = json!({ "crds": { "install": false } });
    let (account_name, objects) = install_operator_rbac(&admin, &release, &ns.name, &values);
    let _cleanup = ClusterScoped {
        admin: admin.clone(),
        objects: objects
            .iter()
            .filter(|o| o["kind"].as_str().unwrap().starts_with("Cluster"))
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap().to_lowercase(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect(),
    };
    assert_eq!(_cleanup.objects.len(), 2, "{objects:?}");
    let everywhere = service_account_kubeconfig(&admin, &ns.name, &account_name);
    let sa = client(&everywhere).await;
    wrong.extend(assert_access(&sa, &other.name, &watched).await);
    wrong.extend(assert_access(&sa, "", &watched).await);
    wrong.extend(assert_no_escalation(&sa).await);
    // The Lease Role is the release's own: named after its Lease.
    let group = "coordination.k8s.io";
    for (verb, namespace, want) in [
        ("create", ns.name.as_str(), true),
        ("create", other.name.as_str(), false),
        ("list", ns.name.as_str(), false),
        ("delete", ns.name.as_str(), false),
    ] {
        if can(&sa, verb, group, "leases", namespace, None).await != want {
            wrong.push(format!("{verb} leases in {namespace}: expected {want}"));
        }
    }
    let (ok, _, err) = kubectl_as(&everywhere, &["get", "secrets", "-A"]);
    if ok || !err.contains("forbidden") {
        wrong.push(format!("listing every Secret was not refused: {err}"));
    }

    assert!(
        wrong.is_empty(),
        "the chart's RBAC grants what the operator does not use, or lacks what it does:\n{}",
        wrong.join("\n")
    );
}

/// Deletes the cluster-scoped objects a test made.
struct ClusterScoped {
    admin: std::path::PathBuf,
    objects: Vec<String>,
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for object in &self.objects {
            let _ = kubectl(&self.admin, &["delete", object, "--wait=false"], None);
        }
    }
}

/// What the other operator tests do not reach, as the chart's account: an
/// Ingress made and deleted, a Kafka client Secret read (and a missing one
/// reported as missing, not as refused), Events, status; on the chart's
/// own CRD.
#[test]
fn the_operator_as_the_charts_account_applies_reads_secrets_and_reports() {
    let admin = control_plane();
    // The CRD as the chart renders it.
    let rendered = chart::render(&json!({}), OPERATOR_RELEASE, "setlist-system");
    let crd = rendered.get(
        "CustomResourceDefinition",
        "recommenderclusters.setlist.dev",
    );
    let (ok, _, err) = kubectl(
        &admin,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&crd.to_string()),
    );
    assert!(ok, "the chart's CRD applies: {err}");
    let (ok, _, err) = kubectl(
        &admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/recommenderclusters.setlist.dev",
        ],
        None,
    );
    assert!(ok, "{err}");

    let ns = Namespace::new(&admin, "rbac-run");
    let dir = tempfile::tempdir().unwrap();
    let slices = manifest_only(dir.path(), 2, 1, "v1");
    let (ok, _, err) = ns.kubectl(
        &[
            "create",
            "secret",
            "generic",
            "demo-kafka",
            "--from-literal=security.protocol=PLAINTEXT",
        ],
        None,
    );
    assert!(ok, "{err}");
    let operator = Operator::start(&admin, &ns.name, "operator", dir.path());
    let apply = |spec: &Value| {
        let cluster = json!({
            "apiVersion": "setlist.dev/v1alpha1",
            "kind": "RecommenderCluster",
            "metadata": { "name": "demo" },
            "spec": spec,
        });
        let (ok, _, err) = ns.kubectl(&["apply", "-f", "-"], Some(&cluster.to_string()));
        assert!(ok, "{err}");
    };
    let mut spec = json!({
        "model": { "uri": slices },
        "stages": { "count": 2 },
        "outputShards": { "count": 1 },
        "kafka": {
            "bootstrapServers": "127.0.0.1:9",
            "manageTopics": false,
            "clientSecretName": "demo-kafka",
        },
        "searchApi": { "ingress": { "host": "music.example.com" } },
    });
    apply(&spec);
    let exists = |what: &[&str]| ns.kubectl(&[&["get"], what].concat(), None).0;
    wait_for(
        Duration::from_secs(60),
        "the Ingress and the search Deployment",
        || {
            (exists(&["ingress", "demo-search"]) && exists(&["deployment", "demo-search"]))
                .then_some(())
        },
        || operator.log_text(),
    );
    // The Secret's keys reach the pods as references, never values.
    let stage = ns.get_json(&["statefulset", "demo-stage-0"]);
    assert!(
        stage.to_string().contains("demo-kafka"),
        "the Secret was read and referenced: {stage}"
    );
    let status = wait_for(
        Duration::from_secs(30),
        "status",
        || {
            let status = ns.get_json(&["recommendercluster", "demo"])["status"].clone();
            status["phase"].is_string().then_some(status)
        },
        || operator.log_text(),
    );
    assert_eq!(status["observedGeneration"], 1, "{status}");
    let events = ns.get_json(&["events", "--field-selector", "involvedObject.name=demo"]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Created"),
        "{events}"
    );

    // A Secret that is not there: a sentence saying so (a 404), not a
    // refusal (a 403 would fail the pass and write no status).
    spec["kafka"]["clientSecretName"] = json!("no-such-secret");
    apply(&spec);
    wait_for(
        Duration::from_secs(30),
        "the missing Secret in status",
        || {
            let status = ns.get_json(&["recommendercluster", "demo"])["status"].clone();
            status
                .to_string()
                .contains("no-such-secret, which does not exist")
                .then_some(())
        },
        || operator.log_text(),
    );

    // No Ingress asked for: the operator deletes it.
    spec["kafka"]["clientSecretName"] = json!("demo-kafka");
    spec["searchApi"] = json!({});
    apply(&spec);
    wait_for(
        Duration::from_secs(30),
        "the Ingress to be deleted",
        || (!exists(&["ingress", "demo-search"])).then_some(()),
        || operator.log_text(),
    );
    operator.assert_nothing_refused();
}
