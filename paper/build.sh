#!/usr/bin/env bash
# Build the manuscript into OUT_DIR (default results/paper) when a LaTeX engine is present.
# Without one the pipeline still has every table and figure; this step then says it was skipped.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-results/paper}
case "$out" in /*) ;; *) out="$root/$out" ;; esac
mkdir -p "$out"
cd "$root/paper"
if command -v latexmk >/dev/null 2>&1; then
  latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir="$out" main.tex >"$out/build.log" 2>&1 \
    || { tail -n 40 "$out/build.log"; exit 1; }
  echo "built main.pdf with latexmk" | tee "$out/BUILD.txt"
elif command -v tectonic >/dev/null 2>&1; then
  tectonic --outdir "$out" main.tex >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; exit 1; }
  echo "built main.pdf with tectonic" | tee "$out/BUILD.txt"
else
  echo "skipped: no LaTeX engine found (install latexmk, e.g. 'apt-get install latexmk texlive-latex-recommended texlive-fonts-recommended', or tectonic); every table and figure is still in paper/generated and figures/" \
    | tee "$out/BUILD.txt"
fi
