//! What `setlist up` gives a Prometheus: a file-based service discovery
//! file listing every process's `/metrics` under the job names the
//! Kubernetes PodMonitor gives the same processes, a configuration that
//! reads it with the project's alert rules, and, with `--prometheus`, a
//! running server.

use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The alert rules the Helm chart installs, byte for byte.
pub const ALERT_RULES: &str =
    include_str!("../../charts/setlist-operator/files/setlist-alerts.yml");

/// The scrape job of a process of `setlist up`, named as on Kubernetes
/// (`setlist-<app.kubernetes.io/component>`), so one set of alerts and one
/// dashboard serve both.
pub fn job_of(process: &str) -> &'static str {
    match process {
        "dispatcher" => "setlist-dispatcher",
        "search" => "setlist-search-api",
        _ => "setlist-compute-node",
    }
}

/// Prometheus's file-SD format: one target group per process, labelled with
/// its job and its name in `setlist up` (`process`).
pub fn targets<'a>(processes: impl IntoIterator<Item = (&'a str, &'a str)>) -> serde_json::Value {
    processes
        .into_iter()
        .map(|(name, url)| {
            json!({
                "targets": [url.trim_start_matches("http://")],
                "labels": { "job": job_of(name), "process": name },
            })
        })
        .collect()
}

/// A Prometheus configuration that scrapes every target in `targets` and
/// evaluates `rules` at the scrape interval.
pub fn config(targets: &Path, rules: &Path, interval: Duration) -> String {
    let interval = format!("{}s", interval.as_secs().max(1));
    let config = json!({
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [rules],
        "scrape_configs": [{
            "job_name": "setlist",
            "file_sd_configs": [{ "files": [targets], "refresh_interval": interval }],
        }],
    });
    // JSON is YAML; Prometheus reads it as such.
    serde_json::to_string_pretty(&config).expect("a JSON value serialises")
}

/// Where the files for Prometheus are written.
pub struct ScrapeFiles {
    pub targets: PathBuf,
    pub rules: PathBuf,
    pub config: PathBuf,
}

impl ScrapeFiles {
    pub fn write<'a>(
        dir: &Path,
        processes: impl IntoIterator<Item = (&'a str, &'a str)>,
        interval: Duration,
    ) -> Result<ScrapeFiles> {
        std::fs::create_dir_all(dir)?;
        let files = ScrapeFiles {
            targets: dir.join("targets.json"),
            rules: dir.join("setlist-alerts.yml"),
            config: dir.join("prometheus.yml"),
        };
        let write = |path: &Path, text: &str| {
            // Whole files only: Prometheus rereads the targets while we write.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, text)
                .and_then(|()| std::fs::rename(&partial, path))
                .with_context(|| format!("cannot write {}", path.display()))
        };
        write(
            &files.targets,
            &serde_json::to_string_pretty(&targets(processes))?,
        )?;
        write(&files.rules, ALERT_RULES)?;
        write(
            &files.config,
            &config(&files.targets, &files.rules, interval),
        )?;
        Ok(files)
    }

    /// The command line of a Prometheus server on `listen` that keeps its
    /// data in `data`.
    pub fn server_command(&self, prometheus: &Path, listen: &str, data: &Path) -> Vec<String> {
        vec![
            prometheus.display().to_string(),
            format!("--config.file={}", self.config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address={listen}"),
            "--storage.tsdb.retention.time=1d".into(),
        ]
    }
}

/// The `prometheus` binary on PATH, or a sentence saying how to get one.
pub fn find_prometheus() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .context(
            "--prometheus needs a `prometheus` binary on PATH: install Debian's `prometheus` package \
             (`sudo apt-get install prometheus`, or run scripts/install-sre-tools.sh), or leave \
             --prometheus out and point your own Prometheus at the targets file `setlist up` writes",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_process_is_a_target_of_its_kubernetes_job() {
        let targets = targets([
            ("stage-0-0", "http://127.0.0.1:9100"),
            ("shard-1-0", "http://127.0.0.1:9104"),
            ("dispatcher", "http://127.0.0.1:8080"),
            ("search", "http://127.0.0.1:8081"),
        ]);
        let jobs: Vec<(&str, &str, &str)> = targets
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["targets"][0].as_str().unwrap(),
                    g["labels"]["job"].as_str().unwrap(),
                    g["labels"]["process"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            jobs,
            [
                ("127.0.0.1:9100", "setlist-compute-node", "stage-0-0"),
                ("127.0.0.1:9104", "setlist-compute-node", "shard-1-0"),
                ("127.0.0.1:8080", "setlist-dispatcher", "dispatcher"),
                ("127.0.0.1:8081", "setlist-search-api", "search"),
            ]
        );
    }

    #[test]
    fn the_configuration_reads_the_targets_and_the_rules() {
        let text = config(
            Path::new("/w/targets.json"),
            Path::new("/w/rules.yml"),
            Duration::from_secs(5),
        );
        let config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(config["global"]["scrape_interval"], "5s");
        assert_eq!(config["rule_files"][0], "/w/rules.yml");
        assert_eq!(
            config["scrape_configs"][0]["file_sd_configs"][0]["files"][0],
            "/w/targets.json"
        );
    }
}
