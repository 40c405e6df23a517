//! Progress bars on stderr for the library's long-running work.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use setlist_core::progress::Progress;
use std::sync::Mutex;

/// Draws one bar per phase; hidden when stderr is not a terminal, where the
/// phase names and messages are still printed as plain lines.
pub struct Bar {
    current: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new() -> Self {
        Bar {
            current: Mutex::new(None),
        }
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta} left)")
                .expect("the progress template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        if bar.is_hidden() {
            eprintln!("{what}: {total} to do");
        }
        if let Some(old) = self.current.lock().expect("progress lock").replace(bar) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &*self.current.lock().expect("progress lock") {
            bar.inc(n);
        }
    }

    fn message(&self, line: &str) {
        match &*self.current.lock().expect("progress lock") {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.current.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}
