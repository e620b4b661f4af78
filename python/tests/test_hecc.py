"""The Python package end to end: compile, report, keys, encrypt numpy, run in process and on a
`hecc serve` server, decrypt to numpy, compared with the plaintext model; errors as HeccError;
a torch.nn.Module through the export helper when torch is installed."""

import os
import pathlib
import re
import subprocess

import numpy as np
import pytest

import hecc

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "cryptonets.yaml"
IMAGES = ROOT / "models" / "data" / "mnist-t10k-first256-images-idx3-ubyte"


def mnist(n, skip=0):
    """n MNIST test images as (n, 1, 28, 28) floats in [0, 1] (the spec's input range)."""
    raw = IMAGES.read_bytes()
    assert int.from_bytes(raw[:4], "big") == 0x803
    px = np.frombuffer(raw, dtype=np.uint8, offset=16)
    return px[skip * 784 : (skip + n) * 784].reshape(n, 1, 28, 28).astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def plan():
    return hecc.compile(MODEL, batch=8, layout="batch", insecure=True)


def check_logits(got, images):
    want = hecc.evaluate(MODEL, images)
    assert got.shape == want.shape == (len(images), 10)
    mag = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err < 1e-3 * mag, f"max error {err} for logits up to {mag}"
    assert (got.argmax(1) == want.argmax(1)).all()


def test_compile_and_report(plan, tmp_path):
    assert plan.batch == 8
    assert plan.input_shape == [1, 28, 28]
    assert plan.model == "cryptonets"
    report = plan.report
    assert report["keys"]["relin_key"] > 0
    assert "params" in plan.report_text().lower() or "N=2^" in plan.report_text()
    path = tmp_path / "plan.json"
    plan.save(path)
    again = hecc.Plan.load(path)
    assert again.digest == plan.digest
    assert re.fullmatch(r"[0-9a-f]{64}", plan.digest)


def test_round_trip_in_process(plan, tmp_path):
    client = hecc.Client(plan, insecure=True)
    images = mnist(8)
    request = client.encrypt(images)
    assert isinstance(request, bytes)
    server = hecc.Server(plan, client.eval_keys(), insecure=True)
    reply = server.run(request)
    check_logits(client.decrypt(reply, request), images)
    # Keys saved and read back decrypt the same reply; float32 input is accepted.
    client.save_keys(tmp_path / "keys")
    assert oct((tmp_path / "keys" / "secret.key").stat().st_mode & 0o777) == "0o600"
    again = hecc.Client.open(plan, tmp_path / "keys", insecure=True)
    check_logits(again.decrypt(reply, request), images)
    check_logits(client.decrypt(server.run(client.encrypt(images.astype(np.float32)))), images)


def test_errors_are_hecc_errors(plan):
    with pytest.raises(hecc.HeccError, match="no-such-model.yaml"):
        hecc.compile("no-such-model.yaml")
    with pytest.raises(hecc.HeccError, match="ONNX"):
        hecc.compile(b"definitely not onnx")
    client = hecc.Client(plan, insecure=True)
    with pytest.raises(hecc.HeccError, match="not a hecc file"):
        client.decrypt(b"junk" * 100)
    with pytest.raises(hecc.HeccError, match="images"):
        client.encrypt(np.zeros((8, 1, 27, 28)))
    bad = mnist(8)
    bad[3, 0, 5, 5] = np.nan
    with pytest.raises(hecc.HeccError):
        client.encrypt(bad)
    with pytest.raises(hecc.HeccError):
        hecc.Server(plan, b"not keys", insecure=True)
    # 128-bit is the default: a plan below it needs insecure=True.
    with pytest.raises(hecc.HeccError, match="128"):
        hecc.Client(plan)
    other = hecc.Client(plan, insecure=True)
    server = hecc.Server(plan, other.eval_keys(), insecure=True)
    with pytest.raises(hecc.HeccError, match="other keys"):
        server.run(client.encrypt(mnist(8)))


def hecc_binary():
    path = pathlib.Path(os.environ.get("HECC_BIN", ROOT / "target" / "release" / "hecc"))
    return path if path.exists() else None


@pytest.fixture()
def server_url(plan, tmp_path):
    binary = hecc_binary()
    if binary is None:
        pytest.skip("no hecc binary (build it with cargo build --release, or set HECC_BIN)")
    plan_path = tmp_path / "cn.plan.json"
    plan.save(plan_path)
    proc = subprocess.Popen(
        [str(binary), "serve", f"cn={plan_path}", "--listen", "127.0.0.1:0", "--insecure",
         "--state", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, line
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_against_a_server(plan, server_url, tmp_path):
    remote = hecc.Remote(server_url)
    assert [p["name"] for p in remote.plans()] == ["cn"]
    client = hecc.Client(plan, insecure=True)
    session = remote.open_session("cn", client.eval_keys())
    images = mnist(8, skip=8)
    request = client.encrypt(images)
    job = session.submit(request)
    assert session.job(job)["state"] in ("queued", "running", "done")
    check_logits(client.decrypt(session.result(job, timeout=300), request), images)
    check_logits(client.decrypt(session.run(request, timeout=300), request), images)
    session.save(tmp_path / "session.json")
    assert hecc.RemoteSession.load(tmp_path / "session.json").id == session.id
    with pytest.raises(hecc.HeccError, match="seconds"):
        session.result(job, timeout=float("nan"))
    with pytest.raises(hecc.HeccError, match="seconds"):
        session.job(job, wait=-1.0)
    session.close()
    with pytest.raises(hecc.HeccError, match="403"):  # refused before the upload starts
        session.submit(request)


def test_torch_module():
    torch = pytest.importorskip("torch")

    class Square(torch.nn.Module):
        def forward(self, x):
            return x * x

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, stride=2), Square(), torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 4)
    )
    example = torch.rand(1, 1, 8, 8)
    onnx = hecc.export_onnx(net, example)
    assert onnx[:1] == b"\x08"  # an ONNX ModelProto starts with its ir_version field
    assert net.training  # the module's mode is restored
    plan = hecc.compile_module(net, example, batch=4, layout="batch", insecure=True)
    client = hecc.Client(plan, insecure=True)
    x = np.random.default_rng(1).random((4, 1, 8, 8))
    request = client.encrypt(x)
    got = client.decrypt(hecc.Server(plan, client.eval_keys(), insecure=True).run(request), request)
    with torch.no_grad():
        want = net(torch.tensor(x, dtype=torch.float32)).double().numpy()
    assert got.shape == (4, 4)
    assert np.abs(got - want).max() < 1e-3 * max(1.0, np.abs(want).max())
