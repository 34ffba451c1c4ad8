#!/usr/bin/env bash
# Set up a fresh Debian machine for pytest-serving, idempotently:
#   Docker engine and debootstrap (apt), dockerd running, the package with its model extras (pip),
#   the offline CPU images of every target (built locally from wheels: no registry needed),
#   and every target's deployment of the default model card.
# Re-running skips whatever is already there. Needs root for apt and dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v chromium >/dev/null || missing+=(chromium)  # renders report.html in the report test
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    if pgrep -x dockerd >/dev/null; then
        log "dockerd is running but not answering yet"
    else
        log "starting dockerd (log: /var/log/pytest-serving-dockerd.log)"
        (setsid dockerd >/var/log/pytest-serving-dockerd.log 2>&1 &)
    fi
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { log "dockerd did not come up"; tail -n 30 /var/log/pytest-serving-dockerd.log; exit 1; }
fi

# torch first and pinned: the machine's local CPU wheel, never the registry's CUDA build.
python3 -c 'import torch' 2>/dev/null || { log "installing torch 2.13.0 (CPU)"; python3 -m pip install -q torch==2.13.0; }
log "installing pytest-serving (editable) with its model, report and tf extras"
python3 -m pip install -q -e '.[model,report,tf]'

log "building the offline images (cached: seconds when they exist)"
pytest-serving build-images
log "building every target's deployment of the default model card (cached)"
pytest-serving export-model
log "ready"
