"""Train the multitask model on TLG8 training dumps, evaluate it, export the best epoch.

    python3 train_multitask.py DATA... [--epochs 200] [--export-dir out/multitask] ...

DATA are JSONL dumps (.jsonl or .jsonl.gz, the reference encoder's --tlg8-dump-training
format or python3 -m tlg8.dump) or directories searched recursively for them. Every epoch
prints the train/validation loss and per-head validation top1/top2/two_choice; whenever the
mean validation two_choice improves, multitask_best.npz and metrics.json are written to
--export-dir. Exit status: 0 done, 1 bad data or options, 2 usage, 3 training diverged.

    python3 train_multitask.py DATA... --image-dir DIR [--export-dir out/guide] ...

trains the pair selector (tlg8.selector), the model that wins in real bits, from the same
dumps: each record's `image` tag is found under DIR (or is itself a path) and the block's
neighbourhood rebuilt from the image; records without their image or whose pixels differ
are counted and left out. The per-epoch table and the exports are the same
(multitask_best.npz is then a selector file). Without --image-dir, a one-line hint says so.

    python3 train_multitask.py --selector IMAGE... --export-dir out/selector

trains the pair selector from images alone: it ranks (predictor, filter) pairs from
cost-model statistics of each block and its neighbours, which the dumps do not store, so
its DATA are images (BMP/PNG, or directories of them) and its labels are the exact bits of
the cost model. It writes pair_selector.npz (loads with MultiTaskModel.load, runs with
beam_search_runtime and python3 -m tlg8.encode --model) and selector_metrics.json.

Each path honours the options that apply to it and refuses, with one line, those that do
not (--epochs with --selector, --candidates without it, --lr with --image-dir, ...).
--dry-run never trains.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from tlg8 import Tlg8Error, cli, heads, records
from tlg8.fileio import check_writable, write_file
from tlg8.heads import mean_two_choice, metrics_of
from tlg8.selector import DEFAULTS as STRATEGY, SELECTOR_FORMAT

from . import multitask as mm
from . import selector_training
from .loader import load_model
from .selector_training import TRAIN_DEFAULTS

EXIT_ERROR = 1
EXIT_DIVERGED = 3
MAX_WARNINGS = 20            # bad records printed one by one; the rest only counted
# Options of one path only: (dest, flag). The other path refuses them when given.
MULTITASK_ONLY = (("epochs", "--epochs"), ("lr", "--lr"), ("batch_size", "--batch-size"),
                  ("dropout", "--dropout"), ("hidden_dims", "--hidden-dims"),
                  ("epsilon_soft", "--epsilon-soft"),
                  ("early_stop_patience", "--early-stop-patience"), ("split", "--split"),
                  ("test_ratio", "--test-ratio"), ("val_images", "--val-images"))
SELECTOR_ONLY = (("blocks_per_image", "--blocks-per-image"), ("candidates", "--candidates"),
                 ("probe_pairs", "--probe-pairs"), ("probe_options", "--probe-options"),
                 ("selector_epochs", "--selector-epochs"),
                 ("selector_hidden", "--selector-hidden"), ("selector_lr", "--selector-lr"))
# DATA --image-dir DIR trains the pair selector from the dumps: the split, epochs and
# early stop of the multitask path and the selector's own options apply; these do not.
IMAGE_DIR_REFUSED = (("lr", "--lr"), ("batch_size", "--batch-size"), ("dropout", "--dropout"),
                     ("hidden_dims", "--hidden-dims"), ("epsilon_soft", "--epsilon-soft"),
                     ("selector_epochs", "--selector-epochs"))
MULTITASK_DEFAULTS = {"epochs": 200, "lr": 1e-3, "batch_size": 512, "dropout": None,
                      "hidden_dims": None, "epsilon_soft": 0.2, "early_stop_patience": 20,
                      "split": "auto", "test_ratio": 0.2, "val_images": None}
SELECTOR_DEFAULTS = {"blocks_per_image": TRAIN_DEFAULTS["blocks_per_image"],
                     "candidates": STRATEGY["candidates"], "probe_pairs": STRATEGY["probe_pairs"],
                     "probe_options": STRATEGY["probe_options"],
                     "selector_epochs": (TRAIN_DEFAULTS["ranker_epochs"],
                                         TRAIN_DEFAULTS["scan_epochs"]),
                     "selector_hidden": (TRAIN_DEFAULTS["ranker_hidden"],
                                         TRAIN_DEFAULTS["scan_hidden"]),
                     "selector_lr": TRAIN_DEFAULTS["lr"]}


IMAGE_DIR_DEFAULTS = dict(
    {k: v for k, v in SELECTOR_DEFAULTS.items() if k != "selector_epochs"},
    epochs=TRAIN_DEFAULTS["scan_epochs"], early_stop_patience=5, split="auto", test_ratio=0.2,
    val_images=None)
NO_IMAGE_HINT = ("hint: this trains the pixel model (about +6 % bits on unseen photos); with "
                 "the images the dumps were made from, --image-dir DIR trains the pair "
                 "selector, the model that wins (docs/multitask_runtime_guide.md)")


def build_parser():
    p = argparse.ArgumentParser(
        prog="train_multitask.py",
        description="Train the TLG8 multitask block-configuration model (NumPy) on JSONL "
                    "training dumps; evaluate per epoch; export the best model.",
        epilog="Exit status: 0 done, 1 bad data or options, 2 usage, 3 training diverged "
               "(loss NaN/inf; the best export so far is kept).")
    p.add_argument("inputs", nargs="+", metavar="DATA",
                   help="JSONL dumps (.jsonl, .jsonl.gz) or directories (searched recursively)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 200)")
    g.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-3)")
    g.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default 512)")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout of the trunk layers (default 0.1; with --load, the model's)")
    g.add_argument("--hidden-dims", type=int, nargs="+", default=None, metavar="N",
                   help="trunk layer sizes (default 1024 512 256; ignored with --load)")
    g.add_argument("--weight-decay", type=float, default=1e-4,
                   help="AdamW decoupled weight decay of the weight matrices (default 1e-4)")
    g.add_argument("--epsilon-soft", type=float, default=None,
                   help="soft-target weight of `second` (best gets 1 - eps; default 0.2)")
    g.add_argument("--early-stop-patience", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs without a better mean validation "
                        "two_choice (default 20; 0 = never stop early)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the split, initialisation, shuffling and dropout (default 0)")
    g.add_argument("--load", metavar="NPZ",
                   help="start from an exported model of the same kind (fine-tuning): its "
                        "architecture, weights and feature scaler")
    g = p.add_argument_group("validation split")
    g.add_argument("--split", choices=("auto", "image", "block"), default=None,
                   help="image: whole images go to validation (measures unseen images); "
                        "block: random blocks; auto (default): image when the data has at "
                        "least 2 images, else block")
    g.add_argument("--test-ratio", type=float, default=None,
                   help="validation share of the blocks (default 0.2); with --split image, "
                        "images are added until they reach it")
    g.add_argument("--val-images", nargs="+", metavar="NAME",
                   help="hold out exactly these images (the records' `image` values) for "
                        "validation; implies --split image")
    g = p.add_argument_group("data and output")
    g.add_argument("--image-dir", action="append", metavar="DIR",
                   help="train the pair selector from the dumps: each record's image is "
                        "DIR/TAG or DIR/basename(TAG) (TAG = its `image` value), else TAG as a "
                        "path; records without their image, or whose pixels differ, are "
                        "counted and left out (repeatable)")
    g.add_argument("--export-dir", metavar="DIR",
                   help="write multitask_best.npz and metrics.json here at each improvement")
    g.add_argument("--log-file", metavar="FILE",
                   help="per-epoch metrics, one JSON object per line (the file is rewritten)")
    g.add_argument("--dry-run", action="store_true",
                   help="read and validate the data, print counts, label distributions, "
                        "problems and the split; do not train")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first bad record instead of skipping it")
    g.add_argument("--cache-dir", metavar="DIR",
                   help="cache of parsed dumps (default $TLG8_CACHE_DIR or "
                        "~/.cache/tlg8-multitask)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group(
        "pair selector (--selector; DATA are images; shares --seed, --weight-decay, --load, "
        "--export-dir, --log-file, --dry-run, --strict, --cache-dir, --no-cache, --quiet)")
    g.add_argument("--selector", action="store_true",
                   help="train the pair selector on images (BMP/PNG files or directories) "
                        "with labels from the cost model, instead of the multitask MLP")
    g.add_argument("--blocks-per-image", type=int, default=None, metavar="N",
                   help="full 8x8 blocks drawn per image (default 8000; all if fewer)")
    g.add_argument("--candidates", type=int, default=None,
                   metavar="K", help="pairs ranked per block, those with the least sum of "
                                     "absolute coded values (default 32)")
    g.add_argument("--probe-pairs", type=int, default=None,
                   metavar="P", help="pairs probed in the first round of trials (default 6)")
    g.add_argument("--probe-options", type=int, default=None,
                   metavar="Q", help="(reorder, interleave) options per probed pair "
                                     "(default 2)")
    g.add_argument("--selector-epochs", type=int, nargs=2, default=None,
                   metavar=("RANKER", "SCAN"), help="epochs of the two MLPs (default 10 15)")
    g.add_argument("--selector-hidden", type=int, nargs=2, default=None,
                   metavar=("RANKER", "SCAN"), help="hidden units of the two MLPs "
                                                    "(default 32 64)")
    g.add_argument("--selector-lr", type=float, default=None,
                   help="Adam learning rate of the selector (default 2e-3)")
    return p


class UsageError(Exception):
    pass


def resolve_options(args):
    """Refuse the options of the other path when given; fill in this path's defaults.

    Three paths: DATA (the pixel multitask model), DATA --image-dir DIR (the pair selector
    from dumps) and --selector IMAGES. args.given keeps what the user set, so that a run
    with --image-dir that finds no image can fall back to the pixel model's defaults."""
    args.given = {dest for dest, _ in MULTITASK_ONLY + SELECTOR_ONLY
                  if getattr(args, dest) is not None}
    if args.image_dir and args.selector:
        raise UsageError("--image-dir goes with dumps (DATA); --selector takes images and "
                         "does not use it")
    if args.image_dir:
        mine, other = IMAGE_DIR_DEFAULTS, IMAGE_DIR_REFUSED
        why = ("with --image-dir (the pair selector from dumps; --epochs, --selector-lr and "
               "--selector-hidden set its training)")
    elif args.selector:
        mine, other = SELECTOR_DEFAULTS, MULTITASK_ONLY
        why = "to --selector (the pair selector trains on images)"
    else:
        mine, other = MULTITASK_DEFAULTS, SELECTOR_ONLY
        why = "without --selector or --image-dir (they set the pair selector's training)"
    given = [flag for dest, flag in other if getattr(args, dest) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply "
                         + why)
    for dest, value in mine.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


def use_pixel_model(args):
    """--image-dir found no image: the pixel model's defaults for what the user left unset."""
    for dest, value in MULTITASK_DEFAULTS.items():
        if dest not in args.given:
            setattr(args, dest, value)


def check_options(args):
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, not {args.epochs}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number, not {args.lr}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), not {args.dropout}")
    if args.hidden_dims is not None and min(args.hidden_dims) < 1:
        raise UsageError(f"--hidden-dims must be positive, not {args.hidden_dims}")
    if not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, not {args.weight_decay}")
    if not 0 <= args.epsilon_soft <= 0.5:
        raise UsageError(f"--epsilon-soft must be in [0, 0.5], not {args.epsilon_soft}")
    if not 0 < args.test_ratio < 1:
        raise UsageError(f"--test-ratio must be in (0, 1), not {args.test_ratio}")
    if args.early_stop_patience < 0:
        raise UsageError(f"--early-stop-patience must be >= 0, not {args.early_stop_patience}")
    if args.val_images and args.split == "block":
        raise UsageError("--val-images holds out whole images; it cannot go with --split block")
    if args.load and not os.path.isfile(args.load):
        raise UsageError(f"--load {args.load}: no such file")


# ---------------------------------------------------------------------------------------
# Data: loading, split, report

def load_data(args):
    shown = [0]

    def warn(problem):
        shown[0] += 1
        if shown[0] <= MAX_WARNINGS:
            print(f"warning: {records.format_problem(problem)}", file=sys.stderr)
        elif shown[0] == MAX_WARNINGS + 1:
            print("warning: (more problems are only counted; see the summary)", file=sys.stderr)

    cache = None if args.no_cache else (args.cache_dir or records.default_cache_dir())
    data, report = records.load_dumps(args.inputs, cache_dir=cache, strict=args.strict,
                                      warn=warn, progress=not args.quiet)
    counts = report["problem_counts"]
    if counts:
        print(f"skipped {sum(counts.values())} problems: "
              + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())), file=sys.stderr)
    return data, report


def split_data(data, args):
    """(train indices, val indices, split description) — see --split."""
    n = records.dataset_size(data)
    names = data["names"].tolist()
    blocks_per_image = np.bincount(data["image"], minlength=len(names))
    present = np.flatnonzero(blocks_per_image)
    rng = np.random.default_rng(args.seed)
    mode = args.split
    if args.val_images:
        mode = "image"
    elif mode == "auto":
        mode = "image" if len(present) >= 2 else "block"
    if mode == "image":
        if len(present) < 2:
            raise UsageError(f"--split image needs at least 2 images; the data has "
                             f"{len(present)} ({', '.join(names[i] for i in present)})")
        if args.val_images:
            unknown = [v for v in args.val_images if v not in names]
            if unknown:
                raise UsageError(f"--val-images: no records of {', '.join(unknown)}; the "
                                 f"images are: {', '.join(names[i] for i in present)}")
            val_ids = sorted({names.index(v) for v in args.val_images})
            if len(val_ids) == len(present):
                raise UsageError("--val-images names every image; nothing is left to train on")
        else:
            # Random images until they hold test_ratio of the blocks; one stays for training.
            val_ids, total = [], 0
            for i in rng.permutation(present).tolist():
                if total >= args.test_ratio * n or len(val_ids) == len(present) - 1:
                    break
                val_ids.append(i)
                total += blocks_per_image[i]
            val_ids.sort()
        is_val = np.isin(data["image"], val_ids)
        val = np.flatnonzero(is_val)
        train = np.flatnonzero(~is_val)
        split = {"mode": "image", "val_images": [names[i] for i in val_ids],
                 "train_images": [names[i] for i in present if i not in val_ids]}
    else:
        if n < 2:
            raise UsageError(f"a block split needs at least 2 records, the data has {n}")
        order = rng.permutation(n)
        n_val = min(max(1, round(args.test_ratio * n)), n - 1)
        val = np.sort(order[:n_val])
        train = np.sort(order[n_val:])
        split = {"mode": "block", "test_ratio": args.test_ratio}
    split.update(train_blocks=int(len(train)), val_blocks=int(len(val)), seed=args.seed)
    return train, val, split


def duplicate_blocks(data):
    """Records whose (image, block origin) occurred before, e.g. a dump appended twice."""
    key = (data["image"].astype(np.int64) << 40) | (data["origin"][:, 1].astype(np.int64) << 20) \
        | data["origin"][:, 0].astype(np.int64)
    return len(key) - len(np.unique(key))


def print_data_report(data, report, split, out):
    n = records.dataset_size(data)
    names = data["names"].tolist()
    counts = np.bincount(data["image"], minlength=len(names))
    bad = sum(report["problem_counts"].values())
    print(f"files: {len(report['files'])} ({report['cached']} from the cache), "
          f"records: {n}, problems: {bad}", file=out)
    for kind, k in sorted(report["problem_counts"].items()):
        print(f"  {kind}: {k}", file=out)
    print(f"images: {int((counts > 0).sum())}", file=out)
    for name, k in zip(names, counts.tolist()):
        print(f"  {name}: {k} blocks", file=out)
    size = data["size"].astype(np.int64)
    full = int(((size[:, 0] == 8) & (size[:, 1] == 8)).sum())
    print(f"blocks: {full} full 8x8, {n - full} edge; components: "
          + ", ".join(f"{c}: {int((size[:, 2] == c).sum())}" for c in np.unique(size[:, 2])),
          file=out)
    has_second = data["second"][:, 0] >= 0
    ties = heads.tie_mask(data["second"], data["bits"])
    print(f"second missing: {int((~has_second).sum())}; ties (second.bits == best.bits): "
          f"{ties.mean():.1%}", file=out)
    dup = duplicate_blocks(data)
    if dup:
        print(f"duplicate blocks (same image and block origin): {dup}", file=out)
    best = heads.head_labels(data["best"])
    print("label distribution of best (class: share):", file=out)
    for h, (name, size_h) in enumerate(heads.HEADS):
        share = np.bincount(best[:, h], minlength=size_h) / n
        print(f"  {name[5:]:17s} " + " ".join(f"{c}:{s:.0%}" for c, s in enumerate(share)),
              file=out)
    if split["mode"] == "image":
        print(f"split: image; train {split['train_blocks']} blocks "
              f"({', '.join(split['train_images'])}), val {split['val_blocks']} blocks "
              f"({', '.join(split['val_images'])})", file=out)
    else:
        print(f"split: block; train {split['train_blocks']}, val {split['val_blocks']} "
              f"blocks (test ratio {split['test_ratio']})", file=out)


# ---------------------------------------------------------------------------------------
# Training and evaluation

def feature_scaler(data, index, chunk=8192):
    """Mean and std of the raw features over `index` (float64 sums, chunked)."""
    total = np.zeros(mm.N_FEATURES)
    total_sq = np.zeros(mm.N_FEATURES)
    for lo in range(0, len(index), chunk):
        part = index[lo:lo + chunk]
        x = mm.block_features(data["pixels"][part], data["size"][part]).astype(np.float64)
        total += x.sum(axis=0)
        total_sq += np.square(x).sum(axis=0)
    mean = total / len(index)
    var = np.maximum(total_sq / len(index) - mean ** 2, 0)
    return mean, np.sqrt(var)


def count_hits(logits, best, second, tie, counts):
    """Add per-head hit counts (tlg8.heads.hit_counts) of logits (B, 32) to counts (6, 4)."""
    counts += heads.hit_counts(heads.top2_array(heads.head_topk(logits, 2)), best, second, tie)


def new_counts():
    """Zero hit counts: 6 heads x (top1, top2, two_choice, tie_aware)."""
    return np.zeros((len(heads.HEADS), len(heads.METRICS) + 1), np.int64)


def evaluate(model, data, index, epsilon, chunk=4096):
    """(loss, per-head metrics) of `index` in evaluation mode."""
    counts = new_counts()
    loss = 0.0
    for lo in range(0, len(index), chunk):
        part = index[lo:lo + chunk]
        logits = model.logits(mm.block_features(data["pixels"][part], data["size"][part]))
        best = heads.head_labels(data["best"][part])
        second = heads.head_labels(data["second"][part])
        target = mm.soft_targets(best, second, epsilon)
        loss -= float((target * mm.head_log_softmax(logits)).sum())
        count_hits(logits, best, second,
                   heads.tie_mask(data["second"][part], data["bits"][part]), counts)
    return loss / len(index), metrics_of(counts, len(index))


def print_epoch(epoch, epochs, train_loss, val_loss, val, saved, seconds, out):
    print(f"epoch {epoch}/{epochs}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  "
          f"val two_choice mean {mean_two_choice(val):.4f}  ({seconds:.1f}s)"
          + ("  [exported]" if saved else ""), file=out)
    print("  head                 top1    top2  two_choice  tie_aware", file=out)
    for name, m in val.items():
        print(f"  {name:17s} {m['top1']:7.4f} {m['top2']:7.4f} {m['two_choice']:11.4f} "
              f"{m['tie_aware']:10.4f}", file=out)


def write_json_atomic(path, obj):
    write_file(path, "w", lambda f: f.write(json.dumps(obj, indent=2) + "\n"))


def train(model, data, train_idx, val_idx, args, summary, log, out):
    """The epoch loop. Returns (status, best summary or None); status is "completed",
    "early-stop" or "diverged"."""
    rng = np.random.default_rng(args.seed + 1)
    optimizer = model.make_optimizer(args.lr, args.weight_decay)
    batch = args.batch_size
    x = np.empty((batch, model.n_features), np.float32)
    target = np.empty((batch, mm.N_OUTPUTS), np.float32)
    book = EpochBook(args, out, log,
                     lambda model, best, status: export(model, args, summary, best, status))
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(train_idx)
        counts = new_counts()
        loss_sum = 0.0
        bar = cli.progress(len(order), args.quiet, desc=f"epoch {epoch}/{args.epochs}",
                           leave=False)
        for lo in range(0, len(order), batch):
            part = np.sort(order[lo:lo + batch])    # sorted: cache-friendly gathers
            b = len(part)
            mm.block_features(data["pixels"][part], data["size"][part], out=x[:b])
            model.standardize(x[:b], out=x[:b])
            best_l = heads.head_labels(data["best"][part])
            second_l = heads.head_labels(data["second"][part])
            mm.soft_targets(best_l, second_l, args.epsilon_soft, out=target[:b])
            loss, _, logits = model.train_batch(x[:b], target[:b], optimizer, rng)
            if not math.isfinite(loss):
                bar.close()
                diverged(f"the training loss became {loss} in epoch {epoch} (batch "
                         f"{lo // batch + 1})", args)
                return "diverged", book.best
            loss_sum += loss * b
            count_hits(logits, best_l, second_l,
                       heads.tie_mask(data["second"][part], data["bits"][part]), counts)
            bar.update(b)
            if lo // batch % 16 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
        bar.close()
        train_loss = loss_sum / len(order)
        train_metrics = metrics_of(counts, len(order))
        val_loss, val_metrics = evaluate(model, data, val_idx, args.epsilon_soft)
        score = mean_two_choice(val_metrics)
        if not math.isfinite(val_loss):
            diverged(f"the validation loss became {val_loss} in epoch {epoch}", args)
            return "diverged", book.best
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                  "val_two_choice_mean": score, "train": train_metrics, "val": val_metrics,
                  "seconds": round(time.perf_counter() - start, 3)}
        if book.end_epoch(model, record):
            return "early-stop", book.best
    return "completed", book.best


class EpochBook:
    """The end of every epoch, the same for both models: keep the best epoch (the highest
    mean validation two_choice) and export it, print the guide's table, log the record as
    a JSON line, and say when the early-stop patience has run out (end_epoch)."""

    def __init__(self, args, out, log, export):
        self.args, self.out, self.log, self.export = args, out, log, export
        self.best, self.best_score, self.since_best = None, -1.0, 0

    def end_epoch(self, model, record):
        """Book one epoch's record; True when training should stop early."""
        args = self.args
        improved = record["val_two_choice_mean"] > self.best_score
        record["exported"] = bool(improved and args.export_dir)
        if improved:
            self.best_score, self.since_best = record["val_two_choice_mean"], 0
            self.best = {k: v for k, v in record.items() if k != "exported"}
            if args.export_dir:
                self.export(model, self.best, "running")
        else:
            self.since_best += 1
        print_epoch(record["epoch"], args.epochs, record["train_loss"], record["val_loss"],
                    record["val"], record["exported"], record["seconds"], self.out)
        if self.log:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()
        if args.early_stop_patience and self.since_best >= args.early_stop_patience:
            print(f"early stop: no better mean val two_choice for {self.since_best} epochs "
                  f"(best {self.best_score:.4f} at epoch {self.best['epoch']})", file=self.out)
            return True
        return False


def diverged(what, args):
    cli.error(f"{what}; training stopped.")
    print(f"advice: halve the learning rate (--lr {args.lr / 2:g} instead of {args.lr:g}) and "
          f"check the data with --dry-run.", file=sys.stderr)


def export(model, args, summary, best, status):
    metrics = dict(summary, **best, status=status)
    model.metadata = metrics
    model.save(os.path.join(args.export_dir, "multitask_best.npz"))
    write_json_atomic(os.path.join(args.export_dir, "metrics.json"), metrics)


IMAGE_SUFFIXES = (".bmp", ".png")


def find_images(paths):
    """Image files among `paths` (files, or directories searched recursively), sorted."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(IMAGE_SUFFIXES)]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    if not found:
        raise UsageError(f"no images (.bmp, .png) in {' '.join(paths)}")
    return found


def check_selector_options(args):
    for name in ("blocks_per_image", "candidates", "probe_pairs", "probe_options"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.selector_epochs or (args.epochs,)) < 1 or min(args.selector_hidden) < 1:
        raise UsageError(f"--{'selector-' if args.selector else ''}epochs and "
                         f"--selector-hidden must be positive")
    if not (args.selector_lr > 0 and math.isfinite(args.selector_lr)):
        raise UsageError(f"--selector-lr must be a positive number, not {args.selector_lr}")
    if not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, not {args.weight_decay}")
    if args.load and not os.path.isfile(args.load):
        raise UsageError(f"--load {args.load}: no such file")
    if args.image_dir:
        if not 0 < args.test_ratio < 1:
            raise UsageError(f"--test-ratio must be in (0, 1), not {args.test_ratio}")
        if args.early_stop_patience < 0:
            raise UsageError(f"--early-stop-patience must be >= 0, not "
                             f"{args.early_stop_patience}")
        if args.val_images and args.split == "block":
            raise UsageError("--val-images holds out whole images; it cannot go with "
                             "--split block")
        for directory in args.image_dir:
            if not os.path.isdir(directory):
                raise UsageError(f"--image-dir {directory}: no such directory")


def readable_images(paths, strict):
    """[(path, full 8x8 blocks)] of the images that can be read; a bad one is reported in
    one line and skipped (with strict: the first bad one stops, as ImageError)."""
    from tlg8.image import read_image
    out = []
    for path in paths:
        try:
            samples, _ = read_image(path)
        except Tlg8Error as e:
            if strict:
                raise
            print(f"warning: {e}; skipped", file=sys.stderr)
            continue
        out.append((path, (samples.shape[0] // 8) * (samples.shape[1] // 8)))
    return out


def train_selector(args, parser):
    """--selector: train, export pair_selector.npz and selector_metrics.json."""
    try:
        check_selector_options(args)
        images = find_images(args.inputs)
    except UsageError as e:
        parser.error(str(e))
    try:
        found = readable_images(images, args.strict)
        if not found:
            raise selector_training.SelectorTrainingError("no image could be read; nothing "
                                                          "to train on")
        init = args.load and load_to_fine_tune(
            args.load, SELECTOR_FORMAT, "--selector fine-tunes pair selectors only (train "
            "that model with train_multitask.py DATA --load)")
    except Tlg8Error as e:
        cli.error(f"{e}")
        return EXIT_ERROR
    images = [path for path, _ in found]
    if args.dry_run:
        print(f"pair selector: {len(images)} images, up to {args.blocks_per_image} full 8x8 "
              f"blocks each x {args.candidates} candidate pairs x 16 options labelled by the "
              f"cost model" + (f", fine-tuning {args.load}" if args.load else ""))
        for path, blocks in found:
            print(f"  {path}: {blocks} full blocks, {min(blocks, args.blocks_per_image)} drawn")
        return 0
    cache = None if args.no_cache else os.path.join(
        args.cache_dir or records.default_cache_dir(), "selector-labels")
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        log_file = open_log(args)
    except OSError as e:
        cli.error(f"cannot write {e.filename}: {e.strerror}")
        return EXIT_ERROR

    def epoch(name, index, loss):
        log(f"{name} epoch {index + 1}: loss {loss:.4f}")
        if log_file:
            log_file.write(json.dumps({"model": name, "epoch": index + 1, "loss": loss}) + "\n")
            log_file.flush()

    start = time.perf_counter()
    try:
        model = selector_training.train(
            images, args.blocks_per_image, args.candidates, args.probe_pairs,
            args.probe_options, ranker_hidden=args.selector_hidden[0],
            scan_hidden=args.selector_hidden[1], ranker_epochs=args.selector_epochs[0],
            scan_epochs=args.selector_epochs[1], lr=args.selector_lr,
            weight_decay=args.weight_decay, seed=args.seed, cache=cache, log=log, init=init,
            epoch_log=epoch)
    except Tlg8Error as e:
        cli.error(f"{e}")
        return EXIT_ERROR
    finally:
        if log_file:
            log_file.close()
    seconds = time.perf_counter() - start
    print(f"pair selector trained on {len(images)} images in {seconds:.0f} s", file=sys.stdout)
    if not args.export_dir:
        print("warning: no --export-dir; the trained selector is not saved", file=sys.stderr)
        return 0
    try:
        os.makedirs(args.export_dir, exist_ok=True)
        path = os.path.join(args.export_dir, "pair_selector.npz")
        model.metadata["options"] = {k: v for k, v in vars(args).items()
                                     if k in ("seed", "weight_decay", "blocks_per_image",
                                              "candidates", "probe_pairs", "probe_options",
                                              "selector_epochs", "selector_hidden",
                                              "selector_lr", "load")}
        model.metadata["command"] = "python3 train_multitask.py " + " ".join(
            sys.argv[1:] if args.argv is None else args.argv)
        model.metadata["data"] = [file_record(p) for p in images]
        model.save(path)
        write_json_atomic(os.path.join(args.export_dir, "selector_metrics.json"),
                          dict(model.metadata, seconds=round(seconds, 1),
                               images=[os.path.abspath(p) for p in images]))
    except OSError as e:
        cli.error(f"cannot write {e.filename}: {e.strerror}")
        return EXIT_ERROR
    print(f"selector in {path}", file=sys.stdout)
    return 0


def file_record(path):
    """What a model records of a training file: name, size and SHA-256."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return {"file": os.path.basename(path), "bytes": os.path.getsize(path),
            "sha256": digest.hexdigest()}


def open_log(args):
    """The --log-file (rewritten), or None."""
    if not args.log_file:
        return None
    os.makedirs(os.path.dirname(os.path.abspath(args.log_file)), exist_ok=True)
    return open(args.log_file, "w")


def load_to_fine_tune(path, wanted, otherwise):
    """The --load model if its format is `wanted`; one-line Tlg8Error otherwise."""
    try:
        model = load_model(path)
    except (Tlg8Error, OSError) as e:
        raise Tlg8Error(f"--load: {e}") from None
    if model.format != wanted:
        raise Tlg8Error(f"--load {path}: a {model.format} model; {otherwise}")
    return model


def open_outputs(args):
    """Create --export-dir and open the --log-file (or None); Tlg8Error when either fails."""
    try:
        if args.export_dir:
            os.makedirs(args.export_dir, exist_ok=True)
        return open_log(args)
    except OSError as e:
        raise Tlg8Error(f"cannot write {e.filename}: {e.strerror}") from None


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        resolve_options(args)
    except UsageError as e:
        parser.error(str(e))

    def body():
        check_outputs(args)
        return train_selector(args, parser) if args.selector else train_multitask(args, parser)
    return cli.run(body)


def check_outputs(args):
    """The export directory and log file can be written: said now, not after an epoch."""
    targets = [args.log_file] if args.log_file else []
    if args.export_dir and not args.dry_run:
        targets.append(os.path.join(args.export_dir, "metrics.json"))
    for path in targets:
        directory = os.path.dirname(os.path.abspath(path))
        existing = directory
        while not os.path.exists(existing):          # makedirs will create the rest
            existing = os.path.dirname(existing)
        try:
            check_writable(os.path.join(existing, os.path.basename(path))
                           if existing != directory else path)
        except OSError as e:
            raise Tlg8Error(f"cannot write {path} ({cli.os_error(e)})") from None


def train_multitask(args, parser):
    out = sys.stdout
    try:
        if args.image_dir:
            check_selector_options(args)
        else:
            check_options(args)
        data, report = load_data(args)
        if args.image_dir:
            usable, images, problems = selector_training.match_records(data, args.image_dir,
                                                                       args.strict)
            report_matches(data, usable, images, problems)
            if usable.any():
                return train_from_dumps(args, parser, data, report, usable, images, out)
            print(f"no record's image was found or matched under {', '.join(args.image_dir)}; "
                  f"training the pixel model instead", file=sys.stderr)
            use_pixel_model(args)
            check_options(args)
        train_idx, val_idx, split = split_data(data, args)
    except UsageError as e:
        parser.error(str(e))
    except Tlg8Error as e:
        cli.error(f"{e}")
        return EXIT_ERROR
    dup = duplicate_blocks(data)
    if args.dry_run:
        print_data_report(data, report, split, out)
        print(NO_IMAGE_HINT, file=sys.stderr)
        return 0
    if dup:
        print(f"warning: {dup} blocks occur more than once (same image and block origin); "
              f"was a dump appended twice?", file=sys.stderr)

    if args.load:
        model = load_to_fine_tune(
            args.load, mm.MODEL_FORMAT, f"train_multitask.py DATA fine-tunes multitask models "
            f"only (a pair selector fine-tunes with DATA --image-dir DIR --load {args.load} or "
            f"--selector IMAGES --load {args.load})")
        if args.hidden_dims and tuple(args.hidden_dims) != model.hidden_dims:
            print(f"warning: --hidden-dims ignored; --load {args.load} has "
                  f"{' '.join(map(str, model.hidden_dims))}", file=sys.stderr)
        if args.dropout is not None:
            model.dropout = args.dropout
    else:
        model = mm.MultiTaskModel(args.hidden_dims or mm.DEFAULT_HIDDEN,
                                  0.1 if args.dropout is None else args.dropout, args.seed)
        model.set_feature_scaler(*feature_scaler(data, train_idx))
    print(NO_IMAGE_HINT, file=sys.stderr)
    print(f"data: {records.dataset_size(data)} records from {len(report['files'])} files; "
          f"split {split['mode']}: train {split['train_blocks']}, val {split['val_blocks']}"
          + (f" (val images: {', '.join(split['val_images'])})" if split["mode"] == "image" else ""),
          file=sys.stderr)
    args.dropout = model.dropout                 # record the values actually used
    args.hidden_dims = list(model.hidden_dims)
    options = {k: v for k, v in vars(args).items() if k not in ("argv", "given")}
    summary = {
        "format": "tlg8-multitask-metrics/1",
        "options": options,
        "data": {"files": report["files"], "records": records.dataset_size(data),
                 "problems": report["problem_counts"], "duplicate_blocks": dup,
                 "images": dict(zip(data["names"].tolist(),
                                    np.bincount(data["image"], minlength=len(data["names"])).tolist()))},
        "split": split,
        "model": {"hidden_dims": list(model.hidden_dims), "dropout": model.dropout,
                  "feature_layout": model.feature_layout, "n_features": model.n_features,
                  "heads": dict(heads.HEADS)},
    }
    log = open_outputs(args)
    try:
        # Overflow and NaN are detected from the losses and reported with advice;
        # NumPy's own warnings would only repeat them.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            status, best = train(model, data, train_idx, val_idx, args, summary, log, out)
    finally:
        if log:
            log.close()
    if best is not None and args.export_dir:
        # Record how the run ended next to the best epoch's metrics (model unchanged).
        metrics = dict(summary, **best, status=status)
        write_json_atomic(os.path.join(args.export_dir, "metrics.json"), metrics)
    if best is not None:
        print(f"best epoch {best['epoch']}: val two_choice mean {best['val_two_choice_mean']:.4f}"
              + (f"; model in {os.path.join(args.export_dir, 'multitask_best.npz')}"
                 if args.export_dir else ""), file=out)
    if status == "diverged":
        if best is not None and args.export_dir:
            print(f"the best model so far (epoch {best['epoch']}) is kept in {args.export_dir}",
                  file=sys.stderr)
        return EXIT_DIVERGED
    return 0


# ---------------------------------------------------------------------------------------
# DATA --image-dir DIR: the pair selector from the dumps

SHOWN_PROBLEMS = 3       # images named in the one-line summary of records left out


def report_matches(data, usable, images, problems):
    """One stderr line: records left out because of their images (the first few named)."""
    if not problems:
        return
    left = int((~usable).sum())
    by_kind = {}
    for kind, _, n, _ in problems:
        by_kind[kind] = by_kind.get(kind, 0) + n
    shown = "; ".join(selector_training.format_match_problem(p) for p in problems[:SHOWN_PROBLEMS])
    more = f"; and {len(problems) - SHOWN_PROBLEMS} more images" \
        if len(problems) > SHOWN_PROBLEMS else ""
    print(f"warning: {left} of {len(usable)} records left out ("
          + ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items()))
          + f"): {shown}{more}", file=sys.stderr)


def draw(data, index, per_image, rng):
    """Up to per_image records of each image among `index`: image by image (ascending
    image id), each image's in dump order."""
    out = []
    for i in np.unique(data["image"][index]).tolist():
        mine = index[data["image"][index] == i]
        out.append(np.sort(rng.permutation(mine)[:per_image]))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def train_from_dumps(args, parser, data, report, usable, images, out):
    """DATA --image-dir: train the pair selector on the dumps' full 8x8 blocks whose image
    was found and matches; validate every epoch (per-head metrics of its ranking against
    the dumps' best/second); export multitask_best.npz (a selector file) and metrics.json
    at the best mean validation two_choice."""
    size = data["size"]
    full = usable & (size[:, 0] == 8) & (size[:, 1] == 8)
    sub = records.subset(data, full)
    try:
        if not full.any():
            raise UsageError("no full 8x8 block among the records whose image was found")
        train_idx, val_idx, split = split_data(sub, args)
    except UsageError as e:
        parser.error(str(e))
    rng = np.random.default_rng(args.seed)
    train_idx = draw(sub, train_idx, args.blocks_per_image, rng)
    val_idx = draw(sub, val_idx, args.blocks_per_image, rng)
    split.update(drawn_train_blocks=int(len(train_idx)), drawn_val_blocks=int(len(val_idx)),
                 blocks_per_image=args.blocks_per_image)
    n_images = len(np.unique(data["image"]))
    plan = (f"pair selector from dumps: {int(usable.sum())} of {len(usable)} records usable, "
            f"images found {len(images)} of {n_images}; full 8x8 blocks drawn (up to "
            f"{args.blocks_per_image} per image): train {len(train_idx)}, val {len(val_idx)}; "
            f"{args.candidates} candidate pairs x 16 options labelled by the cost model, "
            f"the dump's best pair among them")
    if args.dry_run:
        print_data_report(data, report, split, out)
        print(plan, file=out)
        for i, (path, samples) in sorted(images.items()):
            mine = data["image"] == i
            print(f"  {data['names'][i]}: {path}, {int((usable & mine).sum())} of "
                  f"{int(mine.sum())} records usable", file=out)
        for i in sorted(set(np.unique(data["image"]).tolist()) - set(images)):
            print(f"  {data['names'][i]}: image not found", file=out)
        return 0
    init = None
    if args.load:
        init = load_to_fine_tune(args.load, SELECTOR_FORMAT, "with --image-dir the trainer "
                                 "fine-tunes pair selectors only (fine-tune that model without "
                                 "--image-dir)")
        args.selector_hidden = [init.ranker[0].shape[1], init.scan[0].shape[1]]
    print(plan, file=sys.stderr)
    cache = None if args.no_cache else os.path.join(
        args.cache_dir or records.default_cache_dir(), "selector-labels")
    log_text = (lambda m: None) if args.quiet else (
        lambda m: print(m, file=sys.stderr, flush=True))
    try:
        parts = {}
        for name, index in (("train", train_idx), ("val", val_idx)):
            parts[name] = []
            for i in np.unique(sub["image"][index]).tolist():
                mine = index[sub["image"][index] == i]
                path, samples = images[i]
                parts[name].append(selector_training.dump_examples(
                    path, samples, sub, mine, args.candidates, cache, log_text))
    except OSError as e:
        cli.error(f"cannot write {e.filename}: {e.strerror}")
        return EXIT_ERROR
    # draw() groups the indices image by image, as the parts are: labels line up.
    val_best = heads.head_labels(sub["best"][val_idx])
    val_second = heads.head_labels(sub["second"][val_idx])
    val_tie = heads.tie_mask(sub["second"][val_idx], sub["bits"][val_idx])
    options = {k: v for k, v in vars(args).items() if k not in ("argv", "given")}
    summary = {
        "format": "tlg8-multitask-metrics/1", "options": options,
        "data": {"files": report["files"], "records": records.dataset_size(data),
                 "usable_records": int(usable.sum()), "problems": report["problem_counts"],
                 "images": {data["names"][i]: {"path": os.path.abspath(path),
                                               "records": int((data["image"] == i).sum())}
                            for i, (path, _) in sorted(images.items())}},
        "split": split,
        "model": {"format": SELECTOR_FORMAT, "candidates": args.candidates,
                  "probe_pairs": args.probe_pairs, "probe_options": args.probe_options,
                  "hidden": list(args.selector_hidden), "heads": dict(heads.HEADS)},
    }
    log = open_outputs(args)
    status = "completed"
    book = EpochBook(args, out, log, lambda model, best, status: export_selector(
        model, args, summary, best, status))
    try:
        epochs = selector_training.fit_epochs(
            parts["train"], parts["val"], args.candidates, args.probe_pairs, args.probe_options,
            args.selector_hidden[0], args.selector_hidden[1], args.epochs, args.selector_lr,
            args.weight_decay, args.seed, init)
        start = time.perf_counter()
        for epoch, train_loss, val_loss, model in epochs:
            counts = selector_training.head_counts(model, [ws for ws, _, _ in parts["val"]],
                                                   val_best, val_second, val_tie)
            val_metrics = metrics_of(counts, len(val_idx))
            score = mean_two_choice(val_metrics)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                diverged(f"the loss became {train_loss} / {val_loss} in epoch {epoch}", args)
                status = "diverged"
                break
            record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                      "val_two_choice_mean": score,
                      "val_tie_aware_mean": mean_two_choice(val_metrics, heads.TIE_METRIC),
                      "val": val_metrics, "seconds": round(time.perf_counter() - start, 3)}
            start = time.perf_counter()
            if book.end_epoch(model, record):
                status = "early-stop"
                break
    finally:
        if log:
            log.close()
    best = book.best
    if best is not None and args.export_dir:
        write_json_atomic(os.path.join(args.export_dir, "metrics.json"),
                          dict(summary, **best, status=status))
    if best is not None:
        print(f"best epoch {best['epoch']}: val two_choice mean {best['val_two_choice_mean']:.4f}"
              f" (tie_aware {best['val_tie_aware_mean']:.4f})"
              + (f"; pair selector in {os.path.join(args.export_dir, 'multitask_best.npz')}"
                 if args.export_dir else ""), file=out)
    if not args.export_dir:
        print("warning: no --export-dir; the trained selector is not saved", file=sys.stderr)
    return EXIT_DIVERGED if status == "diverged" else 0


def export_selector(model, args, summary, best, status):
    """multitask_best.npz (a tlg8.selector file: MultiTaskModel.load, tlg8.encode --model)
    and metrics.json of the best epoch so far."""
    metrics = dict(summary, **best, status=status)
    model.metadata = dict(metrics, command="python3 train_multitask.py " + " ".join(
        sys.argv[1:] if args.argv is None else args.argv))
    model.save(os.path.join(args.export_dir, "multitask_best.npz"))
    write_json_atomic(os.path.join(args.export_dir, "metrics.json"), metrics)


if __name__ == "__main__":
    sys.exit(main())
