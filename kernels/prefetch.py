"""A cache prefetch hint for numba-compiled kernels.

Random gathers over arrays larger than the cache (the as-of join's scatter and gathers) stall on memory;
asking the CPU to load a line a few iterations ahead hides most of that latency. Numba has no prefetch,
so this is an intrinsic emitting LLVM's ``llvm.prefetch``. It imports ``llvmlite``, the code generator
numba itself is built on (not a dependency of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _prefetch_typer(typingctx: Any, array: Any, index: Any) -> Any:
    """Typing and code of :data:`prefetch` (a numba intrinsic)."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), cgutils.voidptr_t)
        i32 = cgutils.int32_t
        function_type = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, function_type, "llvm.prefetch.p0"
        )
        # (address, read, keep in every cache level, data cache)
        builder.call(prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


#: ``prefetch(array, index)`` in jitted code: hint the CPU to load the cache line of ``array.flat[index]``
#: (C-contiguous arrays only). Only a hint: it never faults, so an index past the end is harmless.
prefetch = cast(Callable[[npt.NDArray[Any], int], None], intrinsic(_prefetch_typer))
