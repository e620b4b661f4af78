//! `hecc serve` and `hecc client`: argument parsing and printing over [`hecc::serve`] and
//! [`hecc::remote`].

use hecc::remote::{JobInfo, Remote, RemoteSession};
use hecc::serve::{serve, ServeConfig, ServeEvent};
use miette::{miette, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `hecc serve` arguments.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Plans to host, as NAME=PLAN or PLAN (named after the file: `cryptonets.plan.json` is
    /// `cryptonets`).
    #[arg(required = true)]
    plans: Vec<String>,
    /// Address and port to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Directory of the job database, the sessions' evaluation keys, inputs and results
    /// (created readable by its owner only). A restart with the same directory resumes.
    #[arg(long, default_value = "hecc-serve-state")]
    state: PathBuf,
    /// Jobs that run at once (each uses every core).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Memory the running jobs' estimates may add up to, e.g. `20GiB` (default: nine tenths
    /// of what this process can get at start: free memory, its cgroup and ulimit limits).
    #[arg(long, value_parser = parse_size)]
    memory_budget: Option<u64>,
    /// Largest upload accepted, e.g. `2GiB` (default: what each plan's key and inputs files
    /// can need, plus a quarter).
    #[arg(long, value_parser = parse_size)]
    max_upload: Option<u64>,
    /// Most sessions open at once (opening one needs no token, so this bounds what anyone who
    /// reaches the server can make it store).
    #[arg(long, default_value_t = 256)]
    max_sessions: usize,
    /// Uploads received and checked at once (the others wait their turn).
    #[arg(long, default_value_t = 2)]
    max_uploads: usize,
    /// Host plans below 128-bit security (tests only; warns).
    #[arg(long)]
    insecure: bool,
}

fn parse_size(t: &str) -> Result<u64, String> {
    hecc::run::parse_size(t)
}

/// `hecc client` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCmd {
    /// List the plans a server hosts, with their limits.
    Plans {
        /// The server, as http://HOST:PORT.
        #[arg(long)]
        server: String,
    },
    /// Open a session: upload the evaluation keys of a plan and write a session file (id and
    /// token, readable by its owner only).
    Open {
        /// The server, as http://HOST:PORT.
        #[arg(long)]
        server: String,
        /// The plan's name on the server.
        #[arg(long)]
        plan: String,
        /// Evaluation keys written by `hecc keygen` for that plan.
        #[arg(long)]
        eval_keys: PathBuf,
        /// Where to write the session file.
        #[arg(short, long, default_value = "hecc-session.json")]
        output: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Submit encrypted inputs (written by `hecc encrypt`) as a job; prints the job id.
    Submit {
        /// The session file.
        session: PathBuf,
        /// The encrypted inputs.
        inputs: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Show one job, or every job of the session.
    Status {
        /// The session file.
        session: PathBuf,
        /// A job id.
        job: Option<String>,
    },
    /// Wait for a job and download its encrypted outputs (decrypt them with `hecc decrypt`).
    Wait {
        /// The session file.
        session: PathBuf,
        /// The job id.
        job: String,
        #[command(flatten)]
        fetch: Fetch,
    },
    /// Submit, wait and download in one step.
    Run {
        /// The session file.
        session: PathBuf,
        /// The encrypted inputs.
        inputs: PathBuf,
        #[command(flatten)]
        fetch: Fetch,
    },
    /// Close the session: the server deletes its keys, jobs and results.
    Close {
        /// The session file.
        session: PathBuf,
    },
}

/// How `wait` and `run` wait for a job and where its result goes.
#[derive(clap::Args, Debug)]
pub struct Fetch {
    /// Where to write the encrypted outputs.
    #[arg(short, long)]
    output: PathBuf,
    /// Give up waiting after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// No progress.
    #[arg(long)]
    quiet: bool,
}

/// The plan name of a `NAME=PATH` or `PATH` argument.
fn plan_arg(a: &str) -> (String, PathBuf) {
    if let Some((name, path)) = a.split_once('=') {
        return (name.to_string(), PathBuf::from(path));
    }
    let path = PathBuf::from(a);
    let mut name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for suffix in [".json", ".plan"] {
        if let Some(s) = name.strip_suffix(suffix) {
            name = s.to_string();
        }
    }
    (name, path)
}

fn gib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 30)
}

/// Runs `hecc serve` until SIGINT or SIGTERM.
pub fn serve_cmd(a: ServeArgs) -> Result<String> {
    if a.concurrency == 0 {
        return Err(miette!("--concurrency must be at least 1"));
    }
    if a.insecure {
        eprintln!("{}", crate::INSECURE_WARNING);
    }
    let cfg = ServeConfig {
        plans: a.plans.iter().map(|p| plan_arg(p)).collect(),
        listen: a.listen,
        state: a.state,
        concurrency: a.concurrency,
        memory_budget: a.memory_budget,
        max_upload: a.max_upload,
        insecure_ok: a.insecure,
        max_sessions: a.max_sessions,
        max_uploads: a.max_uploads,
    };
    let events = std::sync::Arc::new(|e: ServeEvent| match e {
        ServeEvent::Listening { addr, budget } => {
            // One line on stdout that scripts can wait for (they may close the pipe after it,
            // so a failed write is not an error).
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "hecc serve: listening on http://{addr}");
            let _ = out.flush();
            eprintln!(
                "memory budget for running jobs: {:.2} GiB; stop with Ctrl-C or SIGTERM",
                gib(budget)
            );
        }
        ServeEvent::Requeued(n) => {
            eprintln!("{n} job(s) were running when the server last stopped: queued again")
        }
        ServeEvent::Started { job, plan, attempt } => {
            let again = if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            eprintln!("job {job}: running plan {plan}{again}");
        }
        ServeEvent::Finished {
            job,
            seconds,
            images,
        } => eprintln!("job {job}: done, {images} images in {seconds:.2} s"),
        ServeEvent::Failed { job, error } => eprintln!("job {job}: failed: {error}"),
        ServeEvent::Stopping { running } => {
            eprintln!("shutting down: waiting for {running} running job(s)")
        }
    });
    serve(cfg, events)?;
    eprintln!("hecc serve: stopped");
    Ok(String::new())
}

/// An upload progress bar on a terminal; nothing otherwise.
fn upload_bar(quiet: bool, what: &str) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Some(bar)
}

fn show_job(j: &JobInfo) -> String {
    let mut s = format!("{}  {:<8} {} images", j.job, j.state, j.images);
    if let Some(a) = j.ahead {
        s.push_str(&format!(", {a} ahead in the queue"));
    }
    if let Some((done, all)) = j.progress {
        if all > 0 {
            s.push_str(&format!(
                ", {:.0}% of the plan",
                100.0 * done as f64 / all as f64
            ));
        }
    }
    if let Some(t) = j.seconds {
        s.push_str(&format!(", ran {t:.2} s"));
    }
    if j.attempts > 1 {
        s.push_str(&format!(", started {} times", j.attempts));
    }
    if let Some(e) = &j.error {
        s.push_str(&format!("\n    error: {e}"));
    }
    s
}

fn wait_and_fetch(rs: &RemoteSession, job: &str, f: &Fetch) -> Result<String> {
    let (output, timeout, quiet) = (f.output.as_path(), f.timeout, f.quiet);
    hecc::files::check_output(output)?;
    let timeout = match timeout {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            return Err(miette!("--timeout must be a positive number of seconds"))
        }
        t => t.map(Duration::from_secs_f64),
    };
    let mut last = String::new();
    let mut update = |j: &JobInfo| {
        let line = show_job(j);
        if !quiet && line != last {
            eprintln!("{line}");
            last = line;
        }
    };
    let info = rs.wait(job, timeout, &mut update)?;
    let bytes = rs.fetch(job, output)?;
    Ok(format!(
        "job {job}: {} images in {:.2} s on the server; encrypted outputs ({bytes} bytes) \
         written to {}\n",
        info.images,
        info.seconds.unwrap_or(0.0),
        output.display()
    ))
}

fn submit(rs: &RemoteSession, inputs: &Path, quiet: bool) -> Result<JobInfo> {
    let bar = upload_bar(quiet, "upload");
    let progress = |done: u64, all: u64| {
        if let Some(b) = &bar {
            b.set_length(all);
            b.set_position(done);
        }
    };
    let job = rs.submit(inputs, &progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(job)
}

/// Runs a `hecc client` verb; returns what to print on stdout.
pub fn client_cmd(c: ClientCmd) -> Result<String> {
    match c {
        ClientCmd::Plans { server } => {
            let r = Remote::new(&server)?;
            let mut out = String::new();
            for p in r.plans()? {
                out.push_str(&format!(
                    "{}: model {}, {} images per batch, {:.2} GiB per job, uploads up to {:.1} \
                     MiB of keys and {:.1} MiB of inputs, plan {}\n",
                    p.name,
                    p.model,
                    p.batch,
                    gib(p.job_bytes),
                    p.max_key_bytes as f64 / f64::from(1u32 << 20),
                    p.max_input_bytes as f64 / f64::from(1u32 << 20),
                    &p.digest[..16.min(p.digest.len())]
                ));
            }
            Ok(out)
        }
        ClientCmd::Open {
            server,
            plan,
            eval_keys,
            output,
            quiet,
        } => {
            hecc::files::check_output_distinct(&output, &[&eval_keys])?;
            let r = Remote::new(&server)?;
            let bar = upload_bar(quiet, "keys");
            let progress = |done: u64, all: u64| {
                if let Some(b) = &bar {
                    b.set_length(all);
                    b.set_position(done);
                }
            };
            let s = r.open_session(&plan, &eval_keys, &progress)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            s.save(&output)?;
            Ok(format!(
                "session {} opened for plan {} on {}; session file {} (keep it private: it \
                 holds the session's token)\n",
                s.session,
                s.plan,
                s.server,
                output.display()
            ))
        }
        ClientCmd::Submit {
            session,
            inputs,
            quiet,
        } => {
            let rs = RemoteSession::load(&session)?;
            let job = submit(&rs, &inputs, quiet)?;
            Ok(format!("{}\n", job.job))
        }
        ClientCmd::Status { session, job } => {
            let rs = RemoteSession::load(&session)?;
            let jobs = match job {
                Some(j) => vec![rs.job(&j, 0.0)?],
                None => rs.jobs()?,
            };
            Ok(jobs.iter().map(|j| show_job(j) + "\n").collect())
        }
        ClientCmd::Wait {
            session,
            job,
            fetch,
        } => {
            hecc::files::check_output_distinct(&fetch.output, &[&session])?;
            let rs = RemoteSession::load(&session)?;
            wait_and_fetch(&rs, &job, &fetch)
        }
        ClientCmd::Run {
            session,
            inputs,
            fetch,
        } => {
            hecc::files::check_output_distinct(&fetch.output, &[&inputs, &session])?;
            let rs = RemoteSession::load(&session)?;
            let job = submit(&rs, &inputs, fetch.quiet)?;
            if !fetch.quiet {
                eprintln!("submitted job {}", job.job);
            }
            wait_and_fetch(&rs, &job.job, &fetch)
        }
        ClientCmd::Close { session } => {
            let rs = RemoteSession::load(&session)?;
            rs.close()?;
            Ok(format!(
                "session {} closed; the server deleted its keys, jobs and results\n",
                rs.session
            ))
        }
    }
}
