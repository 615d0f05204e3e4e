"""Set-up and everyday commands on a fresh machine with Python 3.11+, stdlib only.

    python3 -m service.tools.dev run     # the demo Records API on :8000, the connector on :5000
    python3 -m service.tools.dev test    # every test (unit, functional, Docker checks, lint)

Both create ``.venv`` and install the pinned requirements first, and again whenever a
requirements file changes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "service" / "requirements-dev.txt"
GUNICORN_ARGS = ["-c", "service/gunicorn.conf.py", "service.connector:create_app()"]


def venv_python() -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure_venv() -> Path:
    """Create the virtual environment and install the pins, unless already done."""
    files = sorted((ROOT / "service").glob("requirements*.txt"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = VENV / ".requirements-sha256"
    if stamp.exists() and stamp.read_text() == digest and venv_python().exists():
        return venv_python()
    if not venv_python().exists():
        print(f"creating {VENV.name}/", flush=True)
        venv.create(VENV, with_pip=True)
    python = str(venv_python())
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(digest)
    return venv_python()


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {seconds:.0f}s") from None
            time.sleep(0.2)


def python_to_use() -> Path:
    """``.venv``'s Python, or ``$SERVICE_DEV_PYTHON`` (an interpreter that already has the
    requirements, as in the tests and the Docker image)."""
    chosen = os.environ.get("SERVICE_DEV_PYTHON")
    return Path(chosen) if chosen else ensure_venv()


def run() -> int:
    """The connector under gunicorn (the contract's command) beside the demo upstream."""
    python = python_to_use()
    token = os.environ.get("UPSTREAM_TOKEN", "demo-token")
    upstream_port = os.environ.get("DEMO_UPSTREAM_PORT", "8000")
    env = dict(os.environ)
    env.setdefault("UPSTREAM_URL", f"http://127.0.0.1:{upstream_port}")
    env["UPSTREAM_TOKEN"] = token
    env["DEMO_UPSTREAM_TOKEN"] = token
    port = env.setdefault("PORT", "5000")
    upstream = subprocess.Popen(
        [str(python), "-m", "service.tools.demo_upstream", "--port", upstream_port],
        cwd=ROOT,
        env=env,
    )
    connector = subprocess.Popen(
        [str(python.with_name("gunicorn")), *GUNICORN_ARGS], cwd=ROOT, env=env
    )
    signal.signal(signal.SIGTERM, _interrupt)  # stop both, as on Ctrl-C
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        print(f"\nready: curl http://localhost:{port}/people   (Ctrl-C stops both)\n", flush=True)
        while upstream.poll() is None and connector.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in (connector, upstream):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (connector, upstream):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return connector.returncode or 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def test(args: list[str]) -> int:
    python = python_to_use()
    command = [
        str(python),
        "-m",
        "pytest",
        "-c",
        "service/tests/pytest.ini",
        "--rootdir",
        "service/tests",
        *(args or ["service/tests"]),
    ]
    return subprocess.run(command, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on the system Python
        raise SystemExit("Python 3.11 or newer is needed")
    if argv[:1] == ["run"]:
        return run()
    if argv[:1] == ["test"]:
        return test(argv[1:])
    if argv[:1] == ["setup"]:
        ensure_venv()
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
