"""Reward functions for GRPO: built-ins (`builtin`) and user callables named in a recipe (`loading`)."""
