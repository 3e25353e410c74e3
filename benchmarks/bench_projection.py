"""Projection benchmark: our TemporalProjector against PCA, independent UMAP and AlignedUMAP, side by side.

For each run (the digits run, 30 epochs, and the synthetic run, 50,000
samples x 512-d x 50 epochs) it

1. projects every epoch with :class:`TemporalProjector` (``n_jobs`` workers),
   timing the whole projection and sampling the resident memory of the process
   and its workers twice a second (peak of the sum);
2. projects a selection of epochs and samples with each baseline (all of them
   on digits; on the 50k run, umap-learn would take about an hour, so UMAP runs
   on a few consecutive epochs of all samples and AlignedUMAP, which holds every
   epoch in memory, on a subsample);
3. evaluates every method with the same code on the same epochs and samples:
   kNN preservation (k=15, faiss, the same query samples), prediction
   preservation (each baseline's layout gets an inverse map trained exactly like
   ours), temporal consistency per pair of consecutive epochs (Spearman
   correlation across samples of the movement in embedding space and on the
   canvas) and per sample (Spearman across epochs, as in DVI), time per epoch;
4. writes ``benchmarks/results/projection.json``, ``projection.md`` and
   ``projection_<run>.png`` (frames of a few epochs: ours over its decision
   territories, the baselines as plain scatter plots).

Usage::

    timetravel bench projection                    # both runs (creates them with `timetravel train` if missing)
    timetravel bench projection --datasets digits  # one run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, write_results  # noqa: E402

from timetravel._random import rng_for, subsample  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("ours", "pca", "umap", "aligned_umap")
RUN_SPECS = {
    "digits": dict(dataset="digits", noise="symmetric:0.2", epochs=30),
    "synthetic": dict(dataset="synthetic", noise="symmetric:0.2", epochs=50, n_samples=50000, embedding_dim=512),
}
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip

logger = logging.getLogger("bench_projection")


# --------------------------------------------------------------------------- measuring


class PeakMemory:
    """Samples the resident memory of this process plus its children (joblib workers) in a thread."""

    def __init__(self, interval: float = 0.5) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak_total = self.peak_main = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                main = self._proc.memory_info().rss
                children = 0
                for child in self._proc.children(recursive=True):
                    try:
                        children += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_main = max(self.peak_main, main)
                self.peak_total = max(self.peak_total, main + children)
            except psutil.Error:
                pass
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def ensure_run(name: str, path: Path, make: bool):
    """Open the run, creating it with `timetravel train` when missing and allowed."""
    from timetravel.store import RunStore

    if not (path / "run.json").exists():
        if not make:
            raise SystemExit(f"{path}: no run; create it with `timetravel train` or pass --make-runs")
        from timetravel.train import train_run

        logger.info("creating %s with timetravel train %s", path, RUN_SPECS[name])
        train_run(out=path, **RUN_SPECS[name])
    return RunStore(path, verify="headers")


# --------------------------------------------------------------------------- evaluation


def evaluate(store, layouts: dict[int, np.ndarray], rows: np.ndarray, query: np.ndarray, pp_epochs, decoder,
             inverse_maps=None) -> dict[str, Any]:
    """The same metrics for any method, on ``rows`` of the training set, over the epochs of ``layouts``.

    ``query`` indexes into ``rows`` (kNN-preservation queries). Prediction
    preservation uses ``inverse_maps[e]`` when given (ours), else an inverse
    map trained on the layout with the same settings as ours. With
    ``inverse_maps`` it also measures the ceiling of prediction preservation
    for any neighbourhood-preserving layout with a smooth inverse map: how
    often a sample's prediction is the majority prediction of its 15 nearest
    neighbours in embedding space.
    """
    from timetravel.numerics import knn_of_rows

    from scipy.stats import spearmanr

    from timetravel.projection import knn_preservation, prediction_preservation, temporal_consistency
    from timetravel.projection.metrics import displacement
    from timetravel.projection.model import fit_inverse_map, torch_threads

    epochs = sorted(layouts)
    knn, pp, tc, ceiling = [], [], [], []
    moved_x, moved_y = [], []
    for i, e in enumerate(epochs):
        x = np.asarray(store.embedding(e)[rows], dtype=np.float32)
        knn.append(knn_preservation(x, layouts[e], query, k=15))
        if e in pp_epochs:
            pred = np.asarray(store.logits(e)[rows]).argmax(axis=1)
            if inverse_maps:
                votes = pred[knn_of_rows(x, query, 15)]
                majority = np.array([np.bincount(v).argmax() for v in votes])
                ceiling.append(float(np.mean(majority == pred[query])))
            head = store.head(e)
            with torch_threads(1):
                inv = inverse_maps[e] if inverse_maps else fit_inverse_map(x, layouts[e], pred, head, decoder, seed=e)
                pp.append(prediction_preservation(inv.logits(layouts[e], *head).argmax(axis=1), pred))
        if i:
            prev = epochs[i - 1]
            x_prev = np.asarray(store.embedding(prev)[rows], dtype=np.float32)
            tc.append(temporal_consistency(x_prev, x, layouts[prev], layouts[e]))
            moved_x.append(displacement(x_prev, x))
            moved_y.append(displacement(layouts[prev], layouts[e]))
    per_sample = float("nan")
    if len(moved_x) >= 3:
        mx, my = np.stack(moved_x, axis=1), np.stack(moved_y, axis=1)
        ok = (np.ptp(mx, axis=1) > 0) & (np.ptp(my, axis=1) > 0)
        per_sample = float(np.mean([spearmanr(a, b).statistic for a, b in zip(mx[ok], my[ok])]))
    return {
        "epochs": epochs,
        "n_samples": int(len(rows)),
        "knn_preservation": float(np.mean(knn)),
        "prediction_preservation": float(np.mean(pp)) if pp else None,
        "prediction_preservation_epochs": sorted(int(e) for e in pp_epochs if e in layouts),
        "prediction_ceiling_knn_majority": float(np.mean(ceiling)) if ceiling else None,
        "prediction_per_epoch": [round(v, 4) for v in pp],
        "prediction_ceiling_per_epoch": [round(v, 4) for v in ceiling],
        "temporal_consistency": float(np.nanmean(tc)) if tc else None,
        "temporal_consistency_per_sample": per_sample,
        "knn_per_epoch": [round(v, 4) for v in knn],
        "temporal_per_epoch": [round(v, 4) for v in tc],
    }


def ours_summary(store, projector) -> dict[str, Any]:
    """Mean and worst per-epoch metrics of our projection over all epochs and samples (from its manifest)."""
    out: dict[str, Any] = {}
    for split in ("train", "heldout"):
        for name in ("knn_preservation", "prediction_preservation", "reconstruction_error", "temporal_consistency"):
            values = [m[split][name] for m in projector.metrics_.values() if split in m and m[split][name] is not None]
            if values:
                out[f"{split}_{name}_mean"] = float(np.mean(values))
                worst = max(values) if name == "reconstruction_error" else min(values)
                out[f"{split}_{name}_worst"] = float(worst)
    return out


# --------------------------------------------------------------------------- pictures


def _panel(xy: np.ndarray, colors: np.ndarray, size: int, territory=None, extent=None):
    from PIL import Image, ImageDraw

    if extent is None:
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        pad = (hi - lo) * 0.05 + 1e-9
        extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    x0, x1, y0, y1 = extent
    if territory is not None:
        palette = np.array(PALETTE * (1 + int(territory.classes.max()) // len(PALETTE)), dtype=np.float64)
        strength = 0.15 + 0.35 * territory.confidence[..., None] / 255.0
        rgb = 255 * (1 - strength) + palette[territory.classes] * strength
        img = Image.fromarray(np.flipud(rgb).astype(np.uint8)).resize((size, size), Image.NEAREST)
    else:
        img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    px = (xy[:, 0] - x0) / (x1 - x0) * (size - 1)
    py = (1 - (xy[:, 1] - y0) / (y1 - y0)) * (size - 1)
    for x, y, c in zip(px, py, colors):
        draw.ellipse((x - 1.3, y - 1.3, x + 1.3, y + 1.3), fill=tuple(int(v) for v in c))
    return img


def frames_png(path: Path, store, methods: dict[str, dict[int, np.ndarray]], rows: np.ndarray, epochs, size=260):
    """One row per method, one column per epoch; ours drawn over its territories. Dots coloured by label."""
    from PIL import Image, ImageDraw

    shown = rows[subsample(len(rows), 4000, 0, "bench-projection-png")]
    colors = np.array(PALETTE * (1 + store.n_classes // len(PALETTE)))[store.labels[shown]]
    label_w, head_h = 110, 22
    sheet = Image.new("RGB", (label_w + size * len(epochs), head_h + size * len(methods)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, e in enumerate(epochs):
        draw.text((label_w + j * size + size // 2 - 20, 5), f"epoch {e}", fill="black")
    for i, (name, layouts) in enumerate(methods.items()):
        draw.text((5, head_h + i * size + size // 2), name, fill="black")
        for j, e in enumerate(epochs):
            if e not in layouts:
                continue
            pos = np.searchsorted(rows, shown)
            if name == "ours":
                terr = store.territory(e)
                panel = _panel(layouts[e][pos], colors, size, terr, terr.extent)
            else:
                panel = _panel(layouts[e][pos], colors, size)
            sheet.paste(panel, (label_w + j * size, head_h + i * size))
    sheet.save(path)


# --------------------------------------------------------------------------- one run


def bench_run(name: str, store, args) -> dict[str, Any]:
    from timetravel.projection import TemporalProjector, load_inverse_map
    from projection_baselines import baseline_layouts

    n, epochs = store.n_samples, store.epochs
    load_before = os.getloadavg()[0]
    projector = TemporalProjector(n_jobs=args.n_jobs, verbose=False, random_state=args.seed)
    with PeakMemory() as mem:
        started = time.perf_counter()
        projector.fit(store, overwrite=True)
        seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "run": str(store.path),
        "n_samples": n,
        "embedding_dim": store.embedding_dim,
        "n_epochs": len(epochs),
        "n_heldout": store.n_heldout,
        "ours_full": {
            "seconds_total": seconds,
            "seconds_per_epoch": seconds / len(epochs),
            "peak_rss_total_mb": mem.peak_total / 2**20,
            "peak_rss_main_mb": mem.peak_main / 2**20,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
            "n_jobs": args.n_jobs,
            **ours_summary(store, projector),
        },
    }
    ours_xy = {e: np.asarray(store.projection(e)) for e in epochs}
    big = n > args.full_baselines_up_to
    rng = rng_for(args.seed, "bench-projection-samples")  # not default_rng(seed): that picks the noisy samples
    query_all = np.sort(rng.choice(n, min(n, 2000), replace=False))
    decoder = projector.decoder_params(n)
    pp_every = max(1, len(epochs) // args.pp_epochs)
    # (epochs, rows, kNN queries, prediction-preservation epochs) per selection, and the methods run on it
    groups: dict[str, tuple[tuple, list[str]]] = {}
    wanted = [m for m in ("pca", "umap", "aligned_umap") if m in args.methods]
    if not big:
        groups["all epochs, all samples"] = ((epochs, np.arange(n), query_all, set(epochs[::pp_every])), wanted)
    else:
        sub = np.sort(rng.choice(n, min(n, args.aligned_samples), replace=False))
        sub_query = np.sort(rng.choice(len(sub), min(len(sub), 2000), replace=False))
        for start in args.window_starts:
            first = start % len(epochs)
            window = epochs[first : first + args.baseline_epochs]
            full = [m for m in wanted if m != "aligned_umap"]
            if full:
                groups[f"epochs {window[0]}-{window[-1]}, all {n} samples"] = (
                    (window, np.arange(n), query_all, set(window)), full)
            if "aligned_umap" in wanted:
                groups[f"epochs {window[0]}-{window[-1]}, {len(sub)} random samples"] = (
                    (window, sub, sub_query, set(window)), ["aligned_umap"])
    rows_table = []
    layouts_for_png: dict[str, dict[int, np.ndarray]] = {"ours": ours_xy}
    for note, ((sel_epochs, rows, query, pp_epochs), methods) in groups.items():
        inverse_maps = {e: load_inverse_map(store, e) for e in pp_epochs}
        stats = evaluate(store, {e: ours_xy[e][rows] for e in sel_epochs}, rows, query, pp_epochs, decoder,
                         inverse_maps)
        result.setdefault("ours", {})[note] = stats
        rows_table.append({"run": name, "method": "ours", "evaluated on": note,
                           "seconds/epoch": round(result["ours_full"]["seconds_per_epoch"], 2), **_cells(stats)})
        for method in methods:
            logger.info("%s: %s on %s", name, method, note)
            layouts, sec = baseline_layouts(method, store, sel_epochs, None if len(rows) == n else rows)
            stats = evaluate(store, layouts, rows, query, pp_epochs, decoder)
            result.setdefault(method, {})[note] = {"seconds_per_epoch": sec, **stats}
            rows_table.append({"run": name, "method": method, "evaluated on": note,
                               "seconds/epoch": round(sec, 2), **_cells(stats)})
            if len(rows) == n:
                layouts_for_png.setdefault(method, {}).update(layouts)
    png = args.results_dir / f"projection_{name}.png"
    if big:  # the first and last epoch of each baseline window
        shown_epochs = sorted({e for (sel, *_), _ in groups.values() for e in (sel[0], sel[-1])})
    else:
        shown_epochs = [epochs[i] for i in np.unique(np.linspace(0, len(epochs) - 1, 4).round().astype(int))]
    frames_png(png, store, layouts_for_png, np.arange(n), shown_epochs)
    result["png"] = png.name
    return {"result": result, "rows": rows_table}


def _cells(stats: dict) -> dict[str, Any]:
    def r(v):
        return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else round(v, 4)

    return {
        "kNN pres.": r(stats["knn_preservation"]),
        "pred. pres.": r(stats["prediction_preservation"]),
        "temporal (per epoch)": r(stats["temporal_consistency"]),
        "temporal (per sample)": r(stats["temporal_consistency_per_sample"]),
        "pred. ceiling": r(stats.get("prediction_ceiling_knn_majority")),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_projection", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,synthetic", help="comma-separated: digits, synthetic")
    parser.add_argument("--digits-run", type=Path, default=REPO / "runs" / "digits")
    parser.add_argument("--synthetic-run", type=Path, default=REPO / "runs" / "synthetic-50k")
    parser.add_argument("--make-runs", action="store_true", default=True,
                        help="create missing runs with `timetravel train` (default on)")
    parser.add_argument("--methods", default="pca,umap,aligned_umap", help="baselines to run")
    parser.add_argument("--n-jobs", type=int, default=2, help="workers of our projector (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-baselines-up-to", type=int, default=20000,
                        help="runs with at most this many samples get every baseline on every epoch")
    parser.add_argument("--baseline-epochs", type=int, default=5,
                        help="consecutive epochs the baselines project on bigger runs (default 5)")
    parser.add_argument("--window-starts", default="10,-5",
                        help="first epoch (index; negative counts from the end) of each baseline window on bigger "
                             "runs (default 10,-5: an early window and the last epochs, where the model memorises)")
    parser.add_argument("--aligned-samples", type=int, default=5000,
                        help="samples AlignedUMAP gets on bigger runs (default 5000)")
    parser.add_argument("--pp-epochs", type=int, default=10,
                        help="epochs (evenly spaced) on which every method's prediction preservation is measured")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    args.methods = set(args.methods.split(","))
    args.window_starts = [int(v) for v in args.window_starts.split(",")]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

    results: dict[str, Any] = {"machine_at_start": machine_info()}
    table = []
    for name in args.datasets.split(","):
        store = ensure_run(name, getattr(args, f"{name}_run"), args.make_runs)
        out = bench_run(name, store, args)
        results[name] = out["result"]
        table += out["rows"]

    full_rows = []
    for name in args.datasets.split(","):
        o = results[name]["ours_full"]
        umap_s = next((v["seconds_per_epoch"] for note, v in results[name].get("umap", {}).items()
                       if "all" in note), None)  # fmt: skip
        full_rows.append({
            "run": name,
            "samples x dim x epochs": f"{results[name]['n_samples']} x {results[name]['embedding_dim']} x "
                                      f"{results[name]['n_epochs']}",
            "total s": round(o["seconds_total"], 1),
            "s/epoch": round(o["seconds_per_epoch"], 2),
            "peak RSS MB (all procs)": round(o["peak_rss_total_mb"]),
            "peak RSS MB (main)": round(o["peak_rss_main_mb"]),
            "kNN train": round(o["train_knn_preservation_mean"], 4),
            "pred train (worst epoch)": f"{o['train_prediction_preservation_mean']:.4f} "
                                        f"({o['train_prediction_preservation_worst']:.4f})",
            "pred held-out": round(o.get("heldout_prediction_preservation_mean", float("nan")), 4),
            "recon train/held-out": f"{o['train_reconstruction_error_mean']:.3f} / "
                                    f"{o.get('heldout_reconstruction_error_mean', float('nan')):.3f}",
            "temporal train": round(o["train_temporal_consistency_mean"], 4),
            "UMAP s/epoch (all samples)": round(umap_s, 2) if umap_s else None,
            "time ours / UMAP": round(o["seconds_per_epoch"] / umap_s, 2) if umap_s else None,
            "load avg before/after": f"{o['load_average_before']:.1f} / {o['load_average_after']:.1f}",
        })
    notes = [
        "ours: TemporalProjector defaults, n_jobs=2 (joblib loky), every epoch and sample; its time includes the "
        "kNN graphs, layouts, inverse maps, 200x200 territories, metrics and writing RUN/projection/.",
        "Baselines: sklearn PCA and umap-learn UMAP / AlignedUMAP with default settings (n_neighbors=15, "
        "min_dist=0.1, no seed so UMAP uses both cores), on the epochs and samples in 'evaluated on'; "
        "'ours' rows are our projection evaluated on exactly the same epochs and samples.",
        "kNN preservation: k=15, 2000 query samples (the same for every method), neighbours among all evaluated "
        "samples, faiss exact search. Prediction preservation: class of the inverse-mapped canvas position "
        "through that epoch's head vs the model's prediction, on the training samples; baselines get an inverse "
        "map trained like ours on their layout; measured on evenly spaced epochs (listed in the JSON).",
        "Pred. ceiling (ours rows): how often a sample's prediction is the majority prediction of its 15 nearest "
        "neighbours in embedding space, on the same epochs; a layout that keeps neighbourhoods, read through a "
        "smooth inverse map, cannot preserve predictions much beyond it (memorised samples are islands).",
        "Temporal (per epoch): Spearman correlation across samples between movement in embedding space and on "
        "the canvas, mean over consecutive epoch pairs (the metric of the issue). Temporal (per sample): "
        "Spearman across the epoch pairs for each sample, averaged over samples (DVI's variant).",
        "2-core machine, nothing else running unless the load averages (tables, JSON) say otherwise. "
        "'time ours / UMAP' compares our whole projection (graphs, layouts, inverse maps, territories, metrics, "
        "files) per epoch with umap-learn's layout alone per epoch, on all samples.",
    ]
    json_path, md_path = write_results(
        "projection", results, table, title="Projection: ours vs PCA, UMAP, AlignedUMAP",
        sections=[("Our projection on whole runs (all epochs, all samples)", full_rows)], notes=notes,
        results_dir=args.results_dir,
    )
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
