//! `hecc serve` end to end, against the real binary on 127.0.0.1: two clients with their own
//! keys submit at the same time (server concurrency 2) and each decrypts its own correct result; neither can reach the
//! other's session; malformed and oversized uploads are refused while the server keeps
//! serving; a server killed with SIGKILL mid-job and restarted finishes every acknowledged job.
//! Run with `cargo test --release --test serve`.
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

use hecc::client::Client;
use hecc::compile::{compile, write_plan, CompileOptions};
use hecc::remote::{Remote, RemoteSession};
use hecc::run::{read_outputs, Session};
use hecc_passes::params::Security;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const IMAGES: &str = "models/data/mnist-t10k-first256-images-idx3-ubyte";

/// CryptoNets at test parameters, 8 images per batch.
fn plan(dir: &Path) -> PathBuf {
    let opts = CompileOptions {
        security: Security::InsecureNone,
        min_log_n: 12,
        layout: hecc::compile::LayoutChoice::Batch,
        scale_bits: 40,
        batch: Some(8),
        ..Default::default()
    };
    let c = compile(&root().join("models/cryptonets.yaml"), &opts).unwrap();
    let path = dir.join("cryptonets.plan.json");
    write_plan(&c.plan, &path).unwrap();
    path
}

/// A client of the plan with its own keys: the evaluation-key file and an inputs file of the
/// 8 images after `skip`.
struct Party {
    client: Client,
    eval_keys: PathBuf,
    inputs: PathBuf,
    images: Vec<f64>,
}

fn party(plan: &Path, dir: &Path, tag: &str, skip: usize) -> Party {
    let s = Session::open_with_security(plan, true).unwrap();
    let (mut client, eval) = Client::generate(s).unwrap();
    let eval_keys = dir.join(format!("{tag}.eval.keys"));
    std::fs::write(&eval_keys, client.eval_keys_bytes(&eval)).unwrap();
    let all = client.load_images(&root().join(IMAGES)).unwrap();
    let per = all.data.len() / all.count;
    let images = all.data[skip * per..(skip + 8) * per].to_vec();
    let batch = client.images_from_values(images.clone(), 8).unwrap();
    let x = client.encrypt(&batch).unwrap();
    let inputs = dir.join(format!("{tag}.x.ct"));
    std::fs::write(&inputs, client.inputs_bytes(&x).unwrap()).unwrap();
    Party {
        client,
        eval_keys,
        inputs,
        images,
    }
}

/// Decrypts a downloaded result and checks it against the plaintext model on the party's
/// images (logits within 1e-3 of their magnitude, same argmax).
fn check_result(p: &Party, out: &Path) {
    let o = read_outputs(out).unwrap();
    let d = p.client.decrypt(&o, None).unwrap();
    let g = hecc_ir::front::load_model(&root().join("models/cryptonets.yaml")).unwrap();
    let x = hecc_ir::tensor::Tensor::from_shape_vec(vec![8, 1, 28, 28], p.images.clone()).unwrap();
    let want = hecc_ir::tensor::eval::eval_batch(&g, &[x]).unwrap();
    let want: Vec<f64> = want[0].iter().copied().collect();
    let err = want
        .iter()
        .zip(&d.logits.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let mag = want.iter().map(|x| x.abs()).fold(1.0, f64::max);
    assert!(err < 1e-3 * mag, "max error {err} for logits up to {mag}");
    assert_eq!(hecc::images::argmax_rows(&want, 10), d.logits.predictions());
}

/// A running `hecc serve`; killed when dropped.
struct Server {
    child: Child,
    url: String,
    stderr: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(plan: &Path, state: &Path, extra: &[&str]) -> Server {
    let stderr = state.with_extension(format!("stderr.{}", rand_tag()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hecc"))
        .arg("serve")
        .arg(format!("cn={}", plan.display()))
        .args(["--listen", "127.0.0.1:0", "--insecure", "--state"])
        .arg(state)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("hecc serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server { child, url, stderr }
}

fn rand_tag() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// One raw HTTP/1.1 request (no client library: the test controls every header); returns the
/// status and the body.
fn raw(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer and close before a refused body is sent in full.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hecc-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn two_clients_isolated_and_bad_uploads_refused() {
    let dir = tmpdir("two");
    let plan = plan(&dir);
    let a = party(&plan, &dir, "a", 0);
    let b = party(&plan, &dir, "b", 8);
    let server = start_server(&plan, &dir.join("state"), &["--concurrency", "2"]);
    let remote = Remote::new(&server.url).unwrap();
    remote.health().unwrap();
    let plans = remote.plans().unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!((plans[0].name.as_str(), plans[0].batch), ("cn", 8));
    let none = |_: u64, _: u64| {};
    let sa = remote.open_session("cn", &a.eval_keys, &none).unwrap();
    let sb = remote.open_session("cn", &b.eval_keys, &none).unwrap();
    assert_ne!(sa.token, sb.token);
    // Session files: owner-only, and read back the same.
    let fa = dir.join("a.session.json");
    sa.save(&fa).unwrap();
    assert_eq!(RemoteSession::load(&fa).unwrap(), sa);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fa).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Both clients at once, each on its own keys.
    let results: Vec<(String, PathBuf)> = std::thread::scope(|sc| {
        let hs: Vec<_> = [(&sa, &a, "a"), (&sb, &b, "b")]
            .into_iter()
            .map(|(s, p, tag)| {
                let dir = &dir;
                sc.spawn(move || {
                    let job = s.submit(&p.inputs, &none).unwrap();
                    s.wait(&job.job, Some(Duration::from_secs(300)), &mut |_| {})
                        .unwrap();
                    let out = dir.join(format!("{tag}.y.ct"));
                    s.fetch(&job.job, &out).unwrap();
                    (job.job, out)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    check_result(&a, &results[0].1);
    check_result(&b, &results[1].1);
    // A's result cannot be decrypted with B's key: B's client refuses it (other key set).
    let oa = read_outputs(&results[0].1).unwrap();
    assert!(b.client.decrypt(&oa, None).is_err());

    // Isolation: no token 401; B's token on A's session 403; A's job under B's session 404.
    let (ja, _) = &results[0];
    let a_jobs = format!("/v1/sessions/{}/jobs", sa.session);
    let a_result = format!("/v1/sessions/{}/jobs/{ja}/result", sa.session);
    assert_eq!(raw(&server.url, "GET", &a_jobs, &[], b"").0, 401);
    assert_eq!(raw(&server.url, "GET", &a_result, &[], b"").0, 401);
    let (code, body) = raw(&server.url, "GET", &a_result, &[bearer(&sb.token)], b"");
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains(ja.as_str()));
    assert_eq!(
        raw(&server.url, "GET", &a_jobs, &[bearer(&sb.token)], b"").0,
        403
    );
    let (code, _) = raw(
        &server.url,
        "DELETE",
        &format!("/v1/sessions/{}", sa.session),
        &[bearer(&sb.token)],
        b"",
    );
    assert_eq!(code, 403);
    let b_asks_a_job = format!("/v1/sessions/{}/jobs/{ja}/result", sb.session);
    assert_eq!(
        raw(&server.url, "GET", &b_asks_a_job, &[bearer(&sb.token)], b"").0,
        404
    );
    let (code, _) = raw(&server.url, "GET", &a_jobs, &[bearer("not-a-token")], b"");
    assert_eq!(code, 403);
    // B submits A's ciphertexts under its own session: other keys, refused.
    let xa = std::fs::read(&a.inputs).unwrap();
    let b_jobs = format!("/v1/sessions/{}/jobs", sb.session);
    let (code, body) = raw(&server.url, "POST", &b_jobs, &[bearer(&sb.token)], &xa);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("other keys"), "{body}");
    // A still reads its own result.
    let (code, _) = raw(&server.url, "GET", &a_result, &[bearer(&sa.token)], b"");
    assert_eq!(code, 200);

    // Malformed uploads: garbage, a truncated inputs file, garbage keys; all 400.
    let (code, body) = raw(
        &server.url,
        "POST",
        &a_jobs,
        &[bearer(&sa.token)],
        &[7u8; 1000],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a hecc file"), "{body}");
    let (code, body) = raw(
        &server.url,
        "POST",
        &a_jobs,
        &[bearer(&sa.token)],
        &xa[..xa.len() / 2],
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw(
        &server.url,
        "POST",
        "/v1/plans/cn/sessions",
        &[],
        &[1u8; 64],
    );
    assert_eq!(code, 400, "{body}");
    let (code, _) = raw(
        &server.url,
        "POST",
        "/v1/plans/nope/sessions",
        &[],
        &[1u8; 64],
    );
    assert_eq!(code, 404);
    // Oversized: refused from the declared length, before the body is read.
    let huge = [
        ("Content-Length", (1u64 << 40).to_string()),
        bearer(&sa.token),
    ];
    let (code, body) = raw(&server.url, "POST", &a_jobs, &huge, &[0u8; 16]);
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("at most"), "{body}");
    // Without a declared length (chunked), refused once the body passes the limit.
    let max = plans[0].max_input_bytes as usize;
    let addr = server.url.strip_prefix("http://").unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {a_jobs} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        sa.token
    );
    tcp.write_all(head.as_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..=max / chunk.len() + 1 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if tcp.write_all(&framed).is_err() {
            break; // the server answered and closed
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n");
    let mut resp = String::new();
    let _ = tcp.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Nothing of the refused uploads is left behind.
    let tmp: Vec<_> = std::fs::read_dir(dir.join("state/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");

    // Still serving: health, metrics, and a second job of A that runs.
    remote.health().unwrap();
    let (code, metrics) = raw(&server.url, "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    assert!(
        metrics.lines().any(|l| l == "hecc_jobs_done 2"),
        "{metrics}"
    );
    assert!(metrics.contains("hecc_resident_bytes"), "{metrics}");
    let job = sa.submit(&a.inputs, &none).unwrap();
    sa.wait(&job.job, Some(Duration::from_secs(300)), &mut |_| {})
        .unwrap();
    let out = dir.join("a2.y.ct");
    sa.fetch(&job.job, &out).unwrap();
    check_result(&a, &out);

    // Closing A's session removes its keys and results; B's session is untouched.
    sa.close().unwrap();
    assert_eq!(
        raw(&server.url, "GET", &a_jobs, &[bearer(&sa.token)], b"").0,
        403
    );
    assert!(!dir.join("state/jobs").join(ja).exists());
    assert_eq!(sb.jobs().unwrap().len(), 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn acknowledged_jobs_survive_sigkill_and_restart() {
    let dir = tmpdir("kill");
    let plan = plan(&dir);
    let a = party(&plan, &dir, "a", 16);
    let state = dir.join("state");
    let server = start_server(
        &plan,
        &state,
        &["--concurrency", "1", "--max-sessions", "1"],
    );
    let none = |_: u64, _: u64| {};
    let remote = Remote::new(&server.url).unwrap();
    let s = remote.open_session("cn", &a.eval_keys, &none).unwrap();
    // One session at most: a second is refused, the first keeps working.
    let e = format!(
        "{:?}",
        remote.open_session("cn", &a.eval_keys, &none).unwrap_err()
    );
    assert!(e.contains("503") && e.contains("most sessions"), "{e}");
    // A second server on the same state refuses to start, and changes nothing.
    let second = Command::new(env!("CARGO_BIN_EXE_hecc"))
        .arg("serve")
        .arg(format!("cn={}", plan.display()))
        .args(["--listen", "127.0.0.1:0", "--insecure", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("another hecc serve"), "{msg}");
    let jobs: Vec<String> = (0..3)
        .map(|_| s.submit(&a.inputs, &none).unwrap().job)
        .collect();
    // Kill the server as soon as the first job runs.
    let start = Instant::now();
    loop {
        let st = s.job(&jobs[0], 0.0).unwrap();
        if st.state == "running" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job never started: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let log = std::fs::read_to_string(&server.stderr).unwrap();
    let finished_before = log.contains(&format!("job {}: done", jobs[0]));
    drop(server);

    // Restarted on the same state: the session and all three jobs are still there.
    let server = start_server(&plan, &state, &[]);
    let s = RemoteSession {
        server: server.url.clone(),
        ..s
    };
    for (i, j) in jobs.iter().enumerate() {
        let info = s
            .wait(j, Some(Duration::from_secs(300)), &mut |_| {})
            .unwrap();
        eprintln!("job {i}: {} attempt(s)", info.attempts);
        if i == 0 && !finished_before {
            assert!(
                info.attempts >= 2,
                "the cut-short job was not rerun: {info:?}"
            );
        }
        let out = dir.join(format!("y{i}.ct"));
        s.fetch(j, &out).unwrap();
        check_result(&a, &out);
    }
    let log = std::fs::read_to_string(&server.stderr).unwrap();
    if !finished_before {
        assert!(log.contains("queued again"), "{log}");
    }
    // Graceful shutdown: SIGTERM ends the server with success.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&server.stderr).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
