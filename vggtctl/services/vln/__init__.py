"""``train-vln``: JanusVLN-style vision-language navigation training (Qwen2.5-VL + frozen VGGT features).

Components: :mod:`.records` (data), :mod:`.frames` and :mod:`.dataset` (the input pipeline),
:mod:`.prompt` (the one prompt), :mod:`.spatial` (VGGT tokens), :mod:`.fusion` and :mod:`.model` (the
model), :mod:`.engines` (plain / DDP / DeepSpeed updates), :mod:`.checkpoint` (resume and export),
:mod:`.train` (the loop), :mod:`.worker` (what launched ranks run), :mod:`.predict`, :mod:`.tiny_qwen`.
"""
