"""Run every example of docs/integration.md as written (extracted, not copied)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"
EXAMPLES = dict(re.findall(r"<!-- example: (\w+) -->\s*```python\n(.*?)```", DOC.read_text(), flags=re.S))


def test_all_examples_found():
    assert set(EXAMPLES) == {"supervised_trainer", "torch_loop", "compose_invert", "rrm_basicunet",
                             "slice_inferer", "bundle_from_python"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name, tmp_path):
    script = tmp_path / f"{name}.py"
    script.write_text(EXAMPLES[name])
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
