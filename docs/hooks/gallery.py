"""MkDocs hook: the reproduction gallery, rendered at build time from the registry and the committed reports.

``docs/reproductions/index.md`` holds the marker ``<!-- gallery -->``; this hook replaces it with
one section per registered paper reproduction (title, papers, what the quick scale runs, the
command) and, for every run directory committed under ``docs/reproductions/<name>/``, its report
link, wall time and claims table read from its ``results.json``. Directories that match no
registered experiment are listed too, so whatever is committed there appears on the page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MARKER = "<!-- gallery -->"
PAGE = "reproductions/index.md"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "not recorded"
    if not math.isfinite(s):
        return "not recorded"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _load(name: str, folder: Path) -> tuple[dict, str, list[str]]:
    """``(results, scale, links)`` of one committed run directory ``docs/reproductions/<name>/``."""
    links = []
    if (folder / "report.html").exists():
        links.append(f"[report]({name}/report.html)")
    results_file = folder / "results.json"
    if results_file.exists():
        links.append(f"[results.json]({name}/results.json)")
    try:
        results = json.loads(results_file.read_text()) if results_file.exists() else {}
    except (OSError, ValueError) as err:
        results = {}
        links.append(f"(results.json unreadable: {_cell(err)})")
    scale = results.get("scale", "?")
    try:  # a run directory keeps what was asked (experiment, scale, seed) in config.json
        scale = json.loads((folder / "config.json").read_text()).get("scale", scale)
    except (OSError, ValueError, AttributeError):
        pass
    return results, str(scale), links


def _verdict(claim: dict) -> str:
    passed = claim.get("passed")
    return claim.get("verdict") or ("reported" if passed is None else ("pass" if passed else "fail"))


def _compact(value: Any, limit: int = 140) -> str:
    """A claim's measured value as one short table cell (floats to 4 significant digits)."""

    def short(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.4g}")
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        if isinstance(v, list):
            return [short(x) for x in v]
        return v

    text = json.dumps(short(value), ensure_ascii=False, default=str) if value is not None else "—"
    return _cell(text if len(text) <= limit else text[: limit - 1] + "…")


def _timing(results: dict) -> str:
    """Wall time, and CPU time with the thread count when the run recorded them (summed over resumptions)."""
    timing = results.get("timing") or {}
    text = f"wall time {_duration(results.get('wall_seconds'))}"
    if timing.get("cpu_seconds") is not None:
        text += f" (CPU {_duration(timing['cpu_seconds'])}, {timing.get('threads', '?')} thread(s)"
        segments = timing.get("segments", 1)
        text += f", {segments} segments)" if segments and segments > 1 else ")"
    return text


def _run_section(name: str, folder: Path) -> list[str]:
    """The lines for one committed run directory ``docs/reproductions/<name>/``: its paper-vs-ours table."""
    results, scale, links = _load(name, folder)
    lines = [
        f"**Committed run** ({', '.join(links) or 'no report or results.json yet'}): scale `{scale}`, "
        f"{_timing(results)}, finished {results.get('finished', 'not recorded')}."
    ]
    claims = results.get("claims") or []
    if claims:
        lines += ["", "| claim | kind | verdict | statement | paper | ours |", "| --- | --- | --- | --- | --- | --- |"]
        for c in claims:
            lines.append(
                f"| `{_cell(c.get('name', '?'))}` | {_cell(c.get('kind', 'paper'))} | **{_cell(_verdict(c))}** "
                f"| {_cell(c.get('statement', ''))} | {_cell(c.get('paper_value') or '—')} "
                f"| {_compact(c.get('measured'))} |"
            )
    return lines


def _summary(committed: dict[str, Path]) -> list[str]:
    """One row per committed run: scale, wall time, and the verdicts of its paper claims and of all claims."""
    if not committed:
        return []
    lines = ["## Committed runs", "", "| run | scale | wall time | paper claims passed | all verdicts |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, folder in committed.items():
        results, scale, _ = _load(name, folder)
        claims = results.get("claims") or []
        paper = [c for c in claims if c.get("kind", "paper") == "paper"]
        passed = sum(_verdict(c) == "pass" for c in paper)
        counts: dict[str, int] = {}
        for c in claims:
            counts[_verdict(c)] = counts.get(_verdict(c), 0) + 1
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no claims"
        title = f"[{name}]({name}/report.html)" if (folder / "report.html").exists() else name
        lines.append(f"| {title} | `{scale}` | {_duration(results.get('wall_seconds'))} | {passed} of {len(paper)} "
                     f"| {verdicts} |")  # fmt: skip
    return [*lines, ""]


def render(docs_dir: Path) -> str:
    """The gallery's Markdown."""
    from curvscope.experiments import registry

    root = docs_dir / "reproductions"
    committed = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()} if root.exists() else {}
    out: list[str] = _summary(committed)
    for name in registry.names():
        recipe = registry.get(name)
        if not recipe.papers:  # the demo is no reproduction
            continue
        out += [f"## {recipe.title}", "", f"*{_cell(recipe.papers)}* — `{name}`", "", _cell(recipe.summary), ""]
        out += ["```bash", f"curvscope reproduce {name}                # quick scale",
                f"curvscope reproduce {name} --scale full   # full scale", "```", ""]  # fmt: skip
        settings = recipe.params("quick")
        if settings:
            out += ['??? info "Quick-scale settings"', "", "    ```json"]
            out += ["    " + line for line in json.dumps(settings, indent=2, default=str).splitlines()]
            out += ["    ```", ""]
        if name in committed:
            out += _run_section(name, committed.pop(name))
        else:
            out.append(f"*Full-scale report: not committed yet (it will appear under `docs/reproductions/{name}/`).*")
        out.append("")
    for name, folder in committed.items():  # run directories of no registered experiment
        out += [f"## {name}", ""]
        out += _run_section(name, folder)
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker of the gallery page with the rendered gallery."""
    if page.file.src_uri != PAGE or MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(Path(config["docs_dir"])))
