//! The alert rules, their promtool unit tests, the runbook and the Grafana
//! dashboard, checked offline with the real promtool (Debian's prometheus
//! package; `scripts/install-sre-tools.sh`). A machine without promtool
//! fails these tests, saying what to install; they are never skipped.

use serde_yaml::Value as Yaml;
use setlist_tests::prometheus::{
    alert_rules_file, alert_test_files, dashboard, dashboard_file, dashboard_panels,
    dashboard_queries, promtool_ok, repo, runbook_file,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::Duration;

/// The alerts the issue names; the rules file may have more.
const REQUIRED: [&str; 8] = [
    "SetlistPipelineDown",
    "SetlistComputeNodeDown",
    "SetlistFallbackRatioHigh",
    "SetlistConsumerLagGrowing",
    "SetlistLatencyOverBudget",
    "SetlistDeadLetters",
    "SetlistNodeReplacementsRepeating",
    "SetlistOperatorReconcileErrors",
];

const RUNBOOK_URL: &str = "https://github.com/setlist-dev/setlist/blob/main/docs/runbook.md";

/// Where the dashboard's panels are listed with their queries.
const DASHBOARD_DOC: &str = "docs/dashboard.md";

fn yaml(path: &std::path::Path) -> Yaml {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn str_of<'a>(value: &'a Yaml, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Yaml::as_str)
}

/// Every alerting rule of the rules file.
fn alerts() -> Vec<Yaml> {
    let rules = yaml(&alert_rules_file());
    let groups = rules["groups"]
        .as_sequence()
        .expect("the rules file has a list of groups");
    groups
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

fn alert_name(alert: &Yaml) -> &str {
    str_of(alert, "alert").expect("an alert has a name")
}

/// A Prometheus duration such as `90s`, `5m` or `1h30m`.
fn duration(text: &str) -> Duration {
    let mut total = 0u64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            "ms"
        } else {
            match c {
                's' => "s",
                'm' => "m",
                'h' => "h",
                'd' => "d",
                'w' => "w",
                _ => panic!("{text:?} is not a Prometheus duration"),
            }
        };
        let n: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("{text:?} is not a Prometheus duration"));
        number.clear();
        total += match unit {
            "ms" => n,
            "s" => n * 1_000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            "d" => n * 86_400_000,
            _ => n * 604_800_000,
        };
    }
    assert!(number.is_empty(), "{text:?} is not a Prometheus duration");
    Duration::from_millis(total)
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn promtool_checks_the_rules_file() {
    let out = promtool_ok(&[
        OsStr::new("check"),
        OsStr::new("rules"),
        alert_rules_file().as_os_str(),
    ]);
    println!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let files = alert_test_files();
    assert!(!files.is_empty(), "no tests/prometheus/*.test.yml");
    let mut args = vec![OsStr::new("test"), OsStr::new("rules")];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = promtool_ok(&args);
    println!("{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn every_alert_has_a_severity_a_for_a_summary_a_description_and_a_runbook_section() {
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts.iter().map(alert_name).collect();
    assert_eq!(
        names.len(),
        alerts.len(),
        "two alerts share a name: {names:?}"
    );
    for required in REQUIRED {
        assert!(names.contains(required), "the rules file has no {required}");
    }

    let runbook = std::fs::read_to_string(runbook_file()).expect("docs/runbook.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect();
    // The table at the top: one row per alert, with its severity and `for`.
    let table: Vec<&str> = runbook
        .lines()
        .take_while(|line| !line.starts_with("## "))
        .filter(|line| line.starts_with('|'))
        .collect();

    for alert in &alerts {
        let name = alert_name(alert);
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}, not critical or warning"
        );
        let wait = str_of(alert, "for").unwrap_or_else(|| panic!("{name} has no `for`"));
        assert!(
            duration(wait) >= Duration::from_secs(60),
            "{name}: for {wait} is shorter than a minute"
        );
        for key in ["summary", "description"] {
            let text = alert["annotations"][key].as_str().unwrap_or_default();
            assert!(
                text.trim().len() > 20,
                "{name}: annotation {key} is missing or says nothing: {text:?}"
            );
        }
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let want = format!("{RUNBOOK_URL}#{}", name.to_lowercase());
        assert_eq!(url, want, "{name}: runbook_url");
        assert!(
            anchors.contains(&name.to_lowercase()),
            "docs/runbook.md has no section `## {name}` (anchor #{}); it has {anchors:?}",
            name.to_lowercase()
        );
        let row = table
            .iter()
            .find(|row| row.contains(&format!("[{name}]")) || row.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("the table atop docs/runbook.md has no row for {name}"));
        assert!(
            row.contains(severity.unwrap_or_default()) && row.contains(wait),
            "docs/runbook.md's row for {name} does not say its severity {severity:?} and for {wait}: {row}"
        );
    }
}

#[test]
fn every_alert_is_unit_tested_both_firing_and_quiet() {
    let names: BTreeSet<String> = alerts().iter().map(|a| alert_name(a).to_string()).collect();
    // alert name → (cases where it fires, cases where it stays quiet)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for file in alert_test_files() {
        let doc = yaml(&file);
        let rule_files: Vec<&str> = doc["rule_files"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .collect();
        let dir = file.parent().expect("a test file's folder");
        assert!(
            rule_files.iter().any(|rf| dir
                .join(rf)
                .canonicalize()
                .is_ok_and(|p| p == alert_rules_file())),
            "{} does not test {} (rule_files {rule_files:?})",
            file.display(),
            alert_rules_file().display()
        );
        for test in doc["tests"].as_sequence().into_iter().flatten() {
            for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = str_of(case, "alertname")
                    .unwrap_or_else(|| panic!("{}: a case without alertname", file.display()));
                assert!(
                    names.contains(name),
                    "{} tests {name}, which the rules file does not have",
                    file.display()
                );
                let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
                let entry = cases.entry(name.to_string()).or_default();
                if expected > 0 {
                    entry.0 += 1;
                    for alert in case["exp_alerts"].as_sequence().into_iter().flatten() {
                        for key in ["summary", "description", "runbook_url"] {
                            assert!(
                                alert["exp_annotations"][key].as_str().is_some(),
                                "{}: a firing case of {name} does not expect its {key}",
                                file.display()
                            );
                        }
                    }
                } else {
                    entry.1 += 1;
                }
            }
        }
    }
    let untested: Vec<String> = names
        .iter()
        .filter_map(|name| match cases.get(name) {
            Some((fires, quiet)) if *fires > 0 && *quiet > 0 => None,
            Some((fires, quiet)) => Some(format!("{name} (fires in {fires}, quiet in {quiet})")),
            None => Some(format!("{name} (no case)")),
        })
        .collect();
    assert!(
        untested.is_empty(),
        "alerts without a promtool case where they fire and one where they stay quiet: {untested:?}"
    );
}

#[test]
fn every_dashboard_panel_queries_prometheus_through_the_datasource_variable() {
    let dashboard = dashboard();
    let path = dashboard_file();
    assert!(
        dashboard["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "{}: schemaVersion {}",
        path.display(),
        dashboard["schemaVersion"]
    );
    assert!(
        dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "no uid"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let defined: BTreeSet<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            variable["datasource"]["uid"], "${datasource}",
            "variable {} does not query the datasource variable",
            variable["name"]
        );
    }

    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in dashboard_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_i64().expect("a panel id")),
            "two panels have id {}",
            panel["id"]
        );
        if panel["type"] == "row" {
            if let Some(repeat) = panel["repeat"].as_str() {
                assert!(
                    defined.contains(repeat),
                    "row {title:?} repeats by undefined ${repeat}"
                );
            }
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?}: its datasource is not the variable"
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in &targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?}: a query without expr"
            );
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title:?}: query {expr:?} does not use the datasource variable"
            );
            check_variables(title, expr, &defined);
            queries += 1;
        }
    }
    assert_eq!(queries, dashboard_queries().len());
}

/// Every variable of `expr` is defined, and (but for the range ones) used
/// only as a regex matcher, `=~"$var"`, so that "All" (`.*`) matches series
/// without the label too, and `dashboard_queries` can put `.*` in its place.
fn check_variables(title: &str, expr: &str, defined: &BTreeSet<&str>) {
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        let before = &rest[..at];
        let tail = &rest[at + 1..];
        let name: String = tail
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.starts_with("__") {
            assert!(
                defined.contains(name.as_str()),
                "panel {title:?}: ${name} is not a dashboard variable: {expr}"
            );
            assert!(
                before.ends_with("=~\""),
                "panel {title:?}: ${name} is used other than as `label=~\"${name}\"`: {expr}"
            );
        }
        rest = tail;
    }
}

#[test]
fn promtool_parses_every_dashboard_query() {
    // promtool has no query checker of its own: each query becomes a
    // recording rule of a throwaway rules file, which `check rules` parses.
    let queries = dashboard_queries();
    let rules: Vec<Yaml> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let mut rule = serde_yaml::Mapping::new();
            rule.insert("record".into(), format!("dashboard:query_{i}:check").into());
            rule.insert("expr".into(), expr.clone().into());
            Yaml::Mapping(rule)
        })
        .collect();
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), Yaml::Sequence(rules));
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("groups".into(), Yaml::Sequence(vec![Yaml::Mapping(group)]));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, serde_yaml::to_string(&doc).expect("YAML")).expect("written");
    let out = promtool_ok(&[OsStr::new("check"), OsStr::new("rules"), file.as_os_str()]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

#[test]
fn alerts_name_dashboard_panels_that_exist_and_the_doc_lists_every_panel() {
    let dashboard = dashboard();
    let titles: Vec<String> = dashboard_panels(&dashboard)
        .iter()
        .filter(|p| p["type"] != "row")
        .filter_map(|p| p["title"].as_str().map(str::to_string))
        .collect();
    // A repeated row's panels are titled "Name ($stage)".
    let base = |title: &str| title.split(" ($").next().unwrap_or(title).to_string();
    let bases: BTreeSet<String> = titles.iter().map(|t| base(t)).collect();
    for alert in alerts() {
        let description = alert["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        for (i, quoted) in description.split('"').enumerate() {
            // Odd pieces are inside quotes; a panel's title starts with a
            // capital (a label value in a matcher does not).
            if i % 2 == 1 && quoted.starts_with(|c: char| c.is_ascii_uppercase()) {
                assert!(
                    bases.contains(quoted),
                    "{}'s description names the panel {quoted:?}, which the dashboard does not have: {bases:?}",
                    alert_name(&alert)
                );
            }
        }
    }
    let doc = std::fs::read_to_string(repo().join(DASHBOARD_DOC))
        .unwrap_or_else(|e| panic!("{DASHBOARD_DOC} cannot be read: {e}"));
    for title in &bases {
        assert!(
            doc.contains(&format!("| {title} |")),
            "{DASHBOARD_DOC} does not list the panel {title:?}"
        );
    }
}
