"""Reports: a terminal table, JSON, and a self-contained HTML page with plots.

Plots are matplotlib PNGs embedded as base64, so the HTML is one file that opens
anywhere without a server or a build step.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Mapping

from rich.table import Table


def results_table(out: Mapping[str, Any], title: str | None = None) -> Table:
    """Metrics as rows, models as columns (fits a terminal); the best of each row is bold."""
    results = out["results"]
    metrics = sorted({m for r in results.values() for m in r}, key=_metric_order)
    table = Table(title=title or f"{out['settings']['protocol']} · {out['settings']['dataset']}")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for m in metrics:
        vals = [r.get(m) for r in results.values()]
        known = [v for v in vals if v is not None]
        if not known:
            continue
        best = min(known) if _lower_is_better(m) else max(known)
        cells = []
        for v in vals:
            s = "—" if v is None else (f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}")
            cells.append(f"[bold]{s}[/]" if v is not None and v == best and len(known) > 1 else s)
        table.add_row(m, *cells)
    return table


def tuning_lines(out: Mapping[str, Any]) -> list[str]:
    """One line per model saying how its hyperparameters were chosen (or which fit an engine made).

    Examples
    --------
    >>> out = {"tuning": {"ease": {"grid": [{"l2": 50.0}, {"l2": 500.0}], "scores": [0.1, 0.2],
    ...        "chosen": {"l2": 500.0}, "metric": "ndcg@10", "seconds": 3.0}}}
    >>> tuning_lines(out)
    ['ease: l2=500.0 (validation ndcg@10 0.2000, best of 2, 3.0 s)']
    """
    lines = []
    for name, t in (out.get("tuning") or {}).items():
        if "chosen" in t:
            chosen = ", ".join(f"{k}={v}" for k, v in t["chosen"].items())
            best = max((v for v in t["scores"] if v is not None), default=None)
            score = "—" if best is None else f"{best:.4f}"
            lines.append(
                f"{name}: {chosen} (validation {t['metric']} {score}, best of {len(t['grid'])}, {t['seconds']} s)"
            )
        elif "engine_fit" in t:
            note = "" if t.get("tune_supported") or not t.get("tune_requested") else " (engine has no fit(tune=...))"
            conf = t.get("configuration")
            if conf:
                weights = ", ".join(f"{k} {v:g}" for k, v in sorted(conf["weights"].items(), key=lambda kv: -kv[1]))
                note += (f" (validation {conf['score']:.4f} vs {conf['default_score']:.4f} at the start, "
                         f"{conf['n_trials']} trials, {conf['seconds']:.0f} s; weights {weights})")
            lines.append(f"{name}: engine.{t['engine_fit']}{note}")
    return lines


def _lower_is_better(m: str) -> bool:
    return m.endswith("_ms") or m.endswith("_s")


def _metric_order(m: str) -> tuple[int, str]:
    head = m.split("@")[0]
    order = ["ndcg", "recall", "map", "hr", "mrr", "coverage", "novelty", "diversity"]
    return (order.index(head) if head in order else len(order), m)


def write_json(out: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(out, indent=2, default=float))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(out: Mapping[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    results = out["results"]
    names = list(results)
    headline = [m for m in next(iter(results.values()), {}) if "@" in m and "_" not in m]
    if headline:
        fig, axes = plt.subplots(1, len(headline), figsize=(3.2 * len(headline), 3.2), squeeze=False)
        for ax, m in zip(axes[0], headline):
            vals = [results[n].get(m) or 0.0 for n in names]
            colors = ["#d9480f" if n.startswith("liverec") else "#868e96" for n in names]
            ax.barh(names, vals, color=colors)
            ax.set_title(m)
            ax.invert_yaxis()
            for y, v in enumerate(vals):
                ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        fig.suptitle("quality per model (liverec in orange)")
        plots.append(("Quality per model", _png(fig)))
    curves = out.get("curves") or {}
    if curves:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for n, pts in curves.items():
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=n, lw=2 if n.startswith("liverec") else 1)
        ax.set_xlabel("stream events")
        ax.set_ylabel("HR@k (rolling window)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        plots.append(("Stream hit rate over time", _png(fig)))
    lat = {n: v for n, v in (out.get("latencies_ms") or {}).items() if v}
    if lat:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for n, v in lat.items():
            q = v["quantiles"]
            ax.plot(q, [i / 100 for i in range(len(q))], label=n, lw=2 if n.startswith("liverec") else 1)
        ax.set_xscale("log")
        ax.set_xlabel("recommend latency (ms, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        plots.append(("Latency distribution (CDF)", _png(fig)))
    sim = out.get("simulator")
    if sim:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for n, pts in sim.items():
            ax.plot(range(len(pts)), pts, label=n)
        ax.set_xlabel("step")
        ax.set_ylabel("CTR")
        ax.legend(fontsize=8)
        plots.append(("Simulator CTR", _png(fig)))
    return plots


def write_html(out: Mapping[str, Any], path: str | Path) -> None:
    """A single-file HTML report: headline table, plots, settings."""
    s = out["settings"]
    results = out["results"]
    metrics = sorted({m for r in results.values() for m in r}, key=_metric_order)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    rows = []
    for name, r in results.items():
        cells = "".join(
            f"<td>{'—' if r.get(m) is None else f'{r[m]:.4f}'}</td>" for m in metrics
        )
        cls = ' class="ours"' if name.startswith("liverec") else ""
        rows.append(f"<tr{cls}><th>{html.escape(name)}</th>{cells}</tr>")
    tuned = "".join(f"<li>{html.escape(line)}</li>" for line in tuning_lines(out))
    tuned = f"<h2>Hyperparameters</h2><ul>{tuned}</ul>" if tuned else ""
    figs = "".join(
        f'<figure><figcaption>{html.escape(t)}</figcaption><img alt="{html.escape(t)}" src="data:image/png;base64,{b}"></figure>'
        for t, b in _plots(out)
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>liverec eval · {html.escape(s['protocol'])} · {html.escape(s['dataset'])}</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#212529;padding:0 1rem}}
table{{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:1rem 0}}
td,th{{padding:.3rem .6rem;border-bottom:1px solid #dee2e6;text-align:right}}
tbody th{{text-align:left}} tr.ours{{background:#fff4e6}}
figure{{margin:1.5rem 0}} img{{max-width:100%}} figcaption{{font-weight:600;margin-bottom:.4rem}}
details pre{{background:#f8f9fa;padding:1rem;overflow:auto;font-size:12px}}
</style></head><body>
<h1>liverec evaluation: {html.escape(s['protocol'])} protocol on {html.escape(s['dataset'])}</h1>
<p>{s['n_users']} users, {s['n_items']} items, {s['n_events']} events; k = {s['k']}; seed {s['seed']};
encoder {html.escape(str(s['encoder']))}; run time {s['run_seconds']} s.</p>
<table><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>
{tuned}
{figs}
<details><summary>All settings</summary><pre>{html.escape(json.dumps(s, indent=2))}</pre></details>
</body></html>"""
    Path(path).write_text(page)


def write_simulation_html(out: Mapping[str, Any], path: str | Path) -> None:
    """A single-file HTML report of ``liverec simulate``: CTR curves per agent, the table, settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, pol = out["settings"], out["policies"]
    steps = s.get("steps") or 1
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for name, p in pol.items():
        curve = p.get("curve") or []
        if curve:
            xs = [(i + 0.5) * steps / len(curve) for i in range(len(curve))]
            ax.plot(xs, curve, label=name, lw=2.2 if name in ("realtime", "liverec") else 1.2)
    if s.get("drift_at") is not None:
        ax.axvline(s["drift_at"], color="#868e96", ls="--", lw=1)
        ax.text(s["drift_at"], ax.get_ylim()[1], " taste shift", va="top", fontsize=8, color="#495057")
    ax.set_xlabel("agent step (slates served)")
    ax.set_ylabel("CTR (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    curves = _png(fig)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(pol)))
    names = list(pol)
    ctr = [pol[n]["ctr"] or 0.0 for n in names]
    err = [[max(0.0, c - (pol[n]["ctr_ci95"][0] or c)) for n, c in zip(names, ctr)],
           [max(0.0, (pol[n]["ctr_ci95"][1] or c) - c) for n, c in zip(names, ctr)]]
    ax.barh(names, ctr, xerr=err, color=["#d9480f" if n.startswith("realtime") else "#868e96" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("cumulative CTR with 95% CI over seeds")
    bars = _png(fig)

    def f(x: Any, fmt: str = ".4f") -> str:
        return "—" if x is None else format(x, fmt)

    rows = "".join(
        f"<tr><th>{html.escape(n)}</th><td>{f(p['ctr'])}</td><td>[{f(p['ctr_ci95'][0])}, {f(p['ctr_ci95'][1])}]</td>"
        f"<td>{f(p.get('ctr_before_drift'))}</td><td>{f(p.get('ctr_after_drift'))}</td>"
        f"<td>{f(p.get('recovery_events'), '.1f')}</td><td>{f(p.get('recovery_clicks'), '.1f')}</td>"
        f"<td>{f(p.get('first_click_slates'), '.1f')}</td></tr>"
        for n, p in pol.items()
    )
    ratios = "".join(
        f"<li>{html.escape(k)}: {f(r['ratio'], '.3f')} (95% CI [{f(r['ci95'][0], '.3f')}, {f(r['ci95'][1], '.3f')}])</li>"
        for k, r in (out.get("ratios") or {}).items()
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>liverec simulate</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#212529;padding:0 1rem}}
table{{border-collapse:collapse;font-variant-numeric:tabular-nums}}td,th{{padding:.3rem .6rem;border-bottom:1px solid #dee2e6;text-align:right}}
tbody th{{text-align:left}}img{{max-width:100%}}figcaption{{font-weight:600}}
details pre{{background:#f8f9fa;padding:1rem;overflow:auto;font-size:12px}}</style></head><body>
<h1>Simulated users on the book catalog</h1>
<p>{s.get('catalog_size')} books, {s.get('users')} users, {len(s.get('seeds', [])) or s.get('seeds')} seeds × {steps} steps, k = {s.get('k')}.</p>
<figure><figcaption>CTR over time</figcaption><img alt="CTR over time per agent" src="data:image/png;base64,{curves}"></figure>
<figure><figcaption>Cumulative CTR</figcaption><img alt="cumulative CTR per agent" src="data:image/png;base64,{bars}"></figure>
<table><thead><tr><th>agent</th><th>CTR</th><th>95% CI</th><th>pre-shift</th><th>post-shift</th><th>recovery (slates)</th><th>clicks before recovery</th><th>slates to 1st click</th></tr></thead>
<tbody>{rows}</tbody></table><ul>{ratios}</ul>
<details><summary>All settings</summary><pre>{html.escape(json.dumps(s, indent=2, default=str))}</pre></details>
</body></html>"""
    Path(path).write_text(page)
