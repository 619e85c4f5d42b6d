"""Tuning: MetaSchedule records for CPU kernels, measured once and reused by every later job that meets them.

- ``cache``: the record store, one object per (workload, target) in a folder or under an S3 prefix
  (``NEOCOMPILE_TUNING_CACHE``), merged atomically by concurrent workers; export, import, prune.
- ``tune``: MetaSchedule on a job's fused kernels within a trial budget and the job's deadline, with progress.
- ``builder``: the warm builder, one pool of build workers for a whole tuning run (MetaSchedule's LocalBuilder
  starts one per batch and pays a ~50 s import each time).
- ``apply``: a kernel with records gets its best tuned schedule in the CPU pipeline (``apply_records`` hook), so
  the manifest reports it as "tuned"; the rest keep the templates.
- ``session``: what one compile job does with all this (tune, apply, commit after verification, summarize).

Only targets whose code runs on this machine are tuned: candidates are timed where they run, and qemu's timings
say nothing about a Cortex-A53. ARM jobs use the templates plus records imported with ``neocompile tuning import``.
Nothing here imports TVM at package import time.
"""
from .cache import Entry, TuningCache

__all__ = ["Entry", "TuningCache"]
