"""Training in eager mode without loading torch's compiler, which it never uses.

torch's optimisers mark their methods as not to be compiled and break the graph around
`step`, both through `torch._dynamo`, which they import on first use: about a second of
imports and a third of a second of interpreter teardown in every training job
(docs/benchmarks.md), for two calls that do nothing outside `torch.compile`. `skip_compiler`
puts a stand-in in its place that answers those two calls as eager mode does; asking it for
anything else (`is_compiling`, a compile) imports the real module, which takes over from
then on. Nothing in reprogrid compiles.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any

COMPILER = "torch._dynamo"


class _EagerCompiler(types.ModuleType):
    """`torch._dynamo` as eager mode sees it: nothing to disable, no graph to break."""

    @staticmethod
    def graph_break(msg: str = "") -> None:
        """Outside a compiled graph there is no graph to break."""

    @staticmethod
    def disable(
        fn: Callable[..., Any] | None = None,
        recursive: bool = True,
        *,
        reason: str | None = None,
        wrapping: bool = True,
    ) -> Any:
        """Code kept from the compiler runs as it is when nothing compiles."""
        return fn if fn is not None else (lambda inner: inner)

    def __getattr__(self, name: str) -> Any:
        # Dunder lookups (inspect, pickle, warnings scanning sys.modules) must not load it.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_real_compiler(), name)


def _real_compiler() -> types.ModuleType:
    """The real `torch._dynamo`, imported in place of the stand-in."""
    if isinstance(sys.modules.get(COMPILER), _EagerCompiler):
        del sys.modules[COMPILER]
    return importlib.import_module(COMPILER)


def skip_compiler() -> None:
    """Let this process train without importing `torch._dynamo`, unless it is loaded already.

    The stand-in carries the real package's spec and path, so its submodules import as
    they would (and the real package reuses them when it loads). torch keeps what `disable`
    returned for each optimiser method it wraps: methods first called before the real module
    loads stay unwrapped, which matters only to code that compiles them. Call this only in a
    process that never compiles.
    """
    if COMPILER in sys.modules:
        return
    spec = importlib.util.find_spec(COMPILER)
    if spec is None:
        return
    stand_in = _EagerCompiler(COMPILER)
    stand_in.__spec__ = spec
    stand_in.__path__ = list(spec.submodule_search_locations or [])
    stand_in.__file__ = spec.origin
    sys.modules[COMPILER] = stand_in
