"""Drafter tuning: build drafting examples from the shared training pool (``data``), train a LoRA adapter on the
drafter (``train``), convert it to a GGUF LoRA adapter for llama.cpp (``convert``).

The training dependencies (transformers, peft, gguf, sentencepiece) are the optional extra ``tune``; only ``data``
and ``convert`` import without them.
"""
