"""Shared test helpers: the tiny MiT encoder used by the model-level tests (hidden sizes 8-32, one block a stage)."""

TINY_SEGFORMER = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 2, 4, 4],
                  "decoder_hidden_size": 16}

