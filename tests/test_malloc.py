"""The CPU training loop's malloc settings: applied once on glibc, never over the user's choice."""

import os
import subprocess
import sys

import pytest

CODE = (
    "from manifex.train._malloc import tune_malloc; import sys; "
    "a = tune_malloc(); b = tune_malloc(); assert a == b; sys.stdout.write(str(a))"
)


def _run(env_extra):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MANIFEX_MALLOC_TUNING"
    }
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _glibc() -> bool:
    import ctypes

    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_applied_on_glibc():
    assert _run({}) == "True"


@pytest.mark.parametrize(
    "env",
    [{"MANIFEX_MALLOC_TUNING": "0"}, {"MANIFEX_MALLOC_TUNING": "off"}, {"MALLOC_TRIM_THRESHOLD_": "1000000"}],
)
def test_off_by_env_or_user_settings(env):
    assert _run(env) == "False"
