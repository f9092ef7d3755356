"""read_history gives back the rows the Trainer wrote, so a resumed fit
returns the whole run's history."""

import numpy as np

from research.train import metric_writers


def test_history_round_trips_through_metrics_jsonl(tmp_path):
  rows = [
      dict(loss=np.float32(0.5), accuracy=np.array([0.25, 0.75]),
           layer_grad_norms={'Dense_0/kernel': np.array([1.0, 2.0]), 'head/bias': 3.0}),
      dict(loss=np.float32(0.25), accuracy=np.array([0.5, 1.0]),
           layer_grad_norms={'Dense_0/kernel': np.array([4.0, 5.0]), 'head/bias': 6.0}),
  ]
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  for step, row in zip((10, 20), rows):
    writer.write(step, row, prefix='train/')
  writer.write(20, dict(loss=0.7, accuracy=0.4), prefix='eval/test/')
  writer.close()
  history, evals = metric_writers.read_history(str(tmp_path))
  assert [h['step'] for h in history] == [10, 20]
  assert history[1] == dict(step=20, loss=0.25, accuracy=[0.5, 1.0],
                            layer_grad_norms={'Dense_0/kernel': [4.0, 5.0], 'head/bias': 6.0})
  assert evals == [dict(step=20, test=dict(loss=0.7, accuracy=0.4))]
  assert metric_writers.read_history(str(tmp_path), until=10)[0] == history[:1]
