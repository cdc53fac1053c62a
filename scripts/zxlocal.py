"""What the Python scripts (bench-report.py, api-check.py) share: the repository's paths, the
re-run under a pinned virtualenv (scripts/venv.sh), the local stack's environment
(scripts/stack.sh env), and prefixed copies of its tables and queues (localstack/init_aws.py).
"""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# As scripts/stack.sh and scripts/venv.sh place it.
CACHE = pathlib.Path(os.environ.get("ZX_CACHE_DIR") or
                     pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "zhixuan")


def in_venv(name):
    """Re-runs the calling script under the virtualenv of scripts/requirements/<name>.txt; once
    there, returns its bin/ directory."""
    marker = f"ZX_{name.upper()}_VENV"
    if os.environ.get(marker):
        return os.environ[marker]
    venv_bin = subprocess.run([str(ROOT / "scripts" / "venv.sh"), name], check=True,
                              capture_output=True, text=True).stdout.strip()
    os.environ[marker] = venv_bin
    python = os.path.join(venv_bin, "python3")
    os.execv(python, [python, *sys.argv])


def stack_env():
    """The environment `scripts/stack.sh env` sets (endpoints, credentials, URLs)."""
    out = subprocess.run(["bash", "-c", 'eval "$(scripts/stack.sh env)"; env -0'], cwd=ROOT,
                         check=True, capture_output=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def stack_aws(env, prefix, *args):
    """localstack/init_aws.py with the LocalStack virtualenv's boto3, for a prefixed copy of
    the tables and queues (`--delete` removes it)."""
    version = re.search(r"^LS_VERSION=(\S+)", (ROOT / "scripts" / "stack.sh").read_text(), re.M).group(1)
    python = CACHE / f"localstack-{version}" / "venv" / "bin" / "python"
    subprocess.run([str(python), str(ROOT / "localstack" / "init_aws.py"), *args], check=True,
                   stdout=subprocess.DEVNULL,
                   env=dict(env, ZX_TABLE_PREFIX=prefix, ZX_QUEUE_PREFIX=prefix))
