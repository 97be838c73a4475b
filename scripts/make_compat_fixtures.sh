#!/usr/bin/env bash
# Writes the checkpoint fixtures of a release into tests/fixtures/checkpoints-VERSION/: four
# small models (an MLP flow-matching model, a VP score model, an MLE model of stacked blocks,
# a class-conditional U-Net) and the samples each gives (16 draws, seed 3, RK4 x 10 steps).
# tests/test_compat.cpp checks that later versions load them and give the same samples.
# Run once per release with that release's binary:  scripts/make_compat_fixtures.sh build/cnf
set -euo pipefail
cnf=${1:-build/cnf}
version=$("$cnf" --version | awk '{print $2}')
out=tests/fixtures/checkpoints-$version
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
common="--quiet --eval-n 50 --seed 1 --threads 1"
"$cnf" train $common --steps 300 --width 16 --depth 2 --data moons --out "$work/mlp"
"$cnf" train $common --steps 300 --width 16 --depth 2 --data 8gaussians --objective score \
  --schedule vp --out "$work/score_vp"
"$cnf" train $common --steps 20 --width 8 --depth 1 --data circles --objective mle --blocks 2 \
  --mle-method rk4 --mle-steps 4 --batch-size 64 --out "$work/mle_blocks"
"$cnf" train $common --steps 5 --width 8 --channel-mult 1,2 --arch unet --classes 10 \
  --data fashion-mnist:size=7:classes=0+1:n=200:test=60 --batch-size 16 --eval-steps 4 \
  --out "$work/unet"
for name in mlp score_vp mle_blocks unet; do
  cp "$work/$name/model.pt" "$out/$name.pt"
  "$cnf" sample --ckpt "$out/$name.pt" -n 16 --method rk4 --steps 10 --seed 3 --threads 1 \
    --out "$work/${name}_samples.npy" > /dev/null
  cp "$work/${name}_samples.npy" "$out/${name}_samples.npy"
done
ls -l "$out"
