"""Selective scan and SS2D cross-scan/merge with interchangeable backends.

Public interface (stable, see DESIGN.md):
    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto")
    cross_scan(x) / cross_merge(y, h, w)
"""
from __future__ import annotations

from .reference import cross_merge_reference, cross_scan_reference, selective_scan_reference

BACKENDS = ("reference",)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"selective_scan: backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def cross_scan(x):
    return cross_scan_reference(x)


def cross_merge(y, h, w):
    return cross_merge_reference(y, h, w)


__all__ = ["selective_scan", "cross_scan", "cross_merge", "BACKENDS"]
