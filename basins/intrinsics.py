"""LLVM-level helpers for the vectorised kernels (`basins.lanes`, `basins.rows`).

Numba exposes no way to set LLVM function attributes or to reinterpret the bits of
a float, and the vectorised kernels need both: these intrinsics emit the few lines
of LLVM IR directly.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def prefer_wide_vectors(typingctx):
    """Let LLVM use 512-bit vectors in the calling function, and keep it out of line.

    LLVM prefers 256-bit vectors on Intel processors with AVX-512. The function
    attribute ``prefer-vector-width`` overrides that for one function, and
    ``min-legal-vector-width`` keeps the backend from splitting the vectors again.
    The function is never inlined, because a caller without the attributes would
    compile the inlined copy with 256-bit vectors. On processors without AVX-512
    the attributes change nothing.
    """

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        # llvmlite checks attribute names against a list that lacks the string
        # attributes (checked with llvmlite 0.50), so add them to the set itself.
        set.add(attributes, '"prefer-vector-width"="512"')
        set.add(attributes, '"min-legal-vector-width"="512"')
        attributes.add("noinline")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def inline_always(typingctx):
    """Make LLVM inline the calling function into each caller, whatever its size.

    The generated field function is far above LLVM's inlining threshold, and a call
    left in the lane loop would stop the loop's vectorisation.
    """

    def codegen(context, builder, signature, args):
        builder.function.attributes.add("alwaysinline")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def add_to_exponent(typingctx, value, shifted):
    """Return ``value * 2^k`` for ``shifted = k + 1.5 * 2^52`` (float64) or
    ``k + 1.5 * 2^23`` (float32), for results that stay normal.

    Adding the shifter leaves ``k`` in the low bits of the significand, modulo the
    size of the exponent field. Shifted into the exponent field and added to the
    bits of ``value``, they multiply it by ``2^k``: one integer addition in place of
    building ``2^k`` and multiplying. A result outside the normal range comes out as
    garbage, infinity or NaN, so the caller bounds ``k``.
    """
    if value != shifted or value not in (types.float64, types.float32):
        return None
    width, mantissa_bits = (64, 52) if value == types.float64 else (32, 23)

    def codegen(context, builder, signature, args):
        integer = ir.IntType(width)
        bits = builder.bitcast(args[0], integer)
        k_bits = builder.shl(builder.bitcast(args[1], integer), integer(mantissa_bits))
        return builder.bitcast(builder.add(bits, k_bits), args[0].type)

    return value(value, shifted), codegen
