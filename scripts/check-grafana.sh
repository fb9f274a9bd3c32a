#!/usr/bin/env bash
# Checks deploy/grafana/: the alert rules with promtool when it is installed (Debian package
# `prometheus`; nothing is downloaded), and that the dashboard is JSON. The test
# `cargo nextest run --test api dashboards` checks more (every metric used is exported) and
# needs neither.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DIR="$ROOT/deploy/grafana"

python3 -m json.tool "$DIR/omnistock-dashboard.json" >/dev/null
echo "check-grafana: omnistock-dashboard.json is JSON"

if command -v promtool >/dev/null 2>&1; then
    promtool check rules "$DIR/omnistock-alerts.yaml"
else
    echo "check-grafana: promtool not installed (apt-get install prometheus); rules not checked by it"
fi
