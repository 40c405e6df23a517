//! Stopping: on SIGTERM or Ctrl-C, with a bound on how long it may take,
//! and with the parent (`setlist up`) when it dies.

use std::ops::RangeInclusive;
use std::time::Duration;

/// What any service accepts as the bound on its graceful shutdown, in ms.
pub const TIMEOUT_MS: RangeInclusive<u64> = 100..=300_000;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Ends the process with `code` if it is still running `limit` from now: a
/// graceful shutdown whose broker is gone (a commit, leaving the group, a
/// flush) must not hang forever, whatever librdkafka does meanwhile.
pub fn exit_after(limit: Duration, code: i32) {
    std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(
                seconds = limit.as_secs_f64(),
                "the graceful shutdown did not finish in time; exiting now"
            );
            std::process::exit(code);
        })
        .expect("a thread starts");
}

/// The environment variable through which a supervisor (`setlist up`) names
/// itself to its children.
pub const PARENT_PID_VAR: &str = "SETLIST_PARENT_PID";

/// When a supervisor started this process (it set [`PARENT_PID_VAR`]), asks
/// the kernel to send SIGTERM when that parent dies (however it dies, even
/// by SIGKILL), so no child outlives `setlist up`; and exits at once if the
/// parent is gone already. Does nothing for a process started by hand or by
/// Kubernetes.
pub fn die_with_parent() {
    let Some(parent) = std::env::var(PARENT_PID_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    if let Err(error) = nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGTERM)) {
        tracing::warn!(%error, "cannot ask to be stopped with the parent process");
    }
    // The parent may have died before the request above took effect.
    if nix::unistd::getppid().as_raw() != parent {
        eprintln!("the process that started this one ({parent}) is gone; exiting");
        std::process::exit(1);
    }
}
