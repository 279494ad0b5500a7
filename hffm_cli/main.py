"""``hffm``: cost tables, benchmarks and (later) training and evaluation from the shell."""

from __future__ import annotations

import argparse
import json
import sys

from hffm_env import ENV_IDS, ConfigError


def _cmd_costs(args: argparse.Namespace) -> int:
    from hffm_env import make_scenario
    from hffm_env.network.costs import table1_costs

    sc = make_scenario(args.preset)
    rows = table1_costs(
        sc.network, sc.payload_bytes, rounds=args.rounds, seeds=args.seeds, compare_with_paper=args.preset == "paper"
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"Per-round cost of the Table I schedules, preset {args.preset!r}, "
        f"{args.rounds} rounds x {args.seeds} topology seeds"
    )
    print(f"{'method':<28} {'latency_s':>10} {'energy_j':>10} {'paper_latency_s':>16} {'paper_energy':>13}")
    for r in rows:
        pl = "" if r["paper_latency_s"] is None else f"{r['paper_latency_s']:.2f}"
        pe = "" if r["paper_energy"] is None else f"{r['paper_energy']:.2f}"
        print(f"{r['method']:<28} {r['latency_s']:>10.2f} {r['energy_j']:>10.2f} {pl:>16} {pe:>13}")
    return 0


def _cmd_schedules(args: argparse.Namespace) -> int:
    from hffm_cli.progress import Progress
    from hffm_env import make_scenario
    from hffm_env.federation.schedules import schedule_keys, schedule_table

    if args.rounds < 1:
        raise ConfigError(f"--rounds must be an integer >= 1, got {args.rounds}")
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be an integer >= 1, got {args.seeds}")
    if args.first_seed < 0:
        raise ConfigError(f"--first-seed must be an integer >= 0, got {args.first_seed}")
    overrides = dict(args.overrides)
    if args.local_steps is not None:
        overrides["federation__local_steps"] = args.local_steps
    sc = make_scenario(args.preset, **overrides)
    seeds = tuple(range(args.first_seed, args.first_seed + args.seeds))
    total = len(schedule_keys()) * args.rounds * len(seeds)
    with Progress(total, "rounds", "hffm schedules", stream=sys.stderr if args.json else None) as progress:
        rows = schedule_table(sc, args.rounds, seeds, progress=progress.update)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"Table I schedules with real training: preset {args.preset!r}, {args.rounds} rounds, "
        f"means over seeds {seeds[0]}-{seeds[-1]}"
    )
    print(
        f"{'method':<14} {'latency_s':>10} {'energy_j':>10} {'first_acc':>10} {'final_acc':>10} "
        f"{'final_p':>8} {'majority':>9}"
    )
    for r in rows:
        print(
            f"{r['method']:<14} {r['latency_s']:>10.3f} {r['energy_j']:>10.3f} {r['first_accuracy']:>10.3f} "
            f"{r['final_accuracy']:>10.3f} {r['final_p_correct']:>8.3f} {r['majority_rate']:>9.3f}"
        )
    for col in ("latency_s", "energy_j", "final_accuracy"):
        order = sorted(rows, key=lambda r: -r[col])
        print(f"{col} order (high to low): " + " > ".join(r["method"] for r in order))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.target == "network":
        from benchmarks.bench_network import main as bench

        return bench(sizes=args.sizes, rounds=args.rounds)
    if args.target == "training":
        from benchmarks.bench_training import main as bench

        return bench(devices=args.devices, steps=args.steps, batch=args.batch)
    if args.target == "env":
        from benchmarks.bench_env import main as bench

        if args.n_envs < 1:
            raise ConfigError(f"--n-envs must be an integer >= 1, got {args.n_envs}")
        if args.blocks < 1:
            raise ConfigError(f"--blocks must be an integer >= 1, got {args.blocks}")
        return bench(
            presets=tuple(args.presets),
            backbone_dtype=args.backbone_dtype,
            n_envs=args.n_envs,
            blocks=args.blocks,
            overrides=dict(args.overrides),
        )
    if args.target == "signal":
        from hffm_env import PRESETS

        bad = [p for p in args.presets if p not in PRESETS]
        if bad:
            raise ConfigError(f"--presets must be among {', '.join(PRESETS)}, got {' '.join(bad)}")
        bad = [i for i in args.ids if i not in ENV_IDS]
        if bad:
            raise ConfigError(f"--ids must be among {', '.join(ENV_IDS)}, got {' '.join(bad)}")
        for flag, value, low in (
            ("--seeds", args.seeds, 1),
            ("--redraws", args.redraws, 2),
            ("--rounds", args.rounds, 1),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{flag} must be an integer >= {low}, got {value}")
        from benchmarks.bench_signal import main as bench

        return bench(
            presets=tuple(args.presets),
            seeds=args.seeds,
            redraws=args.redraws,
            rounds=args.rounds,
            json_out=args.json,
            env_ids=tuple(args.ids),
            overrides=dict(args.overrides),
        )
    from benchmarks import bench_robustness, bench_soak

    return {"soak": bench_soak, "robustness": bench_robustness}[args.target].run(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    print(f"model: {train(args)}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from evaluation.evaluate import main as evaluate_main

    argv = [
        "--env",
        args.env,
        "--preset",
        args.preset,
        "--seeds",
        str(args.seeds),
        "--out",
        args.out,
        "--baseline",
        args.baseline,
    ]
    if args.policies is not None:
        argv += ["--policies", args.policies]
    for o in args.overrides:
        argv += ["--set", o]
    return evaluate_main(argv)


def _cmd_demo(args: argparse.Namespace) -> int:
    from training.demo import main as demo

    return demo(steps=args.steps, seeds=args.seeds, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hffm", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("costs", help="per-round latency/energy of the seven Table I schedules")
    c.add_argument("--preset", default="paper", help="scenario preset: tiny, small or paper (default paper)")
    c.add_argument("--rounds", type=int, default=8, help="rounds per seed, a multiple of 8 (default 8)")
    c.add_argument("--seeds", type=int, default=100, help="topology seeds averaged (default 100)")
    c.add_argument("--json", action="store_true", help="print the rows as JSON")
    c.set_defaults(func=_cmd_costs)

    from training.train import parse_override

    s = sub.add_parser("schedules", help="run the seven Table I schedules with real training")
    s.add_argument("--preset", default="small", help="scenario preset: tiny, small or paper (default small)")
    s.add_argument("--rounds", type=int, default=16, help="federated rounds per schedule (default 16)")
    s.add_argument("--seeds", type=int, default=3, help="scenario seeds averaged (default 3)")
    s.add_argument("--first-seed", type=int, default=0, help="first scenario seed (default 0)")
    s.add_argument("--local-steps", type=int, default=None, help="override federation.local_steps")
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=parse_override,
        metavar="KEY=VALUE",
        help="scenario override, e.g. --set federation__local_epochs=2 (repeatable)",
    )
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(func=_cmd_schedules)

    b = sub.add_parser("bench", help="run a benchmark")
    targets = b.add_subparsers(dest="target", required=True)
    t = targets.add_parser("network", help="time per round of rates + routing + ledger")
    t.add_argument("--sizes", type=int, nargs="+", default=[40, 1000, 10000], help="device counts")
    t.add_argument("--rounds", type=int, default=20, help="timed rounds per size")
    t = targets.add_parser("training", help="one round of batched local training vs per-device loops")
    t.add_argument("--devices", type=int, default=40, help="devices in the round")
    t.add_argument("--steps", type=int, default=4, help="local steps")
    t.add_argument("--batch", type=int, default=8, help="samples per step")
    t = targets.add_parser("env", help="steps/s of every env id and where the time goes")
    t.add_argument("--presets", nargs="+", default=["tiny", "paper"], help="presets to time")
    t.add_argument(
        "--backbone-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="dtype of the frozen backbone's matmuls (model.backbone_dtype)",
    )
    t.add_argument(
        "--n-envs",
        type=int,
        default=1,
        help="K > 1: time K envs in SubprocVecEnv workers, 1 thread each, as hffm train --n-envs K "
        "steps them (default 1: one env, with the time split)",
    )
    t.add_argument(
        "--blocks",
        type=int,
        default=3,
        help="one env: time each id in this many blocks interleaved across the ids and report the "
        "median block (default 3)",
    )
    t.add_argument(
        "--set",
        dest="overrides",
        type=parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for every timed env, e.g. --set federation__eval_max_samples=2 (repeatable)",
    )
    t = targets.add_parser(
        "signal",
        help="per-round reward noise (re-drawn evaluation sets) against the gap "
        "between the best and worst Table I schedule, per env id",
    )
    t.add_argument("--presets", nargs="+", default=["tiny", "small"], help="presets to measure (default tiny small)")
    t.add_argument("--seeds", type=int, default=10, help="held-out seeds 10000.. per schedule (default 10)")
    t.add_argument(
        "--redraws", type=int, default=8, help="re-drawn evaluation sets per round for the noise, >= 2 (default 8)"
    )
    t.add_argument("--rounds", type=int, default=None, help="episode length (default: the preset's env.max_rounds)")
    t.add_argument(
        "--ids",
        nargs="+",
        default=list(ENV_IDS),
        help="env ids to measure (default all; split them over processes to use more cores)",
    )
    t.add_argument(
        "--set",
        dest="overrides",
        type=parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for every measured env, e.g. --set federation__eval_max_samples=16 (repeatable)",
    )
    t.add_argument("--json", action="store_true", help="print the rows and the worst id as JSON")
    from benchmarks import bench_robustness, bench_soak

    bench_soak.add_arguments(targets.add_parser("soak", help="RSS over a long run with many resets"))
    bench_robustness.add_arguments(
        targets.add_parser("robustness", help="accuracy under attacks with FedAvg and robust rules, and under DP noise")
    )
    b.set_defaults(func=_cmd_bench)

    from evaluation.evaluate import build_parser as evaluate_parser
    from training.train import build_parser as train_parser

    t = sub.add_parser("train", help="train a controller with stable-baselines3")
    train_parser(t)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="compare policies on held-out seeds (table + plots)")
    evaluate_parser(e)
    e.set_defaults(func=_cmd_evaluate)

    d = sub.add_parser("demo", help="the main job: train PPO on Aggregation-v0 (tiny), compare with the baselines")
    d.add_argument("--steps", type=int, default=None, help="PPO training steps (default: the demo's budget)")
    d.add_argument("--seeds", type=int, default=5, help="held-out evaluation seeds (default 5)")
    d.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # piped or redirected, stdout is block-buffered: each line should appear as printed
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        from hffm_cli.progress import interval_from_env

        interval_from_env()  # a bad HFFM_PROGRESS_INTERVAL_S fails before any work
        return args.func(args)
    except ConfigError as e:
        print(f"hffm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
