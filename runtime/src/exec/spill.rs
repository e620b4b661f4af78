//! Values out of memory: the spill store and the run's checkpoints.
//!
//! A run with [`SpillOptions`] keeps the bytes of its live values (stored results, unread
//! inputs, outputs) near a budget: after every wavefront that leaves more than the budget in
//! memory, the values whose next use lies furthest ahead in the schedule go to files in the
//! spill directory (Belady's rule on the schedule's order), down to nine tenths of the budget,
//! and come back, read in parallel, just before the wavefront that needs them. A value is
//! written at most once: values never change once made, so a value spilled a second time is
//! only dropped from memory. Every file carries its kind, its length and a SHA-256 of its
//! contents, checked when it is read back.
//!
//! A checkpoint writes every live value that is not on disk yet and the outputs made so far,
//! makes the files durable, then replaces the directory's manifest (`checkpoint`) atomically: the
//! nodes done, the values alive, the outputs, and the run's identity (plan and inputs). A run
//! that starts on a directory whose manifest names the same run resumes from it: nodes done
//! stay done, alive values are read back when first needed, unread inputs are taken from the
//! caller again. Files of values that died since the last checkpoint are deleted only once the
//! next manifest no longer names them, so the last manifest always finds its files.

use super::{ExecError, Value};
use crate::ckks::{Ciphertext, Context, Plaintext};
use hecc_ir::he::ValueId;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where and how a run keeps values out of memory.
#[derive(Clone, Debug)]
pub struct SpillOptions {
    /// Directory of the spill files and the checkpoint manifest (created when missing). One run
    /// at a time may use it: a second run on the same directory is refused.
    pub dir: PathBuf,
    /// Bytes of live values (results still needed, unread inputs, outputs) to keep in memory;
    /// above it, values go to disk. `u64::MAX`: never spill (checkpoints still work).
    pub budget: u64,
    /// Write a checkpoint at most this often (after the wavefront that passes it); `None`:
    /// never. `Some(ZERO)` checkpoints after every wavefront (tests).
    pub checkpoint_every: Option<Duration>,
    /// The run's identity (e.g. the plan's digest and the inputs' digest): a manifest is resumed
    /// only when it names the same run, and a directory holding another run's is refused.
    pub run_id: String,
}

/// What the spill store did in a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpillReport {
    /// The budget the run kept to.
    pub budget: u64,
    /// Values written to disk (each at most once).
    pub values_written: u64,
    /// Bytes of those files.
    pub bytes_written: u64,
    /// Values read back.
    pub values_read: u64,
    /// Bytes read back.
    pub bytes_read: u64,
    /// Most bytes on disk at once.
    pub peak_disk_bytes: u64,
    /// Seconds spent writing, reading and syncing files (wall time of the driving thread).
    pub io_seconds: f64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Nodes that a resumed checkpoint had already done (0 for a fresh run).
    pub resumed_nodes: u64,
}

const MAGIC: &[u8; 8] = b"HECCSPL1";
const HEADER: usize = 8 + 1 + 8 + 32;
const MANIFEST: &str = "checkpoint";
const MANIFEST_HEAD: &str = "hecc-checkpoint 1";

/// The name of a value's file: `v` results, `i` unread inputs (by input node), `o` outputs.
pub(crate) fn file_name(kind: char, id: u32) -> String {
    format!("{kind}{id}.val")
}

fn spill_err(path: &Path, detail: impl Into<String>) -> ExecError {
    ExecError::Spill {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// The spill directory of a run: its files, the lock and the counters.
pub(crate) struct SpillDir {
    pub(crate) dir: PathBuf,
    /// Held for the run (an exclusive `flock` where the platform has one).
    _lock: fs::File,
    /// Files written since the last checkpoint, to be made durable before the next manifest.
    unsynced: Vec<PathBuf>,
    /// Files of values that died since the last checkpoint.
    doomed: Vec<PathBuf>,
    disk_bytes: u64,
    /// Files the last manifest names (deleted only after the next one is written).
    in_manifest: HashSet<String>,
    /// Outputs already in files (`o<k>.val` for k below this).
    pub(crate) outputs_saved: usize,
    pub(crate) report: SpillReport,
}

impl SpillDir {
    /// Opens (creating) the directory and takes its lock.
    pub(crate) fn open(opts: &SpillOptions) -> Result<SpillDir, ExecError> {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir)
            .map_err(|e| spill_err(&dir, format!("cannot create the directory: {e}")))?;
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| spill_err(&lock_path, format!("cannot open: {e}")))?;
        lock_exclusive(&lock).map_err(|e| {
            spill_err(
                &dir,
                format!("another run is using this spill directory ({e})"),
            )
        })?;
        Ok(SpillDir {
            dir,
            _lock: lock,
            unsynced: Vec::new(),
            doomed: Vec::new(),
            disk_bytes: 0,
            in_manifest: HashSet::new(),
            outputs_saved: 0,
            report: SpillReport {
                budget: opts.budget,
                ..SpillReport::default()
            },
        })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `value` to file `name` (kind, length and digest, then the contents).
    pub(crate) fn write(
        &self,
        ctx: &Context,
        name: &str,
        value: &Value,
    ) -> Result<(PathBuf, u64), ExecError> {
        match value {
            Value::Ct(c) => self.write_ct(ctx, name, c),
            Value::Pt(p) => self.write_payload(name, 1, &p.to_bytes(ctx)),
        }
    }

    /// [`SpillDir::write`] of a ciphertext.
    pub(crate) fn write_ct(
        &self,
        ctx: &Context,
        name: &str,
        c: &Ciphertext,
    ) -> Result<(PathBuf, u64), ExecError> {
        self.write_payload(name, 0, &c.to_bytes(ctx))
    }

    fn write_payload(
        &self,
        name: &str,
        kind: u8,
        payload: &[u8],
    ) -> Result<(PathBuf, u64), ExecError> {
        let path = self.path(name);
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        head.push(kind);
        head.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        head.extend_from_slice(&Sha256::digest(payload));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&path)?;
            f.write_all(&head)?;
            f.write_all(payload)?;
            Ok(())
        };
        write().map_err(|e| spill_err(&path, format!("cannot write: {e}")))?;
        Ok((path, (HEADER + payload.len()) as u64))
    }

    /// Reads a value written by [`SpillDir::write`].
    pub(crate) fn read(&self, ctx: &Context, name: &str) -> Result<(Value, u64), ExecError> {
        let path = self.path(name);
        let bytes = fs::read(&path).map_err(|e| spill_err(&path, format!("cannot read: {e}")))?;
        let damaged = |what: &str| {
            spill_err(
                &path,
                format!("the file is damaged ({what}); it was changed or cut after it was written"),
            )
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(damaged("no spill header"));
        }
        let kind = bytes[8];
        let len = u64::from_le_bytes(bytes[9..17].try_into().unwrap_or_default());
        let payload = &bytes[HEADER..];
        if len != payload.len() as u64 {
            return Err(damaged("wrong length"));
        }
        if Sha256::digest(payload).as_slice() != &bytes[17..49] {
            return Err(damaged("checksum mismatch"));
        }
        let value = match kind {
            0 => Ciphertext::from_bytes(ctx, payload).map(Value::Ct),
            1 => Plaintext::from_bytes(ctx, payload).map(Value::Pt),
            _ => return Err(damaged("unknown kind")),
        }
        .map_err(|e| damaged(&e.to_string()))?;
        Ok((value, bytes.len() as u64))
    }

    /// Renames file `from` to `to` (an input's ciphertext becoming its node's value).
    pub(crate) fn rename(&mut self, from: &str, to: &str) -> Result<(), ExecError> {
        let (a, b) = (self.path(from), self.path(to));
        fs::rename(&a, &b).map_err(|e| spill_err(&a, format!("cannot rename: {e}")))?;
        // Not durable until the next checkpoint syncs the directory with the manifest.
        self.unsynced.push(b);
        Ok(())
    }

    /// Counts a written file.
    pub(crate) fn wrote(&mut self, path: PathBuf, bytes: u64) {
        self.unsynced.push(path);
        self.disk_bytes += bytes;
        self.report.values_written += 1;
        self.report.bytes_written += bytes;
        self.report.peak_disk_bytes = self.report.peak_disk_bytes.max(self.disk_bytes);
    }

    /// Counts a file read back.
    pub(crate) fn read_back(&mut self, bytes: u64) {
        self.report.values_read += 1;
        self.report.bytes_read += bytes;
    }

    /// The value in file `name` died: delete it now, or after the next manifest when the last
    /// one names it.
    pub(crate) fn discard(&mut self, name: &str) {
        let path = self.path(name);
        if self.in_manifest.contains(name) {
            self.doomed.push(path);
        } else {
            self.remove(&path);
        }
    }

    fn remove(&mut self, path: &Path) {
        if let Ok(meta) = fs::metadata(path) {
            self.disk_bytes = self.disk_bytes.saturating_sub(meta.len());
        }
        let _ = fs::remove_file(path);
    }

    /// Makes the files written since the last checkpoint durable, then writes `manifest`
    /// atomically, then deletes the files it no longer names.
    pub(crate) fn commit(&mut self, manifest: &Manifest) -> Result<(), ExecError> {
        for p in std::mem::take(&mut self.unsynced) {
            if let Ok(f) = fs::File::open(&p) {
                f.sync_all()
                    .map_err(|e| spill_err(&p, format!("cannot sync: {e}")))?;
            }
        }
        let text = manifest.to_text();
        let tmp = self.path("checkpoint.tmp");
        let fin = self.path(MANIFEST);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &fin)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| spill_err(&fin, format!("cannot write the checkpoint: {e}")))?;
        self.report.checkpoints += 1;
        for p in std::mem::take(&mut self.doomed) {
            self.remove(&p);
        }
        self.in_manifest = manifest.files();
        Ok(())
    }

    /// The manifest in the directory, if any.
    pub(crate) fn manifest(&self) -> Result<Option<Manifest>, ExecError> {
        let path = self.path(MANIFEST);
        match fs::read_to_string(&path) {
            Ok(text) => Manifest::parse(&text)
                .map(Some)
                .map_err(|detail| spill_err(&path, detail)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(spill_err(&path, format!("cannot read: {e}"))),
        }
    }

    /// Deletes every value file and the manifest, except the files `keep` names (those of a
    /// manifest being resumed, which then count as named by the last manifest).
    pub(crate) fn clear(&mut self, keep: &HashSet<String>) {
        self.in_manifest = keep.clone();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(".val") || name == MANIFEST || name == "checkpoint.tmp";
            let kept = keep.contains(&name) || (name == MANIFEST && !keep.is_empty());
            if ours && !kept {
                let _ = fs::remove_file(e.path());
            } else if ours {
                self.disk_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        self.report.peak_disk_bytes = self.report.peak_disk_bytes.max(self.disk_bytes);
    }

    /// The run finished: its files go.
    pub(crate) fn finish(mut self) {
        self.clear(&Default::default());
        let _ = fs::remove_file(self.path("lock"));
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn lock_exclusive(f: &fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn lock_exclusive(_f: &fs::File) -> std::io::Result<()> {
    Ok(())
}

/// A checkpoint: what a run had done and what it held.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) run_id: String,
    /// Node ids of the circuit (the bitset's length).
    pub(crate) nodes: usize,
    /// Done flags, indexed by node id.
    pub(crate) done: Vec<bool>,
    /// Results alive (in files `v<id>.val`).
    pub(crate) values: Vec<u32>,
    /// Outputs made (file `o<k>.val` for the k-th): name and element index.
    pub(crate) outputs: Vec<(String, u32)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Manifest {
    fn body(&self) -> String {
        let mut bits = vec![0u8; self.nodes.div_ceil(8)];
        for (i, _) in self.done.iter().enumerate().filter(|(_, d)| **d) {
            bits[i / 8] |= 1 << (i % 8);
        }
        let mut s = format!(
            "{MANIFEST_HEAD}\nrun {}\nnodes {}\ndone {}\n",
            hex(self.run_id.as_bytes()),
            self.nodes,
            hex(&bits)
        );
        for v in &self.values {
            s.push_str(&format!("value {v}\n"));
        }
        for (name, index) in &self.outputs {
            s.push_str(&format!("output {index} {}\n", hex(name.as_bytes())));
        }
        s
    }

    /// The files this manifest names.
    pub(crate) fn files(&self) -> HashSet<String> {
        let values = self.values.iter().map(|&v| file_name('v', v));
        let outputs = (0..self.outputs.len()).map(|k| file_name('o', k as u32));
        values.chain(outputs).collect()
    }

    pub(crate) fn to_text(&self) -> String {
        let body = self.body();
        let sum = hex(&Sha256::digest(body.as_bytes()));
        format!("{body}end {sum}\n")
    }

    pub(crate) fn parse(text: &str) -> Result<Manifest, String> {
        let bad = |what: &str| format!("the checkpoint manifest is damaged ({what})");
        let (body, last) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or_else(|| bad("too short"))?;
        let sum = last
            .strip_prefix("end ")
            .ok_or_else(|| bad("no end line"))?;
        let body = format!("{body}\n");
        if hex(&Sha256::digest(body.as_bytes())) != sum {
            return Err(bad("checksum mismatch"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(MANIFEST_HEAD) {
            return Err(bad("unknown format"));
        }
        let mut field = |key: &str| -> Result<String, String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("no {key} line")))
        };
        let run_id = unhex(&field("run")?)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("run"))?;
        let nodes: usize = field("nodes")?.parse().map_err(|_| bad("nodes"))?;
        let bits = unhex(&field("done")?).ok_or_else(|| bad("done"))?;
        if bits.len() != nodes.div_ceil(8) {
            return Err(bad("done set of the wrong length"));
        }
        let done = (0..nodes)
            .map(|i| bits[i / 8] >> (i % 8) & 1 == 1)
            .collect();
        let (mut values, mut outputs) = (Vec::new(), Vec::new());
        for l in lines {
            let parts: Vec<&str> = l.split(' ').collect();
            match parts.as_slice() {
                ["value", v] => values.push(v.parse().map_err(|_| bad("value"))?),
                ["output", index, name] => outputs.push((
                    unhex(name)
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| bad("output name"))?,
                    index.parse().map_err(|_| bad("output index"))?,
                )),
                _ => return Err(bad("unknown line")),
            }
        }
        Ok(Manifest {
            run_id,
            nodes,
            done,
            values,
            outputs,
        })
    }
}

/// The node id of a value file name `v<id>.val`.
pub(crate) fn value_file(v: ValueId) -> String {
    file_name('v', v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            run_id: "plan abc / inputs def".into(),
            nodes: 13,
            done: (0..13).map(|i| i % 3 == 0).collect(),
            values: vec![3, 9],
            outputs: vec![("logits out".into(), 4)],
        }
    }

    #[test]
    fn manifests_read_back_and_refuse_edits() {
        let m = sample();
        let text = m.to_text();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let edited = text.replace("value 9", "value 8");
        assert!(Manifest::parse(&edited).unwrap_err().contains("checksum"));
        let cut = &text[..text.len() / 2];
        assert!(Manifest::parse(cut).is_err());
        assert!(Manifest::parse("").is_err());
    }
}
