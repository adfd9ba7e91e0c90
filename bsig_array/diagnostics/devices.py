"""Stated accelerator figures (a datasheet's, never measured here) and the roofline that uses them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceFigures:
    """Stated figures of one accelerator (a datasheet's, never measured here).

    Attributes
    ----------
    name
        The device.
    hbm_bytes_per_s
        Device memory bandwidth.
    fp64_flops
        Float64 matrix-product rate (the CuPy kernels multiply in float64 so TF32 cannot round).
    fp32_ops
        Elementwise float32 rate (comparisons, casts, sums).
    link_bytes_per_s
        Host-to-device bandwidth, one direction.
    source
        Where the figures come from.
    """

    name: str
    hbm_bytes_per_s: float
    fp64_flops: float
    fp32_ops: float
    link_bytes_per_s: float
    source: str


#: NVIDIA H200 SXM.  FP64 products use the FP64 Tensor Core rate (cuBLAS DGEMM on Hopper).
H200 = DeviceFigures(
    name="NVIDIA H200 SXM",
    hbm_bytes_per_s=4.8e12,
    fp64_flops=67e12,
    fp32_ops=67e12,
    link_bytes_per_s=64e9,
    source=(
        "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200): HBM3e 4.8 TB/s, "
        "FP64 Tensor Core 67 TFLOPS, FP32 67 TFLOPS, PCIe Gen5 128 GB/s (64 GB/s each way)"
    ),
)

#: The fused screening kernel's goal on one GPU (issue 13): stated by ``bsig plan --device gpu``.
GPU_TARGET_TOKENS_PER_S = 1e9


def roofline(hbm_bytes: float, fp64_flops: float, fp32_ops: float, gpu: DeviceFigures) -> tuple[float, str]:
    """Seconds of work on ``gpu`` and its bound (``HBM``, ``FP64`` or ``FP32``): the slowest of memory,
    products and elementwise operations at the stated rates."""
    times = {"HBM": hbm_bytes / gpu.hbm_bytes_per_s, "FP64": fp64_flops / gpu.fp64_flops, "FP32": fp32_ops / gpu.fp32_ops}
    bound = max(times, key=lambda key: times[key])
    return times[bound], bound
