"""Non-inferiority gate: a one-sided bootstrap bound on the change in quality, stratified by function.

Two sets of runs are compared, A (the baseline: last week, or the reference model) and B
(the candidate). Within each function both served (a *stratum*), runs are resampled with
replacement, independently for A and B; the change is the stratum-weighted difference of
means (weights: the stratum's share of A + B runs), so a shift in the mix of functions is not
mistaken for a change in quality. Two changes are bounded from below, from the same
resamples: mean quality ``q`` and success rate (share of runs with ``q >= tau``).

B is *non-inferior* when both lower bounds (the ``1 - confidence`` quantile, i.e. a one-sided
95% bound by default) are ``>= -delta``. With too few runs the answer is ``None`` (unknown),
and an unknown gate never lets an efficiency "win" count. B is *worse* (what alarms and the
"cheaper but worse" verdict need) when it is not non-inferior **and** a change's point
estimate is below ``-delta`` with its one-sided upper bound below 0: a gate that fails only
from noise blocks a win but raises no alarm.

Deterministic: the generator is seeded from the report's seed and the comparison's name, so
the same data always gives the same verdict, whatever order comparisons are made in. Sides
of 500 runs or more draw their resampled means from the bootstrap's normal limit (plug-in mean
and covariance over n; see :func:`_resampled_means`), so the cost does not grow with the
number of runs; sides beyond ``max_runs`` runs are subsampled first.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ("Gate", "noninferiority")


@dataclass(slots=True)
class Gate:
    """The result of one comparison (B against A)."""

    non_inferior: bool | None
    delta_quality: float | None = None  # point estimate of mean(q_B) - mean(q_A), stratified
    delta_quality_lower: float | None = None
    delta_success: float | None = None
    delta_success_lower: float | None = None
    delta_quality_upper: float | None = None
    delta_success_upper: float | None = None
    runs_a: int = 0
    runs_b: int = 0
    strata: list[str] = field(default_factory=list)
    reason: str | None = None
    delta: float = 0.02

    @property
    def worse(self) -> bool:
        """Evidence of a quality drop: not non-inferior, a point estimate beyond the margin, and
        that change's one-sided upper bound below zero (the drop is not noise).

        A gate can fail from noise alone (few runs, a success rate near tau); that is reported
        as "not shown non-inferior", which never lets a win count, but is not called worse.
        """
        if self.non_inferior is not False:
            return False
        margin = -self.delta

        def dropped(point: float | None, upper: float | None) -> bool:
            return point is not None and upper is not None and point < margin and upper < 0

        return dropped(self.delta_quality, self.delta_quality_upper) or dropped(self.delta_success, self.delta_success_upper)

    def to_json(self) -> dict[str, Any]:
        return {
            "non_inferior": self.non_inferior,
            "worse": self.worse,
            "delta_quality": _round(self.delta_quality),
            "delta_quality_lower": _round(self.delta_quality_lower),
            "delta_success_rate": _round(self.delta_success),
            "delta_success_rate_lower": _round(self.delta_success_lower),
            "delta_quality_upper": _round(self.delta_quality_upper),
            "delta_success_rate_upper": _round(self.delta_success_upper),
            "runs_a": self.runs_a,
            "runs_b": self.runs_b,
            "strata": list(self.strata),
            "reason": self.reason,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def noninferiority(
    a_q: np.ndarray,
    a_strata: np.ndarray,
    b_q: np.ndarray,
    b_strata: np.ndarray,
    *,
    key: str,
    strata_names: list[str] | None = None,
    tau: float = 0.7,
    delta: float = 0.02,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    min_runs: int = 10,
    min_per_stratum: int = 2,
    max_runs: int = 200_000,
    bound: bool = True,
) -> Gate:
    """Is B non-inferior to A in quality and success rate? (see the module docstring)."""
    a_q, b_q = np.asarray(a_q, dtype=float), np.asarray(b_q, dtype=float)
    a_strata, b_strata = np.asarray(a_strata), np.asarray(b_strata)
    by_a, by_b = _by_stratum(a_q, a_strata), _by_stratum(b_q, b_strata)
    shared = sorted(set(by_a) & set(by_b))
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])

    groups: list[tuple[Any, np.ndarray, np.ndarray]] = []
    for stratum in shared:
        qa = by_a[stratum]
        qb = by_b[stratum]
        if len(qa) >= min_per_stratum and len(qb) >= min_per_stratum:
            groups.append((stratum, qa, qb))
    # Huge sides are subsampled to at most max_runs runs, each stratum keeping its share.
    size_a = sum(len(g[1]) for g in groups)
    size_b = sum(len(g[2]) for g in groups)
    groups = [
        (s, _cap(qa, _share(len(qa), size_a, max_runs, min_per_stratum), rng), _cap(qb, _share(len(qb), size_b, max_runs, min_per_stratum), rng))
        for s, qa, qb in groups
    ]
    n_a = sum(len(g[1]) for g in groups)
    n_b = sum(len(g[2]) for g in groups)
    names = [strata_names[s] if strata_names is not None else str(s) for s, _, _ in groups]
    gate = Gate(non_inferior=None, runs_a=n_a, runs_b=n_b, strata=names, delta=delta)
    if not groups:
        gate.reason = "no function with scored runs on both sides"
        return gate
    if n_a < min_runs or n_b < min_runs:
        gate.reason = f"too few scored runs to compare (need {min_runs} on each side, have {n_a} and {n_b})"
        return gate

    total = float(n_a + n_b)
    point_q = point_s = 0.0
    for _, qa, qb in groups:
        weight = (len(qa) + len(qb)) / total
        point_q += weight * (qb.mean() - qa.mean())
        point_s += weight * ((qb >= tau).mean() - (qa >= tau).mean())
    gate.delta_quality = float(point_q)
    gate.delta_success = float(point_s)
    if not bound and point_q >= -delta and point_s >= -delta:
        # Only a drop can raise an alarm, and there is none beyond the margin: skip the bound.
        gate.reason = "no drop beyond the margin (bound not computed)"
        return gate
    boot_q = np.zeros(resamples)
    boot_s = np.zeros(resamples)
    for _, qa, qb in groups:
        weight = (len(qa) + len(qb)) / total
        ma, sa_ = _resampled_means(qa, tau, resamples, rng)
        mb, sb_ = _resampled_means(qb, tau, resamples, rng)
        boot_q += weight * (mb - ma)
        boot_s += weight * (sb_ - sa_)
    alpha = 1.0 - confidence
    gate.delta_quality_lower = float(np.quantile(boot_q, alpha))
    gate.delta_quality_upper = float(np.quantile(boot_q, 1.0 - alpha))
    gate.delta_success_upper = float(np.quantile(boot_s, 1.0 - alpha))
    gate.delta_success_lower = float(np.quantile(boot_s, alpha))
    gate.non_inferior = bool(gate.delta_quality_lower >= -delta and gate.delta_success_lower >= -delta)
    if not gate.non_inferior:
        worse = []
        if gate.delta_quality_lower < -delta:
            worse.append(f"quality change lower bound {gate.delta_quality_lower:+.3f}")
        if gate.delta_success_lower < -delta:
            worse.append(f"success-rate change lower bound {gate.delta_success_lower:+.3f}")
        gate.reason = " and ".join(worse) + f" below -{delta:g}"
    return gate


def _by_stratum(values: np.ndarray, strata: np.ndarray) -> dict[Any, np.ndarray]:
    """The values of each stratum, in their given order (one stable sort, not a mask per stratum)."""
    if not len(strata):
        return {}
    order = np.argsort(strata, kind="stable")
    ordered = strata[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts = np.concatenate(([0], cuts)).tolist()
    ends = np.concatenate((cuts, [len(ordered)])).tolist()
    return {ordered[i].item(): values[order[i:j]] for i, j in zip(starts, ends)}


#: From this many runs on, a side's resampled means are drawn from their normal limit.
NORMAL_FROM = 500


def _resampled_means(values: np.ndarray, tau: float, resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``q`` and of ``q >= tau`` over ``resamples`` bootstrap resamples of ``values``.

    Below ``NORMAL_FROM`` runs the runs are resampled with replacement. From there on the
    resampled means are drawn from the bootstrap distribution's normal limit — the sample means
    with the plug-in covariance of (q, success) divided by n — which at that size is the same
    distribution to well under a thousandth, at a cost that does not grow with n.
    """
    n = len(values)
    if n < NORMAL_FROM:
        index = rng.integers(0, n, size=(resamples, n), dtype=np.int32)
        drawn = values[index]  # one gather; success is a function of the drawn q
        return drawn.mean(axis=1), (drawn >= tau).mean(axis=1)
    success = (values >= tau).astype(float)
    mean = np.array([values.mean(), success.mean()])
    cov = np.cov(np.stack([values, success]), bias=True) / n
    draws = rng.multivariate_normal(mean, cov, size=resamples, method="cholesky" if np.all(np.linalg.eigvalsh(cov) > 0) else "svd")
    return draws[:, 0], draws[:, 1]


def _share(n: int, size: int, limit: int, floor: int) -> int:
    if size <= limit:
        return n
    return max(floor, int(round(limit * n / size)))


def _cap(values: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[rng.choice(len(values), size=limit, replace=False)]
