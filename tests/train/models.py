"""Tiny Flax models for trainer tests (the real ones live in research.models)."""

import flax.linen as nn


class TinyMLP(nn.Module):
  """Dense -> [BatchNorm] -> ReLU -> Dense; BatchNorm averages over ``axis_name``."""

  features: int = 16
  num_classes: int = 3
  batch_norm: bool = True
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(self.features)(x.reshape((x.shape[0], -1)))
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       axis_name=self.axis_name)(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes)(x)
