"""Run-level figures: quality and the Goodhart-resistant efficiency ratios (DESIGN §4).

Input is the stream of one-row-per-run chunks from :func:`wasteaudit.report.metrics.run_rows`
(:meth:`RunTable.add_chunk`), or runs as numpy columns from the rollups
(:func:`wasteaudit.report.rollups.run_arrays`, :meth:`RunTable.add_arrays`: the same sums).
Exact sums per group (function, model, provider, tag, total) are accumulated chunk by chunk
with numpy (``bincount``), so nothing is kept per call and the sums are exact however many
runs there are. The per-run values that the length-controlled figure and the bootstrap gates
need are kept in compact arrays, up to ``max_runs`` runs; beyond that a deterministic
uniform reservoir sample is kept instead (and the report says so).

Per run: ``q`` (quality, :mod:`.quality`), ``C`` (cost of every call of the run, all attempts
and re-asks; unknown if any call is unpriced), ``T`` (billed output tokens of all its calls),
``W`` (confirmed waste tokens; unknown unless every call is scored), ``U = T - W``.

* value per dollar ``Σq / ΣC`` over runs with both ``q`` and ``C`` (the *efficiency set* E);
* QUY ``Σ q·U / Σ T`` over E's runs whose calls are all scored (a run never scores above q);
* cost per successful run ``ΣC / #(q >= τ)`` over E, with the success rate beside it;
* LCQE ``mean q·min(1, L*/T)^α`` over E, ``L*`` = median ``T`` of successful runs of the
  same function in the period, and null for a function with fewer than 20 of those.

A figure whose denominator is empty is ``None`` (rendered null), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from wasteaudit.report.metrics import UNTAGGED, RunArrays, RunChunk
from wasteaudit.report.quality import run_failed, run_quality

__all__ = ("Settings", "RunTable", "DIMENSIONS")

DIMENSIONS = ("total", "function", "model", "provider", "tag")

# Exact per-group sums (columns of each accumulator matrix).
_FIELDS = (
    "runs",
    "n_q",
    "sum_q",
    "n_success",
    "n_failed",
    "n_e",
    "sum_q_e",
    "sum_c_e",
    "n_success_e",
    "n_y",
    "sum_qu_y",
    "sum_t_y",
    "n_t",
    "sum_t",
    "n_c",
    "sum_c",
)
_F = {name: i for i, name in enumerate(_FIELDS)}


@dataclass(frozen=True, slots=True)
class Settings:
    """The report's tunables (DESIGN §4 defaults)."""

    tau: float = 0.7  # success: q >= tau
    alpha: float = 0.5  # LCQE length-economy exponent
    delta: float = 0.02  # non-inferiority margin
    confidence: float = 0.95  # one-sided
    resamples: int = 1000
    seed: int = 20260101
    lcqe_min_successes: int = 20
    min_runs: int = 10  # fewest scored runs per side for a gate, an alarm or a model ranking
    max_runs: int = 1_000_000  # per-run values kept in memory (beyond: reservoir sample)
    coverage_drop: float = 0.10  # coverage_down: absolute fall
    unpriced_rise: float = 0.01  # unpriced_up: absolute rise in the share of unpriced calls
    shorter_by: float = 0.10  # shorter_more_failures: output tokens per run down by this share
    top_findings: int = 10

    def to_json(self) -> dict[str, Any]:
        return {
            "success_threshold": self.tau,
            "lcqe_alpha": self.alpha,
            "lcqe_min_successful_runs": self.lcqe_min_successes,
            "noninferiority_margin": self.delta,
            "confidence": self.confidence,
            "bootstrap_resamples": self.resamples,
            "seed": self.seed,
            "min_runs": self.min_runs,
        }


class _Index:
    """Stable small-integer ids for group keys."""

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.keys: list[Any] = []

    def get(self, key: Any) -> int:
        found = self.ids.get(key)
        if found is None:
            found = self.ids[key] = len(self.keys)
            self.keys.append(key)
        return found


class _Store:
    """Growable per-run arrays with reservoir sampling past ``capacity``."""

    NAMES = ("q", "cost", "t", "w", "func", "model")

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.seen = 0
        self.rng = np.random.default_rng(seed)
        self.data = {name: np.empty(0, dtype=np.float64 if name in ("q", "cost", "t", "w") else np.int32) for name in self.NAMES}
        self.tags: list[tuple[int, ...]] | None = None

    @property
    def sampled(self) -> bool:
        return self.seen > self.size

    def add(self, columns: dict[str, np.ndarray], tags: list[tuple[int, ...]] | None) -> None:
        n = len(columns["q"])
        room = max(0, self.capacity - self.size)
        take = min(room, n)
        if take:
            for name in self.NAMES:
                self.data[name] = np.concatenate([self.data[name], columns[name][:take]])
            if tags is not None:
                if self.tags is None:
                    self.tags = []
                self.tags.extend(tags[:take])
            self.size += take
        rest = n - take
        if rest > 0:
            # Algorithm R: the i-th item seen (1-based) replaces slot j < capacity when j ~ U[0, i).
            positions = np.arange(self.seen + take + 1, self.seen + n + 1)
            slots = (self.rng.random(rest) * positions).astype(np.int64)
            keep = slots < self.capacity
            for name in self.NAMES:
                self.data[name][slots[keep]] = columns[name][take:][keep]
            if tags is not None and self.tags is not None:
                for slot, tag in zip(slots[keep].tolist(), [t for t, k in zip(tags[take:], keep.tolist()) if k]):
                    self.tags[slot] = tag
        self.seen += n


class RunTable:
    """Everything run-level about one period: exact group sums, and per-run arrays."""

    def __init__(self, settings: Settings, *, tag_key: str | None = None, with_tags: bool = False, period: int = 1) -> None:
        self.settings = settings
        self.period = period
        # Output tokens of calls whose run's use was observable, per (function, provider, model)
        # cell and per tag group (unused-coverage's numerator).
        self.cells = _Index()
        self.cell_observable = np.zeros(0)
        self.tag_observable = np.zeros(0)
        self.with_tags = with_tags
        self.tag_key = tag_key
        self.index = {dim: _Index() for dim in DIMENSIONS}
        self.index["total"].get("total")
        self.sums = {dim: np.zeros((0, len(_FIELDS))) for dim in DIMENSIONS}
        self.store = _Store(settings.max_runs, settings.seed)
        self._lstar: dict[int, float | None] | None = None
        self._sorted: dict[str, np.ndarray] | None = None
        self._terms: tuple[np.ndarray, np.ndarray] | None = None

    # --- ingest ---------------------------------------------------------------------------

    def ingest(self, chunks: Iterable[RunChunk]) -> "RunTable":
        for chunk in chunks:
            self.add_chunk(chunk)
        return self

    def add_chunk(self, chunk: RunChunk) -> None:
        period = self.period
        periods = np.array(chunk.period, dtype=np.int8)
        mine = np.flatnonzero(periods == period).tolist()
        if not mine:
            return
        self._add_cells(chunk, mine)
        primary = np.array(chunk.primary, dtype=bool)
        picked = np.flatnonzero(primary & (periods == period)).tolist()
        if not picked:
            return
        chunk = _select(chunk, picked)
        n = len(chunk.run_id)
        if chunk.q is not None and chunk.failed is not None:
            # Computed by the database with the same rule (metrics.run_rows).
            q = _floats(chunk.q)
            failed = np.array(chunk.failed, dtype=bool)
        else:
            q = _floats(list(map(run_quality, chunk.status, chunk.validation, chunk.quality_score, chunk.mean_score, chunk.validation_score)))
            failed = np.fromiter(map(run_failed, chunk.status, chunk.validation, chunk.validation_score), dtype=bool, count=n)
        cost = _floats(chunk.cost_usd)
        t = _floats(chunk.output_tokens)
        w = _floats(chunk.waste_tokens)
        fn = self.index["function"]
        md = self.index["model"]
        pv = self.index["provider"]
        func_ids = np.fromiter(map(fn.get, chunk.function), dtype=np.int32, count=n)
        model_ids = np.fromiter(map(md.get, zip(chunk.provider, chunk.model)), dtype=np.int32, count=n)
        provider_ids = np.fromiter(map(pv.get, chunk.provider), dtype=np.int32, count=n)
        tag_lists: list[tuple[int, ...]] | None = None
        observable = None
        if self.with_tags:
            tag_lists = self._tag_ids(chunk.tags or [None] * n)
            observable = np.array([bool(v) for v in chunk.observable], dtype=bool)
        self._add_runs(q, failed, cost, t, w, func_ids, model_ids, provider_ids, tag_lists, observable)

    def add_arrays(self, arrays: RunArrays) -> None:
        """Add runs given as numpy columns (:func:`wasteaudit.report.rollups.run_arrays`): the
        same sums as :meth:`add_chunk`, with no Python step per run."""
        period = self.period
        cells = arrays.cell_run
        mine_cells = np.flatnonzero(arrays.period[cells] == period)
        if not len(mine_cells):
            return
        # Unused-coverage numerators per (function, provider, model) cell.
        n_models = max(1, len(arrays.models))
        pair = arrays.cell_function[mine_cells] * n_models + arrays.cell_model[mine_cells]
        distinct, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
        ids = np.empty(len(distinct), dtype=np.int64)
        for j in np.argsort(first, kind="stable").tolist():  # registered in order of appearance
            f, m = divmod(int(distinct[j]), n_models)
            ids[j] = self.cells.get((arrays.functions[f], *arrays.models[m]))
        tokens = np.nan_to_num(arrays.cell_tokens[mine_cells])
        weights = np.where(arrays.cell_observable[mine_cells], tokens, 0.0)
        size = len(self.cells.keys)
        if len(self.cell_observable) < size:
            self.cell_observable = np.concatenate([self.cell_observable, np.zeros(size - len(self.cell_observable))])
        self.cell_observable += np.bincount(ids[inverse.reshape(-1)], weights=weights, minlength=size)
        mine = np.flatnonzero(arrays.period == period)
        if not len(mine):
            return
        fn, md, pv = self.index["function"], self.index["model"], self.index["provider"]
        func_ids = _mapped(arrays.function[mine], lambda i: fn.get(arrays.functions[i]))
        model_ids = _mapped(arrays.model[mine], lambda i: md.get(arrays.models[i]))
        provider_ids = _mapped(arrays.model[mine], lambda i: pv.get(arrays.models[i][0]))
        self._add_runs(
            arrays.q[mine], arrays.failed[mine], arrays.cost[mine], arrays.t[mine], arrays.w[mine],
            func_ids, model_ids, provider_ids, None, None,
        )

    def _add_runs(
        self, q: np.ndarray, failed: np.ndarray, cost: np.ndarray, t: np.ndarray, w: np.ndarray,
        func_ids: np.ndarray, model_ids: np.ndarray, provider_ids: np.ndarray,
        tag_lists: list[tuple[int, ...]] | None, observable: np.ndarray | None,
    ) -> None:
        """Exact group sums and the per-run store, from one value per run (NaN: missing)."""
        n = len(q)
        has_q = ~np.isnan(q)
        has_c = ~np.isnan(cost)
        has_t = ~np.isnan(t)
        in_e = has_q & has_c
        success = has_q & (np.nan_to_num(q, nan=-1.0) >= self.settings.tau)
        in_y = in_e & has_t & ~np.isnan(w)
        q0, c0, t0 = np.nan_to_num(q), np.nan_to_num(cost), np.nan_to_num(t)
        useful = np.clip(t0 - np.nan_to_num(w), 0.0, None)

        values = np.zeros((n, len(_FIELDS)))
        values[:, _F["runs"]] = 1
        values[:, _F["n_q"]] = has_q
        values[:, _F["sum_q"]] = q0
        values[:, _F["n_success"]] = success
        values[:, _F["n_failed"]] = failed
        values[:, _F["n_e"]] = in_e
        values[:, _F["sum_q_e"]] = np.where(in_e, q0, 0.0)
        values[:, _F["sum_c_e"]] = np.where(in_e, c0, 0.0)
        values[:, _F["n_success_e"]] = in_e & success
        values[:, _F["n_y"]] = in_y
        values[:, _F["sum_qu_y"]] = np.where(in_y, q0 * useful, 0.0)
        values[:, _F["sum_t_y"]] = np.where(in_y, t0, 0.0)
        values[:, _F["n_t"]] = has_t
        values[:, _F["sum_t"]] = t0
        values[:, _F["n_c"]] = has_c
        values[:, _F["sum_c"]] = c0

        self._accumulate("total", np.zeros(n, dtype=np.int32), values)
        self._accumulate("function", func_ids, values)
        self._accumulate("model", model_ids, values)
        self._accumulate("provider", provider_ids, values)
        if tag_lists is not None and observable is not None:
            rows = np.fromiter((i for i, ids in enumerate(tag_lists) for _ in ids), dtype=np.int64)
            ids = np.fromiter((g for ids in tag_lists for g in ids), dtype=np.int32)
            self._accumulate("tag", ids, values[rows])
            groups = len(self.index["tag"].keys)
            if len(self.tag_observable) < groups:
                self.tag_observable = np.concatenate([self.tag_observable, np.zeros(groups - len(self.tag_observable))])
            if len(ids):
                self.tag_observable += np.bincount(ids, weights=np.where(observable, t0, 0.0)[rows], minlength=groups)
        self.store.add({"q": q, "cost": cost, "t": t, "w": w, "func": func_ids, "model": model_ids}, tag_lists)
        self._lstar = None
        self._sorted = None
        self._terms = None

    def _add_cells(self, chunk: RunChunk, rows: list[int]) -> None:
        cells = self.cells
        every = len(rows) == len(chunk.run_id)
        pick = (lambda values: values) if every else (lambda values: [values[i] for i in rows])  # noqa: E731
        ids = np.fromiter(
            map(cells.get, zip(pick(chunk.function), pick(chunk.provider), pick(chunk.model))), dtype=np.int64, count=len(rows)
        )
        tokens = np.nan_to_num(_floats(pick(chunk.cell_output_tokens)))
        observable = np.array([bool(v) for v in pick(chunk.observable)], dtype=bool)
        weights = np.where(observable, tokens, 0.0)
        size = len(cells.keys)
        if len(self.cell_observable) < size:
            self.cell_observable = np.concatenate([self.cell_observable, np.zeros(size - len(self.cell_observable))])
        self.cell_observable += np.bincount(ids, weights=weights, minlength=size)

    def observable_tokens(self, dim: str) -> dict[Any, float]:
        """Unused-coverage numerators per group key of ``dim`` (function, model, provider, total, tag)."""
        if dim == "tag":
            return {key: float(self.tag_observable[i]) for i, key in enumerate(self.index["tag"].keys) if i < len(self.tag_observable)}
        out: dict[Any, float] = {}
        for i, (function, provider, model) in enumerate(self.cells.keys):
            key = {"total": "total", "function": function, "model": (provider, model), "provider": provider}[dim]
            out[key] = out.get(key, 0.0) + float(self.cell_observable[i])
        return out

    def _tag_ids(self, tags: list[Any]) -> list[tuple[int, ...]]:
        index = self.index["tag"]
        out: list[tuple[int, ...]] = []
        for value in tags:
            items = _tag_items(value)
            if self.tag_key is not None:
                found = [(k, v) for k, v in items if k == self.tag_key]
                items = found or [(self.tag_key, UNTAGGED)]
            elif not items:
                items = [(UNTAGGED, UNTAGGED)]
            out.append(tuple(index.get(item) for item in items))
        return out

    def _accumulate(self, dim: str, ids: np.ndarray, values: np.ndarray) -> None:
        groups = len(self.index[dim].keys)
        sums = self.sums[dim]
        if sums.shape[0] < groups:
            sums = np.vstack([sums, np.zeros((groups - sums.shape[0], len(_FIELDS)))])
        if len(ids):
            for j in range(len(_FIELDS)):
                sums[:, j] += np.bincount(ids, weights=values[:, j], minlength=groups)
        self.sums[dim] = sums

    # --- results ----------------------------------------------------------------------------

    @property
    def sampled(self) -> bool:
        return self.store.sampled

    def keys(self, dim: str) -> list[Any]:
        return list(self.index[dim].keys)

    def lstar(self) -> dict[int, float | None]:
        """L* per function id: median output tokens of its successful runs (None below the minimum)."""
        if self._lstar is None:
            data = self.store.data
            ok = (~np.isnan(data["q"])) & (np.nan_to_num(data["q"], nan=-1.0) >= self.settings.tau) & ~np.isnan(data["t"])
            result: dict[int, float | None] = {}
            for fid in range(len(self.index["function"].keys)):
                values = data["t"][ok & (data["func"] == fid)]
                result[fid] = float(np.median(values)) if len(values) >= self.settings.lcqe_min_successes else None
            self._lstar = result
        return self._lstar

    def _canonical(self) -> dict[str, np.ndarray]:
        """The stored runs' q, function and model ids sorted by (function name, q)."""
        if self._sorted is None:
            data = self.store.data
            names = self.index["function"].keys
            rank = np.empty(len(names), dtype=np.int64)
            rank[sorted(range(len(names)), key=lambda i: str(names[i]))] = np.arange(len(names))
            order = np.lexsort((data["q"], rank[data["func"]])) if len(data["q"]) else np.zeros(0, dtype=np.int64)
            self._sorted = {name: data[name][order] for name in ("q", "func", "model")}
        return self._sorted

    def _lcqe_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """Per stored run: its q·min(1, L*/T)^α term, and whether it counts (E, T known, L* known)."""
        if self._terms is None:
            self._terms = self._compute_lcqe_terms()
        return self._terms

    def _compute_lcqe_terms(self) -> tuple[np.ndarray, np.ndarray]:
        data = self.store.data
        lstar = self.lstar()
        ls = np.array([np.nan if lstar.get(int(f)) is None else lstar[int(f)] for f in range(len(self.index["function"].keys))])
        per_run_l = ls[data["func"]] if len(ls) else np.full(len(data["q"]), np.nan)
        t = data["t"]
        valid = (~np.isnan(data["q"])) & (~np.isnan(data["cost"])) & (~np.isnan(t)) & (~np.isnan(per_run_l))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(t > 0, np.minimum(1.0, per_run_l / np.where(t > 0, t, 1.0)), 1.0)
        terms = np.nan_to_num(data["q"]) * np.power(np.nan_to_num(ratio, nan=0.0), self.settings.alpha)
        return terms, valid

    def figures(self, dim: str) -> dict[Any, dict[str, Any]]:
        """Quality and run-level efficiency per group key of ``dim``."""
        sums = self.sums[dim]
        keys = self.index[dim].keys
        terms, valid = self._lcqe_terms()
        data = self.store.data
        if dim == "total":
            member = [np.ones(len(terms), dtype=bool)]
        elif dim == "function":
            member = [data["func"] == i for i in range(len(keys))]
        elif dim == "model":
            member = [data["model"] == i for i in range(len(keys))]
        elif dim == "provider":
            provider_of_model = np.array(
                [self.index["provider"].ids[p] for p, _ in self.index["model"].keys], dtype=np.int32
            )
            per_run = provider_of_model[data["model"]] if len(provider_of_model) else np.zeros(0, dtype=np.int32)
            member = [per_run == i for i in range(len(keys))]
        else:
            tags = self.store.tags or []
            member = [np.array([i in t for t in tags], dtype=bool) for i in range(len(keys))]
        out: dict[Any, dict[str, Any]] = {}
        for i, key in enumerate(keys):
            row = sums[i] if i < sums.shape[0] else np.zeros(len(_FIELDS))
            mask = member[i] & valid if len(terms) else np.zeros(0, dtype=bool)
            lcqe = float(terms[mask].mean()) if mask.any() else None
            out[key] = _figures(row, lcqe)
        return out

    def quality_sample(self, dim: str, key: Any, *, canonical: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(q, function id)`` of the stored runs with a quality in group ``key`` of ``dim``;
        ``canonical``: sorted by (function name, q), an order that does not depend on the order
        the runs were read in (the store is sorted once, then each group is a subset of it)."""
        data = self._canonical() if canonical else self.store.data
        has_q = ~np.isnan(data["q"])
        if dim == "total":
            mask = has_q
        elif dim == "function":
            fid = self.index["function"].ids.get(key)
            mask = has_q & (data["func"] == (-1 if fid is None else fid))
        elif dim == "model":
            mid = self.index["model"].ids.get(key)
            mask = has_q & (data["model"] == (-1 if mid is None else mid))
        else:
            raise ValueError(f"no quality samples by {dim}")
        return data["q"][mask], data["func"][mask]


def _figures(row: np.ndarray, lcqe: float | None) -> dict[str, Any]:
    def f(name: str) -> float:
        return float(row[_F[name]])

    runs = int(f("runs"))
    n_q, n_e, n_y = int(f("n_q")), int(f("n_e")), int(f("n_y"))
    n_success_e = int(f("n_success_e"))
    return {
        "runs": runs,
        "quality": {
            "mean": f("sum_q") / n_q if n_q else None,
            "coverage": n_q / runs if runs else None,
            "success_rate": f("n_success") / n_q if n_q else None,
            "runs": n_q,
            "failed_runs": int(f("n_failed")),
        },
        "efficiency": {
            "value_per_dollar": f("sum_q_e") / f("sum_c_e") if n_e and f("sum_c_e") > 0 else None,
            "quality_weighted_yield": f("sum_qu_y") / f("sum_t_y") if n_y and f("sum_t_y") > 0 else None,
            "cost_per_success": f("sum_c_e") / n_success_e if n_success_e else None,
            "length_controlled": lcqe,
            "runs": n_e,
            "coverage": n_e / runs if runs else None,
        },
        # Ungated side figures, for alarms and the model table only (never used to rank).
        "_hidden": {
            "cost_per_run": f("sum_c_e") / n_e if n_e else None,
            "output_tokens_per_run": f("sum_t") / f("n_t") if f("n_t") else None,
        },
    }


def _select(chunk: RunChunk, rows: list[int]) -> RunChunk:
    from operator import itemgetter

    if len(rows) == len(chunk.run_id):
        return chunk
    get = itemgetter(*rows)

    def pick(values: list[Any] | None) -> Any:
        if values is None:
            return None
        got = get(values)
        return list(got) if len(rows) > 1 else [got]

    return RunChunk(**{name: pick(getattr(chunk, name)) for name in RunChunk.__dataclass_fields__})


def _mapped(codes: np.ndarray, id_of: Any) -> np.ndarray:
    """Small-integer codes to this table's group ids (``id_of(code)``, called once per distinct
    code, in order of first appearance so ids are given as a row-by-row pass would)."""
    if not len(codes):
        return np.zeros(0, dtype=np.int32)
    distinct, first = np.unique(codes, return_index=True)
    table = np.zeros(int(distinct[-1]) + 1, dtype=np.int32)
    for j in np.argsort(first, kind="stable").tolist():
        table[distinct[j]] = id_of(int(distinct[j]))
    return table[codes]


def _floats(values: list[Any]) -> np.ndarray:
    """Numbers to float64, None to NaN (numpy's own conversion, no Python loop)."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _tag_items(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, dict):
        return []
    return sorted((str(k), str(v)) for k, v in value.items())
