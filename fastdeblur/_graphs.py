"""Replay captured CUDA graphs for whole-frame forwards of one size (video, folders, batches).

A 1280x720 DMPHN(1-2-4) forward launches about a hundred kernels; on a fast GPU the host's cost
of launching them (Python, the dispatcher, Triton's launcher) is a large part of the frame time.
The first call of a (model, shape, dtype, layout) runs eagerly: it compiles Triton kernels and
lets cuDNN search its algorithms. The second captures the forward into a CUDA graph; from then
on a call copies the input into the graph's buffer, replays it and copies the result out.

At most `MAX_GRAPHS` graphs are kept (each holds its activations' memory: about 0.3 GB for a
720p frame in float16); the oldest goes first. FASTDEBLUR_CUDA_GRAPHS=0 turns this off.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import env_flag

MAX_GRAPHS = 2


@dataclass
class _Captured:
    model: weakref.ref
    graph: torch.cuda.CUDAGraph | None  # None: seen once, not captured yet
    static_in: torch.Tensor | None = None
    static_out: torch.Tensor | None = None
    failed: bool = False


_graphs: OrderedDict[tuple, _Captured] = OrderedDict()
_lock = threading.Lock()


def enabled() -> bool:
    return env_flag("FASTDEBLUR_CUDA_GRAPHS", True)


def forward(model: nn.Module, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],
            key: tuple = ()) -> torch.Tensor:
    """run(x) for CUDA tensors through a replayed graph (x's shape, dtype, device, `key`); run(x)
    itself elsewhere. The result is a fresh tensor, never the graph's own buffer."""
    if not (x.is_cuda and enabled()) or torch.cuda.is_current_stream_capturing():
        return run(x)
    k = (id(model), tuple(x.shape), x.dtype, x.device, x.stride(), *key)
    with _lock:
        entry = _graphs.get(k)
        if entry is not None and entry.model() is not model:  # an id reused by a new model
            entry = None
        if entry is None:  # first sight: run eagerly (compiles, searches algorithms), remember it
            _graphs[k] = _Captured(weakref.ref(model), None)
            _evict()
            return run(x)
        _graphs.move_to_end(k)
        if entry.failed:
            return run(x)
        if entry.graph is None:
            entry.static_in = x.clone()
            torch.cuda.synchronize(x.device)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    entry.static_out = run(entry.static_in)
            except RuntimeError:  # something in the forward cannot be captured: stay eager for this key
                entry.failed, entry.static_in, entry.static_out = True, None, None
                torch.cuda.synchronize(x.device)
                return run(x)
            entry.graph = graph
        entry.static_in.copy_(x)
        entry.graph.replay()
        return entry.static_out.clone()


def _evict() -> None:
    while len(_graphs) > MAX_GRAPHS:
        _graphs.popitem(last=False)


def clear() -> None:
    """Drop every captured graph (and the memory its activations hold)."""
    with _lock:
        _graphs.clear()
