#!/bin/bash
# per-epoch seconds of the vanilla fit at batch 128 under variants (one process each), from the plain progress lines
export PYTHONUNBUFFERED=1
B="fit --config configs/vanilla.yaml --data.data_dir ${DATA:-.mnist} --trainer.max_epochs ${EPOCHS:-4} --experiments.names [] --data.batch_size 128 --trainer.enable_progress_bar true --progress_bar.lines always --trainer.logger.init_args.save_dir /tmp/gv ${EXTRA}"
for v in "default:" "noguard:--nonfinite null" "noguard_nobar:--nonfinite null --progress_bar null --trainer.enable_progress_bar false" "noguard_nolastckpt:--nonfinite null --last_checkpoint null --checkpoint null"; do
  name=${v%%:*}; args=${v#*:}
  s=$(date +%s.%N)
  ${PY:-python3} -m vae_lightning $B $args 2>&1 | grep -E "^epoch [0-9]" | sed "s/^/$name /" | cut -c1-60
  echo "$name total $(echo "$(date +%s.%N) - $s" | bc) s"
done
