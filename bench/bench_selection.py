"""Selection study: strategy and training variants of the pair selector, in real bits.

    python3 bench/bench_selection.py --train dko_s,dko_t,img1 --validate img2 [--variants ...]

Trains a selector on the shared photos named by --train (labels from the cost model,
cached in --cache) or loads --model, then for each strategy variant (candidates K, probe
pairs P, probe options Q; trial cap 16) selects every block of the --validate photos and
prints extra bits vs the reference encoder (the dump's best bits), trials and ms/block.
A development split (validation photo not in --train and not the final held-out ones) is
what the defaults were chosen on; tlg8.evaluate gives the final numbers.

--ablation adds, for the default strategy, what each part is worth: the SAD order instead
of the pair ranker, a fixed option order instead of the scan model, both, and the 16
(pair, option) of highest joint probability tried at once instead of two rounds.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import selector, trials  # noqa: E402
from tlg8_multitask import selector_training  # noqa: E402
from tlg8 import cost  # noqa: E402
from tlg8 import features as feat  # noqa: E402
from tlg8.image import block_grid, block_workspaces, read_image  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def reference_bits(name):
    with gzip.open(os.path.join(SHARED, "tlgconv", name + ".jsonl.gz"), "rb") as f:
        return np.array([json.loads(line)["best"]["bits"] for line in f])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default="dko_s,dko_t,img1")
    parser.add_argument("--validate", default="img2")
    parser.add_argument("--model", help="use this selector instead of training one")
    parser.add_argument("--blocks-per-image", type=int, default=3000)
    parser.add_argument("--ranker-hidden", type=int, default=32)
    parser.add_argument("--scan-hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, nargs=2, default=(10, 15),
                        metavar=("RANKER", "SCAN"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["32:6:2", "32:5:2", "32:4:2",
                                                          "32:4:3", "32:8:1", "48:6:2"],
                        metavar="K:P:Q")
    parser.add_argument("--cache", default="/tmp/h4/cache")
    parser.add_argument("--save", help="write the trained selector here")
    parser.add_argument("--ablation", action="store_true",
                        help="also the worth of each part (full 8x8 blocks of --validate)")
    args = parser.parse_args()
    if args.model:
        model = selector.load(args.model)
    else:
        images = [os.path.join(SHARED, "images", n + ".bmp") for n in args.train.split(",")]
        start = time.perf_counter()
        model = selector_training.train(images, args.blocks_per_image, ranker_hidden=args.ranker_hidden,
                               scan_hidden=args.scan_hidden, ranker_epochs=args.epochs[0],
                               scan_epochs=args.epochs[1], seed=args.seed, cache=args.cache,
                               log=lambda m: print(m, file=sys.stderr))
        print(f"trained on {args.train} ({args.blocks_per_image} blocks each) in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
        if args.save:
            model.save(args.save)
    print(f"{'image':<10}{'K:P:Q':>9}{'trials':>8}{'extra %':>10}{'ms/block':>10}")
    for name in args.validate.split(","):
        samples, _ = read_image(os.path.join(SHARED, "images", name + ".bmp"))
        ref = reference_bits(name)
        for variant in args.variants:
            k, p, q = (int(v) for v in variant.split(":"))
            model.candidates, model.probe_pairs, model.probe_options = k, p, q
            start = time.perf_counter()
            sel = model.choose_image(samples, 16)
            grid, bits = sel["grid"], sel["bits"]
            ms = 1e3 * (time.perf_counter() - start) / len(grid)
            print(f"{name:<10}{variant:>9}{sel['trials'].mean():>8.2f}"
                  f"{100 * (bits.sum() / ref.sum() - 1):>+10.3f}{ms:>10.3f}", flush=True)
        if args.ablation:
            model.candidates, model.probe_pairs, model.probe_options = 32, 6, 2
            ablation(name, samples, ref, model)


def ablation(name, samples, ref, model, chunk=2048):
    """Extra bits of the default strategy with parts replaced, on the full blocks."""
    grid = block_grid(samples.shape[1], samples.shape[0])
    full = np.flatnonzero((grid[:, 4] == 8) & (grid[:, 5] == 8))
    static = np.array(trials.STATIC_OPTION_ORDER)
    totals = {}
    for lo in range(0, len(full), chunk):
        ws = block_workspaces(samples, grid[full[lo:lo + chunk]])
        residuals, pairs, scores, options, logp = model.rank(ws)
        _, sad, _ = feat.block_stats(ws)
        by_sad = feat.top_pairs(feat.pair_proxy(sad, ws.shape[1]), model.candidates)
        sad_logits = model.option_logits(feat.scan_features(
            feat.coded_pairs(residuals, by_sad[:, :options.shape[1]]), 8, 8))
        sad_options = np.argsort(-sad_logits, axis=2, kind="stable")
        fixed = np.broadcast_to(static, options.shape)

        def rounds(p, o):
            def evaluate_(res, configs):
                return cost.block_configs_bits(res, configs, 8, 8)
            first, n_pairs, n_opts = trials.round_one(p, o, 6, 2, 16)
            b1, _ = evaluate_(residuals, first)
            second = trials.round_two(p, o, b1.reshape(len(p), n_pairs, n_opts).min(2),
                                        n_pairs, n_opts, 16 - first.shape[1])
            b2, _ = evaluate_(residuals, second)
            return np.minimum(b1.min(1), b2.min(1))

        # all at once: the 16 (pair, option) of highest summed log-probability
        pair_logp = scores - np.log(np.exp(scores - scores.max(1, keepdims=True))
                                    .sum(1, keepdims=True)) - scores.max(1, keepdims=True)
        joint = (pair_logp[:, :logp.shape[1], None] + logp).reshape(len(ws), -1)
        top = np.argsort(-joint, axis=1, kind="stable")[:, :16]
        at_once = trials.config_of(np.take_along_axis(pairs, top // 16, 1), top % 16)
        runs = {"ranker + scan model, two rounds (default)": rounds(pairs, options),
                "SAD order + scan model": rounds(by_sad, sad_options),
                "ranker + fixed option order": rounds(pairs, fixed),
                "SAD order + fixed option order": rounds(by_sad, fixed),
                "ranker + scan model, top-16 at once": cost.block_configs_bits(
                    residuals, at_once, 8, 8)[0].min(1)}
        for k, v in runs.items():
            totals[k] = totals.get(k, 0) + int(v.sum())
    reference = int(ref[full].sum())
    for k, v in totals.items():
        print(f"{name:<10}{k:<46}{100 * (v / reference - 1):>+8.3f} %")


if __name__ == "__main__":
    main()
