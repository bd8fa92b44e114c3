"""The README's Python example runs as written (with a short training run)."""
import re

from conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("steps=20", "steps=3"), "README.md", "exec"), {})
    assert (tmp_path / "samples.png").is_file()
    assert list((tmp_path / "runs").glob("*/latest.pt"))
