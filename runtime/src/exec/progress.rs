//! Progress of long runs, reported as events to a caller-supplied sink.
//!
//! Contract: the executor never draws or prints anything. When [`crate::exec::ExecOptions`]
//! carries a [`ProgressSink`], the run calls it with [`ProgressEvent::Start`] once, then
//! [`ProgressEvent::Stage`] whenever the stage of the running nodes changes and
//! [`ProgressEvent::Nodes`] after every wavefront, and [`ProgressEvent::Finish`] once at the end
//! (also when the run fails part way, so a display can be cleared). The sink is called from the
//! thread that drives the run, never from a worker, so it may be slow without holding workers
//! up; it should still return quickly, as the run waits for it.

use std::fmt;
use std::sync::Arc;

/// One progress report of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressEvent<'a> {
    /// The run starts with this many circuit nodes to evaluate.
    Start {
        /// Nodes in the circuit.
        nodes: u64,
        /// Nodes already done by the checkpoint the run resumes (0 for a fresh run).
        resumed: u64,
    },
    /// The running nodes now belong to this stage (a layer, or a level).
    Stage {
        /// The stage's name.
        name: &'a str,
    },
    /// Nodes evaluated so far.
    Nodes {
        /// Nodes done.
        done: u64,
        /// Nodes in the circuit.
        total: u64,
    },
    /// The run has ended (successfully or not).
    Finish,
}

/// Where a run sends its progress events.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(&ProgressEvent<'_>) + Send + Sync>);

impl ProgressSink {
    /// A sink calling `f` with every event.
    pub fn new(f: impl Fn(&ProgressEvent<'_>) + Send + Sync + 'static) -> ProgressSink {
        ProgressSink(Arc::new(f))
    }

    /// Sends one event.
    pub fn emit(&self, e: &ProgressEvent<'_>) {
        (self.0)(e)
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink(..)")
    }
}

/// The executor's side: sends events when a sink is set, and [`ProgressEvent::Finish`] when
/// dropped, so an error return still ends the display.
pub(crate) struct Progress<'a> {
    sink: Option<&'a ProgressSink>,
}

impl<'a> Progress<'a> {
    /// Starts reporting a run of `nodes` nodes, `resumed` of them done by a checkpoint.
    pub(crate) fn start(sink: Option<&'a ProgressSink>, nodes: u64, resumed: u64) -> Progress<'a> {
        if let Some(s) = sink {
            s.emit(&ProgressEvent::Start { nodes, resumed });
        }
        Progress { sink }
    }

    /// The running stage changed.
    pub(crate) fn stage(&self, name: &str) {
        if let Some(s) = self.sink {
            s.emit(&ProgressEvent::Stage { name });
        }
    }

    /// `done` of `total` nodes have run.
    pub(crate) fn nodes(&self, done: u64, total: u64) {
        if let Some(s) = self.sink {
            s.emit(&ProgressEvent::Nodes { done, total });
        }
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sink {
            s.emit(&ProgressEvent::Finish);
        }
    }
}
