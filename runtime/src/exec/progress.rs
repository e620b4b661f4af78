//! Progress display of long runs.
//!
//! Contract: with [`ProgressMode::Auto`] a bar (stage, nodes done, ETA) is drawn on stderr only
//! when stderr is a terminal; [`ProgressMode::Quiet`] draws nothing. Nothing is ever written to
//! stdout, so machine-readable output stays clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// When to draw a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on stderr when it is a terminal.
    Auto,
    /// Never.
    Quiet,
}

/// A progress bar, or nothing.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A progress display over `total` nodes.
    pub fn new(mode: ProgressMode, total: u64) -> Progress {
        let show = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {pos}/{len} ops  {elapsed_precise} ETA {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        Progress { bar }
    }

    /// Names the stage now running.
    pub fn stage(&self, name: &str) {
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
        }
    }

    /// Sets the number of nodes done.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
