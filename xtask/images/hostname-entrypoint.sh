#!/bin/sh
# weir/hostname: answers GET / with the container's hostname (the pod name) on :8080.
# The shell stays PID 1 with a TERM trap so pods stop at once instead of
# waiting out the grace period (PID 1 ignores signals it has no handler for).
set -e
mkdir -p /www
hostname > /www/index.html
httpd -f -v -p 8080 -h /www &
trap 'kill $! 2>/dev/null; exit 0' TERM INT
wait
