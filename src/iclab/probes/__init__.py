"""Mechanistic probes of trained in-context learners (``iclab probe RUN --probe NAME``)."""

from iclab.probes import (  # noqa: F401  (import registers each probe)
    gd_alignment,
    heads,
    linear_probes,
    patching,
    sinks,
)
from iclab.probes.base import PROBES, Probe, ProbeOptions, ProbeResult, build_probe, register_probe
from iclab.probes.run_probe import probe_run

__all__ = [
    "PROBES",
    "Probe",
    "ProbeOptions",
    "ProbeResult",
    "build_probe",
    "probe_run",
    "register_probe",
]
