#!/usr/bin/env python3
"""The guide's training command:

    python3 train_multitask.py DATA... [--epochs 200] [--export-dir out/multitask] ...
    python3 train_multitask.py --selector IMAGE... --export-dir out/selector

`python3 train_multitask.py --help` lists every option. The code lives in
tlg8_multitask.train (the model side's package); this file gives it the guide's name.
"""
import sys

from tlg8_multitask.train import *  # noqa: F401,F403
from tlg8_multitask.train import main

if __name__ == "__main__":
    sys.exit(main())
