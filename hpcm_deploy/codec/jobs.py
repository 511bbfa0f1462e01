"""Folder jobs: which output each input file gets, and coding files in batches where one bad file never fails
the others. The CLI's ``compress``/``decompress`` and ``bulk``'s workers plan and code with it; the Triton
server codes file bytes with the same batch coders.

A batch is coded in one codec call; if that call refuses an input, its items are coded one by one, so a bad
item costs the others only a retry (the codec checks every input before it codes any, so the retry is cheap
in the usual case of a malformed input).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HPCMError, InputError
from ..files import write_atomic
from ..image import IMAGE_SUFFIXES, image_from_bytes, list_images, png_bytes, read_image
from .container import SUFFIX

log = logging.getLogger(__name__)

#: One item's result: the output bytes, or the error that stopped it.
Outcome = bytes | HPCMError
VERBS = ("compress", "decompress")


def suffixes(verb: str) -> tuple[set[str], str]:
    """The input suffixes a job of ``verb`` reads and the suffix of its outputs."""
    if verb not in VERBS:
        raise InputError(f"unknown job {verb!r}: choose compress or decompress")
    return (IMAGE_SUFFIXES, SUFFIX) if verb == "compress" else ({SUFFIX}, ".png")


def plan(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, verb: str,
         none_found: str = "no input files found") -> list[tuple[Path, Path]]:
    """``(input file, output file)`` for files and (recursively) folders: one input file and an output with a
    suffix is that file; anything else makes one output per input in the folder ``out``, keeping the folders'
    structure. An output that is one of the inputs is refused before anything is read or written; no input at
    all is ``none_found``."""
    wanted, new_suffix = suffixes(verb)
    files = list_images(list(inputs), wanted)
    if not files:
        raise InputError(none_found)
    out_path = Path(out)
    if len(files) == 1 and Path(inputs[0]).is_file() and not out_path.is_dir() and out_path.suffix:
        jobs = [(files[0][0], out_path)]
    elif out_path.suffix and not out_path.is_dir():
        # several inputs (or a folder) make one output each, in a folder: a name like single.hpcm would silently
        # become a folder of that name
        what = f"{len(files)} input files need" if len(files) > 1 else f"a folder input ({inputs[0]}) needs"
        raise InputError(f"{what} an output folder, and {out} looks like a file name; give a folder "
                         f"(-o {out_path.with_suffix('')}/) or one input file")
    else:
        if out_path.exists() and not out_path.is_dir():
            raise InputError(f"{out} is a file, not a folder: several inputs need an output folder")
        jobs = [(f, out_path / rel.with_suffix(new_suffix)) for f, rel in files]
    _refuse_overwriting_inputs(jobs)
    return jobs


def plan_folder(verb: str, input_dir: str | os.PathLike, output_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """:func:`plan` for a whole folder (``bulk``): every image (compress) or ``.hpcm`` stream (decompress) under
    ``input_dir``, inputs made absolute (workers elsewhere read them)."""
    src = Path(input_dir)
    suffixes(verb)
    if not src.is_dir():
        raise InputError(f"no such folder: {src}")
    none_found = f"no {'images' if verb == 'compress' else '.hpcm streams'} found in {src}"
    return [(s.resolve(), d) for s, d in plan([src], Path(output_dir), verb, none_found)]


def _refuse_overwriting_inputs(jobs: list[tuple[Path, Path]]) -> None:
    """An output that is one of the inputs (the same path, or the same file through a link) would replace that
    input with its own stream or image."""
    def identity(path: Path):
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    inputs = {identity(src): src for src, _ in jobs}
    for _, dst in jobs:
        same = inputs.get(identity(dst)) if dst.exists() else None
        if same is not None:
            raise InputError(f"the output {dst} is the input {same}: it would be overwritten; choose another -o")


def read_input(path: str | os.PathLike) -> bytes | InputError:
    """The bytes of an input file, or the error that says why it cannot be read (gone, not readable)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return InputError("file vanished before it could be read")
    except OSError as exc:
        return InputError(f"cannot read the file ({exc.strerror or exc})")


def write_output(dst: Path, data: bytes | Callable[[Path], None]) -> None:
    """Write an output atomically; a failed write (disk full, no permission) leaves nothing and is one line."""
    try:
        write_atomic(dst, data)
    except OSError as exc:
        blocker = next((p for p in dst.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or exc
        raise HPCMError(f"cannot write {dst} ({reason})") from None


# ---------------------------------------------------------------------------------------------- batch coders
def isolated(fn: Callable[[list], Sequence[Any]], items: list, catch_all: bool = False) -> list:
    """``fn(items)`` as one batch; if the batch fails with a user error, each item alone. ``catch_all`` also
    isolates unexpected errors (a bulk job or a server reports them per item instead of stopping)."""
    if not items:
        return []
    catch = Exception if catch_all else HPCMError
    try:
        return list(fn(items))
    except catch as exc:
        if len(items) == 1:
            return [_as_user_error(exc)]
        log.debug("batch of %d failed (%s); coding its items one by one", len(items), exc)
    out: list = []
    for item in items:
        try:
            out.append(fn([item])[0])
        except catch as exc:
            out.append(_as_user_error(exc))
    return out


def _as_user_error(exc: Exception) -> HPCMError:
    if isinstance(exc, HPCMError):
        return exc
    log.warning("unexpected error while coding: %s: %s", type(exc).__name__, exc)
    return HPCMError(f"could not be coded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


def compress_files(codec, files: Sequence[bytes], catch_all: bool = False) -> list[Outcome]:
    """Encoded images (file bytes) -> ``.hpcm`` streams, in one batched codec call where possible; a file that
    is not an image, or that the codec refuses, becomes its error, the others are still coded."""
    out: list[Outcome | None] = [None] * len(files)
    images, where = [], []
    for i, data in enumerate(files):
        try:
            images.append(image_from_bytes(bytes(data)))
            where.append(i)
        except HPCMError as exc:
            out[i] = exc
    for i, result in zip(where, isolated(codec.compress, images, catch_all)):
        out[i] = result
    return [r if r is not None else InputError("not coded") for r in out]


def decompress_files(codec, streams: Sequence[bytes], catch_all: bool = False,
                     previews: Sequence[tuple[int, str] | None] | None = None) -> list[Outcome]:
    """``.hpcm`` streams -> PNG file bytes; a stream the codec refuses becomes its error, the others are decoded.
    ``previews``: per stream, ``None`` (the full image, decoded in one batch with the others) or ``(steps,
    fill)`` of a preview (:meth:`~hpcm_deploy.Codec.preview`, one stream at a time)."""
    data = [bytes(s) for s in streams]
    wanted = list(previews) if previews is not None else [None] * len(data)
    out: list[Any] = [None] * len(data)
    full = [i for i, p in enumerate(wanted) if p is None]
    decoded = isolated(lambda batch: codec.decompress(batch, kind="pil"), [data[i] for i in full], catch_all)
    for i, result in zip(full, decoded):
        out[i] = result
    for i, p in enumerate(wanted):
        if p is not None:
            steps, fill = p
            out[i] = isolated(lambda one, s=steps, f=fill: [codec.preview(one[0], s, kind="pil", fill=f).image],
                              [data[i]], catch_all)[0]
    return [png_bytes(r) if not isinstance(r, HPCMError) else r for r in out]


# ---------------------------------------------------------------------------------------------- file jobs
@dataclass
class FileResult:
    """One job's outcome: what the CLI prints per file (``summary``) or the error that stopped it."""

    source: Path
    output: Path
    error: HPCMError | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def code_jobs(codec, jobs: Sequence[tuple[Path, Path]], verb: str, *, batch: int | None = None,
              preview: int | None = None, fill: str = "thumbnail", partial: bool = False) -> Iterator[FileResult]:
    """Code ``jobs`` (from :func:`plan`) in batches of ``batch`` files (default: the codec's ``max_batch``), write
    every output atomically and yield one :class:`FileResult` per job, in order. Decoding a ``preview`` (a step
    count) codes one stream at a time."""
    size = max(1, batch or codec.max_batch)
    for first in range(0, len(jobs), size):
        chunk = list(jobs[first:first + size])
        if verb == "compress":
            yield from _compress_chunk(codec, chunk)
        else:
            yield from _decompress_chunk(codec, chunk, preview, fill, partial)


def _compress_chunk(codec, chunk: list[tuple[Path, Path]]) -> Iterator[FileResult]:
    results = [FileResult(src, dst) for src, dst in chunk]
    images, where, read = [], [], {}
    for i, r in enumerate(results):
        start = time.perf_counter()
        try:
            images.append(read_image(r.source))
            where.append(i)
        except HPCMError as exc:
            r.error = exc
        read[i] = time.perf_counter() - start
    for i, coded in zip(where, isolated(codec.compress_detailed, images)):
        if isinstance(coded, HPCMError):
            results[i].error = coded
            continue
        t = coded.timings
        results[i].summary = {"bytes": len(coded.stream), "bpp": coded.bpp, "height": coded.height,
                              "width": coded.width, "batch": t.get("batch", 1),
                              "seconds": {"network": t["network"], "entropy": t["entropy"], "transfer": t["transfer"],
                                          "host": t["host"], "total": t["total"]}}
        _write(results[i], coded.stream, read[i])
    yield from results


def _decompress_chunk(codec, chunk: list[tuple[Path, Path]], preview: int | None, fill: str,
                      partial: bool) -> Iterator[FileResult]:
    results = [FileResult(src, dst) for src, dst in chunk]
    streams, where, read = [], [], {}
    for i, r in enumerate(results):
        start = time.perf_counter()
        data = read_input(r.source)
        read[i] = time.perf_counter() - start
        if isinstance(data, HPCMError):
            r.error = data
        else:
            streams.append(data)
            where.append(i)
    if preview is not None:
        decoded = [isolated(lambda one: [codec.preview(one[0], preview, kind="pil", partial=partial, fill=fill)],
                            [s])[0] for s in streams]
    else:
        decoded = isolated(lambda batch: codec.decompress_detailed(batch, kind="pil", partial=partial), streams)
    for i, data, result in zip(where, streams, decoded):
        if isinstance(result, HPCMError):
            results[i].error = result
            continue
        t = result.timings
        results[i].summary = {"bytes": len(data), "bpp": 8 * len(data) / (result.height * result.width),
                              "height": result.height, "width": result.width, "steps": result.steps,
                              "seconds": {"network": t["network"], "entropy": t["entropy"],
                                          "transfer": t["transfer"], "total": t["total"]}}
        image = result.image
        _write(results[i], lambda tmp, im=image: im.save(tmp, format="PNG"), read[i])
    yield from results


def _write(result: FileResult, data: bytes | Callable[[Path], None], read_seconds: float) -> None:
    """Write ``result``'s output and add the file time (read + write) to its summary; a failed write is its error."""
    start = time.perf_counter()
    try:
        write_output(result.output, data)
    except HPCMError as exc:
        result.error, result.summary = exc, {}
        return
    io = read_seconds + time.perf_counter() - start
    result.summary["seconds"]["io"] = io
    result.summary["seconds"]["total"] += io


__all__ = ["VERBS", "FileResult", "Outcome", "code_jobs", "compress_files", "decompress_files", "isolated", "plan",
           "plan_folder", "read_input", "suffixes", "write_output"]
