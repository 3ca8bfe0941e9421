"""Selection quality in real bits: a model + its trial strategy against the reference search.

    python3 -m tlg8.evaluate --model M.npz IMAGE... [--json FILE] [--plot FILE.png]
                             [--max-trials 16] [--dumps DIR] [--quiet]

For every block of every image:

* the reference search (tlg8.search, bit-exact with tlgconv) gives `best` and `second` and
  its bits — the target; with --dumps DIR the labels are read from DIR/NAME.jsonl[.gz]
  (the reference encoder's dump of IMAGE, read and validated by tlg8.records) instead of
  searched, after checking geometry; an image without its dump there is an error;
* the model (any kind; the shipped pair selector unless --model is given) picks a
  configuration with at most --max-trials trials through the exact cost model (its own
  strategy, model.choose_image);
* the non-ML baselines of tlg8.trials use the same number of trials.

Reported per image and overall: per-head top1/top2/two_choice against the reference's
best/second and tie_aware (best, or second when it has as many bits: tlg8.heads), of the
model's ranking ("heads") and of the configuration kept after the trials ("heads_kept");
tuple hit@K (the reference's best (p, f, r, i) among the method's first K trials),
mean/max trials per block, total bits and extra bits vs the reference (%), and wall time
split into features, model inference and trials, with blocks/s.

`evaluate(paths, model, ...)` returns the same numbers as a dict (what --json writes).
Results go to stdout, progress and diagnostics to stderr.
"""
import argparse
import json
import os
import sys

import numpy as np

from . import Tlg8Error, cli, records, search, trials
from .fileio import atomic_write, check_writable, write_file
from .heads import HEAD_NAMES, head_labels, hit_counts, metrics_of, tie_mask
from .image import block_batches, block_grid, block_workspaces, read_image
from .selector import default_model

HEADS = HEAD_NAMES
HIT_K = (1, 2, 4, 8, 16)
BASELINES = trials.BASELINES
CHUNK = 2048


class EvaluationError(Tlg8Error):
    """An input cannot be evaluated (unreadable image, dump that does not match)."""


# ---------------------------------------------------------------------------------------
# Reference labels


def read_dump(path, grid):
    """best, second (N, 6) = p, f, r, i, e, bits from a reference dump of the image
    (tlg8.records validates it); second is -1 where the record has none."""
    data, problems = records.parse_file(path)
    if problems:
        raise EvaluationError(f"{records.format_problem(problems[0])}"
                              + (f" (and {len(problems) - 1} more problems)"
                                 if len(problems) > 1 else ""))
    n = records.dataset_size(data)
    if n != len(grid):
        raise EvaluationError(f"{path}: {n} records, the image has {len(grid)} blocks")
    geometry = np.concatenate([data["origin"], data["size"][:, :2]], axis=1)
    wrong = np.flatnonzero((geometry != grid[:, 2:]).any(axis=1))
    if len(wrong):
        i = int(wrong[0])
        raise EvaluationError(f"{path}:{i + 1}: block {geometry[i, :2].tolist()} "
                              f"{geometry[i, 2:].tolist()} is not block {i} of the image")
    best = np.concatenate([data["best"], data["bits"][:, :1]], axis=1).astype(np.int64)
    second = np.concatenate([data["second"], data["bits"][:, 1:]], axis=1).astype(np.int64)
    second[data["second"][:, 0] < 0] = -1
    return best, second


def find_dump(dumps, image_path):
    """DIR/NAME.jsonl or DIR/NAME.jsonl.gz of IMAGE; EvaluationError when neither exists."""
    name = os.path.splitext(os.path.basename(image_path))[0]
    for suffix in records.DATA_SUFFIXES:
        path = os.path.join(dumps, name + suffix)
        if os.path.exists(path):
            return path
    raise EvaluationError(f"{image_path}: no dump {name}.jsonl or {name}.jsonl.gz in {dumps}")


# ---------------------------------------------------------------------------------------
# Evaluation


def _new_timing():
    return {"features": 0.0, "inference": 0.0, "trials": 0.0}


def evaluate_image(path, model, max_trials=16, dumps=None, progress=None, keep_blocks=False,
                   max_pixels=None):
    """Numbers of one image (see evaluate); model: a loaded model."""
    samples, _ = read_image(path, **({} if max_pixels is None else {"max_pixels": max_pixels}))
    grid = block_grid(samples.shape[1], samples.shape[0])
    n = len(grid)
    clock = trials.Clock(None)
    if dumps:
        reference_source = find_dump(dumps, path)
        best, second = read_dump(reference_source, grid)
        if progress:
            progress(n)
    else:
        _, best, second = search.search_image(samples, "reference", progress=progress)
        reference_source = "search"
    reference_seconds = clock.since()
    methods = ("model",) + BASELINES
    timings = {m: _new_timing() for m in methods}
    sel = model.choose_image(samples, max_trials, timings=timings["model"], details=True)
    results = {m: (np.full((n, max_trials, 4), -1, np.int64),
                   np.full((n, max_trials), np.iinfo(np.int64).max, np.int64),
                   np.zeros((n, max_trials), np.int64)) for m in BASELINES}
    results["model"] = (sel["tried"], sel["tried_bits"], sel["tried_entropy"])
    for index in block_batches(grid, CHUNK):
        ws = block_workspaces(samples, grid[index])
        for m, (cfgs, b, e) in trials.baseline_trials(ws, max_trials, timings).items():
            results[m][0][index, :cfgs.shape[1]] = cfgs
            results[m][1][index, :cfgs.shape[1]] = b
            results[m][2][index, :cfgs.shape[1]] = e
        if progress:
            progress(len(index))
    bits, chosen, counts, first_hit = {}, {}, {}, {}
    for m, (cfgs, b, e) in results.items():
        chosen[m], bits[m] = trials.pick_fewest(cfgs, b, e)
        counts[m] = (cfgs[:, :, 0] >= 0).sum(axis=1)
        if counts[m].max(initial=0) > max_trials:
            raise AssertionError(f"{m} tried {counts[m].max()} > {max_trials}")
        match = (cfgs == best[:, None, :4]).all(axis=2)
        first_hit[m] = np.where(match.any(axis=1), match.argmax(axis=1), -1)

    labels = (head_labels(best), head_labels(second),
              tie_mask(second, np.stack([best[:, 5], second[:, 5]], 1)))
    # The configuration the encoder keeps after its trials, and the runner-up trial, read
    # as per-head classes: what the model + trials finally choose, beside the model's own
    # ranking before any trial ("heads").
    by_bits = np.argsort(sel["tried_bits"], axis=1, kind="stable")[:, :2]
    kept = np.take_along_axis(sel["tried"], by_bits[..., None], 1)
    kept_top2 = np.stack([head_labels(kept[:, j]) for j in range(kept.shape[1])], axis=2)
    if kept_top2.shape[2] == 1:
        kept_top2 = np.concatenate([kept_top2, np.full_like(kept_top2, -1)], axis=2)
    out = {"image": os.path.basename(path), "path": os.fspath(path), "blocks": n,
           "reference": {"source": reference_source, "bits": int(best[:, 5].sum()),
                         "seconds": reference_seconds},
           "heads": {f"head_{name}": m for name, m in metrics_of(
               hit_counts(sel["top2"], *labels), n).items()},
           "heads_kept": {f"head_{name}": m for name, m in metrics_of(
               hit_counts(kept_top2, *labels), n).items()},
           "methods": {}}
    ref_bits = best[:, 5].sum()
    for m in methods:
        seconds = sum(timings[m].values())
        out["methods"][m] = {
            "bits": int(bits[m].sum()),
            "extra_percent": float(100 * (bits[m].sum() / ref_bits - 1)) if ref_bits else 0.0,
            "trials_mean": float(counts[m].mean()) if n else 0.0,
            "trials_max": int(counts[m].max()) if n else 0,
            "hit": {str(k): float(np.mean((first_hit[m] >= 0) & (first_hit[m] < k)))
                    for k in HIT_K},
            "below_reference": float(np.mean(bits[m] < best[:, 5])),
            "above_reference": float(np.mean(bits[m] > best[:, 5])),
            "seconds": {k: float(timings[m].get(k, 0.0)) for k in _new_timing()},
            "ms_per_block": float(1e3 * seconds / n) if n else 0.0,
            "blocks_per_second": float(n / seconds) if seconds else 0.0,
        }
    if keep_blocks:
        out["per_block"] = {"reference_bits": best[:, 5], "best": best, "second": second,
                            "bits": bits, "trials": counts, "chosen": chosen}
    return out


def combine(images):
    """Overall numbers of several evaluate_image results (block-weighted)."""
    n = sum(r["blocks"] for r in images)
    ref = sum(r["reference"]["bits"] for r in images)
    out = {"image": "overall", "blocks": n,
           "reference": {"bits": ref, "seconds": sum(r["reference"]["seconds"] for r in images)},
           "heads": {}, "heads_kept": {}, "methods": {}}
    for key in ("heads", "heads_kept"):
        for h in images[0][key]:
            out[key][h] = {k: sum(r[key][h][k] * r["blocks"] for r in images) / n
                           for k in images[0][key][h]}
    for m in images[0]["methods"]:
        rs = [r["methods"][m] for r in images]
        seconds = {k: sum(x["seconds"][k] for x in rs) for k in rs[0]["seconds"]}
        total = sum(seconds.values())
        b = sum(x["bits"] for x in rs)
        out["methods"][m] = {
            "bits": b,
            "extra_percent": float(100 * (b / ref - 1)) if ref else 0.0,
            "trials_mean": sum(x["trials_mean"] * r["blocks"] for x, r in zip(rs, images)) / n,
            "trials_max": max(x["trials_max"] for x in rs),
            "hit": {k: sum(x["hit"][k] * r["blocks"] for x, r in zip(rs, images)) / n
                    for k in rs[0]["hit"]},
            "below_reference": sum(x["below_reference"] * r["blocks"]
                                   for x, r in zip(rs, images)) / n,
            "above_reference": sum(x["above_reference"] * r["blocks"]
                                   for x, r in zip(rs, images)) / n,
            "seconds": seconds,
            "ms_per_block": 1e3 * total / n,
            "blocks_per_second": n / total if total else 0.0,
        }
    return out


def _block_count(paths):
    """Blocks of all images from their headers (0 for unreadable ones: they fail later)."""
    from PIL import Image
    total = 0
    for path in paths:
        try:
            with Image.open(path) as im:
                total += len(block_grid(*im.size))
        except Exception:              # noqa: BLE001 - only a progress-bar estimate
            pass
    return total


def evaluate(paths, model=None, max_trials=16, dumps=None, progress=False, keep_blocks=False,
             max_pixels=None):
    """Evaluate a model on images: {"max_trials", "model", "images": [...], "overall"}.

    model: a loaded model (any kind of the model interface); None is the shipped pair
    selector. progress: show a tqdm bar (stderr). keep_blocks: also return per-block arrays
    under "per_block".
    """
    max_trials = trials.check_max_trials(max_trials)
    model = default_model() if model is None else model
    images = []
    # Each block counts twice: once for the reference, once for the model and baselines.
    with cli.progress(2 * _block_count(paths), not progress) as bar:
        for path in paths:
            bar.set_description(os.path.basename(path))
            images.append(evaluate_image(path, model, max_trials, dumps, bar.update,
                                         keep_blocks, max_pixels))
    return {"max_trials": max_trials, "model": {"format": model.format,
            "metadata": model.metadata}, "images": images, "overall": combine(images)}


# ---------------------------------------------------------------------------------------
# Output


def format_report(result):
    """The human-readable tables."""
    lines = []
    names = {"model": f"model ({result['model']['format'].split('/')[0][5:]})"}
    for r in result["images"] + ([result["overall"]] if len(result["images"]) > 1 else []):
        ref = r["reference"]
        lines.append(f"== {r['image']}: {r['blocks']} blocks, reference {ref['bits']} bits "
                     f"({ref.get('source', 'total')}, {ref['seconds']:.1f} s)")
        lines.append(f"{'method':<22}{'trials':>7}{'max':>5}{'bits':>12}{'extra %':>9}"
                     f"{'hit@1':>7}{'hit@16':>7}{'feat':>8}{'infer':>8}{'trials':>8}"
                     f"{'ms/blk':>8}{'blk/s':>8}")
        for m, x in r["methods"].items():
            s = x["seconds"]
            lines.append(f"{names.get(m, m):<22}{x['trials_mean']:>7.2f}{x['trials_max']:>5}"
                         f"{x['bits']:>12}{x['extra_percent']:>+9.3f}{x['hit']['1']:>7.3f}"
                         f"{x['hit']['16']:>7.3f}{s['features']:>8.2f}{s['inference']:>8.2f}"
                         f"{s['trials']:>8.2f}{x['ms_per_block']:>8.3f}"
                         f"{x['blocks_per_second']:>8.0f}")
        lines.append(f"{'head':<24}{'top1':>7}{'top2':>7}{'two_choice':>11}{'tie_aware':>10}"
                     f"{'kept: top1':>11}{'two_choice':>11}{'tie_aware':>10}")
        for h, x in r["heads"].items():
            k = r["heads_kept"][h]
            lines.append(f"{h:<24}{x['top1']:>7.3f}{x['top2']:>7.3f}{x['two_choice']:>11.3f}"
                         f"{x['tie_aware']:>10.3f}{k['top1']:>11.3f}{k['two_choice']:>11.3f}"
                         f"{k['tie_aware']:>10.3f}")
        lines.append("")
    lines.append("times in seconds (wall); extra % = bits / reference bits - 1; hit@K = the "
                 "reference's best (p, f, r, i) among the first K trials; tie_aware = the "
                 "head's first class is best's, or second's when second.bits == best.bits;\n"
                 "heads: the model's ranking before any trial; kept: the configuration kept "
                 "after the trials (and the runner-up trial as second class).\n"
                 "baselines (no model, tlg8.trials.baseline_trials): sse-top1 / sad-top1: "
                 "the pair with the least squared / absolute filtered residual x its options\n"
                 "(then the next pairs if the cap allows); sad-adaptive: 4 least-absolute "
                 "pairs x 2 fixed options, then the best of them x the other options.")
    return "\n".join(lines)


def plot(result, path):
    """Histograms of per-block extra bits and of trials (needs keep_blocks results)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EvaluationError("--plot needs matplotlib, an optional extra: "
                              "python3 -m pip install matplotlib") from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = list(result["images"][0]["per_block"]["bits"])
    extra = {m: np.concatenate([r["per_block"]["bits"][m] - r["per_block"]["reference_bits"]
                                for r in result["images"]]) for m in methods}
    trials = {m: np.concatenate([r["per_block"]["trials"][m] for r in result["images"]])
              for m in methods}
    # Common bins (the central 99 % of all methods' values; the tails pile up at the ends).
    lo, hi = np.percentile(np.concatenate(list(extra.values())), [0.5, 99.5])
    edges = np.linspace(lo, hi, 81) if hi > lo else np.array([lo - 0.5, lo + 0.5])
    top = max(int(t.max()) for t in trials.values())
    for m in methods:
        axes[0].hist(np.clip(extra[m], lo, hi), bins=edges, histtype="step", label=m)
        axes[1].hist(trials[m], bins=np.arange(top + 2) - 0.5, histtype="step", label=m)
    axes[0].set_xlabel("bits - reference bits per block")
    axes[0].set_yscale("log")
    axes[1].set_xlabel("trials per block")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _jsonable(result):
    out = dict(result)
    out["images"] = [{k: v for k, v in r.items() if k != "per_block"} for r in result["images"]]
    return out


def main(argv=None, prog="python3 -m tlg8.evaluate"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate a selection model against the reference search in real bits.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="BMP or PNG images")
    parser.add_argument("--model", metavar="NPZ",
                        help="a trained model (train_multitask.py; any kind); default: the "
                             "pair selector shipped with the encoder")
    parser.add_argument("--max-trials", type=cli.positive_int, default=16,
                        help="trials per block for the model and the baselines (default 16)")
    parser.add_argument("--dumps", metavar="DIR",
                        help="read the reference's labels from DIR/NAME.jsonl[.gz] instead of "
                             "running the reference search (every image needs its dump)")
    parser.add_argument("--json", metavar="FILE", help="write all numbers as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="histograms of per-block extra bits and trials (matplotlib)")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=None,
                        help="refuse larger images, checked from the header")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return cli.run(lambda: _run(args))


def _run(args):
    if args.plot:
        try:
            import matplotlib  # noqa: F401 - checked before the work, used by plot()
        except ImportError:
            raise EvaluationError("--plot needs matplotlib, an optional extra: "
                                  "python3 -m pip install matplotlib") from None
    for path in (args.json, args.plot):
        if path:
            check_writable(path)                   # before the evaluation, not after it
    if args.dumps and not os.path.isdir(args.dumps):
        raise EvaluationError(f"--dumps {args.dumps}: no such directory")
    model = cli.load_model(args.model) if args.model else default_model()
    good, failed = [], 0
    for path in args.images:
        try:
            read_image(path, **({} if args.max_pixels is None else
                                {"max_pixels": args.max_pixels}))
            if args.dumps:
                find_dump(args.dumps, path)
            good.append(path)
        except Tlg8Error as e:
            cli.error(e)
            failed += 1
    if not good:
        raise EvaluationError("no image could be evaluated")
    result = evaluate(good, model, args.max_trials, args.dumps, progress=not args.quiet,
                      keep_blocks=bool(args.plot), max_pixels=args.max_pixels)
    print(format_report(result))
    if args.json:
        write_file(args.json, "w", lambda f: json.dump(_jsonable(result), f, indent=1))
    if args.plot:
        plot(result, args.plot)
    return cli.EXIT_ERROR if failed else 0


if __name__ == "__main__":
    sys.exit(main())
