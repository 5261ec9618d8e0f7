"""The CPU kernels (numba): the CountSketch accumulation and the float64 axpy of merges.

Kept apart so that importing zoo (and the CLI) never loads numba: ``zoo.sketch`` and
``zoo.merge`` import this module when they first compute.
"""
from __future__ import annotations

import numpy as np
import numba
from numba import njit, prange

from zoo.threads import current

if current() is not None:  # a governor decided before numba loaded
    numba.set_num_threads(min(current(), numba.config.NUMBA_NUM_THREADS))

GAMMA = np.uint64(0x9E3779B97F4A7C15)
C1 = np.uint64(0xBF58476D1CE4E5B9)
C2 = np.uint64(0x94D049BB133111EB)


_BLOCK = 512  # elements hashed per block: the hash loop vectorizes; the scatter stays in order


@njit(nogil=True, cache=True)
def _accumulate(x, key, dim, lo, hi, out):
    """Add elements [lo, hi) of x into out.

    Buckets and signed values of a block are computed first, in a loop the compiler turns
    into 8-lane vector code (the 64-bit hash is most of the work; indexing a slice from 0
    and a sign from a signed bit are what let it vectorize), then scattered. Four partial
    sums break the store-to-load chains of consecutive updates to one bucket. Element k
    always lands in partial sum (k - lo) % 4, in order, so the float64 result is the same
    bits as an element-by-element loop (tests/test_sketch.py checks against one)."""
    bk = np.empty(_BLOCK, dtype=np.int64)
    sv = np.empty(_BLOCK, dtype=np.float64)
    a0 = np.zeros(dim, dtype=np.float64)
    a1 = np.zeros(dim, dtype=np.float64)
    a2 = np.zeros(dim, dtype=np.float64)
    a3 = np.zeros(dim, dtype=np.float64)
    d = np.uint64(dim)
    for start in range(lo, hi, _BLOCK):
        n = min(hi - start, _BLOCK)
        xs = x[start:start + n]
        base = key + np.uint64(start) * GAMMA
        for i in range(n):
            z = base + np.uint64(i) * GAMMA
            z = (z ^ (z >> np.uint64(30))) * C1
            z = (z ^ (z >> np.uint64(27))) * C2
            z = z ^ (z >> np.uint64(31))
            bk[i] = np.int64(((z >> np.uint64(32)) * d) >> np.uint64(32))
            sv[i] = np.float64(xs[i]) * (1.0 - 2.0 * np.float64(np.int64(z & np.uint64(1))))
        m = n // 4 * 4
        for i in range(0, m, 4):
            a0[bk[i]] += sv[i]
            a1[bk[i + 1]] += sv[i + 1]
            a2[bk[i + 2]] += sv[i + 2]
            a3[bk[i + 3]] += sv[i + 3]
        for i in range(m, n):  # only in the last block: the others hold a multiple of 4
            a0[bk[i]] += sv[i]
    for j in range(dim):
        out[j] += (a0[j] + a1[j]) + (a2[j] + a3[j])


@njit(nogil=True, cache=True)
def sketch_serial(x, key, dim, out):
    _accumulate(x, key, dim, 0, x.size, out)


@njit(nogil=True, cache=True, parallel=True)
def sketch_parallel(x, key, dim, out, nchunks):
    n = x.size
    acc = np.zeros((nchunks, dim), dtype=np.float64)
    step = (n + nchunks - 1) // nchunks
    for c in prange(nchunks):
        _accumulate(x, key, dim, c * step, min(n, c * step + step), acc[c])
    for c in range(nchunks):
        for j in range(dim):
            out[j] += acc[c, j]


@njit(nogil=True, cache=True)
def axpy_f64(acc, x, w):
    for i in range(acc.size):
        acc[i] += w * np.float64(x[i])
