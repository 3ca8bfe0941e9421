"""File bytes of the pair selector with and without the file-bytes pass (tlg8.filecost).

    python3 bench/bench_filebytes.py --model M.npz [--held-out NAME=NPZ ...] [IMAGE ...]
        [--no-synth] [--max-trials 16] [--margin 16] [--max-configs 8] [--passes 1]
        [--rate 1 1 1] [--sweep] [--no-verify] [--no-fit]

Images: the shared photos dko_sss, dko_t, dko_s, img1, img2, img3 (reference: tlgconv's
files in ../shared/data/tlgconv) and the synthetic images of tlg8.synth (reference: the
reference search through our encoder, byte-identical to tlgconv). Each image is encoded
with the selector's per-block best (`selector`) and with choose_for_file on the
configurations the selector tried (`file pass`), choosing with a Golomb table fitted to
the selector's choices unless --no-fit, each file with its own fitted table (tlg8.golombfit),
as the encoder does; both files are decoded and compared with
the pixels. `--held-out NAME=NPZ` encodes image NAME with another model (a model trained
without it: leave-one-out); "(held out)" marks images not among a model's training images
(its metadata). Prints bytes, % of the reference, the selection time and the pass time per
image, and totals (photos, synthetic). `--sweep` also runs the pass with
other margins, candidate counts, rates and passes (the Pareto curve), photos only.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import filecost, golombfit, selector, synth  # noqa: E402
from tlg8.codec import DEFAULT_TABLE, encode_choices, tile_height  # noqa: E402
from tlg8.image import TILE_W, block_grid, read_image  # noqa: E402
from tlg8.search import search_image  # noqa: E402
from tlg8.tlgfile import decode_tlg8, encode_tlg8, golomb_row_costs  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
PHOTOS = ("dko_sss", "dko_t", "dko_s", "img1", "img2", "img3")
SWEEP = (dict(margin=8), dict(margin=24), dict(margin=48, max_configs=16), dict(passes=2),
         dict(passes=3, margin=48, max_configs=16), dict(rate=(0, 0, 0)),
         dict(rate=(0.5, 1, 1)), dict(rate=(1, 1.5, 1.5)))


def select(samples, model, max_trials):
    """The selector over an image: grid and per block tried (N, T, 4), tried_bits and
    tried_entropy (N, T) (unused rows: config -1, bits the int64 maximum)."""
    height, width = samples.shape[:2]
    grid = block_grid(width, height, tile_height(width, height))      # the encoder's tiles
    sel = model.choose_image(samples, max_trials, details=True, grid=grid)
    return sel["grid"], sel["tried"], sel["tried_bits"], sel["tried_entropy"]


def encoded(samples, choices, verify):
    data = encode_choices(samples, choices, "model")          # with its fitted Golomb table
    if verify:
        decoded, _, _ = decode_tlg8(data)
        if not np.array_equal(decoded, samples):
            sys.exit("a file does not decode to its pixels")
    return len(data)


def images(args):
    """(name, samples, reference bytes) of the benchmark's images."""
    for path in args.images or [os.path.join(SHARED, "images", n + ".bmp") for n in PHOTOS]:
        name = os.path.splitext(os.path.basename(path))[0]
        samples, _ = read_image(path)
        reference = os.path.join(SHARED, "tlgconv", name + ".tlg8")
        if os.path.exists(reference):
            ref_bytes = os.path.getsize(reference)
        else:
            ref_bytes = len(encode_tlg8(samples, search_image(samples)[1][:, :5]))
        yield "photo", name, samples, ref_bytes
    if not args.no_synth:
        for name, rgba in synth.make_images().items():
            # C = 4 (A, R, G, B) only where alpha varies, as read_image's "auto" does.
            samples = np.ascontiguousarray(
                rgba[..., :3] if (rgba[..., 3] == 255).all()
                else np.concatenate([rgba[..., 3:], rgba[..., :3]], axis=2))
            ref_bytes = len(encode_tlg8(samples, search_image(samples)[1][:, :5]))
            yield "synth", name, samples, ref_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="images (default: the shared photos)")
    parser.add_argument("--model", help="pair selector NPZ (default: the shipped one)")
    parser.add_argument("--held-out", action="append", default=[], metavar="NAME=NPZ",
                        help="model for image NAME (trained without it)")
    parser.add_argument("--no-synth", action="store_true", help="skip the synthetic images")
    parser.add_argument("--max-trials", type=int, default=16)
    parser.add_argument("--margin", type=int, default=16)
    parser.add_argument("--max-configs", type=int, default=8)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--rate", type=float, nargs=3, default=filecost.RATE)
    parser.add_argument("--sweep", action="store_true", help="also other pass settings")
    parser.add_argument("--no-verify", action="store_true", help="do not decode the files")
    parser.add_argument("--no-fit", action="store_true",
                        help="the pass chooses with the default Golomb table")
    args = parser.parse_args()
    models = {"": selector.load(args.model) if args.model else selector.default_model()}
    for item in args.held_out:
        name, path = item.split("=", 1)
        models[name] = selector.load(path)
    setting = dict(margin=args.margin, max_configs=args.max_configs, passes=args.passes,
                   rate=tuple(args.rate))
    print(f"pass: {setting}; selector trials {args.max_trials}; "
          f"{'default' if args.no_fit else 'fitted'} table in the pass")
    print(f"{'image':20s} {'blocks':>6s} {'reference B':>11s} {'selector B':>10s} {'%':>7s} "
          f"{'file pass B':>11s} {'%':>7s} {'select s':>8s} {'pass s':>6s}  (CPU)")
    totals = {}
    sweep = {i: 0 for i in range(len(SWEEP))}
    for kind, name, samples, ref_bytes in images(args):
        model = models.get(name, models[""])
        start = time.process_time()
        grid, tried, bits, entropy = select(samples, model, args.max_trials)
        select_s = time.process_time() - start
        rows = np.arange(len(grid))
        best = bits.argmin(1)
        first = np.concatenate([tried[rows, best], entropy[rows, best, None]], 1)
        base = encoded(samples, first, not args.no_verify)
        start = time.process_time()
        # As the encoder does (tlg8.codec): choose with a table fitted to the first choices.
        if not args.no_fit:
            tiles = (TILE_W, tile_height(samples.shape[1], samples.shape[0]))
            setting["golomb_table"] = golombfit.fit(DEFAULT_TABLE, golomb_row_costs(
                samples, first, tile_size=tiles))
        choices = filecost.choose_for_file(samples, grid, tried, bits, entropy, **setting)
        pass_s = time.process_time() - start
        ours = encoded(samples, choices, not args.no_verify)
        trained_on = model.metadata.get("images", [])
        label = name + ("" if any(os.path.splitext(t)[0] == name for t in trained_on)
                        else " (held out)")
        print(f"{label:20s} {len(grid):6d} {ref_bytes:11d} {base:10d} "
              f"{100 * base / ref_bytes:6.2f}% {ours:11d} {100 * ours / ref_bytes:6.2f}% "
              f"{select_s:8.2f} {pass_s:6.2f}", flush=True)
        t = totals.setdefault(kind, np.zeros(6))
        t += (len(grid), ref_bytes, base, ours, select_s, pass_s)
        if args.sweep and kind == "photo":
            for i, extra in enumerate(SWEEP):
                ch = filecost.choose_for_file(samples, grid, tried, bits, entropy,
                                              **{**setting, **extra})
                sweep[i] += encoded(samples, ch, False)
    for kind, (blocks, ref, base, ours, select_s, pass_s) in totals.items():
        print(f"{'TOTAL ' + kind:20s} {int(blocks):6d} {int(ref):11d} {int(base):10d} "
              f"{100 * base / ref:6.2f}% {int(ours):11d} {100 * ours / ref:6.2f}% "
              f"{select_s:8.2f} {pass_s:6.2f}  (pass {1e6 * pass_s / blocks:.0f} us/block, "
              f"{100 * pass_s / select_s:.0f} % of the selection)")
    if args.sweep and "photo" in totals:
        ref = totals["photo"][1]
        for i, extra in enumerate(SWEEP):
            shown = {k: v for k, v in {**setting, **extra}.items() if k != "golomb_table"}
            print(f"sweep {str(shown):70s} {100 * sweep[i] / ref:6.3f}%")


if __name__ == "__main__":
    main()
