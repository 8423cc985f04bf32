"""``nclab train [CONFIG.yaml | --preset NAME] [--out RUN_DIR] [--resume] [--device D]
[--data-dir DIR] [--download] [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.presets import PRESETS, preset

__all__ = ["add_train_parser"]


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a network into the terminal phase, measuring collapse every eval_every epochs",
    )
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
        if not path.is_file():
            raise ValueError(f"config: {path} does not exist")
        cfg, name = TrainConfig.from_yaml(path.read_text()), path.stem
    elif args.preset is not None:
        cfg, name = preset(args.preset), args.preset
    else:
        cfg, name = TrainConfig(), "default"
    if args.device is not None:
        overrides.append(f"run.device={args.device}")
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    cfg = apply_overrides(cfg, overrides)
    out = Path(args.out) if args.out else Path("runs") / name
    result = train(cfg, out, resume=args.resume, download=args.download)
    last = result.rows[-1] if result.rows else {}

    def num(key: str) -> str:
        value = last.get(key)
        return "n/a" if value is None else f"{value:.4g}"

    print(
        f"wrote {out / 'metrics.csv'} ({len(result.rows)} rows); last epoch {last.get('epoch')}: "
        f"train acc (observed labels) {num('acc_observed')}, test acc {num('test_acc')}, "
        f"NC1 ({last.get('layer')}) {num('nc1')}; figure: nclab plot {out}"
    )
    return 1 if result.stopped_early else 0
