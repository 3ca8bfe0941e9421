"""Where the shared reference data lives (../shared from the repository root), for tests."""
import gzip
import os
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
IMAGES = os.path.join(SHARED, "data", "images")
TLGCONV = os.path.join(SHARED, "data", "tlgconv")


def require_shared(*relative):
    """Skip the calling test unless ../shared (and the named files in it) exist."""
    for rel in relative or ("",):
        if not os.path.exists(os.path.join(SHARED, rel)):
            raise unittest.SkipTest(f"reference data not found at {os.path.join(SHARED, rel)} "
                                    "(the shared/ folder beside the repository); skipped")


def parity_names():
    """Names NAME with both images/NAME.bmp and tlgconv/NAME.jsonl.gz, sorted by size."""
    require_shared("data/images", "data/tlgconv")
    names = [f[:-9] for f in os.listdir(TLGCONV) if f.endswith(".jsonl.gz")
             and os.path.exists(os.path.join(IMAGES, f[:-9] + ".bmp"))]
    return sorted(names, key=lambda n: os.path.getsize(os.path.join(IMAGES, n + ".bmp")))


def reference_lines(name):
    """The reference dump of NAME as a list of lines (bytes, newline kept)."""
    with gzip.open(os.path.join(TLGCONV, name + ".jsonl.gz"), "rb") as f:
        return f.readlines()
