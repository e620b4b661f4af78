//! Value types of the HE IR: [`Level`], [`LogScale`], [`Layout`] and [`Type`].
//!
//! Contract: every HE value carries a [`Type`] that says whether it is a
//! ciphertext or a plaintext, at which level of the modulus chain it lives,
//! at which scale (log2) its slots are encoded, how many slots it has and how
//! tensor elements are laid out in those slots ([`LayoutId`], an index into the
//! module's layout table). Ciphertexts additionally carry their size (number of
//! polynomials: 2 normally, 3 after a ciphertext-ciphertext multiplication and
//! before relinearisation).

use std::fmt;

/// A level in the RNS modulus chain: a value at level `l` is defined modulo
/// `q_0 * ... * q_l`. Rescaling lowers the level by one; level 0 cannot be
/// rescaled any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Level(pub u32);

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The base-2 logarithm of a CKKS scale (`s = 40.0` means the slots are
/// encoded multiplied by `2^40`). Products add log-scales; rescaling by a prime
/// `q` subtracts `log2(q)`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct LogScale(pub f64);

impl LogScale {
    /// True when the two log-scales differ by at most `tolerance` bits.
    pub fn close_to(self, other: LogScale, tolerance: f64) -> bool {
        (self.0 - other.0).abs() <= tolerance
    }
}

impl fmt::Display for LogScale {
    /// Prints with Rust's shortest round-trip float form (`40.0`, `39.99999`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Index of a [`Layout`] in a module's layout table. Types refer to layouts by
/// id so a layout is stored and printed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayoutId(pub u32);

/// How the elements of a tensor are placed in the slots of a ciphertext or
/// plaintext.
///
/// The variants are attributes, not operations: converting between layouts
/// is done by rotations and masks (or, later, dedicated conversion ops).
///
/// A value with a layout carries [`Layout::elements`] consecutive elements (in
/// row-major `(c, y, x)` order) of a tensor for every image; [`Layout::slot`]
/// is the one place that says where each of them is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// Batch packing: slot `offset + i * stride` holds image `i` of the batch;
    /// each value carries one tensor element for every image.
    Batch {
        /// First slot used.
        offset: u32,
        /// Distance between the slots of consecutive images.
        stride: u32,
    },
    /// Channel packing: the value holds `channels` consecutive channels of an
    /// `height x width` feature map for each of `images` images placed side by
    /// side; element `(c, y, x)` of image `i` is in slot
    /// `offset + i * image_stride + c * c_stride + y * y_stride + x * x_stride`.
    Channel {
        /// Number of channels packed in the value.
        channels: u32,
        /// Feature-map height.
        height: u32,
        /// Feature-map width.
        width: u32,
        /// Slot of element `(0, 0, 0)`.
        offset: u32,
        /// Slot distance between channels.
        c_stride: u32,
        /// Slot distance between rows.
        y_stride: u32,
        /// Slot distance between columns.
        x_stride: u32,
        /// Number of images side by side (1 for a single image).
        images: u32,
        /// Slot distance between consecutive images (unused when `images <= 1`).
        image_stride: u32,
    },
}

impl Layout {
    /// Plain batch packing: slot `i` holds image `i`.
    pub const BATCH: Layout = Layout::Batch {
        offset: 0,
        stride: 1,
    };

    /// A dense channel layout for one image (`c_stride = h * w`, `y_stride = w`, `x_stride = 1`,
    /// `offset = 0`, `images = 1`).
    pub fn dense_channels(channels: u32, height: u32, width: u32) -> Layout {
        Layout::Channel {
            channels,
            height,
            width,
            offset: 0,
            c_stride: height.saturating_mul(width),
            y_stride: width,
            x_stride: 1,
            images: 1,
            image_stride: 0,
        }
    }

    /// Tensor elements per image the value carries: 1 for [`Layout::Batch`] (one element of
    /// every image), `channels * height * width` for [`Layout::Channel`].
    pub fn elements(&self) -> u64 {
        match *self {
            Layout::Batch { .. } => 1,
            Layout::Channel {
                channels,
                height,
                width,
                ..
            } => u64::from(channels) * u64::from(height) * u64::from(width),
        }
    }

    /// Images the value carries at most: `images` of a [`Layout::Channel`], `None` (as many
    /// as the slots allow) for [`Layout::Batch`].
    pub fn max_images(&self) -> Option<u32> {
        match *self {
            Layout::Batch { .. } => None,
            Layout::Channel { images, .. } => Some(images.max(1)),
        }
    }

    /// The slot that holds element `(c, y, x)` of image `image`, or `None` when the element or
    /// the image is outside the layout (or the slot index overflows). For [`Layout::Batch`] the
    /// only element is `(0, 0, 0)`, in slot `offset + image * stride`; for
    /// [`Layout::Channel`] it is `offset + image * image_stride + c * c_stride + y * y_stride +
    /// x * x_stride` with `c < channels`, `y < height`, `x < width`, `image < images`.
    pub fn slot(&self, image: usize, c: usize, y: usize, x: usize) -> Option<usize> {
        let mul = |a: usize, b: u32| a.checked_mul(b as usize);
        match *self {
            Layout::Batch { offset, stride } => {
                if (c, y, x) != (0, 0, 0) {
                    return None;
                }
                mul(image, stride)?.checked_add(offset as usize)
            }
            Layout::Channel {
                channels,
                height,
                width,
                offset,
                c_stride,
                y_stride,
                x_stride,
                images,
                image_stride,
            } => {
                if c >= channels as usize
                    || y >= height as usize
                    || x >= width as usize
                    || image >= images.max(1) as usize
                {
                    return None;
                }
                (offset as usize)
                    .checked_add(mul(image, image_stride)?)?
                    .checked_add(mul(c, c_stride)?)?
                    .checked_add(mul(y, y_stride)?)?
                    .checked_add(mul(x, x_stride)?)
            }
        }
    }

    /// The slot of the `k`-th element (row-major `(c, y, x)` order, `k < elements()`) of image
    /// `image`: [`Layout::slot`] of the element's coordinates.
    pub fn slot_of_element(&self, image: usize, k: usize) -> Option<usize> {
        match *self {
            Layout::Batch { .. } => self.slot(image, k, 0, 0),
            Layout::Channel { height, width, .. } => {
                let (h, w) = (height as usize, width as usize);
                if h == 0 || w == 0 {
                    return None;
                }
                self.slot(image, k / (h * w), (k / w) % h, k % w)
            }
        }
    }

    /// The highest slot index used plus one, or `None` on overflow. For
    /// [`Layout::Batch`] this is the slot needed by image `batch - 1`.
    pub fn span(&self, batch: u32) -> Option<u64> {
        match *self {
            Layout::Batch { offset, stride } => {
                if batch == 0 {
                    return Some(u64::from(offset));
                }
                u64::from(offset)
                    .checked_add(u64::from(stride).checked_mul(u64::from(batch) - 1)?)?
                    .checked_add(1)
            }
            Layout::Channel {
                channels,
                height,
                width,
                offset,
                c_stride,
                y_stride,
                x_stride,
                images,
                image_stride,
            } => {
                if channels == 0 || height == 0 || width == 0 || images == 0 {
                    return Some(u64::from(offset));
                }
                let last = u64::from(image_stride)
                    .checked_mul(u64::from(images) - 1)?
                    .checked_add(u64::from(c_stride).checked_mul(u64::from(channels) - 1)?)?
                    .checked_add(u64::from(y_stride).checked_mul(u64::from(height) - 1)?)?
                    .checked_add(u64::from(x_stride).checked_mul(u64::from(width) - 1)?)?;
                u64::from(offset).checked_add(last)?.checked_add(1)
            }
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::Batch { offset, stride } => {
                write!(f, "batch{{offset={offset}, stride={stride}}}")
            }
            Layout::Channel {
                channels,
                height,
                width,
                offset,
                c_stride,
                y_stride,
                x_stride,
                images,
                image_stride,
            } => {
                write!(
                    f,
                    "channel{{c={channels}, h={height}, w={width}, offset={offset}, \
                     c_stride={c_stride}, y_stride={y_stride}, x_stride={x_stride}"
                )?;
                // The single-image form is printed as before, so older texts stay valid.
                if *images != 1 {
                    write!(f, ", images={images}, image_stride={image_stride}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Whether a value is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A ciphertext.
    Cipher,
    /// An encoded (unencrypted) plaintext polynomial.
    Plain,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Cipher => "ciphertext",
            Kind::Plain => "plaintext",
        })
    }
}

/// The type of an HE value.
///
/// Printed as `ct<l=3, s=40.0, n=4096, batch>` (a ciphertext of size 2),
/// `ct<l=3, s=80.0, n=4096, batch, size=3>` or `pt<l=3, s=40.0, n=4096, batch>`,
/// where the last field names the layout in the module's layout table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Type {
    /// A ciphertext.
    Cipher {
        /// Level in the modulus chain.
        level: Level,
        /// log2 of the scale.
        log_scale: LogScale,
        /// Number of slots (N/2 for ring degree N).
        slots: u32,
        /// Slot layout.
        layout: LayoutId,
        /// Number of polynomials: 2, or 3 after `mul`/`square` until `relinearize`.
        size: u8,
    },
    /// A plaintext (an encoded constant).
    Plain {
        /// Level in the modulus chain.
        level: Level,
        /// log2 of the scale.
        log_scale: LogScale,
        /// Number of slots.
        slots: u32,
        /// Slot layout.
        layout: LayoutId,
    },
}

impl Type {
    /// A fresh ciphertext type of size 2.
    pub fn cipher(level: Level, log_scale: LogScale, slots: u32, layout: LayoutId) -> Type {
        Type::Cipher {
            level,
            log_scale,
            slots,
            layout,
            size: 2,
        }
    }

    /// A plaintext type.
    pub fn plain(level: Level, log_scale: LogScale, slots: u32, layout: LayoutId) -> Type {
        Type::Plain {
            level,
            log_scale,
            slots,
            layout,
        }
    }

    /// Ciphertext or plaintext.
    pub fn kind(&self) -> Kind {
        match self {
            Type::Cipher { .. } => Kind::Cipher,
            Type::Plain { .. } => Kind::Plain,
        }
    }

    /// The level.
    pub fn level(&self) -> Level {
        match *self {
            Type::Cipher { level, .. } | Type::Plain { level, .. } => level,
        }
    }

    /// The log-scale.
    pub fn log_scale(&self) -> LogScale {
        match *self {
            Type::Cipher { log_scale, .. } | Type::Plain { log_scale, .. } => log_scale,
        }
    }

    /// The slot count.
    pub fn slots(&self) -> u32 {
        match *self {
            Type::Cipher { slots, .. } | Type::Plain { slots, .. } => slots,
        }
    }

    /// The layout id.
    pub fn layout(&self) -> LayoutId {
        match *self {
            Type::Cipher { layout, .. } | Type::Plain { layout, .. } => layout,
        }
    }

    /// Polynomials a value of this type holds in memory: `size` for a ciphertext, 1 for a
    /// plaintext.
    pub fn polys(&self) -> u64 {
        match *self {
            Type::Cipher { size, .. } => u64::from(size),
            Type::Plain { .. } => 1,
        }
    }

    /// Bytes of a value of this type in a ring of degree `2^log_n`: its polynomials over the
    /// `level + 1` primes of its level, one 64-bit word per coefficient. The one size function
    /// of hecc: the report, the memory schedule and the executor's memory limit all use it.
    pub fn bytes(&self, log_n: u32) -> u64 {
        self.polys() * (u64::from(self.level().0) + 1) * (1u64 << log_n) * 8
    }

    /// Number of polynomials (always 2 for plaintexts' purposes: a plaintext is
    /// one polynomial, but it never needs relinearisation, so this returns 2).
    pub fn size(&self) -> u8 {
        match *self {
            Type::Cipher { size, .. } => size,
            Type::Plain { .. } => 2,
        }
    }

    /// The same type with another level.
    pub fn with_level(self, l: Level) -> Type {
        match self {
            Type::Cipher {
                log_scale,
                slots,
                layout,
                size,
                ..
            } => Type::Cipher {
                level: l,
                log_scale,
                slots,
                layout,
                size,
            },
            Type::Plain {
                log_scale,
                slots,
                layout,
                ..
            } => Type::Plain {
                level: l,
                log_scale,
                slots,
                layout,
            },
        }
    }

    /// The same type with another log-scale.
    pub fn with_log_scale(self, s: LogScale) -> Type {
        match self {
            Type::Cipher {
                level,
                slots,
                layout,
                size,
                ..
            } => Type::Cipher {
                level,
                log_scale: s,
                slots,
                layout,
                size,
            },
            Type::Plain {
                level,
                slots,
                layout,
                ..
            } => Type::Plain {
                level,
                log_scale: s,
                slots,
                layout,
            },
        }
    }

    /// The same type with another ciphertext size (plaintexts are unchanged).
    pub fn with_size(self, new_size: u8) -> Type {
        match self {
            Type::Cipher {
                level,
                log_scale,
                slots,
                layout,
                ..
            } => Type::Cipher {
                level,
                log_scale,
                slots,
                layout,
                size: new_size,
            },
            p @ Type::Plain { .. } => p,
        }
    }

    /// Compares two types, allowing the log-scales to differ by `tolerance` bits.
    pub fn approx_eq(&self, other: &Type, tolerance: f64) -> bool {
        self.kind() == other.kind()
            && self.level() == other.level()
            && self.slots() == other.slots()
            && self.layout() == other.layout()
            && self.size() == other.size()
            && self.log_scale().close_to(other.log_scale(), tolerance)
    }
}

impl fmt::Display for Type {
    /// Context-free form, with the layout as `#id`; the module printer shows
    /// layout names instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, size) = match self {
            Type::Cipher { size, .. } => ("ct", *size),
            Type::Plain { .. } => ("pt", 2),
        };
        write!(
            f,
            "{head}<l={}, s={}, n={}, #{}",
            self.level(),
            self.log_scale(),
            self.slots(),
            self.layout().0
        )?;
        if size != 2 {
            write!(f, ", size={size}")?;
        }
        f.write_str(">")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_slots() {
        let l = Layout::Batch {
            offset: 3,
            stride: 2,
        };
        assert_eq!(l.slot(0, 0, 0, 0), Some(3));
        assert_eq!(l.slot(5, 0, 0, 0), Some(13));
        assert_eq!(l.slot(0, 1, 0, 0), None);
        assert_eq!(l.slot_of_element(4, 0), Some(11));
        assert_eq!(l.slot_of_element(4, 1), None);
        assert_eq!(l.elements(), 1);
        assert_eq!(l.max_images(), None);
        assert_eq!(Layout::BATCH.slot(7, 0, 0, 0), Some(7));
    }

    #[test]
    fn channel_slots() {
        let l = Layout::Channel {
            channels: 2,
            height: 3,
            width: 4,
            offset: 5,
            c_stride: 100,
            y_stride: 10,
            x_stride: 2,
            images: 3,
            image_stride: 1000,
        };
        assert_eq!(l.elements(), 24);
        assert_eq!(l.max_images(), Some(3));
        assert_eq!(l.slot(0, 0, 0, 0), Some(5));
        assert_eq!(l.slot(2, 1, 2, 3), Some(5 + 2000 + 100 + 20 + 6));
        // Out of range coordinates and images have no slot.
        assert_eq!(l.slot(3, 0, 0, 0), None);
        assert_eq!(l.slot(0, 2, 0, 0), None);
        assert_eq!(l.slot(0, 0, 3, 0), None);
        assert_eq!(l.slot(0, 0, 0, 4), None);
        // Element k in row-major (c, y, x) order.
        assert_eq!(l.slot_of_element(1, 0), Some(1005));
        assert_eq!(l.slot_of_element(1, 4 + 1), Some(1005 + 10 + 2));
        assert_eq!(
            l.slot_of_element(1, 12 + 4 * 2 + 3),
            Some(1005 + 100 + 20 + 6)
        );
        assert_eq!(l.slot_of_element(0, 24), None);
        // The last slot agrees with the span.
        assert_eq!(l.slot(2, 1, 2, 3).map(|s| s as u64 + 1), l.span(3));
    }

    #[test]
    fn dense_channel_layout_is_row_major() {
        let l = Layout::dense_channels(3, 5, 7);
        let mut seen = Vec::new();
        for k in 0..l.elements() as usize {
            seen.push(l.slot_of_element(0, k).unwrap());
        }
        assert_eq!(seen, (0..105).collect::<Vec<_>>());
        // A single-image layout has exactly one image.
        assert_eq!(l.slot(1, 0, 0, 0), None);
    }

    #[test]
    fn overflow_is_none() {
        let l = Layout::Batch {
            offset: u32::MAX,
            stride: u32::MAX,
        };
        assert_eq!(l.slot(usize::MAX, 0, 0, 0), None);
    }
}
