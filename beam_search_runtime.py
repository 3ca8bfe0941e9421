"""The guide's `beam_search_runtime` module: choosing block configurations with few trials.

    from beam_search_runtime import select_block_config
    cfg, bits = select_block_config(features, model, try_encode_block)

The code lives in tlg8_multitask.beam (the model side's package); this module gives it the
name the guide uses.
"""
from tlg8_multitask.beam import *  # noqa: F401,F403
