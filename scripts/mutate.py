#!/usr/bin/env python3
"""Mutation testing of the `hecc` command line, as an attacker and as a careless user would.

Builds a baseline once (cryptonets compiled at 128-bit security in the batch layout for 4
images, two key generations of that plan, the first 4 MNIST test images encrypted, run and
decrypted; the same model in the channel layout; and a tiny weightless model whose whole
pipeline runs in milliseconds), then runs several hundred mutated inputs across every hecc
command and classifies each case:

  ok-expected      exit 0 for an input that is legitimately fine, outputs equal to the baseline
  refused          non-zero exit with a short error on stderr naming a cause (no panic, no signal);
                   for an edit only the client can detect (a ciphertext under another key: the
                   server holds no secret), the server's exit 0 followed by the client's refusal
  silent-wrong     exit 0 although the input was corrupted, mismatched or out of range, or exit 0
                   with results that differ from the baseline
  wrongly-refused  non-zero exit for an input that is legitimately fine
  unclear-error    non-zero exit with an empty (or very long) stderr
  panic            "panicked at" in stderr, or exit status 101
  abort            killed by a signal, or exit status 134/137/139 (e.g. out-of-memory aborts)
  hang             did not finish within --timeout
  clobbered        the command failed and a file that existed before it (its output target, or
                   an input it was told to overwrite) was changed or removed
  stray-file       a temporary file (a name starting with '.' and containing 'tmp') was left

Only `ok-expected` and `refused` are passes; the script exits 1 when any other outcome occurs
(2 when the baseline cannot be built). Where a case's correct outcome is ambiguous the script
expects a refusal and says so in the case's note (`--list` prints them).

Usage: python3 scripts/mutate.py [--hecc PATH] [--work DIR] [--timeout S] [--seed N]
                                 [--only KIND,...] [--markdown] [--keep] [--list] [-v]

Standard library only. Children run with RUST_BACKTRACE=0, no core dumps and a data-segment
limit (--mem-limit, GiB) so that absurd allocations abort instead of exhausting the machine.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models")
ONNX_DIR = os.path.join(MODELS, "onnx", "export")
IDX_IMAGES = os.path.join(MODELS, "data", "mnist-t10k-first256-images-idx3-ubyte")
IDX_LABELS = os.path.join(MODELS, "data", "mnist-t10k-first256-labels-idx1-ubyte")

PASS = ("ok-expected", "refused")
OUTCOMES = ("ok-expected", "refused", "silent-wrong", "wrongly-refused", "unclear-error",
            "panic", "abort", "hang", "clobbered", "stray-file")
# Precedence when several apply (the worst first).
SEVERITY = ("hang", "abort", "panic", "silent-wrong", "clobbered", "stray-file",
            "wrongly-refused", "unclear-error", "refused", "ok-expected")

TINY_YAML = """\
# A weightless model whose whole encrypted pipeline runs in milliseconds (mutate.py).
name: tiny
input:
  shape: [1, 2, 2]
  range: [0.0, 1.0]
layers:
  - { name: act1, op: square }
  - { name: flatten, op: flatten }
  - { name: s, op: scale, factor: 2.0 }
"""
TINY_IMAGES = [0.1, 0.9, 0.3, 0.2, 0.8, 0.1, 0.2, 0.3, 0.1, 0.2, 0.9, 0.3, 0.2, 0.3, 0.1, 0.7]
TINY_PRED = [1, 0, 2, 3]  # argmax of 2 x^2 per image

# ---------------------------------------------------------------------------- file formats


def sha256(b):
    return hashlib.sha256(b).digest()


MAGIC = b"HECCFILE"
KINDS = {"eval.keys": 1, "secret.key": 2, "inputs": 3, "outputs": 4}


def cparse(b):
    """Parses a hecc container: returns (header, sections), header being every byte before the
    u32 section count (80 bytes in format version 1; the search for the count's offset keeps
    this working when the header grows, e.g. by a key id). Raises ValueError."""
    if b[:8] != MAGIC:
        raise ValueError("bad magic")
    for hl in range(80, min(len(b) - 36, 400) + 1):
        (count,) = struct.unpack_from("<I", b, hl)
        pos, secs, ok = hl + 4, [], True
        for _ in range(count):
            if pos + 8 > len(b) - 32:
                ok = False
                break
            (n,) = struct.unpack_from("<Q", b, pos)
            pos += 8
            if pos + n > len(b) - 32:
                ok = False
                break
            secs.append(b[pos:pos + n])
            pos += n
        if ok and pos == len(b) - 32 and sha256(b[:pos]) == b[pos:]:
            return bytearray(b[:hl]), secs
    raise ValueError("not a well-formed hecc container")


def cser(header, sections, count=None):
    """Serialises a container with a recomputed trailing SHA-256."""
    out = bytearray(header)
    out += struct.pack("<I", len(sections) if count is None else count)
    for s in sections:
        out += struct.pack("<Q", len(s)) + s
    return bytes(out) + sha256(bytes(out))


def with_sum(body):
    return bytes(body) + sha256(bytes(body))


def meta_index(sections):
    for i, s in enumerate(sections):
        if s[:1] == b"{":
            return i
    raise ValueError("no metadata section")


def npy(descr, shape, data, fortran=False, version=1, header=None):
    if header is None:
        header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
            descr, "True" if fortran else "False", shape)
    h = header.encode("latin-1") if isinstance(header, str) else header
    pre = 10 if version == 1 else 12
    pad = (-(pre + len(h) + 1)) % 64
    h = h + b" " * pad + b"\n"
    ln = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + ln + h + data


def npy_read(b):
    """Minimal .npy reader for the logits hecc writes: returns (shape, values)."""
    if b[:6] != b"\x93NUMPY":
        raise ValueError("not npy")
    if b[6] == 1:
        (hl,), start = struct.unpack_from("<H", b, 8), 10
    else:
        (hl,), start = struct.unpack_from("<I", b, 8), 12
    h = b[start:start + hl].decode("latin-1")
    descr = re.search(r"'descr':\s*'([^']+)'", h).group(1)
    shape = tuple(int(x) for x in re.search(r"'shape':\s*\(([^)]*)\)", h).group(1).split(",")
                  if x.strip())
    d = b[start + hl:]
    fmt = {"<f8": "d", "<f4": "f"}[descr]
    n = len(d) // struct.calcsize(fmt)
    return shape, list(struct.unpack("<%d%s" % (n, fmt), d))


def idx(type_byte, dims, data, nd=None):
    return (b"\x00\x00" + bytes([type_byte, len(dims) if nd is None else nd])
            + b"".join(struct.pack(">I", d & 0xFFFFFFFF) for d in dims) + data)


def png_chunk(t, data, crc=None):
    c = zlib.crc32(t + data) if crc is None else crc
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", c & 0xFFFFFFFF)


def png(w, h, rows, color=0, depth=8, ihdr=None, idat=None, bad_crc=False):
    """A PNG of `rows` (raw bytes per row, filter 0 prepended here)."""
    raw = b"".join(b"\x00" + r for r in rows) if idat is None else b""
    hdr = ihdr if ihdr is not None else struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    data = idat if idat is not None else zlib.compress(raw)
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", hdr, crc=0xDEADBEEF if bad_crc else None)
            + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))


# --- protobuf (ONNX) -------------------------------------------------------------------------


def _rv(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _wv(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        c = n & 0x7F
        n >>= 7
        if n:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def pb_parse(b):
    out, i = [], 0
    while i < len(b):
        k, i = _rv(b, i)
        f, wt = k >> 3, k & 7
        if wt == 0:
            v, i = _rv(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 2:
            n, i = _rv(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        out.append([f, wt, v])
    return out


def pb_ser(fields):
    out = bytearray()
    for f, wt, v in fields:
        out += _wv(f << 3 | wt)
        if wt == 0:
            out += _wv(v)
        elif wt == 2:
            out += _wv(len(v)) + v
        else:
            out += v
    return bytes(out)


def pb_get(fields, f):
    return [x for x in fields if x[0] == f]


def onnx_edit(b, graph_fn):
    """Parses ModelProto, lets graph_fn edit the GraphProto field list in place, reserialises."""
    m = pb_parse(b)
    g = pb_get(m, 7)[0]
    gf = pb_parse(g[2])
    graph_fn(gf)
    g[2] = pb_ser(gf)
    return pb_ser(m)


def onnx_input_dims(gf, fn):
    """Applies fn to the dims (a list of [f, wt, v] Dimension fields) of the first graph input."""
    vi = pb_get(gf, 11)[0]
    vf = pb_parse(vi[2])
    tp = pb_get(vf, 2)[0]
    tf = pb_parse(tp[2])
    tt = pb_get(tf, 1)[0]
    ttf = pb_parse(tt[2])
    sh = pb_get(ttf, 2)[0]
    shf = pb_parse(sh[2])
    dims = [pb_parse(d[2]) for d in pb_get(shf, 1)]
    fn(dims)
    shf = [x for x in shf if x[0] != 1] + [[1, 2, pb_ser(d)] for d in dims]
    sh[2] = pb_ser(shf)
    tt[2] = pb_ser(ttf)
    tp[2] = pb_ser(tf)
    vi[2] = pb_ser(vf)


def onnx_initializer(gf, name, fn):
    for x in pb_get(gf, 5):
        tf = pb_parse(x[2])
        if any(f == 8 and v == name.encode() for f, _, v in tf):
            fn(tf)
            x[2] = pb_ser(tf)
            return
    raise KeyError(name)


def floats_set(packed, i, value):
    b = bytearray(packed)
    struct.pack_into("<f", b, 4 * i, value)
    return bytes(b)


# --- safetensors -----------------------------------------------------------------------------


def st_parse(b):
    (n,) = struct.unpack_from("<Q", b, 0)
    return json.loads(b[8:8 + n]), b[8 + n:]


def st_ser(header, data, raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_set_f32(b, name, i, value):
    h, d = st_parse(b)
    off = h[name]["data_offsets"][0] + 4 * i
    d = bytearray(d)
    struct.pack_into("<f", d, off, value)
    return st_ser(h, bytes(d))


# ---------------------------------------------------------------------------- cases


class Link:
    def __init__(self, target):
        self.target = target


class Copy:
    """A copy of a (possibly big) file, optionally patched in place: patch = [(offset, bytes)]."""

    def __init__(self, src, patch=(), truncate=None):
        self.src, self.patch, self.truncate = src, patch, truncate


class Dir:
    pass


class Case:
    def __init__(self, kind, name, argv, expect="refuse", files=None, outs=(), pre=(), follow=(),
                 verify=None, note="", modes=None, timeout=None):
        assert expect in ("refuse", "ok", "ok-any", "refuse-at-client"), expect
        self.kind, self.name, self.argv, self.expect = kind, name, list(argv), expect
        self.files = files or {}
        self.outs = list(outs)
        self.pre = [list(p) for p in pre]
        self.follow = [list(f) for f in follow]
        self.verify = verify
        self.note = note
        self.modes = modes or {}
        self.timeout = timeout


class Result:
    def __init__(self, argv, rc, out, err, secs, timed_out):
        self.argv, self.rc, self.out, self.err, self.secs, self.timed_out = (
            argv, rc, out, err, secs, timed_out)


PRED_RE = re.compile(r"predictions(?: \((\d+) images?\))?:\s*([-\d ]*)")


def predictions(text):
    m = None
    for m in PRED_RE.finditer(text):
        pass
    if not m:
        return None
    return [int(x) for x in m.group(2).split()]


def norm_check(s):
    """`hecc check` output without the model's path (first line)."""
    lines = s.splitlines()
    if lines:
        lines[0] = re.sub(r"\s*\(.*\)\s*$", "", lines[0])
    return "\n".join(lines)


class Ctx:
    def __init__(self, args):
        self.hecc = os.path.abspath(args.hecc)
        self.timeout = args.timeout
        self.keep = args.keep
        self.verbose = args.verbose
        self.seed = args.seed
        self.mem_limit = args.mem_limit
        self.work = None
        self.base = None
        self.cases_dir = None
        self.cache = {}
        self.pred = {}
        self.ref = {}

    # paths ------------------------------------------------------------------------------
    def B(self, *p):
        return os.path.join(self.base, *p)

    def read(self, path):
        if path not in self.cache:
            with open(path, "rb") as f:
                self.cache[path] = f.read()
        return self.cache[path]

    def b(self, name):
        return self.read(self.B(name))

    def cmd(self, template, **extra):
        """Splits a command template on whitespace, then fills {B} (baseline dir), {M} (models),
        {OX} (ONNX exports), {IDX}, {LBL} and the extra keys in each token."""
        keys = dict(B=self.base, M=MODELS, OX=ONNX_DIR, IDX=IDX_IMAGES, LBL=IDX_LABELS)
        keys.update(extra)
        return [t.format(**keys) for t in template.split()]

    # running ----------------------------------------------------------------------------
    def limits(self):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.mem_limit > 0:
            lim = int(self.mem_limit * (1 << 30))
            resource.setrlimit(resource.RLIMIT_DATA, (lim, lim))

    def run(self, argv, cwd, timeout=None):
        env = dict(os.environ, RUST_BACKTRACE="0", NO_COLOR="1")
        t0 = time.monotonic()
        p = subprocess.Popen([self.hecc] + argv, cwd=cwd, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             start_new_session=True, preexec_fn=self.limits)
        timed_out = False
        try:
            out, err = p.communicate(timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
        secs = time.monotonic() - t0
        dec = lambda b: b[:200000].decode("utf-8", "replace")
        return Result(argv, p.returncode, dec(out), dec(err), secs, timed_out)


def first_line(s):
    lines = [ln.strip() for ln in s.splitlines()]
    for i, ln in enumerate(lines):
        t = ln.lstrip("×").strip()
        if not t or re.fullmatch(r"(Error:\s*)?[a-z0-9_]+(::[a-z0-9_]+)+", t):
            continue
        if "panicked at" in t:
            nxt = next((x for x in lines[i + 1:] if x), "")
            return (t + " " + nxt)[:240]
        return t[:240]
    return ""


def summary_line(out):
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("predictions"):
            return ln[:240]
    return lines[-1][:240] if lines else ""


def proc_outcome(r, expect):
    """Outcome of one step, or None for exit 0 (decided by the expectation)."""
    if r.timed_out:
        return "hang"
    if r.rc < 0 or r.rc in (134, 137, 139):
        return "abort"
    if "panicked at" in r.err or r.rc == 101:
        return "panic"
    if r.rc == 0:
        return None
    if expect in ("ok", "ok-any"):
        return "wrongly-refused"
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    if not lines or len(lines) > 40:
        return "unclear-error"
    return "refused"


def stray_files(*dirs):
    found = []
    for top in dirs:
        for root, ds, fs in os.walk(top):
            for n in fs + ds:
                if n.startswith(".") and "tmp" in n:
                    found.append(os.path.join(root, n))
    return found


def materialize(d, files, modes):
    for rel, spec in files.items():
        path = os.path.join(d, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(spec, Dir):
            os.makedirs(path, exist_ok=True)
        elif isinstance(spec, Link):
            os.symlink(spec.target, path)
        elif isinstance(spec, Copy):
            shutil.copyfile(spec.src, path)
            with open(path, "r+b") as f:
                for off, data in spec.patch:
                    f.seek(off if off >= 0 else os.path.getsize(path) + off)
                    f.write(data)
                if spec.truncate is not None:
                    f.truncate(spec.truncate)
        else:
            data = spec() if callable(spec) else spec
            if isinstance(data, str):
                data = data.encode()
            with open(path, "wb") as f:
                f.write(data)
        if os.path.basename(rel) == "secret.key" and not isinstance(spec, (Dir, Link)):
            os.chmod(path, 0o600)
    for rel, mode in modes.items():
        os.chmod(os.path.join(d, rel), mode)


def snapshot(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def execute(ctx, case, idx):
    d = os.path.join(ctx.cases_dir, "%04d" % idx)
    os.makedirs(d)
    info = {"case": case, "outcome": None, "detail": "", "secs": 0.0, "results": []}
    try:
        try:
            materialize(d, case.files, case.modes)
        except Exception as e:  # a bug in this script's case, not in hecc
            info["outcome"], info["detail"] = "case-error", "could not prepare the case: %r" % e
            return info
        for p in case.pre:
            # A refusal at a setup step (e.g. keygen of an edited plan) is the case's outcome.
            r = ctx.run(p, d)
            info["results"].append(r)
            info["secs"] += r.secs
            po = proc_outcome(r, case.expect)
            if po is not None:
                info["outcome"] = po
                info["detail"] = "at setup step `hecc %s`: %s" % (" ".join(p[:1]), first_line(r.err))
                return info
        snaps = {}
        for rel in case.outs:
            path = os.path.join(d, rel)
            if not os.path.lexists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(b"pre-existing file of case %s\n" % case.name.encode())
            snaps[rel] = snapshot(path)
        r = ctx.run(case.argv, d, case.timeout)
        info["results"] = [r]
        info["secs"] += r.secs
        outcome = proc_outcome(r, case.expect)
        detail = first_line(r.err)
        if outcome is None and case.expect == "refuse-at-client":
            # The server cannot tell (it holds no secret); the client's check must refuse.
            outcome, detail = "silent-wrong", "exit 0 and the client's check accepted it"
            for f in case.follow:
                fr = ctx.run(f, d)
                info["results"].append(fr)
                info["secs"] += fr.secs
                fo = proc_outcome(fr, "refuse")
                if fo is not None:
                    outcome, detail = fo, "client: " + first_line(fr.err)
                    break
        elif outcome is None:
            if case.expect == "refuse":
                outcome = "silent-wrong"
                detail = "exit 0: " + (summary_line(r.out) or "(no output)")
                if r.err.strip():
                    detail += " | stderr: " + first_line(r.err)
            else:
                outcome = "ok-expected"
                for f in case.follow:
                    fr = ctx.run(f, d)
                    info["results"].append(fr)
                    info["secs"] += fr.secs
                    fo = proc_outcome(fr, "ok")
                    if fo is not None:
                        outcome = fo
                        detail = "follow-up `%s`: %s" % (" ".join(f[:1]), first_line(fr.err))
                        break
                if outcome == "ok-expected" and case.verify is not None:
                    why = case.verify(ctx, d, info["results"])
                    if why:
                        outcome, detail = "silent-wrong", "exit 0 but " + why
        if r.rc != 0 or r.timed_out:
            changed = [rel for rel, s in snaps.items() if snapshot(os.path.join(d, rel)) != s]
            if changed:
                detail += " | clobbered: " + ", ".join(changed)
                outcome = worst(outcome, "clobbered")
        strays = stray_files(d, ctx.base) + [
            os.path.join(ctx.work, n) for n in os.listdir(ctx.work)
            if n.startswith(".") and "tmp" in n]
        if strays:
            detail += " | stray: " + ", ".join(os.path.relpath(s, ctx.work) for s in strays)
            outcome = worst(outcome, "stray-file")
            for s in strays:  # do not blame the next case
                if s.startswith(ctx.base) or os.path.dirname(s) == ctx.work:
                    try:
                        os.remove(s)
                    except OSError:
                        pass
        info["outcome"], info["detail"] = outcome, detail
        return info
    finally:
        if not ctx.keep:
            for root, ds, _ in os.walk(d):  # a case may chmod things
                for n in ds:
                    try:
                        os.chmod(os.path.join(root, n), 0o700)
                    except OSError:
                        pass
            shutil.rmtree(d, ignore_errors=True)


def worst(a, b):
    return a if SEVERITY.index(a) <= SEVERITY.index(b) else b


# --- verifications for ok cases ------------------------------------------------------------


def v_pred(expected):
    def f(ctx, d, results):
        got = predictions(results[-1].out)
        if got != expected:
            return "predictions %s, baseline %s" % (got, expected)
        return None
    return f


def v_check_same(ref_key):
    def f(ctx, d, results):
        if norm_check(results[0].out) != norm_check(ctx.ref[ref_key]):
            return "`check` summary differs from the baseline's"
        return None
    return f


def v_stdout_same(ref_key):
    def f(ctx, d, results):
        if results[0].out != ctx.ref[ref_key]:
            return "output differs from the baseline's"
        return None
    return f


PLAN_KEYS = ("params", "primes", "special_primes", "inputs", "outputs", "rotation_steps",
             "circuit", "layout", "batch")


def v_plan_same(rel, ref_plan):
    def f(ctx, d, results):
        try:
            with open(os.path.join(d, rel)) as fh:
                got = json.load(fh)
        except (OSError, ValueError) as e:
            return "plan unreadable: %s" % e
        want = json.loads(ctx.b(ref_plan))
        diff = [k for k in PLAN_KEYS if got.get(k) != want.get(k)]
        return ("plan differs from the baseline's in %s" % ", ".join(diff)) if diff else None
    return f


def v_secret_private(rel):
    def f(ctx, d, results):
        m = os.stat(os.path.join(d, rel)).st_mode & 0o777
        return ("%s written with mode %o (readable by others)" % (rel, m)) if m & 0o077 else None
    return f


def v_all(*fs):
    def f(ctx, d, results):
        for g in fs:
            w = g(ctx, d, results)
            if w:
                return w
        return None
    return f


# ---------------------------------------------------------------------------- baseline


def build_baseline(ctx):
    B = ctx.base
    os.makedirs(B)
    with open(ctx.B("tiny.yaml"), "w") as f:
        f.write(TINY_YAML)
    with open(ctx.B("t.npy"), "wb") as f:
        f.write(npy("<f8", (4, 1, 2, 2), struct.pack("<16d", *TINY_IMAGES)))
    raw = ctx.read(IDX_IMAGES)
    px = raw[16:16 + 4 * 784]
    with open(ctx.B("img4.idx"), "wb") as f:
        f.write(idx(0x08, [4, 28, 28], px))
    with open(ctx.B("img0.png"), "wb") as f:
        f.write(png(28, 28, [px[r * 28:(r + 1) * 28] for r in range(28)]))
    for name, data in (("empty", b""), ("garbage.txt", b"hello, this is not a model\n"),
                       ("other.json", b'{"a": 1}\n')):
        with open(ctx.B(name), "wb") as f:
            f.write(data)
    rng = random.Random(ctx.seed)
    with open(ctx.B("garbage.bin"), "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(4096)))

    steps = [
        ("compile {M}/cryptonets.yaml --layout batch --batch 4 -o plan.json", None),
        ("keygen plan.json -o keys", None),
        ("keygen plan.json -o keys2", None),
        ("encrypt plan.json --keys keys --input {IDX} --limit 4 -o x.ct", None),
        ("run plan.json x.ct --eval-keys keys/eval.keys -o y.ct --quiet", None),
        ("decrypt y.ct --secret-key keys/secret.key -o logits.npy", "batch"),
        ("compile {M}/cryptonets.yaml --layout channel --batch 4 -o planc.json", None),
        ("keygen planc.json -o kc", None),
        ("encrypt planc.json --keys kc --input {IDX} --limit 4 -o xc.ct", None),
        ("run planc.json xc.ct --eval-keys kc/eval.keys -o yc.ct --quiet", None),
        ("decrypt yc.ct --secret-key kc/secret.key -o logitsc.npy", "channel"),
        ("compile tiny.yaml --layout batch --batch 4 -o tiny.json", None),
        ("keygen tiny.json -o tk", None),
        ("keygen tiny.json -o tk2", None),
        ("encrypt tiny.json --keys tk --input t.npy -o tx.ct", None),
        ("encrypt tiny.json --keys tk2 --input t.npy -o tx2.ct", None),
        ("run tiny.json tx.ct --eval-keys tk/eval.keys -o ty.ct --quiet", None),
        ("decrypt ty.ct --secret-key tk/secret.key -o tl.npy", "tiny"),
        ("check {M}/cryptonets.yaml", "check:cryptonets"),
        ("check {OX}/mlp_sklearn.onnx", "check:mlp"),
        ("check {OX}/lenet5_torch.onnx", "check:lenet5"),
        ("check {OX}/resnet_torch.onnx", "check:resnet"),
        ("report tiny.json", "report:tiny"),
        ("report plan.json", "report:batch"),
        ("eval {M}/cryptonets.yaml --input {IDX} --limit 4", "eval"),
    ]
    for tpl, key in steps:
        argv = ctx.cmd(tpl)
        t0 = time.monotonic()
        r = ctx.run(argv, B, timeout=max(ctx.timeout, 300))
        if ctx.verbose:
            print("baseline: hecc %s (%.1f s)" % (" ".join(argv), time.monotonic() - t0),
                  file=sys.stderr)
        if r.rc != 0:
            raise SystemExit("baseline step failed: hecc %s\n%s" % (" ".join(argv), r.err[-3000:]))
        if key in ("batch", "channel", "tiny"):
            ctx.pred[key] = predictions(r.out)
            if not ctx.pred[key]:
                raise SystemExit("baseline: no predictions in the output of hecc %s" % " ".join(argv))
        elif key:
            ctx.ref[key] = r.out
    if ctx.pred["tiny"] != TINY_PRED:
        raise SystemExit("baseline: the tiny model predicts %s, expected %s"
                         % (ctx.pred["tiny"], TINY_PRED))
    if ctx.pred["channel"] != ctx.pred["batch"]:
        print("warning: channel-layout predictions %s differ from the batch layout's %s"
              % (ctx.pred["channel"], ctx.pred["batch"]), file=sys.stderr)
    # image files derived from the first 4 MNIST images
    f4 = [x / 255.0 for x in px]
    with open(ctx.B("img4_u8.npy"), "wb") as f:
        f.write(npy("|u1", (4, 1, 28, 28), px))
    with open(ctx.B("img4_f4.npy"), "wb") as f:
        f.write(npy("<f4", (4, 1, 28, 28), struct.pack("<%df" % len(f4), *f4)))
    with open(ctx.B("img4_f8.npy"), "wb") as f:
        f.write(npy("<f8", (4, 1, 28, 28), struct.pack("<%dd" % len(f4), *f4)))
    with open(ctx.B("img4_hwc.npy"), "wb") as f:
        f.write(npy("|u1", (4, 28, 28, 1), px))
    with open(ctx.B("img4_flat.npy"), "wb") as f:
        f.write(npy("|u1", (4, 784), px))
    ctx.px = px


def base_digests(ctx):
    out = {}
    for root, _, fs in os.walk(ctx.base):
        for n in fs:
            p = os.path.join(root, n)
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            out[p] = (h.hexdigest(), os.stat(p).st_mode)
    return out


# ---------------------------------------------------------------------------- case catalogue


def container_byte_cases(ctx, kind, label, data_fn, argv, outs, rng, extra_offsets=()):
    """Flips, truncations, appended garbage and zero length on a hecc container, checksum NOT
    recomputed: every one must be refused (the trailing SHA-256 covers every byte)."""
    data = data_fn()
    n = len(data)
    cases = []
    name = "secret.key" if label == "secret.key" else "f.bin"

    def add(tag, fn):
        cases.append(Case(kind, "%s %s" % (label, tag), argv(name), "refuse",
                          files={name: fn}, outs=outs))

    flips = [0, 7, 8, 9, 10, 11, 12, 16, 47, 48, 79, 80, 83, 84, 91, 92, 100, n // 2,
             n - 33, n - 32, n - 1] + list(extra_offsets)
    flips += [rng.randrange(100, n - 32) for _ in range(4)]
    for i, off in enumerate(flips):
        mask = 0x80 if i % 3 == 2 else 0x01
        add("flip@%d^%02x" % (off, mask),
            lambda off=off, mask=mask: bytes(data[:off]) + bytes([data[off] ^ mask]) + data[off + 1:])
    for cut in (0, 1, 8, 10, 11, 16, 48, 80, 83, 84, 92, n // 2, n - 33, n - 32, n - 1):
        add("truncate@%d" % cut, lambda cut=cut: data[:cut])
    for tag, extra in (("1 zero byte", b"\x00"), ("32 x ff", b"\xff" * 32),
                       ("its checksum again", data[-32:]),
                       ("4 KiB random", bytes(rng.getrandbits(8) for _ in range(4096))),
                       ("another copy", data)):
        add("append " + tag, lambda extra=extra: data + extra)
    return cases


def cases_container_bytes(ctx, rng):
    out = []
    run_b = lambda f: ctx.cmd("run {B}/plan.json {B}/x.ct --eval-keys %s -o out.ct --quiet" % f)
    out += container_byte_cases(ctx, "bytes:eval.keys", "eval.keys",
                                lambda: ctx.b("keys/eval.keys"), run_b, ["out.ct"], rng)
    dec_b = lambda f: ctx.cmd("decrypt {B}/y.ct --secret-key %s -o out.npy" % f)
    out += container_byte_cases(ctx, "bytes:secret.key", "secret.key",
                                lambda: ctx.b("keys/secret.key"), dec_b, ["out.npy"], rng)
    run_t = lambda f: ctx.cmd("run {B}/tiny.json %s --eval-keys {B}/tk/eval.keys -o out.ct --quiet" % f)
    out += container_byte_cases(ctx, "bytes:x.ct", "x.ct(tiny)", lambda: ctx.b("tx.ct"), run_t,
                                ["out.ct"], rng)
    dec_y = lambda f: ctx.cmd("decrypt %s --secret-key {B}/keys/secret.key -o out.npy" % f)
    out += container_byte_cases(ctx, "bytes:y.ct", "y.ct", lambda: ctx.b("y.ct"), dec_y,
                                ["out.npy"], rng)
    # A few on the big cryptonets inputs themselves (batch: 616 MB, channel: 0.8 MB).
    xb = ctx.B("x.ct")
    size = os.path.getsize(xb)
    runx = ctx.cmd("run {B}/plan.json f.bin --eval-keys {B}/keys/eval.keys -o out.ct --quiet")
    for tag, spec in (("truncate@84", lambda: ctx_head(xb, 84)),
                      ("truncate@4096", lambda: ctx_head(xb, 4096)),
                      ("kind byte 3->4", Copy(xb, patch=[(10, b"\x04")])),
                      ("last byte flipped", Copy(xb, patch=[(size - 1, bytes([ctx_byte(xb, size - 1) ^ 1]))])),
                      ("truncate by 1", Copy(xb, truncate=size - 1))):
        out.append(Case("bytes:x.ct", "x.ct(batch) " + tag, runx, "refuse", files={"f.bin": spec},
                        outs=["out.ct"]))
    xc = ctx.b("xc.ct")
    runc = ctx.cmd("run {B}/planc.json f.bin --eval-keys {B}/kc/eval.keys -o out.ct --quiet")
    for tag, fn in (("flip@200", lambda: xc[:200] + bytes([xc[200] ^ 1]) + xc[201:]),
                    ("truncate@half", lambda: xc[:len(xc) // 2]),
                    ("append 1 byte", lambda: xc + b"\x00")):
        out.append(Case("bytes:x.ct", "x.ct(channel) " + tag, runc, "refuse", files={"f.bin": fn},
                        outs=["out.ct"]))
    return out


def ctx_head(path, n):
    with open(path, "rb") as f:
        return f.read(n)


def ctx_byte(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(1)[0]


def cases_container_structure(ctx, rng):
    """Edits with the checksum recomputed (a Python re-implementation of the container)."""
    out = []
    kind = "container-structure"
    specs = [
        # label, base file, file name in the case dir, command, outs, verify-follow for ok
        ("eval.keys(tiny)", "tk/eval.keys", "eval.keys",
         "run {B}/tiny.json {B}/tx.ct --eval-keys eval.keys -o out.ct --quiet",
         [ctx.cmd("decrypt out.ct --secret-key {B}/tk/secret.key -o l.npy")], TINY_PRED,
         "tk2/eval.keys"),
        ("secret.key", "keys/secret.key", "secret.key",
         "decrypt {B}/y.ct --secret-key secret.key -o out.npy", [], None, "keys2/secret.key"),
        ("x.ct(tiny)", "tx.ct", "x.ct",
         "run {B}/tiny.json x.ct --eval-keys {B}/tk/eval.keys -o out.ct --quiet",
         [ctx.cmd("decrypt out.ct --secret-key {B}/tk/secret.key -o l.npy")], TINY_PRED, "tx2.ct"),
        ("y.ct", "y.ct", "y.ct", "decrypt y.ct --secret-key {B}/keys/secret.key -o out.npy",
         [], None, None),
    ]
    for label, src, fname, tpl, follow, fpred, other in specs:
        data = ctx.b(src)
        hdr, secs = cparse(data)
        argv = ctx.cmd(tpl)
        outs = ["out.ct"] if "out.ct" in tpl else ["out.npy"]
        pred = fpred if fpred is not None else ctx.pred["batch"]
        own_kind = data[10]

        def add(tag, fn, expect="refuse", note=""):
            kw = {}
            if expect == "ok":
                kw = dict(follow=follow, verify=v_pred(pred))
            elif expect == "refuse-at-client":
                kw = dict(follow=[ctx.cmd("decrypt out.ct --secret-key {B}/tk/secret.key "
                                          "--request {B}/tx.ct -o l.npy")])
            out.append(Case(kind, "%s %s" % (label, tag), argv, expect, files={fname: fn},
                            outs=outs, note=note, **kw))

        def edit(fn, data=data):
            def g():
                h, s = cparse(data)
                r = fn(h, list(s))
                return cser(*r) if isinstance(r, tuple) else r
            return g

        add("re-serialised unchanged", edit(lambda h, s: (h, s)), "ok",
            note="control: the Python container writer reproduces the file")
        for v in (0, 1, 3, 0xFFFF):
            add("version=%d" % v, edit(lambda h, s, v=v: (h[:8] + struct.pack("<H", v) + h[10:], s)))
        for k in (0, 1, 2, 3, 4, 5, 255):
            if k != own_kind:
                add("kind=%d" % k, edit(lambda h, s, k=k: (h[:10] + bytes([k]) + h[11:], s)))
        add("reserved byte 11=1", edit(lambda h, s: (h[:11] + b"\x01" + h[12:], s)),
            note="ambiguous: a reserved byte set; expect a refusal (unknown header content)")
        add("reserved bytes 12..16=ff", edit(lambda h, s: (h[:12] + b"\xff" * 4 + h[16:], s)),
            note="ambiguous: reserved bytes set; expect a refusal")
        add("fingerprint flipped", edit(lambda h, s: (h[:20] + bytes([h[20] ^ 1]) + h[21:], s)))
        add("plan digest flipped", edit(lambda h, s: (h[:50] + bytes([h[50] ^ 1]) + h[51:], s)))
        if len(hdr) > 80:
            add("header extension (key id?) flipped",
                edit(lambda h, s: (h[:80] + bytes([h[80] ^ 1]) + h[81:], s)))
        add("count+1", edit(lambda h, s: cser(h, s, count=len(s) + 1)))
        add("count=0 (sections kept)", edit(lambda h, s: cser(h, s, count=0)))
        add("count=2^32-1", edit(lambda h, s: cser(h, s, count=0xFFFFFFFF)))
        add("no sections", edit(lambda h, s: (h, [])))
        add("first section length 2^64-1",
            edit(lambda h, s: with_sum(bytes(h) + struct.pack("<IQ", len(s), 2**64 - 1)
                                       + cser(h, s)[len(h) + 12:-32])))
        add("first section length +1",
            edit(lambda h, s: with_sum(bytes(h) + struct.pack("<IQ", len(s), len(s[0]) + 1)
                                       + cser(h, s)[len(h) + 12:-32])))
        add("last section dropped", edit(lambda h, s: (h, s[:-1])))
        add("first section dropped", edit(lambda h, s: (h, s[1:])))
        add("last section duplicated", edit(lambda h, s: (h, s + s[-1:])))
        add("empty section appended", edit(lambda h, s: (h, s + [b""])))
        add("first section emptied", edit(lambda h, s: (h, [b""] + s[1:])))
        if len(secs) > 1:
            add("first two sections swapped", edit(lambda h, s: (h, [s[1], s[0]] + s[2:])))
            add("sections reversed", edit(lambda h, s: (h, s[::-1])))
        big = max(range(len(secs)), key=lambda i: len(secs[i]))

        def sec_patch(i, off, val):
            def f(h, s):
                b = bytearray(s[i])
                b[off:off + len(val)] = val
                s[i] = bytes(b)
                return h, s
            return f

        add("backend object magic flipped", edit(sec_patch(big, 0, b"X")))
        add("backend object header byte 9 flipped",
            edit(sec_patch(big, 9, bytes([secs[big][9] ^ 1]))))
        mid = (len(secs[big]) // 2) & ~7
        add("payload coefficient low bit flipped",
            edit(sec_patch(big, mid, bytes([secs[big][mid] ^ 1]))),
            note="ambiguous: an unauthenticated ciphertext/key coefficient changed with the "
                 "checksum recomputed; expect a refusal (integrity of the payload)")
        add("payload word set to 2^64-1 (residue >= modulus)",
            edit(sec_patch(big, mid, b"\xff" * 8)))
        add("payload truncated by 8 bytes",
            edit(lambda h, s, big=big: (h, s[:big] + [s[big][:-8]] + s[big + 1:])))
        if other:
            odata = ctx.b(other)
            xct = fname == "x.ct"
            add("largest section taken from another keygen's file",
                edit(lambda h, s, big=big, odata=odata: (h, s[:big] + [cparse(odata)[1][big]] + s[big + 1:])),
                expect="refuse-at-client" if xct else "refuse",
                note="sections of two key generations of the same plan mixed in one file" + (
                    "; a ciphertext's key cannot be told without the secret key, so the client's "
                    "decrypt --request must refuse the result" if xct else ""))
    # fingerprint/digest of another plan transplanted into the tiny inputs
    tiny_hdr, _ = cparse(ctx.b("tx.ct"))
    for label, src in (("y.ct with the tiny plan's fingerprint and digest", "y.ct"),):
        data = ctx.b(src)
        out.append(Case(kind, label, ctx.cmd("decrypt y.ct --secret-key {B}/keys/secret.key -o out.npy"),
                        "refuse", files={"y.ct": lambda data=data: cser(
                            cparse(data)[0][:16] + tiny_hdr[16:80] + cparse(data)[0][80:],
                            cparse(data)[1])}, outs=["out.npy"]))
    return out


def cases_outputs_meta(ctx, rng):
    """The encrypted outputs' metadata (model, images, elements) edited, checksum recomputed."""
    out = []
    kind = "outputs-meta"

    def meta_case(label, src, key, fn, expect="refuse", note="", skpath="{B}/keys/secret.key"):
        data = ctx.b(src)

        def gen():
            h, s = cparse(data)
            i = meta_index(s)
            m = json.loads(s[i])
            r = fn(m)
            s[i] = r if isinstance(r, bytes) else json.dumps(m, separators=(",", ":")).encode()
            return cser(h, s)
        kw = dict(verify=v_pred(ctx.pred[key])) if expect == "ok" else {}
        out.append(Case(kind, "%s %s" % (src, label),
                        ctx.cmd("decrypt y.ct --secret-key %s -o out.npy" % skpath), expect,
                        files={"y.ct": gen}, outs=["out.npy"], note=note, **kw))

    def setk(k, v):
        def f(m):
            m[k] = v
        return f

    meta_case("re-serialised unchanged", "y.ct", "batch", lambda m: None, "ok",
              note="control: the metadata round-trips through Python's JSON writer")
    for v in (2**40, 0, 3, 5, 8192, 8193, -1, "4", 4.5, None):
        meta_case("images=%r" % (v,), "y.ct", "batch", setk("images", v),
                  note="an edited image count must not be believed (authenticated metadata)")
    el = lambda f: (lambda m: f(m["elements"]))
    meta_case("elements reversed", "y.ct", "batch", el(lambda e: e.reverse()))
    meta_case("elements 0 and 1 swapped", "y.ct", "batch",
              el(lambda e: e.__setitem__(slice(0, 2), [e[1], e[0]])))
    meta_case("last element removed", "y.ct", "batch", el(lambda e: e.pop()))
    meta_case("first element duplicated", "y.ct", "batch", el(lambda e: e.insert(0, list(e[0]))))
    meta_case("elements=[]", "y.ct", "batch", setk("elements", []))
    meta_case("element index 0->99", "y.ct", "batch", el(lambda e: e[0].__setitem__(1, 99)))
    meta_case("element index -1", "y.ct", "batch", el(lambda e: e[0].__setitem__(1, -1)))
    meta_case("element index 2^32", "y.ct", "batch", el(lambda e: e[0].__setitem__(1, 2**32)))
    meta_case("element name changed", "y.ct", "batch", el(lambda e: e[0].__setitem__(0, "other")))
    meta_case("batch stride 0", "y.ct", "batch",
              el(lambda e: e[0][2]["Batch"].__setitem__("stride", 0)))
    meta_case("batch stride 2^40", "y.ct", "batch",
              el(lambda e: e[0][2]["Batch"].__setitem__("stride", 2**40)))
    meta_case("batch offset 8192", "y.ct", "batch",
              el(lambda e: e[0][2]["Batch"].__setitem__("offset", 8192)))
    meta_case("batch offset 2^62", "y.ct", "batch",
              el(lambda e: e[0][2]["Batch"].__setitem__("offset", 2**62)))
    meta_case("batch offset 1 (shifted slots)", "y.ct", "batch",
              el(lambda e: [x[2]["Batch"].__setitem__("offset", 1) for x in e]))
    meta_case("layout replaced by a channel layout", "y.ct", "batch",
              el(lambda e: e[0].__setitem__(2, {"Channel": {
                  "channels": 1, "height": 1000000, "width": 1000000, "offset": 0, "c_stride": 0,
                  "y_stride": 1, "x_stride": 1, "images": 4, "image_stride": 1}})))
    meta_case("model name changed", "y.ct", "batch", setk("model", "not-cryptonets"),
              note="ambiguous: only a label, but the metadata should be authenticated; expect "
                   "a refusal")
    meta_case("unknown field added", "y.ct", "batch", setk("extra", 1),
              note="ambiguous: expect a refusal (unauthenticated metadata)")
    meta_case("metadata not JSON", "y.ct", "batch", lambda m: b"{not json")
    meta_case("metadata empty", "y.ct", "batch", lambda m: b"")
    meta_case("metadata a JSON array", "y.ct", "batch", lambda m: b"[1,2,3]")
    meta_case("metadata nested 100000 deep", "y.ct", "batch",
              lambda m: b"[" * 100000 + b"]" * 100000)
    meta_case("metadata padded to 8 MiB of spaces", "y.ct", "batch",
              lambda m: json.dumps(m).encode() + b" " * (8 << 20),
              note="ambiguous (same JSON value); expect a refusal since the section was edited")
    meta_case("(tiny) elements reversed", "ty.ct", "tiny", el(lambda e: e.reverse()),
              skpath="{B}/tk/secret.key")
    meta_case("(tiny) images=2", "ty.ct", "tiny", setk("images", 2), skpath="{B}/tk/secret.key")
    meta_case("(channel) image_stride 1", "yc.ct", "channel",
              el(lambda e: e[0][2]["Channel"].__setitem__("image_stride", 1)),
              skpath="{B}/kc/secret.key")
    meta_case("(channel) images=4096", "yc.ct", "channel", setk("images", 4096),
              skpath="{B}/kc/secret.key")
    return out


def cases_inputs_meta(ctx, rng):
    out = []
    kind = "inputs-meta"

    def meta_case(label, fn, expect="refuse", note="", src="tx.ct", plan="tiny.json", ek="tk",
                  follow=True):
        data = ctx.b(src)

        def gen():
            h, s = cparse(data)
            i = meta_index(s)
            m = json.loads(s[i])
            r = fn(m)
            s[i] = r if isinstance(r, bytes) else json.dumps(m, separators=(",", ":")).encode()
            return cser(h, s)
        kw = {}
        if expect == "ok":
            kw = dict(follow=[ctx.cmd("decrypt out.ct --secret-key {B}/%s/secret.key -o l.npy" % ek)],
                      verify=v_pred(TINY_PRED))
        out.append(Case(kind, "%s %s" % (src, label),
                        ctx.cmd("run {B}/%s x.ct --eval-keys {B}/%s/eval.keys -o out.ct --quiet"
                                % (plan, ek)), expect, files={"x.ct": gen}, outs=["out.ct"],
                        note=note, **kw))

    meta_case("re-serialised unchanged", lambda m: None, "ok", note="control")
    for v in (2**40, 0, 3, 5, -1, 4096):
        meta_case("images=%r" % v, lambda m, v=v: m.__setitem__("images", v),
                  note="an edited image count must not be believed")
    e = lambda f: (lambda m: f(m["elements"]))
    meta_case("elements reversed", e(lambda x: x.reverse()),
              note="the ciphertexts no longer match their labels: results permuted")
    meta_case("elements 0 and 1 swapped", e(lambda x: x.__setitem__(slice(0, 2), [x[1], x[0]])))
    meta_case("element removed", e(lambda x: x.pop()))
    meta_case("element duplicated (4 -> 5 labels)", e(lambda x: x.append(list(x[0]))))
    meta_case("element index 99", e(lambda x: x[0].__setitem__(1, 99)))
    meta_case("element name changed", e(lambda x: x[0].__setitem__(0, "bogus")))
    meta_case("all elements the same index", e(lambda x: [y.__setitem__(1, 0) for y in x]))
    meta_case("elements=[]", lambda m: m.__setitem__("elements", []))
    meta_case("metadata not JSON", lambda m: b"\x00garbage")
    meta_case("(channel) images=5 (> batch 4)", lambda m: m.__setitem__("images", 5),
              src="xc.ct", plan="planc.json", ek="kc")
    meta_case("(channel) element index 1", e(lambda x: x[0].__setitem__(1, 1)),
              src="xc.ct", plan="planc.json", ek="kc")
    return out


def cases_key_mixups(ctx, rng):
    out = []
    kind = "key-mixup"
    C = lambda name, tpl, note="", **kw: out.append(
        Case(kind, name, ctx.cmd(tpl), kw.pop("expect", "refuse"), note=note, **kw))
    C("decrypt y.ct with the secret key of a second keygen",
      "decrypt {B}/y.ct --secret-key {B}/keys2/secret.key -o out.npy", outs=["out.npy"],
      note="keys of two keygens of the same plan are not interchangeable (key id)")
    C("decrypt tiny y.ct with the secret key of a second keygen",
      "decrypt {B}/ty.ct --secret-key {B}/tk2/secret.key -o out.npy", outs=["out.npy"])
    C("run x.ct with the eval keys of a second keygen",
      "run {B}/plan.json {B}/x.ct --eval-keys {B}/keys2/eval.keys -o out.ct --quiet",
      outs=["out.ct"])
    C("run tiny x.ct with the eval keys of a second keygen",
      "run {B}/tiny.json {B}/tx.ct --eval-keys {B}/tk2/eval.keys -o out.ct --quiet",
      outs=["out.ct"])
    C("run tiny x.ct encrypted under keygen 2 with keygen 1's eval keys",
      "run {B}/tiny.json {B}/tx2.ct --eval-keys {B}/tk/eval.keys -o out.ct --quiet",
      outs=["out.ct"])
    C("encrypt with a key dir mixing secret.key of keygen 2 and eval.keys of keygen 1",
      "encrypt {B}/tiny.json --keys mixed --input {B}/t.npy -o out.ct", outs=["out.ct"],
      files={"mixed/secret.key": Copy(ctx.B("tk2/secret.key")),
             "mixed/eval.keys": Link(ctx.B("tk/eval.keys"))})
    C("encrypt with keygen 2's public key only, run with keygen 1's eval keys",
      "run {B}/tiny.json x.ct --eval-keys {B}/tk/eval.keys -o out.ct --quiet", outs=["out.ct"],
      files={"pk/eval.keys": Link(ctx.B("tk2/eval.keys"))},
      pre=[ctx.cmd("encrypt {B}/tiny.json --keys pk --input {B}/t.npy -o x.ct")])
    C("decrypt y.ct with the tiny plan's secret key (other parameters)",
      "decrypt {B}/y.ct --secret-key {B}/tk/secret.key -o out.npy", outs=["out.npy"])
    C("decrypt the channel plan's y.ct with the batch plan's secret key",
      "decrypt {B}/yc.ct --secret-key {B}/keys/secret.key -o out.npy", outs=["out.npy"])
    C("run the batch plan with the channel plan's eval keys",
      "run {B}/plan.json {B}/x.ct --eval-keys {B}/kc/eval.keys -o out.ct --quiet", outs=["out.ct"])
    C("run the tiny plan with the batch plan's eval keys",
      "run {B}/tiny.json {B}/tx.ct --eval-keys {B}/keys/eval.keys -o out.ct --quiet",
      outs=["out.ct"])
    C("run the batch plan on the channel plan's x.ct",
      "run {B}/plan.json {B}/xc.ct --eval-keys {B}/keys/eval.keys -o out.ct --quiet",
      outs=["out.ct"])
    C("run the tiny plan on the tiny y.ct (outputs as inputs)",
      "run {B}/tiny.json {B}/ty.ct --eval-keys {B}/tk/eval.keys -o out.ct --quiet",
      outs=["out.ct"])
    C("encrypt for the channel plan with the batch plan's keys",
      "encrypt {B}/planc.json --keys {B}/keys2 --input {IDX} --limit 4 -o out.ct",
      outs=["out.ct"])
    C("decrypt the inputs x.ct (not outputs)",
      "decrypt {B}/tx.ct --secret-key {B}/tk/secret.key -o out.npy", outs=["out.npy"])
    C("encrypt with the public key only (legitimate), run, decrypt",
      "encrypt {B}/tiny.json --keys pk --input {B}/t.npy -o x.ct", expect="ok",
      files={"pk/eval.keys": Link(ctx.B("tk/eval.keys"))}, outs=["x.ct"],
      follow=[ctx.cmd("run {B}/tiny.json x.ct --eval-keys {B}/tk/eval.keys -o y.ct --quiet"),
              ctx.cmd("decrypt y.ct --secret-key {B}/tk/secret.key -o l.npy")],
      verify=v_pred(TINY_PRED))
    return out


def cases_permissions(ctx, rng):
    out = []
    kind = "permissions"
    sk = ctx.B("keys/secret.key")
    for mode, expect, note in ((0o644, "refuse", "world-readable secret key"),
                               (0o604, "refuse", "world-readable secret key"),
                               (0o640, "refuse", "ambiguous: group-readable; expect a refusal "
                                                 "(as ssh does)"),
                               (0o600, "ok", ""), (0o400, "ok", "")):
        kw = dict(verify=v_pred(ctx.pred["batch"])) if expect == "ok" else {}
        out.append(Case(kind, "decrypt with secret.key mode %o" % mode,
                        ctx.cmd("decrypt {B}/y.ct --secret-key k/secret.key -o out.npy"), expect,
                        files={"k/secret.key": Copy(sk)}, modes={"k/secret.key": mode},
                        outs=["out.npy"], note=note, **kw))
    out.append(Case(kind, "encrypt with a key dir whose secret.key is mode 644",
                    ctx.cmd("encrypt {B}/tiny.json --keys k --input {B}/t.npy -o out.ct"),
                    files={"k/secret.key": Copy(ctx.B("tk/secret.key")),
                           "k/eval.keys": Link(ctx.B("tk/eval.keys"))},
                    modes={"k/secret.key": 0o644}, outs=["out.ct"]))
    out.append(Case(kind, "secret.key a symlink to a mode-644 copy",
                    ctx.cmd("decrypt {B}/y.ct --secret-key k/secret.key -o out.npy"),
                    files={"open.key": Copy(sk), "k/secret.key": Link("../open.key")},
                    modes={"open.key": 0o644}, outs=["out.npy"]))
    out.append(Case(kind, "keygen writes secret.key readable only by its owner",
                    ctx.cmd("keygen {B}/tiny.json -o k"), "ok",
                    verify=v_secret_private("k/secret.key")))
    out.append(Case(kind, "keygen over existing keys without --force",
                    ctx.cmd("keygen {B}/tiny.json -o k"), "refuse",
                    files={"k/secret.key": b"old"}, modes={"k/secret.key": 0o644},
                    outs=["k/secret.key"],
                    note="a new secret key could not decrypt what the old one encrypted"))
    out.append(Case(kind, "keygen --force over an existing world-readable secret.key",
                    ctx.cmd("keygen {B}/tiny.json -o k --force"), "ok",
                    files={"k/secret.key": b"old"}, modes={"k/secret.key": 0o644},
                    verify=v_secret_private("k/secret.key"),
                    note="ambiguous: overwriting keys could be refused; if it writes, the new "
                         "secret key must be private"))
    return out


def cases_wrong_kind(ctx, rng):
    """Files of the wrong kind passed to each file argument of each command."""
    out = []
    pool = {
        "yaml-spec": os.path.join(MODELS, "cryptonets.yaml"),
        "onnx": os.path.join(ONNX_DIR, "mlp_sklearn.onnx"),
        "plan": ctx.B("tiny.json"),
        "eval.keys": ctx.B("tk/eval.keys"),
        "secret.key": ctx.B("tk/secret.key"),
        "inputs-ct": ctx.B("tx.ct"),
        "outputs-ct": ctx.B("ty.ct"),
        "idx-images": IDX_IMAGES,
        "idx-labels": IDX_LABELS,
        "npy-images": ctx.B("t.npy"),
        "png": ctx.B("img0.png"),
        "logits-npy": ctx.B("tl.npy"),
        "safetensors": os.path.join(MODELS, "cryptonets.safetensors"),
        "empty-file": ctx.B("empty"),
        "directory": ctx.B("tk"),
        "missing": ctx.B("does-not-exist"),
        "random-bytes": ctx.B("garbage.bin"),
        "text": ctx.B("garbage.txt"),
        "other-json": ctx.B("other.json"),
    }
    slots = [
        ("check", "check {X}", {"yaml-spec", "onnx"}, []),
        ("show", "show {X}", {"yaml-spec", "onnx"}, []),
        ("compile", "compile {X} --layout batch --batch 4 -o out.json", {"yaml-spec", "onnx"},
         ["out.json"]),
        ("report", "report {X}", {"plan"}, []),
        ("keygen", "keygen {X} -o k", {"plan"}, ["k/secret.key", "k/eval.keys"]),
        ("encrypt PLAN", "encrypt {X} --keys {B}/tk --input {B}/t.npy -o out.ct", {"plan"},
         ["out.ct"]),
        ("encrypt --input", "encrypt {B}/tiny.json --keys {B}/tk --input {X} -o out.ct",
         {"npy-images"}, ["out.ct"]),
        ("encrypt --keys", "encrypt {B}/tiny.json --keys {X} --input {B}/t.npy -o out.ct",
         {"directory"}, ["out.ct"]),
        ("run PLAN", "run {X} {B}/tx.ct --eval-keys {B}/tk/eval.keys -o out.ct --quiet", {"plan"},
         ["out.ct"]),
        ("run CIPHERTEXTS", "run {B}/tiny.json {X} --eval-keys {B}/tk/eval.keys -o out.ct --quiet",
         {"inputs-ct"}, ["out.ct"]),
        ("run --eval-keys", "run {B}/tiny.json {B}/tx.ct --eval-keys {X} -o out.ct --quiet",
         {"eval.keys"}, ["out.ct"]),
        ("decrypt OUTPUTS", "decrypt {X} --secret-key {B}/tk/secret.key -o out.npy",
         {"outputs-ct"}, ["out.npy"]),
        ("decrypt --secret-key", "decrypt {B}/ty.ct --secret-key {X} -o out.npy", {"secret.key"},
         ["out.npy"]),
        ("eval --input", "eval {M}/cryptonets.yaml --input {X} --limit 4", {"idx-images", "png"},
         []),
        ("eval --labels", "eval {M}/cryptonets.yaml --input {IDX} --labels {X} --limit 4",
         {"idx-labels"}, []),
        ("infer MODEL", "infer {X} --input {B}/t.npy --batch 4 --quiet", set(), []),
        ("infer --input", "infer {B}/tiny.yaml --input {X} --batch 4 --quiet", {"npy-images"}, []),
        ("compile --costs", "compile {B}/tiny.yaml --layout batch --batch 4 --costs {X} -o out.json",
         set(), ["out.json"]),
        ("compile --calibrate",
         "compile {M}/survey_relu.yaml --layout batch --batch 4 --activation chebyshev:4 "
         "--calibrate {X} -o out.json", {"idx-images", "png"}, ["out.json"]),
    ]
    for slot, tpl, right, outs in slots:
        for pk, path in pool.items():
            if pk in right:
                continue
            out.append(Case("wrong-kind", "%s <- %s" % (slot, pk), ctx.cmd(tpl, X=path),
                            "refuse", outs=outs))
    for slot, tpl in (("check", "check /dev/zero"), ("report", "report /dev/zero"),
                      ("decrypt --secret-key", "decrypt {B}/ty.ct --secret-key /dev/zero -o out.npy")):
        out.append(Case("wrong-kind", "%s <- /dev/zero (endless)" % slot, ctx.cmd(tpl), "refuse",
                        note="an endless file must be refused without reading it all"))
    return out


def tiny_plan_cases(ctx):
    """Hand edits of the tiny plan, each tried with report, keygen, encrypt and run."""
    out = []
    kind = "plan-fields"
    plan = json.loads(ctx.b("tiny.json"))

    def edit(label, fn, cmds=("report", "keygen", "encrypt", "run"), note=""):
        def gen():
            p = json.loads(ctx.b("tiny.json"))
            r = fn(p)
            return r if isinstance(r, bytes) else json.dumps(p, indent=2)
        for c in cmds:
            argv = {
                "report": "report plan.json",
                "keygen": "keygen plan.json -o k",
                "encrypt": "encrypt plan.json --keys {B}/tk --input {B}/t.npy -o out.ct",
                "run": "run plan.json {B}/tx.ct --eval-keys {B}/tk/eval.keys -o out.ct --quiet",
            }[c]
            outs = {"report": [], "keygen": ["k/secret.key", "k/eval.keys"]}.get(c, ["out.ct"])
            out.append(Case(kind, "tiny plan %s: %s" % (label, c), ctx.cmd(argv), "refuse",
                            files={"plan.json": gen}, outs=outs,
                            note=note or "a hand-edited plan must be refused on load"))

    def setp(*path_and_value):
        *path, value = path_and_value

        def f(p):
            o = p
            for k in path[:-1]:
                o = o[k]
            o[path[-1]] = value
        return f

    def both(k, v):  # params and report.params
        def f(p):
            p["params"][k] = v
            p["report"]["params"][k] = v
        return f

    edit("params.security=InsecureNone", both("security", "InsecureNone"))
    edit("params.security=Bits192", both("security", "Bits192"),
         note="claims more security than the parameters give")
    edit("params.log_n=12", both("log_n", 12))
    edit("params.log_n=15", both("log_n", 15))
    edit("params.log_n=64", both("log_n", 64))
    edit("params.dnum=0", both("dnum", 0))
    edit("params.q0_bits=1000", both("q0_bits", 1000))
    edit("params.scale_bits=[]", both("scale_bits", []))
    edit("primes[1]+=2", lambda p: p["primes"].__setitem__(1, p["primes"][1] + 2))
    edit("special_primes=[]", setp("special_primes", []))
    edit("input range [0,1e6]", lambda p: p["inputs"][0].__setitem__("range", [0.0, 1e6]))
    edit("input range [1,0]", lambda p: p["inputs"][0].__setitem__("range", [1.0, 0.0]))
    edit("input shape [1,1,4]", lambda p: p["inputs"][0].__setitem__("shape", [1, 1, 4]),
         note="ambiguous (same element count); a hand edit: expect a refusal")
    edit("input shape [1,28,28]", lambda p: p["inputs"][0].__setitem__("shape", [1, 28, 28]))
    edit("inputs=[]", setp("inputs", []))
    edit("outputs shape [1000]", lambda p: p["outputs"][0].__setitem__("shape", [1000]))
    edit("batch=2^40", setp("batch", 2**40))
    edit("batch=0", setp("batch", 0))
    edit("memory estimates set to 1", lambda p: mem_to_one(p))
    edit("layout=channel", setp("layout", "channel"))
    edit("layout=auto", setp("layout", "auto"))
    edit("model name changed", setp("model", "other"))
    edit("format changed", setp("format", "not-a-plan"))
    edit("version=1", setp("version", 1))
    edit("version=3", setp("version", 3))
    edit("unknown field added", setp("extra", 1),
         note="ambiguous: expect a refusal (hand-edited plan)")
    edit("rotation_steps=[1,-1,4096]", setp("rotation_steps", [1, -1, 4096]))
    edit("schedule reversed", lambda p: p["schedule"].reverse())
    edit("schedule index 10^6", lambda p: p["schedule"].__setitem__(0, 10**6))
    edit("schedule duplicated entries", lambda p: p.__setitem__("schedule", p["schedule"] * 2))
    edit("schedule truncated", lambda p: p.__setitem__("schedule", p["schedule"][:3]))
    edit("circuit scalar 2.0 -> 3.0",
         circuit_edit(lambda b: b.replace(struct.pack("<d", 2.0), struct.pack("<d", 3.0), 1)),
         note="changes the circuit digest: keys and inputs no longer match; keygen and report "
              "must refuse the edited plan too")
    edit("circuit last node cut off", circuit_edit(lambda b: b[:-3]))
    edit("circuit truncated", circuit_edit(lambda b: b[:200]))
    edit("circuit empty", setp("circuit", ""))
    edit("circuit not base64", setp("circuit", "%%% not base64 %%%"))
    edit("circuit byte in the middle flipped",
         circuit_edit(lambda b: b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0xff]) + b[len(b) // 2 + 1:]))
    edit("key `circuit` removed", lambda p: p.pop("circuit"))
    edit("not JSON", lambda p: b"{ this is not json")
    edit("JSON nested 100000 deep", lambda p: b"[" * 100000 + b"]" * 100000, cmds=("report",))
    # memory limit from the edited plan
    def gen():
        p = json.loads(ctx.b("tiny.json"))
        mem_to_one(p)
        return json.dumps(p, indent=2)
    out.append(Case(kind, "tiny plan memory estimates set to 1: run --memory-limit plan",
                    ctx.cmd("run plan.json {B}/tx.ct --eval-keys {B}/tk/eval.keys -o out.ct "
                            "--quiet --memory-limit plan"), files={"plan.json": gen},
                    outs=["out.ct"]))
    # controls: whitespace only
    compact = lambda: json.dumps(plan, separators=(",", ":"))
    out.append(Case(kind, "tiny plan re-indented (whitespace only): report",
                    ctx.cmd("report plan.json"), "ok", files={"plan.json": compact},
                    verify=v_stdout_same("report:tiny")))
    out.append(Case(kind, "tiny plan re-indented (whitespace only): run",
                    ctx.cmd("run plan.json {B}/tx.ct --eval-keys {B}/tk/eval.keys -o y.ct --quiet"),
                    "ok", files={"plan.json": compact},
                    follow=[ctx.cmd("decrypt y.ct --secret-key {B}/tk/secret.key -o l.npy")],
                    verify=v_pred(TINY_PRED)))
    return out


def circuit_edit(fn):
    """An edit of the plan's circuit (the HE IR's binary form, base64 in the JSON): `fn` maps
    the decoded bytes to the edited ones."""
    def f(p):
        b = base64.b64decode(p["circuit"])
        p["circuit"] = base64.b64encode(fn(b)).decode()
    return f


def mem_to_one(p):
    r = p["report"]
    r["peak_ciphertext_bytes"] = 1
    s = r.get("schedule") or {}
    for k in ("peak", "topological"):
        if k in s:
            s[k]["bytes"] = 1
    for k in ("key_bytes", "total_bytes"):
        if k in s:
            s[k] = 1
    for layer in r.get("layers", []):
        if isinstance(layer, dict):
            for k in list(layer):
                if "bytes" in k or k == "memory":
                    layer[k] = 1


def cases_plan_fields(ctx, rng):
    out = tiny_plan_cases(ctx)
    kind = "plan-fields"

    def edit(label, fn, planfile="plan.json", cmds=("report", "keygen"), note=""):
        def gen():
            p = json.loads(ctx.b(planfile))
            fn(p)
            return json.dumps(p, indent=2)
        for c in cmds:
            argv = {"report": "report plan.json", "keygen": "keygen plan.json -o k"}[c]
            outs = ["k/secret.key", "k/eval.keys"] if c == "keygen" else []
            out.append(Case(kind, "%s %s: %s" % (planfile, label, c), ctx.cmd(argv), "refuse",
                            files={"plan.json": gen}, outs=outs,
                            note=note or "a hand-edited plan must be refused on load"))

    def both(k, v):
        def f(p):
            p["params"][k] = v
            p["report"]["params"][k] = v
        return f
    edit("params.security=InsecureNone", both("security", "InsecureNone"))
    edit("params.log_n=12", both("log_n", 12))
    edit("input range [0,1e6]", lambda p: p["inputs"][0].__setitem__("range", [0.0, 1e6]))
    edit("batch=2^40", lambda p: p.__setitem__("batch", 2**40))
    edit("memory estimates set to 1", mem_to_one)
    edit("primes[0]+=2", lambda p: p["primes"].__setitem__(0, p["primes"][0] + 2))
    edit("circuit byte at three quarters changed",
         circuit_edit(lambda b: b[:3 * len(b) // 4] + bytes([b[3 * len(b) // 4] ^ 0x55])
                      + b[3 * len(b) // 4 + 1:]))
    edit("schedule shuffled", lambda p: random.Random(1).shuffle(p["schedule"]))
    edit("rotation_steps removed", lambda p: p.__setitem__("rotation_steps", []), "planc.json",
         cmds=("report",))
    # rotation steps removed, keys generated for the edited plan, then a run with them
    def gen():
        p = json.loads(ctx.b("planc.json"))
        p["rotation_steps"] = []
        return json.dumps(p, indent=2)
    out.append(Case(kind, "planc.json rotation_steps removed: keygen", ctx.cmd("keygen plan.json -o k"),
                    files={"plan.json": gen}, outs=["k/secret.key", "k/eval.keys"],
                    note="a hand-edited plan must be refused on load"))
    out.append(Case(kind, "planc.json rotation_steps removed: run with keys made for it",
                    ctx.cmd("run plan.json {B}/xc.ct --eval-keys k/eval.keys -o out.ct --quiet"),
                    files={"plan.json": gen}, pre=[ctx.cmd("keygen plan.json -o k")],
                    outs=["out.ct"]))
    def gen2():
        p = json.loads(ctx.b("planc.json"))
        p["rotation_steps"] = p["rotation_steps"][1:]
        return json.dumps(p, indent=2)
    out.append(Case(kind, "planc.json first rotation step removed: run with keys made for it",
                    ctx.cmd("run plan.json {B}/xc.ct --eval-keys k/eval.keys -o out.ct --quiet"),
                    files={"plan.json": gen2}, pre=[ctx.cmd("keygen plan.json -o k")],
                    outs=["out.ct"]))
    out.append(Case(kind, "plan.json params.security=InsecureNone: run",
                    ctx.cmd("run plan.json {B}/x.ct --eval-keys {B}/keys/eval.keys -o out.ct --quiet"),
                    files={"plan.json": lambda: json.dumps(
                        _apply(json.loads(ctx.b("plan.json")), both("security", "InsecureNone")),
                        indent=2)}, outs=["out.ct"]))
    return out


def _apply(p, fn):
    fn(p)
    return p


def cases_plan_bytes(ctx, rng):
    out = []
    kind = "bytes:plan"
    data = ctx.b("tiny.json")
    n = len(data)
    argv = ctx.cmd("keygen plan.json -o k")
    outs = ["k/secret.key", "k/eval.keys"]

    def add(tag, fn, expect="refuse", note="", cmd=None):
        kw = {}
        if expect == "ok":
            kw = dict(verify=v_stdout_same("report:tiny"))
        out.append(Case(kind, "tiny plan " + tag, cmd or argv, expect, files={"plan.json": fn},
                        outs=[] if cmd else outs, note=note, **kw))
    add("zero length", lambda: b"")
    for cut in (1, n // 10, n // 3, n // 2, n - 50, n - 2):
        add("truncate@%d" % cut, lambda cut=cut: data[:cut])
    add("append NUL", lambda: data + b"\x00")
    add("append '}'", lambda: data + b"}")
    add("append a second plan", lambda: data + data)
    add("append a newline (whitespace)", lambda: data + b"\n", "ok", cmd=ctx.cmd("report plan.json"))
    add("CRLF line endings (whitespace)", lambda: data.replace(b"\n", b"\r\n"), "ok",
        cmd=ctx.cmd("report plan.json"))
    add("UTF-8 BOM prefixed", lambda: b"\xef\xbb\xbf" + data,
        note="ambiguous: JSON forbids a BOM; expect a refusal")
    text = data.decode()
    for ch in '{}[]:,"':
        positions = [i for i, c in enumerate(text) if c == ch]
        off = positions[len(positions) // 2]
        add("structural %r flipped @%d" % (ch, off),
            lambda off=off: data[:off] + bytes([data[off] ^ 0x01]) + data[off + 1:])
    for i in range(6):
        off = rng.randrange(n)
        add("high bit flipped @%d (invalid UTF-8)" % off,
            lambda off=off: data[:off] + bytes([data[off] ^ 0x80]) + data[off + 1:])
    for word in ("Bits128", "cryptonets" if b"cryptonets" in data else "tiny", "mul_scalar",
                 "rescale", "output", "relinearize"):
        off = data.find(word.encode())
        if off >= 0:
            add("low bit flipped in %r" % word,
                lambda off=off: data[:off + 1] + bytes([data[off + 1] ^ 0x01]) + data[off + 2:])
    circ = data.find(b"primes = [")
    if circ >= 0:
        off = circ + 12
        add("digit flipped in the circuit's primes",
            lambda off=off: data[:off] + bytes([data[off] ^ 0x01]) + data[off + 1:])
    big = ctx.b("plan.json")
    for i in range(6):
        off = rng.randrange(len(big))
        out.append(Case(kind, "cryptonets plan low bit flipped @%d" % off,
                        ctx.cmd("keygen plan.json -o k"), "refuse",
                        files={"plan.json": lambda off=off: big[:off] + bytes([big[off] ^ 0x01]) + big[off + 1:]},
                        outs=outs, note="a hand-edited plan must be refused (plan integrity)"))
    return out


def spec_case(ctx, kind, name, yaml_text, argv_tpl="check cryptonets.yaml", expect="refuse",
              weights=True, weights_data=None, note="", verify=None, outs=(), yaml_name="cryptonets.yaml",
              timeout=None):
    files = {yaml_name: yaml_text}
    if weights:
        stem = os.path.splitext(yaml_name)[0]
        files[stem + ".safetensors"] = (weights_data if weights_data is not None
                                        else Link(os.path.join(MODELS, "cryptonets.safetensors")))
    return Case(kind, name, ctx.cmd(argv_tpl), expect, files=files, note=note, verify=verify,
                outs=outs, timeout=timeout)


def cases_yaml_bytes(ctx, rng):
    out = []
    kind = "bytes:yaml"
    src = ctx.read(os.path.join(MODELS, "cryptonets.yaml"))
    text = src.decode()
    n = len(src)
    same = v_check_same("check:cryptonets")

    def add(tag, fn, expect="refuse", note="", compile_=False):
        if compile_:
            out.append(spec_case(ctx, kind, "cryptonets.yaml %s: compile" % tag, fn,
                                 "compile cryptonets.yaml --layout batch --batch 4 -o out.json",
                                 expect, note=note, outs=["out.json"],
                                 verify=v_plan_same("out.json", "plan.json") if expect == "ok" else None))
        else:
            out.append(spec_case(ctx, kind, "cryptonets.yaml " + tag, fn, expect=expect, note=note,
                                 verify=same if expect == "ok" else None))

    add("zero length", b"")
    add("only the comments (truncated before name:)", src[:src.find(b"name:")])
    add("truncated inside the input block", src[:src.find(b"range:")])
    mid = src.find(b"out_features: 100") + 5
    add("truncated inside a layer's flow map", src[:mid])
    add("truncated after the fc1 line (act2, fc2 dropped)",
        src[:src.find(b"  - { name: act2")],
        note="ambiguous: still a valid spec, but fc2.* weights are left unused; expect a refusal")
    add("truncated by 1 byte (final newline)", src[:-1], "ok",
        note="only the final newline removed: same model")
    add("truncated by 3 bytes", src[:-3])
    add("append NUL", src + b"\x00")
    add("append bytes ff fe", src + b"\xff\xfe")
    add("append a comment", src + b"# trailing comment\n", "ok")
    add("append blank lines", src + b"\n\n\n", "ok")
    add("append an unknown key", src + b"foo: 1\n")
    add("append a second YAML document", src + b"---\nname: other\n",
        note="ambiguous: multi-document YAML; expect a refusal")
    add("duplicate key name:", src.replace(b"name: cryptonets", b"name: cryptonets\nname: again", 1))
    add("CRLF line endings", src.replace(b"\n", b"\r\n"), "ok")
    add("trailing spaces on every line", src.replace(b"\n", b"   \n"), "ok")
    add("UTF-8 BOM prefixed", b"\xef\xbb\xbf" + src, "ok",
        note="YAML allows a byte-order mark; expect it to be accepted")
    add("tab indentation of input keys", src.replace(b"\n  shape:", b"\n\tshape:"),
        note="YAML forbids tabs for indentation")
    add("CRLF line endings", src.replace(b"\n", b"\r\n"), "ok", compile_=True)
    add("a comment changed", src.replace(b"CryptoNets-style", b"CryptoNetz-style"), "ok",
        compile_=True)
    # low-bit flips of letters inside comments: the same model
    starts = [0] + [m.end() for m in re.finditer(b"\n", src)]
    comment_starts = [st for st in starts if src[st:st + 1] == b"#"]
    for st in comment_starts[:6]:
        off = next(i for i in range(st + 2, len(src)) if src[i:i + 1].isalpha())
        add("comment letter flipped @%d" % off,
            lambda off=off: src[:off] + bytes([src[off] ^ 0x01]) + src[off + 1:], "ok")
    # high-bit flips anywhere: invalid UTF-8
    for _ in range(8):
        off = rng.randrange(n)
        add("high bit flipped @%d (invalid UTF-8)" % off,
            lambda off=off: src[:off] + bytes([src[off] ^ 0x80]) + src[off + 1:])
    # targeted low-bit flips that change meaning
    targets = [("key shape", "  shape:", 3), ("key layers", "layers:", 1),
               ("key input", "\ninput:", 2), ("key out_features", "out_features", 1),
               ("op conv2d", "conv2d", 1), ("op dense", "dense", 1), ("op square", "op: square", 5),
               ("layer name fc1", "name: fc1,", 7), ("layer name conv1", "name: conv1", 7),
               ("punctuation {", "{ name: act1", 0), ("punctuation }", "op: square }", 11),
               ("punctuation [", "[1, 28", 0), ("punctuation ,", ", 28]", 0),
               ("colon after op", "op: flatten", 2)]
    for tag, needle, delta in targets:
        off = text.find(needle, text.find("\nname:")) + delta  # not in the comments
        add("%s flipped @%d" % (tag, off),
            lambda off=off: src[:off] + bytes([src[off] ^ 0x01]) + src[off + 1:])
    for tag, old, new in (("kernel 5 -> 4", b"kernel: 5", b"kernel: 4"),
                          ("out_features 100 -> 101", b"out_features: 100", b"out_features: 101"),
                          ("input 28 -> 29", b"shape: [1, 28, 28]", b"shape: [1, 29, 28]"),
                          ("out_channels 5 -> 4", b"out_channels: 5", b"out_channels: 4")):
        add(tag + " (weights no longer fit)", src.replace(old, new, 1))
    return out


def cases_model_shapes(ctx, rng):
    out = []
    kind = "model-shapes"
    spec = lambda shape, layers: ("name: absurd\ninput:\n  shape: %s\nlayers:\n%s" % (
        shape, "".join("  - %s\n" % l for l in layers)))
    big1 = spec("[1000000000]", ["{ name: s, op: square }"])
    big2 = spec("[1, 100000, 100000]", ["{ name: p, op: avg_pool, kernel: 2, stride: 2 }",
                                         "{ name: f, op: flatten }"])
    note = "absurd shapes must be refused up front (limits on shapes), not allocated"
    for name, text in (("input [1000000000] + square", big1),
                       ("input 1x100000x100000 + avg_pool", big2)):
        out.append(spec_case(ctx, kind, name + ": check", text, "check m.yaml", weights=False,
                             yaml_name="m.yaml", note=note))
        out.append(spec_case(ctx, kind, name + ": show", text, "show m.yaml", weights=False,
                             yaml_name="m.yaml", note=note))
        for layout in ("batch", "channel"):
            out.append(spec_case(ctx, kind, name + ": compile --layout " + layout, text,
                                 "compile m.yaml --layout %s --batch 4 -o out.json" % layout,
                                 weights=False, yaml_name="m.yaml", note=note, outs=["out.json"]))
        out.append(spec_case(ctx, kind, name + ": eval", text,
                             "eval m.yaml --input {B}/t.npy --limit 1", weights=False,
                             yaml_name="m.yaml", note=note))
    for tag, shape, layers in (
            ("input [0, 28, 28]", "[0, 28, 28]", ["{ name: s, op: square }"]),
            ("input []", "[]", ["{ name: s, op: square }"]),
            ("input [2^64-1]", "[18446744073709551615]", ["{ name: s, op: square }"]),
            ("input [2^64]", "[18446744073709551616]", ["{ name: s, op: square }"]),
            ("input [-1]", "[-1]", ["{ name: s, op: square }"]),
            ("input [2^32, 2^32, 2] (product overflows)", "[4294967296, 4294967296, 2]",
             ["{ name: s, op: square }"]),
            ("avg_pool kernel 0", "[1, 28, 28]", ["{ name: p, op: avg_pool, kernel: 0, stride: 1 }"]),
            ("avg_pool stride 0", "[1, 28, 28]", ["{ name: p, op: avg_pool, kernel: 2, stride: 0 }"]),
            ("avg_pool kernel 1000000", "[1, 28, 28]",
             ["{ name: p, op: avg_pool, kernel: 1000000, stride: 1 }"]),
            ("avg_pool padding 2^40", "[1, 28, 28]",
             ["{ name: p, op: avg_pool, kernel: 2, stride: 2, padding: 1099511627776 }"]),
            ("reshape to [10^12]", "[1, 28, 28]", ["{ name: r, op: reshape, shape: [1000000000000] }"]),
            ("dense out_features 10^12", "[4]", ["{ name: d, op: dense, out_features: 1000000000000 }"]),
            ("conv2d out_channels 10^9", "[1, 28, 28]",
             ["{ name: c, op: conv2d, out_channels: 1000000000, kernel: 3 }"]),
            ("20000 square layers", "[4]", ["{ name: s%d, op: square }" % i for i in range(20000)]),
    ):
        text = spec(shape, layers)
        deep = tag.startswith("20000")
        out.append(spec_case(ctx, kind, tag + ": check", text, "check m.yaml", weights=False,
                             yaml_name="m.yaml", expect="ok-any" if deep else "refuse",
                             note="a deep graph is a valid graph; compile refuses its depth"
                             if deep else note))
        if tag.startswith(("input [1", "input [0", "avg_pool padding", "20000", "reshape")):
            out.append(spec_case(ctx, kind, tag + ": compile", text,
                                 "compile m.yaml --layout batch --batch 4 -o out.json",
                                 weights=False, yaml_name="m.yaml", note=note, outs=["out.json"]))
    # graph form with a cycle
    cyc = ("name: cyc\ninput:\n  shape: [4]\ngraph:\n"
           "  - { name: a, op: add, inputs: [input, b] }\n"
           "  - { name: b, op: square, inputs: [a] }\noutputs: [b]\n")
    out.append(spec_case(ctx, kind, "graph with a cycle: check", cyc, "check m.yaml", weights=False,
                         yaml_name="m.yaml"))
    out.append(spec_case(ctx, kind, "graph with a self-loop: compile",
                         cyc.replace("inputs: [input, b]", "inputs: [a, a]"),
                         "compile m.yaml --layout batch --batch 4 -o out.json", weights=False,
                         yaml_name="m.yaml", outs=["out.json"]))
    # YAML bombs
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        "%s: &%s [%s]\n" % (c, c, ", ".join(["*" + p] * 10))
        for p, c in zip("abcdefgh", "bcdefghi"))
    out.append(spec_case(ctx, kind, "billion-laughs aliases", laughs + "name: bomb\ninput:\n  shape: [4]\n",
                         "check m.yaml", weights=False, yaml_name="m.yaml"))
    out.append(spec_case(ctx, kind, "flow sequence nested 100000 deep",
                         "name: deep\ninput:\n  shape: " + "[" * 100000 + "]" * 100000 + "\n",
                         "check m.yaml", weights=False, yaml_name="m.yaml"))
    return out


def cases_model_values(ctx, rng):
    out = []
    kind = "model-values"
    tiny = TINY_YAML
    note = "non-finite or absurd model values must be refused when the model is loaded"
    for tag, new in (("scale factor 3e38", "factor: 3.0e38"), ("scale factor .nan", "factor: .nan"),
                     ("scale factor .inf", "factor: .inf"), ("scale factor -.inf", "factor: -.inf"),
                     ("scale factor 1e309 (overflows to inf)", "factor: 1e309")):
        text = tiny.replace("factor: 2.0", new)
        for c in ("check m.yaml", "compile m.yaml --layout batch --batch 4 -o out.json",
                  "eval m.yaml --input {B}/t.npy"):
            out.append(spec_case(ctx, kind, "%s: %s" % (tag, c.split()[0]), text, c, weights=False,
                                 yaml_name="m.yaml", note=note,
                                 outs=["out.json"] if "compile" in c else ()))
    for tag, layer in (("poly coeffs [.nan]", "{ name: p, op: poly, coeffs: [.nan] }"),
                       ("poly coeffs [0, 1e308, 1e308]", "{ name: p, op: poly, coeffs: [0, 1e308, 1e308] }"),
                       ("poly coeffs []", "{ name: p, op: poly, coeffs: [] }")):
        text = tiny.replace("{ name: s, op: scale, factor: 2.0 }", layer)
        out.append(spec_case(ctx, kind, tag + ": check", text, "check m.yaml", weights=False,
                             yaml_name="m.yaml", note=note))
        out.append(spec_case(ctx, kind, tag + ": compile", text,
                             "compile m.yaml --layout batch --batch 4 -o out.json", weights=False,
                             yaml_name="m.yaml", note=note, outs=["out.json"]))
    for tag, inp in (("input std 0 (division by zero)", "  std: 0.0\n"),
                     ("input std -1 (ambiguous: mirrors the input; expect a refusal)", "  std: -1.0\n"),
                     ("input mean .nan", "  mean: .nan\n"),
                     ("input mean [0, 0] for 1 channel", "  mean: [0.0, 0.0]\n"),
                     ("input range [0, .inf]", None), ("input range [.nan, 1]", None)):
        if inp is None:
            text = tiny.replace("range: [0.0, 1.0]", "range: [0, .inf]" if "inf" in tag else "range: [.nan, 1]")
        else:
            text = tiny.replace("  range: [0.0, 1.0]\n", "  range: [0.0, 1.0]\n" + inp)
        for c in ("check m.yaml", "compile m.yaml --layout batch --batch 4 -o out.json"):
            out.append(spec_case(ctx, kind, "%s: %s" % (tag, c.split()[0]), text, c, weights=False,
                                 yaml_name="m.yaml", note=note,
                                 outs=["out.json"] if "compile" in c else ()))
    w = ctx.read(os.path.join(MODELS, "cryptonets.safetensors"))
    yml = ctx.read(os.path.join(MODELS, "cryptonets.yaml"))
    for tag, value in (("NaN", float("nan")), ("+inf", float("inf")), ("3e38", 3e38),
                       ("-3e38", -3e38)):
        for tensor in ("conv1.weight", "fc2.bias"):
            wd = lambda tensor=tensor, value=value: st_set_f32(w, tensor, 0, value)
            for c in ("check cryptonets.yaml",
                      "compile cryptonets.yaml --layout batch --batch 4 -o out.json",
                      "eval cryptonets.yaml --input {IDX} --limit 4"):
                if tensor == "fc2.bias" and not c.startswith("eval"):
                    continue
                out.append(spec_case(ctx, kind, "weight %s[0]=%s: %s" % (tensor, tag, c.split()[0]),
                                     yml, c, weights_data=wd, note=note,
                                     outs=["out.json"] if "compile" in c else ()))
    out.append(spec_case(ctx, kind, "all weights zero (legitimate): check", yml, "check cryptonets.yaml",
                         "ok", weights_data=lambda: _zero_weights(w),
                         verify=v_check_same("check:cryptonets")))
    return out


def _zero_weights(w):
    h, d = st_parse(w)
    return st_ser(h, bytes(len(d)))


def cases_safetensors_bytes(ctx, rng):
    out = []
    kind = "bytes:safetensors"
    w = ctx.read(os.path.join(MODELS, "cryptonets.safetensors"))
    yml = ctx.read(os.path.join(MODELS, "cryptonets.yaml"))
    h, d = st_parse(w)
    (hl,) = struct.unpack_from("<Q", w, 0)

    def add(tag, fn, expect="refuse", note=""):
        out.append(spec_case(ctx, kind, "cryptonets.safetensors " + tag, yml, "check cryptonets.yaml",
                             expect, weights_data=fn, note=note,
                             verify=v_check_same("check:cryptonets") if expect == "ok" else None))
    add("zero length", b"")
    for cut in (4, 8, 8 + hl // 2, 8 + hl + 100, len(w) // 2, len(w) - 1):
        add("truncate@%d" % cut, lambda cut=cut: w[:cut])
    add("header length 2^64-1", lambda: struct.pack("<Q", 2**64 - 1) + w[8:])
    add("header length +1", lambda: struct.pack("<Q", hl + 1) + w[8:])
    add("header length 0", lambda: struct.pack("<Q", 0) + w[8:])
    add("header JSON broken", lambda: w[:9] + b"\x00" + w[10:])
    add("append 1 byte", lambda: w + b"\x00",
        note="ambiguous: trailing bytes after the last tensor; expect a refusal")

    def hedit(fn):
        def g():
            hh = json.loads(json.dumps(h))
            fn(hh)
            return st_ser(hh, d)
        return g
    add("dtype F32 -> F64", hedit(lambda x: x["conv1.weight"].__setitem__("dtype", "F64")))
    add("dtype F32 -> F16", hedit(lambda x: x["conv1.weight"].__setitem__("dtype", "F16")))
    add("dtype F32 -> I64", hedit(lambda x: x["conv1.weight"].__setitem__("dtype", "I64")))
    add("shape [5,1,5,5] -> [5,1,5,4]", hedit(lambda x: x["conv1.weight"].__setitem__("shape", [5, 1, 5, 4])))
    add("shape with 10^12 elements", hedit(lambda x: x["fc1.weight"].__setitem__("shape", [1000000, 1000000])))
    add("data_offsets past the end", hedit(lambda x: x["fc2.weight"].__setitem__(
        "data_offsets", [x["fc2.weight"]["data_offsets"][0], len(d) + 4000])))
    add("data_offsets overlapping", hedit(lambda x: x["fc2.bias"].__setitem__(
        "data_offsets", list(x["conv1.weight"]["data_offsets"][:1]) + [x["conv1.weight"]["data_offsets"][0] + 40])),
        note="ambiguous: overlapping tensors are forbidden by the safetensors format")
    add("data_offsets reversed", hedit(lambda x: x["fc2.bias"].__setitem__(
        "data_offsets", x["fc2.bias"]["data_offsets"][::-1])))
    add("tensor renamed (fc2.bias missing)", hedit(lambda x: x.__setitem__("fc2.bias2", x.pop("fc2.bias"))))
    add("re-serialised unchanged", hedit(lambda x: None), "ok", note="control")
    return out


def onnx_case(ctx, kind, name, data_fn, cmd="check m.onnx", expect="refuse", note="", ref=None,
              outs=()):
    verify = v_check_same(ref) if (expect == "ok" and ref) else None
    return Case(kind, name, ctx.cmd(cmd), expect, files={"m.onnx": data_fn}, note=note,
                verify=verify, outs=outs)


def cases_onnx(ctx, rng):
    out = []
    for model, ref in (("mlp_sklearn", "check:mlp"), ("lenet5_torch", "check:lenet5"),
                       ("resnet_torch", "check:resnet")):
        data = ctx.read(os.path.join(ONNX_DIR, model + ".onnx"))
        n = len(data)
        kind = "bytes:onnx"
        add = lambda tag, fn, expect="refuse", note="", data=data, model=model, ref=ref: out.append(
            onnx_case(ctx, kind, "%s %s" % (model, tag), fn, expect=expect, note=note, ref=ref))
        add("zero length", b"")
        for cut in (1, 2, 10, n // 3, n // 2, n - 1):
            add("truncate@%d" % cut, lambda cut=cut, data=data: data[:cut])
        add("append ff ff ff ff (invalid tag)", lambda data=data: data + b"\xff\xff\xff\xff")
        add("append a NUL (field 0)", lambda data=data: data + b"\x00")
        add("re-serialised unchanged", lambda data=data: pb_ser(pb_parse(data)), "ok",
            note="control: the Python protobuf writer reproduces the model")
        # op_type fields (tag 0x22, length, name): node *names* are free labels, so a flip in
        # one would legitimately change nothing
        for word in (b"MatMul", b"Conv", b"Gemm", b"Relu", b"input"):
            key = word if word == b"input" else b"\x22" + bytes([len(word)]) + word
            off = data.find(key)
            if off >= 0:
                off += len(key) - len(word)
                add("low bit flipped in %r" % word.decode(),
                    lambda off=off, data=data: data[:off + 1] + bytes([data[off + 1] ^ 0x01]) + data[off + 2:])
                add("high bit flipped in %r (invalid UTF-8)" % word.decode(),
                    lambda off=off, data=data: data[:off + 1] + bytes([data[off + 1] ^ 0x80]) + data[off + 2:])
        m = pb_parse(data)
        # offset of the graph's length varint: after the graph tag (0x3a)
        pos = 0
        for f, wt, v in m:
            tag = _wv(f << 3 | wt)
            if f == 7:
                goff = pos + len(tag)
                add("graph length varint flipped", lambda goff=goff, data=data:
                    data[:goff] + bytes([data[goff] ^ 0x04]) + data[goff + 1:],
                    note="protobuf has no checksum: a length off by 4 may still decode; the "
                         "model is damaged all the same, expect a refusal")
                break
            pos += len(tag) + (len(_wv(v)) if wt == 0 else len(_wv(len(v))) + len(v) if wt == 2 else len(v))
    # structural edits on mlp_sklearn
    data = ctx.read(os.path.join(ONNX_DIR, "mlp_sklearn.onnx"))
    kind = "model-shapes"
    comp = "compile m.onnx --activation square --layout batch --batch 4 -o out.json"

    def dimset(i, value=None, param=None):
        def f(dims):
            if param is not None:
                dims[i] = [[2, 2, param.encode()]]
            else:
                dims[i] = [[1, 0, value & ((1 << 64) - 1)]]
        return f
    for tag, fn in (("input feature dim 784 -> 10^12", dimset(1, 10**12)),
                    ("input feature dim 784 -> 0", dimset(1, 0)),
                    ("input feature dim 784 -> -5", dimset(1, -5)),
                    ("input batch dim N -> 10^12", dimset(0, 10**12)),  # ambiguous, see note
                    ("input feature dim -> symbolic 'F'", dimset(1, param="F"))):
        g = lambda fn=fn: onnx_edit(data, lambda gf: onnx_input_dims(gf, fn))
        out.append(onnx_case(ctx, kind, "mlp_sklearn %s: check" % tag, g,
                             note="absurd ONNX dims must be refused"))
        out.append(onnx_case(ctx, kind, "mlp_sklearn %s: compile" % tag, g, comp,
                             note="absurd ONNX dims must be refused", outs=["out.json"]))

    def init_dims(name, dims):
        def f(tf):
            rest = [x for x in tf if x[0] != 1]
            tf[:] = [[1, 0, dd & ((1 << 64) - 1)] for dd in dims] + rest
        return lambda: onnx_edit(data, lambda gf: onnx_initializer(gf, name, f))
    out.append(onnx_case(ctx, kind, "mlp_sklearn initializer dims [10^12, 64]: check",
                         init_dims("coefficient", [10**12, 64])))
    out.append(onnx_case(ctx, kind, "mlp_sklearn initializer dims [784, 65] (data short): check",
                         init_dims("coefficient", [784, 65])))
    out.append(onnx_case(ctx, kind, "mlp_sklearn initializer dims [2^32, 2^32] (overflow): check",
                         init_dims("coefficient", [2**32, 2**32])))
    kind = "model-values"

    def init_value(name, value):
        def f(tf):
            for x in tf:
                if x[0] == 4 and x[1] == 2:
                    x[2] = floats_set(x[2], 0, value)
        return lambda: onnx_edit(data, lambda gf: onnx_initializer(gf, name, f))
    for tag, value in (("NaN", float("nan")), ("inf", float("inf")), ("3e38", 3e38)):
        g = init_value("coefficient", value)
        out.append(onnx_case(ctx, kind, "mlp_sklearn weight[0]=%s: check" % tag, g,
                             note="non-finite or absurd weights must be refused"))
        out.append(onnx_case(ctx, kind, "mlp_sklearn weight[0]=%s: eval" % tag, g,
                             "eval m.onnx --input {IDX} --limit 4",
                             note="non-finite or absurd weights must be refused"))
    kind = "onnx-structure"

    def nodes_edit(fn):
        def g():
            def h(gf):
                nodes = [x for x in gf if x[0] == 1]
                rest = [x for x in gf if x[0] != 1]
                new = fn(nodes)
                gf[:] = rest + new
            return onnx_edit(data, h)
        return g

    def self_loop(nodes):
        nf = pb_parse(nodes[1][2])
        own = next(v for f, _, v in nf if f == 2)
        first = next(x for x in nf if x[0] == 1)
        first[2] = own
        nodes[1][2] = pb_ser(nf)
        return nodes
    out.append(onnx_case(ctx, kind, "mlp_sklearn node reads its own output (cycle)", nodes_edit(self_loop)))
    out.append(onnx_case(ctx, kind, "mlp_sklearn all nodes removed", nodes_edit(lambda n: [])))
    out.append(onnx_case(ctx, kind, "mlp_sklearn node duplicated (two producers of one value)",
                         nodes_edit(lambda n: n[:2] + [list(n[1])] + n[2:])))
    out.append(onnx_case(ctx, kind, "mlp_sklearn nodes reversed", nodes_edit(lambda n: n[::-1]),
                         note="ambiguous: ONNX requires topological order; expect a refusal"))
    out.append(onnx_case(ctx, kind, "mlp_sklearn initializers removed",
                         lambda: onnx_edit(data, lambda gf: gf.__setitem__(
                             slice(None), [x for x in gf if x[0] != 5]))))
    out.append(onnx_case(ctx, kind, "mlp_sklearn graph inputs removed",
                         lambda: onnx_edit(data, lambda gf: gf.__setitem__(
                             slice(None), [x for x in gf if x[0] != 11]))))
    out.append(onnx_case(ctx, kind, "mlp_sklearn graph removed",
                         lambda: pb_ser([x for x in pb_parse(data) if x[0] != 7])))

    def opset(v):
        def g():
            m = pb_parse(data)
            for x in m:
                if x[0] == 8:
                    of = pb_parse(x[2])
                    for y in of:
                        if y[0] == 2:
                            y[2] = v
                    x[2] = pb_ser(of)
            return pb_ser(m)
        return g
    out.append(onnx_case(ctx, kind, "mlp_sklearn opset 999", opset(999),
                         note="an unknown future opset must be refused"))
    out.append(onnx_case(ctx, kind, "mlp_sklearn opset 1", opset(1),
                         note="ambiguous: ops newer than opset 1; expect a refusal"))
    out.append(onnx_case(ctx, kind, "protobuf nested 100000 deep",
                         lambda: _deep_pb(100000)))
    return out


def _deep_pb(depth):
    """ModelProto.graph -> GraphProto.node -> NodeProto.attribute -> AttributeProto.g -> ...
    nested `depth` levels (built outside-in without quadratic copying)."""
    fields = [7] + [(1, 5, 6)[i % 3] for i in range(depth - 1)]
    lens = [0] * (depth + 1)  # lens[k]: length of the message at nesting k (innermost empty)
    for k in range(depth - 1, -1, -1):
        lens[k] = len(_wv(fields[k] << 3 | 2)) + len(_wv(lens[k + 1])) + lens[k + 1]
    return b"".join(_wv(fields[k] << 3 | 2) + _wv(lens[k + 1]) for k in range(depth))


def image_cases(ctx, rng):
    out = []
    px = ctx.px
    enc = "encrypt {B}/planc.json --keys {B}/kc --input %s -o out.ct"
    chain = [ctx.cmd("run {B}/planc.json out.ct --eval-keys {B}/kc/eval.keys -o y.ct --quiet"),
             ctx.cmd("decrypt y.ct --secret-key {B}/kc/secret.key -o l.npy")]
    pred4 = ctx.pred["channel"]

    def add(kind, name, fname, data, expect="refuse", note="", cmd=None, verify=None, follow=None,
            limit=""):
        if cmd is None:
            argv = ctx.cmd(enc % fname + limit)
            outs = ["out.ct"]
        else:
            argv = ctx.cmd(cmd % fname)
            outs = ["out.ct"] if "out.ct" in cmd else []
        kw = {}
        if expect == "ok" and follow is None and cmd is None:
            kw = dict(follow=chain, verify=verify or v_pred(pred4))
        elif expect == "ok":
            kw = dict(follow=follow or [], verify=verify)
        out.append(Case(kind, name, argv, expect, files={fname: data}, outs=outs, note=note, **kw))

    # --- legitimate encodings (full chain on the channel plan, predictions must match)
    add("image-format", "npy u1 [4,1,28,28] (ok)", "i.npy", lambda: ctx.b("img4_u8.npy"), "ok")
    add("image-format", "npy f4 [4,1,28,28] /255 (ok)", "i.npy", lambda: ctx.b("img4_f4.npy"), "ok")
    add("image-format", "npy f8 [4,1,28,28] /255 (ok)", "i.npy", lambda: ctx.b("img4_f8.npy"), "ok")
    add("image-format", "npy u1 [4,28,28,1] HWC (ok)", "i.npy", lambda: ctx.b("img4_hwc.npy"), "ok")
    add("image-format", "npy u1 [4,784] flat (ok)", "i.npy", lambda: ctx.b("img4_flat.npy"), "ok")
    add("image-format", "IDX of 4 images (ok)", "i.idx", lambda: ctx.b("img4.idx"), "ok")
    add("image-format", "PNG gray8 28x28 (ok)", "i.png", lambda: ctx.b("img0.png"), "ok",
        verify=v_pred(pred4[:1]))
    rows = [px[r * 28:(r + 1) * 28] for r in range(28)]
    add("image-format", "PNG RGB8 28x28 (ok)", "i.png",
        lambda: png(28, 28, [bytes(x for p in r for x in (p, p, p)) for r in rows], color=2), "ok",
        verify=v_pred(pred4[:1]))
    add("image-format", "PNG gray16 28x28 (ok)", "i.png",
        lambda: png(28, 28, [bytes(x for p in r for x in (p, p)) for r in rows], depth=16), "ok",
        verify=v_pred(pred4[:1]))
    add("image-format", "PNG gray+alpha 28x28 (ok)", "i.png",
        lambda: png(28, 28, [bytes(x for p in r for x in (p, 255)) for r in rows], color=4), "ok",
        verify=v_pred(pred4[:1]))
    add("image-format", "npy v2 header (ok)", "i.npy",
        lambda: npy("|u1", (4, 1, 28, 28), px, version=2), "ok")

    # --- pixel values: one pixel of image 0 set, the rest legitimate floats
    f8 = [x / 255.0 for x in px]
    note_v = ("out-of-range or non-finite pixels must be refused when the images are loaded "
              "(encrypt: input range check)")
    for tag, value in (("NaN", float("nan")), ("+inf", float("inf")), ("-inf", float("-inf")),
                       ("1e30", 1e30), ("-1e4", -1e4), ("1e308", 1e308), ("255.0 (bytes as floats)", 255.0),
                       ("-0.5", -0.5), ("1.5", 1.5)):
        vals = list(f8)
        vals[400] = value
        data = npy("<f8", (4, 1, 28, 28), struct.pack("<%dd" % len(vals), *vals))
        add("image-values", "npy f8 pixel=%s: encrypt" % tag, "i.npy", data, note=note_v)
        add("image-values", "npy f8 pixel=%s: eval" % tag, "i.npy", data, note=note_v,
            cmd="eval {M}/cryptonets.yaml --input %s --limit 4")
        tv = list(TINY_IMAGES)
        tv[1] = value
        add("image-values", "tiny npy pixel=%s: encrypt" % tag, "t.npy",
            npy("<f8", (4, 1, 2, 2), struct.pack("<16d", *tv)), note=note_v,
            cmd="encrypt {B}/tiny.json --keys {B}/tk --input %s -o out.ct")
    add("image-values", "npy f8 all pixels 255.0 (bytes stored as floats)", "i.npy",
        npy("<f8", (4, 1, 28, 28), struct.pack("<%dd" % len(px), *[float(x) for x in px])),
        note="floats are taken as is: 0..255 floats are far outside the declared [0, 1] range")
    add("image-values", "npy i8 pixel 2^62", "i.npy",
        npy("<i8", (4, 1, 28, 28), struct.pack("<%dq" % len(px), *([2**62] + list(px[1:])))), note=note_v)
    add("image-values", "npy i4 pixel -2^31", "i.npy",
        npy("<i4", (4, 1, 28, 28), struct.pack("<%di" % len(px), *([-2**31] + list(px[1:])))), note=note_v)
    add("image-values", "npy i4 pixels 0..255 (legit bytes in an int array)", "i.npy",
        npy("<i4", (4, 1, 28, 28), struct.pack("<%di" % len(px), *px)),
        note="ambiguous: integers are taken as is (not scaled like bytes): 0..255 is outside "
             "[0, 1]; expect a refusal")
    add("image-values", "IDX float (0x0D) with a NaN pixel", "i.idx",
        idx(0x0D, [4, 28, 28], struct.pack(">%df" % len(px), *([float("nan")] + f8[1:]))), note=note_v)
    add("image-values", "IDX int32 (0x0C) pixel 2^31-1", "i.idx",
        idx(0x0C, [4, 28, 28], struct.pack(">%di" % len(px), *([2**31 - 1] + list(px[1:])))), note=note_v)

    # --- NPY format damage
    kind = "bytes:npy"
    u8 = ctx.b("img4_u8.npy")
    add(kind, "zero length", "i.npy", b"")
    add(kind, "magic broken", "i.npy", lambda: b"\x93NUMPX" + u8[6:])
    for cut in (6, 9, 20, 128, len(u8) - 1):
        add(kind, "truncate@%d" % cut, "i.npy", lambda cut=cut: u8[:cut])
    add(kind, "append 1 byte", "i.npy", lambda: u8 + b"\x00")
    for d in ("<f2", ">f4", "|b1", "<u2", "|i1", "<c8", "|O", "<U1"):
        add(kind, "dtype %s" % d, "i.npy",
            lambda d=d: npy(d, (4, 1, 28, 28), bytes(784 * 4 * 2)))
    add(kind, "fortran_order True", "i.npy", lambda: npy("|u1", (4, 1, 28, 28), px, fortran=True))
    add(kind, "shape (4,1,28,27)", "i.npy", lambda: npy("|u1", (4, 1, 28, 27), px[:4 * 756]))
    add(kind, "shape (0,1,28,28)", "i.npy", lambda: npy("|u1", (0, 1, 28, 28), b""))
    add(kind, "shape (3,1,28,28) with 4 images of data", "i.npy", lambda: npy("|u1", (3, 1, 28, 28), px))
    add(kind, "shape (2^62, 4) with no data (product wraps)", "i.npy",
        lambda: npy("<f4", (2**62, 4), b""))
    add(kind, "shape (2^62+784, 4) (product wraps to 3136 = 4 images)", "i.npy",
        lambda: npy("|u1", (2**62 + 784, 4), px),
        note="the header claims 2^64+3136 elements; an overflowing shape must be refused")
    add(kind, "shape (-4, 784)", "i.npy", lambda: npy("|u1", (-4, 784), px))
    add(kind, "header length beyond the file", "i.npy", lambda: u8[:8] + b"\xff\xff" + u8[10:])
    add(kind, "version 9", "i.npy", lambda: u8[:6] + b"\x09" + u8[7:])
    add(kind, "header not UTF-8", "i.npy", lambda: npy("|u1", (4, 1, 28, 28), px,
                                                     header=b"{'descr': '|u1', \xff\xfe}"))
    add(kind, "header without shape", "i.npy", lambda: npy("|u1", None, px,
                                                          header="{'descr': '|u1', 'fortran_order': False}"))
    add(kind, "shape (abc,)", "i.npy", lambda: npy("|u1", None, px,
                                                  header="{'descr': '|u1', 'fortran_order': False, 'shape': (abc,), }"))
    add(kind, "two descr keys", "i.npy", lambda: npy("|u1", None, px,
                                                    header="{'descr': '<f8', 'descr': '|u1', 'fortran_order': False, 'shape': (4,1,28,28), }"),
        note="ambiguous: a contradictory header; expect a refusal")
    add(kind, "logits .npy [4,10] as images", "i.npy", lambda: ctx.b("logits.npy"))

    # --- IDX damage
    kind = "bytes:idx"
    ix = ctx.b("img4.idx")
    add(kind, "zero length", "i.idx", b"")
    for cut in (3, 8, 15, 16, len(ix) - 1):
        add(kind, "truncate@%d" % cut, "i.idx", lambda cut=cut: ix[:cut])
    add(kind, "append 1 byte", "i.idx", lambda: ix + b"\x00")
    add(kind, "magic byte 0 = 1", "i.idx", lambda: b"\x01" + ix[1:])
    for t in (0x0D, 0x0E, 0x42):
        add(kind, "type byte 0x%02x" % t, "i.idx", lambda t=t: ix[:2] + bytes([t]) + ix[3:])
    for nd in (0, 1, 2, 255):
        add(kind, "ndim %d" % nd, "i.idx", lambda nd=nd: ix[:3] + bytes([nd]) + ix[4:])
    add(kind, "count 0", "i.idx", lambda: idx(0x08, [0, 28, 28], px))
    add(kind, "count 2^32-1", "i.idx", lambda: idx(0x08, [2**32 - 1, 28, 28], px))
    add(kind, "rows 27", "i.idx", lambda: idx(0x08, [4, 27, 28], px[:4 * 27 * 28]))
    add(kind, "dims overflow (4 x 2^32-1)", "i.idx",
        lambda: idx(0x08, [2**32 - 1] * 4, px))
    add(kind, "count 2 (half the images, 4 in the file)", "i.idx", lambda: idx(0x08, [2, 28, 28], px))
    add(kind, "int8 type 0x09 (negative pixels)", "i.idx", lambda: idx(0x09, [4, 28, 28], px),
        note="bytes >= 128 read as negative values: out of range")
    add(kind, "the labels file as images", "i.idx", lambda: ctx.read(IDX_LABELS))
    add(kind, "all 256 images (plan batch is 4)", "i.idx", lambda: ctx.read(IDX_IMAGES))

    # --- PNG damage
    kind = "bytes:png"
    pg = ctx.b("img0.png")
    add(kind, "zero length", "i.png", b"")
    for cut in (8, 20, 33, 45, len(pg) - 12, len(pg) - 1):
        add(kind, "truncate@%d" % cut, "i.png", lambda cut=cut: pg[:cut],
            note="ambiguous: only the IEND chunk is cut, the pixels are intact; a truncated file "
                 "is still damaged: expect a refusal" if cut == len(pg) - 12 else "")
    add(kind, "IHDR CRC wrong", "i.png", lambda: png(28, 28, rows, bad_crc=True))
    add(kind, "zlib stream garbage", "i.png", lambda: png(28, 28, rows, idat=b"\x78\x9c" + bytes(100)))
    add(kind, "IDAT byte flipped (CRC mismatch)", "i.png",
        lambda: pg[:60] + bytes([pg[60] ^ 1]) + pg[61:])
    add(kind, "27x28", "i.png", lambda: png(27, 28, [r[:27] for r in rows]))
    add(kind, "1x1", "i.png", lambda: png(1, 1, [b"\x80"]))
    add(kind, "0x0", "i.png", lambda: png(0, 0, []))
    add(kind, "IHDR claims 100000x100000 (tiny data)", "i.png",
        lambda: png(28, 28, rows, ihdr=struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)))
    add(kind, "IHDR claims 2^31-1 x 2^31-1", "i.png",
        lambda: png(28, 28, rows, ihdr=struct.pack(">IIBBBBB", 2**31 - 1, 2**31 - 1, 8, 0, 0, 0, 0)))
    add(kind, "bit depth 3 (invalid)", "i.png",
        lambda: png(28, 28, rows, ihdr=struct.pack(">IIBBBBB", 28, 28, 3, 0, 0, 0, 0)))
    add(kind, "decompression bomb 8000x8000 zeros", "i.png",
        lambda: _png_bomb(8000), note="64 MB of pixels from 60 KB: refuse, do not allocate")
    add(kind, "PNG named .npy", "i.npy", lambda: pg,
        note="ambiguous: the content is a valid PNG (formats are sniffed by magic); the name "
             "says otherwise: expect a refusal")
    add(kind, "NPY named .png", "i.png", lambda: ctx.b("img4_u8.npy"),
        note="ambiguous: the content is a valid .npy (formats are sniffed by magic); the name "
             "says otherwise: expect a refusal")
    return out


def _png_bomb(w):
    raw = bytes((w + 1) * w)
    return png(w, w, None, idat=zlib.compress(raw, 9))


def cases_cli_values(ctx, rng):
    out = []
    kind = "cli-values"
    comp = "compile {B}/tiny.yaml --layout batch --batch 4 -o out.json "
    compr = "compile {M}/survey_relu.yaml --layout batch --batch 4 -o out.json "

    def C(name, tpl, expect="refuse", note="", outs=None, **kw):
        argv = ctx.cmd(tpl) if isinstance(tpl, str) else tpl
        if outs is None:
            outs = ["out.json"] if "out.json" in argv else ["out.ct"] if "out.ct" in argv else []
        out.append(Case(kind, name, argv, expect, note=note, outs=outs, **kw))

    for v in ("0", "-1", "abc", "1099511627776", "18446744073709551616", "4.5", ""):
        C("compile --batch %r" % v, ctx.cmd(comp.replace("--batch 4 ", "")) + ["--batch", v])
    C("compile --layout bogus", comp + "--layout bogus")
    C("compile --rescale bogus", comp + "--rescale bogus")
    for v in ("bogus", "chebyshev:0", "chebyshev:100000", "minimax:0", "minimax:1000",
              "least-squares:-1", "taylor:", "minimax:15,0,27"):
        C("compile survey_relu --activation %s" % v, compr + "--activation " + v,
          note="absurd approximation degrees must be refused, not computed" if "100000" in v or "1000" in v else "")
    for v in ("0/0", "nan/1", "0/-1", "1,2/3", "0.1307/0.3081/9", "", "/"):
        C("compile --normalize %r" % v, ctx.cmd(comp) + ["--normalize", v],
          note="std 0 divides by zero" if v == "0/0" else "")
    for v in ("1,0", "nan,1", "0,inf", "0", "a,b", "0,1e308", "-1e308,1e308", "0,0"):
        C("compile --input-range %r" % v, ctx.cmd(comp) + ["--input-range", v])
    for v in ("-1", "0", "nan", "inf", "1e308"):
        C("compile survey_relu --relu-range %s" % v,
          ctx.cmd(compr + "--activation chebyshev:8") + ["--relu-range", v])
    C("compile --calibrate-count 0", compr + "--activation auto --calibrate {IDX} --calibrate-count 0")
    for v in ("-5", "nan", "inf"):
        C("compile --range-margin %s" % v,
          ctx.cmd(compr + "--activation chebyshev:8 --calibrate {IDX} --calibrate-count 16") + ["--range-margin", v])
    for v in ("0", "1", "61", "200", "-1"):
        C("compile --scale-bits %s" % v, comp + "--scale-bits " + v)
    C("compile --memory-budget 0 (refusal is the correct answer)", comp + "--memory-budget 0")
    C("compile --memory-budget abc", comp + "--memory-budget abc")
    C("compile --passes ''", ctx.cmd(comp) + ["--passes", ""])
    C("compile --passes bogus", comp + "--passes bogus")
    C("compile --passes dce (no rescaling pass)", comp + "--passes dce",
      note="a pipeline without level management must not produce a plan")
    C("compile --dump-after bogus", comp + "--dump-after bogus")
    # encrypt
    encc = "encrypt {B}/planc.json --keys {B}/kc --input {IDX} -o out.ct "
    C("encrypt --limit 0", encc + "--limit 0", note="zero images is not a batch")
    C("encrypt --limit 5 (batch is 4)", encc + "--limit 5")
    C("encrypt all 256 images (batch is 4)", encc)
    C("encrypt --limit 2^64", encc + "--limit 18446744073709551616")
    C("encrypt --limit -1", encc + "--limit -1")
    C("encrypt --skip 256 (beyond the file)", encc + "--skip 256 --limit 4")
    C("encrypt --skip 1000000", encc + "--skip 1000000 --limit 4")
    C("encrypt --skip 2^63", encc + "--skip 9223372036854775808 --limit 4")
    C("encrypt --skip 2^64-1", encc + "--skip 18446744073709551615 --limit 4")
    C("encrypt --skip 252 --limit 4 (the last 4, legit)", encc + "--skip 252 --limit 4", "ok-any")
    C("encrypt --skip 255 --limit 4 (1 image left)", encc + "--skip 255 --limit 4",
      note="ambiguous: fewer images than asked for; expect a refusal")
    # run
    runt = "run {B}/tiny.json {B}/tx.ct --eval-keys {B}/tk/eval.keys -o out.ct --quiet "
    fol = [ctx.cmd("decrypt out.ct --secret-key {B}/tk/secret.key -o l.npy")]
    for v in ("abc", "0", "-1", "1e999", "18446744073709551616", "6iB", "", "1.5.5G", "NaN"):
        C("run --memory-limit %r" % v, ctx.cmd(runt) + ["--memory-limit", v])
    for v in ("plan", "1", "1K", "6GiB"):
        C("run --memory-limit %s (legit)" % v, ctx.cmd(runt) + ["--memory-limit", v], "ok",
          follow=fol, verify=v_pred(TINY_PRED))
    # eval / infer
    ev = "eval {M}/cryptonets.yaml --input {IDX} "
    C("eval --limit 0", ev + "--limit 0")
    C("eval --limit 1000000 (file has 256)", ev + "--limit 1000000",
      note="ambiguous: more than the file has; expect a refusal")
    C("eval --activation bogus", ev + "--limit 4 --activation bogus")
    inf = "infer {B}/tiny.yaml --input {B}/t.npy --quiet "
    C("infer --batch 0", inf + "--batch 0")
    C("infer --batch 5 (file has 4)", inf + "--batch 5",
      note="ambiguous: more than the file has; expect a refusal")
    for v in ("2", "-1", "nan"):
        C("infer --min-agreement %s" % v, ctx.cmd(inf) + ["--min-agreement", v])
    C("infer --reference garbage", inf + "--reference {B}/garbage.bin")
    C("infer --reference logits of the wrong shape", inf + "--reference {B}/logits.npy")
    C("infer --scale-bits 0", inf + "--scale-bits 0")
    C("infer (legit)", inf, "ok", verify=v_pred(TINY_PRED))
    # approx
    for a in ("--method chebyshev --degree 0", "--method chebyshev --degree 1000000000",
              "--method least-squares --degree 100000", "--degrees ''", "--degrees 0",
              "--degrees 1000000", "--alpha 0", "--alpha 1000", "--alpha nan", "--range 0",
              "--range -1", "--range nan", "--range inf", "--range 1e308", "--activation bogus",
              "--method bogus", "--method taylor --degree 0"):
        C("approx " + a, ["approx"] + shlex.split(a),
          note="must refuse rather than print NaN errors" if "1e308" in a else "")
    C("approx (legit)", "approx --method chebyshev --degree 8", "ok-any")
    # calibrate
    for a in ("--log-n 0", "--log-n 12", "--log-n 17", "--log-n 30", "--log-n abc", "--reps 0 --log-n 13"):
        C("calibrate " + a, ["calibrate"] + a.split() + ["-o", "out.json"],
          note="ambiguous: zero repetitions measure nothing; expect a refusal" if "reps 0" in a else "")
    # survey
    sv = "survey {M}/survey_relu.yaml "
    C("survey --data missing dir", sv + "--data nowhere")
    C("survey --data empty dir", sv + "--data empty", files={"empty/.keep": b""})
    C("survey --data with truncated files", sv + "--data d --limit 8 --calibrate-count 8",
      files={"d/train-images-idx3-ubyte": lambda: ctx.read(IDX_IMAGES)[:1000],
             "d/t10k-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-labels-idx1-ubyte": Link(IDX_LABELS)})
    C("survey --data 4 labels for --limit 8 images", sv + "--data d --limit 8 --calibrate-count 8",
      files={"d/train-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-labels-idx1-ubyte": lambda: idx(0x08, [4], bytes(range(4)))})
    C("survey --limit 0", sv + "--data d --limit 0 --calibrate-count 8",
      files={"d/train-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-labels-idx1-ubyte": Link(IDX_LABELS)})
    C("survey --calibrate-count 0", sv + "--data d --limit 8 --calibrate-count 0",
      files={"d/train-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-labels-idx1-ubyte": Link(IDX_LABELS)})
    C("survey --method bogus", sv + "--data d --limit 8 --calibrate-count 8 --method bogus",
      files={"d/train-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-labels-idx1-ubyte": Link(IDX_LABELS)})
    C("survey --range-margin nan", sv + "--data d --limit 8 --calibrate-count 8 --range-margin nan",
      files={"d/train-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-images-idx3-ubyte": Link(IDX_IMAGES),
             "d/t10k-labels-idx1-ubyte": Link(IDX_LABELS)})
    C("unknown subcommand", "frobnicate")
    C("no arguments at all", [])
    return out


def cases_output_paths(ctx, rng):
    out = []
    kind = "output-paths"
    writers = [
        ("compile", "compile {B}/tiny.yaml --layout batch --batch 4 -o %s"),
        ("encrypt", "encrypt {B}/tiny.json --keys {B}/tk --input {B}/t.npy -o %s"),
        ("run", "run {B}/tiny.json {B}/tx.ct --eval-keys {B}/tk/eval.keys --quiet -o %s"),
        ("decrypt", "decrypt {B}/ty.ct --secret-key {B}/tk/secret.key -o %s"),
        ("eval", "eval {B}/tiny.yaml --input {B}/t.npy -o %s"),
        ("calibrate", "calibrate --log-n 13 --reps 1 -o %s"),
        ("approx --plot", "approx --method chebyshev --degree 8 --plot %s"),
    ]
    for name, tpl in writers:
        out.append(Case(kind, "%s -o an existing directory" % name, ctx.cmd(tpl % "d"), "refuse",
                        files={"d/keep": b"keep"}, outs=["d/keep"]))
        out.append(Case(kind, "%s -o in a missing directory" % name, ctx.cmd(tpl % "nowhere/sub/f"),
                        "refuse", note="ambiguous: could create the parents; expect a refusal "
                                       "(output path validation)"))
        out.append(Case(kind, "%s -o ''" % name, ctx.cmd(tpl % "X")[:-1] + [""], "refuse"))
        # Never point -o at a device (/dev/full...): run as root, hecc's atomic write renames
        # its temporary file over the device node and replaces it with a regular file.
        out.append(Case(kind, "%s -o 'f/' (trailing slash)" % name, ctx.cmd(tpl % "f/"), "refuse"))
    # output = an input of the same command: must not destroy the input on failure, and should
    # be refused outright (ambiguous: overwriting is what was asked; expect a refusal)
    note = "ambiguous: -o names an input of the same command; expect a refusal, input intact"
    out.append(Case(kind, "run -o its own ciphertexts", ctx.cmd(
        "run {B}/tiny.json x.ct --eval-keys {B}/tk/eval.keys --quiet -o x.ct"), "refuse",
        files={"x.ct": Copy(ctx.B("tx.ct"))}, outs=["x.ct"], note=note))
    out.append(Case(kind, "run -o its eval keys", ctx.cmd(
        "run {B}/tiny.json {B}/tx.ct --eval-keys ek --quiet -o ek"), "refuse",
        files={"ek": Copy(ctx.B("tk/eval.keys"))}, outs=["ek"], note=note))
    out.append(Case(kind, "decrypt -o its own outputs", ctx.cmd(
        "decrypt y.ct --secret-key {B}/tk/secret.key -o y.ct"), "refuse",
        files={"y.ct": Copy(ctx.B("ty.ct"))}, outs=["y.ct"], note=note))
    out.append(Case(kind, "decrypt -o the secret key", ctx.cmd(
        "decrypt {B}/ty.ct --secret-key secret.key -o secret.key"), "refuse",
        files={"secret.key": Copy(ctx.B("tk/secret.key"))}, outs=["secret.key"], note=note))
    out.append(Case(kind, "encrypt -o its input images", ctx.cmd(
        "encrypt {B}/tiny.json --keys {B}/tk --input t.npy -o t.npy"), "refuse",
        files={"t.npy": Copy(ctx.B("t.npy"))}, outs=["t.npy"], note=note))
    out.append(Case(kind, "encrypt -o the plan", ctx.cmd(
        "encrypt plan.json --keys {B}/tk --input {B}/t.npy -o plan.json"), "refuse",
        files={"plan.json": Copy(ctx.B("tiny.json"))}, outs=["plan.json"], note=note))
    out.append(Case(kind, "compile -o the model spec", ctx.cmd(
        "compile m.yaml --layout batch --batch 4 -o m.yaml"), "refuse",
        files={"m.yaml": TINY_YAML}, outs=["m.yaml"], note=note))
    out.append(Case(kind, "keygen -o an existing file", ctx.cmd("keygen {B}/tiny.json -o f"),
                    "refuse", files={"f": b"keep"}, outs=["f"]))
    out.append(Case(kind, "keygen -o a dir that already holds keys", ctx.cmd("keygen {B}/tiny.json -o k"),
                    "refuse", files={"k/secret.key": Copy(ctx.B("tk/secret.key")),
                                     "k/eval.keys": Copy(ctx.B("tk/eval.keys"))},
                    outs=["k/secret.key", "k/eval.keys"],
                    note="ambiguous: silently replacing a secret key loses every ciphertext made "
                         "with it; expect a refusal"))
    out.append(Case(kind, "keygen -o a missing nested dir (legit)", ctx.cmd("keygen {B}/tiny.json -o a/b/c"),
                    "ok-any"))
    out.append(Case(kind, "keygen -o ''", ctx.cmd("keygen {B}/tiny.json -o X")[:-1] + [""], "refuse"))
    # a failing command must leave an existing output alone
    out.append(Case(kind, "decrypt with a corrupt key keeps the old logits",
                    ctx.cmd("decrypt {B}/ty.ct --secret-key secret.key -o l.npy"), "refuse",
                    files={"secret.key": lambda: ctx.b("tk/secret.key")[:-1]}, outs=["l.npy"]))
    out.append(Case(kind, "run with corrupt inputs keeps the old outputs",
                    ctx.cmd("run {B}/tiny.json x.ct --eval-keys {B}/tk/eval.keys --quiet -o y.ct"),
                    "refuse", files={"x.ct": lambda: ctx.b("tx.ct")[:-1]}, outs=["y.ct"]))
    return out


CATALOGUE = [
    ("bytes:containers", cases_container_bytes),
    ("container-structure", cases_container_structure),
    ("outputs-meta", cases_outputs_meta),
    ("inputs-meta", cases_inputs_meta),
    ("key-mixup", cases_key_mixups),
    ("permissions", cases_permissions),
    ("wrong-kind", cases_wrong_kind),
    ("plan-fields", cases_plan_fields),
    ("bytes:plan", cases_plan_bytes),
    ("bytes:yaml", cases_yaml_bytes),
    ("model-shapes", cases_model_shapes),
    ("model-values", cases_model_values),
    ("bytes:safetensors", cases_safetensors_bytes),
    ("onnx", cases_onnx),
    ("images", image_cases),
    ("cli-values", cases_cli_values),
    ("output-paths", cases_output_paths),
]


def all_cases(ctx):
    rng = random.Random(ctx.seed)
    cases = []
    for _, fn in CATALOGUE:
        cases += fn(ctx, rng)
    return cases


def selected(case, only):
    if not only:
        return True
    k = case.kind
    return any(k == o or k.split(":")[0] == o or k.startswith(o) for o in only)


# ---------------------------------------------------------------------------- reporting


def display_cmd(ctx, argv):
    s = " ".join(shlex.quote(a) for a in ["hecc"] + argv)
    return (s.replace(ctx.base + "/", "$BASE/").replace(ctx.base, "$BASE")
            .replace(MODELS + "/", "models/"))


def table(rows, header, markdown):
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def report(ctx, infos, markdown, elapsed):
    kinds = []
    for i in infos:
        if i["case"].kind not in kinds:
            kinds.append(i["case"].kind)
    present = [o for o in OUTCOMES + ("case-error",)
               if o in PASS or o in ("silent-wrong", "panic", "abort", "hang")
               or any(i["outcome"] == o for i in infos)]
    rows = []
    for k in kinds:
        ks = [i for i in infos if i["case"].kind == k]
        rows.append([k, len(ks)] + [sum(1 for i in ks if i["outcome"] == o) or "" for o in present]
                    + ["%.0f" % sum(i["secs"] for i in ks)])
    rows.append(["total", len(infos)] + [sum(1 for i in infos if i["outcome"] == o) for o in present]
                + ["%.0f" % sum(i["secs"] for i in infos)])
    print(("### " if markdown else "") + "Outcomes per mutation kind")
    print()
    print(table(rows, ["kind", "cases"] + list(present) + ["secs"], markdown))
    print()
    print(("### " if markdown else "") + "Totals")
    print()
    tot = [[o, sum(1 for i in infos if i["outcome"] == o)] for o in present]
    tot.append(["all cases", len(infos)])
    print(table(tot, ["outcome", "count"], markdown))
    print()
    bad = [i for i in infos if i["outcome"] not in PASS]
    print(("### " if markdown else "") + "Cases that are neither refused nor ok-expected (%d)" % len(bad))
    print()
    order = {o: n for n, o in enumerate(SEVERITY + ("case-error",))}
    for i in sorted(bad, key=lambda i: (order.get(i["outcome"], 99), i["case"].kind)):
        c = i["case"]
        if markdown:
            print("- **%s** [%s] %s  \n  `%s`  \n  %s%s" % (
                i["outcome"], c.kind, c.name, display_cmd(ctx, c.argv), i["detail"].replace("|", "\\|"),
                ("  \n  note: " + c.note) if c.note else ""))
        else:
            print("%-15s [%s] %s\n    $ %s\n    %s%s" % (
                i["outcome"], c.kind, c.name, display_cmd(ctx, c.argv), i["detail"],
                ("\n    note: " + c.note) if c.note else ""))
    print()
    print("%d cases in %.0f s (hecc %s)" % (len(infos), elapsed, ctx.hecc))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hecc", default=os.path.join(REPO, "target", "release", "hecc"))
    ap.add_argument("--work", help="work directory (default: a fresh temporary directory)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per command (default 60)")
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--only", default="", help="comma-separated kinds (or prefixes: bytes, model)")
    ap.add_argument("--match", default="", help="only cases whose name contains this text")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and case dirs")
    ap.add_argument("--list", action="store_true", help="list the cases and exit (builds the baseline)")
    ap.add_argument("--mem-limit", type=float, default=None,
                    help="data-segment limit of each hecc process in GiB (0: none; default: 60%% "
                         "of RAM, at least 6, at most 16)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the baseline already in --work (from a run with --keep)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.mem_limit is None:
        try:
            with open("/proc/meminfo") as f:
                kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
            args.mem_limit = max(6.0, min(16.0, 0.6 * kb / (1 << 20)))
        except (OSError, AttributeError):
            args.mem_limit = 8.0
    ctx = Ctx(args)
    if not os.access(ctx.hecc, os.X_OK):
        raise SystemExit("hecc binary not found or not executable: %s" % ctx.hecc)
    made = args.work is None
    ctx.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="hecc-mutate-"))
    os.makedirs(ctx.work, exist_ok=True)
    ctx.base = os.path.join(ctx.work, "base")
    ctx.cases_dir = os.path.join(ctx.work, "cases")
    reuse = args.reuse and os.path.exists(os.path.join(ctx.base, "baseline.json"))
    if args.reuse and not reuse:
        raise SystemExit("--reuse: no baseline in %s" % ctx.base)
    if not reuse and (os.path.exists(ctx.base) or os.path.exists(ctx.cases_dir)):
        raise SystemExit("%s already holds base/ or cases/; pass an empty --work (or --reuse)"
                         % ctx.work)
    shutil.rmtree(ctx.cases_dir, ignore_errors=True)
    t0 = time.monotonic()
    try:
        if reuse:
            with open(os.path.join(ctx.base, "baseline.json")) as f:
                saved = json.load(f)
            ctx.pred, ctx.ref = saved["pred"], saved["ref"]
            ctx.px = ctx.b("img4_u8.npy")[-4 * 784:]
        else:
            print("building the baseline in %s ..." % ctx.base, file=sys.stderr)
            build_baseline(ctx)
            with open(os.path.join(ctx.base, "baseline.json"), "w") as f:
                json.dump({"pred": ctx.pred, "ref": ctx.ref}, f)
        print("baseline predictions: batch %s, channel %s, tiny %s (%.0f s)" % (
            ctx.pred["batch"], ctx.pred["channel"], ctx.pred["tiny"], time.monotonic() - t0),
            file=sys.stderr)
        os.makedirs(ctx.cases_dir)
        cases = [c for c in all_cases(ctx) if selected(c, [o.strip() for o in args.only.split(",") if o.strip()])
                 and args.match in c.name]
        for c in cases:  # outputs stay inside the case's own directory
            for flag, val in zip(c.argv, c.argv[1:]):
                if flag in ("-o", "--output", "--plot") and (
                        os.path.isabs(val) or val.startswith("..")):
                    raise SystemExit("case %r writes outside its directory: %s" % (c.name, val))
        if args.list:
            for c in cases:
                print("[%s] %s (%s)\n    $ %s%s" % (c.kind, c.name, c.expect, display_cmd(ctx, c.argv),
                                                   ("\n    note: " + c.note) if c.note else ""))
            print("%d cases" % len(cases))
            return 0
        digests = base_digests(ctx)
        infos = []
        for n, c in enumerate(cases):
            info = execute(ctx, c, n)
            infos.append(info)
            if args.verbose:
                print("[%d/%d] %-15s %5.1fs [%s] %s%s" % (
                    n + 1, len(cases), info["outcome"], info["secs"], c.kind, c.name,
                    (" -- " + info["detail"]) if info["outcome"] not in PASS else ""),
                    file=sys.stderr)
            elif (n + 1) % 50 == 0:
                print("%d/%d cases, %.0f s" % (n + 1, len(cases), time.monotonic() - t0),
                      file=sys.stderr)
        after = base_digests(ctx)
        changed = sorted(set(digests.items()) ^ set(after.items()))
        bad = report(ctx, infos, args.markdown, time.monotonic() - t0)
        if changed:
            print("BASELINE FILES CHANGED DURING THE RUN: %s" % ", ".join(
                sorted({os.path.relpath(p, ctx.work) for p, _ in changed})))
        return 1 if bad or changed else 0
    finally:
        if args.keep or args.reuse:
            print("work directory kept: %s" % ctx.work, file=sys.stderr)
        elif made:
            shutil.rmtree(ctx.work, ignore_errors=True)
        else:
            for sub in (ctx.base, ctx.cases_dir):
                shutil.rmtree(sub, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
