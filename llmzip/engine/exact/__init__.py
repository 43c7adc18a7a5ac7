"""The exact engine: a forward pass in integers, defined by docs/engine.md.

tables.py (constants without libm) -> intops.py (integer building blocks) ->
reference.py (the spec, plain torch: the oracle) and fast.py + kernels.py (the same
arithmetic in C, portable and SIMD paths); weights.py turns a GGUF's float weights into
the integer weights once; engine.py drives prefill (encoder) and KV-cache steps (decoder).
"""

from .engine import ARITH_VERSION, KERNELS, ExactEngine, ExactProfile, int_model  # noqa: F401
