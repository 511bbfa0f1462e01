"""Images, in one home: what the codec takes and gives back, their geometry, and images as files.

- :mod:`.convert`: PIL images, NumPy arrays and tensors (any layout, batch, DLPack) to the model's ``[3, H, W]``
  floats and back, with the alpha policy and the recorded channels and sample format (:class:`ImageInfo`);
- :mod:`.geometry`: padding to the model's size multiple and cropping back, and the smooth random images that
  exports, checks, benchmarks and tests run on;
- :mod:`.files`: reading (from a path or from file bytes), probing, listing folders, writing PNG bytes.
"""

from __future__ import annotations

from .convert import (
    ALPHA_CHOICES,
    OUT_OF_RANGE,
    ImageInfo,
    as_torch,
    check_output_kind,
    from_tensor,
    image_size,
    parse_alpha,
    split_batch,
    to_tensor,
)
from .files import IMAGE_SUFFIXES, image_from_bytes, list_images, png_bytes, probe_image, read_image
from .geometry import crop_image, pad_image, padded_size, random_image

__all__ = ["ALPHA_CHOICES", "IMAGE_SUFFIXES", "OUT_OF_RANGE", "ImageInfo", "as_torch", "check_output_kind",
           "crop_image", "from_tensor", "image_from_bytes", "image_size", "list_images", "pad_image", "padded_size",
           "parse_alpha", "png_bytes", "probe_image", "random_image", "read_image", "split_batch", "to_tensor"]
