//! The stand-in node (`setlist_tests::kubelet`) on the real control plane
//! of `../shared/k8s`: pods scheduled to it run as local processes, become
//! Ready through their probes, get their environment and volumes, restart
//! with a back-off, reach each other through Services, and stop when
//! deleted. Each test registers a node of its own, named after its
//! namespace, and pins its pods to it with a nodeSelector, so tests running
//! at once never run each other's pods.

use serde_json::Value;
use setlist_tests::k8s::{Namespace, control_plane};
use setlist_tests::kubelet::{NodeOptions, StandInNode};
use setlist_tests::{Fate, ProcessId};
use std::time::{Duration, Instant};

/// A namespace and a stand-in node of its own (dropped node first).
struct Fixture {
    node: StandInNode,
    ns: Namespace,
    _work: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let kubeconfig = control_plane();
        let ns = Namespace::new(&kubeconfig, "kubelet");
        let work = tempfile::tempdir().unwrap();
        let node = StandInNode::start(&kubeconfig, &ns.name, NodeOptions::new(work.path()));
        Fixture {
            node,
            ns,
            _work: work,
        }
    }

    /// Applies a manifest (`@NODE@` stands for the node's name), retrying
    /// while the new namespace's default service account does not exist yet.
    fn apply(&self, manifest: &str) {
        let manifest = manifest.replace("@NODE@", self.node.name());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, _, err) = self.ns.kubectl(&["apply", "-f", "-"], Some(&manifest));
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline && err.contains("serviceaccount"),
                "kubectl apply failed: {err}\n{manifest}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The pods of the namespace, as JSON.
    fn pods(&self, selector: &str) -> Vec<Value> {
        let mut args = vec!["get", "pods", "-o", "json"];
        if !selector.is_empty() {
            args.extend(["-l", selector]);
        }
        let (ok, json, err) = self.ns.kubectl(&args, None);
        assert!(ok, "kubectl get pods: {err}");
        let list: Value = serde_json::from_str(&json).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    fn pod(&self, name: &str) -> Option<Value> {
        let (ok, json, _) = self.ns.kubectl(&["get", "pod", name, "-o", "json"], None);
        ok.then(|| serde_json::from_str(&json).unwrap())
    }

    /// `kubectl get pods` as a person reads it, events, and the container
    /// logs: what a failure message needs.
    fn diagnostics(&self) -> String {
        let (_, table, _) = self.ns.kubectl(&["get", "pods", "-o", "wide"], None);
        let (_, events, _) = self.ns.kubectl(&["get", "events"], None);
        format!(
            "kubectl get pods:\n{table}\nevents:\n{events}\ncontainer logs:\n{}",
            self.node.log_tails(30)
        )
    }

    /// Polls `probe` until it gives a value, failing with diagnostics at
    /// the deadline.
    fn wait<T>(&self, what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for a Running, Ready pod matching `selector`; returns it.
    fn ready_pod(&self, selector: &str) -> Value {
        self.wait(
            &format!("a Ready pod {selector}"),
            Duration::from_secs(40),
            || {
                self.pods(selector).into_iter().find(|p| {
                    p["status"]["phase"] == "Running"
                        && condition(p, "Ready")
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
            },
        )
    }

    /// The columns of `kubectl get pods`'s line for `pod`.
    fn table_row(&self, pod: &str) -> Vec<String> {
        let (ok, table, err) = self.ns.kubectl(&["get", "pod", pod, "--no-headers"], None);
        assert!(ok, "{err}");
        table.split_whitespace().map(str::to_string).collect()
    }

    fn log(&self, pod: &str, container: &str) -> String {
        std::fs::read_to_string(self.node.log_path(&self.ns.name, pod, container))
            .unwrap_or_default()
    }
}

fn condition(pod: &Value, kind: &str) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn name(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap().to_string()
}

fn container_status(pod: &Value) -> Value {
    pod["status"]["containerStatuses"][0].clone()
}

const WEB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data:
  index.html: "hello from the stand-in node\n"
  app.conf: |
    cache_dir = /var/cache/web
    listen = 0.0.0.0:8080
---
apiVersion: v1
kind: Secret
metadata: {name: token}
stringData: {value: s3cret}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: front}}
    spec:
      nodeSelector: {kubernetes.io/hostname: "@NODE@"}
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: docker.io/library/python:3.12
        command: ["sh", "-c"]
        args:
        - |
          echo "pod=$POD_NAME ns=$POD_NAMESPACE ip=$POD_IP node=$NODE_NAME tier=$TIER greeting=$GREETING keep=$KEEP secret=$SECRET host=$HOSTNAME"
          cat /etc/web/app.conf
          exec python3 -m http.server 8080 --bind 0.0.0.0 --directory /etc/web
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
        - {name: GREETING, value: "hi $(POD_NAME)"}
        - {name: KEEP, value: "127.0.0.1:9000"}
        - {name: SECRET, valueFrom: {secretKeyRef: {name: token, key: value}}}
        ports: [{name: http, containerPort: 8080}]
        startupProbe:
          exec: {command: ["test", "-f", "/etc/web/index.html"]}
          periodSeconds: 1
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 1
        volumeMounts:
        - {name: site, mountPath: /etc/web}
        - {name: cache, mountPath: /var/cache/web}
      volumes:
      - {name: site, configMap: {name: site}}
      - {name: cache, emptyDir: {}}
"#;

#[test]
fn a_deployment_runs_ready_with_its_env_and_config_and_stops_when_its_pod_is_deleted() {
    let fx = Fixture::new();
    let ns = fx.ns.name.clone();
    fx.apply(WEB);

    let pod = fx.ready_pod("app=web");
    let pod_name = name(&pod);
    assert_eq!(pod["spec"]["nodeName"], fx.node.name(), "{pod}");
    let address = fx
        .node
        .pod_address(&ns, &pod_name)
        .expect("the node knows the pod's address");
    assert_eq!(pod["status"]["podIP"], address.to_string(), "{pod}");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1", "{pod}");
    let status = container_status(&pod);
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["started"], true, "{status}");
    assert!(
        status["state"]["running"]["startedAt"].is_string(),
        "{status}"
    );
    let pid = fx
        .node
        .process_id(&ns, &pod_name, "web")
        .expect("a running process");
    assert_eq!(
        status["containerID"],
        format!("standin://{pid}"),
        "{status}"
    );

    // As a person sees it.
    let row = fx.table_row(&pod_name);
    assert_eq!(&row[1..4], ["1/1", "Running", "0"], "{row:?}");

    // It serves the configMap's file on its own address.
    let (code, body) = setlist_tests::get_text(&format!("http://{address}:8080/index.html"));
    assert_eq!(
        (code, body.as_str()),
        (200, "hello from the stand-in node\n")
    );

    // Its environment, and its config file with the mount path and the
    // wildcard address mapped.
    let cache = fx
        .node
        .log_path(&ns, &pod_name, "web")
        .parent()
        .unwrap()
        .join("volumes/cache");
    let log = fx.log(&pod_name, "web");
    let expected = format!(
        "pod={pod_name} ns={ns} ip={address} node={} tier=front greeting=hi {pod_name} keep=127.0.0.1:9000 secret=s3cret host={pod_name}",
        fx.node.name()
    );
    assert!(
        log.contains(&expected),
        "{expected:?} is not in the log:\n{log}"
    );
    let conf = format!("cache_dir = {}\nlisten = {address}:8080\n", cache.display());
    assert!(log.contains(&conf), "{conf:?} is not in the log:\n{log}");
    assert!(cache.is_dir(), "the emptyDir {} exists", cache.display());

    // Deleting the pod stops its process and removes it; the Deployment's
    // replacement runs.
    let process = ProcessId::of(pid as i32).expect("the container's process is alive");
    let (ok, _, err) = fx
        .ns
        .kubectl(&["delete", "pod", &pod_name, "--wait=false"], None);
    assert!(ok, "{err}");
    fx.wait(
        "the deleted pod's process to end",
        Duration::from_secs(15),
        || (process.fate() == Fate::Gone).then_some(()),
    );
    fx.wait(
        "the deleted pod to disappear",
        Duration::from_secs(15),
        || fx.pod(&pod_name).is_none().then_some(()),
    );
    let replacement = fx.ready_pod("app=web");
    assert_ne!(name(&replacement), pod_name);
    let log = fx.log(&pod_name, "web");
    assert!(
        log.contains("exited on signal 15"),
        "SIGTERM stopped it:\n{log}"
    );
}

const CRASHING: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  nodeSelector: {kubernetes.io/hostname: "@NODE@"}
  containers:
  - name: crash
    image: busybox
    command: ["sh", "-c", "echo failing; exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  nodeSelector: {kubernetes.io/hostname: "@NODE@"}
  terminationGracePeriodSeconds: 2
  containers:
  - name: sleep
    image: busybox
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  nodeSelector: {kubernetes.io/hostname: "@NODE@"}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
    livenessProbe:
      tcpSocket: {port: 9}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {name: job}
spec:
  nodeSelector: {kubernetes.io/hostname: "@NODE@"}
  restartPolicy: Never
  containers:
  - name: once
    image: busybox
    command: ["sh", "-c", "echo done"]
"#;

#[test]
fn failing_containers_restart_with_a_back_off_and_killed_ones_come_back() {
    let fx = Fixture::new();
    let ns = fx.ns.name.clone();
    fx.apply(CRASHING);

    // A container that keeps failing: restarts counted, CrashLoopBackOff
    // between them, as `kubectl get pods` shows it.
    let mut seen_back_off = false;
    let crasher = fx.wait(
        "crasher to restart 3 times, shown in CrashLoopBackOff",
        Duration::from_secs(40),
        || {
            let pod = fx.pod("crasher")?;
            let status = container_status(&pod);
            if status["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
                let row = fx.table_row("crasher");
                seen_back_off |= row[2] == "CrashLoopBackOff";
            }
            (seen_back_off && status["restartCount"].as_u64()? >= 3).then_some(pod)
        },
    );
    let status = container_status(&crasher);
    assert_eq!(crasher["status"]["phase"], "Running", "{crasher}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1, "{status}");
    assert_eq!(
        status["lastState"]["terminated"]["reason"], "Error",
        "{status}"
    );
    let log = fx.log("crasher", "crash");
    assert!(log.matches("failing").count() >= 3, "{log}");

    // A process killed from outside is restarted.
    fx.wait("sleeper to run", Duration::from_secs(20), || {
        let pod = fx.pod("sleeper")?;
        (pod["status"]["phase"] == "Running" && condition(&pod, "Ready")).then_some(())
    });
    let pid = fx
        .node
        .process_id(&ns, "sleeper", "sleep")
        .expect("sleeper runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let sleeper = fx.wait("sleeper to be restarted", Duration::from_secs(20), || {
        let pod = fx.pod("sleeper")?;
        let status = container_status(&pod);
        let again = fx.node.process_id(&ns, "sleeper", "sleep")?;
        (status["restartCount"] == 1 && status["state"]["running"].is_object() && again != pid)
            .then_some(pod)
    });
    let status = container_status(&sleeper);
    assert_eq!(
        status["lastState"]["terminated"]["exitCode"], 137,
        "{status}"
    );
    assert_eq!(status["lastState"]["terminated"]["signal"], 9, "{status}");
    let row = fx.table_row("sleeper");
    assert_eq!(&row[1..4], ["1/1", "Running", "1"], "{row:?}");

    // A failing liveness probe gets its container killed and restarted.
    let unhealthy = fx.wait("unhealthy to be restarted", Duration::from_secs(30), || {
        let pod = fx.pod("unhealthy")?;
        (container_status(&pod)["restartCount"].as_u64()? >= 1).then_some(pod)
    });
    let status = container_status(&unhealthy);
    assert_eq!(
        status["lastState"]["terminated"]["exitCode"], 143,
        "SIGTERM: {status}"
    );
    let log = fx.log("unhealthy", "app");
    assert!(log.contains("failed its liveness probe 2 times"), "{log}");

    // restartPolicy Never: done once, Succeeded.
    let job = fx.wait("job to succeed", Duration::from_secs(20), || {
        fx.pod("job")
            .filter(|p| p["status"]["phase"] == "Succeeded")
    });
    let status = container_status(&job);
    assert_eq!(
        status["state"]["terminated"]["reason"], "Completed",
        "{status}"
    );
    assert_eq!(status["restartCount"], 0, "{status}");
}

const SERVICE: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: "@NODE@"}
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: python
        command: ["sh", "-c", "echo served-by-$POD_NAME > /srv/www/index.html && exec python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/www"]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
        volumeMounts: [{name: www, mountPath: /srv/www}]
      volumes: [{name: www, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 18000, targetPort: http}]
"#;

const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeSelector: {kubernetes.io/hostname: "@NODE@"}
  terminationGracePeriodSeconds: 2
  containers:
  - name: client
    image: python
    command:
    - python3
    - -c
    - |
      import os, sys, time, urllib.request
      for url in (sys.argv[1], os.environ["TARGET"]):
          for attempt in range(100):
              try:
                  print(url, "->", urllib.request.urlopen(url, timeout=2).read().decode().strip(), flush=True)
                  break
              except Exception as e:
                  print(url, "failed:", e, flush=True)
                  time.sleep(0.3)
      time.sleep(3600)
    - http://web:18000/index.html
    env:
    - {name: TARGET, value: "http://web.@NAMESPACE@.svc.cluster.local:18000/index.html"}
"#;

#[test]
fn a_service_name_reaches_a_ready_pod_through_the_proxy() {
    let fx = Fixture::new();
    fx.apply(SERVICE);
    let web = name(&fx.ready_pod("app=web"));
    fx.apply(&CLIENT.replace("@NAMESPACE@", &fx.ns.name));

    let answer = format!("-> served-by-{web}");
    fx.wait(
        "the client's two answers through the service",
        Duration::from_secs(30),
        || (fx.log("client", "client").matches(&answer).count() >= 2).then_some(()),
    );
    let log = fx.log("client", "client");
    assert!(
        !log.contains("//web"),
        "the service's names were rewritten to its proxy's address:\n{log}"
    );

    // Deleting the client pod stops its process.
    let pid = fx
        .node
        .process_id(&fx.ns.name, "client", "client")
        .expect("client runs");
    let process = ProcessId::of(pid as i32).expect("the client's process is alive");
    let (ok, _, err) = fx
        .ns
        .kubectl(&["delete", "pod", "client", "--wait=false"], None);
    assert!(ok, "{err}");
    fx.wait(
        "the client's process to end",
        Duration::from_secs(15),
        || (process.fate() == Fate::Gone).then_some(()),
    );
    fx.wait(
        "the client pod to disappear",
        Duration::from_secs(15),
        || fx.pod("client").is_none().then_some(()),
    );
}
