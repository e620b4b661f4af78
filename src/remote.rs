//! The client of a `hecc serve` server: opens a session with the evaluation keys, submits
//! encrypted inputs, waits for the jobs and downloads their encrypted results. Secret keys
//! never leave the client; a session file holds the session's id and bearer token and is
//! written readable by its owner only.
//!
//! Plain `http://` is built in; `https://` needs the `client-tls` feature (the server itself
//! expects TLS to be terminated in front of it).

use crate::files::{check_private, read_file, write_atomic, write_private};
use crate::run::{full_hex, ContainerRef, FileKind};
use miette::{miette, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

pub use crate::serve::{JobInfo, Opened, PlanInfo, SessionInfo};

/// A connection to a server.
pub struct Remote {
    base: String,
    agent: ureq::Agent,
}

/// An open session, as saved in a session file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteSession {
    /// The server's base URL.
    pub server: String,
    /// The plan's name on the server.
    pub plan: String,
    /// Session id.
    pub session: String,
    /// Bearer token.
    pub token: String,
    /// The evaluation keys' id (hex): results are checked to be made for them.
    pub key_id: String,
}

/// Called with bytes sent so far and in all.
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// A request body: a file streamed from disk or bytes in memory.
struct Upload<'a> {
    reader: Box<dyn Read + 'a>,
    len: u64,
    progress: Progress<'a>,
}

impl<'a> Upload<'a> {
    fn file(path: &Path, progress: Progress<'a>) -> Result<Upload<'a>> {
        let file = std::fs::File::open(path)
            .map_err(|e| miette!("cannot read {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| miette!("cannot read {}: {e}", path.display()))?
            .len();
        Ok(Upload {
            reader: Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
            len,
            progress,
        })
    }

    fn bytes(bytes: &'a [u8], progress: Progress<'a>) -> Upload<'a> {
        Upload {
            reader: Box::new(bytes),
            len: bytes.len() as u64,
            progress,
        }
    }
}

struct Counting<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    progress: Option<Progress<'a>>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(p) = self.progress {
            p(self.done, self.total);
        }
        Ok(n)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    help: Option<String>,
}

fn base_url(server: &str) -> Result<String> {
    let s = server.trim_end_matches('/');
    if s.starts_with("http://") {
        return Ok(s.to_string());
    }
    if s.starts_with("https://") {
        if cfg!(feature = "client-tls") {
            return Ok(s.to_string());
        }
        return Err(miette!(
            help = "build hecc with --features client-tls, or reach the server over http:// on \
                    a trusted network",
            "{server}: this build of hecc speaks plain HTTP only"
        ));
    }
    Err(miette!(
        help = "give the server as http://HOST:PORT",
        "{server}: not an http:// or https:// URL"
    ))
}

impl Remote {
    /// A client of the server at `server` (`http://HOST:PORT`).
    pub fn new(server: &str) -> Result<Remote> {
        let base = base_url(server)?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .build();
        Ok(Remote { base, agent })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn call(&self, req: ureq::Request, body: Option<Upload<'_>>) -> Result<ureq::Response> {
        let what = format!("{} {}", req.method(), req.url());
        let uploading = body.is_some();
        let sent = match body {
            None => req.call(),
            Some(u) => req
                .set("Content-Type", "application/octet-stream")
                .set("Content-Length", &u.len.to_string())
                .send(Counting {
                    inner: u.reader,
                    done: 0,
                    total: u.len,
                    progress: Some(u.progress),
                }),
        };
        match sent {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(b) => Err(match b.help {
                        Some(h) => {
                            miette!(help = h, "the server refused {what} ({code}): {}", b.error)
                        }
                        None => miette!("the server refused {what} ({code}): {}", b.error),
                    }),
                    Err(_) => Err(miette!("the server refused {what} ({code}): {text}")),
                }
            }
            Err(e) if uploading => Err(miette!(
                help = "the server closes the connection when it refuses an upload before \
                        reading it: check the session (hecc client status) and the file",
                "the upload of {what} broke off: {e}"
            )),
            Err(e) => Err(miette!("cannot reach the server for {what}: {e}")),
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(r: ureq::Response) -> Result<T> {
        let url = r.get_url().to_string();
        let mut text = String::new();
        r.into_reader()
            .take(64 << 20)
            .read_to_string(&mut text)
            .map_err(|e| miette!("reading the answer of {url}: {e}"))?;
        serde_json::from_str(&text)
            .map_err(|e| miette!("the server's answer to {url} is not what hecc expects: {e}"))
    }

    /// Whether the server answers.
    pub fn health(&self) -> Result<()> {
        self.call(self.agent.get(&format!("{}/health", self.base)), None)
            .map(|_| ())
    }

    /// The plans the server hosts.
    pub fn plans(&self) -> Result<Vec<PlanInfo>> {
        Self::json(self.call(self.agent.get(&format!("{}/v1/plans", self.base)), None)?)
    }

    /// Opens a session for `plan` with the evaluation keys in `eval_keys` (checked against
    /// the plan's size limit before the upload).
    pub fn open_session(
        &self,
        plan: &str,
        eval_keys: &Path,
        progress: Progress<'_>,
    ) -> Result<RemoteSession> {
        let info = self.plan(plan)?;
        check_size(
            file_len(eval_keys)?,
            eval_keys,
            info.max_key_bytes,
            "evaluation keys",
        )?;
        self.open_with(plan, Upload::file(eval_keys, progress)?)
    }

    /// [`Remote::open_session`] with the bytes of an evaluation-key file.
    pub fn open_session_bytes(&self, plan: &str, eval_keys: &[u8]) -> Result<RemoteSession> {
        let info = self.plan(plan)?;
        let shown = Path::new("the evaluation keys");
        check_size(
            eval_keys.len() as u64,
            shown,
            info.max_key_bytes,
            "evaluation keys",
        )?;
        self.open_with(plan, Upload::bytes(eval_keys, &|_, _| {}))
    }

    fn plan(&self, plan: &str) -> Result<PlanInfo> {
        self.plans()?
            .into_iter()
            .find(|p| p.name == plan)
            .ok_or_else(|| miette!("the server at {} hosts no plan named {plan:?}", self.base))
    }

    fn open_with(&self, plan: &str, body: Upload<'_>) -> Result<RemoteSession> {
        let r = self.call(
            self.agent
                .post(&format!("{}/v1/plans/{plan}/sessions", self.base)),
            Some(body),
        )?;
        let o: Opened = Self::json(r)?;
        Ok(RemoteSession {
            server: self.base.clone(),
            plan: o.plan,
            session: o.session,
            token: o.token,
            key_id: o.key_id,
        })
    }
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| miette!("cannot read {}: {e}", path.display()))?
        .len())
}

fn check_size(len: u64, path: &Path, max: u64, what: &str) -> Result<()> {
    if len > max {
        return Err(miette!(
            help = "check that the file was made for this plan",
            "{}: {len} bytes of {what}, more than the server accepts for this plan ({max})",
            path.display()
        ));
    }
    Ok(())
}

impl RemoteSession {
    /// Writes the session file (owner-only: it holds the token).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| miette!("{e}"))?;
        write_private(path, text.as_bytes())
    }

    /// Reads a session file (refused when others can read it, as a key file is).
    pub fn load(path: &Path) -> Result<RemoteSession> {
        check_private(path, false)?;
        let bytes = read_file(path)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            miette!(
                "{}: not a session file written by `hecc client open`: {e}",
                path.display()
            )
        })
    }

    fn remote(&self) -> Result<Remote> {
        Remote::new(&self.server)
    }

    fn authed(&self, req: ureq::Request) -> ureq::Request {
        req.set("Authorization", &format!("Bearer {}", self.token))
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v1/sessions/{}{rest}", self.server, self.session)
    }

    /// Submits an inputs file written by `hecc encrypt`; answers the queued job.
    pub fn submit(&self, inputs: &Path, progress: Progress<'_>) -> Result<JobInfo> {
        let len = file_len(inputs)?;
        self.submit_with(len, inputs, Upload::file(inputs, progress)?)
    }

    /// [`RemoteSession::submit`] with the bytes of an inputs file.
    pub fn submit_bytes(&self, inputs: &[u8]) -> Result<JobInfo> {
        let upload = Upload::bytes(inputs, &|_, _| {});
        self.submit_with(
            inputs.len() as u64,
            Path::new("the encrypted inputs"),
            upload,
        )
    }

    fn submit_with(&self, len: u64, shown: &Path, body: Upload<'_>) -> Result<JobInfo> {
        // The session and the size are checked before the upload: a server refuses a request
        // without reading its body, which a client still sending sees as a broken connection.
        let info = self.info()?;
        check_size(len, shown, info.max_input_bytes, "encrypted inputs")?;
        let r = self.remote()?;
        let resp = r.call(self.authed(r.agent.post(&self.url("/jobs"))), Some(body))?;
        Remote::json(resp)
    }

    /// The session as the server sees it (refused when it was closed or the token is wrong).
    pub fn info(&self) -> Result<SessionInfo> {
        let r = self.remote()?;
        Remote::json(r.call(self.authed(r.agent.get(&self.url(""))), None)?)
    }

    /// A job's state, waiting up to `wait_s` seconds for it to finish.
    pub fn job(&self, job: &str, wait_s: f64) -> Result<JobInfo> {
        let r = self.remote()?;
        let resp = r.call(
            self.authed(
                r.agent
                    .get(&self.url(&format!("/jobs/{job}")))
                    .query("wait", &format!("{wait_s}")),
            ),
            None,
        )?;
        Remote::json(resp)
    }

    /// The session's jobs.
    pub fn jobs(&self) -> Result<Vec<JobInfo>> {
        let r = self.remote()?;
        Remote::json(r.call(self.authed(r.agent.get(&self.url("/jobs"))), None)?)
    }

    /// Waits for a job to finish (at most `timeout`), calling `update` with each state seen;
    /// a failed job is an error with the server's reason.
    pub fn wait(
        &self,
        job: &str,
        timeout: Option<Duration>,
        update: &mut dyn FnMut(&JobInfo),
    ) -> Result<JobInfo> {
        let start = Instant::now();
        loop {
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()).as_secs_f64());
            let info = self.job(job, left.unwrap_or(5.0).min(5.0))?;
            update(&info);
            match info.state.as_str() {
                "done" => return Ok(info),
                "failed" => {
                    return Err(miette!(
                        "job {job} failed on the server: {}",
                        info.error.as_deref().unwrap_or("no reason given")
                    ))
                }
                _ => {}
            }
            if left.is_some_and(|l| l <= 0.0) {
                return Err(miette!(
                    "job {job} is still {} after {:.0} s",
                    info.state,
                    start.elapsed().as_secs_f64()
                ));
            }
        }
    }

    /// Downloads a done job's encrypted outputs to `out` (written atomically), after checking
    /// that they are an outputs file made for this session's keys. Returns the bytes written.
    pub fn fetch(&self, job: &str, out: &Path) -> Result<u64> {
        let bytes = self.fetch_bytes(job)?;
        write_atomic(out, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// A done job's encrypted outputs, checked to be an outputs file made for this session's
    /// keys.
    pub fn fetch_bytes(&self, job: &str) -> Result<Vec<u8>> {
        let r = self.remote()?;
        let resp = r.call(
            self.authed(r.agent.get(&self.url(&format!("/jobs/{job}/result")))),
            None,
        )?;
        let mut bytes = Vec::new();
        resp.into_reader()
            .read_to_end(&mut bytes)
            .map_err(|e| miette!("the download of job {job}'s result broke off: {e}"))?;
        let what = format!("the result of job {job}");
        let c = ContainerRef::from_bytes(&bytes, FileKind::Outputs, &what)?;
        if full_hex(&c.key_id) != self.key_id {
            return Err(miette!(
                "{what} was made for other keys than this session's; it was not kept"
            ));
        }
        Ok(bytes)
    }

    /// Closes the session: the server removes its keys, jobs and results.
    pub fn close(&self) -> Result<()> {
        let r = self.remote()?;
        r.call(self.authed(r.agent.delete(&self.url(""))), None)
            .map(|_| ())
    }
}
