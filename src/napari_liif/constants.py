"""Choices shared by the engine, the command line and the widgets, defined once.

This module imports nothing (no torch), so the CLI and the napari manifest can read it
without starting the engine.
"""

#: cell decoding modes (:func:`napari_liif.grid.cell_size`)
CELL_MODES = ("on", "off", "clamp")
#: devices a user may name; ``auto`` picks CUDA, then MPS, then the CPU
DEVICES = ("auto", "cpu", "cuda", "mps")
#: numeric precisions a user may name; ``auto`` is fp32 on most CPUs, bf16 on fast-bf16 CPUs
#: and on CUDA (see :func:`napari_liif.device.auto_precision`)
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
