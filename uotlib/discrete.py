"""Exact and numerical solvers for the small transport problems of the book.

The chapters "Optimal transport" and "Unbalanced optimal transport" check
every formula they derive on problems with a few dozen points, where each
quantity can be computed to high accuracy: the primal problems, their
(semi-)duals and, in one dimension, the monotone rearrangement. Each public
function implements one equation; the label in brackets is the one used in
the book.

Notation used throughout:

* ``a`` (n,), ``b`` (m,): non-negative weights of the source points x_i and
  of the target points y_j.
* ``C`` (n, m): the cost matrix C_ij = c(x_i, y_j).
* ``plan`` (n, m): a transport plan pi >= 0; ``pi 1`` and ``pi^T 1`` are its
  marginals.
* ``v`` (m,): a potential on the target points; ``v^c`` (n,) its c-transform.
* ``psi1``, ``psi2``: names of the entropy functions that relax the source
  and the target marginal, the keys of :data:`ENTROPIES` (the same names as
  :data:`uotlib.losses.PSI_STAR`).

The balanced problems are linear programs, solved by HiGHS through
``scipy.optimize.linprog``. The unbalanced ones are smooth convex programs
with positivity (or linear inequality) constraints; they are solved by a
log-barrier path-following Newton method written here, whose optimality gap
is bounded by (number of constraints) / t at the final barrier weight t, so
the requested accuracy is reached by construction rather than hoped for.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.optimize import linprog
from scipy.special import expit, xlogy

log = logging.getLogger(__name__)

Array = np.ndarray
ScalarFn = Callable[[Array], Array]

# Marginals of an LP solution match their targets up to the solver's
# feasibility tolerance; an exact constraint (``linear`` Psi) is judged with
# this relative slack.
_LINEAR_TOL = 1e-8


class TransportSolution(NamedTuple):
    """Optimal value and optimal plan (n, m) of a primal problem."""

    value: float
    plan: Array


class PotentialSolution(NamedTuple):
    """Optimal value and optimal potential v (m,) of a semi-dual problem."""

    value: float
    potential: Array


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _as_weights(w: Array, name: str) -> Array:
    w = np.asarray(w, dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name} must be finite and non-negative, got {w}")
    return w


def _check_problem(a: Array, b: Array, C: Array) -> tuple[Array, Array, Array]:
    a = _as_weights(a, "a")
    b = _as_weights(b, "b")
    C = np.asarray(C, dtype=float)
    if C.shape != (a.size, b.size):
        raise ValueError(
            f"cost C must have shape (len(a), len(b)) = {(a.size, b.size)}, "
            f"got {C.shape}"
        )
    if not np.all(np.isfinite(C)):
        raise ValueError("cost C must be finite")
    return a, b, C


def _check_equal_mass(a: Array, b: Array) -> None:
    if abs(a.sum() - b.sum()) > 1e-9 * max(1.0, a.sum(), b.sum()):
        raise ValueError(
            "balanced OT needs equal masses, got sum(a) = "
            f"{a.sum():.12g} and sum(b) = {b.sum():.12g}"
        )


# ---------------------------------------------------------------------------
# Costs and marginals
# ---------------------------------------------------------------------------


def cost_matrix(x: Array, y: Array, tau: float = 1.0, power: float = 2.0) -> Array:
    """Cost matrix C_ij = tau * ||x_i - y_j||^power [eq. uot-cost for power 2].

    ``x`` has shape (n,) or (n, d), ``y`` shape (m,) or (m, d); returns (n, m).
    With ``power = 2`` this is :func:`uotlib.losses.transport_cost` between
    every pair of points.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    x2 = x.reshape(x.shape[0], -1)
    y2 = y.reshape(y.shape[0], -1)
    if x2.shape[1] != y2.shape[1]:
        raise ValueError(
            f"x and y must live in the same space, got dimensions {x2.shape[1]} "
            f"and {y2.shape[1]}"
        )
    dist = np.sqrt(((x2[:, None, :] - y2[None, :, :]) ** 2).sum(axis=-1))
    return tau * dist**power


def plan_marginals(plan: Array) -> tuple[Array, Array]:
    """Marginals (pi 1, pi^T 1) of a plan of shape (n, m).

    ``pi 1`` (n,) is the mass each source point sends, ``pi^T 1`` (m,) the
    mass each target point receives. Comparing them with ``a`` and ``b``
    shows how much mass an unbalanced plan keeps at each point.
    """
    plan = np.asarray(plan, dtype=float)
    if plan.ndim != 2:
        raise ValueError(f"plan must be 2-D, got shape {plan.shape}")
    return plan.sum(axis=1), plan.sum(axis=0)


# ---------------------------------------------------------------------------
# Balanced optimal transport
# ---------------------------------------------------------------------------


def _marginal_operators(n: int, m: int) -> tuple[sparse.csr_matrix, ...]:
    # Row r of `rows` sums plan[r, :], row s of `cols` sums plan[:, s], for
    # the plan flattened in C order.
    rows = sparse.kron(sparse.eye(n), np.ones((1, m)), format="csr")
    cols = sparse.kron(np.ones((1, n)), sparse.eye(m), format="csr")
    return rows, cols


def solve_kantorovich(a: Array, b: Array, C: Array) -> TransportSolution:
    """Kantorovich problem min <C, pi> s.t. pi >= 0, pi 1 = a, pi^T 1 = b.

    [eq. ot-kantorovich]. ``a`` (n,) and ``b`` (m,) must have equal total
    mass; ``C`` is (n, m). Solved as a linear program by HiGHS; the plan it
    returns is a vertex of the transport polytope, hence has at most
    n + m - 1 non-zero entries.
    """
    a, b, C = _check_problem(a, b, C)
    _check_equal_mass(a, b)
    n, m = C.shape
    rows, cols = _marginal_operators(n, m)

    res = linprog(
        C.ravel(),
        A_eq=sparse.vstack([rows, cols]),
        b_eq=np.concatenate([a, b]),
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on the Kantorovich LP: {res.message}")

    plan = np.maximum(res.x.reshape(n, m), 0.0)
    return TransportSolution(float(C.ravel() @ res.x), plan)


def c_transform(v: Array, C: Array) -> Array:
    """c-transform v^c_i = min_j (C_ij - v_j) [eq. c-transform].

    ``v`` has shape (m,), ``C`` shape (n, m); returns shape (n,). It is the
    largest u with u_i + v_j <= C_ij for all i, j.
    """
    v = np.asarray(v, dtype=float)
    C = np.asarray(C, dtype=float)
    if C.ndim != 2 or v.shape != (C.shape[1],):
        raise ValueError(
            f"v must have shape (m,) for C of shape (n, m), got {v.shape} and {C.shape}"
        )
    return (C - v[None, :]).min(axis=1)


def cbar_transform(u: Array, C: Array) -> Array:
    """Transform in the other variable, u^cbar_j = min_i (C_ij - u_i).

    ``u`` has shape (n,), ``C`` shape (n, m); returns shape (m,). With
    :func:`c_transform` it gives the identities v^{c cbar} >= v and
    v^{c cbar c} = v^c of the chapter "Optimal transport".
    """
    return c_transform(u, np.asarray(C, dtype=float).T)


def ot_semi_dual_objective(v: Array, a: Array, b: Array, C: Array) -> float:
    """Balanced semi-dual sum_i a_i v^c_i + sum_j b_j v_j [eq. ot-semi-dual].

    ``v`` (m,), ``a`` (n,), ``b`` (m,), ``C`` (n, m). By weak duality it is
    at most the Kantorovich value for every ``v``.
    """
    a, b, C = _check_problem(a, b, C)
    return float(a @ c_transform(v, C) + b @ np.asarray(v, dtype=float))


def solve_ot_semi_dual(a: Array, b: Array, C: Array) -> PotentialSolution:
    """Maximise the balanced semi-dual [eq. ot-semi-dual] over v (m,).

    Method: the semi-dual is concave and piecewise linear in v, so its
    maximum is the optimum of a linear program. Writing the inner minimum
    with one variable u_i <= C_ij - v_j per source point gives the LP
    ``max a.u + b.v s.t. u_i + v_j <= C_ij``, solved by HiGHS. This is
    exact up to the solver's tolerance (about 1e-9), whereas (sub)gradient
    ascent on the non-smooth semi-dual converges like 1/sqrt(k) and would
    need millions of steps for six digits. The LP is solved independently of
    the primal one, and the value returned is the semi-dual evaluated at the
    optimal v with the exact c-transform, so it is a genuine semi-dual value.
    v is defined up to an additive constant; we fix v_0 = 0.
    """
    a, b, C = _check_problem(a, b, C)
    _check_equal_mass(a, b)
    n, m = C.shape
    rows, cols = _marginal_operators(n, m)

    # Variables z = (u, v); each (i, j) gives the row u_i + v_j <= C_ij.
    constraints = sparse.hstack([rows.T, cols.T], format="csr")
    bounds = [(None, None)] * n + [(0.0, 0.0)] + [(None, None)] * (m - 1)
    res = linprog(
        -np.concatenate([a, b]),
        A_ub=constraints,
        b_ub=C.ravel(),
        bounds=bounds,
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed on the semi-dual LP: {res.message}")

    v = res.x[n:]
    return PotentialSolution(ot_semi_dual_objective(v, a, b, C), v)


# ---------------------------------------------------------------------------
# One dimension: the monotone rearrangement
# ---------------------------------------------------------------------------


def _cdf(weights: Array) -> Array:
    # Dividing by the last partial sum itself makes the final value exactly
    # 1.0, so that every level in (0, 1] finds a point.
    cum = np.cumsum(weights)
    return cum / cum[-1]


def quantile_function(points: Array, weights: Array, levels: Array) -> Array:
    """Quantile function F^{-1}(t) = min {x : F(x) >= t} [eq. quantile].

    ``points`` (n,) and ``weights`` (n,) describe a discrete measure on the
    line, F its cumulative distribution function normalised to total mass 1;
    ``levels`` has any shape with values in [0, 1]. Returns the same shape.
    """
    points = np.asarray(points, dtype=float)
    weights = _as_weights(weights, "weights")
    if points.shape != weights.shape:
        raise ValueError(
            f"points and weights must have the same shape, got {points.shape} "
            f"and {weights.shape}"
        )
    order = np.argsort(points, kind="stable")
    idx = np.searchsorted(_cdf(weights[order]), np.asarray(levels, dtype=float))
    return points[order][np.minimum(idx, points.size - 1)]


def _merged_levels(a_sorted: Array, b_sorted: Array) -> tuple[Array, Array]:
    # Between two consecutive jumps of either cumulative distribution both
    # quantile functions are constant: these intervals carry the coupling.
    cuts = np.unique(np.concatenate([[0.0], _cdf(a_sorted), _cdf(b_sorted)]))
    lengths = np.diff(cuts)
    mids = 0.5 * (cuts[1:] + cuts[:-1])
    return mids, lengths


def quantile_map_1d(x: Array, y: Array) -> Array:
    """Monotone (quantile) map T = G^{-1} o F on n equally weighted points.

    [eq. quantile-map]. ``x`` and ``y`` have shape (n,); returns T(x_i) for
    each i in the order of ``x``: the k-th smallest x goes to the k-th
    smallest y.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"x and y must be 1-D of the same length, got {x.shape} and {y.shape}"
        )
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return np.sort(y)[ranks]


def monotone_plan_1d(x: Array, a: Array, y: Array, b: Array) -> Array:
    """Monotone (north-west corner) coupling of two measures on the line.

    ``x`` (n,) with weights ``a`` (n,), ``y`` (m,) with weights ``b`` (m,),
    equal total masses. Returns the plan (n, m), in the order of the inputs,
    that couples equal quantile levels: the law of (F^{-1}(t), G^{-1}(t)) for
    t uniform on [0, 1], scaled by the total mass.
    """
    a, b = _as_weights(a, "a"), _as_weights(b, "b")
    _check_equal_mass(a, b)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != a.shape or y.shape != b.shape:
        raise ValueError(
            f"points and weights must match, got x {x.shape}, a {a.shape}, "
            f"y {y.shape}, b {b.shape}"
        )
    ox, oy = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")

    mids, lengths = _merged_levels(a[ox], b[oy])
    i = np.minimum(np.searchsorted(_cdf(a[ox]), mids), x.size - 1)
    j = np.minimum(np.searchsorted(_cdf(b[oy]), mids), y.size - 1)
    plan = np.zeros((x.size, y.size))
    np.add.at(plan, (ox[i], oy[j]), lengths * a.sum())
    return plan


def ot_cost_1d(x: Array, a: Array, y: Array, b: Array, power: float = 2.0) -> float:
    """Optimal cost on the line, M int_0^1 |F^{-1}(t) - G^{-1}(t)|^power dt.

    [eq. ot-1d]. ``x`` (n,) with weights ``a``, ``y`` (m,) with weights
    ``b``, M = sum(a) = sum(b). For power >= 1 the cost |x - y|^power is
    convex and the monotone coupling is optimal, so this equals the
    Kantorovich value with C_ij = |x_i - y_j|^power. Computed from the two
    quantile functions alone, with no plan and no LP.
    """
    a, b = _as_weights(a, "a"), _as_weights(b, "b")
    _check_equal_mass(a, b)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ox, oy = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    mids, lengths = _merged_levels(a[ox], b[oy])
    gap = quantile_function(x, a, mids) - quantile_function(y, b, mids)
    return float(a.sum() * (lengths * np.abs(gap) ** power).sum())


# ---------------------------------------------------------------------------
# Entropy functions Psi and their conjugates Psi*
# ---------------------------------------------------------------------------


def psi_linear(t: Array) -> Array:
    """Psi(t) = 0 if t = 1 else +inf: the marginal is a hard constraint."""
    t = np.asarray(t, dtype=float)
    return np.where(np.abs(t - 1.0) <= _LINEAR_TOL, 0.0, np.inf)


def psi_kl(t: Array) -> Array:
    """Psi(t) = t log t - t + 1 for t >= 0 (0 log 0 = 0), +inf for t < 0."""
    t = np.asarray(t, dtype=float)
    safe = np.maximum(t, 0.0)
    return np.where(t >= 0, xlogy(safe, safe) - safe + 1.0, np.inf)


def psi_exp(t: Array) -> Array:
    """Psi(t) = t log t - t for t >= 0: the KL entropy minus the constant 1."""
    return psi_kl(t) - 1.0


def psi_chi2(t: Array) -> Array:
    """Pearson entropy Psi(t) = (t - 1)^2 for t >= 0, +inf for t < 0."""
    t = np.asarray(t, dtype=float)
    return np.where(t >= 0, (t - 1.0) ** 2, np.inf)


def psi_softplus(t: Array) -> Array:
    """Psi(t) = t log t + (1 - t) log(1 - t) on [0, 1], +inf outside."""
    t = np.asarray(t, dtype=float)
    inside = (t >= 0) & (t <= 1)
    safe = np.clip(t, 0.0, 1.0)
    return np.where(inside, xlogy(safe, safe) + xlogy(1 - safe, 1 - safe), np.inf)


def psi_star_linear_np(s: Array) -> Array:
    """Psi*(s) = s, NumPy twin of :func:`uotlib.losses.psi_star_linear`."""
    return np.asarray(s, dtype=float)


def psi_star_kl_np(s: Array) -> Array:
    """Psi*(s) = exp(s) - 1, NumPy twin of :func:`uotlib.losses.psi_star_kl`."""
    return np.expm1(np.asarray(s, dtype=float))


def psi_star_exp_np(s: Array) -> Array:
    """Psi*(s) = exp(s), NumPy twin of :func:`uotlib.losses.psi_star_exp`."""
    return np.exp(np.asarray(s, dtype=float))


def psi_star_chi2_np(s: Array) -> Array:
    """Psi*(s) = s + s^2/4 for s >= -2 else -1 (twin of ``psi_star_chi2``)."""
    s = np.asarray(s, dtype=float)
    return np.where(s >= -2.0, s + 0.25 * s * s, -1.0)


def psi_star_softplus_np(s: Array) -> Array:
    """Psi*(s) = log(1 + exp(s)) (twin of ``psi_star_softplus``)."""
    return np.logaddexp(0.0, np.asarray(s, dtype=float))


@dataclass(frozen=True)
class Entropy:
    """An entropy function Psi, its conjugate Psi* and their derivatives.

    ``psi`` and ``psi_star`` are the functions of the table in the chapter
    "Unbalanced optimal transport" [eq. psi-conjugate]; the derivatives are
    what the Newton solvers need, ``dpsi`` and ``d2psi`` on the interior of
    ``domain`` only. ``domain`` = (lo, hi) is the closed interval where Psi
    is finite; ``hard`` marks the ``linear`` choice, whose Psi is the
    indicator of {1}, i.e. an exact marginal constraint. Every Psi here grows
    faster than linearly (Psi(t)/t -> inf), so a plan that puts mass where
    the reference measure has none has infinite divergence.
    """

    name: str
    psi: ScalarFn
    psi_star: ScalarFn
    dpsi: ScalarFn
    d2psi: ScalarFn
    dpsi_star: ScalarFn
    d2psi_star: ScalarFn
    domain: tuple[float, float]
    hard: bool = False


ENTROPIES: dict[str, Entropy] = {
    "linear": Entropy(
        "linear",
        psi_linear,
        psi_star_linear_np,
        dpsi=np.zeros_like,
        d2psi=np.zeros_like,
        dpsi_star=np.ones_like,
        d2psi_star=np.zeros_like,
        domain=(1.0, 1.0),
        hard=True,
    ),
    "kl": Entropy(
        "kl",
        psi_kl,
        psi_star_kl_np,
        dpsi=np.log,
        d2psi=np.reciprocal,
        dpsi_star=np.exp,
        d2psi_star=np.exp,
        domain=(0.0, np.inf),
    ),
    "exp": Entropy(
        "exp",
        psi_exp,
        psi_star_exp_np,
        dpsi=np.log,
        d2psi=np.reciprocal,
        dpsi_star=np.exp,
        d2psi_star=np.exp,
        domain=(0.0, np.inf),
    ),
    "chi2": Entropy(
        "chi2",
        psi_chi2,
        psi_star_chi2_np,
        dpsi=lambda t: 2.0 * (t - 1.0),
        d2psi=lambda t: np.full_like(t, 2.0),
        dpsi_star=lambda s: np.where(s >= -2.0, 1.0 + 0.5 * s, 0.0),
        d2psi_star=lambda s: np.where(s >= -2.0, 0.5, 0.0),
        domain=(0.0, np.inf),
    ),
    "softplus": Entropy(
        "softplus",
        psi_softplus,
        psi_star_softplus_np,
        dpsi=lambda t: np.log(t) - np.log1p(-t),
        d2psi=lambda t: 1.0 / (t * (1.0 - t)),
        dpsi_star=expit,
        d2psi_star=lambda s: expit(s) * expit(-s),
        domain=(0.0, 1.0),
    ),
}


def get_entropy(name: str) -> Entropy:
    """Return the entropy function registered under ``name``."""
    try:
        return ENTROPIES[name]
    except KeyError:
        valid = ", ".join(sorted(ENTROPIES))
        raise ValueError(
            f"unknown entropy {name!r}; expected one of: {valid}"
        ) from None


def csiszar_divergence(p: Array, q: Array, psi: str) -> float:
    """Csiszar divergence D_Psi(p | q) = sum_i q_i Psi(p_i / q_i) [eq. csiszar].

    ``p`` and ``q`` are non-negative arrays of the same shape (n,). Where
    q_i = 0 the term is the limit q Psi(p/q) as q -> 0: zero if p_i = 0 and
    p_i * lim_t Psi(t)/t = +inf otherwise (for every Psi of :data:`ENTROPIES`).
    """
    entropy = get_entropy(psi)
    p = np.asarray(p, dtype=float)
    q = _as_weights(q, "q")
    if p.shape != q.shape:
        raise ValueError(
            f"p and q must have the same shape, got {p.shape} and {q.shape}"
        )

    pos = q > 0
    if np.any(p[~pos] != 0):
        return float(np.inf)
    return float((q[pos] * entropy.psi(p[pos] / q[pos])).sum())


# ---------------------------------------------------------------------------
# Unbalanced optimal transport: objectives
# ---------------------------------------------------------------------------


def uot_primal_objective(
    plan: Array, a: Array, b: Array, C: Array, psi1: str, psi2: str
) -> float:
    """UOT primal <C, pi> + D_Psi1(pi 1 | a) + D_Psi2(pi^T 1 | b).

    [eq. uot-primal]. ``plan`` and ``C`` are (n, m), ``a`` (n,), ``b`` (m,).
    Returns +inf for a plan with negative entries or outside the divergences'
    domains.
    """
    a, b, C = _check_problem(a, b, C)
    plan = np.asarray(plan, dtype=float)
    if plan.shape != C.shape:
        raise ValueError(f"plan must have shape {C.shape}, got {plan.shape}")
    if np.any(plan < 0):
        return float(np.inf)
    p, q = plan_marginals(plan)
    divergences = csiszar_divergence(p, a, psi1) + csiszar_divergence(q, b, psi2)
    return float((C * plan).sum() + divergences)


def uot_dual_objective(
    u: Array, v: Array, a: Array, b: Array, psi1: str, psi2: str
) -> float:
    """Dual sum_i a_i [-Psi1*(-u_i)] + sum_j b_j [-Psi2*(-v_j)] [eq. uot-dual].

    ``u`` (n,), ``v`` (m,); the dual maximises it over u_i + v_j <= C_ij.
    """
    e1, e2 = get_entropy(psi1), get_entropy(psi2)
    a, b = _as_weights(a, "a"), _as_weights(b, "b")
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    # Points of zero weight contribute nothing, even where Psi* overflows.
    pa, pb = a > 0, b > 0
    source = a[pa] @ e1.psi_star(-u[pa])
    target = b[pb] @ e2.psi_star(-v[pb])
    return float(-source - target)


def uot_semi_dual_objective(
    v: Array, a: Array, b: Array, C: Array, psi1: str, psi2: str
) -> float:
    """Semi-dual UOT objective [eq. uot-semi-dual].

    J(v) = sum_i a_i [-Psi1*(-v^c_i)] + sum_j b_j [-Psi2*(-v_j)], with ``v``
    (m,), ``a`` (n,), ``b`` (m,), ``C`` (n, m). By weak duality J(v) is at
    most the primal value for every v.
    """
    a, b, C = _check_problem(a, b, C)
    return uot_dual_objective(c_transform(v, C), v, a, b, psi1, psi2)


def uot_marginals_from_potential(
    v: Array, a: Array, b: Array, C: Array, psi1: str, psi2: str
) -> tuple[Array, Array]:
    """Marginals of the optimal plan read off an optimal potential.

    [eq. uot-marginals]: pi 1 = a * Psi1*'(-v^c) and pi^T 1 = b * Psi2*'(-v).
    ``v`` (m,); returns arrays of shape (n,) and (m,). For ``linear`` the
    factor is 1 and the marginal is a (or b) itself.
    """
    a, b, C = _check_problem(a, b, C)
    e1, e2 = get_entropy(psi1), get_entropy(psi2)
    v = np.asarray(v, dtype=float)
    return a * e1.dpsi_star(-c_transform(v, C)), b * e2.dpsi_star(-v)


# ---------------------------------------------------------------------------
# Unbalanced optimal transport: solvers
# ---------------------------------------------------------------------------


def _barrier_path(
    merit: Callable[[Array, float], float],
    newton: Callable[[Array, float], tuple[Array, float]],
    x0: Array,
    n_barrier: int,
    tol: float,
    project: Callable[[Array], Array] | None = None,
) -> Array:
    """Minimise t F(x) - sum log(slacks) for t -> inf by damped Newton steps.

    ``merit(x, t)`` is the barrier objective (+inf outside its domain),
    ``newton(x, t)`` returns the Newton direction and the squared Newton
    decrement, ``project`` (optional) maps a point back onto the equality
    constraints. The central point at weight t is within n_barrier / t of
    the optimum of F, so we stop once that bound is below ``tol``.
    """
    project = project or (lambda x: x)
    # With every slack of order 1 / n_barrier (a plan of unit mass) the
    # barrier's gradient is of order n_barrier per variable: starting at
    # t = n_barrier balances it against F's and keeps the first centre away
    # from the boundary of F's own domain.
    x, t, mu = x0.copy(), float(n_barrier), 10.0
    total_steps = 0
    while True:
        for _ in range(100):
            d, lam2 = newton(x, t)
            # lam2 / (2 t) bounds the excess of F over the centre; beyond
            # lam2 ~ 1e-3 Newton is converging quadratically anyway.
            if lam2 <= min(1e-3, tol * t):
                break
            f0 = merit(x, t)
            step = 1.0
            while step > 1e-16:
                x1 = project(x + step * d)
                f1 = merit(x1, t)
                # Armijo's test alone passes once step * lam2 is below the
                # round-off of f0; insist on a decrease that is really there.
                if f1 <= f0 - 0.25 * step * lam2 and f1 < f0:
                    break
                step *= 0.5
            else:
                # At large t the decrement is lost in the round-off of t F:
                # no step decreases the merit, the centre is as good as the
                # arithmetic allows.
                break
            x = x1
            total_steps += 1
        else:
            warnings.warn(
                f"Newton did not converge at barrier weight t = {t:.3g}",
                RuntimeWarning,
                stacklevel=3,
            )
        if n_barrier / t <= tol:
            log.debug("barrier method: %d Newton steps, t = %.3g", total_steps, t)
            return x
        t *= mu


def _reduce_support(a: Array, b: Array, C: Array) -> tuple[Array, Array, Array]:
    # Points of zero weight can neither send nor receive mass (infinite
    # divergence), so the problems live on the supports of a and b.
    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    if rows.size == 0 or cols.size == 0:
        raise ValueError("a and b must each have at least one positive weight")
    return rows, cols, C[np.ix_(rows, cols)]


def _interior_divergence(p: Array, q: Array, entropy: Entropy) -> float:
    # D_Psi on the open domain, +inf on or beyond a finite upper end (where
    # Psi' blows up and Newton would stall); q > 0 here.
    ratio = p / q
    if np.any(ratio >= entropy.domain[1]):
        return np.inf
    return float((q * entropy.psi(ratio)).sum())


def _primal_start(a: Array, b: Array, e1: Entropy, e2: Entropy) -> Array:
    # A strictly positive plan that satisfies the hard constraints exactly
    # and lies strictly inside every bounded domain.
    if e1.hard:
        plan = np.outer(a, b / b.sum())
    elif e2.hard:
        plan = np.outer(a / a.sum(), b)
    else:
        plan = 0.5 * np.outer(a, b) / max(a.sum(), b.sum())
    p, q = plan.sum(axis=1), plan.sum(axis=0)
    too_full = (not e1.hard and np.any(p / a >= e1.domain[1])) or (
        not e2.hard and np.any(q / b >= e2.domain[1])
    )
    if too_full:
        raise ValueError(
            f"no strictly feasible plan for psi1 = {e1.name!r}, psi2 = {e2.name!r} "
            f"with sum(a) = {a.sum():.6g} and sum(b) = {b.sum():.6g}: a hard "
            "marginal must carry less mass than a 'softplus' one allows"
        )
    return plan


def solve_uot_primal(
    a: Array, b: Array, C: Array, psi1: str = "kl", psi2: str = "kl", tol: float = 1e-9
) -> TransportSolution:
    """Minimise the UOT primal [eq. uot-primal] over plans pi >= 0 (n, m).

    ``a`` (n,), ``b`` (m,), ``C`` (n, m); ``psi1``/``psi2`` name the entropy
    functions of :data:`ENTROPIES`. With ``linear`` on both sides this is the
    Kantorovich LP (:func:`solve_kantorovich`); otherwise a log-barrier
    Newton method on the plan, with a ``linear`` side kept as an exact
    equality constraint. The Hessian of <C, pi> + D1 + D2 is a diagonal plus
    a rank n + m term (the divergences depend on pi through its marginals
    only), so each Newton step costs one (n + m) x (n + m) solve. The value
    is within ``tol`` (absolute) of the optimum.
    """
    a, b, C = _check_problem(a, b, C)
    e1, e2 = get_entropy(psi1), get_entropy(psi2)
    if e1.hard and e2.hard:
        return solve_kantorovich(a, b, C)

    rows, cols, Cs = _reduce_support(a, b, C)
    a_s, b_s = a[rows], b[cols]
    n, m = Cs.shape
    # Hard sides carry their constraint exactly, so their divergence is 0.
    d1 = (lambda p: 0.0) if e1.hard else (lambda p: _interior_divergence(p, a_s, e1))
    d2 = (lambda q: 0.0) if e2.hard else (lambda q: _interior_divergence(q, b_s, e2))

    def merit(x: Array, t: float) -> float:
        if np.any(x <= 0):
            return np.inf
        plan = x.reshape(n, m)
        value = (Cs * plan).sum() + d1(plan.sum(axis=1)) + d2(plan.sum(axis=0))
        return t * value - np.log(x).sum() if np.isfinite(value) else np.inf

    def newton(x: Array, t: float) -> tuple[Array, float]:
        plan = x.reshape(n, m)
        p, q = plan.sum(axis=1), plan.sum(axis=0)
        grad = t * (Cs + e1.dpsi(p / a_s)[:, None] + e2.dpsi(q / b_s)[None, :])
        grad -= 1.0 / plan

        # Woodbury: H = D + U M U^T with D = diag(1 / pi^2) and U the two
        # marginal maps; a hard side has M = inf, i.e. M^{-1} = 0, which
        # turns the penalty into the exact constraint U^T d = 0.
        d_inv = plan**2
        m1 = np.zeros(n) if e1.hard else a_s / (t * e1.d2psi(p / a_s))
        m2 = np.zeros(m) if e2.hard else b_s / (t * e2.d2psi(q / b_s))
        K = np.block(
            [
                [np.diag(d_inv.sum(axis=1) + m1), d_inv],
                [d_inv.T, np.diag(d_inv.sum(axis=0) + m2)],
            ]
        )
        w = d_inv * grad
        z = np.linalg.solve(K, np.concatenate([w.sum(axis=1), w.sum(axis=0)]))
        d = -(w - d_inv * (z[:n, None] + z[None, n:]))

        # At large t the solve leaves round-off in a hard marginal of d that
        # is as large as the step itself; remove it in the metric of D.
        if e1.hard:
            d -= d_inv * (d.sum(axis=1) / d_inv.sum(axis=1))[:, None]
        if e2.hard:
            d -= d_inv * (d.sum(axis=0) / d_inv.sum(axis=0))[None, :]

        # The decrement d^T H d, not -grad . d: the gradient is huge and
        # orthogonal to the step up to round-off once a constraint is hard.
        lam2 = ((d / plan) ** 2).sum()
        if not e1.hard:
            lam2 += (d.sum(axis=1) ** 2 / m1).sum()
        if not e2.hard:
            lam2 += (d.sum(axis=0) ** 2 / m2).sum()
        return d.ravel(), float(lam2)

    def project(x: Array) -> Array:
        # Newton steps keep a hard marginal only up to round-off, and the
        # merit cannot see the drift; rescaling rows (columns) removes it
        # while keeping every entry positive.
        plan = x.reshape(n, m)
        if e1.hard:
            plan = plan * (a_s / plan.sum(axis=1))[:, None]
        if e2.hard:
            plan = plan * (b_s / plan.sum(axis=0))[None, :]
        return plan.ravel()

    x0 = _primal_start(a_s, b_s, e1, e2).ravel()
    x = _barrier_path(merit, newton, x0, n * m, tol, project)

    plan = np.zeros_like(C)
    plan[np.ix_(rows, cols)] = x.reshape(n, m)
    return TransportSolution(uot_primal_objective(plan, a, b, C, psi1, psi2), plan)


def solve_uot_semi_dual(
    a: Array, b: Array, C: Array, psi1: str = "kl", psi2: str = "kl", tol: float = 1e-9
) -> PotentialSolution:
    """Maximise the semi-dual UOT objective [eq. uot-semi-dual] over v (m,).

    Method: J(v) is concave but not smooth (the c-transform is a minimum).
    Since -Psi1*(-u) is non-decreasing in u, J's maximum equals that of the
    smooth dual [eq. uot-dual] over the polyhedron u_i + v_j <= C_ij, the
    hypograph form of the inner minimum. That problem in n + m variables is
    solved by a log-barrier Newton method to an absolute accuracy ``tol``.
    The value returned is J at the optimal v, with the exact c-transform:
    a true semi-dual value, hence a lower bound on the primal optimum, while
    :func:`solve_uot_primal` gives an upper bound. With ``linear`` on both
    sides the problem is the balanced LP of :func:`solve_ot_semi_dual`.
    """
    a, b, C = _check_problem(a, b, C)
    e1, e2 = get_entropy(psi1), get_entropy(psi2)
    if e1.hard and e2.hard:
        return solve_ot_semi_dual(a, b, C)

    rows, cols, Cs = _reduce_support(a, b, C)
    a_s, b_s = a[rows], b[cols]
    n, m = Cs.shape

    def merit(z: Array, t: float) -> float:
        slack = Cs - z[:n, None] - z[None, n:]
        if np.any(slack <= 0):
            return np.inf
        return (
            -t * uot_dual_objective(z[:n], z[n:], a_s, b_s, psi1, psi2)
            - np.log(slack).sum()
        )

    def newton(z: Array, t: float) -> tuple[Array, float]:
        u, v = z[:n], z[n:]
        inv = 1.0 / (Cs - u[:, None] - v[None, :])
        inv2 = inv**2
        grad = np.concatenate(
            [
                -t * a_s * e1.dpsi_star(-u) + inv.sum(axis=1),
                -t * b_s * e2.dpsi_star(-v) + inv.sum(axis=0),
            ]
        )
        H = np.block(
            [
                [np.diag(t * a_s * e1.d2psi_star(-u) + inv2.sum(axis=1)), inv2],
                [inv2.T, np.diag(t * b_s * e2.d2psi_star(-v) + inv2.sum(axis=0))],
            ]
        )
        # H may be singular along u + k, v - k when both curvatures vanish
        # (a linear side, or chi2 in its flat branch); least squares picks
        # the minimum-norm step, which leaves that neutral direction alone.
        d = np.linalg.lstsq(H, -grad, rcond=None)[0]
        return d, float(-(grad @ d))

    z0 = np.concatenate([Cs.min(axis=1) - 1.0, np.zeros(m)])
    z = _barrier_path(merit, newton, z0, n * m, tol)

    # Points outside the support of b get the largest potential that keeps
    # v^c unchanged, so that the returned v is defined everywhere.
    v = np.empty(b.size)
    v[cols] = z[n:]
    u = c_transform(z[n:], Cs)
    outside = np.setdiff1d(np.arange(b.size), cols)
    if outside.size:
        v[outside] = (C[np.ix_(rows, outside)] - u[:, None]).min(axis=0)
    return PotentialSolution(uot_semi_dual_objective(v, a, b, C, psi1, psi2), v)
