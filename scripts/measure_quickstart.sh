#!/usr/bin/env bash
# Measure `finealign quickstart --scale SCALE` on a quiet machine: wall time and peak memory
# (/usr/bin/time -v), the five-line summary and summary.md; then screenshot its report for the README
# with headless Chromium (Debian's `chromium`: apt-get update && apt-get install -y chromium).
#
#   bash scripts/measure_quickstart.sh default     # or tiny; the work folder is printed
set -euo pipefail
scale=${1:-default}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$(mktemp -d /tmp/finealign-qs-XXXX)}
mkdir -p "$work" && cd "$work"
echo "work folder: $work (model cached beforehand: finealign models pull)"
/usr/bin/time -v finealign quickstart --scale "$scale" --quiet >summary.txt 2>quickstart.log
cat summary.txt
grep -E "Elapsed \(wall clock\)|Maximum resident set size|User time|System time" quickstart.log
cat finealign-quickstart/summary.md
shot="$work/report.png"
if [ "$scale" = default ]; then shot="$repo/docs/report.png"; fi   # the README's screenshot is the default scale
if command -v chromium >/dev/null; then
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1600 \
    --screenshot="$shot" "file://$work/finealign-quickstart/report.html" 2>/dev/null
  echo "screenshot: $shot"
fi
