"""`finetune launch-check`: the checks `finetune train` runs under `accelerate launch`, without launching."""

from __future__ import annotations

from finetune.cli import args as types


def add_parser(sub) -> None:
    """`finetune launch-check --config_file ACC.yaml RECIPE [key=value ...]`: the pre-flight checks, no launch."""
    parser = sub.add_parser(
        "launch-check",
        help="check an Accelerate config (DeepSpeed/FSDP/DDP) against a recipe before launching",
        description="Run the checks `finetune train` runs at start-up under `accelerate launch`, without launching: "
        "a missing or malformed DeepSpeed JSON, batch settings that contradict the recipe, FSDP without GPUs, a "
        "quantization the sharding cannot handle. Exit status 0 and the launch command, or one error line and 2.",
    )
    parser.add_argument("--config_file", "--config-file", dest="config_file", required=True, type=types.existing_file, help="Accelerate config")
    parser.add_argument("--num_processes", "--num-processes", dest="num_processes", type=types.positive_int, help="as for accelerate")
    parser.add_argument("--num_machines", "--num-machines", dest="num_machines", type=types.positive_int, help="as for accelerate")
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.set_defaults(func=cmd_launch_check)


def cmd_launch_check(args) -> int:
    from finetune.config.inputs import check_recipe_inputs
    from finetune.config.load import load_recipe
    from finetune.training.launch import check_plan, plan_from_config_file

    recipe = load_recipe(args.recipe, args.overrides)
    check_recipe_inputs(recipe)
    plan = plan_from_config_file(args.config_file, args.num_processes, args.num_machines)
    check_plan(plan, recipe)
    t = recipe.training
    per_step = t.batch_size * t.gradient_accumulation_steps * plan.world_size
    flags = f" --num_processes {args.num_processes}" if args.num_processes else ""
    flags += f" --num_machines {args.num_machines}" if args.num_machines else ""
    overrides = "".join(f" {o}" for o in args.overrides)
    print(f"launch: {plan.describe()}")
    print(
        f"batch: {t.batch_size} sequences x {t.gradient_accumulation_steps} accumulation x {plan.world_size} "
        f"processes = {per_step} sequences of up to {recipe.data.max_length} tokens per optimizer step"
    )
    if plan.shards_parameters:
        print("saving: checkpoints sharded per rank (resume=true reads them); the final model/adapter gathered whole")
    print(f"ok: accelerate launch --config_file {args.config_file}{flags} -m finetune train {args.recipe}{overrides}")
    return 0
