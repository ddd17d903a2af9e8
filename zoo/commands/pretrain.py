"""bzoo pretrain: pretrain a backbone on every shipped series except the target dataset's."""
import json
from pathlib import Path


def run(args):
    import torch

    from zoo.pretrain import DEFAULTS, pretrain

    torch.set_num_threads(args.threads)
    options = {key: getattr(args, key) for key in DEFAULTS}
    backbone = pretrain(args.out, [e.strip() for e in args.exclude.split(",")], seed=args.seed, device=args.device,
                        **options)
    info = json.loads((Path(backbone.path) / "config.json").read_text())
    print(f"pretrained on {len(backbone.sources)} sources ({sum(s['series'] for s in backbone.sources)} series), "
          f"excluding {', '.join(backbone.excluded)}: reconstruction MSE {info['eval_mse']:.4f} "
          f"(predicting zeros: {info['eval_zero_predictor_mse']:.4f}); {info['seconds']:.0f} s wall, "
          f"{info['cpu_seconds']:.0f} s CPU, load {info['load_average_start']:.1f}->{info['load_average_end']:.1f}"
          f"\nwrote {backbone.path}")
    return 0
