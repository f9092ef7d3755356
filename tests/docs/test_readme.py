"""The README's Trainer example runs as written (at a smaller size)."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _example() -> str:
  text = open(os.path.join(REPO, 'README.md')).read()
  blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
  (block,) = [b for b in blocks if 'Trainer(' in b]
  return block


def test_the_readme_trainer_example_runs(tmp_path, monkeypatch, capsys):
  code = _example()
  # The same code at a tenth of the length, into a temporary folder; the
  # substitutions must all apply, so the test breaks if the README changes.
  small = code
  for old, new in [('600', '60'), ("'runs/example'", repr(str(tmp_path / 'example')))]:
    assert old in small, old
    small = small.replace(old, new)
  monkeypatch.chdir(tmp_path)
  exec(compile(small, 'README.md', 'exec'), {})  # noqa: S102
  out = capsys.readouterr().out
  assert re.search(r"'accuracy': 0\.\d+", out), out
  assert sorted(os.listdir(tmp_path / 'example' / 'snapshots')) == [
      'step_00000020', 'step_00000040', 'step_00000060']
