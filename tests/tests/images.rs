//! The container images (`scripts/build-images.sh`, docs/images.md): every
//! deployable's Dockerfile builds, with podman, from the release binaries on
//! the minimal Debian base; each image runs its binary's `--help` as uid and
//! gid 65532; only setlist-node's carries libtorch; each image's size is
//! printed. Where podman is missing or cannot run a container, the test
//! fails and says why: it never passes without having run the images.

use serde_json::Value;
use setlist_tests::binary;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The deployables: each image is named after its binary.
const BINARIES: [&str; 4] = [
    "setlist-node",
    "setlist-dispatcher",
    "setlist-search",
    "setlist-operator",
];

/// The user the images run as (distroless's `nonroot`), which the
/// operator's pods and the Helm chart ask for too.
const NONROOT: &str = "65532";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn image(binary: &str) -> String {
    format!("ghcr.io/setlist-dev/{binary}:{}", env!("CARGO_PKG_VERSION"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command and fails the test, with all it printed, unless it succeeds.
fn run_ok(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A statically linked program that prints the credentials it runs with and
/// every file of the image: the images have no shell to ask.
const PROBE: &str = r#"
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn walk(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if ["/proc", "/sys", "/dev"].iter().any(|skip| path == Path::new(skip)) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            walk(&path);
        } else if meta.is_file() {
            println!("file\t{}\t{}\t{}\t{:o}", path.display(), meta.len(), meta.uid(), meta.mode() & 0o7777);
        }
    }
}

fn main() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    for line in status.lines().filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:")) {
        println!("{line}");
    }
    walk(Path::new("/"));
}
"#;

fn build_probe(dir: &Path) -> PathBuf {
    let source = dir.join("probe.rs");
    let probe = dir.join("probe");
    std::fs::write(&source, PROBE).unwrap();
    run_ok(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args(["--edition", "2021", "-C", "opt-level=1", "-C"])
            .arg("target-feature=+crt-static")
            .arg(&source)
            .arg("-o")
            .arg(&probe),
        "compiling the static probe with rustc",
    );
    probe
}

/// What the probe saw: the Uid and Gid lines' fields, and each file's path,
/// size, owner and mode.
struct Probed {
    uid: Vec<String>,
    gid: Vec<String>,
    files: Vec<(String, u64, u32, u32)>,
}

fn parse_probe(output: &str) -> Probed {
    let ids = |prefix: &str| -> Vec<String> {
        output
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("the probe printed no {prefix} line:\n{output}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let files = output
        .lines()
        .filter_map(|l| l.strip_prefix("file\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                u32::from_str_radix(f[3], 8).unwrap(),
            )
        })
        .collect();
    Probed {
        uid: ids("Uid:"),
        gid: ids("Gid:"),
        files,
    }
}

#[test]
fn every_image_builds_and_runs_its_binary_as_nonroot() {
    let started = Instant::now();
    let podman = Command::new("podman").arg("--version").output();
    assert!(
        podman.as_ref().is_ok_and(|out| out.status.success()),
        "podman is not installed or does not run ({podman:?}): run scripts/install-sre-tools.sh \
         (Debian's podman, buildah, mmdebstrap); this test needs it and is not skipped without it"
    );
    // The binaries `cargo build --release --workspace --bins` made, which the
    // script stages (it leaves cargo alone with --no-cargo).
    let target_dir = binary(BINARIES[0])
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/<binary>")
        .to_path_buf();
    for name in BINARIES {
        binary(name);
    }
    let script = repo().join("scripts/build-images.sh");

    let build_started = Instant::now();
    let built = run_ok(
        Command::new("bash")
            .arg(&script)
            .arg("--no-cargo")
            .env("CARGO_TARGET_DIR", &target_dir),
        "scripts/build-images.sh --no-cargo",
    );
    let build_time = build_started.elapsed();
    eprintln!("{}", text(&built.stderr));
    println!("{}", text(&built.stdout));

    // How podman starts a container here (see the script's probe_run_flags).
    let flags = run_ok(
        Command::new("bash").arg(&script).arg("--print-run-flags"),
        "scripts/build-images.sh --print-run-flags (podman cannot run a container on this machine)",
    );
    let flags: Vec<String> = text(&flags.stdout).lines().map(str::to_owned).collect();
    assert!(
        flags.iter().any(|f| f == "run"),
        "--print-run-flags printed no `run`: {flags:?}"
    );
    let podman_run = || {
        let mut command = Command::new("podman");
        command.args(&flags).arg("--rm");
        command
    };

    let work = tempfile::tempdir().unwrap();
    let probe = build_probe(work.path());
    let mut report = Vec::new();
    for name in BINARIES {
        let image = image(name);

        // The binary starts (so the loader found every library) and prints
        // its usage.
        let help = run_ok(
            podman_run().arg(&image).arg("--help"),
            &format!("podman run {image} --help"),
        );
        let usage = text(&help.stdout);
        assert!(
            usage.contains(&format!("Usage: {name}")),
            "{image} --help printed no usage of {name}:\n{usage}"
        );

        let inspect = run_ok(
            Command::new("podman").args(["image", "inspect", &image]),
            &format!("podman image inspect {image}"),
        );
        let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
        let config = &inspect[0]["Config"];
        assert_eq!(
            config["User"],
            format!("{NONROOT}:{NONROOT}"),
            "{image}'s user"
        );
        assert_eq!(
            config["Entrypoint"][0],
            format!("/usr/local/bin/{name}"),
            "{image}'s entrypoint"
        );
        let size = inspect[0]["Size"].as_u64().expect("the image's size");

        // As the image's own user: the process's credentials, and the files.
        let probed = run_ok(
            podman_run()
                .arg("--volume")
                .arg(format!("{}:/setlist-probe:ro", probe.display()))
                .args(["--entrypoint", "/setlist-probe"])
                .arg(&image),
            &format!("the probe in {image}"),
        );
        let probed = parse_probe(&text(&probed.stdout));
        assert!(
            probed.uid.iter().all(|id| id == NONROOT) && probed.gid.iter().all(|id| id == NONROOT),
            "{image} runs as uid {:?}, gid {:?}, not {NONROOT}",
            probed.uid,
            probed.gid
        );
        let file = |path: &str| probed.files.iter().find(|f| f.0 == path);
        let entrypoint = format!("/usr/local/bin/{name}");
        let (_, binary_size, owner, mode) =
            *file(&entrypoint).unwrap_or_else(|| panic!("{image} has no {entrypoint}"));
        assert!(
            owner == 0 && mode & 0o022 == 0,
            "{entrypoint} in {image} must be root's and not writable by others: owner {owner}, mode {mode:o}"
        );
        let torch: Vec<&(String, u64, u32, u32)> = probed
            .files
            .iter()
            .filter(|f| {
                let file_name = f.0.rsplit('/').next().unwrap();
                ["libtorch", "libc10", "libcudart", "libcupti"]
                    .iter()
                    .any(|lib| file_name.starts_with(lib))
            })
            .collect();
        if name == "setlist-node" {
            assert!(
                file("/opt/libtorch/lib/libtorch_cpu.so").is_some(),
                "{image} lacks libtorch_cpu.so; it has {torch:?}"
            );
        } else {
            assert!(
                torch.is_empty(),
                "{image} carries libtorch, which only setlist-node links: {torch:?}"
            );
        }
        let shell = ["/bin/sh", "/usr/bin/sh", "/bin/bash"]
            .iter()
            .any(|sh| file(sh).is_some());
        report.push(format!(
            "{image:<46} {:>7.1} MB  binary {:>5.1} MB  libtorch {:>5.1} MB  {} files{}",
            size as f64 / 1e6,
            binary_size as f64 / 1e6,
            torch.iter().map(|f| f.1).sum::<u64>() as f64 / 1e6,
            probed.files.len(),
            if shell { ", a shell" } else { ", no shell" },
        ));
    }

    println!(
        "images (uncompressed, as podman counts them; each runs as {NONROOT}:{NONROOT}):\n{}",
        report.join("\n")
    );
    println!(
        "scripts/build-images.sh took {:.1} s; the whole test {:.1} s",
        build_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
