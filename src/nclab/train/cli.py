"""``nclab train [CONFIG.yaml | --preset NAME] [--out RUN_DIR] [--resume] [--device D]
[--data-dir DIR] [--download] [--threads N] [key=value ...]``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.presets import PRESETS, preset

__all__ = ["add_train_parser"]


class _IntermixedParser(argparse.ArgumentParser):
    """A parser whose positionals may follow its options (``CONFIG --out D optim.lr=0.01``):
    the top-level parser hands a sub-command its words through ``parse_known_args``, which
    this class answers with argparse's intermixed parsing (itself two ``parse_known_args``
    passes, hence the guard)."""

    _inside = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


_NOISE_HELP = (
    "Label noise: noise.rate=η follows the MD paper's convention (noise.convention=redraw): a "
    "fraction η of the training labels is redrawn uniformly over all K classes, so only "
    "η(K-1)/K of them actually change (η=0.2, K=10: 18 %); noise.convention=flip changes "
    "exactly η of them. Every key and its meaning: nclab/train/config.py."
)


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a network into the terminal phase, measuring collapse every eval_every epochs",
        description="Train a network into the terminal phase of training, measuring neural "
        "collapse every track.eval_every epochs. Options and section.key=value overrides may "
        "come in any order. " + _NOISE_HELP,
    )
    # Overrides may follow an option; the sub-command's own parser class cannot be chosen
    # through add_parser, so the parser it made is given the intermixed behaviour.
    p.__class__ = _IntermixedParser
    p.add_argument(
        "config", nargs="?", default=None, help="YAML config file (sections as in TrainConfig)"
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named configuration")
    p.add_argument(
        "--out", default=None, help="run directory (default runs/<preset or config name>)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=None,
        help="where to train (same as run.device=; auto: cuda when available)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory holding the dataset's files, searched first (same as data.data_dir=)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download a dataset that is not on this machine (checksums verified; needs internet)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (same as run.threads=; default: the cores available, at "
        "most 4)",
    )
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value, e.g. optim.lr=0.1")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from nclab.train.trainer import train

    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config:  # an override given where the config would be
        overrides.insert(0, config)
        config = None
    if config is not None and args.preset is not None:
        raise ValueError("config: give a CONFIG.yaml or --preset, not both")
    if config is not None:
        path = Path(config)
        cfg, name = TrainConfig.from_file(path), path.stem
    elif args.preset is not None:
        cfg, name = preset(args.preset), args.preset
    else:
        cfg, name = TrainConfig(), "default"
    if args.device is not None:
        overrides.append(f"run.device={args.device}")
    if args.data_dir is not None:
        # Quoted: the value is read as YAML, where a directory named 123 or ~ is no string.
        overrides.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.threads is not None:
        overrides.append(f"run.threads={args.threads}")
    cfg = apply_overrides(cfg, overrides)
    out = Path(args.out) if args.out else Path("runs") / name
    result = train(cfg, out, resume=args.resume, download=args.download)
    if not result.rows:  # stopped before its first evaluation: the trainer said what is left
        return 1 if result.stopped_early else 0
    last = result.rows[-1]

    def num(key: str) -> str:
        value = last.get(key)
        return "n/a" if value is None else f"{value:.4g}"

    print(
        f"wrote {out / 'metrics.csv'} ({len(result.rows)} rows); last epoch {last.get('epoch')}: "
        f"train acc (observed labels) {num('acc_observed')}, test acc {num('test_acc')}, "
        f"NC1 ({last.get('layer')}) {num('nc1')}; figure: nclab plot {out}"
    )
    return 1 if result.stopped_early else 0
