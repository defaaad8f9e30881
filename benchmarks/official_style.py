"""The authors' style of forward, written from the spec: one encoder call per patch, explicit cats.

A baseline for benchmarks (eager, NCHW, no batching of patches) and an independent check in
tests that the library's batched, regrouped forward computes exactly the spec's network. It
uses only the library's Encoder/Decoder modules (their keys are the checkpoints'), nothing of
its patch logic.
"""

from __future__ import annotations

import torch

cat = torch.cat


def _quadrants(x):  # [N, C, H, W] -> TL, TR, BL, BR
    h, w = x.shape[2] // 2, x.shape[3] // 2
    return x[:, :, :h, :w], x[:, :, :h, w:], x[:, :, h:, :w], x[:, :, h:, w:]


def _halves(x):
    h = x.shape[2] // 2
    return x[:, :, :h], x[:, :, h:]


def dmphn_124(m, x, e="encoder_lv{}", d="decoder_lv{}"):
    """DMPHN(1-2-4) on x = img - 0.5; `m` has encoder_lv1..3 / decoder_lv1..3."""
    E = [None] + [getattr(m, e.format(i)) for i in (1, 2, 3)]
    D = [None] + [getattr(m, d.format(i)) for i in (1, 2, 3)]
    x_top, x_bot = _halves(x)
    tl, tr, bl, br = _quadrants(x)
    f3_top = cat((E[3](tl), E[3](tr)), 3)
    f3_bot = cat((E[3](bl), E[3](br)), 3)
    r3_top, r3_bot = D[3](f3_top), D[3](f3_bot)
    f2 = cat((E[2](x_top + r3_top), E[2](x_bot + r3_bot)), 2) + cat((f3_top, f3_bot), 2)
    r2 = D[2](f2)
    f1 = E[1](x + r2) + f2
    return D[1](f1)


def dmphn_1248(m, x):
    """DMPHN(1-2-4-8): level 4 halves every quadrant again (rows at H/4)."""
    E = [None] + [getattr(m, f"encoder_lv{i}") for i in (1, 2, 3, 4)]
    D = [None] + [getattr(m, f"decoder_lv{i}") for i in (1, 2, 3, 4)]
    x_top, x_bot = _halves(x)
    f4, f3 = [], []
    for q in _quadrants(x):
        q_top, q_bot = _halves(q)
        f4_q = cat((E[4](q_top), E[4](q_bot)), 2)
        f4.append(f4_q)
        f3.append(E[3](q + D[4](f4_q)))
    f3_top = cat((f3[0], f3[1]), 3) + cat((f4[0], f4[1]), 3)
    f3_bot = cat((f3[2], f3[3]), 3) + cat((f4[2], f4[3]), 3)
    r3_top, r3_bot = D[3](f3_top), D[3](f3_bot)
    f2 = cat((E[2](x_top + r3_top), E[2](x_bot + r3_bot)), 2) + cat((f3_top, f3_bot), 2)
    r2 = D[2](f2)
    f1 = E[1](x + r2) + f2
    return D[1](f1)


def stack_dmphn(m, x, stages=4):
    """Stack(N)-DMPHN as the spec writes it, stage by stage."""
    def mods(k):
        E = [None] + [getattr(m, f"encoder_s{k}_lv{i}") for i in (1, 2, 3)]
        D = [None] + [getattr(m, f"decoder_s{k}_lv{i}") for i in (1, 2, 3)]
        return E, D

    E, D = mods(1)
    x_top, x_bot = _halves(x)
    tl, tr, bl, br = _quadrants(x)
    f3_top = cat((E[3](tl), E[3](tr)), 3)
    f3_bot = cat((E[3](bl), E[3](br)), 3)
    r3_top, r3_bot = D[3](f3_top), D[3](f3_bot)
    f2_top = E[2](x_top + r3_top) + f3_top
    f2_bot = E[2](x_bot + r3_bot) + f3_bot
    f2 = cat((f2_top, f2_bot), 2)
    f1 = E[1](x + D[2](f2)) + f2
    y1 = y = D[1](f1)
    for k in range(2, stages + 1):
        E, D = mods(k)
        y_top, y_bot = _halves(y)
        tl, tr, bl, br = _quadrants(y)
        f3_top = cat((E[3](tl), E[3](tr)), 3) + f3_top
        f3_bot = cat((E[3](bl), E[3](br)), 3) + f3_bot
        r3_top, r3_bot = D[3](f3_top), D[3](f3_bot)
        f2_top = E[2](y_top + r3_top) + f3_top + f2_top
        f2_bot = E[2](y_bot + r3_bot) + f3_bot + f2_bot
        f2 = cat((f2_top, f2_bot), 2)
        r2 = D[2](f2) + y1
        f1 = E[1](y + r2) + f2 + f1
        y = D[1](f1)
    return y
