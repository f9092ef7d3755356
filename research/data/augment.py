"""Image normalization and the standard CIFAR augmentation.

Where it runs: on the host, in numpy, inside the pipeline's transform (so on
the prefetch thread, overlapped with the device step).  Reasons:

* the random crop offsets and flips come from the batch's own generator,
  ``default_rng((seed, epoch, step, process_index, salt))``, so augmentation is
  a function of the data position like the example order, and a run resumed
  at (epoch, step) sees the very same pixels; it does not consume the model's
  JAX keys, so changing the model or optimizer leaves the data unchanged;
* it is a few gathers on a (B, 40, 40, C) uint8 array, cheap next to a
  training step, and the device program stays the same with or without it.

For data kept on the device (a whole split under ``lax.scan``)
:func:`random_crop_flip_jax` does the same thing under ``jit`` with a JAX key.

Augmentation is applied to the raw uint8 images, before normalization, so the
4-pixel border is black as in the usual recipe (zero padding, then
normalize).

References: He et al., Deep residual learning for image recognition, 2016
(section 4.2: 4-pixel padding, random 32x32 crop, horizontal flip).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from research.data.pipeline import Batch


def channel_stats(
    images: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of uint8 images ``(N, H, W, C)``, on the [0, 1] scale.

  Accumulated in float64 over chunks, so a large split never becomes one big
  float array.
  """
  images = np.asarray(images)
  if images.ndim != 4 or len(images) == 0:
    raise ValueError(
        f'channel_stats: images must be (N, H, W, C) with N > 0, got {images.shape}.'
    )
  total = np.zeros(images.shape[-1])
  total_sq = np.zeros(images.shape[-1])
  for start in range(0, len(images), chunk):
    part = images[start : start + chunk].astype(np.float64) / 255.0
    total += part.sum(axis=(0, 1, 2))
    total_sq += np.square(part).sum(axis=(0, 1, 2))
  count = images.shape[0] * images.shape[1] * images.shape[2]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  # A constant channel (blank mock data, padding) must not divide by zero.
  std = np.where(std > 1e-6, std, 1.0)
  return mean.astype(np.float32), std.astype(np.float32)


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """``(images / 255 - mean) / std`` per channel, in float32."""
  x = np.asarray(images, np.float32) * np.float32(1.0 / 255.0)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def random_crop_flip(
    images: np.ndarray, rng: np.random.Generator, padding: int = 4, flip: bool = True
) -> np.ndarray:
  """Pads ``padding`` zero pixels on each side, crops back to (H, W) at a random
  offset per image and, if ``flip``, mirrors each image left-right with
  probability 1/2.  ``images``: ``(B, H, W, C)``; same shape and dtype out.
  """
  if padding < 0:
    raise ValueError(f'random_crop_flip: padding={padding} must be >= 0.')
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  top = rng.integers(0, 2 * padding + 1, size=b)
  left = rng.integers(0, 2 * padding + 1, size=b)
  rows = top[:, None] + np.arange(h)  # (B, H)
  cols = left[:, None] + np.arange(w)  # (B, W)
  if flip:
    mirrored = rng.random(b) < 0.5
    cols = np.where(mirrored[:, None], cols[:, ::-1], cols)
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_crop_flip_jax(
    key: jax.Array,
    images: jax.Array,
    padding: int = 4,
    flip: bool = True,
    fill: float = 0.0,
) -> jax.Array:
  """:func:`random_crop_flip` for arrays on the device, jit-safe.

  ``fill`` is the border value: 0 for raw images; for normalized images pass
  the normalized value of black (``-mean / std``) or accept a gray border.
  """
  b, h, w, c = images.shape
  key_crop, key_flip = jax.random.split(key)
  offsets = jax.random.randint(key_crop, (b, 2), 0, 2 * padding + 1)
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  padded = jnp.pad(images, pad, constant_values=jnp.asarray(fill, images.dtype))

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

  out = jax.vmap(crop)(padded, offsets)
  if flip:
    mirrored = jax.random.bernoulli(key_flip, 0.5, (b,))
    out = jnp.where(mirrored[:, None, None, None], out[:, :, ::-1], out)
  return out


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
  """The train and eval transforms of an image split.

  ``train(batch, rng)`` augments the uint8 images (if ``augment``) and then
  normalizes; ``eval(batch)`` only normalizes.  Labels pass through as int32.
  """

  mean: np.ndarray
  std: np.ndarray
  augment: bool = False
  padding: int = 4
  flip: bool = True

  def train(self, batch: Batch, rng: np.random.Generator) -> Batch:
    x = batch['x']
    if self.augment:
      x = random_crop_flip(x, rng, self.padding, self.flip)
    return {**batch, 'x': normalize(x, self.mean, self.std)}

  def eval(self, batch: Batch) -> Batch:
    return {**batch, 'x': normalize(batch['x'], self.mean, self.std)}


__all__ = [
    'ImagePreprocess',
    'channel_stats',
    'normalize',
    'random_crop_flip',
    'random_crop_flip_jax',
]
