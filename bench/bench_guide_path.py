"""The guide's path, measured on photos held out from training: dumps -> train_multitask.py
--image-dir -> multitask_best.npz -> ≤ 4/8/16 trials, in real bits.

    python3 bench/bench_guide_path.py [--photos dko_s,dko_sss,dko_t,img1,img2,img3]
                                      [--held-out NAME...] [--blocks-per-image 2000]
                                      [--epochs 15] [--out /tmp/bench_guide_path] [--json FILE]
                                      [--reuse]

For each held-out photo: train on the other photos' reference dumps
(../shared/data/tlgconv/NAME.jsonl.gz) with --image-dir ../shared/data/images and
--split block (the trainer's validation, which picks the exported epoch, is random blocks
of the training photos: the held-out photo is never looked at), then evaluate the export
with tlg8.evaluate (reference labels from the held-out photo's dump) at 4, 8 and 16 trials:
per-head two_choice and tie_aware of the model's ranking and of the configuration kept
after 16 trials, extra bits vs the reference. Prints Markdown tables (means over the six
heads; then per head, two_choice / tie_aware of the ranking).
"""
import argparse
import contextlib
import io
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlg8 import evaluate  # noqa: E402
from tlg8.heads import mean_two_choice  # noqa: E402
from tlg8_multitask import train  # noqa: E402
from tlg8_multitask.loader import load_model  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
PHOTOS = ("dko_s", "dko_sss", "dko_t", "img1", "img2", "img3")
BUDGETS = (4, 8, 16)


def finished_run(out_dir):
    """An export of a training run that ended (not one interrupted mid-run)."""
    try:
        with open(os.path.join(out_dir, "metrics.json")) as f:
            return json.load(f).get("status") in ("completed", "early-stop")
    except (OSError, ValueError):
        return False


def fold(held_out, photos, args):
    """Train without `held_out`, evaluate on it: {"photo", "blocks", "heads", "extra"}."""
    out_dir = os.path.join(args.out, held_out)
    dumps = [os.path.join(SHARED, "tlgconv", p + ".jsonl.gz") for p in photos if p != held_out]
    argv = dumps + ["--image-dir", os.path.join(SHARED, "images"), "--split", "block",
                    "--test-ratio", "0.1", "--blocks-per-image", str(args.blocks_per_image),
                    "--epochs", str(args.epochs), "--export-dir", out_dir, "--quiet"]
    start = time.perf_counter()
    if not (args.reuse and finished_run(out_dir)):
        with contextlib.redirect_stdout(io.StringIO()) as log:
            status = train.main(argv)
        if status:
            sys.exit(f"training without {held_out} failed ({status}):\n{log.getvalue()}")
    seconds = time.perf_counter() - start
    model = load_model(os.path.join(out_dir, "multitask_best.npz"))
    image = os.path.join(SHARED, "images", held_out + ".bmp")
    result = {"photo": held_out, "train_seconds": round(seconds, 1),
              "best_epoch": model.metadata.get("epoch"), "extra": {}, "baselines": {}}
    for budget in BUDGETS:
        r = evaluate.evaluate([image], model, budget, dumps=os.path.join(SHARED, "tlgconv"))
        overall = r["images"][0]
        result["blocks"] = overall["blocks"]
        result["heads"] = overall["heads"]
        result.setdefault("heads_kept", {})[budget] = overall["heads_kept"]
        result["extra"][budget] = overall["methods"]["model"]["extra_percent"]
        result["baselines"][budget] = overall["methods"]["sad-adaptive"]["extra_percent"]
    return result


def table(results):
    def row(r):
        h, kept = r["heads"], r["heads_kept"][16]
        return [mean_two_choice(h), mean_two_choice(h, "tie_aware"), mean_two_choice(kept),
                mean_two_choice(kept, "tie_aware")] + [r["extra"][b] for b in BUDGETS] \
            + [r["baselines"][16]]

    def cells(values):
        return " | ".join(f"{v:.3f}" for v in values[:4]) + " | " + \
            " | ".join(f"{v:+.3f} %" for v in values[4:])
    lines = ["| held-out photo | blocks | two_choice | tie_aware | kept@16 two_choice "
             "| kept@16 tie_aware | extra bits @4 | @8 | @16 | sad-adaptive @16 |",
             "|---" * 10 + "|"]
    for r in results:
        lines.append(f"| {r['photo']} | {r['blocks']} | {cells(row(r))} |")
    n = sum(r["blocks"] for r in results)
    mean = [sum(row(r)[j] * r["blocks"] for r in results) / n for j in range(len(row(results[0])))]
    lines.append(f"| block-weighted mean | {n} | {cells(mean)} |")
    lines += ["", "| held-out photo | " + " | ".join(h[5:] for h in results[0]["heads"]) + " |",
              "|---" * (1 + len(results[0]["heads"])) + "|"]
    for r in results:
        lines.append(f"| {r['photo']} | " + " | ".join(
            f"{m['two_choice']:.3f} / {m['tie_aware']:.3f}" for m in r["heads"].values()) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=",".join(PHOTOS))
    parser.add_argument("--held-out", nargs="+", help="only these folds (default: every photo)")
    parser.add_argument("--blocks-per-image", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="/tmp/bench_guide_path")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the models already in --out instead of training again")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(SHARED, "tlgconv")):
        sys.exit(f"needs the shared dumps and photos in {SHARED}")
    photos = args.photos.split(",")
    results = []
    for held_out in args.held_out or photos:
        results.append(fold(held_out, photos, args))
        r = results[-1]
        print(f"{held_out}: trained in {r['train_seconds']} s (best epoch {r['best_epoch']}); "
              f"two_choice {mean_two_choice(r['heads']):.3f}; extra "
              + ", ".join(f"@{b} {r['extra'][b]:+.3f} %" for b in BUDGETS), file=sys.stderr,
              flush=True)
    print(f"blocks per image {args.blocks_per_image}, epochs {args.epochs}, --split block "
          f"--test-ratio 0.1\n")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
