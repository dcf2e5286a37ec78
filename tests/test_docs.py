"""The documentation cannot rot: every ```python block of the docs runs, and the site builds with --strict.

Each page's ```python blocks are concatenated in order and executed in a fresh namespace (one
page, one script). Blocks that must not run here (shell commands, ``torchrun``) are written as
```bash or ```text. The site build runs only where mkdocs is installed (``make docs`` installs it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
#: pages whose examples need an optional package (skipped with the reason when it is missing)
NEEDS = {
    "tutorials/transformer.md": ["transformers"],
    "tutorials/monitoring.md": ["pytorch_lightning", "transformers", "accelerate"],  # the HF Trainer needs accelerate
}


def pages_with_code() -> list[str]:
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text()))


def test_the_tutorials_have_code():
    pages = pages_with_code()
    tutorials = ("top-eigenvalues", "density", "gauss-newton-split", "per-layer", "transformer", "monitoring")
    tutorials += ("torchrun",)
    for page in ["getting-started.md", "concepts.md", *(f"tutorials/{t}.md" for t in tutorials)]:
        assert page in pages, f"{page} has no ```python block"


def test_no_python_hides_behind_another_fence():
    """Only ```python blocks run: Python written as ```py, ```python3 or ```pycon would escape the test."""
    for page in DOCS.rglob("*.md"):
        fences = set(re.findall(r"^```(\S*)", page.read_text(), flags=re.M))
        hidden = fences & {"py", "python3", "pycon", "ipython"}
        assert not hidden, f"{page.relative_to(DOCS)} has ```{hidden.pop()} blocks: write ```python (runs) or ```text"


def test_readme_links_the_docs_after_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert head.index("make demo") < head.index("make test") < head.index("(docs/index.md)")
    assert "make docs" in head


@pytest.mark.parametrize("page", pages_with_code())
def test_page_examples_run(page, tmp_path, monkeypatch, capsys):
    for module in NEEDS.get(page, []):
        pytest.importorskip(module, reason=f"{page} needs {module}")
    code = "\n".join(BLOCK.findall((DOCS / page).read_text()))
    monkeypatch.chdir(tmp_path)  # files the examples write land in a temporary directory
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one intra-op thread per test process
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the examples' own warnings (e.g. HF deprecations) are not the test
            exec(compile(code, str(DOCS / page), "exec"), {"__name__": f"docs:{page}"})
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip(), f"{page} printed nothing: its examples show no result"


def test_gallery_lists_every_reproduction_and_renders_committed_runs(tmp_path):
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        import gallery
    finally:
        sys.path.pop(0)
    from curvscope.experiments import registry

    empty = gallery.render(tmp_path)
    for name in registry.names():
        if registry.get(name).papers:
            assert f"curvscope reproduce {name} --scale full" in empty
            assert f"docs/reproductions/{name}/" in empty
    run = tmp_path / "reproductions" / "sagun2016"
    run.mkdir(parents=True)
    (run / "report.html").write_text("<html></html>")
    (run / "results.json").write_text(
        '{"wall_seconds": 1830.0, "finished": "2026-12-02T10:00:00", "claims": '
        '[{"name": "outliers_track_classes", "kind": "paper", "verdict": "fail", '
        '"statement": "C outliers | C classes", "paper_value": "C outliers (Fig. 3)", '
        '"measured": {"gap": 7, "ratio": 1.234567}}], '
        '"timing": {"wall_seconds": 1830.0, "cpu_seconds": 1500.0, "threads": 1, "segments": 2}}'
    )
    (run / "config.json").write_text('{"experiment": "sagun2016", "scale": "full", "seed": 0}')
    (tmp_path / "reproductions" / "extra-run").mkdir()
    text = gallery.render(tmp_path)
    assert "[report](sagun2016/report.html)" in text and "scale `full`, wall time 30.5 min" in text
    assert "(CPU 25.0 min, 1 thread(s), 2 segments)" in text
    row = "| `outliers_track_classes` | paper | **fail** | C outliers \\| C classes | C outliers (Fig. 3) "
    row += '| {"gap": 7, "ratio": 1.235} |'
    assert row in text
    assert "## extra-run" in text and "no report or results.json yet" in text
    assert "| [sagun2016](sagun2016/report.html) | `full` | 30.5 min | 0 of 1 | 1 fail |" in text
    assert "| extra-run | `?` | not recorded | 0 of 0 | no claims |" in text
    assert "## Committed runs" not in empty


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (`make docs` installs it)")
def test_site_builds_strict_with_a_committed_report(tmp_path):
    """``mkdocs build --strict`` of the docs as they are, plus a full-scale run committed under reproductions/."""
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "src").symlink_to(ROOT / "src")
    run = tmp_path / "docs" / "reproductions" / "sagun2016"
    (run / "figures").mkdir(parents=True, exist_ok=True)
    (run / "report.html").write_text("<html><body>report</body></html>")
    (run / "figures" / "spectrum.png").write_bytes(b"\x89PNG")
    (run / "config.json").write_text('{"experiment": "sagun2016", "scale": "full", "seed": 0}')
    (run / "results.json").write_text(
        '{"wall_seconds": 95.0, "claims": [{"name": "bulk", "kind": "paper", "passed": true}]}'
    )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "getting-started.html", "api/operators.html", "faults.html", "science.html"):
        assert (site / page).exists(), page
    assert 'id="curvscope.operators.Hessian"' in (site / "api" / "operators.html").read_text()
    gallery = (site / "reproductions" / "index.html").read_text()
    assert 'href="sagun2016/report.html"' in gallery and (site / "reproductions" / "sagun2016" / "report.html").exists()
    assert "wall time 1.6 min" in gallery and "<strong>pass</strong>" in gallery
