//! The HTTP API of `hecc serve` (JSON answers; files as `application/octet-stream`):
//!
//! | method and path                               | what                                     |
//! |-----------------------------------------------|------------------------------------------|
//! | `GET /health`                                 | liveness                                 |
//! | `GET /metrics`                                | Prometheus text: queue, jobs, memory     |
//! | `GET /v1/plans`                               | hosted plans, their limits and needs     |
//! | `POST /v1/plans/{plan}/sessions`              | body: evaluation keys; answers id, token |
//! | `GET /v1/sessions/{id}`                       | the session: plan, key id, upload limit  |
//! | `DELETE /v1/sessions/{id}`                    | closes a session, removes its files      |
//! | `POST /v1/sessions/{id}/jobs`                 | body: encrypted inputs; answers a job    |
//! | `GET /v1/sessions/{id}/jobs`                  | the session's jobs                       |
//! | `GET /v1/sessions/{id}/jobs/{job}?wait=S`     | a job's state, waiting up to S seconds   |
//! | `GET /v1/sessions/{id}/jobs/{job}/result`     | the encrypted outputs of a done job      |
//!
//! Session routes need `Authorization: Bearer TOKEN`.

use super::store::{now, JobRow, JobState, SessionRow};
use super::{random_hex, resident, shown, Hosted, Shared, INPUTS_FILE, OUTPUTS_FILE};
use crate::run::{check_inputs_file, eval_keys_from_bytes, full_hex, EVAL_KEYS_FILE};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

type St = State<Arc<Shared>>;

/// An error answer: status and a JSON body `{"error": ..., "help": ...}`.
pub(crate) struct ApiError {
    status: StatusCode,
    error: String,
    help: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> ApiError {
        self.help = Some(help.into());
        self
    }

    fn internal(e: &miette::Report) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error_text(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "help": self.help });
        (self.status, Json(body)).into_response()
    }
}

pub(crate) use crate::report_text::error_line as error_text;

type ApiResult<T> = Result<T, ApiError>;

pub(crate) async fn run(shared: Arc<Shared>) -> miette::Result<()> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/plans", get(plans))
        .route("/v1/plans/{plan}/sessions", post(open_session))
        .route(
            "/v1/sessions/{sid}",
            get(session_info).delete(close_session),
        )
        .route("/v1/sessions/{sid}/jobs", post(submit).get(list_jobs))
        .route("/v1/sessions/{sid}/jobs/{job}", get(job_status))
        .route("/v1/sessions/{sid}/jobs/{job}/result", get(result))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(shared.cfg.listen)
        .await
        .map_err(|e| miette::miette!("cannot listen on {}: {e}", shared.cfg.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| miette::miette!("cannot read the bound address: {e}"))?;
    (shared.events)(super::ServeEvent::Listening {
        addr,
        budget: shared.budget,
    });
    let shared = shared.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // No job starts and no upload is taken from here on, while axum drains the
            // requests in flight.
            shared.stopping.store(true, Ordering::SeqCst);
            shared.notify();
        })
        .await
        .map_err(|e| miette::miette!("the server stopped: {e}"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(sh): St) -> ApiResult<Response> {
    let c = sh.store().counts().map_err(|e| ApiError::internal(&e))?;
    let (running, running_bytes) = sh.running();
    let (rss, hwm) = resident();
    let mut t = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: String| {
        t.push_str(&format!(
            "# HELP hecc_{name} {help}\n# TYPE hecc_{name} {kind}\nhecc_{name} {v}\n"
        ));
    };
    put(
        "jobs_queued",
        "gauge",
        "Jobs waiting to run.",
        c.queued.to_string(),
    );
    put(
        "jobs_running",
        "gauge",
        "Jobs running.",
        running.to_string(),
    );
    put("jobs_done", "counter", "Jobs finished.", c.done.to_string());
    put(
        "jobs_failed",
        "counter",
        "Jobs failed.",
        c.failed.to_string(),
    );
    put(
        "job_seconds_sum",
        "gauge",
        "Run seconds of the finished jobs.",
        format!("{:.3}", c.done_seconds),
    );
    put(
        "job_seconds_count",
        "gauge",
        "Finished jobs counted in hecc_job_seconds_sum.",
        c.done.to_string(),
    );
    put(
        "memory_budget_bytes",
        "gauge",
        "Memory the running jobs may need.",
        sh.budget.to_string(),
    );
    put(
        "memory_admitted_bytes",
        "gauge",
        "Memory estimates of the running jobs.",
        running_bytes.to_string(),
    );
    put(
        "resident_bytes",
        "gauge",
        "Resident memory of the server.",
        rss.unwrap_or(0).to_string(),
    );
    put(
        "resident_peak_bytes",
        "gauge",
        "Peak resident memory of the server.",
        hwm.unwrap_or(0).to_string(),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], t).into_response())
}

/// A hosted plan as `GET /v1/plans` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanInfo {
    /// Name in URLs.
    pub name: String,
    /// Model name.
    pub model: String,
    /// Plan digest (hex): key and ciphertext files are bound to it.
    pub digest: String,
    /// Images per batch.
    pub batch: u32,
    /// Memory one job needs, bytes.
    pub job_bytes: u64,
    /// Largest evaluation-key upload, bytes.
    pub max_key_bytes: u64,
    /// Largest inputs upload, bytes.
    pub max_input_bytes: u64,
}

fn limit(sh: &Shared, plan_limit: u64) -> u64 {
    sh.cfg.max_upload.map_or(plan_limit, |m| m.min(plan_limit))
}

fn plan_info(sh: &Shared, h: &Hosted) -> PlanInfo {
    PlanInfo {
        name: h.name.clone(),
        model: h.session.plan.model.clone(),
        digest: h.digest.clone(),
        batch: h.session.plan.batch,
        job_bytes: h.need,
        max_key_bytes: limit(sh, h.key_limit),
        max_input_bytes: limit(sh, h.input_limit),
    }
}

async fn plans(State(sh): St) -> Json<Vec<PlanInfo>> {
    let mut v: Vec<PlanInfo> = sh.plans.values().map(|h| plan_info(&sh, h)).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Json(v)
}

/// Streams a request body into a new file under the state's `tmp/`, refusing it (413) when
/// its declared or actual length passes `max`. Returns the file and its length.
/// Reads and discards a request body, at most `max` bytes of it.
async fn drain(body: Body, max: u64) {
    let mut body = body;
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > max {
            break;
        }
    }
}

async fn receive(sh: &Shared, headers: &HeaderMap, body: Body, max: u64) -> ApiResult<TmpFile> {
    let too_big = |n: u64| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload has {n} bytes; this server accepts at most {max} here"),
        )
        .help("check that the file was made for this plan (hecc client plans shows the limits)")
    };
    if let Some(n) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n > max {
            return Err(too_big(n));
        }
    }
    if sh.stopping.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let permit = sh.uploads.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
    })?;
    let path = sh.dir("tmp").join(random_hex(16));
    let mut tmp = TmpFile {
        path,
        len: 0,
        _permit: permit,
    };
    let mut file = tokio::fs::File::create(&tmp.path)
        .await
        .map_err(|e| io_error("cannot store the upload", e))?;
    let mut body = body;
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the upload broke off: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if len > max {
                return Err(too_big(len));
            }
            file.write_all(&data)
                .await
                .map_err(|e| io_error("cannot store the upload", e))?;
        }
    }
    file.sync_all()
        .await
        .map_err(|e| io_error("cannot store the upload", e))?;
    tmp.len = len;
    Ok(tmp)
}

/// A file under `tmp/`, removed when dropped unless moved into place; it holds an upload
/// permit until its check is done.
struct TmpFile {
    path: PathBuf,
    len: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl TmpFile {
    /// Renames it to `to` (a new directory under the state), flushing the directory.
    fn place(mut self, to: &std::path::Path) -> ApiResult<()> {
        if let Some(dir) = to.parent() {
            crate::files::create_private_dir(dir).map_err(|e| ApiError::internal(&e))?;
        }
        std::fs::rename(&self.path, to).map_err(|e| io_error("cannot store the upload", e))?;
        if let Some(dir) = to.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_error(what: &str, e: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
}

/// Runs blocking work (file checks, the database) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))?
}

/// The answer to `POST /v1/plans/{plan}/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Opened {
    /// Session id.
    pub session: String,
    /// Bearer token for the session's routes (shown once; the server keeps its hash).
    pub token: String,
    /// Plan name.
    pub plan: String,
    /// Evaluation keys' id (hex).
    pub key_id: String,
}

async fn open_session(
    State(sh): St,
    UrlPath(plan): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Opened>)> {
    let hosted = sh.plans.get(&plan).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("this server hosts no plan named {plan:?}"),
        )
    })?;
    let full = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this server holds its most sessions ({}); try again when one is closed",
                sh.cfg.max_sessions
            ),
        )
    };
    let open = sh
        .store()
        .session_count()
        .map_err(|e| ApiError::internal(&e))?;
    if open >= sh.cfg.max_sessions as u64 {
        // Read (and drop) what the client is sending, so it gets the answer rather than a
        // broken pipe.
        drain(body, limit(&sh, hosted.key_limit)).await;
        return Err(full());
    }
    let tmp = receive(&sh, &headers, body, limit(&sh, hosted.key_limit)).await?;
    let sh2 = sh.clone();
    let opened = blocking(move || {
        let bytes = std::fs::read(&tmp.path).map_err(|e| io_error("cannot read the upload", e))?;
        let keys = eval_keys_from_bytes(&hosted.session, &bytes, "the uploaded evaluation keys")
            .and_then(|k| {
                k.check_covers(&hosted.session, "the uploaded evaluation keys")?;
                Ok(k)
            })
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, error_text(&e)))?;
        drop(bytes);
        let id = random_hex(16);
        let token = random_hex(32);
        tmp.place(&sh2.session_dir(&id).join(EVAL_KEYS_FILE))?;
        let row = SessionRow {
            id: id.clone(),
            plan: hosted.name.clone(),
            plan_digest: hosted.digest.clone(),
            token_sha256: Sha256::digest(token.as_bytes()).to_vec(),
            key_id: full_hex(&keys.id),
            created: now(),
        };
        {
            // Counted again under the lock: uploads may have raced past the first check.
            let store = sh2.store();
            let open = store.session_count().map_err(|e| ApiError::internal(&e))?;
            if open >= sh2.cfg.max_sessions as u64 {
                drop(store);
                let _ = std::fs::remove_dir_all(sh2.session_dir(&id));
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this server holds its most sessions; try again when one is closed",
                ));
            }
            store
                .insert_session(&row)
                .map_err(|e| ApiError::internal(&e))?;
        }
        Ok(Opened {
            session: id,
            token,
            plan: hosted.name.clone(),
            key_id: row.key_id,
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

/// The session `sid` when the request carries its token: 401 without a token, 403 with a
/// token that is not this session's (or for a session that does not exist).
fn authorize(sh: &Shared, headers: &HeaderMap, sid: &str) -> ApiResult<SessionRow> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this route needs the session's token (Authorization: Bearer TOKEN)",
            )
        })?;
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "no session with this id holds this token",
        )
    };
    let row = sh
        .store()
        .session(sid)
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(forbidden)?;
    let hash = Sha256::digest(token.as_bytes());
    let same = hash.len() == row.token_sha256.len()
        && hash
            .iter()
            .zip(&row.token_sha256)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(row)
    } else {
        Err(forbidden())
    }
}

/// The answer to `GET /v1/sessions/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub session: String,
    /// Plan name.
    pub plan: String,
    /// Evaluation keys' id (hex).
    pub key_id: String,
    /// Largest inputs upload, bytes.
    pub max_input_bytes: u64,
    /// Jobs of the session.
    pub jobs: usize,
}

async fn session_info(
    State(sh): St,
    UrlPath(sid): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<SessionInfo>> {
    let row = authorize(&sh, &headers, &sid)?;
    let jobs = sh
        .store()
        .jobs_of(&row.id)
        .map_err(|e| ApiError::internal(&e))?
        .len();
    let max_input_bytes = sh
        .plans
        .get(&row.plan)
        .map_or(0, |h| limit(&sh, h.input_limit));
    Ok(Json(SessionInfo {
        session: row.id,
        plan: row.plan,
        key_id: row.key_id,
        max_input_bytes,
        jobs,
    }))
}

async fn close_session(
    State(sh): St,
    UrlPath(sid): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let row = authorize(&sh, &headers, &sid)?;
    let sh2 = sh.clone();
    blocking(move || {
        let store = sh2.store();
        let jobs = store.jobs_of(&row.id).map_err(|e| ApiError::internal(&e))?;
        if jobs.iter().any(|j| j.state == JobState::Running) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "a job of this session is running; close it when the job has finished",
            ));
        }
        store
            .delete_session(&row.id)
            .map_err(|e| ApiError::internal(&e))?;
        drop(store);
        sh2.drop_keys(&row.id);
        for j in &jobs {
            let _ = std::fs::remove_dir_all(sh2.job_dir(&j.id));
        }
        let _ = std::fs::remove_dir_all(sh2.session_dir(&row.id));
        Ok(())
    })
    .await?;
    sh.notify();
    Ok(StatusCode::NO_CONTENT)
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobInfo {
    /// Job id.
    pub job: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Images in the batch.
    pub images: i64,
    /// Jobs ahead of it in the queue (queued jobs).
    #[serde(default)]
    pub ahead: Option<u64>,
    /// Nodes of the plan done and in all (running jobs).
    #[serde(default)]
    pub progress: Option<(u64, u64)>,
    /// Run seconds (done jobs).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Times it was started.
    pub attempts: i64,
}

fn job_info(sh: &Shared, j: &JobRow) -> JobInfo {
    let ahead = if j.state == JobState::Queued {
        sh.store().queued_before(j.seq).ok()
    } else {
        None
    };
    JobInfo {
        job: j.id.clone(),
        state: j.state.name().to_string(),
        images: j.images,
        ahead,
        progress: sh.progress(&j.id),
        seconds: j.seconds,
        error: j.error.clone(),
        attempts: j.attempts,
    }
}

async fn submit(
    State(sh): St,
    UrlPath(sid): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobInfo>)> {
    let row = authorize(&sh, &headers, &sid)?;
    let hosted = sh.plans.get(&row.plan).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::GONE,
            format!("this server no longer hosts plan {:?}", row.plan),
        )
    })?;
    if row.plan_digest != hosted.digest {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "plan {:?} was replaced since this session was opened; open a new session",
                row.plan
            ),
        ));
    }
    let tmp = receive(&sh, &headers, body, limit(&sh, hosted.input_limit)).await?;
    let sh2 = sh.clone();
    let info = blocking(move || {
        // Read in pieces: the check holds one section at a time, not the upload.
        let (meta, key_id) = check_inputs_file(&hosted.session, &tmp.path, "the uploaded inputs")
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, error_text(&e)))?;
        if full_hex(&key_id) != row.key_id {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the uploaded inputs were encrypted for other keys than this session's",
            )
            .help("encrypt with the key set whose evaluation keys opened this session"));
        }
        let id = random_hex(16);
        let len = tmp.len;
        tmp.place(&sh2.job_dir(&id).join(INPUTS_FILE))?;
        let job = sh2
            .store()
            .insert_job(&id, &row, meta.images as i64, len as i64)
            .map_err(|e| ApiError::internal(&e))?;
        Ok(job_info(&sh2, &job))
    })
    .await?;
    sh.notify();
    Ok((StatusCode::ACCEPTED, Json(info)))
}

async fn list_jobs(
    State(sh): St,
    UrlPath(sid): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<JobInfo>>> {
    let row = authorize(&sh, &headers, &sid)?;
    let jobs = sh
        .store()
        .jobs_of(&row.id)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(jobs.iter().map(|j| job_info(&sh, j)).collect()))
}

#[derive(Deserialize)]
struct Wait {
    wait: Option<f64>,
}

fn find_job(sh: &Shared, row: &SessionRow, job: &str) -> ApiResult<JobRow> {
    sh.store()
        .job(job)
        .map_err(|e| ApiError::internal(&e))?
        .filter(|j| j.session == row.id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("this session has no job {job:?}"),
            )
        })
}

async fn job_status(
    State(sh): St,
    UrlPath((sid, job)): UrlPath<(String, String)>,
    Query(q): Query<Wait>,
    headers: HeaderMap,
) -> ApiResult<Json<JobInfo>> {
    let row = authorize(&sh, &headers, &sid)?;
    let wait = q.wait.unwrap_or(0.0);
    if !wait.is_finite() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "wait must be a number of seconds",
        ));
    }
    let wait = wait.clamp(0.0, 300.0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs_f64(wait);
    let mut changed = sh.changed.subscribe();
    loop {
        let j = find_job(&sh, &row, &job)?;
        if j.state.finished() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(job_info(&sh, &j)));
        }
        // Wake on a state change, and at least once a second for progress.
        let tick = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout_at(deadline.min(tick), changed.changed()).await;
    }
}

async fn result(
    State(sh): St,
    UrlPath((sid, job)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = authorize(&sh, &headers, &sid)?;
    let j = find_job(&sh, &row, &job)?;
    match j.state {
        JobState::Done => {}
        JobState::Failed => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "the job failed: {}",
                    j.error.unwrap_or_else(|| "no reason recorded".into())
                ),
            ))
        }
        JobState::Queued | JobState::Running => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("the job is {}; its result is not ready", j.state.name()),
            ))
        }
    }
    let path = sh.job_dir(&j.id).join(OUTPUTS_FILE);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| io_error(&format!("cannot read the job's result {}", shown(&path)), e))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
