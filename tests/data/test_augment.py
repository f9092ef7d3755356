"""Normalization and crop/flip augmentation, host and device versions."""

import jax
import numpy as np
import pytest

from research.data import augment


def _images(b=16, h=32, w=32, c=3, seed=0):
  return np.random.default_rng(seed).integers(1, 256, (b, h, w, c), dtype=np.uint8)


def _is_window_of_padded(out, image, padding, allow_flip):
  """Whether ``out`` is some (H, W) window of the zero-padded ``image``,
  possibly mirrored."""
  h, w, _ = image.shape
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  for top in range(2 * padding + 1):
    for left in range(2 * padding + 1):
      window = padded[top : top + h, left : left + w]
      if np.array_equal(out, window) or (
          allow_flip and np.array_equal(out, window[:, ::-1])
      ):
        return True
  return False


def test_random_crop_flip_keeps_shape_and_changes_pixels():
  images = _images()
  out = augment.random_crop_flip(images, np.random.default_rng(0))
  assert out.shape == images.shape and out.dtype == images.dtype
  assert not np.array_equal(out, images)
  for i in range(4):
    assert _is_window_of_padded(out[i], images[i], 4, allow_flip=True)


def test_random_crop_flip_is_deterministic_per_rng_and_uses_both_flips():
  images = _images(b=64)
  a = augment.random_crop_flip(images, np.random.default_rng(3))
  b = augment.random_crop_flip(images, np.random.default_rng(3))
  np.testing.assert_array_equal(a, b)
  # With no padding the only change is the flip: about half the images move.
  flipped = augment.random_crop_flip(images, np.random.default_rng(4), padding=0)
  moved = np.array(
      [not np.array_equal(f, im) for f, im in zip(flipped, images, strict=True)]
  )
  np.testing.assert_array_equal(flipped[moved], images[moved][:, :, ::-1])
  assert 10 < moved.sum() < 54


def test_random_crop_flip_jax_matches_the_recipe_under_jit():
  images = _images(b=8)
  out = jax.jit(augment.random_crop_flip_jax)(jax.random.key(0), images)
  out = np.asarray(out)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert not np.array_equal(out, images)
  for i in range(8):
    assert _is_window_of_padded(out[i], images[i], 4, allow_flip=True)


def test_channel_stats_and_normalize():
  images = _images(b=40, h=6, w=5)
  mean, std = augment.channel_stats(images, chunk=7)  # several chunks
  x = images.astype(np.float64) / 255.0
  np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-5)
  z = augment.normalize(images, mean, std)
  assert z.dtype == np.float32
  np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-5)


def test_constant_channel_does_not_divide_by_zero():
  images = np.full((3, 4, 4, 1), 7, np.uint8)
  mean, std = augment.channel_stats(images)
  assert np.all(np.isfinite(augment.normalize(images, mean, std)))


def test_image_preprocess_augments_train_only():
  images = _images(b=8)
  batch = {'x': images, 'y': np.arange(8)}
  prep = augment.ImagePreprocess(
      np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32), augment=True
  )
  train = prep.train(batch, np.random.default_rng(0))
  evaluation = prep.eval(batch)
  assert train['x'].shape == evaluation['x'].shape == images.shape
  np.testing.assert_allclose(
      evaluation['x'], (images / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-5
  )
  assert not np.allclose(train['x'], evaluation['x'])
  np.testing.assert_array_equal(train['y'], batch['y'])


def test_negative_padding_is_an_error():
  with pytest.raises(ValueError, match='padding'):
    augment.random_crop_flip(_images(b=1), np.random.default_rng(0), padding=-1)
