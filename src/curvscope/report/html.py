"""A self-contained ``report.html`` from a run directory: figures inlined, claims table, config."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from curvscope.io import atomic_write_bytes, read_json
from curvscope.report.figures import ArrayResolver, draw

CSS = """
body{font-family:system-ui,-apple-system,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{border:1px solid #ddd;padding:.35em .5em;
vertical-align:top;text-align:left}th{background:#f4f4f4}.pass{background:#e3f6e3}.fail{background:#fde2e2}
.info{background:#eef2fb}figure{display:inline-block;width:48%;margin:.5%;vertical-align:top}
figure img{width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}.summary{font-size:1.05em}
"""


# Marks on <body> how many figures decoded, so a headless browser test can check the page.
LOAD_CHECK = (
    "window.addEventListener('load',function(){var i=document.images,n=0;"
    "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}"
    "document.body.setAttribute('data-images-loaded',n);"
    "document.body.setAttribute('data-images-total',i.length);});"
)


def _verdict(passed) -> tuple[str, str]:
    if passed is None:
        return "info", "reported"
    return ("pass", "PASS") if passed else ("fail", "FAIL")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 12:
        value = [*value[:12], "…"]
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return html.escape(str(value))


def render(run_path: str | os.PathLike) -> Path:
    """Draw every figure of the run and write ``report.html``; returns its path.

    Raises:
        FileNotFoundError: when the directory has no ``results.json`` (not a run directory).
    """
    run = Path(run_path)
    if not (run / "results.json").exists():
        raise FileNotFoundError(f"{run} is not a curvscope run directory (no results.json)")
    results = read_json(run / "results.json")
    config = read_json(run / "config.json") if (run / "config.json").exists() else {}
    env = read_json(run / "environment.json") if (run / "environment.json").exists() else {}
    resolve = ArrayResolver(run)

    figures_html = []
    for spec in results.get("figures", []):
        files = draw(spec, resolve, run / "figures")
        data = base64.b64encode(files["png"].read_bytes()).decode()
        caption = html.escape(spec.get("caption") or spec.get("title", ""))
        figures_html.append(
            f'<figure id="fig-{html.escape(spec["name"])}"><img alt="{html.escape(spec.get("title", ""))}" '
            f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
        )

    claims = results.get("claims", [])
    rows = []
    for c in claims:
        cls, word = _verdict(c.get("passed"))
        rows.append(
            f'<tr class="{cls}"><td>{html.escape(c["name"])}</td><td>{html.escape(c.get("statement", ""))}</td>'
            f"<td>{_fmt(c.get('measured'))}</td><td>{html.escape(c.get('criterion', ''))}</td><td>{word}</td>"
            f"<td>{html.escape(c.get('source', ''))}</td></tr>"
        )
    passed = sum(1 for c in claims if c.get("passed") is True)
    failed = sum(1 for c in claims if c.get("passed") is False)
    title = html.escape(results.get("title") or config.get("experiment", "curvscope run"))
    metrics = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in results.get("metrics", {}).items()
    )
    body = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{CSS}</style></head><body>
<h1>{title}</h1>
<p class="summary">{html.escape(results.get("summary", ""))}</p>
<p class="summary"><b>Claims:</b> {passed} passed, {failed} failed, {len(claims) - passed - failed} reported only.</p>
<h2>Claims</h2>
<table id="claims"><tr><th>claim</th><th>statement</th><th>measured</th><th>criterion</th><th>verdict</th>
<th>source</th></tr>{"".join(rows)}</table>
<h2>Figures</h2>
{"".join(figures_html) or "<p>(no figures)</p>"}
<h2>Measurements</h2><table>{metrics}</table>
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
<h2>Environment</h2><pre>{html.escape(json.dumps(env, indent=2))}</pre>
<script>{LOAD_CHECK}</script>
</body></html>"""
    out = run / "report.html"
    atomic_write_bytes(out, body.encode())
    return out
