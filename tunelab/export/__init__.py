"""Exports of a finished run: PEFT's LoRA format, a merged transformers folder, or a GGUF file (docs/export.md).

All three start from `load_run` (the run's model exactly as trained) and write atomically. Modules are
imported by name (`tunelab.export.exporters`, `...peft_format`): `tunelab.cli` imports the verb's
parser from here, and listing runs or reading a recipe must not import torch.
"""
