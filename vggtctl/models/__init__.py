"""Model implementations. ``vggtctl.models.vggt`` is the checkpoint-compatible VGGT."""
