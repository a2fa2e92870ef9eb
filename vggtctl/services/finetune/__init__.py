"""``vggtctl finetune``: LoRA fine-tuning of VGGT (strategies a/b/c), resumable, on one process or many.

Components (each its own module): :mod:`.config` (dataclasses, presets, overrides), :mod:`.targets`
(what each strategy trains, PEFT LoRA), :mod:`.data` (scenes, split, sample order), :mod:`.losses`
(VGGT's objective), :mod:`.checkpoints` (atomic, resumable), :mod:`.adapter` (the adapter as a model
source, merging). The recipe that wires them, top to bottom, is :mod:`.worker` (what every rank runs);
:mod:`.service` prepares a run and launches it. Importing this package imports neither torch nor PEFT.
"""
