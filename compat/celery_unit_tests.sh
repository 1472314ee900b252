#!/bin/sh
# Run Celery's own unit tests (tasks, app, worker; from the sdist of the installed
# Celery) twice: with plain Task, then with celery_defer.DeferTask as every app's
# task class; list every test whose outcome differs. Takes ~4 minutes.
#   sh compat/celery_unit_tests.sh [WORKDIR]
set -e
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
python=${PYTHON:-python3}
version=$("$python" -c 'import celery; print(celery.__version__)')
cd "$work"
"$python" -m pip download -q "celery==$version" --no-binary :all: --no-deps -d .
tar xzf "celery-$version.tar.gz"
"$python" -m venv venv
venv/bin/pip install -q -e "$here/.." "celery==$version" pytest pytest-subtests pytest-timeout \
  pytest-click pytest-order pytest-rerunfailures freezegun msgpack PyYAML
cd "celery-$version"
for mode in stock defer; do
  plugin=""; [ "$mode" = defer ] && plugin="-p defer_task_plugin"
  PYTHONPATH="$here" ../venv/bin/python -m pytest -p celery.contrib.pytest $plugin -p no:cacheprovider \
    -q --timeout=120 --junitxml="$work/$mode.xml" t/unit/tasks t/unit/app t/unit/worker \
    > "$work/$mode.log" 2>&1 || true
  tail -1 "$work/$mode.log"
done
../venv/bin/python "$here/compare.py" "$work/stock.xml" "$work/defer.xml"
