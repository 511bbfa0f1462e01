"""Rate-distortion training (the HPCM training loss: ``lambda * 255^2 * MSE + bpp``) with checkpoints and resume."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import SIZE_MULTIPLE, get_config
from ..errors import CheckpointError, ConfigError
from ..files import write_atomic
from ..models.api import build_model, load_model
from ..models.hpcm import HPCM
from ..models.loading import copy_shared_weights
from .data import CropSampler, bundled_images

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
LOG = "log.jsonl"


@dataclass(frozen=True)
class TrainSettings:
    preset: str = "tiny-phase2"
    lmbda: float = 0.0035
    steps: int = 10000
    batch: int = 8
    crop: int = 256
    lr: float = 5e-4
    lr_final: float = 1e-4
    lr_drop_at: float = 0.8  # fraction of the run after which lr_final is used
    clip: float = 1.0
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 100
    log_every: int = 20
    overrides: tuple = ()  # configuration fields changed from the preset, as (name, value) pairs


def rd_loss(out: dict, x: torch.Tensor, lmbda: float) -> dict[str, torch.Tensor]:
    """The official training loss; bits per pixel from the likelihoods."""
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp_y = out["likelihoods"]["y"].log2().sum() / -pixels
    bpp_z = out["likelihoods"]["z"].log2().sum() / -pixels
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return {"loss": lmbda * 255 ** 2 * mse + bpp_y + bpp_z, "bpp": bpp_y + bpp_z, "bpp_y": bpp_y, "bpp_z": bpp_z,
            "mse": mse, "psnr": -10 * torch.log10(mse.clamp_min(1e-10))}


def _save_atomic(obj: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save_weights(model: HPCM, path: Path, meta: dict) -> None:
    """Weights in the form ``load_model(checkpoint=path)`` reads (config included)."""
    _save_atomic({"config": model.config.to_dict(), "state_dict": model.state_dict(), "meta": meta}, path)


def _restore(model: HPCM, optimizer: torch.optim.Optimizer, sampler: CropSampler, settings: TrainSettings,
             ckpt_path: Path, resume: bool, init: str | os.PathLike | None,
             notice: Callable[[str], None]) -> tuple[int, float]:
    """Resume from the run's checkpoint (step and seconds trained so far), or start from ``init``'s weights,
    or from scratch: ``(0, 0.0)``. ``notice`` tells that the run resumed (news, not a warning)."""
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        free = ("steps", "threads", "checkpoint_every", "log_every")  # may change when resuming
        fixed = {k: v for k, v in asdict(settings).items() if k not in free}
        stored = {**ckpt["settings"], "overrides": tuple(map(tuple, ckpt["settings"].get("overrides", ())))}
        if {k: stored.get(k, ()) if k == "overrides" else stored.get(k) for k in fixed} != fixed:
            raise CheckpointError(f"{ckpt_path} was written with other settings: {ckpt['settings']}")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler.set_state(ckpt["sampler"])
        torch.set_rng_state(ckpt["torch_rng"])
        notice(f"resumed {ckpt_path.parent} at step {ckpt['step']} ({ckpt['seconds'] / 3600:.1f} h trained)")
        if init is not None:
            log.warning("--init %s ignored: the run resumes from its checkpoint", init)
        return ckpt["step"], ckpt["seconds"]
    if init is not None:
        start = load_model(checkpoint=init, seed=None)
        copy_shared_weights(model, start, f"--init {init}")
        log.info("starting from the weights in %s", init)
    return 0, 0.0




def train(out_dir: str | os.PathLike, settings: TrainSettings, resume: bool = True,
          init: str | os.PathLike | None = None, progress: Callable[[int, dict[str, float]], None] | None = None,
          notice: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) into ``out_dir``; returns the path of the final weights. ``init``: weights to start
    a new run from (for example the shipped demo model), instead of the seeded initialisation; a run that
    resumes from its checkpoint ignores it. ``progress(step, stats)`` is called after every step (step 1 ... and
    the step's loss, bpp, psnr, ...), and once before the first with the step the run starts at and no stats;
    ``notice`` receives news such as "resumed at step N" (default: the log, at INFO)."""
    if settings.crop < SIZE_MULTIPLE or settings.crop % SIZE_MULTIPLE:
        raise ConfigError(f"--crop must be a multiple of {SIZE_MULTIPLE} (the model codes whole tiles), "
                          f"got {settings.crop}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    ckpt_path = out / CHECKPOINT
    model = build_model(get_config(settings.preset, **dict(settings.overrides)), seed=settings.seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sampler = CropSampler(list(bundled_images("train").values()), settings.crop, settings.seed)
    torch.manual_seed(settings.seed)  # the quantisation noise: a run does not depend on what ran before it
    step, seconds = _restore(model, optimizer, sampler, settings, ckpt_path, resume, init, notice or log.info)
    if progress is not None:
        progress(step, {})
    started = time.perf_counter() - seconds
    window: dict[str, float] = {}
    with open(out / LOG, "a") as logf:
        while step < settings.steps:
            lr = settings.lr if step < settings.lr_drop_at * settings.steps else settings.lr_final
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = sampler.sample(settings.batch)
            optimizer.zero_grad(set_to_none=True)
            stats = rd_loss(model(x), x, settings.lmbda)
            stats["loss"].backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            if not math.isfinite(float(norm)):
                log.warning("step %d: non-finite gradient norm, batch skipped", step)
                continue
            optimizer.step()
            step += 1
            values = {k: float(v.detach()) for k, v in stats.items()}
            for k, v in values.items():
                window[k] = window.get(k, 0.0) + v
            if progress is not None:
                progress(step, values)
            if step % settings.log_every == 0:
                _log(logf, window, settings.log_every, step, lr, (time.perf_counter() - started) / 3600)
                window = {}
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                _save_atomic({"settings": asdict(settings), "state_dict": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "sampler": sampler.state(),
                              "torch_rng": torch.get_rng_state(), "step": step,
                              "seconds": time.perf_counter() - started}, ckpt_path)
    model.eval()
    weights = out / WEIGHTS
    save_weights(model, weights, {"settings": asdict(settings), "step": step,
                                  "hours": (time.perf_counter() - started) / 3600})
    return weights


def _log(logf, window: dict[str, float], count: int, step: int, lr: float, hours: float) -> None:
    """One line of the run's log: the means of the last ``count`` steps."""
    record = {k: v / count for k, v in window.items()}
    record.update(step=step, lr=lr, hours=hours)
    logf.write(json.dumps(record) + "\n")
    logf.flush()
    log.info("step %d loss %.4f bpp %.4f psnr %.2f", step, record["loss"], record["bpp"], record["psnr"])


def bundle_weights(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Weights as shipped in the package: float16 tensors (half the size; the model they define is the
    float16-rounded one, loaded as float32), with the config and the training record."""
    obj = torch.load(src, map_location="cpu", weights_only=False)
    state = obj.get("state_dict", obj)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    out = Path(dst)
    _save_atomic({"config": obj["config"], "state_dict": half, "meta": obj.get("meta", {})}, out)
    return out
