"""The sections of ``benchmarks/RESULTS.md`` about the hardware a server runs on: the GPU runtime and
GPU serving (measured on the device machine, when one was lent) and the data plane's worker processes.
Called by :mod:`benchmarks.render_results`, which renders the whole report."""

from __future__ import annotations

from typing import Any

from benchmarks.render_tables import _ms, _table


def _gpu(d: dict[str, Any]) -> str:
    gpu = d.get("gpu", {})
    return (
        f"GPU: {gpu.get('name', '?')} (driver {gpu.get('driver', '?')}, {gpu.get('memory', '?')}), onnxruntime "
        f"{d['versions'].get('onnxruntime (loaded)', '?')}; the device machine of this workplace, not CI's."
    )


def gpu_runtime(d: dict[str, Any]) -> str:
    sessions = d["session"]
    rows = []
    for model, variants in sessions.items():
        for variant, figures in variants.items():
            batches = [k for k in figures if k.startswith("batch_")]
            cells = [f"{figures[b]['p50_ms']:.3f} / {figures[b]['rows_per_s']:,.0f}" for b in batches]
            rows.append((model, variant, *cells))
    batch_headers = [
        k.replace("batch_", "batch ")
        for k in next(iter(next(iter(sessions.values())).values()))
        if k.startswith("batch_")
    ]
    manager_rows = []
    for model, variants in d["manager"].items():
        for variant, figures in variants.items():
            for level in ("c1", "c64"):
                f = figures[level]
                manager_rows.append(
                    (
                        model,
                        variant,
                        level.replace("c", "c="),
                        f"{f['requests_per_s']:,.0f}",
                        _ms(f["p50_ms"]),
                        _ms(f["p99_ms"]),
                    )
                )
    return "\n\n".join(
        [
            _gpu(d),
            "`InferenceSession.run`, p50 ms / rows per second, one run at a time:",
            _table(("model", "provider", *batch_headers), rows),
            "Through `ModelManager.infer` (validation, the dynamic batcher, the runtime), closed-loop callers "
            "of one row each in one process:",
            _table(("model", "provider", "callers", "req/s", "p50 ms", "p99 ms"), manager_rows),
        ]
    )


def gpu_serving(d: dict[str, Any]) -> str:
    rows = []
    for provider, models in d["results"].items():
        for model, levels in models.items():
            cells = [f"{r['throughput_rps']:,.0f} ({r['p99_ms']:.2f})" for r in levels.values()]
            rows.append((model, provider, *cells))
    levels = next(iter(next(iter(d["results"].values())).values())).keys()
    return "\n\n".join(
        [
            _gpu(d),
            "`ModelInfer` over loopback gRPC to `python -m data_plane` (defaults), one row per request, "
            "requests/s (p99 ms). The load generator is one Python process on the same machine, which "
            "caps every row near 3–5k req/s; the GPU's gain shows where the model's arithmetic dominates.",
            _table(("model", "provider", *(f"c={c}" for c in levels)), rows),
        ]
    )


def worker_scaling(d: dict[str, Any]) -> str:
    setup = d["setup"]
    rows = [
        (
            n,
            f"{r['throughput_rps']:,.0f}",
            _ms(r["p50_ms"]),
            _ms(r["p99_ms"]),
            r["errors"],
            f"{r['scaling']:.2f}×",
        )
        for n, r in d["results"].items()
    ]
    return "\n\n".join(
        [
            f"`ModelInfer` (the serving benchmark's MLP, one row per request, CPU provider) against "
            f"`python -m data_plane --workers N` on one port (SO_REUSEPORT); {setup['concurrency']} callers "
            f"from {setup['client_processes']} client processes, {setup['channels_per_client']} connections "
            f"each; servers interleaved, {setup['slices']} slices of {setup['slice_s']:g} s each.",
            _table(("workers", "req/s", "p50 ms", "p99 ms", "errors", "vs 1 worker"), rows),
        ]
    )
