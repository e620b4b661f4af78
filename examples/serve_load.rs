//! Load test of a running `hecc serve`: for each client count, that many clients (each with
//! its own session and inputs) submit jobs back to back until each has done `--jobs` or the
//! time bound passes; prints jobs per minute, latency percentiles (submit to result
//! downloaded) and the server's resident memory sampled from `/metrics` during the round.
//! Driven by `benches/serve/load.sh`, which starts the server and makes the sessions.
//!
//! ```text
//! cargo run --release --example serve_load -- --server http://127.0.0.1:8080 \
//!     --sessions s1.json,s2.json,s3.json,s4.json --inputs x1.ct,x2.ct,x3.ct,x4.ct \
//!     --clients 1,2,4 --jobs 4 --max-seconds 600
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark driver may fail loudly

use hecc::remote::RemoteSession;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    server: String,
    sessions: Vec<PathBuf>,
    inputs: Vec<PathBuf>,
    clients: Vec<usize>,
    jobs: usize,
    max_seconds: f64,
}

fn args() -> Args {
    let mut a = Args {
        server: String::new(),
        sessions: vec![],
        inputs: vec![],
        clients: vec![1, 2, 4],
        jobs: 4,
        max_seconds: 600.0,
    };
    let list = |v: &str| v.split(',').map(PathBuf::from).collect::<Vec<_>>();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--server" => a.server = v,
            "--sessions" => a.sessions = list(&v),
            "--inputs" => a.inputs = list(&v),
            "--clients" => a.clients = v.split(',').map(|x| x.parse().unwrap()).collect(),
            "--jobs" => a.jobs = v.parse().unwrap(),
            "--max-seconds" => a.max_seconds = v.parse().unwrap(),
            _ => panic!("unknown argument {k}"),
        }
    }
    let most = a.clients.iter().copied().max().unwrap_or(1);
    assert!(
        a.sessions.len() >= most && a.inputs.len() >= most,
        "need a session file and an inputs file per client ({most})"
    );
    a
}

/// The server's resident bytes, from `/metrics`.
fn resident(server: &str) -> Option<u64> {
    let addr = server.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    use std::io::Write;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hecc_resident_bytes "))
        .and_then(|v| v.trim().parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let a = args();
    let sessions: Vec<RemoteSession> = a
        .sessions
        .iter()
        .map(|p| {
            let mut s = RemoteSession::load(p).unwrap();
            s.server = a.server.clone();
            s
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("hecc-serve-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "| clients | jobs | wall s | jobs/min | latency p50 s | p90 s | max s | server resident MiB (min-max) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &a.clients {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            let server = a.server.clone();
            std::thread::spawn(move || {
                let mut seen = vec![];
                while !stop.load(Ordering::SeqCst) {
                    if let Some(r) = resident(&server) {
                        seen.push(r);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                seen
            })
        };
        let start = Instant::now();
        let bound = Duration::from_secs_f64(a.max_seconds);
        let latencies: Vec<f64> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let s = &sessions[i];
                    let inputs = &a.inputs[i];
                    let dir = &dir;
                    sc.spawn(move || {
                        let mut lat = vec![];
                        for j in 0..a.jobs {
                            if start.elapsed() > bound {
                                break;
                            }
                            let t = Instant::now();
                            let job = s.submit(inputs, &|_, _| {}).unwrap();
                            s.wait(&job.job, Some(bound), &mut |_| {}).unwrap();
                            s.fetch(&job.job, &dir.join(format!("y{i}-{j}.ct")))
                                .unwrap();
                            lat.push(t.elapsed().as_secs_f64());
                        }
                        lat
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let wall = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let rss = sampler.join().unwrap();
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        let (lo, hi) = (
            rss.iter().copied().min().map_or(f64::NAN, mib),
            rss.iter().copied().max().map_or(f64::NAN, mib),
        );
        println!(
            "| {n} | {} | {wall:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {lo:.0}-{hi:.0} |",
            sorted.len(),
            sorted.len() as f64 / wall * 60.0,
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            sorted.last().copied().unwrap_or(f64::NAN),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
