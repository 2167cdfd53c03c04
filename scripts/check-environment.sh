#!/usr/bin/env bash
# Stops set-up early, with what to do, when the machine lacks what recspark needs.
set -euo pipefail
# Usage: check-environment.sh PYTHON VERSION... (the stack's Pythons, e.g. 3.12 3.11)
python_bin="${1:-}"
shift || true
versions="${*:-3.12 3.11}"
if [ -z "$python_bin" ] || ! "$python_bin" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] not in '$versions'.split())" 2>/dev/null; then
  echo "error: this stack needs Python ${versions// / or } (the pinned stack: pyarrow 14.0.2 for petastorm has" >&2
  echo "       wheels up to 3.12; the current one: pyspark 4.2); ${python_bin:-none of them} was not usable." >&2
  echo "       install one (e.g. 'apt-get install python3.12 python3.12-venv' or pyenv) and re-run, or" >&2
  echo "       pass another interpreter: make demo PYTHON=/path/to/python3.12" >&2
  exit 1
fi
if ! command -v java >/dev/null 2>&1; then
  echo "error: 'java' was not found. Spark 4 needs Java 17 (or 21)." >&2
  echo "       Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless" >&2
  echo "       macOS:         brew install openjdk@17" >&2
  echo "       or set JAVA_HOME to a JDK 17 and put \$JAVA_HOME/bin on PATH, then re-run." >&2
  exit 1
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
if [ -n "$java_major" ] && [ "$java_major" -lt 17 ]; then
  echo "error: java $java_major found; Spark 4 needs Java 17 or newer (see above for how to install)." >&2
  exit 1
fi
