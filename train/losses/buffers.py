"""Fresh large tensors without the CPU page-fault bill.

PyTorch's CPU allocator maps every large tensor with ordinary 4 kB pages and returns it to the OS when it is
freed, so each fresh full-size tensor pays one page fault per 4 kB on first write: on the (virtualised) machines
we measured, writing a fresh 148 MB tensor costs five to seven times as much as writing a reused one. NumPy asks
the kernel for transparent huge pages on large allocations (``madvise(MADV_HUGEPAGE)``, honoured when THP is set
to ``madvise`` or ``always``) and allocates zeros with ``calloc``, whose fresh pages are zero without being
written. Tensors made here share NumPy's memory (``torch.from_numpy``); on other devices, or for dtypes NumPy
lacks, they are ordinary ``torch.empty`` / ``torch.zeros``.
"""

from __future__ import annotations

import numpy as np
import torch

_NUMPY_DTYPES = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.float16: np.float16,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.uint8: np.uint8,
    torch.bool: np.bool_,
}
# Below this size the PyTorch allocator reuses heap memory anyway (no fresh pages to fault).
_MIN_BYTES = 4 << 20


def new_tensor(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str, zero: bool = False
) -> torch.Tensor:
    """Uninitialised (or, with ``zero``, zero) contiguous tensor; large CPU ones come from NumPy (see module doc).

    A zero tensor from ``calloc`` touches no memory until it is written: pages that are only read (or never used)
    cost nothing, so a mostly-zero gradient is nearly free to create.
    """
    device = torch.device(device)
    np_dtype = _NUMPY_DTYPES.get(dtype)
    numel = 1
    for n in shape:
        numel *= int(n)
    if device.type != "cpu" or np_dtype is None or numel * dtype.itemsize < _MIN_BYTES:
        make = torch.zeros if zero else torch.empty
        return make(shape, dtype=dtype, device=device)
    array = (np.zeros if zero else np.empty)(tuple(int(n) for n in shape), dtype=np_dtype)
    return torch.from_numpy(array)
