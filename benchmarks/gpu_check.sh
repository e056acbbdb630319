#!/usr/bin/env bash
# One-shot GPU check (issue 6): bf16/32 precision, DDP and FSDP strategies (one GPU, NCCL), compile=true,
# and training throughput on CUDA. Prints a markdown table: check, exit status, wall time, run status, steps,
# final val/test loss. Usage on a CUDA machine with genlab installed: benchmarks/gpu_check.sh [out_dir]
set -u
out=${1:-outputs/gpu_check}
mkdir -p "$out"
genlab=(python3 -m genlab.cli train)
echo "| check | exit | wall s | status | steps | steps/s | val/loss | test/loss |"
echo "|---|---|---|---|---|---|---|---|"
check() {
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  "${genlab[@]}" "$@" "hydra.run.dir=$out/$name" >"$out/$name.log" 2>&1
  local rc=$?
  end=$(date +%s.%N)
  python3 - "$out/$name/run.json" "$name" "$rc" "$start" "$end" <<'PY'
import json, sys
path, name, rc, start, end = sys.argv[1:]
wall = float(end) - float(start)
try:
    r = json.load(open(path))
except OSError:
    r = {"status": "no run.json", "metrics": {}}
m, steps = r.get("metrics", {}), r.get("steps") or 0
rate = steps / r["wall_time_s"] if r.get("wall_time_s") else 0
fmt = lambda k: f"{m[k]:.4f}" if k in m else "-"
print(f"| {name} | {rc} | {wall:.1f} | {r['status']} | {steps} | {rate:.1f} | {fmt('val/loss')} | {fmt('test/loss')} |")
PY
  [ "$rc" = 0 ] || tail -5 "$out/$name.log" | sed 's/^/    /'
}
fast=(debug=fast trainer.accelerator=gpu trainer.devices=1)
only=${ONLY:-}  # e.g. ONLY="fsdp-1gpu gpt-500-steps" runs just those checks
check_if() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]] && check "$@"; }
check_if vae-fp32 "${fast[@]}" trainer.precision=32-true
check_if vae-bf16 "${fast[@]}" trainer.precision=bf16-mixed
check_if vae-16mixed "${fast[@]}" trainer.precision=16-mixed
check_if ddp-1gpu "${fast[@]}" trainer=ddp trainer.accelerator=gpu trainer.devices=1 trainer.sync_batchnorm=false
check_if fsdp-1gpu "${fast[@]}" trainer=fsdp trainer.accelerator=gpu trainer.devices=1
check_if compile-vae "${fast[@]}" compile=true
check_if compile-ddpm "${fast[@]}" experiment=mnist_ddpm compile=true
# throughput: the default recipes for a fixed number of steps, bf16, no FID at the end
long=(trainer=gpu trainer.max_epochs=-1 logger=none callbacks.progress_bar=null callbacks.sample_grid=null)
check_if vae-500-steps "${long[@]}" trainer.max_steps=500
check_if ddpm-500-steps "${long[@]}" experiment=mnist_ddpm trainer.max_steps=500 callbacks.sample_grid=null
check_if gan-1000-steps "${long[@]}" experiment=mnist_gan trainer.max_steps=1000 callbacks.sample_grid=null
check_if gpt-500-steps "${long[@]}" experiment=shakespeare_gpt trainer.max_steps=500 callbacks.text_samples=null
