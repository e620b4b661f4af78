//! Weight files: safetensors, `.npy` and `.npz`, read into a [`Weights`] table of `f64` tensors.
//!
//! * `.safetensors`: every tensor, by its name; dtypes F16, BF16, F32, F64 and the integer types
//!   are converted to `f64`.
//! * `.npy`: a single array (format versions 1-3, little-endian `f2`/`f4`/`f8`/integer dtypes,
//!   C or Fortran order), stored under the file stem.
//! * `.npz`: a zip of `.npy` members as written by `numpy.savez` (stored, not compressed; zip64
//!   sizes accepted); member `conv1.weight.npy` becomes weight `conv1.weight`.
//!
//! Every function returns a [`WeightsError`] on malformed input; none panics. Tensor shapes
//! and the total number of values are checked against the [`limits`](crate::tensor::limits)
//! before any tensor is decoded.

use std::path::Path;

use ndarray::{IxDyn, ShapeBuilder};

use crate::tensor::limits::{add_parameters, check_weight};
use crate::tensor::{Tensor, Weights};

/// Why a weights file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {message}")]
    Io {
        /// The path as given.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The file is not a valid weights file of its format.
    #[error("invalid {format} data{}: {message}", member.as_ref().map(|m| format!(" in `{m}`")).unwrap_or_default())]
    Format {
        /// `safetensors`, `npy` or `npz`.
        format: &'static str,
        /// Tensor or member concerned, if any.
        member: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The file extension is not one of `.safetensors`, `.npy`, `.npz`.
    #[error("unsupported weights file `{path}`: expected .safetensors, .npy or .npz")]
    Extension {
        /// The path.
        path: String,
    },
}

fn fmt_err(format: &'static str, member: Option<&str>, message: impl Into<String>) -> WeightsError {
    WeightsError::Format {
        format,
        member: member.map(str::to_string),
        message: message.into(),
    }
}

/// Reads a weights file, choosing the format by extension.
pub fn load_weights(path: &Path) -> Result<Weights, WeightsError> {
    let bytes = std::fs::read(path).map_err(|e| WeightsError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => read_safetensors(&bytes),
        Some("npz") => read_npz(&bytes),
        Some("npy") => {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("weight")
                .to_string();
            let t = read_npy(&bytes).map_err(|e| match e {
                WeightsError::Format {
                    format, message, ..
                } => WeightsError::Format {
                    format,
                    member: Some(name.clone()),
                    message,
                },
                other => other,
            })?;
            Ok(Weights::from([(name, t)]))
        }
        _ => Err(WeightsError::Extension {
            path: path.display().to_string(),
        }),
    }
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Decodes little-endian scalars of `size` bytes with `conv`.
fn decode<const N: usize>(data: &[u8], conv: impl Fn([u8; N]) -> f64) -> Vec<f64> {
    data.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect()
}

/// Converts raw little-endian data of the given dtype code to `f64` values.
/// Codes: `f2 f4 f8 bf16 i1 i2 i4 i8 u1 u2 u4 u8 b1`.
pub(crate) fn decode_le(code: &str, data: &[u8]) -> Option<Vec<f64>> {
    Some(match code {
        "f2" => decode::<2>(data, |b| f16_to_f64(u16::from_le_bytes(b))),
        "bf16" => decode::<2>(data, |b| {
            f32::from_bits((u16::from_le_bytes(b) as u32) << 16) as f64
        }),
        "f4" => decode::<4>(data, |b| f32::from_le_bytes(b) as f64),
        "f8" => decode::<8>(data, f64::from_le_bytes),
        "i1" => data.iter().map(|&b| b as i8 as f64).collect(),
        "u1" | "b1" => data.iter().map(|&b| b as f64).collect(),
        "i2" => decode::<2>(data, |b| i16::from_le_bytes(b) as f64),
        "u2" => decode::<2>(data, |b| u16::from_le_bytes(b) as f64),
        "i4" => decode::<4>(data, |b| i32::from_le_bytes(b) as f64),
        "u4" => decode::<4>(data, |b| u32::from_le_bytes(b) as f64),
        "i8" => decode::<8>(data, |b| i64::from_le_bytes(b) as f64),
        "u8" => decode::<8>(data, |b| u64::from_le_bytes(b) as f64),
        _ => return None,
    })
}

fn dtype_size(code: &str) -> usize {
    match code {
        "i1" | "u1" | "b1" => 1,
        "f2" | "bf16" | "i2" | "u2" => 2,
        "f4" | "i4" | "u4" => 4,
        _ => 8,
    }
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(bytes: &[u8]) -> Result<Weights, WeightsError> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| fmt_err("safetensors", None, e.to_string()))?;
    // Limits first, on the header alone.
    let mut total = 0usize;
    for (name, view) in st.tensors() {
        check_weight(view.shape())
            .and_then(|n| add_parameters(&mut total, n))
            .map_err(|m| fmt_err("safetensors", Some(&name), m))?;
    }
    let mut out = Weights::new();
    for (name, view) in st.tensors() {
        let code = match view.dtype() {
            Dtype::F16 => "f2",
            Dtype::BF16 => "bf16",
            Dtype::F32 => "f4",
            Dtype::F64 => "f8",
            Dtype::I8 => "i1",
            Dtype::U8 => "u1",
            Dtype::BOOL => "b1",
            Dtype::I16 => "i2",
            Dtype::U16 => "u2",
            Dtype::I32 => "i4",
            Dtype::U32 => "u4",
            Dtype::I64 => "i8",
            Dtype::U64 => "u8",
            other => {
                return Err(fmt_err(
                    "safetensors",
                    Some(&name),
                    format!("unsupported dtype {other:?}"),
                ))
            }
        };
        let vals = decode_le(code, view.data())
            .ok_or_else(|| fmt_err("safetensors", Some(&name), "unsupported dtype"))?;
        let t = Tensor::from_shape_vec(IxDyn(view.shape()), vals)
            .map_err(|e| fmt_err("safetensors", Some(&name), e.to_string()))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes `f32` safetensors bytes for the given weights (used by the reference-weight generator
/// and tests).
pub fn write_safetensors_f32(weights: &Weights) -> Result<Vec<u8>, WeightsError> {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .map(|(k, t)| {
            let bytes = t.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
            (k.clone(), t.shape().to_vec(), bytes)
        })
        .collect();
    let mut views = Vec::with_capacity(bufs.len());
    for (k, shape, bytes) in &bufs {
        let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
            .map_err(|e| fmt_err("safetensors", Some(k), e.to_string()))?;
        views.push((k.clone(), v));
    }
    safetensors::serialize(views, &None).map_err(|e| fmt_err("safetensors", None, e.to_string()))
}

/// Reads one `.npy` array.
pub fn read_npy(bytes: &[u8]) -> Result<Tensor, WeightsError> {
    let err = |m: &str| fmt_err("npy", None, m);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(fmt_err(
                "npy",
                None,
                format!("unsupported format version {v}"),
            ))
        }
    };
    let header = bytes
        .get(start..start.saturating_add(hlen))
        .ok_or_else(|| err("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| err("header has no 'descr'"))?;
    let descr = match descr.chars().next() {
        Some(q @ ('\'' | '"')) => descr[1..].split(q).next().unwrap_or(""),
        _ => return Err(err("'descr' is not a string")),
    };
    let fortran = dict_value(header, "fortran_order")
        .map(|v| v.starts_with("True"))
        .unwrap_or(false);
    let shape_txt = dict_value(header, "shape").ok_or_else(|| err("header has no 'shape'"))?;
    let inner = shape_txt
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| err("malformed 'shape'"))?;
    let mut shape = Vec::new();
    for p in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(
            p.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| err("malformed 'shape'"))?,
        );
    }
    let (endian, code) = descr.split_at(descr.len().min(1));
    if endian == ">" {
        return Err(fmt_err(
            "npy",
            None,
            format!("big-endian dtype {descr} is not supported"),
        ));
    }
    let code = if endian == "<" || endian == "|" || endian == "=" {
        code
    } else {
        descr
    };
    let n = check_weight(&shape).map_err(|m| fmt_err("npy", None, m))?;
    let data = bytes.get(start + hlen..).unwrap_or_default();
    let need = n
        .checked_mul(dtype_size(code))
        .ok_or_else(|| err("shape too large"))?;
    if data.len() < need {
        return Err(fmt_err(
            "npy",
            None,
            format!(
                "truncated data: {} bytes for {n} elements of {descr}",
                data.len()
            ),
        ));
    }
    let vals = decode_le(code, &data[..need])
        .ok_or_else(|| fmt_err("npy", None, format!("unsupported dtype {descr}")))?;
    let t = if fortran {
        Tensor::from_shape_vec(IxDyn(&shape).f(), vals)
    } else {
        Tensor::from_shape_vec(IxDyn(&shape), vals)
    };
    t.map_err(|e| fmt_err("npy", None, e.to_string()))
}

/// The text after `'key':` in a Python dict literal, up to the end of the header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let colon = rest.find(':')?;
    Some(rest[colon + 1..].trim_start())
}

fn le_u16(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
}

fn le_u32(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at.checked_add(4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

fn le_u64(b: &[u8], at: usize) -> Option<usize> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    usize::try_from(u64::from_le_bytes(a)).ok()
}

/// Reads every `.npy` member of an (uncompressed) `.npz` archive.
pub fn read_npz(bytes: &[u8]) -> Result<Weights, WeightsError> {
    let err = |m: String| fmt_err("npz", None, m);
    // End of central directory: signature PK\x05\x06, searched from the end.
    let eocd = (0..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| err("not a zip archive (no end-of-central-directory record)".into()))?;
    let count = le_u16(bytes, eocd + 10).ok_or_else(|| err("truncated archive".into()))?;
    let mut at = le_u32(bytes, eocd + 16).ok_or_else(|| err("truncated archive".into()))?;
    let mut out = Weights::new();
    let mut total = 0usize;
    for _ in 0..count {
        let trunc = || err("truncated central directory".into());
        if bytes.get(at..at + 4) != Some(&[0x50, 0x4b, 0x01, 0x02]) {
            return Err(trunc());
        }
        let method = le_u16(bytes, at + 10).ok_or_else(trunc)?;
        let mut csize = le_u32(bytes, at + 20).ok_or_else(trunc)?;
        let nlen = le_u16(bytes, at + 28).ok_or_else(trunc)?;
        let xlen = le_u16(bytes, at + 30).ok_or_else(trunc)?;
        let clen = le_u16(bytes, at + 32).ok_or_else(trunc)?;
        let mut local = le_u32(bytes, at + 42).ok_or_else(trunc)?;
        let name = bytes.get(at + 46..at + 46 + nlen).ok_or_else(trunc)?;
        let name = String::from_utf8_lossy(name).to_string();
        let extra = bytes
            .get(at + 46 + nlen..at + 46 + nlen + xlen)
            .ok_or_else(trunc)?;
        // Zip64 extended information: fields present only for 0xFFFFFFFF entries, in order
        // uncompressed size, compressed size, local header offset.
        let usize_raw = le_u32(bytes, at + 24).ok_or_else(trunc)?;
        let mut x = 0;
        while x + 4 <= extra.len() {
            let id = le_u16(extra, x).unwrap_or(0);
            let len = le_u16(extra, x + 2).unwrap_or(0);
            if id == 1 {
                let mut f = x + 4;
                if usize_raw == 0xFFFF_FFFF {
                    f += 8;
                }
                if csize == 0xFFFF_FFFF {
                    csize = le_u64(extra, f).ok_or_else(trunc)?;
                    f += 8;
                }
                if local == 0xFFFF_FFFF {
                    local = le_u64(extra, f).ok_or_else(trunc)?;
                }
            }
            x += 4 + len;
        }
        at += 46 + nlen + xlen + clen;
        if method != 0 {
            return Err(fmt_err(
                "npz",
                Some(&name),
                "compressed member (numpy.savez_compressed) is not supported; write it with numpy.savez",
            ));
        }
        if bytes.get(local..local.saturating_add(4)) != Some(&[0x50, 0x4b, 0x03, 0x04]) {
            return Err(fmt_err("npz", Some(&name), "bad local header"));
        }
        let lnlen = le_u16(bytes, local.saturating_add(26)).ok_or_else(trunc)?;
        let lxlen = le_u16(bytes, local.saturating_add(28)).ok_or_else(trunc)?;
        let data_at = local.saturating_add(30 + lnlen + lxlen);
        let data = bytes
            .get(data_at..data_at.saturating_add(csize))
            .ok_or_else(|| fmt_err("npz", Some(&name), "member data is truncated"))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let t = read_npy(data).map_err(|e| match e {
            WeightsError::Format { message, .. } => fmt_err("npz", Some(&name), message),
            other => other,
        })?;
        add_parameters(&mut total, t.len()).map_err(|m| fmt_err("npz", Some(&name), m))?;
        out.insert(key, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn npy_f4_c_and_fortran_order() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let c = read_npy(&npy("<f4", "(2, 3)", false, &data)).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c[[0, 2]], 3.0);
        assert_eq!(c[[1, 0]], 4.0);
        let f = read_npy(&npy("<f4", "(2, 3)", true, &data)).unwrap();
        assert_eq!(f[[0, 1]], 3.0);
        assert_eq!(f[[1, 0]], 2.0);
    }

    #[test]
    fn npy_rejects_truncated_and_garbage() {
        let data = 1f64.to_le_bytes();
        assert!(read_npy(&npy("<f8", "(2,)", false, &data)).is_err());
        assert!(read_npy(b"hello world").is_err());
        assert!(read_npy(&npy("<c16", "(1,)", false, &[0; 16])).is_err());
    }

    #[test]
    fn safetensors_round_trip() {
        let mut w = Weights::new();
        w.insert(
            "a".into(),
            Tensor::from_shape_vec(IxDyn(&[2, 2]), vec![1., -2., 0.5, 4.]).unwrap(),
        );
        let bytes = write_safetensors_f32(&w).unwrap();
        assert_eq!(read_safetensors(&bytes).unwrap(), w);
        assert!(read_safetensors(&bytes[..bytes.len() - 3]).is_err());
    }
}
