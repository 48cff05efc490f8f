"""The SS2D hot path asks nothing of the device's values: no host synchronisation per call.

On a GPU a host sync stalls the CPU until every queued kernel has run (``.item()``, ``bool(t)``,
``.tolist()``, ``.cpu()``, data-dependent shapes such as ``nonzero`` or boolean indexing). They
are counted here on CPU tensors through a TorchFunctionMode, which sees the same Python-level
calls the GPU path makes (the device-independent ``cpu_torch`` scan and the cross-scan/merge).
The finiteness check is the one sync left, and only when asked for.
"""
import pytest
import torch
from torch.overrides import TorchFunctionMode

from gie_core.models.ss2d import SS2D

SYNCING = {"item", "__bool__", "tolist", "__int__", "__float__", "__index__", "numpy", "cpu", "nonzero",
           "masked_select", "unique", "unique_consecutive", "argwhere", "equal"}


class HostSyncCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in SYNCING:
            self.calls.append(name)
        elif name == "__getitem__" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                           for i in (args[1] if isinstance(args[1], tuple) else (args[1],))):
            self.calls.append("boolean indexing")
        return func(*args, **(kwargs or {}))


def _forward_backward(module, x):
    with HostSyncCounter() as counter:
        module(x).square().mean().backward()
    return counter.calls


@pytest.mark.parametrize("variant", ["v05_noz", "v0"])
def test_ss2d_forward_and_backward_make_no_host_sync(variant):
    torch.manual_seed(0)
    module = SS2D(16, variant=variant, scan_backend="cpu_torch")
    x = torch.randn(2, 6, 5, 16, requires_grad=True)
    assert _forward_backward(module, x) == []
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_the_finiteness_check_is_opt_in_and_the_counter_sees_it():
    torch.manual_seed(0)
    module = SS2D(16, scan_backend="cpu_torch", check_finite=True)
    calls = _forward_backward(module, torch.randn(1, 4, 4, 16, requires_grad=True))
    assert "__bool__" in calls  # input and output checks: one sync each
    module.check_finite = False
    assert _forward_backward(module, torch.randn(1, 4, 4, 16, requires_grad=True)) == []
    with pytest.raises(ValueError, match="non-finite"):
        SS2D(16, scan_backend="cpu_torch", check_finite=True)(torch.full((1, 4, 4, 16), float("nan")))
