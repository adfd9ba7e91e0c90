"""Which device the screening kernels run on: ``--device auto|cpu|gpu``."""

from __future__ import annotations

from bsig_array.errors import PlanError
from bsig_array.options import check_choice
from bsig_array.schema import DEVICES


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"gpu"`` for ``--device auto|cpu|gpu`` (gpu = CuPy on an available GPU).

    Raises
    ------
    OptionError
        On an unknown device name.
    PlanError
        On ``gpu`` when no usable GPU is visible.
    """
    check_choice(device, DEVICES, "device")
    if device == "cpu":
        return "cpu"
    available = cupy_available()
    if device == "gpu" and not available:
        raise PlanError(
            "--device gpu needs CuPy and a visible CUDA GPU (pip install 'bsig-array[gpu]'); use --device cpu"
        )
    return "gpu" if available else "cpu"


def cupy_available() -> bool:
    """Whether CuPy imports and reports a usable GPU (never raises)."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:  # a broken CUDA install counts as no GPU
        return False


def gpu_free_bytes() -> int:
    """Free memory of the current CUDA device in bytes (0 without CuPy or a usable GPU; never raises)."""
    if not cupy_available():
        return 0
    import cupy

    try:
        return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:  # a broken CUDA install counts as no memory
        return 0
