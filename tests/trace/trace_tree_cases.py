"""Random static-shape trees and an explicit Python tree walk (independent reference for targets/advantages)."""
from collections import defaultdict

import numpy as np

from lpo_jax.trace.layout import make_tree_leaves


def random_tree(rng, P=3, M=3, N=2, T=4, binary=True):
    """Random tree layout in numpy (slots filled node by node) -> (dict of arrays, TreeLeaves)."""
    C = M * N
    root_valid = rng.random((P, M)) < 0.8
    root_valid[:, 0] = True
    root_n = rng.integers(1, T + 1, (P, M))
    src = np.zeros((P, C), np.int32)
    branch = np.zeros((P, C), np.int32)
    cvalid = np.zeros((P, C), bool)
    for p in range(P):
        nodes = [(j, t) for j in range(M) if root_valid[p, j] for t in range(1, root_n[p, j])]
        if rng.random() < 0.3 and root_valid[p].any():
            nodes.append((int(np.flatnonzero(root_valid[p])[0]), 0))  # a branch at t = 0 (fresh chain)
        n_cont = int(rng.integers(0, C + 1)) if nodes else 0
        picks = sorted(nodes[i] for i in rng.integers(0, len(nodes), n_cont)) if nodes else []
        for c, (j, t) in enumerate(picks):
            src[p, c], branch[p, c], cvalid[p, c] = j, t, True
    cont_n = np.where(cvalid, branch + rng.integers(1, T + 1, (P, C)), 1).clip(1, T)
    cont_n = np.maximum(cont_n, branch + 1)
    draw = (lambda shape: rng.integers(0, 2, shape).astype(np.float32)) if binary else \
        (lambda shape: rng.random(shape).astype(np.float32))
    root_r, cont_r = draw((P, M)), draw((P, C))
    arrays = dict(P=P, M=M, T=T, L=M + C, root_valid=root_valid, root_n=root_n, root_r=root_r, src=src,
                  branch=branch, cvalid=cvalid, cont_n=cont_n, cont_r=cont_r)
    leaves = make_tree_leaves(root_r, root_valid, root_n, cont_r, cvalid, src, branch, cont_n, max_turns=T)
    return arrays, leaves


class TreeWalk:
    """Explicit tree of one prompt: nodes ('R', j, t), ('C', c, s), ('L', l); leaves l = slot index."""

    def __init__(self, a, p):
        M = a["M"]
        self.reward, self.children, self.path = {}, defaultdict(list), {}
        self.trees = []
        for j in range(M):
            if not a["root_valid"][p, j]:
                continue
            n = a["root_n"][p, j]
            self.reward[j] = float(a["root_r"][p, j])
            self.trees.append(("R", j, 0))
            for t in range(n):
                self.children[("R", j, t)].append(("R", j, t + 1) if t + 1 < n else ("L", j))
            self.path[j] = [("R", j, s) for s in range(1, n)] + [("L", j)]
        for c in range(a["L"] - M):
            if not a["cvalid"][p, c]:
                continue
            l, j, b, n = M + c, a["src"][p, c], a["branch"][p, c], a["cont_n"][p, c]
            self.reward[l] = float(a["cont_r"][p, c])
            own = [("C", l, s) for s in range(b + 1, n)] + [("L", l)]
            self.children[("R", j, b)].append(own[0])
            for x, y in zip(own[:-1], own[1:]):
                self.children[x].append(y)
            self.path[l] = [("R", j, s) for s in range(1, b + 1)] + own

    def leaves_under(self, node):
        if node[0] == "L":
            return [node[1]]
        return [l for ch in self.children[node] for l in self.leaves_under(ch)]

    def value(self, node, mode="leaves"):
        if node == "prompt":
            return float(np.mean(list(self.reward.values())))
        if node[0] == "L":
            return self.reward[node[1]]
        if mode == "leaves":
            return float(np.mean([self.reward[l] for l in self.leaves_under(node)]))
        return float(np.mean([self.value(ch, mode) for ch in self.children[node]]))

    def node_before(self, l, t):
        """Node before (1-based) turn t on leaf l's path (the prompt for t = 1)."""
        return "prompt" if t == 1 else self.path[l][t - 2]

    def node_after(self, l, t):
        return self.path[l][t - 1]


def make_trees(seed=1234, n=6):
    rng = np.random.default_rng(seed)
    return [random_tree(rng, binary=(i % 2 == 0)) for i in range(n)]
