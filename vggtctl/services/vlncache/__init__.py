"""The VLN feature cache: per-sample VGGT layer-22 tokens of the current frame after the causal pass.

Modules: ``spec`` (what a value depends on, keys; no torch), ``records`` (JanusVLN data files and
trajectory folders), ``layout`` (the cache directory, entries, manifests), ``lock`` (one build at a time),
``encode`` (live features: streaming passes shared by prefix samples), ``build``, ``verify``,
``maintain`` (stats, prune) and ``reader`` (``open_cache`` / ``lookup`` for training).
"""
