"""Selection quality in real bits: a model + its trial strategy against the reference search.

    python3 -m tlg8.evaluate --model M.npz IMAGE... [--json FILE] [--plot FILE.png]
                             [--max-trials 16] [--dumps DIR] [--quiet]

For every block of every image:

* the reference search (tlg8.search, bit-exact with tlgconv) gives `best` and `second` and
  its bits — the target; with --dumps DIR the labels are read from DIR/NAME.jsonl[.gz]
  (the reference encoder's dump of IMAGE) instead of searched, after checking geometry;
* the model picks a configuration with at most --max-trials trials through the exact cost
  model (the trials' bits are the better entropy of the two, as an encoder callback
  returns them): a pair selector (pair_selector.py) with its adaptive two-round strategy,
  or a multitask model (multitask_model.py) with beam_search_runtime.plan_trials;
* non-ML baselines use the same number of trials: the (predictor, filter) pair with the
  least squared filtered residual, or with the least sum of absolute filtered residuals,
  x 8 reorders x 2 interleaves (edge blocks, whose reorders coincide: the 8 best pairs x 2
  interleaves), and "sad-adaptive", the selector's two rounds with the absolute-residual
  ranking and one fixed option order instead of the models.

Reported per image and overall: per-head top1/top2/two_choice against the reference's
best/second, tuple hit@K (the reference's best (p, f, r, i) among the method's first K
trials), mean/max trials per block, total bits and extra bits vs the reference (%), and wall
time split into features, model inference and trials, with blocks/s.

`evaluate(paths, model, ...)` returns the same numbers as a dict (what --json writes).
Results go to stdout, progress and diagnostics to stderr.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

import pair_selector as sel
from . import Tlg8Error, cost, search, stages
from . import features as feat
from .image import block_batches, block_grid, block_workspaces, read_image

HEADS = ("head_predictor", "head_filter_perm", "head_filter_primary", "head_filter_secondary",
         "head_reorder", "head_interleave")
HIT_K = (1, 2, 4, 8, 16)
# A fixed option order (reorder * 2 + interleave) for the sad-adaptive baseline: options by
# how often they are the best option of the best pair, counted once on training photos
# (dko_s, dko_t, img1 exhaustive tables; bench/exhaustive_tables.py). A constant, not a model.
STATIC_OPTION_ORDER = (1, 0, 7, 6, 3, 2, 9, 8, 5, 4, 13, 15, 11, 12, 14, 10)
BASELINES = ("sse-top1", "sad-top1", "sad-adaptive")
CHUNK = 2048


class EvaluationError(Tlg8Error):
    """An input cannot be evaluated (unreadable image, dump that does not match)."""


# ---------------------------------------------------------------------------------------
# Trial plans of the baselines


def pair_major_plan(pair_order, option_order, max_trials, distinct):
    """Configs (N, T, 4): pairs in order, each with its first `distinct` options, cut at
    max_trials. option_order: (16,) shared by all blocks."""
    n_blocks = len(pair_order)
    n_pairs = min(pair_order.shape[1], -(-max_trials // distinct))
    opts = np.asarray(option_order)[:distinct]
    pairs = np.repeat(pair_order[:, :n_pairs], distinct, axis=1)[:, :max_trials]
    options = np.tile(opts, n_pairs)[:max_trials]
    configs = np.stack([pairs // 96, pairs % 96, np.broadcast_to(options // 2, pairs.shape),
                        np.broadcast_to(options % 2, pairs.shape)], axis=-1)
    return configs.reshape(n_blocks, -1, 4)


def _option_order(distinct):
    """The static option order restricted to edge blocks' two distinct options."""
    if distinct == 16:
        return np.array(STATIC_OPTION_ORDER)
    return np.array([o for o in STATIC_OPTION_ORDER if o < 2])


def _pick(configs, bits, entropy):
    """Chosen (N, 5) and bits (N,): fewest bits, earlier trial on ties."""
    rows = np.arange(len(bits))
    j = np.argmin(bits, axis=1)
    return np.concatenate([configs[rows, j], entropy[rows, j][:, None]], axis=1), bits[rows, j]


def _sort_pairs(values):
    """Pair ids (N, 768) sorted by values ascending, ties to the lower id (stable)."""
    return np.argsort(values.reshape(len(values), -1), axis=1, kind="stable")


# ---------------------------------------------------------------------------------------
# Methods: each returns per block (tried configs (N, T, 4), bits (N, T), entropy (N, T))
# and adds seconds to timings["features"/"inference"/"trials"].


def run_baselines(ws, max_trials, timings):
    """{name: (tried, bits, entropy)} of the non-ML baselines on blocks of one size."""
    h, w = ws.shape[2] - 1, ws.shape[3] - 2
    distinct = 16 if (w, h) == (8, 8) else 2
    out = {}
    t0 = time.perf_counter()
    res = stages.all_residuals(ws)
    _, e_pair = search.pair_energies(res, search.filter_candidates(res))
    sse_order = _sort_pairs(e_pair)
    t1 = time.perf_counter()
    planes, sad, _ = feat.block_stats(ws)
    sad_order = _sort_pairs(feat.pair_proxy(sad, ws.shape[1]))
    residuals = feat.block_major(planes)
    t2 = time.perf_counter()
    timings["sse-top1"]["features"] += t1 - t0
    timings["sad-top1"]["features"] += t2 - t1
    timings["sad-adaptive"]["features"] += t2 - t1
    for name, order in (("sse-top1", sse_order), ("sad-top1", sad_order)):
        t = time.perf_counter()
        plan = pair_major_plan(order, _option_order(distinct), max_trials, distinct)
        bits, entropy = cost.block_configs_bits(residuals, plan, w, h)
        timings[name]["trials"] += time.perf_counter() - t
        out[name] = (plan, bits, entropy)
    # sad-adaptive: the selector's rounds with the SAD ranking and the static option order.
    t = time.perf_counter()
    options = np.broadcast_to(np.array(list(_option_order(distinct)) +
                                       [o for o in range(16) if o not in _option_order(distinct)]),
                              (len(ws), 8, 16))
    pairs = sad_order[:, :8]
    first, n_pairs, n_opts = sel.round_one(pairs, options, 4, 2, max_trials, distinct)
    b1, e1 = cost.block_configs_bits(residuals, first, w, h)
    measured = b1.reshape(len(ws), n_pairs, n_opts).min(axis=2)
    second = sel.round_two(pairs, options, measured, n_pairs, n_opts,
                          max_trials - first.shape[1], distinct)
    tried, bits, entropy = first, b1, e1
    if second.shape[1]:
        b2, e2 = cost.block_configs_bits(residuals, second, w, h)
        tried = np.concatenate([first, second], 1)
        bits = np.concatenate([b1, b2], 1)
        entropy = np.concatenate([e1, e2], 1)
    timings["sad-adaptive"]["trials"] += time.perf_counter() - t
    out["sad-adaptive"] = (tried, bits, entropy)
    return out


class _Model:
    """A loaded model and how to run it: kind "selector" (pair_selector.PairSelector, its
    two-round strategy) or "multitask" (multitask_model.MultiTaskModel with
    beam_search_runtime.plan_trials — the one place this package imports the ML side, and
    only when given such a model)."""

    def __init__(self, model):
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.exists(path):
                raise EvaluationError(f"{path}: model file not found")
            if sel.is_selector_file(path):
                model = sel.load_selector(path)
            else:
                import multitask_model as mm
                model = mm.MultiTaskModel.load(path)
        self.model = model
        self.kind = "selector" if isinstance(model, sel.PairSelector) else "multitask"

    def heads_and_trials(self, samples, grid, index, ws, max_trials, timings):
        """(head top-2 ids {head: (N, 2)}, tried (N, T, 4), bits (N, T), entropy (N, T))."""
        if self.kind == "selector":
            out = sel.select_blocks(ws, self.model, max_trials, timings)
            heads = sel.head_log_proba(out["pairs"], out["pair_scores"], out["option_logp"])
            top2 = {k: np.argsort(-v, axis=1, kind="stable")[:, :2] for k, v in heads.items()}
            return top2, out["tried"], out["tried_bits"], out["tried_entropy"]
        import beam_search_runtime as bsr
        t = time.perf_counter()
        x = self.model.image_features(samples, grid[index])
        t1 = time.perf_counter()
        timings["features"] += t1 - t
        configs, _, counts = bsr.plan_trials(x, self.model, max_trials=max_trials)
        t2 = time.perf_counter()
        timings["inference"] += t2 - t1
        topk = self.model.topk_arrays(x, k=2)          # for the head metrics, not timed
        t2 = time.perf_counter()
        unused = configs[:, :, 0] < 0
        filled = np.where(unused[:, :, None], configs[:, :1], configs)
        bits, entropy = cost.configs_bits(ws, filled)
        bits[unused] = np.iinfo(np.int64).max
        timings["trials"] += time.perf_counter() - t2
        top2 = {k: ids[:, :2] for k, (ids, _) in topk.items()}
        return top2, configs, bits, entropy


# ---------------------------------------------------------------------------------------
# Reference labels


def read_dump(path, grid):
    """best, second (N, 6) from a reference dump (JSONL, optionally gzip) of the image."""
    opener = gzip.open if path.endswith(".gz") else open
    fields = ("predictor", "filter", "reorder", "interleave", "entropy", "bits")
    with opener(path, "rb") as f:
        lines = f.read().splitlines()
    if len(lines) != len(grid):
        raise EvaluationError(f"{path}: {len(lines)} records, the image has {len(grid)} blocks")
    best = np.zeros((len(grid), 6), np.int64)
    second = np.zeros((len(grid), 6), np.int64)
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec["block_origin"] + rec["block_size"] != grid[i, 2:].tolist():
            raise EvaluationError(f"{path}:{i + 1}: block {rec['block_origin']} "
                                  f"{rec['block_size']} is not block {i} of the image")
        best[i] = [rec["best"][k] for k in fields]
        second[i] = [rec["second"][k] for k in fields] if rec["second"] else best[i]
    return best, second


def find_dump(dumps, image_path):
    name = os.path.splitext(os.path.basename(image_path))[0]
    for suffix in (".jsonl", ".jsonl.gz"):
        path = os.path.join(dumps, name + suffix)
        if os.path.exists(path):
            return path
    return None


# ---------------------------------------------------------------------------------------
# Evaluation


def _new_timing():
    return {"features": 0.0, "inference": 0.0, "trials": 0.0}


def evaluate_image(path, model, max_trials=16, dumps=None, progress=None, keep_blocks=False):
    """Numbers of one image (see evaluate); model: a path or a loaded model."""
    runner = model if isinstance(model, _Model) else _Model(model)
    try:
        samples, _ = read_image(path)
    except Tlg8Error as e:
        raise EvaluationError(str(e)) from None
    grid = block_grid(samples.shape[1], samples.shape[0])
    n = len(grid)
    t = time.perf_counter()
    dump = find_dump(dumps, path) if dumps else None
    if dump:
        best, second = read_dump(dump, grid)
        reference_source = dump
        if progress:
            progress(n)
    else:
        _, best, second = search.search_image(samples, "reference", progress=progress)
        reference_source = "search"
    reference_seconds = time.perf_counter() - t
    methods = ("model",) + BASELINES
    timings = {m: _new_timing() for m in methods}
    bits = {m: np.zeros(n, np.int64) for m in methods}
    trials = {m: np.zeros(n, np.int64) for m in methods}
    chosen = {m: np.zeros((n, 5), np.int64) for m in methods}
    first_hit = {m: np.full(n, -1, np.int64) for m in methods}      # trial index of best
    heads = {h: np.zeros((n, 2), np.int64) for h in HEADS}
    for index in block_batches(grid, CHUNK):
        ws = block_workspaces(samples, grid[index])
        top2, tried, tb, te = runner.heads_and_trials(samples, grid, index, ws, max_trials,
                                                      timings["model"])
        results = {"model": (tried, tb, te)}
        results.update(run_baselines(ws, max_trials, timings))
        for m, (cfgs, b, e) in results.items():
            if cfgs.shape[1] > max_trials:
                raise AssertionError(f"{m} tried {cfgs.shape[1]} > {max_trials}")
            chosen[m][index], bits[m][index] = _pick(cfgs, b, e)
            trials[m][index] = (cfgs[:, :, 0] >= 0).sum(axis=1)
            match = (cfgs == best[index, None, :4]).all(axis=2)
            first_hit[m][index] = np.where(match.any(axis=1), match.argmax(axis=1), -1)
        for h in HEADS:
            heads[h][index] = top2[h]
        if progress:
            progress(len(index))

    labels_best = _head_labels(best)
    labels_second = _head_labels(second)
    out = {"image": os.path.basename(path), "path": os.fspath(path), "blocks": n,
           "reference": {"source": reference_source, "bits": int(best[:, 5].sum()),
                         "seconds": reference_seconds},
           "heads": {}, "methods": {}}
    for k, h in enumerate(HEADS):
        top = heads[h]
        out["heads"][h] = {
            "top1": float(np.mean(top[:, 0] == labels_best[:, k])),
            "top2": float(np.mean((top == labels_best[:, k, None]).any(axis=1))),
            "two_choice": float(np.mean((top[:, 0] == labels_best[:, k])
                                        | (top[:, 0] == labels_second[:, k]))),
        }
    ref_bits = best[:, 5].sum()
    for m in methods:
        seconds = sum(timings[m].values())
        out["methods"][m] = {
            "bits": int(bits[m].sum()),
            "extra_percent": float(100 * (bits[m].sum() / ref_bits - 1)) if ref_bits else 0.0,
            "trials_mean": float(trials[m].mean()) if n else 0.0,
            "trials_max": int(trials[m].max()) if n else 0,
            "hit": {str(k): float(np.mean((first_hit[m] >= 0) & (first_hit[m] < k)))
                    for k in HIT_K},
            "below_reference": float(np.mean(bits[m] < best[:, 5])),
            "above_reference": float(np.mean(bits[m] > best[:, 5])),
            "seconds": {k: float(v) for k, v in timings[m].items()},
            "ms_per_block": float(1e3 * seconds / n) if n else 0.0,
            "blocks_per_second": float(n / seconds) if seconds else 0.0,
        }
    if keep_blocks:
        out["per_block"] = {"reference_bits": best[:, 5], "best": best, "second": second,
                            "bits": bits, "trials": trials, "chosen": chosen}
    return out


def _head_labels(cands):
    perm, primary, secondary = stages.split_filter_code(cands[:, 1])
    return np.stack([cands[:, 0], perm, primary, secondary, cands[:, 2], cands[:, 3]], axis=1)


def combine(images):
    """Overall numbers of several evaluate_image results (block-weighted)."""
    n = sum(r["blocks"] for r in images)
    ref = sum(r["reference"]["bits"] for r in images)
    out = {"image": "overall", "blocks": n,
           "reference": {"bits": ref, "seconds": sum(r["reference"]["seconds"] for r in images)},
           "heads": {}, "methods": {}}
    for h in HEADS:
        out["heads"][h] = {k: sum(r["heads"][h][k] * r["blocks"] for r in images) / n
                           for k in ("top1", "top2", "two_choice")}
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


def evaluate(paths, model, max_trials=16, dumps=None, progress=False, keep_blocks=False):
    """Evaluate a model on images: {"max_trials", "model", "images": [...], "overall"}.

    model: a model path (pair selector or multitask NPZ) or a loaded model. progress: show
    a tqdm bar (stderr). keep_blocks: also return per-block arrays under "per_block".
    """
    if isinstance(max_trials, bool) or int(max_trials) != max_trials or max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, not {max_trials!r}")
    runner = _Model(model)
    images = []
    bar = None
    if progress:
        from tqdm import tqdm
        # Each block counts twice: once for the reference, once for model and baselines.
        bar = tqdm(total=2 * _block_count(paths), unit="blk", file=sys.stderr)
    try:
        for path in paths:
            if bar is not None:
                bar.set_description(os.path.basename(path))
            images.append(evaluate_image(path, runner, int(max_trials), dumps,
                                         (lambda k: bar.update(k)) if bar is not None else None,
                                         keep_blocks))
    finally:
        if bar is not None:
            bar.close()
    return {"max_trials": int(max_trials), "model": {"kind": runner.kind,
            "path": os.fspath(model) if isinstance(model, (str, os.PathLike)) else None},
            "images": images, "overall": combine(images)}


# ---------------------------------------------------------------------------------------
# Output


def format_report(result):
    """The human-readable tables."""
    lines = []
    names = {"model": f"model ({result['model']['kind']})"}
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
        lines.append(f"{'head':<24}{'top1':>7}{'top2':>7}{'two_choice':>11}")
        for h, x in r["heads"].items():
            lines.append(f"{h:<24}{x['top1']:>7.3f}{x['top2']:>7.3f}{x['two_choice']:>11.3f}")
        lines.append("")
    lines.append("times in seconds (wall); extra % = bits / reference bits - 1; hit@K = the "
                 "reference's best (p, f, r, i) among the first K trials.\n"
                 "sse-top1 / sad-top1: the pair with the least squared / absolute filtered "
                 "residual x its 8 reorders x 2 interleaves (then the next pairs if the cap "
                 "allows);\nsad-adaptive: 4 least-absolute pairs x 2 fixed options, then the "
                 "best of them x the other options (no model).")
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
    fig.savefig(path)
    plt.close(fig)


def _jsonable(result):
    out = dict(result)
    out["images"] = [{k: v for k, v in r.items() if k != "per_block"} for r in result["images"]]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m tlg8.evaluate",
        description="Evaluate a selection model against the reference search in real bits.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="BMP or PNG images")
    parser.add_argument("--model", required=True,
                        help="model NPZ: a pair selector (train_multitask.py --selector) or a "
                             "multitask model (train_multitask.py)")
    parser.add_argument("--max-trials", type=int, default=16,
                        help="trials per block for the model and the baselines (default 16)")
    parser.add_argument("--dumps", metavar="DIR",
                        help="read the reference's labels from DIR/NAME.jsonl[.gz] when "
                             "present instead of running the reference search")
    parser.add_argument("--json", metavar="FILE", help="write all numbers as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="histograms of per-block extra bits and trials (matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.max_trials < 1:
        parser.error("--max-trials must be at least 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib, an optional extra: "
                  "python3 -m pip install matplotlib", file=sys.stderr)
            return 1
    try:
        result = evaluate(args.images, args.model, args.max_trials, args.dumps,
                          progress=not args.quiet and sys.stderr.isatty(),
                          keep_blocks=bool(args.plot))
    except (Tlg8Error, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable(result), f, indent=1)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
