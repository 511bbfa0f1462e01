"""Images bundled with scikit-image and scikit-learn (no download), and random training crops.

Held out for evaluation (never trained on): scikit-image's ``rocket`` and scikit-learn's ``china`` and
``flower``. Everything else that loads offline is used for training; greyscale images are used as RGB.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

TRAIN_SKIMAGE = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
                 "stereo_motorcycle", "colorwheel", "camera", "brick", "grass", "gravel", "moon", "coins", "clock",
                 "cell", "page", "text")
HELD_OUT_SKIMAGE = ("rocket",)
HELD_OUT_SKLEARN = ("china", "flower")


def _to_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a[..., :3]


def _skimage(name: str) -> list[np.ndarray]:
    try:
        import skimage.data as data
    except ImportError:
        raise InputError("training data needs scikit-image: pip install -e '.[train]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = getattr(data, name)()
    if name == "stereo_motorcycle":
        return [_to_rgb(out[0]), _to_rgb(out[1])]
    return [_to_rgb(out)]


def _sklearn(name: str) -> np.ndarray:
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        raise InputError("evaluation data needs scikit-learn: pip install -e '.[train]'") from None
    return load_sample_image(f"{name}.jpg")


def bundled_images(split: str) -> dict[str, np.ndarray]:
    """``{name: uint8 [H, W, 3]}`` for ``split`` = ``"train"`` or ``"heldout"``."""
    out: dict[str, np.ndarray] = {}
    if split == "train":
        for name in TRAIN_SKIMAGE:
            for i, img in enumerate(_skimage(name)):
                out[name if i == 0 else f"{name}_{i}"] = img
    elif split == "heldout":
        for name in HELD_OUT_SKIMAGE:
            out[name] = _skimage(name)[0]
        for name in HELD_OUT_SKLEARN:
            out[name] = _sklearn(name)
    else:
        raise ValueError(split)
    return out


class CropSampler:
    """Random crops: a random rescale (0.5-1), a random position, one of the eight flips/rotations by quarter
    turns, and a random channel order."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int) -> None:
        self.images = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div(255) for a in images]
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def sample(self, batch: int) -> torch.Tensor:
        out = []
        for _ in range(batch):
            img = self.images[int(self.rng.integers(len(self.images)))]
            _, h, w = img.shape
            low = max(self.crop / min(h, w), 0.5)
            scale = float(self.rng.uniform(low, 1.0)) if low < 1.0 else low
            if scale != 1.0:
                size = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
                img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
            _, h, w = img.shape
            y, x = int(self.rng.integers(h - self.crop + 1)), int(self.rng.integers(w - self.crop + 1))
            patch = img[:, y:y + self.crop, x:x + self.crop]
            if self.rng.random() < 0.5:
                patch = patch.flip(2)
            if self.rng.random() < 0.5:
                patch = patch.flip(1)
            if self.rng.random() < 0.5:  # with the two flips: all eight quarter-turn rotations and mirrorings
                patch = patch.transpose(1, 2)
            patch = patch[torch.from_numpy(self.rng.permutation(3))]
            out.append(patch.clamp(0, 1))
        return torch.stack(out)
