//! Image, label and reference readers (IDX, NPY, PNG) checked against a model's input: what
//! the compiler (calibration), the plaintext evaluation and the client all read. Depends on no
//! other module of the driver.

use crate::files::read_file;
use hecc_passes::plan::PlanTensor;
use miette::{miette, Result};
use std::path::Path;

/// Why an input file could not be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImageError {
    /// An input file could not be read or parsed.
    #[error("{path}: {detail}")]
    #[diagnostic(code(hecc::input))]
    Input {
        /// The file.
        path: String,
        /// Explanation.
        detail: String,
    },
}

/// Argmax of each row of a row-major matrix with `cols` columns.
pub fn argmax_rows(values: &[f64], cols: usize) -> Vec<usize> {
    values
        .chunks(cols.max(1))
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

/// A batch of images, already scaled to the model input's domain, row-major
/// `[count, per_image]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Values per image.
    pub per_image: usize,
    /// The values.
    pub data: Vec<f64>,
}

impl Images {
    /// Up to `n` images from image `start` on.
    pub fn slice(&self, start: usize, n: usize) -> Images {
        let start = start.min(self.count);
        let n = n.min(self.count - start);
        Images {
            count: n,
            per_image: self.per_image,
            data: self.data[start * self.per_image..(start + n) * self.per_image].to_vec(),
        }
    }

    /// The first `n` images.
    pub fn take(&self, n: usize) -> Images {
        let n = n.min(self.count);
        Images {
            count: n,
            per_image: self.per_image,
            data: self.data[..n * self.per_image].to_vec(),
        }
    }
}

/// A numeric array read from a file: its shape, values, and whether they were raw bytes.
struct RawArray {
    shape: Vec<usize>,
    values: Vec<f64>,
    bytes: bool,
}

pub(crate) fn input_err(path: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Input {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn parse_idx(path: &Path, b: &[u8]) -> Result<RawArray, ImageError> {
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err(input_err(path, "not an IDX file"));
    }
    let (width, bytes) = match b[2] {
        0x08 | 0x09 => (1, true),
        0x0B => (2, false),
        0x0C | 0x0D => (4, false),
        0x0E => (8, false),
        t => {
            return Err(input_err(
                path,
                format!("unknown IDX element type 0x{t:02x}"),
            ))
        }
    };
    let nd = b[3] as usize;
    let head = 4 + 4 * nd;
    if b.len() < head {
        return Err(input_err(path, "truncated IDX header"));
    }
    let shape: Vec<usize> = (0..nd)
        .map(|i| {
            u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize
        })
        .collect();
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let n = n.ok_or_else(|| input_err(path, "IDX dimensions overflow"))?;
    let need = n.checked_mul(width).and_then(|x| x.checked_add(head));
    if need != Some(b.len()) {
        return Err(input_err(
            path,
            format!(
                "IDX file has {} bytes, its header says {}",
                b.len(),
                need.unwrap_or(usize::MAX)
            ),
        ));
    }
    let d = &b[head..];
    let values: Vec<f64> = match b[2] {
        0x08 => d.iter().map(|&x| f64::from(x)).collect(),
        0x09 => d.iter().map(|&x| f64::from(x as i8)).collect(),
        0x0B => d
            .chunks(2)
            .map(|c| f64::from(i16::from_be_bytes([c[0], c[1]])))
            .collect(),
        0x0C => d
            .chunks(4)
            .map(|c| f64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        0x0D => d
            .chunks(4)
            .map(|c| f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => d
            .chunks(8)
            .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    };
    Ok(RawArray {
        shape,
        values,
        bytes: bytes && b[2] == 0x08,
    })
}

fn parse_npy(path: &Path, b: &[u8]) -> Result<RawArray, ImageError> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(input_err(path, "not a .npy file"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(input_err(path, format!("unsupported .npy version {v}"))),
    };
    let header = b
        .get(start..start + hlen)
        .ok_or_else(|| input_err(path, "truncated .npy header"))?;
    let header = std::str::from_utf8(header).map_err(|_| input_err(path, "bad .npy header"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = &header[i + key.len() + 2..];
        Some(rest.trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| input_err(path, "no dtype in .npy header"))?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(input_err(
            path,
            "Fortran-ordered .npy arrays are not supported",
        ));
    }
    let shape_txt = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| input_err(path, "no shape in .npy header"))?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| input_err(path, "bad shape in .npy header"))?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| input_err(path, format!(".npy shape {shape:?} overflows")))?;
    let d = &b[start + hlen..];
    let (width, bytes) = match descr {
        "|u1" | "<u1" => (1, true),
        "<f4" | "<i4" => (4, false),
        "<f8" | "<i8" => (8, false),
        other => return Err(input_err(path, format!("unsupported .npy dtype `{other}`"))),
    };
    if n.checked_mul(width) != Some(d.len()) {
        return Err(input_err(
            path,
            format!("{} data bytes for {n} elements of {width} bytes", d.len()),
        ));
    }
    let values: Vec<f64> = match descr {
        "|u1" | "<u1" => d.iter().map(|&x| f64::from(x)).collect(),
        "<f4" => d
            .chunks(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "<i4" => d
            .chunks(4)
            .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "<i8" => d
            .chunks(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64)
            .collect(),
        _ => d
            .chunks(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    };
    Ok(RawArray {
        shape,
        values,
        bytes,
    })
}

fn parse_png(path: &Path, b: &[u8]) -> Result<RawArray, ImageError> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(b));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec
        .read_info()
        .map_err(|e| input_err(path, format!("PNG: {e}")))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| input_err(path, format!("PNG: {e}")))?;
    // Read to the end marker: a file cut after the pixel data is still refused.
    reader
        .finish()
        .map_err(|e| input_err(path, format!("PNG: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let ch = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let values: Vec<f64> = px
        .chunks(ch)
        .take(w * h)
        .map(|p| match ch {
            1 | 2 => f64::from(p[0]),
            _ => (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
                .round(),
        })
        .collect();
    Ok(RawArray {
        shape: vec![1, h, w],
        values,
        bytes: true,
    })
}

/// Loads images from a `.npy`, IDX (MNIST format) or PNG file for the model input `input`.
/// Byte data (IDX `u8`, `.npy` `u1`, PNG) is mapped linearly from `[0, 255]` onto the input's
/// declared `range` (default `[0, 1]`); floating-point data is taken as is. A PNG holds one
/// image; the other formats hold `[count, ...]` with the input's per-image element count.
pub fn load_images(path: &Path, input: &PlanTensor) -> Result<Images> {
    let b = read_file(path)?;
    let raw = match sniff(path, &b)? {
        Format::Npy => parse_npy(path, &b)?,
        Format::Png => parse_png(path, &b)?,
        Format::Idx => parse_idx(path, &b)?,
    };
    let per: usize = input.shape.iter().product::<usize>().max(1);
    if raw.shape.len() < 2 && raw.values.len() != per {
        return Err(input_err(
            path,
            format!(
                "a 1-D array of {} values (labels?): images are stored as [count, ...]",
                raw.values.len()
            ),
        )
        .into());
    }
    if raw.values.len() % per != 0 || raw.values.is_empty() {
        return Err(input_err(
            path,
            format!(
                "{} values (shape {:?}) are not a whole number of images of shape {:?}",
                raw.values.len(),
                raw.shape,
                input.shape
            ),
        )
        .into());
    }
    let values = match image_order(&raw.shape, &input.shape) {
        ImageOrder::AsIs => raw.values,
        ImageOrder::HwcToChw { h, w, c } => hwc_to_chw(&raw.values, h, w, c),
        ImageOrder::Mismatch => {
            return Err(input_err(
                path,
                format!(
                    "images of shape {:?} do not match the model input {:?} (channel-first, or \
                     height x width x channels, is expected)",
                    &raw.shape[1..],
                    input.shape
                ),
            )
            .into())
        }
    };
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(input_err(
            path,
            format!(
                "value {} at image {}, element {} (flat index {k}) is not a finite number",
                values[k],
                k / per,
                k % per
            ),
        )
        .into());
    }
    let [lo, hi] = input.range.unwrap_or([0.0, 1.0]);
    let data = if raw.bytes {
        values.iter().map(|&x| lo + (hi - lo) * x / 255.0).collect()
    } else {
        values
    };
    Ok(Images {
        count: data.len() / per,
        per_image: per,
        data,
    })
}

/// Checks images against the model input's declared range (default `[0, 1]`): values outside
/// it would leave the intervals the plan's approximations and scales were chosen for, and the
/// encrypted result would be wrong without a sign. Refuses them, naming the first one, or with
/// `clamp` clamps them and returns a warning.
pub fn check_input_range(
    images: &mut Images,
    input: &PlanTensor,
    clamp: bool,
) -> Result<Option<String>> {
    let [lo, hi] = input.range.unwrap_or([0.0, 1.0]);
    if let Some(k) = images.data.iter().position(|v| !v.is_finite()) {
        let per = images.per_image.max(1);
        return Err(miette!(
            "input value {} at image {}, element {} is not a finite number",
            images.data[k],
            k / per,
            k % per
        ));
    }
    let tol = 1e-9 * (hi - lo).abs().max(1.0);
    let outside = |v: f64| v < lo - tol || v > hi + tol;
    let count = images.data.iter().filter(|&&v| outside(v)).count();
    if count == 0 {
        return Ok(None);
    }
    let per = images.per_image.max(1);
    let k = images.data.iter().position(|&v| outside(v)).unwrap_or(0);
    let first = format!(
        "{} at image {}, element {}",
        images.data[k],
        k / per,
        k % per
    );
    if !clamp {
        return Err(miette!(
            help = "declare the model's real input range (--input-range LO,HI), or clamp the \
                    values (`hecc encrypt --clamp`)",
            "{count} input values are outside the model input `{}`'s range [{lo}, {hi}] (first: {first})",
            input.name
        ));
    }
    for v in images.data.iter_mut() {
        *v = v.clamp(lo, hi);
    }
    Ok(Some(format!(
        "{count} input values were outside the range [{lo}, {hi}] and were clamped (first: {first})"
    )))
}

/// How a file's per-image axes relate to the model input's `[c, h, w]` (or other) shape.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ImageOrder {
    /// Same element order (equal shapes, or equal after dropping axes of length 1, or a
    /// file without per-image axes).
    AsIs,
    /// The file is `[n, h, w, c]` (e.g. CIFAR-10 as distributed) for a `[c, h, w]` input.
    HwcToChw { h: usize, w: usize, c: usize },
    /// Same number of elements per image, but a layout that is neither.
    Mismatch,
}

pub(crate) fn image_order(file: &[usize], input: &[usize]) -> ImageOrder {
    let per_image = file.get(1..).unwrap_or(&[]);
    let squeeze = |d: &[usize]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
    if per_image.len() <= 1 || squeeze(per_image) == squeeze(input) {
        return ImageOrder::AsIs;
    }
    // A flat feature input (an MLP) takes each image flattened in row-major order.
    if let [f] = input {
        if per_image.iter().product::<usize>() == *f {
            return ImageOrder::AsIs;
        }
    }
    if let ([c, h, w], [fh, fw, fc]) = (input, per_image) {
        if (fh, fw, fc) == (h, w, c) {
            return ImageOrder::HwcToChw {
                h: *h,
                w: *w,
                c: *c,
            };
        }
    }
    ImageOrder::Mismatch
}

/// Reorders every image of `v` from height x width x channels to channels x height x width.
pub(crate) fn hwc_to_chw(v: &[f64], h: usize, w: usize, c: usize) -> Vec<f64> {
    let per = h * w * c;
    let mut out = vec![0.0; v.len()];
    for (src, dst) in v.chunks(per).zip(out.chunks_mut(per)) {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    dst[(ch * h + y) * w + x] = src[(y * w + x) * c + ch];
                }
            }
        }
    }
    out
}

/// Loads reference outputs (`.npy`, one row of scores per image: a framework's logits or
/// probabilities) and returns them with the number of values per row.
pub fn load_reference(path: &Path) -> Result<(Vec<f64>, usize)> {
    let b = read_file(path)?;
    let raw = parse_npy(path, &b)?;
    let cols = match raw.shape.as_slice() {
        [_, c] => *c,
        [c] => *c,
        s => {
            return Err(miette!(
                "{}: reference outputs must be an images x classes array, found shape {s:?}",
                path.display()
            ))
        }
    };
    if raw.values.iter().any(|v| !v.is_finite()) {
        return Err(miette!(
            "{}: reference outputs hold NaN or infinite values",
            path.display()
        ));
    }
    Ok((raw.values, cols.max(1)))
}

/// The first `count` labels of the file at `path` ([`load_labels`]); an error if it has fewer.
pub fn load_labels_for(path: &Path, count: usize) -> Result<Vec<usize>> {
    let mut l = load_labels(path)?;
    if l.len() < count {
        return Err(miette!(
            "{} has {} labels for {} images",
            path.display(),
            l.len(),
            count
        ));
    }
    l.truncate(count);
    Ok(l)
}

/// The most classes a label may name.
const MAX_LABEL: f64 = 65535.0;

/// Loads class labels (IDX `u8` labels or a `.npy` integer vector): a 1-D array of whole
/// numbers from 0 to 65535.
pub fn load_labels(path: &Path) -> Result<Vec<usize>> {
    let b = read_file(path)?;
    let raw = match sniff(path, &b)? {
        Format::Npy => parse_npy(path, &b)?,
        Format::Idx => parse_idx(path, &b)?,
        Format::Png => return Err(input_err(path, "a PNG image, not labels").into()),
    };
    if raw.shape.len() != 1 {
        return Err(input_err(
            path,
            format!(
                "labels are a 1-D array; this one has shape {:?} (images or logits?)",
                raw.shape
            ),
        )
        .into());
    }
    if let Some(k) = raw
        .values
        .iter()
        .position(|&x| !(x.fract() == 0.0 && (0.0..=MAX_LABEL).contains(&x)))
    {
        return Err(input_err(
            path,
            format!(
                "label {k} is {}: labels are whole numbers from 0 to {MAX_LABEL}",
                raw.values[k]
            ),
        )
        .into());
    }
    Ok(raw.values.iter().map(|&x| x as usize).collect())
}

/// The formats images and labels come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Npy,
    Png,
    Idx,
}

/// The format of `b`, from its first bytes; refused when the file's extension names another
/// format (a renamed file is usually the wrong file).
fn sniff(path: &Path, b: &[u8]) -> Result<Format, ImageError> {
    let found = if b.starts_with(b"\x93NUMPY") {
        Format::Npy
    } else if b.starts_with(b"\x89PNG") {
        Format::Png
    } else {
        Format::Idx
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let named = match ext.as_str() {
        "npy" => Some(Format::Npy),
        "png" => Some(Format::Png),
        _ if ext.starts_with("idx") || ext.ends_with("ubyte") => Some(Format::Idx),
        _ => None,
    };
    match named {
        Some(n) if n != found => Err(input_err(
            path,
            format!(
                "named as {} but its content is {}",
                format_name(n),
                format_name(found)
            ),
        )),
        _ => Ok(found),
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Npy => "a .npy array",
        Format::Png => "a PNG image",
        Format::Idx => "an IDX file (or not an array format)",
    }
}

// ------------------------------------------------------------------ encryption

#[cfg(test)]
mod tests {
    use super::{hwc_to_chw, image_order, ImageOrder};

    #[test]
    fn image_axes_are_matched_or_reordered() {
        assert_eq!(image_order(&[5, 28, 28], &[1, 28, 28]), ImageOrder::AsIs);
        assert_eq!(image_order(&[5, 784], &[1, 28, 28]), ImageOrder::AsIs);
        assert_eq!(image_order(&[5, 3, 32, 32], &[3, 32, 32]), ImageOrder::AsIs);
        assert_eq!(
            image_order(&[5, 32, 32, 3], &[3, 32, 32]),
            ImageOrder::HwcToChw { h: 32, w: 32, c: 3 }
        );
        assert_eq!(
            image_order(&[5, 32, 3, 32], &[3, 32, 32]),
            ImageOrder::Mismatch
        );
        assert_eq!(
            image_order(&[5, 14, 56], &[1, 28, 28]),
            ImageOrder::Mismatch
        );
    }

    #[test]
    fn hwc_images_become_channel_first() {
        // Two 1x2 images with 3 channels: value = 100 * image + 10 * x + channel.
        let hwc: Vec<f64> = (0..2)
            .flat_map(|i| {
                (0..2).flat_map(move |x| (0..3).map(move |c| (100 * i + 10 * x + c) as f64))
            })
            .collect();
        let chw = hwc_to_chw(&hwc, 1, 2, 3);
        let want: Vec<f64> = (0..2)
            .flat_map(|i| {
                (0..3).flat_map(move |c| (0..2).map(move |x| (100 * i + 10 * x + c) as f64))
            })
            .collect();
        assert_eq!(chw, want);
    }
}
