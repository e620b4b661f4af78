//! `hecc serve`: an HTTP server that hosts compiled plans for many clients.
//!
//! A client opens a session by uploading its evaluation keys for one plan and receives a
//! session id and a bearer token; it submits encrypted batches as jobs, waits for them and
//! downloads the encrypted results. The server never sees a secret key.
//!
//! Durability: an upload is streamed to a temporary file, flushed, checked and renamed into
//! place before the database row that names it is written, and the job is acknowledged only
//! after that row is committed; a result is written the same way before its job is marked
//! done. A server killed at any point restarts with every acknowledged job either done or
//! queued again (a run cut short is rerun from its inputs).
//!
//! Isolation: a token is 256 random bits from the OS; the database keeps its SHA-256 only,
//! compared in constant time. A request for a session with a missing token gets 401, with a
//! wrong token (or an unknown session, indistinguishably) 403.
//!
//! Admission: a job needs its plan's memory estimate (live values plus keys); jobs start in
//! submission order while fewer than `concurrency` run and their estimates fit the memory
//! budget, and wait in the queue otherwise.
//!
//! TLS is not handled here: put the server behind a reverse proxy that terminates it.

mod http;
pub mod store;

use crate::run::{
    available_memory, full_hex, input_ciphertext_bytes, outputs_bytes, read_eval_keys, read_inputs,
    run_inputs, EvalKeySet, RunOptions, Session,
};
use hecc_runtime::exec::{ProgressEvent, ProgressSink};
use miette::{miette, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use store::{JobRow, Store};

pub use http::{JobInfo, Opened, PlanInfo, SessionInfo};
pub use store::{JobCounts, JobState};

/// How `hecc serve` runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The plans hosted, by the name clients use.
    pub plans: Vec<(String, PathBuf)>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the database, keys, inputs and results (created private).
    pub state: PathBuf,
    /// Jobs that run at once.
    pub concurrency: usize,
    /// Bytes the running jobs' estimates may add up to (`None`: nine tenths of what the
    /// process can get when the server starts).
    pub memory_budget: Option<u64>,
    /// Largest upload accepted, bytes (`None`: what each plan's files can need).
    pub max_upload: Option<u64>,
    /// Host plans below 128-bit security (tests only).
    pub insecure_ok: bool,
    /// Most sessions open at once (opening one needs no token: this bounds what anyone who
    /// reaches the server can store).
    pub max_sessions: usize,
    /// Uploads received and checked at once (the others wait).
    pub max_uploads: usize,
}

/// What the server reports as it runs (the CLI prints these).
#[derive(Clone, Debug)]
pub enum ServeEvent {
    /// Listening on this address.
    Listening {
        /// The bound address (with the port chosen when the configuration gave 0).
        addr: SocketAddr,
        /// The memory budget for running jobs, bytes.
        budget: u64,
    },
    /// Jobs found running in the database at start, queued again.
    Requeued(usize),
    /// A job started.
    Started {
        /// Job id.
        job: String,
        /// Plan name.
        plan: String,
        /// Attempt number.
        attempt: i64,
    },
    /// A job finished.
    Finished {
        /// Job id.
        job: String,
        /// Run seconds.
        seconds: f64,
        /// Images in the batch.
        images: i64,
    },
    /// A job failed.
    Failed {
        /// Job id.
        job: String,
        /// Why.
        error: String,
    },
    /// Shutting down: no new requests or jobs; waiting for the running ones.
    Stopping {
        /// Jobs still running.
        running: usize,
    },
}

/// Receives [`ServeEvent`]s.
pub type EventSink = Arc<dyn Fn(ServeEvent) + Send + Sync>;

/// A hosted plan.
pub(crate) struct Hosted {
    pub name: String,
    pub session: Arc<Session>,
    pub digest: String,
    /// Memory a job of this plan needs: the plan's estimate (live values and keys).
    pub need: u64,
    /// Largest evaluation-key upload accepted.
    pub key_limit: u64,
    /// Largest inputs upload accepted.
    pub input_limit: u64,
}

#[derive(Default)]
struct Sched {
    running: usize,
    running_bytes: u64,
    /// Per running job: nodes done and total.
    progress: HashMap<String, (u64, u64)>,
}

/// The server's shared state.
pub(crate) struct Shared {
    pub cfg: ServeConfig,
    pub plans: HashMap<String, Arc<Hosted>>,
    pub store: Mutex<Store>,
    pub budget: u64,
    sched: Mutex<Sched>,
    wake: Condvar,
    /// Bumped on every job state change (waiters re-read the job).
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Evaluation keys of recent sessions, with the bytes they hold.
    keys: Mutex<Vec<(String, Arc<EvalKeySet>, u64)>>,
    pub stopping: AtomicBool,
    pub events: EventSink,
    /// Permits for uploads in progress.
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    pub fn dir(&self, what: &str) -> PathBuf {
        self.cfg.state.join(what)
    }

    pub fn session_dir(&self, id: &str) -> PathBuf {
        self.dir("sessions").join(id)
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir("jobs").join(id)
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the dispatcher and every waiter.
    pub fn notify(&self) {
        self.wake.notify_all();
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Nodes done and total of a running job.
    pub fn progress(&self, job: &str) -> Option<(u64, u64)> {
        self.sched().progress.get(job).copied()
    }

    /// Running jobs and the bytes their estimates add up to.
    pub fn running(&self) -> (usize, u64) {
        let s = self.sched();
        (s.running, s.running_bytes)
    }

    /// The cached evaluation keys of `session`, or loads them. Idle key sets (no running job
    /// holds them) are dropped first, down to fewer than `concurrency` sets and to what the
    /// memory budget leaves beside the running jobs: the budget counts a job's own keys in its
    /// plan's estimate, not the idle sets kept for the next jobs.
    fn keys_of(&self, session: &str, hosted: &Hosted) -> Result<Arc<EvalKeySet>> {
        {
            let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = cache.iter().position(|(s, _, _)| s == session) {
                let entry = cache.remove(i);
                let keys = entry.1.clone();
                cache.push(entry);
                return Ok(keys);
            }
            let (_, running_bytes) = self.running();
            loop {
                let idle: u64 = cache
                    .iter()
                    .filter(|(_, k, _)| Arc::strong_count(k) == 1)
                    .map(|(_, _, b)| *b)
                    .sum();
                let over_count = cache.len() >= self.cfg.concurrency.max(1);
                let over_budget = running_bytes.saturating_add(idle) > self.budget;
                if !(over_count || over_budget) {
                    break;
                }
                match cache.iter().position(|(_, k, _)| Arc::strong_count(k) == 1) {
                    Some(i) => {
                        cache.remove(i);
                    }
                    None => break,
                }
            }
        }
        let path = self.session_dir(session).join(crate::run::EVAL_KEYS_FILE);
        let keys = Arc::new(read_eval_keys(&hosted.session, &path)?);
        let bytes = hosted.session.plan.report.keys.resident_bytes();
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.iter().any(|(s, _, _)| s == session) {
            cache.push((session.to_string(), keys.clone(), bytes));
        }
        Ok(keys)
    }

    /// Forgets the cached keys of a closed session.
    pub fn drop_keys(&self, session: &str) {
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(s, _, _)| s != session);
    }
}

/// Random bytes from the OS, as hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    full_hex(&b)
}

/// Opens the hosted plans and checks their names.
fn host_plans(cfg: &ServeConfig) -> Result<HashMap<String, Arc<Hosted>>> {
    if cfg.plans.is_empty() {
        return Err(miette!("give at least one plan to serve"));
    }
    let mut out = HashMap::new();
    for (name, path) in &cfg.plans {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            return Err(miette!(
                help = "name plans NAME=PATH with letters, digits, '-', '_' or '.'",
                "plan name {name:?} cannot appear in a URL path"
            ));
        }
        let session = Session::open_with_security(path, cfg.insecure_ok)?;
        let k = &session.plan.report.keys;
        let key_file = k.public_key
            + k.relin_key
            + k.galois_keys
            + k.bootstrap
                .as_ref()
                .map_or(0, |b| b.galois_keys + b.encapsulation_keys);
        let need = session
            .plan
            .report
            .schedule
            .as_ref()
            .map_or(k.resident_bytes(), |s| s.total_bytes);
        let slack = |b: u64| b + b / 4 + (1 << 20);
        let hosted = Hosted {
            name: name.clone(),
            digest: full_hex(&session.digest),
            need,
            key_limit: slack(key_file),
            // Full-size ciphertexts: inputs encrypted under the public key (no seeded halves).
            input_limit: slack(input_ciphertext_bytes(&session)),
            session: Arc::new(session),
        };
        if out.insert(name.clone(), Arc::new(hosted)).is_some() {
            return Err(miette!("two plans are named {name:?}"));
        }
    }
    Ok(out)
}

/// Runs the server until SIGINT or SIGTERM; then stops taking requests and jobs and waits for
/// the running jobs to finish.
pub fn serve(cfg: ServeConfig, events: EventSink) -> Result<()> {
    let plans = host_plans(&cfg)?;
    crate::files::create_private_dir(&cfg.state)?;
    // One server per state directory: a second one would requeue the first one's running jobs
    // and delete its uploads in progress. The lock goes with the process.
    let lock_path = cfg.state.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| miette!("cannot open {}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            miette!(
                help = "stop the other server, or give this one another --state",
                "{}: another hecc serve is using this state directory",
                cfg.state.display()
            )
        },
    )?;
    for d in ["sessions", "jobs", "tmp"] {
        crate::files::create_private_dir(&cfg.state.join(d))?;
    }
    // Uploads cut short by a crash.
    if let Ok(entries) = std::fs::read_dir(cfg.state.join("tmp")) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let store = Store::open(&cfg.state.join("hecc-serve.sqlite"))?;
    let requeued = store.requeue_running()?;
    if requeued > 0 {
        events(ServeEvent::Requeued(requeued));
    }
    let budget = cfg
        .memory_budget
        .or_else(|| available_memory().map(|b| b / 10 * 9))
        .unwrap_or(u64::MAX);
    for h in plans.values() {
        if h.need > budget {
            return Err(miette!(
                help = "give more memory with --memory-budget, or serve a plan compiled for \
                        fewer images per batch",
                "plan {} needs {:.2} GiB per job and the memory budget is {:.2} GiB",
                h.name,
                gib(h.need),
                gib(budget)
            ));
        }
    }
    let shared = Arc::new(Shared {
        plans,
        store: Mutex::new(store),
        budget,
        sched: Mutex::new(Sched::default()),
        wake: Condvar::new(),
        changed: tokio::sync::watch::channel(0).0,
        keys: Mutex::new(Vec::new()),
        stopping: AtomicBool::new(false),
        events,
        uploads: Arc::new(tokio::sync::Semaphore::new(cfg.max_uploads.max(1))),
        cfg,
    });
    let dispatcher = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("hecc-dispatch".into())
            .spawn(move || dispatch(&shared))
            .map_err(|e| miette!("cannot start the job dispatcher: {e}"))?
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| miette!("cannot start the server's runtime: {e}"))?;
    let served = rt.block_on(http::run(shared.clone()));
    shared.stopping.store(true, Ordering::SeqCst);
    let (running, _) = shared.running();
    (shared.events)(ServeEvent::Stopping { running });
    shared.notify();
    let _ = dispatcher.join();
    // Wait for the running jobs: their results are written before they are marked done.
    loop {
        let (running, _) = shared.running();
        if running == 0 {
            break;
        }
        let guard = shared.sched();
        let _ = shared
            .wake
            .wait_timeout(guard, std::time::Duration::from_millis(200));
    }
    drop(lock);
    served
}

pub(crate) fn gib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 30)
}

/// Starts queued jobs in submission order while a worker is free and their memory fits.
fn dispatch(shared: &Arc<Shared>) {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut started = false;
        let (running, running_bytes) = shared.running();
        if running < shared.cfg.concurrency.max(1) {
            let next = shared.store().next_queued();
            match next {
                Ok(Some(job)) => {
                    let need = shared.plans.get(&job.plan).map_or(0, |h| h.need);
                    if running == 0 || running_bytes.saturating_add(need) <= shared.budget {
                        start(shared, job, need);
                        started = true;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    (shared.events)(ServeEvent::Failed {
                        job: String::new(),
                        error: format!("{e}"),
                    });
                }
            }
        }
        if !started {
            let guard = shared.sched();
            let _ = shared
                .wake
                .wait_timeout(guard, std::time::Duration::from_millis(500));
        }
    }
}

fn start(shared: &Arc<Shared>, job: JobRow, need: u64) {
    if let Err(e) = shared.store().set_running(&job.id) {
        (shared.events)(ServeEvent::Failed {
            job: job.id.clone(),
            error: format!("{e}"),
        });
        return;
    }
    {
        let mut s = shared.sched();
        s.running += 1;
        s.running_bytes += need;
        s.progress.insert(job.id.clone(), (0, 0));
    }
    (shared.events)(ServeEvent::Started {
        job: job.id.clone(),
        plan: job.plan.clone(),
        attempt: job.attempts + 1,
    });
    let worker = shared.clone();
    let job_id = job.id.clone();
    let spawned = std::thread::Builder::new()
        .name("hecc-job".into())
        .spawn(move || {
            let id = job.id.clone();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(&worker, &job)))
                    .unwrap_or_else(|_| Err(miette!("the run panicked (a bug in hecc)")));
            let recorded = match &outcome {
                Ok(seconds) => worker.store().set_done(&id, *seconds),
                Err(e) => worker.store().set_failed(&id, &http::error_text(e)),
            };
            let event = match (outcome, recorded) {
                (Ok(seconds), Ok(())) => ServeEvent::Finished {
                    job: id.clone(),
                    seconds,
                    images: job.images,
                },
                (Err(e), _) | (_, Err(e)) => ServeEvent::Failed {
                    job: id.clone(),
                    error: http::error_text(&e),
                },
            };
            (worker.events)(event);
            {
                let mut s = worker.sched();
                s.running -= 1;
                s.running_bytes -= need;
                s.progress.remove(&id);
            }
            worker.notify();
        });
    if let Err(e) = spawned {
        // Left queued for a later try.
        let _ = shared.store().requeue(&job_id);
        (shared.events)(ServeEvent::Failed {
            job: job_id.clone(),
            error: format!("cannot start a job thread: {e}"),
        });
        let mut s = shared.sched();
        s.running -= 1;
        s.running_bytes -= need;
        s.progress.remove(&job_id);
    }
}

/// Runs one job: keys (cached per session), inputs from disk, the plan, the result written
/// atomically. Returns the run's seconds.
fn run_job(shared: &Arc<Shared>, job: &JobRow) -> Result<f64> {
    let hosted = shared
        .plans
        .get(&job.plan)
        .ok_or_else(|| miette!("plan {} is no longer hosted by this server", job.plan))?;
    let session = shared
        .store()
        .session(&job.session)?
        .ok_or_else(|| miette!("the job's session was closed"))?;
    if session.plan_digest != hosted.digest {
        return Err(miette!(
            "plan {} was replaced by another plan since this session was opened; open a new \
             session",
            job.plan
        ));
    }
    let keys = shared.keys_of(&job.session, hosted)?;
    let dir = shared.job_dir(&job.id);
    let inputs = read_inputs(&hosted.session, &dir.join(INPUTS_FILE))?;
    let progress = {
        let shared = shared.clone();
        let id = job.id.clone();
        ProgressSink::new(move |e: &ProgressEvent<'_>| {
            let mut s = shared.sched();
            let entry = s.progress.entry(id.clone()).or_insert((0, 0));
            match e {
                ProgressEvent::Start { nodes, resumed } => *entry = (*resumed, *nodes),
                ProgressEvent::Nodes { done, .. } => entry.0 = *done,
                ProgressEvent::Stage { .. } | ProgressEvent::Finish => {}
            }
        })
    };
    let (outs, report) = run_inputs(
        &hosted.session,
        inputs,
        &keys,
        &RunOptions {
            progress: Some(progress),
            ..Default::default()
        },
    )?;
    crate::files::write_atomic(&dir.join(OUTPUTS_FILE), &outputs_bytes(&outs)?)?;
    Ok(report.seconds)
}

/// File name of a job's inputs in its directory.
pub(crate) const INPUTS_FILE: &str = "inputs.ct";
/// File name of a job's result in its directory.
pub(crate) const OUTPUTS_FILE: &str = "outputs.ct";

/// Resident and peak resident bytes of this process.
pub(crate) fn resident() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The path of a file under the state directory, for messages.
pub(crate) fn shown(p: &Path) -> String {
    p.display().to_string()
}
