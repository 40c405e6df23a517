//! The SRE's files: the alert rules (`charts/setlist-operator/files/setlist-alerts.yml`,
//! a plain Prometheus rules file that the chart's PrometheusRule embeds),
//! their promtool unit tests (`tests/prometheus/*.test.yml`), the runbook
//! (`docs/runbook.md`) and the Grafana dashboard
//! (`charts/setlist-operator/files/setlist-dashboard.json`).
//!
//! `tests/alert_rules.rs` checks them offline with promtool; a live test can
//! take [`alert_rules_file`] to load into a real Prometheus and
//! [`dashboard_queries`] to run every panel's query against it.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What a range of `$__rate_interval` (and Grafana's other interval
/// variables) becomes in [`dashboard_queries`]: at least four scrapes of a
/// 15 s interval, and plenty of a 1 s one.
pub const RATE_INTERVAL: &str = "1m";

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// The one plain Prometheus rules file (recording rules and alerts).
pub fn alert_rules_file() -> PathBuf {
    repo().join("charts/setlist-operator/files/setlist-alerts.yml")
}

/// The Grafana dashboard.
pub fn dashboard_file() -> PathBuf {
    repo().join("charts/setlist-operator/files/setlist-dashboard.json")
}

/// The runbook, one section per alert.
pub fn runbook_file() -> PathBuf {
    repo().join("docs/runbook.md")
}

/// Every promtool unit-test file (`tests/prometheus/*.test.yml`), sorted.
pub fn alert_test_files() -> Vec<PathBuf> {
    let dir = repo().join("tests/prometheus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".test.yml"))
        })
        .collect();
    files.sort();
    files
}

/// The dashboard as JSON.
pub fn dashboard() -> Value {
    let path = dashboard_file();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel of the dashboard, rows included, those inside collapsed rows
/// too, in the order they are shown.
pub fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            into.push(panel);
            walk(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    walk(&dashboard["panels"], &mut all);
    all
}

/// Every query of the dashboard: (the panel's title, its `expr` with
/// Grafana's variables replaced so that Prometheus can run it: a range
/// variable (`$__rate_interval`, `$__interval`, `$__range`) by
/// [`RATE_INTERVAL`], any other variable (`$namespace`, `$cluster`,
/// `$stage`, `$shard`, which the dashboard uses only in `=~` matchers) by
/// `.*`, its "All"). A panel with several queries gives one pair each.
pub fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    dashboard_panels(&dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|target| target["expr"].as_str())
                .map(move |expr| (title.clone(), substitute_variables(expr)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Grafana's variables in `expr` (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`) by a concrete value: see [`dashboard_queries`].
pub fn substitute_variables(expr: &str) -> String {
    let value = |name: &str| match name {
        "__rate_interval" | "__interval" | "__range" => RATE_INTERVAL.to_string(),
        "__interval_ms" | "__range_ms" => "60000".to_string(),
        "__range_s" => "60".to_string(),
        _ => ".*".to_string(),
    };
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
            match braced.find('}') {
                Some(end) => (braced[..end].split(':').next().unwrap_or(""), end + 3),
                None => ("", 0),
            }
        } else if let Some(bracketed) = tail.strip_prefix("[[") {
            match bracketed.find("]]") {
                Some(end) => (bracketed[..end].split(':').next().unwrap_or(""), end + 4),
                None => ("", 0),
            }
        } else if let Some(bare) = tail.strip_prefix('$') {
            let end = bare
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(bare.len());
            (&bare[..end], end + 1)
        } else {
            ("", 0)
        };
        if name.is_empty() {
            // Not a variable: `[5m]`, a lone `$`.
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        } else {
            out.push_str(&value(name));
            rest = &tail[len..];
        }
    }
    out.push_str(rest);
    out
}

/// `promtool` (Debian's prometheus package). Where it is not on the PATH,
/// `scripts/install-sre-tools.sh` installs it (once; test processes take
/// turns through a lock); a machine where that fails fails the test with
/// what to run, never skips it.
pub fn promtool() -> PathBuf {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL
        .get_or_init(|| {
            if let Some(path) = on_path("promtool") {
                return path;
            }
            let lock = std::fs::File::create("/tmp/setlist-sre-tools.lock")
                .expect("the install lock file can be made");
            let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("the install lock");
            if let Some(path) = on_path("promtool") {
                return path;
            }
            let script = repo().join("scripts/install-sre-tools.sh");
            let out = Command::new(&script)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("{} cannot run: {e}", script.display()));
            on_path("promtool").unwrap_or_else(|| {
                panic!(
                    "promtool is not installed, and {} could not install it ({}): install Debian's \
                     prometheus package (`apt-get install prometheus`), which has promtool\n{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .clone()
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs promtool with `args`; fails the test, quoting its output, unless it
/// succeeds; returns its stdout and stderr.
pub fn promtool_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("promtool starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        out.status
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_become_all_or_the_rate_interval() {
        assert_eq!(
            substitute_variables(
                r#"sum(rate(x{namespace=~"$namespace", part=~"${stage}", c=~"[[cluster]]"}[$__rate_interval])) + y[5m]"#
            ),
            r#"sum(rate(x{namespace=~".*", part=~".*", c=~".*"}[1m])) + y[5m]"#
        );
        assert_eq!(
            substitute_variables("a{b=~\"${b:regex}\"} $"),
            "a{b=~\".*\"} $"
        );
    }
}
