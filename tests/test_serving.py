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
    from hpcm_deploy.serving.triton import wait_ready

    try:
        wait_ready(srv.url, proc, timeout=180, model="decompress")
    except hd.BackendError:
        code, err = srv.stop()
        pytest.fail(f"the server did not start (exit {code}):\n{err[-3000:]}")
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
        with pytest.raises(PyTritonClientInferenceServerError, match="not a readable image") as refused:
            c.infer_sample(image=np.array([b"this is not an image"], dtype=object))
        # the codec's one line, not this server's traceback (PyTriton's stub adds a few lines of its own)
        message = str(refused.value)
        assert "hpcm_deploy.InputError: not a readable image: 20 bytes" in message
        assert "hpcm_deploy/" not in message and len(message.strip().splitlines()) < 12, message
        assert c.infer_sample(image=np.array([picture], dtype=object))["stream"][0] == stream
    damaged = stream[:40] + bytes([stream[40] ^ 0xFF]) + stream[41:]
    with _client(server.url, "decompress") as c:
        with pytest.raises(PyTritonClientInferenceServerError, match="checksum mismatch"):
            c.infer_sample(stream=np.array([damaged], dtype=object))
        with pytest.raises(PyTritonClientInferenceServerError, match="bad magic"):
            c.infer_sample(stream=np.array([b"GIF89a" + stream[6:]], dtype=object))
        assert c.infer_sample(stream=np.array([stream], dtype=object))["image"][0].startswith(b"\x89PNG")
    assert server.proc.poll() is None


def test_a_request_asks_for_a_preview_in_its_parameters(server, codec):
    from pytriton.client.exceptions import PyTritonClientInferenceServerError

    picture = _pictures([(96, 160)], seed=8)[0]
    stream = codec.compress(Image.open(io.BytesIO(picture)))
    with _client(server.url, "decompress") as c:
        for parameters, steps, fill in (({"preview": "s1"}, 2, "thumbnail"), ({"preview": 5, "fill": "context"}, 5,
                                                                               "context")):
            png = c.infer_sample(stream=np.array([stream], dtype=object), parameters=parameters)["image"][0]
            want = codec.preview(stream, steps, kind="numpy", fill=fill).image
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), want), parameters
        with pytest.raises(PyTritonClientInferenceServerError, match="preview must be s1, s2, s3 or a step count"):
            c.infer_sample(stream=np.array([stream], dtype=object), parameters={"preview": "s9"})
        full = c.infer_sample(stream=np.array([stream], dtype=object))["image"][0]  # serving goes on
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(full))), codec.decompress(stream, kind="numpy"))


def test_preview_requests_are_checked_and_decoded_beside_full_ones(codec):
    from hpcm_deploy.serving import decompress_files, preview_request

    assert preview_request(None) is None and preview_request({}) is None
    assert preview_request({"preview": "S2"}) == (5, "thumbnail")
    assert preview_request({"preview": 3, "fill": "context"}) == (3, "context")
    for bad, message in (({"preview": 0}, "step count 1-11"), ({"preview": "s1", "fill": "blur"}, "fill must be"),
                         ({"fill": "context"}, "fill goes with a preview"),
                         ({"steps": 2}, "unknown request parameter")):
        with pytest.raises(hd.InputError, match=message):
            preview_request(bad)
    streams = [codec.compress(Image.open(io.BytesIO(p))) for p in _pictures([(64, 64), (80, 120)], seed=4)]
    out = decompress_files(codec, [streams[0], streams[1], b"junk", streams[1]],
                           previews=[None, (2, "thumbnail"), (2, "thumbnail"), None])
    assert isinstance(out[2], hd.HPCMError)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out[1]))),
                          codec.preview(streams[1], 2, kind="numpy").image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out[3]))), codec.decompress(streams[1], kind="numpy"))


def _rgba_png(h: int, w: int) -> bytes:
    """An image the codec refuses by default (it has an alpha channel) although Pillow reads it."""
    buf = io.BytesIO()
    Image.new("RGBA", (w, h), (10, 20, 30, 128)).save(buf, format="PNG")
    return buf.getvalue()


def test_request_batcher_batches_concurrent_requests_and_fails_only_the_bad_ones(codec):
    """In process: the requests of a batch that holds bad ones each get their own outcome."""
    from hpcm_deploy.serving import compress_files
    from hpcm_deploy.serving.triton import CodecModel, RequestBatcher

    good = _pictures([(64, 64)] * 4 + [(64, 96)], seed=30)
    bad = {"not an image": b"this is not an image", "truncated": good[0][:100], "alpha": _rgba_png(64, 64)}
    calls: list[int] = []

    def work(items):
        calls.append(len(items))
        return compress_files(codec, items, catch_all=True)

    batcher = RequestBatcher("compress", work, threading.Lock(), max_items=8, max_delay_s=3.0)
    model = CodecModel("compress", batcher)
    requests = [("good", i, p) for i, p in enumerate(good)] + [("bad", k, p) for k, p in bad.items()]
    answers: dict[tuple, object] = {}
    barrier = threading.Barrier(len(requests))

    def client(kind, key, data) -> None:
        barrier.wait(timeout=60)
        try:
            answers[(kind, key)] = model([{"image": np.array([[data]], dtype=object)}])[0]["stream"][0, 0]
        except hd.HPCMError as exc:
            answers[(kind, key)] = exc

    threads = [threading.Thread(target=client, args=r) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        assert calls[0] == len(requests), calls  # all of them in one batch, the bad ones included
        expected = codec.compress([Image.open(io.BytesIO(p)) for p in good])
        assert [answers[("good", i)] for i in range(len(good))] == expected
        assert "not a readable image" in str(answers[("bad", "not an image")])
        assert "not a readable image" in str(answers[("bad", "truncated")])
        assert isinstance(answers[("bad", "alpha")], hd.InputError) and "alpha" in str(answers[("bad", "alpha")])
        # a request of several images fails as a whole, naming the image
        with pytest.raises(hd.InputError, match="image 2 of 2 of this request: not a readable image"):
            model([{"image": np.array([[good[0]], [b"junk"]], dtype=object)}])
    finally:
        batcher.close()


def test_a_client_sending_garbage_never_fails_the_concurrent_good_clients(server, codec):
    from pytriton.client.exceptions import PyTritonClientInferenceServerError

    pictures = _pictures([(64, 64)] * 6 + [(64, 96)] * 2, seed=60)
    streams = codec.compress([Image.open(io.BytesIO(p)) for p in pictures])
    damaged = streams[0][:40] + bytes([streams[0][40] ^ 0xFF]) + streams[0][41:]
    garbage = {"compress": [(b"this is not an image", "not a readable image"),
                            (pictures[0][:200], "not a readable image"),
                            (_rgba_png(64, 64), "alpha channel"),
                            (b"\x89PNG\r\n\x1a\n", "not a readable image")],
               "decompress": [(damaged, "checksum mismatch"), (b"GIF89a" + streams[1][6:], "bad magic"),
                              (streams[2][:-10], "truncated"), (b"HPCM", "")]}
    tensors = {"compress": ("image", "stream"), "decompress": ("stream", "image")}
    log: list[tuple[str, str, int, bool, object]] = []  # model, good/bad, index, ok, result or message
    jobs = ([("compress", "good", [i, i + 4]) for i in range(4)] + [("compress", "bad", [0, 1, 2, 3])]
            + [("decompress", "good", [i, i + 2]) for i in range(2)] + [("decompress", "bad", [0, 1, 2, 3])])
    barrier = threading.Barrier(len(jobs))

    def client(model: str, kind: str, indexes: list[int]) -> None:
        inp, out = tensors[model]
        with _client(server.url, model) as c:
            barrier.wait(timeout=120)
            for i in indexes:
                data = (pictures[i] if model == "compress" else streams[i]) if kind == "good" else garbage[model][i][0]
                try:
                    result = c.infer_sample(**{inp: np.array([data], dtype=object)})[out][0]
                    log.append((model, kind, i, True, result))
                except PyTritonClientInferenceServerError as exc:
                    log.append((model, kind, i, False, str(exc)))

    threads = [threading.Thread(target=client, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(log) == 8 + 4 + 4 + 4
    failed = sorted((m, k, i) for m, k, i, ok, _ in log if not ok)
    print(f"\n{len(log)} requests from {len(jobs)} concurrent clients, {len(failed)} failed: {failed}")
    assert failed == [(m, "bad", i) for m in ("compress", "decompress") for i in range(4)]
    for model, kind, i, _, result in log:
        if kind == "bad":
            assert garbage[model][i][1] in result, (model, i, result)
            assert "batched together" not in result
        elif model == "compress":
            assert result == streams[i], i
        else:
            expected = codec.decompress(streams[i], kind="numpy")
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(result))), expected), i
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


def test_bulk_refuses_a_cluster_that_does_not_answer_in_one_line(tmp_path):
    pytest.importorskip("ray.data", reason="Ray Data is an optional extra: pip install -e '.[ray]'")
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.hpcm").write_bytes(b"stream")
    before = (src / "a.hpcm").stat().st_mtime_ns
    with socket.socket() as s:  # a port that refuses connections: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run([*CLI, "bulk", "decompress", str(src), str(tmp_path / "out"), "--address",
                          f"ray://127.0.0.1:{port}"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"error: cannot reach the Ray cluster at ray://127.0.0.1:{port} (connection refused)")
    assert not (tmp_path / "out").exists() and (src / "a.hpcm").stat().st_mtime_ns == before


def test_engine_folders_reach_servers_and_workers_absolute_and_only_for_tensorrt(tmp_path, monkeypatch):
    from hpcm_deploy.cli.options import engine_options

    monkeypatch.chdir(tmp_path)
    assert engine_options("engines/x", "tensorrt") == {"engines": str(tmp_path / "engines" / "x")}
    assert engine_options(None, "onnxruntime") == {}
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.hpcm").write_bytes(b"stream")
    for verb in (["bulk", "decompress", str(src), str(tmp_path / "out")], ["serve"]):
        result = CliRunner().invoke(main, [*verb, "--engines", "engines/x"])
        assert result.exit_code == 1 and result.output == "error: --engines is for --backend tensorrt\n", verb
    assert not (tmp_path / "out").exists()


def test_bulk_worker_reports_files_that_vanished_or_became_unreadable_and_codes_the_rest(tmp_path,
                                                                                         tiny_phase2_export, codec):
    """What an actor does when files changed after the job was planned (no Ray needed to call it)."""
    from hpcm_deploy.serving.bulk import CodecWorker

    pictures = _pictures([(64, 64), (40, 72), (64, 64)], seed=70)
    paths = [tmp_path / f"img{i}.png" for i in range(4)]
    for path, data in zip(paths, [*pictures, pictures[0]]):
        path.write_bytes(data)
    paths[1].unlink()  # gone
    paths[3].unlink()
    paths[3].mkdir()  # there, but not a readable file
    worker = CodecWorker("compress", str(tiny_phase2_export), "onnxruntime", "cpu", {})
    out = worker({"path": np.array([str(p) for p in paths], dtype=object)})
    assert list(out["path"]) == [str(p) for p in paths]
    assert list(out["error"][:3]) == ["", "file vanished before it could be read", ""]
    assert out["error"][3].startswith("cannot read the file (Is a directory")
    assert [out["data"][0], out["data"][2]] == codec.compress([Image.open(io.BytesIO(p)) for p in (pictures[0],
                                                                                                   pictures[2])])
    assert out["data"][1] == out["data"][3] == b"" and list(out["bytes_in"]) == [len(pictures[0]), 0,
                                                                                 len(pictures[2]), 0]


def test_bulk_failed_writes_leave_no_partial_file_and_the_job_goes_on(tmp_path, monkeypatch):
    import errno

    from hpcm_deploy.serving import bulk

    out = tmp_path / "out"
    (out / "blocked").parent.mkdir(parents=True)
    (out / "blocked").write_bytes(b"a file where a folder should be")
    items = [("a", out / "a.hpcm"), ("full", out / "full.hpcm"), ("b", out / "blocked" / "b.hpcm"),
             ("c", out / "sub" / "c.hpcm")]

    def fake_iter_bulk(verb, jobs, export, **options):  # what the actors would have returned
        for name, dst in jobs:
            yield bulk.BulkItem(tmp_path / name, dst, None, 10, data=name.encode() * 1000)

    real_write = Path.write_bytes

    def disk_full_for_one(self, data):  # half of it lands, then the disk is full
        if self.name.startswith(".full.hpcm."):
            real_write(self, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    monkeypatch.setattr(bulk, "iter_bulk", fake_iter_bulk)
    monkeypatch.setattr(Path, "write_bytes", disk_full_for_one)
    seen = []
    report = bulk.run_bulk("compress", items, "unused", progress=lambda item: seen.append(item.source.name))
    assert seen == ["a", "full", "b", "c"] and report.done == 2
    errors = {item.source.name: item.error for item in report.failed}
    assert sorted(errors) == ["b", "full"]
    assert errors["full"] == f"cannot write {out / 'full.hpcm'} (No space left on device)"
    assert errors["b"].startswith(f"cannot write {out / 'blocked' / 'b.hpcm'} (")
    assert (out / "a.hpcm").read_bytes() == b"a" * 1000 and (out / "sub" / "c.hpcm").read_bytes() == b"c" * 1000
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a.hpcm", "blocked", "sub", "sub/c.hpcm"]


def test_core_import_does_not_load_the_optional_engines():
    code = ("import sys, hpcm_deploy, hpcm_deploy.cli, hpcm_deploy.serving; "
            "print([m for m in sys.modules if m.split('.')[0] in ('pytriton', 'ray', 'tritonclient')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
