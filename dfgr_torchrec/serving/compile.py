"""The candidate graph exported with ``torch.export`` and compiled ahead of time with AOTInductor.

``export_candidate_graph`` traces :class:`~dfgr_torchrec.serving.graph.CandidateGraph` with the
number of candidates ``M`` and of cached tokens ``K`` dynamic, so one program serves every
request; ``compile_package`` turns it into an AOTInductor package (a shared library, no Python
graph at run time) where a C++ compiler is present; ``load_scoring`` returns the exported program
(checked to unpickle nothing), or the package when the caller opts in to native code.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING, Callable, Collection

import torch
from torch import nn

from dfgr_torchrec.serving.graph import CandidateGraph
from dfgr_torchrec.serving.limits import MAX_CANDIDATES
from dfgr_torchrec.serving.precision import PRECISIONS, DenseGraph
from dfgr_torchrec.serving.trust import PACKAGE_FILE, PROGRAM_FILE, check_program

if TYPE_CHECKING:  # torch.export itself is imported where a program is exported or loaded
    from torch.export import ExportedProgram

MAX_CACHED_TOKENS = 1 << 20  # bounds of the dynamic dimensions (MAX_CANDIDATES: limits.py)


def quiet_tracing_logs() -> None:
    """Keeps notices a user cannot act on out of the serving commands' output: torch's
    ``is_fx_tracing`` log line, its ``LeafSpec`` deprecation inside ``torch.export``, and DCP's
    "assuming a single process" when an unsharded model loads a sharded checkpoint."""
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
    warnings.filterwarnings(
        "ignore", message="torch.distributed is disabled, unavailable or uninitialized", category=UserWarning
    )


def _example_inputs(model: nn.Module, num_candidates: int = 3, num_interactions: int = 5):
    config = model.config.interaction
    tokens = num_interactions * model.interaction.layout.tokens_per_interaction
    layers, heads = config.num_layers, config.num_heads
    width = model.config.embeddings.embedding_dim
    return (
        torch.randn(num_candidates, width),
        torch.full((num_candidates,), num_interactions, dtype=torch.int64),
        torch.ones(num_candidates, dtype=torch.int64),
        torch.full((num_candidates,), tokens, dtype=torch.int64),
        torch.arange(tokens, dtype=torch.int64),
        torch.randn(layers, tokens, heads, config.attention_dim),
        torch.randn(layers, tokens, heads, config.linear_dim),
    )


def export_candidate_graph(model: nn.Module, precision: str = "fp32") -> ExportedProgram:
    """``torch.export`` of the model's :class:`CandidateGraph`, dynamic in ``M`` and ``K`` (both >= 1),
    its dense weights (no table) in ``precision``, fp32 in and out (:class:`DenseGraph`)."""
    from torch.export import Dim

    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    graph = DenseGraph(CandidateGraph(model), PRECISIONS[precision]).eval()
    m = Dim("candidates", min=1, max=MAX_CANDIDATES)
    k = Dim("cached_tokens", min=1, max=MAX_CACHED_TOKENS)
    shapes = ({0: m}, {0: m}, {0: m}, {0: m}, {0: k}, {1: k}, {1: k})
    with torch.no_grad():
        return torch.export.export(graph, _example_inputs(model), dynamic_shapes=shapes)


def compile_package(program: ExportedProgram, path: str) -> str:
    """Compiles ``program`` with AOTInductor into the package file ``path`` (needs a C++ compiler)."""
    with torch.no_grad():
        return torch._inductor.aoti_compile_and_package(program, package_path=path)


def load_scoring(
    directory: str, allow_native: bool = False, listed: Collection[str] = ()
) -> Callable[..., torch.Tensor]:
    """The artifact's exported program (run as a module), after :func:`check_program` shows it
    unpickles nothing; its AOTInductor package instead only when the caller trusts native code
    (``allow_native``: it is a shared library, run as is) and the package is in ``listed`` (the
    files of ``artifact.json``, verified by :func:`read_manifest`)."""
    if allow_native and PACKAGE_FILE in listed:
        return torch._inductor.aoti_load_package(os.path.join(directory, PACKAGE_FILE))
    from torch.export import load as load_program

    program = os.path.join(directory, PROGRAM_FILE)
    check_program(program)
    return load_program(program).module()
