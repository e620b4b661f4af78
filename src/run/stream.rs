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

    /// Reads the next section's length, checked against what the file can still hold.
    fn section_len(&mut self) -> Result<u64, RunError> {
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
        Ok(n)
    }

    /// Reads the next section into `buf` (replacing its contents).
    pub fn next_section(&mut self, buf: &mut Vec<u8>) -> Result<(), RunError> {
        let n = self.section_len()?;
        buf.clear();
        buf.resize(n as usize, 0);
        self.take(buf)?;
        self.left -= 1;
        Ok(())
    }

    /// Reads the next section's length and hands `parse` a reader of exactly its bytes (and
    /// the length), so a large section is parsed as it streams in; what `parse` leaves unread
    /// is read and dropped. Every byte is hashed for the checksum, and into `observe` (after the
    /// section's length, as [`key_id_of`] hashes sections) when given. Act on the result only
    /// after [`Self::finish`] succeeds.
    pub fn next_section_parsed<T>(
        &mut self,
        mut observe: Option<&mut Sha256>,
        parse: impl FnOnce(&mut dyn Read, u64) -> T,
    ) -> Result<T, RunError> {
        let n = self.section_len()?;
        let end = self.pos + n + 32;
        if let Some(h) = observe.as_deref_mut() {
            h.update(n.to_le_bytes());
        }
        let mut section = SectionRead {
            r: &mut self.r,
            left: n,
            sum: &mut self.sum,
            whole: &mut self.whole,
            observe,
            error: None,
        };
        let out = parse(&mut section, n);
        // The rest of the section, for the checksum.
        let mut sink = vec![0u8; 1 << 16];
        while section.left > 0 && section.error.is_none() {
            if section.read(&mut sink).unwrap_or(0) == 0 {
                break;
            }
        }
        if let Some(e) = section.error.take() {
            return Err(io(&self.path, e));
        }
        if section.left > 0 {
            return Err(self.truncated(end));
        }
        self.pos += n;
        self.left -= 1;
        Ok(out)
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

/// The bytes of one section, hashed as they are read.
struct SectionRead<'a, R> {
    r: &'a mut R,
    left: u64,
    sum: &'a mut Sha256,
    whole: &'a mut Sha256,
    observe: Option<&'a mut Sha256>,
    /// A failure of the file itself (not the end of the section), reported by the stream.
    error: Option<std::io::Error>,
}

impl<R: Read> Read for SectionRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let got = loop {
            match self.r.read(&mut buf[..want]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
                    return Err(e);
                }
                Ok(n) => break n,
            }
        };
        let b = &buf[..got];
        self.sum.update(b);
        self.whole.update(b);
        if let Some(h) = self.observe.as_deref_mut() {
            h.update(b);
        }
        self.left -= got as u64;
        Ok(got)
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

    #[test]
    fn a_section_parsed_as_it_streams_is_hashed_whole() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let b = container(&[b"meta", &big, b"tail"]);
        let mut st = stream(&b).unwrap();
        let mut id = Sha256::new();
        id.update(b"x");
        // The parser reads only part of the section; the rest is read for the checksum.
        let first = st
            .next_section_parsed(Some(&mut id), |r, len| {
                assert_eq!(len, 4);
                let mut v = Vec::new();
                r.read_to_end(&mut v).map(|_| v)
            })
            .unwrap()
            .unwrap();
        assert_eq!(first, b"meta");
        let head = st
            .next_section_parsed(Some(&mut id), |r, len| {
                assert_eq!(len, big.len() as u64);
                let mut v = vec![0u8; 10];
                r.read_exact(&mut v).map(|_| v)
            })
            .unwrap()
            .unwrap();
        assert_eq!(head, &big[..10]);
        assert_eq!(st.position(), (b.len() - 32 - 4 - 8) as u64);
        assert_eq!(st.finish().unwrap()[..], Sha256::digest(&b)[..]);
        // `observe` saw each section's length and bytes, as a key id hashes them.
        let mut want = Sha256::new();
        want.update(b"x");
        for s in [&b"meta"[..], &big[..]] {
            want.update((s.len() as u64).to_le_bytes());
            want.update(s);
        }
        assert_eq!(id.finalize(), want.finalize());
        // A flipped byte inside the streamed section: the parse may succeed, finish refuses.
        let mut bad = b.clone();
        let at = b.len() / 2;
        bad[at] ^= 1;
        let mut st = stream(&bad).unwrap();
        for _ in 0..2 {
            st.next_section_parsed(None, |r, _| std::io::copy(r, &mut std::io::sink()))
                .unwrap()
                .unwrap();
        }
        assert!(matches!(st.finish(), Err(RunError::Corrupt { .. })));
    }
}
