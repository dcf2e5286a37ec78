"""A self-contained ``report.html`` from a run directory: figures inlined, claims tables, config.

Claims are shown by kind (``docs/science.md``, "Claim kinds and verdicts"): paper claims first,
then the project's regression guards, then the sanity checks of the implementation in their
own section; each row shows its kind and verdict (pass, fail, inconclusive, reported).
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from curvscope.experiments.run import claim_kind, claim_verdict, trusted
from curvscope.io import atomic_write_bytes, read_json
from curvscope.report.figures import ArrayResolver, draw

CSS = """
body{font-family:system-ui,-apple-system,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{border:1px solid #ddd;padding:.35em .5em;
vertical-align:top;text-align:left}th{background:#f4f4f4}.pass{background:#e3f6e3}.fail{background:#fde2e2}
.info{background:#eef2fb}.inconclusive{background:#fff4d6}.note{background:#fff4d6;border:1px solid #e0b400;
padding:.5em}figure{display:inline-block;width:48%;margin:.5%;vertical-align:top}
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


#: CSS class and label of each verdict.
VERDICT_STYLE = {
    "pass": ("pass", "PASS"),
    "fail": ("fail", "FAIL"),
    "inconclusive": ("inconclusive", "INCONCLUSIVE"),
    "reported": ("info", "reported"),
}
SECTIONS = (
    ("paper", "Paper claims", "Statements and criteria from the papers (cited in 'source')."),
    ("regression", "Regression guards", "Values measured by this project, kept as guards: not verdicts on the papers."),
    ("sanity", "Sanity checks", "Identities of the implementation (H = G + H_res, G ⪰ 0, Weyl bounds, certificates)."),
)


def claim_counts(claims: list[dict]) -> dict[str, dict[str, int]]:
    """``{kind: {verdict: count}}`` over stored claims."""
    out = {kind: dict.fromkeys(VERDICT_STYLE, 0) for kind, _, _ in SECTIONS}
    for c in claims:
        out.setdefault(claim_kind(c), dict.fromkeys(VERDICT_STYLE, 0))[claim_verdict(c)] += 1
    return out


def _claims_html(claims: list[dict]) -> str:
    parts = []
    for kind, title, blurb in SECTIONS:
        rows = []
        for c in (c for c in claims if claim_kind(c) == kind):
            cls, word = VERDICT_STYLE[claim_verdict(c)]
            inputs = c.get("inputs") or {}
            bad = [f"{k}: {v}" for k, v in inputs.items() if word == "INCONCLUSIVE" and not trusted(v)]
            extra = f"<br><small>untrusted inputs: {html.escape('; '.join(bad))}</small>" if bad else ""
            rows.append(
                f'<tr class="{cls}"><td>{html.escape(c["name"])}</td><td>{kind}</td>'
                f"<td>{html.escape(c.get('statement', ''))}</td><td>{_fmt(c.get('measured'))}</td>"
                f"<td>{html.escape(c.get('criterion', ''))}</td><td>{word}{extra}</td>"
                f"<td>{html.escape(c.get('source', ''))}</td></tr>"
            )
        if rows:
            parts.append(
                f'<h2>{title}</h2><p>{html.escape(blurb)}</p><table id="claims-{kind}"><tr><th>claim</th><th>kind</th>'
                "<th>statement</th><th>measured</th><th>criterion</th><th>verdict</th><th>source</th></tr>"
                + "".join(rows)
                + "</table>"
            )
    return "".join(parts) or "<h2>Claims</h2><p>(no claims)</p>"


def _paper_vs_ours_html(claims: list[dict]) -> str:
    """The paper claims whose paper value is known: the paper's finding beside ours, and the verdict."""
    rows = []
    for c in claims:
        if claim_kind(c) != "paper" or not c.get("paper_value"):
            continue
        cls, word = VERDICT_STYLE[claim_verdict(c)]
        rows.append(
            f'<tr class="{cls}"><td>{html.escape(c["name"])}</td><td>{html.escape(c["paper_value"])}</td>'
            f"<td>{_fmt(c.get('measured'))}</td><td>{word}</td><td>{html.escape(c.get('source', ''))}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<h2>Paper vs ours</h2><p>What the paper reports for each paper claim, beside what this run measured.</p>"
        '<table id="paper-vs-ours"><tr><th>claim</th><th>paper</th><th>ours</th><th>verdict</th><th>source</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _counts_line(claims: list[dict]) -> str:
    counts = claim_counts(claims)
    pieces = []
    for kind, _, _ in SECTIONS:
        n = counts[kind]
        if sum(n.values()):
            pieces.append(f"{kind}: " + ", ".join(f"{v} {k}" for k, v in n.items() if v))
    return "; ".join(pieces) or "none"


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
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in results.get("notes", []))
    title = html.escape(results.get("title") or config.get("experiment", "curvscope run"))
    metrics = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in results.get("metrics", {}).items()
    )
    body = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{CSS}</style></head><body>
<h1>{title}</h1>
<p class="summary">{html.escape(results.get("summary", ""))}</p>
{notes}
<p class="summary"><b>Claims</b> ({html.escape(_counts_line(claims))}).</p>
{_paper_vs_ours_html(claims)}
{_claims_html(claims)}
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
