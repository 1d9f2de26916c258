"""Mathematics of the discrete solvers behind the chapters on OT and UOT.

Every check compares two independent computations (a primal and a dual
solver, an LP and a closed form, NumPy and torch) or a closed form, so that
a wrong sign or a missing term makes it fail.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from uotlib import discrete as D
from uotlib.losses import (
    PSI_STAR,
    ot_semi_dual_loss,
    transport_cost,
    uot_potential_loss,
)

NAMES = sorted(PSI_STAR)


def random_problem(
    seed: int, n: int, m: int, balanced: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights and a squared-distance cost between two random 2-D clouds."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(m, 2)) + np.array([1.0, 0.5])
    a = rng.uniform(0.5, 1.5, n)
    b = rng.uniform(0.5, 1.5, m)
    a /= a.sum()
    b /= b.sum() if balanced else b.sum() / 1.3
    return a, b, D.cost_matrix(x, y)


# ---------------------------------------------------------------------------
# Balanced OT
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n", "m"), [(0, 4, 6), (1, 12, 9), (2, 30, 30)])
def test_lp_value_equals_semi_dual_value(seed: int, n: int, m: int) -> None:
    a, b, C = random_problem(seed, n, m)
    primal = D.solve_kantorovich(a, b, C)
    dual = D.solve_ot_semi_dual(a, b, C)
    assert abs(primal.value - dual.value) <= 1e-8 * max(1.0, abs(primal.value))

    # The plan is feasible and its cost is the value.
    p, q = D.plan_marginals(primal.plan)
    np.testing.assert_allclose(p, a, atol=1e-10)
    np.testing.assert_allclose(q, b, atol=1e-10)
    assert np.isclose((C * primal.plan).sum(), primal.value, rtol=1e-12)


def test_lp_matches_best_permutation() -> None:
    # With n = m uniform weights the optimum is a permutation (Birkhoff), so
    # brute force over all 5! assignments is an independent answer.
    rng = np.random.default_rng(3)
    n = 5
    C = rng.uniform(size=(n, n))
    w = np.full(n, 1.0 / n)
    best = min(C[range(n), perm].mean() for perm in itertools.permutations(range(n)))
    assert math.isclose(D.solve_kantorovich(w, w, C).value, best, rel_tol=1e-10)


def test_semi_dual_is_below_primal_for_any_potential() -> None:
    a, b, C = random_problem(4, 7, 8)
    value = D.solve_kantorovich(a, b, C).value
    rng = np.random.default_rng(4)
    for _ in range(50):
        v = rng.normal(scale=2.0, size=b.size)
        assert D.ot_semi_dual_objective(v, a, b, C) <= value + 1e-12


def test_c_transform_identities() -> None:
    rng = np.random.default_rng(5)
    C = rng.uniform(size=(6, 4))
    v = rng.normal(size=4)
    vc = D.c_transform(v, C)

    # v^c is the largest admissible u: admissible, and tight at some j.
    slack = C - vc[:, None] - v[None, :]
    assert slack.min() >= -1e-15
    np.testing.assert_allclose(slack.min(axis=1), 0.0, atol=1e-15)

    # Closed form on one row, the double transform improves v, and the
    # triple transform is the single one.
    assert vc[0] == pytest.approx(min(C[0, j] - v[j] for j in range(4)))
    vcc = D.cbar_transform(vc, C)
    assert np.all(vcc >= v - 1e-15)
    np.testing.assert_allclose(D.c_transform(vcc, C), vc, atol=1e-15)

    # Shifting v by k shifts v^c by -k, and with equal masses the semi-dual
    # is blind to the shift.
    np.testing.assert_allclose(D.c_transform(v + 0.7, C), vc - 0.7, atol=1e-15)
    a, b = np.full(6, 1 / 6), np.full(4, 1 / 4)
    j_v = D.ot_semi_dual_objective(v, a, b, C)
    assert D.ot_semi_dual_objective(v + 0.7, a, b, C) == pytest.approx(j_v)
    assert D.ot_semi_dual_objective(vcc, a, b, C) >= j_v - 1e-15


def test_semi_dual_matches_torch_loss() -> None:
    # With T(x_i) = argmin_j C_ij - v_j, the library's ot_semi_dual_loss on
    # uniform batches is minus the discrete semi-dual.
    a, b, C = random_problem(6, 10, 10)
    a, b = np.full(10, 0.1), np.full(10, 0.1)
    v = np.random.default_rng(6).normal(size=10)
    j_star = np.argmin(C - v[None, :], axis=1)
    loss = ot_semi_dual_loss(
        torch.tensor(v[j_star]), torch.tensor(v), torch.tensor(C[range(10), j_star])
    )
    assert loss.item() == pytest.approx(-D.ot_semi_dual_objective(v, a, b, C))


def test_cost_matrix_matches_torch_transport_cost() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    C = D.cost_matrix(x, y, tau=0.3)
    for j in range(5):
        column = transport_cost(
            torch.tensor(x), torch.tensor(np.repeat(y[j : j + 1], 4, axis=0)), 0.3
        )
        np.testing.assert_allclose(C[:, j], column.numpy(), rtol=1e-14)
    assert D.cost_matrix([0.0, 1.0], [3.0], power=1.0).tolist() == [[3.0], [2.0]]


def test_unequal_masses_are_rejected() -> None:
    a, b, C = random_problem(7, 3, 4, balanced=False)
    with pytest.raises(ValueError, match="equal masses"):
        D.solve_kantorovich(a, b, C)
    with pytest.raises(ValueError, match="shape"):
        D.solve_kantorovich(a, b, C.T)


# ---------------------------------------------------------------------------
# One dimension
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_quantile_cost_equals_lp_in_1d(seed: int, power: float) -> None:
    rng = np.random.default_rng(10 + seed)
    n, m = rng.integers(3, 16, size=2)
    x, y = rng.normal(size=n), 2.0 * rng.normal(size=m) + 1.0
    a, b = rng.uniform(size=n), rng.uniform(size=m)
    a /= a.sum()
    b /= b.sum()
    C = np.abs(x[:, None] - y[None, :]) ** power

    lp = D.solve_kantorovich(a, b, C).value
    assert D.ot_cost_1d(x, a, y, b, power) == pytest.approx(lp, rel=1e-10)

    plan = D.monotone_plan_1d(x, a, y, b)
    p, q = D.plan_marginals(plan)
    np.testing.assert_allclose(p, a, atol=1e-14)
    np.testing.assert_allclose(q, b, atol=1e-14)
    assert (C * plan).sum() == pytest.approx(lp, rel=1e-10)


def test_quantile_map_is_sorting_and_optimal() -> None:
    rng = np.random.default_rng(20)
    x, y = rng.normal(size=9), rng.exponential(size=9)
    tx = D.quantile_map_1d(x, y)
    np.testing.assert_array_equal(np.sort(tx), np.sort(y))
    # Monotone: a larger x never goes to a smaller y.
    order = np.argsort(x)
    assert np.all(np.diff(tx[order]) >= 0)
    w = np.full(9, 1 / 9)
    lp = D.solve_kantorovich(w, w, (x[:, None] - y[None, :]) ** 2).value
    assert np.mean((x - tx) ** 2) == pytest.approx(lp, rel=1e-10)


def test_quantile_function_closed_form() -> None:
    # Points 0, 1, 3 with masses 1/4, 1/2, 1/4.
    levels = np.array([0.0, 0.1, 0.25, 0.26, 0.75, 0.76, 1.0])
    got = D.quantile_function([3.0, 0.0, 1.0], [0.25, 0.25, 0.5], levels)
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.0, 1.0, 1.0, 3.0, 3.0])


# ---------------------------------------------------------------------------
# Entropy functions and their conjugates
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_numpy_psi_star_equals_torch(name: str) -> None:
    s = np.linspace(-6.0, 4.0, 201)
    torch_value = PSI_STAR[name](torch.tensor(s, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(D.ENTROPIES[name].psi_star(s), torch_value, rtol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_psi_star_is_conjugate_of_psi(name: str) -> None:
    entropy = D.ENTROPIES[name]
    lo, hi = entropy.domain
    t = np.array([1.0]) if entropy.hard else np.linspace(lo, min(hi, 25.0), 250_001)
    psi_t = entropy.psi(t)
    for s in np.linspace(-3.0, 3.0, 13):
        sup = np.max(s * t - psi_t)
        # A grid of step 1e-4 misses the sup by O(step^2 * Psi'').
        assert sup == pytest.approx(entropy.psi_star(s), abs=1e-6), s
        # Fenchel-Young holds with equality at t = (Psi*)'(s).
        t_s = entropy.dpsi_star(np.array(s))
        assert entropy.psi(t_s) + entropy.psi_star(s) == pytest.approx(s * t_s)


@pytest.mark.parametrize("name", NAMES)
def test_psi_star_is_convex_and_non_decreasing(name: str) -> None:
    s = torch.linspace(-8.0, 5.0, 1301, dtype=torch.float64)
    f = PSI_STAR[name](s)
    first = f[1:] - f[:-1]
    second = f[2:] - 2 * f[1:-1] + f[:-2]
    assert first.min().item() >= -1e-12
    assert second.min().item() >= -1e-12


def test_closed_forms_at_fixed_points() -> None:
    def star(name: str, s: float) -> float:
        return PSI_STAR[name](torch.tensor(s, dtype=torch.float64)).item()

    assert star("kl", 0.0) == 0.0
    assert star("kl", 1.0) == pytest.approx(math.e - 1)
    assert star("exp", 0.0) == 1.0
    assert star("chi2", -3.0) == -1.0
    assert star("chi2", -2.0) == -1.0
    assert star("chi2", 2.0) == 3.0
    assert star("chi2", 0.0) == 0.0
    assert star("softplus", 0.0) == pytest.approx(math.log(2))
    assert star("linear", -1.5) == -1.5

    # Psi(1) = 0 for a divergence; exp is kl shifted by a constant on both
    # sides; softplus has its minimum -log 2 at t = 1/2.
    for name in ("linear", "kl", "chi2", "softplus"):
        assert D.ENTROPIES[name].psi(np.array(1.0)) == 0.0
    assert D.ENTROPIES["exp"].psi(np.array(1.0)) == -1.0
    assert D.ENTROPIES["softplus"].psi(np.array(0.5)) == pytest.approx(-math.log(2))
    s = torch.linspace(-4, 4, 9, dtype=torch.float64)
    shift = PSI_STAR["exp"](s) - PSI_STAR["kl"](s)
    assert torch.allclose(shift, torch.ones_like(s))


def test_csiszar_divergence_conventions() -> None:
    q = np.array([0.2, 0.3, 0.5])
    p = np.array([0.1, 0.6, 0.5])
    kl = np.sum(p * np.log(p / q) - p + q)
    assert D.csiszar_divergence(p, q, "kl") == pytest.approx(kl)
    assert D.csiszar_divergence(p, q, "chi2") == pytest.approx(np.sum((p - q) ** 2 / q))
    for name in ("linear", "kl", "chi2"):
        assert D.csiszar_divergence(q, q, name) == 0.0
    assert D.csiszar_divergence(p, q, "linear") == math.inf

    # q_i = 0: free if p_i = 0, infinite otherwise; p_i = 0 costs q_i Psi(0).
    q0 = np.array([0.0, 0.5])
    assert D.csiszar_divergence(np.array([0.0, 0.5]), q0, "kl") == 0.0
    assert D.csiszar_divergence(np.array([0.1, 0.5]), q0, "kl") == math.inf
    assert D.csiszar_divergence(np.array([0.0, 0.0]), q0, "chi2") == 0.5
    with pytest.raises(ValueError, match="unknown entropy 'tv'"):
        D.csiszar_divergence(p, q, "tv")


# ---------------------------------------------------------------------------
# Unbalanced OT
# ---------------------------------------------------------------------------

PAIRS = [
    ("kl", "kl"),
    ("chi2", "chi2"),
    ("softplus", "softplus"),
    ("kl", "chi2"),
    ("linear", "kl"),
    ("chi2", "linear"),
]


@pytest.mark.parametrize(("psi1", "psi2"), PAIRS)
@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_uot_primal_equals_semi_dual(psi1: str, psi2: str, tau: float) -> None:
    a, b, C = random_problem(30, 9, 11, balanced=False)
    if "linear" in (psi1, psi2):
        b = b / b.sum()
    primal = D.solve_uot_primal(a, b, tau * C, psi1, psi2)
    dual = D.solve_uot_semi_dual(a, b, tau * C, psi1, psi2)
    assert abs(primal.value - dual.value) <= 1e-5 * max(1.0, abs(primal.value))
    # The primal value is a feasible plan's, the dual one a potential's:
    # weak duality orders them.
    assert dual.value <= primal.value + 1e-12

    # The optimal marginals are read off the potential [eq. uot-marginals].
    p, q = D.plan_marginals(primal.plan)
    p_v, q_v = D.uot_marginals_from_potential(dual.potential, a, b, tau * C, psi1, psi2)
    np.testing.assert_allclose(p, p_v, atol=1e-5)
    np.testing.assert_allclose(q, q_v, atol=1e-5)


def test_uot_weak_duality_and_optimality() -> None:
    a, b, C = random_problem(31, 6, 7, balanced=False)
    best = D.solve_uot_primal(a, b, C, "kl", "chi2")
    rng = np.random.default_rng(31)
    for _ in range(30):
        v = rng.normal(size=b.size)
        assert D.uot_semi_dual_objective(v, a, b, C, "kl", "chi2") <= best.value
        plan = best.plan * rng.uniform(0.5, 1.5, size=best.plan.shape)
        assert D.uot_primal_objective(plan, a, b, C, "kl", "chi2") >= best.value


def test_uot_semi_dual_matches_torch_potential_loss() -> None:
    # On uniform batches with T(x_i) = argmin_j C_ij - v_j, the library's
    # potential loss is minus the discrete semi-dual objective.
    _, _, C = random_problem(32, 8, 8)
    w = np.full(8, 1 / 8)
    v = np.random.default_rng(32).normal(size=8)
    j_star = np.argmin(C - v[None, :], axis=1)
    loss = uot_potential_loss(
        torch.tensor(v[j_star]),
        torch.tensor(v),
        torch.tensor(C[range(8), j_star]),
        PSI_STAR["kl"],
        PSI_STAR["chi2"],
    )
    expected = -D.uot_semi_dual_objective(v, w, w, C, "kl", "chi2")
    assert loss.item() == pytest.approx(expected)


def test_exp_and_kl_give_the_same_plan() -> None:
    a, b, C = random_problem(33, 7, 9, balanced=False)
    kl = D.solve_uot_primal(a, b, C, "kl", "kl")
    ex = D.solve_uot_primal(a, b, C, "exp", "exp")
    # D_exp(p | q) = D_kl(p | q) - sum(q): a constant shift of the objective.
    assert ex.value == pytest.approx(kl.value - a.sum() - b.sum(), abs=1e-8)
    np.testing.assert_allclose(ex.plan, kl.plan, atol=1e-6)


def test_linear_on_both_sides_is_balanced_ot() -> None:
    a, b, C = random_problem(34, 5, 6)
    ot = D.solve_kantorovich(a, b, C)
    uot = D.solve_uot_primal(a, b, C, "linear", "linear")
    assert uot.value == pytest.approx(ot.value, rel=1e-12)
    assert D.uot_primal_objective(ot.plan, a, b, C, "linear", "linear") == (
        pytest.approx(ot.value, rel=1e-12)
    )
    dual = D.solve_uot_semi_dual(a, b, C, "linear", "linear")
    assert dual.value == pytest.approx(ot.value, rel=1e-8)


@pytest.mark.parametrize("psi", ["kl", "chi2"])
def test_strong_divergence_weight_recovers_ot(psi: str) -> None:
    # Scaling both divergences by lambda is the same as scaling the cost by
    # tau = 1 / lambda and dividing the value by tau; as tau -> 0 the plan
    # must match the marginals and the value tends to the OT value, at rate
    # O(tau).
    a, b, C = random_problem(35, 8, 10)
    ot = D.solve_kantorovich(a, b, C).value
    errors = []
    for tau in (1e-1, 1e-2, 1e-3):
        uot = D.solve_uot_primal(a, b, tau * C, psi, psi)
        p, q = D.plan_marginals(uot.plan)
        errors.append(ot - uot.value / tau)
        assert np.abs(p - a).max() <= 2.0 * tau
        assert np.abs(q - b).max() <= 2.0 * tau
    # UOT never costs more than OT (the OT plan is feasible with D = 0).
    assert min(errors) > 0
    assert errors[2] <= 5e-3 * ot
    assert errors[1] / errors[2] == pytest.approx(10.0, rel=0.2)


@pytest.mark.parametrize("psi", ["kl", "chi2", "softplus"])
def test_outlier_receives_less_mass_under_uot(psi: str) -> None:
    rng = np.random.default_rng(36)
    x = rng.normal(size=(8, 2))
    y = np.vstack([rng.normal(size=(9, 2)), [[8.0, 8.0]]])
    a, b = np.full(8, 1 / 8), np.full(10, 1 / 10)
    C = D.cost_matrix(x, y, tau=0.1)

    ot_mass = D.solve_kantorovich(a, b, C).plan[:, -1].sum()
    uot_mass = D.solve_uot_primal(a, b, C, psi, psi).plan[:, -1].sum()
    assert ot_mass == pytest.approx(b[-1])
    assert uot_mass < 1e-2 * ot_mass


def test_zero_weights_keep_zero_mass() -> None:
    a, b, C = random_problem(37, 6, 7, balanced=False)
    a[2], b[4] = 0.0, 0.0
    primal = D.solve_uot_primal(a, b, C, "kl", "chi2")
    dual = D.solve_uot_semi_dual(a, b, C, "kl", "chi2")
    assert primal.plan[2].sum() == 0.0 and primal.plan[:, 4].sum() == 0.0
    assert primal.value == pytest.approx(dual.value, rel=1e-6)
