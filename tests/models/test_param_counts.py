"""Parameter counts against the published ones and exact closed forms.

Counts come from shapes only (jax.eval_shape): WRN-28-10 is never allocated.
"""

import pytest

from research import models


def resnet_option_a_count(depth, num_classes=10):
  """He et al. (2016) CIFAR ResNet, option A shortcuts, counted by hand."""
  n = (depth - 2) // 6
  total = 3 * 9 * 16 + 2 * 16  # First conv and its BatchNorm.
  c_in = 16
  for c in (16, 32, 64):
    for _ in range(n):
      total += c_in * 9 * c + 2 * c + c * 9 * c + 2 * c
      c_in = c
  return total + 64 * num_classes + num_classes


def wide_resnet_count(depth, k, num_classes=10):
  """Zagoruyko & Komodakis (2016) WRN, counted by hand."""
  n = (depth - 4) // 6
  total = 3 * 9 * 16
  c_in = 16
  for c in (16 * k, 32 * k, 64 * k):
    for _ in range(n):
      total += 2 * c_in + c_in * 9 * c + 2 * c + c * 9 * c
      total += c_in * c if c_in != c else 0  # 1x1 projection shortcut.
      c_in = c
  return total + 2 * c_in + c_in * num_classes + num_classes


# Published figures are rounded: 1.7M and 2.7M are given to two significant
# figures, and the exact counts (1,727,962 and 2,748,890) lie 1.6% and 1.8%
# above them, so for those the tolerance is half a unit of the last published
# digit; for the others it is 1%.
@pytest.mark.parametrize('name,overrides,published,half_unit', [
    ('resnet', dict(depth=20), 0.27e6, 0.005e6),
    ('resnet', dict(depth=32), 0.46e6, 0.005e6),
    ('resnet', dict(depth=44), 0.66e6, 0.005e6),
    ('resnet', dict(depth=56), 0.85e6, 0.005e6),
    ('resnet', dict(depth=110), 1.7e6, 0.05e6),
    ('wide_resnet', dict(depth=16, widen_factor=4), 2.7e6, 0.05e6),
    ('wide_resnet', dict(depth=28, widen_factor=10), 36.5e6, 0.05e6),
])
def test_published_parameter_counts(name, overrides, published, half_unit):
  config = models.default_config(name)
  config.update(overrides)
  count = models.count_params(config)
  assert abs(count - published) <= max(0.01 * published, half_unit)
  if name == 'resnet':
    assert count == resnet_option_a_count(config.depth)
  else:
    assert count == wide_resnet_count(config.depth, config.widen_factor)


def test_option_b_adds_projections():
  config = models.default_config('resnet')
  config.shortcut = 'B'
  # Two 1x1 projections (16->32, 32->64) with their BatchNorms.
  extra = 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
  assert models.count_params(config) == resnet_option_a_count(20) + extra


def test_mnist1d_reference_models():
  # ConvBase: conv(1->25, k5), conv(25->25, k3) twice, linear(125->10).
  conv = (1 * 25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)
  assert models.count_params(models.default_config('mnist1d_cnn')) == conv
  # MLPBase: 40 -> 100 -> 100 -> 10.
  mlp = (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
  assert models.count_params(models.default_config('mnist1d_mlp')) == mlp


def test_mnist1d_cnn_with_batch_norm():
  # Each conv loses its bias (25) and gains BatchNorm scale and offset (50).
  config = models.default_config('mnist1d_cnn')
  plain = models.count_params(config)
  config.batch_norm = True
  assert models.count_params(config) == plain + 3 * (50 - 25)
