//! The server's durable state: sessions and jobs in one SQLite database (write-ahead log,
//! full sync), next to the files they name. A row is written only after the file it points to
//! is on disk, so whatever the server acknowledged survives a crash or a restart.

use miette::{miette, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;

/// A client's session: one plan, one set of evaluation keys, one bearer token.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    /// Random id (hex).
    pub id: String,
    /// The hosted plan's name.
    pub plan: String,
    /// The plan's digest (hex) when the session was opened: a server restarted with another
    /// plan under the same name refuses the old sessions.
    pub plan_digest: String,
    /// SHA-256 of the bearer token (the token itself is never stored).
    pub token_sha256: Vec<u8>,
    /// The evaluation keys' id (hex).
    pub key_id: String,
    /// Unix seconds.
    pub created: i64,
}

/// The state of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Accepted, waiting for memory or a free worker.
    Queued,
    /// Running.
    Running,
    /// Finished; its result can be downloaded.
    Done,
    /// Finished with an error.
    Failed,
}

impl JobState {
    /// The name used in the database and the API.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Whether the job will not change any more.
    pub fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// One job: an encrypted batch to run for a session.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    /// Random id (hex).
    pub id: String,
    /// Submission order.
    pub seq: i64,
    /// The session it belongs to.
    pub session: String,
    /// The plan it runs.
    pub plan: String,
    /// Its state.
    pub state: JobState,
    /// Images in the batch.
    pub images: i64,
    /// Bytes of the inputs file.
    pub input_bytes: i64,
    /// Unix seconds of submission, last start and finish.
    pub created: i64,
    /// Unix seconds of the last start.
    pub started: Option<i64>,
    /// Unix seconds of the finish.
    pub finished: Option<i64>,
    /// Run time of the plan in seconds (done jobs).
    pub seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// How many times it was started (more than one after a restart cut a run short).
    pub attempts: i64,
}

/// Counts of jobs per state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JobCounts {
    /// Queued jobs.
    pub queued: u64,
    /// Running jobs.
    pub running: u64,
    /// Done jobs.
    pub done: u64,
    /// Failed jobs.
    pub failed: u64,
    /// Sum of the run times of done jobs, seconds.
    pub done_seconds: f64,
}

/// Starts of a job cut short by a server stop before it is given up.
pub const MAX_ATTEMPTS: i64 = 3;

/// The database.
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    plan_digest TEXT NOT NULL,
    token_sha256 BLOB NOT NULL,
    key_id TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    images INTEGER NOT NULL,
    input_bytes INTEGER NOT NULL,
    created INTEGER NOT NULL,
    started INTEGER,
    finished INTEGER,
    seconds REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_session ON jobs(session, seq);
";

const JOB_COLUMNS: &str = "id, seq, session, plan, state, images, input_bytes, created, started, \
                           finished, seconds, error, attempts";

fn job_row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    let state: String = r.get(4)?;
    Ok(JobRow {
        id: r.get(0)?,
        seq: r.get(1)?,
        session: r.get(2)?,
        plan: r.get(3)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        images: r.get(5)?,
        input_bytes: r.get(6)?,
        created: r.get(7)?,
        started: r.get(8)?,
        finished: r.get(9)?,
        seconds: r.get(10)?,
        error: r.get(11)?,
        attempts: r.get(12)?,
    })
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        plan: r.get(1)?,
        plan_digest: r.get(2)?,
        token_sha256: r.get(3)?,
        key_id: r.get(4)?,
        created: r.get(5)?,
    })
}

fn db<T>(r: rusqlite::Result<T>) -> Result<T> {
    r.map_err(|e| miette!("the server's job database: {e}"))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)
            .map_err(|e| miette!("cannot open the job database {}: {e}", path.display()))?;
        db(conn.pragma_update(None, "journal_mode", "WAL"))?;
        db(conn.pragma_update(None, "synchronous", "FULL"))?;
        db(conn.pragma_update(None, "foreign_keys", "ON"))?;
        db(conn.busy_timeout(std::time::Duration::from_secs(10)))?;
        db(conn.execute_batch(SCHEMA))?;
        Ok(Store { conn })
    }

    /// After a restart: jobs that were running when the server stopped are queued again
    /// (their partial run is lost; the inputs are still on disk). Returns how many.
    ///
    /// A job already started [`MAX_ATTEMPTS`] times is marked failed instead: a job that kills
    /// the server (memory, a crash) would otherwise take it down at every restart and hold up
    /// the queue behind it.
    pub fn requeue_running(&self) -> Result<usize> {
        db(self.conn.execute(
            "UPDATE jobs SET state = 'failed', finished = ?1, error = ?2 \
             WHERE state = 'running' AND attempts >= ?3",
            params![
                now(),
                format!(
                    "the server stopped during each of its {MAX_ATTEMPTS} runs (killed, out of \
                     memory or crashed); not run again"
                ),
                MAX_ATTEMPTS
            ],
        ))?;
        db(self.conn.execute(
            "UPDATE jobs SET state = 'queued', started = NULL WHERE state = 'running'",
            [],
        ))
    }

    /// Puts one job back in the queue.
    pub fn requeue(&self, id: &str) -> Result<()> {
        db(self.conn.execute(
            "UPDATE jobs SET state = 'queued', started = NULL WHERE id = ?1",
            [id],
        ))?;
        Ok(())
    }

    /// Adds a session.
    pub fn insert_session(&self, s: &SessionRow) -> Result<()> {
        db(self.conn.execute(
            "INSERT INTO sessions (id, plan, plan_digest, token_sha256, key_id, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                s.id,
                s.plan,
                s.plan_digest,
                s.token_sha256,
                s.key_id,
                s.created
            ],
        ))?;
        Ok(())
    }

    /// The session `id`.
    pub fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        db(self
            .conn
            .query_row(
                "SELECT id, plan, plan_digest, token_sha256, key_id, created FROM sessions \
                 WHERE id = ?1",
                [id],
                session_row,
            )
            .optional())
    }

    /// All sessions.
    pub fn sessions(&self) -> Result<Vec<SessionRow>> {
        let mut q = db(self
            .conn
            .prepare("SELECT id, plan, plan_digest, token_sha256, key_id, created FROM sessions"))?;
        let rows = db(q.query_map([], session_row))?;
        db(rows.collect())
    }

    /// Sessions open.
    pub fn session_count(&self) -> Result<u64> {
        let n: i64 = db(self
            .conn
            .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)))?;
        Ok(n.max(0) as u64)
    }

    /// Removes a session and its jobs.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        db(self
            .conn
            .execute("DELETE FROM jobs WHERE session = ?1", [id]))?;
        db(self
            .conn
            .execute("DELETE FROM sessions WHERE id = ?1", [id]))?;
        Ok(())
    }

    /// Adds a queued job; returns it with its sequence number.
    pub fn insert_job(
        &self,
        id: &str,
        session: &SessionRow,
        images: i64,
        input_bytes: i64,
    ) -> Result<JobRow> {
        db(self.conn.execute(
            "INSERT INTO jobs (id, session, plan, state, images, input_bytes, created) \
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6)",
            params![id, session.id, session.plan, images, input_bytes, now()],
        ))?;
        self.job(id)?
            .ok_or_else(|| miette!("the job database lost a job just written"))
    }

    /// The job `id`.
    pub fn job(&self, id: &str) -> Result<Option<JobRow>> {
        db(self
            .conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional())
    }

    /// The jobs of a session, in submission order.
    pub fn jobs_of(&self, session: &str) -> Result<Vec<JobRow>> {
        let mut q = db(self.conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE session = ?1 ORDER BY seq"
        )))?;
        let rows = db(q.query_map([session], job_row))?;
        db(rows.collect())
    }

    /// The oldest queued job.
    pub fn next_queued(&self) -> Result<Option<JobRow>> {
        db(self
            .conn
            .query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1"
                ),
                [],
                job_row,
            )
            .optional())
    }

    /// Queued jobs submitted before the job of sequence number `seq`.
    pub fn queued_before(&self, seq: i64) -> Result<u64> {
        let n: i64 = db(self.conn.query_row(
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq < ?1",
            [seq],
            |r| r.get(0),
        ))?;
        Ok(n.max(0) as u64)
    }

    /// Marks a job running (one more attempt).
    pub fn set_running(&self, id: &str) -> Result<()> {
        db(self.conn.execute(
            "UPDATE jobs SET state = 'running', started = ?2, attempts = attempts + 1 \
             WHERE id = ?1",
            params![id, now()],
        ))?;
        Ok(())
    }

    /// Marks a job done after `seconds` of run time.
    pub fn set_done(&self, id: &str, seconds: f64) -> Result<()> {
        db(self.conn.execute(
            "UPDATE jobs SET state = 'done', finished = ?2, seconds = ?3, error = NULL \
             WHERE id = ?1",
            params![id, now(), seconds],
        ))?;
        Ok(())
    }

    /// Marks a job failed with `error`.
    pub fn set_failed(&self, id: &str, error: &str) -> Result<()> {
        db(self.conn.execute(
            "UPDATE jobs SET state = 'failed', finished = ?2, error = ?3 WHERE id = ?1",
            params![id, now(), error],
        ))?;
        Ok(())
    }

    /// Jobs per state and the total run time of the done ones.
    pub fn counts(&self) -> Result<JobCounts> {
        let mut c = JobCounts::default();
        let mut q = db(self.conn.prepare(
            "SELECT state, COUNT(*), COALESCE(SUM(seconds), 0.0) FROM jobs GROUP BY state",
        ))?;
        let rows = db(q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
            ))
        }))?;
        for row in rows {
            let (state, n, secs) = db(row)?;
            let n = n.max(0) as u64;
            match JobState::parse(&state) {
                Some(JobState::Queued) => c.queued = n,
                Some(JobState::Running) => c.running = n,
                Some(JobState::Done) => {
                    c.done = n;
                    c.done_seconds = secs;
                }
                Some(JobState::Failed) | None => c.failed += n,
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn session(id: &str) -> SessionRow {
        SessionRow {
            id: id.into(),
            plan: "p".into(),
            plan_digest: "d".into(),
            token_sha256: vec![1, 2, 3],
            key_id: "k".into(),
            created: 5,
        }
    }

    #[test]
    fn jobs_survive_reopening_and_running_ones_are_requeued() {
        let dir = std::env::temp_dir().join(format!("hecc-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        {
            let st = Store::open(&path).unwrap();
            st.insert_session(&session("s1")).unwrap();
            let a = st.insert_job("a", &session("s1"), 8, 100).unwrap();
            let b = st.insert_job("b", &session("s1"), 8, 100).unwrap();
            assert!(a.seq < b.seq);
            assert_eq!(st.next_queued().unwrap().unwrap().id, "a");
            assert_eq!(st.queued_before(b.seq).unwrap(), 1);
            st.set_running("a").unwrap();
            assert_eq!(st.next_queued().unwrap().unwrap().id, "b");
            st.set_running("b").unwrap();
            st.set_done("b", 1.5).unwrap();
            let c = st.counts().unwrap();
            assert_eq!((c.queued, c.running, c.done, c.failed), (0, 1, 1, 0));
        }
        let st = Store::open(&path).unwrap();
        assert_eq!(st.session("s1").unwrap(), Some(session("s1")));
        assert_eq!(st.requeue_running().unwrap(), 1);
        let a = st.next_queued().unwrap().unwrap();
        assert_eq!((a.id.as_str(), a.attempts), ("a", 1));
        // Cut short three times: given up at the next start.
        st.set_running("a").unwrap();
        st.set_running("a").unwrap();
        assert_eq!(st.requeue_running().unwrap(), 0);
        let a = st.job("a").unwrap().unwrap();
        assert_eq!((a.state, a.attempts), (JobState::Failed, 3));
        assert!(a.error.unwrap().contains("not run again"));
        st.set_failed("a", "boom").unwrap();
        assert_eq!(st.job("a").unwrap().unwrap().error.as_deref(), Some("boom"));
        assert_eq!(st.jobs_of("s1").unwrap().len(), 2);
        st.delete_session("s1").unwrap();
        assert!(st.job("a").unwrap().is_none());
        assert!(st.session("s1").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
