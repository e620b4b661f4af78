//! Reading a container from a file one section at a time, so that a file of many ciphertexts
//! is never held whole beside what is parsed from it.
//!
//! The header is checked when the stream opens, each section's announced length against what
//! the file can still hold (a forged length cannot make the reader allocate more than the file
//! has), and the checksum by [`ContainerStream::finish`]: a caller acts on what it read only
//! after `finish` succeeds.

use super::*;
use std::io::Read;

/// A container being read section by section.
pub struct ContainerStream<R> {
    r: R,
    path: String,
    /// File length.
    len: u64,
    /// Bytes consumed.
    pos: u64,
    /// Over the header and the sections: the container's checksum.
    sum: Sha256,
    /// Over every byte, trailer included: the file's digest.
    whole: Sha256,
    left: u32,
    /// The header's fields.
    pub head: ContainerHeader,
}

fn io(path: &str, e: std::io::Error) -> RunError {
    RunError::Io {
        path: path.to_string(),
        detail: e.to_string(),
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8], path: &str) -> Result<usize, RunError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(path, e)),
        }
    }
    Ok(got)
}

impl ContainerStream<std::io::BufReader<std::fs::File>> {
    /// Opens the container file at `path`.
    pub fn open(path: &Path, expected: FileKind) -> Result<Self, RunError> {
        Self::open_as(path, expected, &path.display().to_string())
    }

    /// [`ContainerStream::open`], naming the file `shown` in errors.
    pub fn open_as(path: &Path, expected: FileKind, shown: &str) -> Result<Self, RunError> {
        let f = std::fs::File::open(path).map_err(|e| io(shown, e))?;
        let len = f.metadata().map_err(|e| io(shown, e))?.len();
        ContainerStream::new(
            std::io::BufReader::with_capacity(1 << 20, f),
            len,
            expected,
            shown,
        )
    }
}

impl<R: Read> ContainerStream<R> {
    /// Reads and checks the header of a container of `len` bytes.
    pub fn new(mut r: R, len: u64, expected: FileKind, path: &str) -> Result<Self, RunError> {
        let mut head = [0u8; HEADER + 4];
        let got = fill(&mut r, &mut head, path)?;
        let (h, count) = parse_header(&head[..got], len as usize, expected, path)?;
        let mut sum = Sha256::new();
        sum.update(head);
        let mut whole = Sha256::new();
        whole.update(head);
        Ok(ContainerStream {
            r,
            path: path.to_string(),
            len,
            pos: head.len() as u64,
            sum,
            whole,
            left: count,
            head: h,
        })
    }

    /// Sections not read yet.
    pub fn left(&self) -> u32 {
        self.left
    }

    /// Bytes of the file consumed so far (after [`Self::next_section`], the end of that
    /// section's contents).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn truncated(&self, needed: u64) -> RunError {
        RunError::Truncated {
            path: self.path.clone(),
            len: self.len as usize,
            needed: needed as usize,
        }
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<(), RunError> {
        let got = fill(&mut self.r, buf, &self.path)?;
        if got < buf.len() {
            // The file shrank under us, or its length was misreported.
            return Err(self.truncated(self.pos + buf.len() as u64 + 32));
        }
        self.sum.update(&*buf);
        self.whole.update(&*buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads the next section into `buf` (replacing its contents).
    pub fn next_section(&mut self, buf: &mut Vec<u8>) -> Result<(), RunError> {
        if self.left == 0 {
            return Err(RunError::Corrupt {
                path: self.path.clone(),
            });
        }
        if self.pos + 8 + 32 > self.len {
            return Err(self.truncated(self.pos + 8 + 32));
        }
        let mut l = [0u8; 8];
        self.take(&mut l)?;
        let n = u64::from_le_bytes(l);
        let end = self.pos.saturating_add(n).saturating_add(32);
        if end > self.len {
            return Err(self.truncated(end));
        }
        buf.clear();
        buf.resize(n as usize, 0);
        self.take(buf)?;
        self.left -= 1;
        Ok(())
    }

    /// Skips the sections left, then checks the checksum and that nothing follows it. Returns
    /// the SHA-256 of the whole file.
    pub fn finish(mut self) -> Result<[u8; 32], RunError> {
        let mut buf = Vec::new();
        while self.left > 0 {
            self.next_section(&mut buf)?;
        }
        if self.pos + 32 != self.len {
            return Err(if self.pos + 32 > self.len {
                self.truncated(self.pos + 32)
            } else {
                RunError::Corrupt { path: self.path }
            });
        }
        let mut trailer = [0u8; 32];
        let got = fill(&mut self.r, &mut trailer, &self.path)?;
        let expected: [u8; 32] = self.sum.finalize().into();
        if got < 32 || trailer != expected {
            return Err(RunError::Corrupt { path: self.path });
        }
        self.whole.update(trailer);
        Ok(self.whole.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn container(sections: &[&[u8]]) -> Vec<u8> {
        Container {
            kind: FileKind::Inputs,
            fingerprint: [1; 32],
            plan_digest: [2; 32],
            key_id: [3; 32],
            sections: sections.iter().map(|s| s.to_vec()).collect(),
        }
        .to_bytes()
    }

    fn stream(b: &[u8]) -> Result<ContainerStream<&[u8]>, RunError> {
        ContainerStream::new(b, b.len() as u64, FileKind::Inputs, "f")
    }

    #[test]
    fn sections_come_back_in_order_with_the_file_digest() {
        let b = container(&[b"meta", &[9u8; 1000], b""]);
        let mut st = stream(&b).unwrap();
        assert_eq!(st.head.key_id, [3; 32]);
        assert_eq!(st.left(), 3);
        let mut buf = Vec::new();
        st.next_section(&mut buf).unwrap();
        assert_eq!(buf, b"meta");
        st.next_section(&mut buf).unwrap();
        assert_eq!(buf, vec![9u8; 1000]);
        // The last section is skipped by finish, which still checks the checksum.
        let digest = st.finish().unwrap();
        assert_eq!(digest[..], Sha256::digest(&b)[..]);
        // The whole-file parser agrees.
        let c = ContainerRef::from_bytes(&b, FileKind::Inputs, "f").unwrap();
        assert_eq!(c.sections.len(), 3);
    }

    #[test]
    fn damage_is_reported_as_the_whole_file_parser_reports_it() {
        let b = container(&[b"meta", &[9u8; 1000]]);
        let read_all = |b: &[u8]| -> Result<[u8; 32], RunError> {
            let mut st = stream(b)?;
            let mut buf = Vec::new();
            while st.left() > 0 {
                st.next_section(&mut buf)?;
            }
            st.finish()
        };
        // A flipped byte in a section, in the checksum, and a byte appended: corrupt.
        for i in [HEADER + 4 + 8 + 1, b.len() - 1] {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(
                matches!(read_all(&d), Err(RunError::Corrupt { .. })),
                "byte {i}"
            );
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(RunError::Corrupt { .. })));
        // Cut anywhere: truncated (or not a hecc file at all when the magic is cut).
        for cut in [4, 20, HEADER + 4, HEADER + 10, b.len() - 40, b.len() - 1] {
            let r = read_all(&b[..cut]);
            if cut < 8 {
                assert!(
                    matches!(r, Err(RunError::BadMagic { .. })),
                    "cut {cut}: {r:?}"
                );
            } else {
                assert!(
                    matches!(r, Err(RunError::Truncated { .. })),
                    "cut {cut}: {r:?}"
                );
            }
        }
        // A section length forged to 2^60: refused from the file's length, nothing allocated.
        let mut forged = b.clone();
        forged[HEADER + 4..HEADER + 12].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let mut st = stream(&forged).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            st.next_section(&mut buf),
            Err(RunError::Truncated { .. })
        ));
        assert!(buf.capacity() < 1 << 20);
        // Another kind of file.
        let keys = Container {
            kind: FileKind::EvalKeys,
            fingerprint: [1; 32],
            plan_digest: [2; 32],
            key_id: [3; 32],
            sections: vec![],
        }
        .to_bytes();
        assert!(matches!(stream(&keys), Err(RunError::WrongKind { .. })));
    }
}
