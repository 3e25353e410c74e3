"""TemporalProjector: every recorded epoch to 2D, with an inverse map, territories and metrics.

Per epoch the work splits into three steps:

1. **graph** (parallel): the fuzzy kNN graph of the epoch's embeddings, how
   far each sample moved since the previous epoch, and each held-out sample's
   nearest training samples;
2. **layout** (sequential, in this process): umap-style SGD on the graph,
   warm-started from the previous epoch's layout, with each sample tied to its
   previous position by a spring that is strong when its neighbourhood stayed
   the same and its embedding barely moved (see :mod:`.layout`); held-out
   samples are placed among their training neighbours;
3. **finish** (parallel): the inverse map (a torch decoder, :mod:`.model`),
   the decision territories, the faithfulness metrics; then the epoch is
   written and listed in ``projection/manifest.json``.

Only the layout is sequential (a warm-started SGD of a few dozen epochs);
the graph and finish steps of several epochs run at once through
``joblib.Parallel`` (any joblib backend, e.g. Dask). Epochs are processed in
chunks: one parallel call finishes the previous chunk while building the
graphs of the next, and the layouts are computed, in this process, as those
graphs arrive, while the workers carry on.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from timetravel._processes import in_worker
from timetravel._random import subsample
from timetravel._validation import check_int, check_real
from timetravel.projection import store as files
from timetravel.projection.store import PLACED_SPLITS, ProjectionError, ProjectionReader, projection_dir
from timetravel.numerics import NeighbourIndex
from timetravel.projection.graph import (
    FuzzyGraph,
    fuzzy_graph,
    group_graph,
    membership,
    neighbour_overlap,
    smooth_knn_dist,
)
from timetravel.projection.layout import LayoutParams, align_to, find_ab_params, initial_layout, optimize_layout
from timetravel.projection.metrics import displacement, evaluate_split
from timetravel.projection.model import DecoderParams, InverseMap, fit_inverse_map, torch_threads
from timetravel.projection.territory import canvas_extent, territory
from timetravel.store import RunStore

logger = logging.getLogger(__name__)

METHOD = "timetravel-temporal-umap"
_MISSING = object()


@dataclass(frozen=True)
class _Config:
    """Everything a worker needs, in a small picklable object."""

    n_neighbors: int
    cross_prediction_weight: float
    prediction_neighbors: int
    decoder: DecoderParams
    grid_size: int
    metric_samples: int
    metric_k: int
    random_state: int


@dataclass
class _Previous:
    """State carried from one epoch to the next (the only sequential dependency)."""

    epoch: int
    xy: np.ndarray
    heldout_xy: np.ndarray | None
    knn: np.ndarray | None = None


def _seeds(random_state: int, epoch: int) -> np.ndarray:
    return np.random.SeedSequence([int(random_state), int(epoch)]).generate_state(3)


def _metric_rows(n: int, size: int, random_state: int) -> np.ndarray:
    """The samples metrics are computed on: the same for every epoch."""
    return subsample(n, size, random_state, "projection-metric-rows")


def _open(path: str) -> RunStore:
    return RunStore(path, verify="headers")


def _embedding(store: RunStore, epoch: int, split: str = "train") -> np.ndarray:
    return np.asarray(store.embedding(epoch, split), dtype=np.float32)


# --------------------------------------------------------------------------- parallel steps


def _graph_task(path: str, epoch: int, prev_epoch: int | None, cfg: _Config) -> dict[str, Any]:
    """Step 1 of an epoch: fuzzy kNN graph, movement since the previous epoch, held-out and pool neighbours."""
    t0 = time.perf_counter()
    store = _open(path)
    seed = int(_seeds(cfg.random_state, epoch)[0])
    x = _embedding(store, epoch)
    index = NeighbourIndex(x, seed=seed)
    graph = fuzzy_graph(*index.query(None, cfg.n_neighbors))
    pred = np.asarray(store.logits(epoch)).argmax(axis=1)
    if cfg.cross_prediction_weight != 1.0:
        graph = graph.reweighted(pred, cfg.cross_prediction_weight)
    if cfg.prediction_neighbors:
        graph = graph.union(group_graph(x, pred, cfg.prediction_neighbors, seed=seed))
    moved = None
    if prev_epoch is not None:
        moved = displacement(store.embedding(prev_epoch), store.embedding(epoch))
    placed = {}  # held-out and pool rows: their training neighbours and membership weights
    for split in PLACED_SPLITS:
        if store.has_split(epoch, split):
            dist, neighbours = index.query(_embedding(store, epoch, split), cfg.n_neighbors)
            placed[split] = (neighbours, membership(dist, *smooth_knn_dist(dist)))
    return {"graph": graph, "moved": moved, "placed": placed, "seconds": time.perf_counter() - t0}


def _finish_task(
    path: str,
    epoch: int,
    prev: tuple[int, np.ndarray, np.ndarray | None] | None,
    xy: np.ndarray,
    heldout_xy: np.ndarray | None,
    cfg: _Config,
) -> dict[str, Any]:
    """Step 3 of an epoch: inverse map, territories and metrics."""
    with torch_threads(1):
        return _finish(path, epoch, prev, xy, heldout_xy, cfg)


def _finish(path, epoch, prev, xy, heldout_xy, cfg) -> dict[str, Any]:
    t0 = time.perf_counter()
    store = _open(path)
    seed = int(_seeds(cfg.random_state, epoch)[2])
    x = _embedding(store, epoch)
    head = store.head(epoch)
    pred = np.asarray(store.logits(epoch)).argmax(axis=1)
    inverse = fit_inverse_map(x, xy, pred, head, cfg.decoder, seed=seed)
    extent = canvas_extent(xy, *([] if heldout_xy is None else [heldout_xy]))
    classes, confidence = territory(inverse, head, extent, cfg.grid_size)

    rows = _metric_rows(store.n_samples, cfg.metric_samples, cfg.random_state)
    x_prev = xy_prev = None
    if prev is not None:
        x_prev, xy_prev = store.embedding(prev[0]), prev[1]  # memory-mapped: only streamed through
    metrics = {
        "train": evaluate_split(
            x, pred, xy, inverse, head, rows=rows, k=cfg.metric_k, x_prev=x_prev, xy_prev=xy_prev
        )
    }
    del x, x_prev
    if heldout_xy is not None:
        hx = _embedding(store, epoch, "heldout")
        hrows = _metric_rows(store.n_heldout, cfg.metric_samples, cfg.random_state)
        metrics["heldout"] = evaluate_split(
            hx,
            np.asarray(store.logits(epoch, "heldout")).argmax(axis=1),
            heldout_xy,
            inverse,
            head,
            rows=hrows,
            k=cfg.metric_k,
            # a train-pass epoch before this one has no held-out rows to compare with
            x_prev=None if prev is None or prev[2] is None else store.embedding(prev[0], "heldout"),
            xy_prev=None if prev is None else prev[2],
        )
    arrays, blobs = inverse.files()
    arrays.update(territory_class=classes, territory_confidence=confidence)
    return {
        "arrays": arrays,
        "blobs": blobs,
        "extent": list(extent),
        "decoder": {"center": inverse.center.tolist(), "scale": inverse.scale, **inverse.shape},
        "metrics": metrics,
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- the estimator


class TemporalProjector:
    """Temporally consistent 2D projection of every epoch of a run, with inverse maps and territories.

    ``fit(store)`` writes ``RUN/projection/`` (format in ``docs/run-store.md``):
    per epoch the canvas positions of the training (and held-out) samples,
    the decision territories on a ``grid_size x grid_size`` grid, the inverse
    map's weights, and faithfulness metrics in the manifest. It resumes an
    interrupted or shorter projection made with the same settings.

    Parameters
    ----------
    n_neighbors : int, default=15
        Neighbours of the fuzzy kNN graph.
    cross_prediction_weight : float, default=0.5
        Factor on the weight of graph edges joining samples the model predicts
        differently; below 1 it pulls the predicted classes apart on the canvas
        (sharper territories, higher prediction preservation, slightly lower
        kNN preservation); 1 ignores the predictions.
    prediction_neighbors : int, default=0
        Extra graph edges from each sample to its nearest neighbours among the
        samples the model predicts the same class for (0: none). They pull a
        sample the model has memorised towards others it predicts alike, where
        its plain neighbours (of its true class) would bury it: on the 50k
        benchmark run's last epochs, 10 (with ``cross_prediction_weight=0.2``)
        raises prediction preservation from 0.82-0.85 to 0.91-0.93 but cuts the
        kNN preservation of the memorised samples from 0.12 to 0.07, hence off
        by default.
    min_dist, spread : float, default=0.1, 1.0
        umap's shape of the low-dimensional similarity.
    negative_sample_rate : int, default=10
        Repulsive samples per attractive edge sample (umap uses 5; 10 keeps
        local neighbourhoods better with the springs on).
    init_epochs : int, optional
        SGD epochs of the first projected epoch (from a PCA start, learning
        rate 1); by default 500 for up to 10,000 samples and 200 above, as umap.
    min_epochs, max_epochs : int, default=20 and None
        SGD epochs of a warm-started epoch: ``max_epochs`` times the fraction
        of kNN neighbours that changed since the previous epoch, clipped to
        this range. ``max_epochs`` defaults to 300 for up to 10,000 samples
        and 100 above.
    learning_rate : float, default=0.1
        Initial SGD learning rate of warm-started epochs.
    anchor_strength : float, default=10.0
        Strength of the spring tying each sample to its previous position,
        scaled per sample by ``overlap * (1 - q)**2`` where ``overlap`` is the
        fraction of its kNN neighbours that stayed and ``q`` the percentile of
        its movement in embedding space. 0 disables the springs.
    grid_size : int, default=200
        Side of the territory grid.
    decoder_components, decoder_hidden : int, default=64, 128
        Inverse map: principal components predicted and hidden width.
    decoder_steps : int, optional
        Adam steps of each inverse map; by default 1000 for up to 10,000
        samples (small runs need the steps to resolve memorised samples) and
        500 above (where the layout, not the decoder, limits it).
    prediction_weight : float, default=1.0
        Weight of the inverse map's prediction-preservation (cross-entropy) term.
    fourier_features, fourier_scale : int, float, default=32, 12.0
        Random Fourier features of the canvas position fed to the inverse map
        (how many, and the standard deviation of their frequencies on the
        canvas normalised to [-1, 1]); they let it resolve small islands.
    smoothness : float, default=0.02
        Weight of the inverse map's smoothness penalty (keeps territories
        smooth away from the data).
    decoder_samples : int, default=20000
        Samples (at most) the inverse map is trained on per epoch.
    metric_samples : int, default=2000
        Query samples of the kNN-preservation metric (the same for every epoch).
    metric_k : int, default=15
        Neighbourhood size of the kNN-preservation metric.
    n_jobs : int, optional
        Parallel jobs for the per-epoch steps (joblib semantics: None means 1
        unless inside a ``joblib.parallel_config`` context, -1 means all cores).
    backend : str, optional
        joblib backend (``"loky"``, ``"threading"``, ``"dask"``...); None uses
        joblib's current default. ``"dask"`` needs a ``distributed.Client``.
    chunk_size : int, optional
        Epochs laid out between two parallel calls; defaults to twice the
        number of parallel workers (at least 2).
    random_state : int, default=0
        Seeds everything; a projection is reproducible for a given seed,
        machine and ``n_jobs``.
    verbose : bool, default=True
        Show a progress bar.

    Attributes
    ----------
    epochs_ : list of int
        Epochs projected so far (all recorded ones unless ``until`` was given).
    metrics_ : dict of int to dict
        Faithfulness metrics per epoch (``{"train": {...}, "heldout": {...}}``).
    path_ : Path
        The ``projection/`` directory written.

    Examples
    --------
    >>> from timetravel import RunStore
    >>> from timetravel.projection import TemporalProjector
    >>> store = RunStore("runs/digits")  # doctest: +SKIP
    >>> TemporalProjector(n_jobs=-1).fit(store).metrics_[29]["train"]  # doctest: +SKIP
    {'knn_preservation': 0.55, 'prediction_preservation': 0.97, ...}
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 15,
        cross_prediction_weight: float = 0.5,
        prediction_neighbors: int = 0,
        min_dist: float = 0.1,
        spread: float = 1.0,
        negative_sample_rate: int = 10,
        init_epochs: int | None = None,
        min_epochs: int = 20,
        max_epochs: int | None = None,
        learning_rate: float = 0.1,
        anchor_strength: float = 10.0,
        grid_size: int = 200,
        decoder_components: int = 64,
        decoder_hidden: int = 128,
        decoder_steps: int | None = None,
        prediction_weight: float = 1.0,
        fourier_features: int = 32,
        fourier_scale: float = 12.0,
        smoothness: float = 0.02,
        decoder_samples: int = 20000,
        metric_samples: int = 2000,
        metric_k: int = 15,
        n_jobs: int | None = None,
        backend: str | None = None,
        chunk_size: int | None = None,
        random_state: int = 0,
        verbose: bool = True,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.cross_prediction_weight = cross_prediction_weight
        self.prediction_neighbors = prediction_neighbors
        self.min_dist = min_dist
        self.spread = spread
        self.negative_sample_rate = negative_sample_rate
        self.init_epochs = init_epochs
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.anchor_strength = anchor_strength
        self.grid_size = grid_size
        self.decoder_components = decoder_components
        self.decoder_hidden = decoder_hidden
        self.decoder_steps = decoder_steps
        self.prediction_weight = prediction_weight
        self.fourier_features = fourier_features
        self.fourier_scale = fourier_scale
        self.smoothness = smoothness
        self.decoder_samples = decoder_samples
        self.metric_samples = metric_samples
        self.metric_k = metric_k
        self.n_jobs = n_jobs
        self.backend = backend
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.verbose = verbose

    # How the work is run, not what it computes: the only settings a resumed projection may change.
    _EXECUTION_PARAMS = frozenset({"n_jobs", "backend", "chunk_size", "verbose"})

    @classmethod
    def _result_param_names(cls) -> list[str]:
        """Every constructor parameter except the execution ones: a projection resumes only under the same values."""
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self" and name not in cls._EXECUTION_PARAMS]

    def _validate(self, store: RunStore) -> None:
        err = {"error": ProjectionError}
        for name in ("n_neighbors", "min_epochs", "grid_size", "decoder_components", "decoder_hidden",
                     "decoder_samples", "metric_samples", "metric_k", "fourier_features"):
            check_int(getattr(self, name), name, minimum=1, **err)
        for name in ("init_epochs", "max_epochs", "decoder_steps", "chunk_size"):
            check_int(getattr(self, name), name, minimum=1, none_ok=True, **err)
        check_int(self.prediction_neighbors, "prediction_neighbors", minimum=0, **err)
        check_int(self.random_state, "random_state", **err)
        check_int(self.n_jobs, "n_jobs", none_ok=True, **err)
        if self.n_jobs == 0:
            raise ProjectionError("n_jobs must not be 0 (joblib: None or 1 for one process, -1 for all cores)")
        check_real(self.cross_prediction_weight, "cross_prediction_weight", minimum=0, maximum=1,
                   exclusive_minimum=True, **err)
        for name in ("min_dist", "negative_sample_rate", "anchor_strength", "prediction_weight", "fourier_scale",
                     "smoothness"):
            check_real(getattr(self, name), name, minimum=0, **err)
        for name in ("spread", "learning_rate"):
            check_real(getattr(self, name), name, minimum=0, exclusive_minimum=True, **err)
        if self.max_epochs is not None and self.min_epochs > self.max_epochs:
            raise ProjectionError(f"min_epochs ({self.min_epochs}) must not exceed max_epochs ({self.max_epochs})")
        if self.grid_size > 4096:
            raise ProjectionError(f"grid_size must be at most 4096, got {self.grid_size}")
        if not store.epochs:
            raise ProjectionError(f"{store.path}: the run has no recorded epochs to project")
        if store.n_samples <= self.n_neighbors:
            raise ProjectionError(
                f"{store.path}: n_neighbors={self.n_neighbors} needs more than {self.n_neighbors} samples, "
                f"the run has {store.n_samples}"
            )
        if store.n_classes > 256:
            raise ProjectionError(f"{store.path}: territories hold at most 256 classes, the run has {store.n_classes}")

    def _result_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._result_param_names()}

    @staticmethod
    def _check_resumable(manifest: dict[str, Any], params: dict[str, Any], out: Path) -> None:
        """Refuse to continue a projection whose method or settings differ from ``params``."""
        saved = manifest.get("params")
        saved = saved if isinstance(saved, dict) else {}
        changed = sorted(k for k in params.keys() | saved.keys() if saved.get(k, _MISSING) != params.get(k, _MISSING))
        if manifest.get("method") != METHOD or changed:
            raise ProjectionError(
                f"{out}: an existing projection was made with other settings ({', '.join(changed) or 'method'}); "
                "pass overwrite=True (--overwrite) to replace it"
            )

    def decoder_params(self, n_samples: int) -> DecoderParams:
        """The inverse-map training settings used for a run of ``n_samples`` samples.

        The benchmark trains the baselines' inverse maps with them, so every
        layout is inverted the same way.
        """
        return DecoderParams(
            components=self.decoder_components,
            hidden=self.decoder_hidden,
            steps=self.decoder_steps or (1000 if n_samples <= 10000 else 500),
            prediction_weight=self.prediction_weight,
            max_samples=self.decoder_samples,
            fourier_features=self.fourier_features,
            fourier_scale=self.fourier_scale,
            smoothness=self.smoothness,
        )

    def _config(self, n_samples: int) -> _Config:
        return _Config(
            n_neighbors=self.n_neighbors,
            cross_prediction_weight=self.cross_prediction_weight,
            prediction_neighbors=self.prediction_neighbors,
            decoder=self.decoder_params(n_samples),
            grid_size=self.grid_size,
            metric_samples=self.metric_samples,
            metric_k=self.metric_k,
            random_state=self.random_state,
        )

    def fit(
        self,
        store: RunStore | str | Path,
        *,
        overwrite: bool = False,
        until: int | None = None,
        reference: RunStore | str | Path | None = None,
    ) -> TemporalProjector:
        """Project every recorded epoch not yet projected, resuming from the last finished one.

        Parameters
        ----------
        store : RunStore or path
            The run.
        overwrite : bool, default=False
            Discard an existing projection and start again. Without it, an
            existing projection made with different settings is an error.
        until : int, optional
            Project only the recorded epochs up to this one (a later call
            continues from there).
        reference : RunStore or path, optional
            A projected run of the same samples (the run a ``timetravel fix``
            retrained): each epoch starts from the reference's layout of that
            epoch, held to it by springs of ``anchor_strength / 2`` and rotated
            onto it, so the same sample sits in about the same place in both
            runs. Epochs the reference lacks are laid out as usual.

        Returns
        -------
        self

        Raises
        ------
        ProjectionError
            Bad settings, a run with nothing to project, or an existing
            projection with other settings (and ``overwrite`` not given).
        """
        from joblib import Parallel, effective_n_jobs, parallel_config
        from tqdm.auto import tqdm

        store = store if isinstance(store, RunStore) else RunStore(store)
        self._validate(store)
        out = projection_dir(store.path)
        params = self._result_params()
        self._reference = None
        if reference is not None:
            reference = reference if isinstance(reference, RunStore) else RunStore(reference, verify="headers")
            if reference.n_samples != store.n_samples:
                raise ProjectionError(f"reference {reference.path} has {reference.n_samples} samples but "
                                      f"{store.path} has {store.n_samples}; align only runs of the same samples")
            if not reference.projected_epochs:
                raise ProjectionError(f"reference {reference.path} has no projection; run `timetravel project "
                                      f"{reference.path}` first")
            self._reference = reference
            params = {**params, "reference": str(reference.path.resolve())}
        manifest = files.read_manifest(out)
        if manifest is not None and not overwrite:
            self._check_resumable(manifest, params, out)
        if manifest is None or overwrite:
            files.clear(out)
            manifest = files.new_manifest(METHOD, params)
        done = self._finished_prefix(store, manifest, out)
        todo = [e for e in store.epochs[len(done) :] if until is None or e <= until]
        prev = None
        if done:
            last = done[-1]
            prev = _Previous(
                epoch=last,
                xy=files.read_xy(out, last),
                heldout_xy=files.read_xy(out, last, "heldout_xy") if store.has_heldout(last) else None,
            )
            logger.info("resuming the projection of %s after epoch %d (%d to go)", store.path, last, len(todo))

        backend = parallel_config(backend=self.backend) if self.backend else contextlib.nullcontext()
        with backend:
            workers = max(1, effective_n_jobs(self.n_jobs))
            chunk = self.chunk_size or max(2, 2 * workers)
            with (
                warnings.catch_warnings(),
                Parallel(n_jobs=self.n_jobs, return_as="generator") as parallel,
                tqdm(total=len(todo), desc="projecting", unit="epoch", disable=not self.verbose) as bar,
            ):
                # An interrupted fit (Ctrl+C) leaves results unused; joblib's warning about it says nothing to a user.
                warnings.filterwarnings("ignore", message=r".*tasks (have|which) .*(not used|cancelled)")
                self._run(store, manifest, out, todo, prev, parallel, chunk, bar)
        self.epochs_ = sorted(int(e) for e in manifest["epochs"])
        self.metrics_ = {int(e): entry["metrics"] for e, entry in manifest["epochs"].items()}
        self.path_ = out
        return self

    @staticmethod
    def _finished_prefix(store: RunStore, manifest: dict[str, Any], out: Path) -> list[int]:
        """Projected epochs forming an unbroken prefix of the run; later ones are unlisted (recomputed)."""
        done = []
        for e in store.epochs:
            if str(e) not in manifest["epochs"]:
                break
            done.append(e)
        stale = [int(e) for e in manifest["epochs"] if int(e) not in done]
        if stale:
            logger.warning("%s: recomputing epochs %s, projected after an unprojected one", out, stale)
            files.forget_epochs(out, manifest, stale)
        return done

    def _run(self, store, manifest, out, todo, prev, parallel, chunk, bar) -> None:
        from joblib import delayed

        cfg = self._config(store.n_samples)
        path = str(store.path)
        task = delayed(in_worker)
        me = os.getpid()  # workers die with this process, even after a kill -9
        layout_params = LayoutParams(*find_ab_params(self.spread, self.min_dist), self.negative_sample_rate)
        prev_epochs = dict(zip(todo, [prev.epoch if prev else None] + todo[:-1]))
        pending: list[tuple[int, dict[str, Any], Any]] = []  # epochs laid out, waiting to be finished
        for start in range(0, len(todo) + chunk, chunk):
            batch = todo[start : start + chunk]
            jobs = [job for _, _, job in pending]
            if prev is not None and prev.knn is None and batch:  # resuming: the last finished epoch's kNN
                jobs.append(task(me, _graph_task, path, prev.epoch, None, cfg))
            jobs += [task(me, _graph_task, path, e, prev_epochs[e], cfg) for e in batch]
            if not jobs:
                break
            results = parallel(jobs)
            with contextlib.closing(results):  # an interrupt stops the call here, inside fit's filters
                finished, pending = pending, []
                for epoch, entry, _ in finished:
                    self._commit(out, manifest, epoch, entry, next(results))
                    bar.update(1)
                if prev is not None and prev.knn is None and batch:
                    prev.knn = next(results)["graph"].knn
                for epoch in batch:
                    graph_result = next(results)
                    xy, heldout_xy, layout_info = self._layout(store, epoch, graph_result, prev, layout_params)
                    before = None if prev is None else (prev.epoch, prev.xy, prev.heldout_xy)
                    job = task(me, _finish_task, path, epoch, before, xy, heldout_xy, cfg)
                    entry = {"xy": xy, "heldout_xy": heldout_xy, **layout_info}
                    pending.append((epoch, entry, job))
                    prev = _Previous(epoch, xy, heldout_xy, graph_result["graph"].knn)
                for _ in results:  # every result was taken; this lets joblib mark the call as finished
                    raise RuntimeError("more parallel results than jobs")

    def _layout(self, store, epoch, graph_result, prev, layout_params):
        """Step 2 of an epoch: the sequential, warm-started layout."""
        from scipy.stats import rankdata

        t0 = time.perf_counter()
        graph: FuzzyGraph = graph_result["graph"]
        seed = int(_seeds(self.random_state, epoch)[1])
        info: dict[str, Any] = {"graph_seconds": graph_result["seconds"]}
        reference = getattr(self, "_reference", None)
        if reference is not None and epoch in reference.projected_epochs:
            target = np.asarray(reference.projection(epoch), dtype=np.float32)
            n_epochs = self.max_epochs or (300 if store.n_samples <= 10000 else 100)
            spring = np.full(len(target), self.anchor_strength / 2, dtype=np.float32)
            xy = optimize_layout(target, graph, layout_params, n_epochs=n_epochs, learning_rate=self.learning_rate,
                                 seed=seed, anchor=target, anchor_strength=spring)  # fmt: skip
            xy = align_to(target, xy)
            info.update(sgd_epochs=n_epochs, neighbour_overlap=None)
        elif prev is None:
            n_epochs = self.init_epochs or (500 if store.n_samples <= 10000 else 200)
            start = initial_layout(_embedding(store, epoch))
            xy = optimize_layout(start, graph, layout_params, n_epochs=n_epochs, learning_rate=1.0, seed=seed)
            info.update(sgd_epochs=n_epochs, neighbour_overlap=None)
        else:
            overlap = neighbour_overlap(prev.knn, graph.knn)
            still = 1.0 - rankdata(graph_result["moved"]) / len(overlap)
            spring = (self.anchor_strength * overlap * still**2).astype(np.float32)
            most = self.max_epochs or (300 if store.n_samples <= 10000 else 100)
            n_epochs = int(np.clip(round(most * (1.0 - overlap.mean())), self.min_epochs, max(most, self.min_epochs)))
            xy = optimize_layout(
                prev.xy, graph, layout_params, n_epochs=n_epochs, learning_rate=self.learning_rate, seed=seed,
                anchor=prev.xy, anchor_strength=spring,
            )
            xy = align_to(prev.xy, xy, spring + 1e-6)
            info.update(sgd_epochs=n_epochs, neighbour_overlap=float(overlap.mean()))
        # held-out and pool rows sit at the membership-weighted mean of their training neighbours
        info["placed"] = {
            split: ((weight[..., None] * xy[index]).sum(axis=1) / weight.sum(axis=1, keepdims=True)).astype(np.float32)
            for split, (index, weight) in graph_result["placed"].items()
        }
        info["layout_seconds"] = time.perf_counter() - t0
        return xy, info["placed"].get("heldout"), info

    def _commit(self, out, manifest, epoch, entry, result) -> None:
        arrays = {"xy": entry["xy"], **result["arrays"]}
        arrays.update({f"{split}_xy": xy for split, xy in entry["placed"].items()})
        record = {
            "extent": result["extent"],
            "grid": self.grid_size,
            "metrics": result["metrics"],
            "decoder": result["decoder"],
            "layout": {"sgd_epochs": entry["sgd_epochs"], "neighbour_overlap": entry["neighbour_overlap"]},
            "seconds": {
                "graph": round(entry["graph_seconds"], 3),
                "layout": round(entry["layout_seconds"], 3),
                "finish": round(result["seconds"], 3),
            },
        }
        files.write_epoch(out, manifest, epoch, arrays, result["blobs"], record)
        train = result["metrics"]["train"]
        logger.info(
            "epoch %d: knn %.3f, prediction %.3f, temporal %s",
            epoch, train["knn_preservation"], train["prediction_preservation"], train["temporal_consistency"],
        )  # fmt: skip


def load_inverse_map(store: RunStore, epoch: int) -> InverseMap:
    """The inverse map (canvas -> embedding space) of a projected epoch.

    Examples
    --------
    >>> inv = load_inverse_map(store, 29)  # doctest: +SKIP
    >>> inv.logits(np.array([[0.0, 0.0]]), *store.head(29)).argmax(1)  # doctest: +SKIP
    """
    reader = ProjectionReader(store)
    decoder = reader.entry(epoch).get("decoder")
    if not isinstance(decoder, dict):
        raise ProjectionError(f"{reader.directory}: epoch {epoch} has no inverse map (it was not written by "
                              f"timetravel project); run `timetravel project {store.path} --overwrite`")
    return InverseMap.load(
        reader.epoch_dir(epoch),
        hidden=int(decoder["hidden"]),
        n_frequencies=int(decoder["n_frequencies"]),
        center=np.asarray(decoder["center"], dtype=np.float32),
        scale=float(decoder["scale"]),
    )
