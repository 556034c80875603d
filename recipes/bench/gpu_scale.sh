#!/usr/bin/env bash
# Tokens/s and peak GPU memory of the scale-out launch configs on a randomly initialised 1.5B (or 3B) model.
#
#   bash recipes/bench/gpu_scale.sh                      # every config below, all GPUs of this machine
#   bash recipes/bench/gpu_scale.sh fsdp2-full zero3-full  # only these
#   MODEL=starcoder2-3b STEPS=40 bash recipes/bench/gpu_scale.sh
#   EXTRA="training.batch_size=8 data.max_length=4096" bash recipes/bench/gpu_scale.sh zero3-full
#
# Needs CUDA GPUs, `pip install -e '.[deepspeed]'` (flash-attn optional: attention falls back to sdpa).
# Prints one line per config and a table at the end; results also go to runs/bench/gpu_scale.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."

MODEL=${MODEL:-qwen2.5-coder-1.5b}
STEPS=${STEPS:-30}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"   # more recipe overrides, applied to every config
GPUS=${GPUS:-$(python -c "import torch; print(torch.cuda.device_count())")}
CONFIGS=("$@")
if [ ${#CONFIGS[@]} -eq 0 ]; then
  CONFIGS=(single-lora fsdp2-lora fsdp2-full zero3-lora zero3-full zero3-qlora)
fi
if [ "$GPUS" -lt 1 ]; then
  echo "error: no CUDA GPU on this machine: this benchmark measures GPU throughput and memory" >&2
  exit 2
fi

MODEL_DIR=runs/bench-models/$MODEL
mkdir -p "$MODEL_DIR" runs/bench
cp "recipes/bench/$MODEL.config.json" "$MODEL_DIR/config.json"
cp data/tiny-coder/tokenizer.json data/tiny-coder/tokenizer_config.json "$MODEL_DIR/"
STDLIB=$(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
ATTN=$(python -c "import importlib.util as u; print('flash_attention_2' if u.find_spec('flash_attn') else 'sdpa')")
GPU_NAME=$(python -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')")
RESULTS=runs/bench/gpu_scale.jsonl
RUN_ID=$(date -u +%Y%m%dT%H%M%S)
touch "$RESULTS"
echo "model $MODEL (random init), $GPUS x $GPU_NAME, attention $ATTN, $STEPS steps, $(date -u +%Y-%m-%d)"

# Tokenize once, outside the timed runs (train reuses the cached dataset).
if ! python -m finetune prepare recipes/bench/scale.yaml "data.sources.0.path=$STDLIB" "model.name_or_path=$MODEL_DIR" \
    "${EXTRA_ARGS[@]}" > runs/bench/prepare.log 2>&1; then
  echo "error: preparing the data failed; see runs/bench/prepare.log" >&2
  tail -3 runs/bench/prepare.log >&2
  exit 1
fi

for name in "${CONFIGS[@]}"; do
  engine=${name%-*}
  method=${name##*-}
  case $engine in
    single) config=recipes/accelerate/single_gpu.yaml; procs=1 ;;
    ddp) config=recipes/accelerate/ddp.yaml; procs=$GPUS ;;
    fsdp2) config=recipes/accelerate/fsdp2.yaml; procs=$GPUS ;;
    zero2|zero3|zero2_offload|zero3_offload) config=recipes/accelerate/$engine.yaml; procs=$GPUS ;;
    *) echo "unknown config $name (use ENGINE-METHOD, e.g. zero3-full)" >&2; exit 2 ;;
  esac
  out=runs/bench/$name
  lr=1e-5; if [ "$method" != full ]; then lr=2e-4; fi
  args=(recipes/bench/scale.yaml "data.sources.0.path=$STDLIB" "model.name_or_path=$MODEL_DIR"
        "training.learning_rate=$lr" "method=$method" "output_dir=$out" "training.max_steps=$STEPS" "${EXTRA_ARGS[@]}")
  if ! python -m finetune launch-check --config_file "$config" --num_processes "$procs" "${args[@]}" > "runs/bench/$name.check" 2>&1; then
    echo "$name: skipped: $(tail -1 "runs/bench/$name.check")"
    continue
  fi
  start=$(date +%s)
  if accelerate launch --config_file "$config" --num_processes "$procs" -m finetune train "${args[@]}" \
      > "runs/bench/$name.log" 2>&1; then
    python - "$name" "$out" "$procs" "$ATTN" "$GPU_NAME" "$(( $(date +%s) - start ))" "$RESULTS" "$RUN_ID" <<'PY'
import json, sys
name, out, procs, attn, gpu, wall, results, run_id = sys.argv[1:]
summary = json.load(open(f"{out}/summary.json"))
logs = [json.loads(line) for line in open(f"{out}/metrics.jsonl") if '"tokens_per_second"' in line]
steady = [r["tokens_per_second"] for r in logs[1:]] or [r["tokens_per_second"] for r in logs]
row = {
    "run": run_id, "config": name, "gpus": int(procs), "gpu": gpu, "attention": attn, "steps": summary["steps"],
    "tokens_per_second": round(summary["tokens_per_second"] or 0),
    "steady_tokens_per_second": round(sorted(steady)[len(steady) // 2]) if steady else None,
    "peak_gpu_memory_gib_rank0": summary.get("peak_gpu_memory_gib"),
    "train_seconds": round(summary["train_seconds"], 1), "wall_seconds": int(wall),
}
with open(results, "a") as handle:
    handle.write(json.dumps(row) + "\n")
print(f"{name}: {row['tokens_per_second']:,} tokens/s overall, {row['steady_tokens_per_second']:,} steady (median after "
      f"the first log), peak {row['peak_gpu_memory_gib_rank0']} GiB on rank 0, {row['wall_seconds']} s wall")
PY
  else
    echo "$name: FAILED (exit $?): last lines of runs/bench/$name.log:"
    tail -5 "runs/bench/$name.log"
  fi
  rm -rf "$out"   # the random weights are worthless; keep the disk free
done

echo
echo "| config | GPUs | attention | tokens/s (overall) | tokens/s (steady) | peak GPU memory, rank 0 (GiB) |"
echo "| --- | --- | --- | --- | --- | --- |"
python -c "
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r['run'] == sys.argv[2]:
        print(f\"| {r['config']} | {r['gpus']} x {r['gpu']} | {r['attention']} | {r['tokens_per_second']:,} | {r['steady_tokens_per_second']:,} | {r['peak_gpu_memory_gib_rank0']} |\")
" "$RESULTS" "$RUN_ID"
echo "results appended to $RESULTS"
