"""The compute device itself (not any model): whether it can be used here, and the bf16 matmul peak that
benchmarks and the GPU scripts quote a UNet's throughput against.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import time


def unavailable(device: str) -> str | None:
    """Why ``device`` ("cpu", "cuda", "mps") cannot be used in this process, in one line, or None when it can."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        how = "built without CUDA" if torch.version.cuda is None else "no CUDA GPU visible"
        return f"--device {device}: no CUDA device here (torch {torch.__version__}, {how})"
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: Apple's MPS is not available here"
    return None


def synchronize(device: str) -> None:
    """Wait for the queued kernels of ``device`` (a no-op on the CPU)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def matmul_peak_tflops(device: str = "cuda", n: int = 8192, reps: int = 20, warmup: int = 3) -> float:
    """Measured bf16 matmul throughput of ``device`` in TFLOP/s: ``reps`` products of two random ``n``×``n``
    bf16 matrices (2·n³ FLOPs each) after ``warmup`` untimed ones."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(warmup):
        a @ b
    synchronize(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12
