"""Scale-out: ``hpcm-deploy serve`` (Triton through PyTriton) and ``hpcm-deploy bulk`` (Ray Data), run for real
as the commands a user starts, against the in-process codec."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import hpcm_deploy as hd
from hpcm_deploy.cli import main

from .helpers import images

CLI = [sys.executable, "-c", "from hpcm_deploy.cli import main; main()"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _pictures(sizes: list[tuple[int, int]], seed: int) -> list[bytes]:
    out = []
    for i, (h, w) in enumerate(sizes):
        x = images(1, h, w, seed=seed + i)[0]
        out.append(_png((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def codec(tiny_phase2_export):
    with hd.Codec(tiny_phase2_export) as c:
        yield c


# ---------------------------------------------------------------------------------------------------- Triton
class Server:
    def __init__(self, proc: subprocess.Popen, url: str, workspaces_before: set, shm_before: set) -> None:
        self.proc, self.url = proc, url
        self.workspaces_before, self.shm_before = workspaces_before, shm_before
        self.processes: set[int] = set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def _workspaces() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("hpcm-triton-")}


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.fixture(scope="module")
def server(tiny_phase2_export):
    pytest.importorskip("pytriton", reason="PyTriton is an optional extra: pip install -e '.[triton]'")
    http, grpc = _free_port(), _free_port()
    before, shm_before = _workspaces(), _shm()
    proc = subprocess.Popen([*CLI, "serve", "--export", str(tiny_phase2_export), "--http-port", str(http),
                             "--grpc-port", str(grpc), "--max-batch", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    srv = Server(proc, f"127.0.0.1:{http}", before, shm_before)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://{srv.url}/v2/models/decompress/ready", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            code, err = srv.stop()
            pytest.fail(f"the server did not start (exit {code}):\n{err[-3000:]}")
        time.sleep(0.5)
    srv.processes = _descendants(proc.pid)
    yield srv
    srv.stop()


def _client(url: str, model: str):
    from pytriton.client import ModelClient

    return ModelClient(url, model, inference_timeout_s=180)


def test_concurrent_clients_get_the_in_process_streams_bit_exactly(server, codec):
    pictures = _pictures([(64, 64), (120, 200), (256, 256), (255, 129), (200, 300), (97, 64), (256, 240),
                          (180, 180)], seed=10)
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def client(indexes: list[int]) -> None:
        try:
            with _client(server.url, "compress") as c:
                for i in indexes:
                    out = c.infer_sample(image=np.array([pictures[i]], dtype=object))
                    results[i] = out["stream"][0]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=([i, i + 4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    expected = codec.compress([Image.open(io.BytesIO(p)) for p in pictures])
    assert [results[i] for i in range(len(pictures))] == expected


def test_decompress_round_trip(server, codec):
    picture = _pictures([(150, 100)], seed=3)[0]
    with _client(server.url, "compress") as c:
        stream = c.infer_sample(image=np.array([picture], dtype=object))["stream"][0]
    with _client(server.url, "decompress") as c:
        png = c.infer_sample(stream=np.array([stream], dtype=object))["image"][0]
    decoded = Image.open(io.BytesIO(png))
    assert decoded.size == (100, 150) and decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), codec.decompress(stream, kind="numpy"))


def test_bad_inputs_are_triton_errors_with_the_codec_message_and_serving_goes_on(server, codec):
    from pytriton.client.exceptions import PyTritonClientInferenceServerError

    picture = _pictures([(64, 96)], seed=5)[0]
    stream = codec.compress(Image.open(io.BytesIO(picture)))
    with _client(server.url, "compress") as c:
        with pytest.raises(PyTritonClientInferenceServerError, match="not a readable image"):
            c.infer_sample(image=np.array([b"this is not an image"], dtype=object))
        assert c.infer_sample(image=np.array([picture], dtype=object))["stream"][0] == stream
    damaged = stream[:40] + bytes([stream[40] ^ 0xFF]) + stream[41:]
    with _client(server.url, "decompress") as c:
        with pytest.raises(PyTritonClientInferenceServerError, match="checksum mismatch"):
            c.infer_sample(stream=np.array([damaged], dtype=object))
        with pytest.raises(PyTritonClientInferenceServerError, match="bad magic"):
            c.infer_sample(stream=np.array([b"GIF89a" + stream[6:]], dtype=object))
        assert c.infer_sample(stream=np.array([stream], dtype=object))["image"][0].startswith(b"\x89PNG")
    assert server.proc.poll() is None


def test_a_busy_port_is_a_one_line_error(tiny_phase2_export):
    pytest.importorskip("pytriton", reason="PyTriton is an optional extra: pip install -e '.[triton]'")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--export", str(tiny_phase2_export), "--http-port", str(port),
                                           "--grpc-port", str(_free_port())])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: cannot listen on") and result.output.strip().count("\n") == 0


def test_sigterm_stops_cleanly_and_leaves_nothing(server):
    """Runs after the other server tests (file order): it stops the module's server."""
    assert server.processes, "the server should have started tritonserver and its Python backend stubs"
    code, err = server.stop(signal.SIGTERM)
    assert code == 0, err[-2000:]
    assert "stopped" in err
    left = [p for p in server.processes if _alive(p)]
    assert not left, f"processes left behind: {left}"
    assert _workspaces() <= server.workspaces_before, "the Triton workspace was not removed"
    new_shm = _shm() - server.shm_before
    assert not [s for s in new_shm if s.startswith(f"pytrtion{server.proc.pid}")], new_shm


# ---------------------------------------------------------------------------------------------------- Ray Data
def _bulk(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([*CLI, "bulk", *args, "--object-store-mb", "200", "--json"], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_bulk_compress_with_two_actors_matches_in_process_and_reports_a_broken_file(tmp_path, tiny_phase2_export,
                                                                                    codec):
    pytest.importorskip("ray.data", reason="Ray Data is an optional extra: pip install -e '.[ray]'")
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "nested").mkdir(parents=True)
    sizes = [(64 + 10 * i, 64 + 10 * i) if i % 2 else (200 - 4 * i, 64 + 10 * i) for i in range(24)]
    sizes[-1] = (200, 300)
    pictures = _pictures(sizes, seed=100)
    names = [(Path("nested") if i % 5 == 0 else Path(".")) / f"img{i:02d}.png" for i in range(24)]
    for name, data in zip(names, pictures):
        (src / name).write_bytes(data)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")

    result = _bulk("compress", str(src), str(out), "--export", str(tiny_phase2_export), "--workers", "2",
                   "--batch-size", "4")
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["done"] == 24
    assert [Path(f["input"]).name for f in report["failed"]] == ["broken.png"]
    assert "not a readable image" in report["failed"][0]["error"]
    assert "broken.png: not a readable image" in result.stderr  # reported as it happened
    expected = codec.compress([Image.open(io.BytesIO(p)) for p in pictures])
    for name, stream in zip(names, expected):
        assert (out / name).with_suffix(".hpcm").read_bytes() == stream, name
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written == sorted(n.with_suffix(".hpcm") for n in names)  # no temporary files, nothing for broken.png


def test_bulk_decompress_reports_a_corrupted_stream(tmp_path, tiny_phase2_export, codec):
    pytest.importorskip("ray.data", reason="Ray Data is an optional extra: pip install -e '.[ray]'")
    src, out = tmp_path / "streams", tmp_path / "decoded"
    src.mkdir()
    pictures = _pictures([(64, 64), (100, 130), (256, 200)], seed=7)
    streams = codec.compress([Image.open(io.BytesIO(p)) for p in pictures])
    for i, s in enumerate(streams):
        (src / f"s{i}.hpcm").write_bytes(s)
    (src / "cut.hpcm").write_bytes(streams[0][:-10])
    result = _bulk("decompress", str(src), str(out), "--export", str(tiny_phase2_export), "--workers", "1")
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["done"] == 3 and [Path(f["input"]).name for f in report["failed"]] == ["cut.hpcm"]
    assert "truncated stream" in report["failed"][0]["error"]
    for i, s in enumerate(streams):
        assert np.array_equal(np.asarray(Image.open(out / f"s{i}.png")), codec.decompress(s, kind="numpy"))
    assert sorted(p.name for p in out.iterdir()) == ["s0.png", "s1.png", "s2.png"]


def test_core_import_does_not_load_the_optional_engines():
    code = ("import sys, hpcm_deploy, hpcm_deploy.cli, hpcm_deploy.serving; "
            "print([m for m in sys.modules if m.split('.')[0] in ('pytriton', 'ray', 'tritonclient')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
