"""The L-BFGS direction from the stored pair matrices (`CurvaturePairs`, `_two_loop_direction`) equals the textbook
two-loop recursion (Nocedal & Wright, Algorithm 7.4) written out pair by pair, through the ring's wrap-around,
its growth, a restart and a preconditioner; and the solver still minimises a quadratic exactly."""

from __future__ import annotations

import torch

from unirep.probes.lbfgs import CurvaturePairs, _two_loop_direction, minimize_lbfgs


def textbook_direction(g, steps, changes, precondition):
    q, alphas = -g.clone(), []
    for s, y in zip(reversed(steps), reversed(changes)):
        alpha = (s @ q) / (s @ y)
        q -= alpha * y
        alphas.append(alpha)
    r = precondition(q) * ((steps[-1] @ changes[-1]) / (changes[-1] @ precondition(changes[-1])))
    for s, y, alpha in zip(steps, changes, reversed(alphas)):
        r += s * (alpha - (y @ r) / (s @ y))
    return r


def test_pair_matrices_give_the_textbook_direction():
    generator = torch.Generator().manual_seed(0)
    size, history = 40, 7
    A = torch.randn(size, size, generator=generator, dtype=torch.float64)
    hessian = A @ A.T + torch.eye(size, dtype=torch.float64)
    scales = torch.rand(size, generator=generator, dtype=torch.float64) + 0.5
    precondition = lambda v: v * scales  # noqa: E731 - a fixed diagonal H0
    pairs, steps, changes = CurvaturePairs(), [], []
    pairs.keep_last(history)
    for added in range(19):
        s = torch.randn(size, generator=generator, dtype=torch.float64)
        assert pairs.add(s.clone(), hessian @ s)
        steps, changes = (steps + [s])[-history:], (changes + [hessian @ s])[-history:]
        if added == 11:  # a restart forgets every pair; the ring starts over in place
            pairs.clear()
            steps, changes = [], []
            continue
        g = torch.randn(size, generator=generator, dtype=torch.float64)
        expected = textbook_direction(g, steps, changes, precondition)
        torch.testing.assert_close(_two_loop_direction(g, pairs, precondition), expected, rtol=1e-10, atol=1e-12)
        assert len(pairs) == len(steps)
        torch.testing.assert_close(torch.stack(pairs.steps), torch.stack(steps))


def test_pairs_without_a_limit_grow_and_keep_their_order():
    pairs = CurvaturePairs()
    vectors = [torch.full((3,), float(k + 1)) for k in range(20)]
    for v in vectors:
        pairs.add(v, 2 * v)
    assert len(pairs) == 20 and [float(s[0]) for s in pairs.steps] == [float(k + 1) for k in range(20)]
    pairs.keep_last(5)
    assert [float(s[0]) for s in pairs.steps] == [16.0, 17.0, 18.0, 19.0, 20.0]
    assert not pairs.add(torch.ones(3), -torch.ones(3))  # negative curvature: skipped, as scipy's L-BFGS-B
    assert len(pairs) == 5


def test_lbfgs_minimises_a_quadratic_past_the_objectives_rounding():
    # A gradient of 1e-10 lies below what the objective's value resolves: the tight mode (f_noise) gets there.
    generator = torch.Generator().manual_seed(1)
    A = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    hessian, b = A @ A.T + 0.1 * torch.eye(30, dtype=torch.float64), torch.randn(30, generator=generator,
                                                                               dtype=torch.float64)

    def objective(x):
        return float(0.5 * x @ hessian @ x - b @ x), hessian @ x - b

    x, n_iter, (_, g) = minimize_lbfgs(objective, torch.zeros(30, dtype=torch.float64), max_iter=500, tol=1e-10,
                                       history_size=10, f_noise=1e-6)
    assert float(g.abs().max()) <= 1e-10 and n_iter < 500
    torch.testing.assert_close(x, torch.linalg.solve(hessian, b), rtol=1e-7, atol=1e-8)
