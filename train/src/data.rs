//! IDX datasets (MNIST, Fashion-MNIST, 8x8 digits, CIFAR test slices) as training batches.
//!
//! [`read_idx`] decodes an unsigned-byte IDX file (magic `0 0 8 rank`, big-endian dims). Images
//! of rank 3 are `(N, H, W)` (one channel) and of rank 4 `(N, H, W, C)` (channels last, as the
//! CIFAR slices are stored); both become channel-first `(N, C, H, W)` [`Dataset`]s whose values
//! are the raw pixels divided by the format's maximum (255, or 16 for the 8x8 digits) and mapped
//! linearly to the spec's declared input range (`[0, 1]` by default). That is exactly what the
//! graph's `input` node expects; its mean/std normalisation is part of the network.
//!
//! Contract: malformed files (bad magic, truncated data, label/image count mismatch, labels
//! that do not fit the class count) are reported as [`TrainError::Data`], never a panic.

use std::path::{Path, PathBuf};

use crate::kernels::Real;
use crate::TrainError;

/// Images (channel-first, scaled to the input range) and their integer labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `len * C * H * W` values, image after image, each `(C, H, W)` row-major.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Per-image shape `[C, H, W]`.
    pub shape: [usize; 3],
}

/// A train and a test split.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Training images.
    pub train: Dataset,
    /// Held-out test images.
    pub test: Dataset,
}

fn data_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Data {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Decodes an unsigned-byte IDX file: returns its dimensions and its data bytes.
pub fn read_idx(bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>), String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic number)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("IDX dimensions overflow")?;
    let data = &bytes[header..];
    if data.len() < count {
        return Err(format!(
            "IDX data truncated: {} bytes for dimensions {dims:?} ({count} expected)",
            data.len()
        ));
    }
    Ok((dims, data[..count].to_vec()))
}

impl Dataset {
    /// Reads an image file and a label file. Pixels are divided by `max_value` and mapped to
    /// `range`.
    pub fn from_idx_files(
        images: &Path,
        labels: &Path,
        max_value: f32,
        range: [f64; 2],
    ) -> Result<Dataset, TrainError> {
        let ib = std::fs::read(images).map_err(|e| data_err(images, e.to_string()))?;
        let lb = std::fs::read(labels).map_err(|e| data_err(labels, e.to_string()))?;
        let (idims, ibytes) = read_idx(&ib).map_err(|m| data_err(images, m))?;
        let (ldims, lbytes) = read_idx(&lb).map_err(|m| data_err(labels, m))?;
        if ldims.len() != 1 {
            return Err(data_err(
                labels,
                format!("labels must be rank 1, got {ldims:?}"),
            ));
        }
        let (n, shape, channels_last) = match idims.as_slice() {
            [n, h, w] => (*n, [1, *h, *w], false),
            [n, h, w, c] => (*n, [*c, *h, *w], true),
            d => {
                return Err(data_err(
                    images,
                    format!("images must be (N, H, W) or (N, H, W, C), got {d:?}"),
                ))
            }
        };
        if ldims[0] != n {
            return Err(data_err(
                labels,
                format!("{} labels for {n} images", ldims[0]),
            ));
        }
        let [c, h, w] = shape;
        let per = c * h * w;
        let (lo, hi) = (range[0] as f32, range[1] as f32);
        let scale = |p: u8| lo + (p as f32 / max_value) * (hi - lo);
        let mut out = vec![0f32; n * per];
        for i in 0..n {
            let src = &ibytes[i * per..(i + 1) * per];
            let dst = &mut out[i * per..(i + 1) * per];
            if channels_last {
                for y in 0..h {
                    for x in 0..w {
                        for ch in 0..c {
                            dst[(ch * h + y) * w + x] = scale(src[(y * w + x) * c + ch]);
                        }
                    }
                }
            } else {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = scale(s);
                }
            }
        }
        Ok(Dataset {
            images: out,
            labels: lbytes,
            shape,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image (`C * H * W`).
    pub fn per_image(&self) -> usize {
        self.shape.iter().product()
    }

    /// The images `start .. start + len` (clamped to the dataset).
    pub fn slice(&self, start: usize, len: usize) -> Dataset {
        let start = start.min(self.len());
        let end = (start + len).min(self.len());
        let per = self.per_image();
        Dataset {
            images: self.images[start * per..end * per].to_vec(),
            labels: self.labels[start..end].to_vec(),
            shape: self.shape,
        }
    }

    /// The images at `idx`, row-major `(B, C, H, W)` in `F`, and their labels. Indices
    /// past the end are an error.
    pub fn batch<F: Real>(&self, idx: &[usize]) -> Result<(Vec<F>, Vec<usize>), TrainError> {
        let per = self.per_image();
        let mut buf = Vec::with_capacity(idx.len() * per);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            if i >= self.len() {
                return Err(TrainError::Config(format!(
                    "image index {i} out of range ({} images)",
                    self.len()
                )));
            }
            buf.extend(
                self.images[i * per..(i + 1) * per]
                    .iter()
                    .map(|&v| F::of(v as f64)),
            );
            labels.push(self.labels[i] as usize);
        }
        Ok((buf, labels))
    }

    /// All images as an `f64` array `[N, C, H, W]` (the input of
    /// [`hecc_ir::tensor::eval::eval_batch`]).
    pub fn to_ndarray(&self) -> Result<hecc_ir::tensor::Tensor, TrainError> {
        let [c, h, w] = self.shape;
        let v: Vec<f64> = self.images.iter().map(|&x| x as f64).collect();
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[self.len(), c, h, w]), v)
            .map_err(|e| TrainError::Backend(e.to_string()))
    }
}

fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<Option<PathBuf>, TrainError> {
    let rd = std::fs::read_dir(dir).map_err(|e| data_err(dir, e.to_string()))?;
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

/// Loads a dataset directory in the layout of `scripts/fetch-datasets.sh`:
///
/// * `train-images-idx3-ubyte` / `train-labels-idx1-ubyte` and `t10k-*` (MNIST, Fashion-MNIST);
/// * otherwise one `*-images-idx{3,4}-ubyte` / `*-labels-idx1-ubyte` pair (8x8 digits, CIFAR
///   slices), split deterministically: the first 80% train, the last 20% test.
///
/// Files whose name starts with `digits` hold values 0..16; all others 0..255.
pub fn load_dir(dir: &Path, range: [f64; 2]) -> Result<Splits, TrainError> {
    let max_of = |p: &Path| {
        let digits = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("digits"));
        if digits {
            16.0
        } else {
            255.0
        }
    };
    let train_i = dir.join("train-images-idx3-ubyte");
    if train_i.exists() {
        let load = |stem: &str| {
            let i = dir.join(format!("{stem}-images-idx3-ubyte"));
            let l = dir.join(format!("{stem}-labels-idx1-ubyte"));
            Dataset::from_idx_files(&i, &l, max_of(&i), range)
        };
        return Ok(Splits {
            train: load("train")?,
            test: load("t10k")?,
        });
    }
    let images = find_file(dir, |n| {
        n.ends_with("-images-idx3-ubyte") || n.ends_with("-images-idx4-ubyte")
    })?
    .ok_or_else(|| {
        data_err(
            dir,
            "no `*-images-idx3-ubyte` or `*-images-idx4-ubyte` file",
        )
    })?;
    let labels = find_file(dir, |n| n.ends_with("-labels-idx1-ubyte"))?
        .ok_or_else(|| data_err(dir, "no `*-labels-idx1-ubyte` file"))?;
    let all = Dataset::from_idx_files(&images, &labels, max_of(&images), range)?;
    let n_train = all.len() * 4 / 5;
    Ok(Splits {
        train: all.slice(0, n_train),
        test: all.slice(n_train, all.len() - n_train),
    })
}
