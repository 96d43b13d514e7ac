"""LogME (You, Liu, Wang, Long; ICML 2021): how well frozen features suit a
labelled task, without training anything.

For each class c the one-hot target y_c (n,) is modelled as a Bayesian linear
regression on the features F (n, D): w ~ N(0, 1/alpha I), y_c ~ N(F w, 1/beta I).
LogME is the log marginal likelihood (the evidence) of y_c, maximised over
alpha and beta, divided by n and averaged over classes. Higher is better; the
value is comparable across feature extractors for the same labels.

The maximisation is the paper's fixed-point iteration (Algorithm 1), run on
the eigen-decomposition of F^T F obtained from one SVD of F:

    gamma = sum_i beta s_i / (alpha + beta s_i)
    m     = beta A^-1 F^T y,   A = alpha I + beta F^T F
    alpha = gamma / m^T m,     beta = (n - gamma) / ||F m - y||^2

and the evidence

    L = n/2 log beta + D/2 log alpha - n/2 log 2pi
        - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log |A|,

where log |A| counts all D eigenvalues of A: the D - k directions outside the
features' span (k = rank <= min(n, D)) contribute log alpha each.
"""

from __future__ import annotations

import math

import numpy as np

MAX_ITERATIONS = 100
TOLERANCE = 1e-3  # relative change of alpha / beta, as in the authors' code


def _class_evidence(u: np.ndarray, s2: np.ndarray, y: np.ndarray, n: int, d: int, full: bool = False):
    """Maximised evidence / n for one target column y (n,), given F = U S V^T
    (u: n x k, s2: the k squared singular values)."""
    z = u.T @ y  # y's coordinates along the features' left singular vectors
    z2 = z * z
    outside = max(float(y @ y - z2.sum()), 0.0)  # the part of y no weight vector can reach
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        t = alpha / beta
        gamma = float((s2 / (s2 + t)).sum())
        m2 = float((s2 * z2 / (s2 + t) ** 2).sum())  # m^T m
        res2 = float((z2 * (t / (s2 + t)) ** 2).sum()) + outside  # ||F m - y||^2
        alpha = gamma / max(m2, 1e-12)
        beta = (n - gamma) / max(res2, 1e-12)
        if abs(alpha / beta - t) / t <= TOLERANCE:
            break
    t = alpha / beta
    m2 = float((s2 * z2 / (s2 + t) ** 2).sum())
    res2 = float((z2 * (t / (s2 + t)) ** 2).sum()) + outside
    k = len(s2)
    log_det_a = float(np.log(alpha + beta * s2).sum()) + (d - k) * math.log(alpha)
    evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - log_det_a / 2)
    return (evidence / n, alpha, beta) if full else evidence / n


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of features (n, D) for integer class labels (n,): the mean over
    classes of the maximised log evidence per sample."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if f.ndim != 2 or len(f) != len(y):
        raise ValueError(f"features must be (n, D) with one label per row, got {f.shape} and {y.shape}")
    n, d = f.shape
    if n < 2:
        raise ValueError("LogME needs at least two samples")
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps  # rank: zero directions count as outside
    u, s2 = u[:, keep], s[keep] ** 2
    classes = np.unique(y)
    return float(np.mean([_class_evidence(u, s2, (y == c).astype(np.float64), n, d) for c in classes]))


def evidence_at(features: np.ndarray, target: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence / n of one target column at given alpha, beta, straight
    from the definition (D x D matrices: for checking, not for speed)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64).ravel()
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, log_det = np.linalg.slogdet(a)
    value = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
             - beta / 2 * float(((f @ m - y) ** 2).sum()) - alpha / 2 * float(m @ m) - log_det / 2)
    return value / n


def maximise(features: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """(evidence / n, alpha, beta) at the fixed point for one target column."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    return _class_evidence(u[:, keep], s[keep] ** 2, np.asarray(target, dtype=np.float64).ravel(), n, d, full=True)
