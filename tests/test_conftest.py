"""The test suite's own contract: tests that need an absent extra skip and name it, and a test run never
writes into the user's real cache (~/.cache)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CACHE_ENV, EXTRA_MODULES, HIDE_ENV, MARKERS, WITHOUT, availability

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _pytest(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*CACHE_ENV, HIDE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def test_every_extra_a_test_may_need_has_a_marker() -> None:
    assert {"rtx", "modelopt", "serve", "tensorrt", "cuda", "nvcc"} <= set(MARKERS)
    assert {"rtx", "modelopt", "serve"} <= set(EXTRA_MODULES)


def test_tests_that_need_an_absent_extra_skip_and_name_it() -> None:
    """The two tests the README set-up (no ``rtx`` extra) used to fail, and a Triton one, with the
    extras made unimportable: skipped, each with the install command in its reason."""
    selected = [
        "tests/plugins/test_rtx.py::test_native_deformconv_for_rtx_fails_before_building",
        "tests/plugins/test_rtx.py::test_fp16_of_a_graph_that_cannot_be_made_fp16",
        "tests/serve/test_serve.py::test_taken_port_is_named_before_starting",
    ]
    proc = _pytest(selected, _env(**{HIDE_ENV: "rtx,modelopt,serve"}), REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"\b3 skipped\b", out) and "passed" not in out and "failed" not in out, out[-2000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert sum("pip install 'tdmi-deploy[rtx]'" in s for s in skips) == 2, skips
    assert sum("pip install 'tdmi-deploy[modelopt]'" in s for s in skips) == 1, skips
    assert sum("pip install 'tdmi-deploy[serve]'" in s for s in skips) == 1, skips


def test_a_test_run_does_not_write_to_the_real_cache(tmp_path: Path) -> None:
    """A run with HOME pointing at an empty folder and no cache variables set: the artifact cache and
    matplotlib's font cache land in the session's temporary folder, which is gone afterwards."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "test_writes_caches.py").write_text(
        "import os\n"
        "from pathlib import Path\n"
        "from tdmi.export.pipeline import default_cache_dir\n\n\n"
        "def test_writes_caches():\n"
        "    cache = default_cache_dir()\n"
        "    cache.mkdir(parents=True, exist_ok=True)\n"
        "    (cache / 'artifact').write_text('x')\n"
        "    import matplotlib\n"
        "    matplotlib.use('Agg')\n"
        "    import matplotlib.pyplot as plt\n"
        "    plt.figure().savefig(Path(os.environ['TDMI_CACHE_DIR']) / 'fig.png')\n"
        "    print('CACHE', cache)\n"
    )
    # The repository's conftest as a plugin, for a test file outside the repository.
    env = _env(HOME=str(home), PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    proc = _pytest(["-s", "-p", "conftest", "test_writes_caches.py"], env, work)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    cache = Path(re.search(r"^CACHE (.+)$", proc.stdout, flags=re.M).group(1))  # type: ignore[union-attr]
    assert not cache.is_relative_to(home) and "tdmi-test-cache-" in str(cache)
    assert not cache.exists(), "the session cache folder was left behind"
    assert list(home.iterdir()) == [], "the run wrote into $HOME"


def test_a_test_of_an_absence_runs_only_where_the_thing_is_absent(tmp_path: Path) -> None:
    """``without(NAME, reason=...)`` asks the same probe as the need marker NAME: with the extra hidden
    the test runs, with it present it skips with the given reason, and a name outside the map is a
    usage error rather than a test that silently always runs."""
    (tmp_path / "test_absence.py").write_text(
        f"import pytest\n\n\n@pytest.mark.{WITHOUT}('rtx', reason='RTX IS HERE')\n"
        "def test_absent_rtx():\n    pass\n"
    )
    (tmp_path / "test_typo.py").write_text(
        f"import pytest\n\n\n@pytest.mark.{WITHOUT}('gpu', reason='x')\ndef test_typo():\n    pass\n"
    )
    env = _env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    hidden = _pytest(["-p", "conftest", "test_absence.py"], {**env, HIDE_ENV: "rtx"}, tmp_path)
    assert hidden.returncode == 0 and re.search(r"\b1 passed\b", hidden.stdout), hidden.stdout[-2000:]
    here = _pytest(["-p", "conftest", "test_absence.py"], env, tmp_path)
    assert here.returncode == 0, here.stdout[-2000:]
    if availability("rtx"):
        assert re.search(r"SKIPPED .*RTX IS HERE", here.stdout), here.stdout[-2000:]
    else:
        assert re.search(r"\b1 passed\b", here.stdout), here.stdout[-2000:]
    typo = _pytest(["-p", "conftest", "test_typo.py"], env, tmp_path)
    assert typo.returncode != 0 and "use @pytest.mark.without(NAME, reason=...)" in typo.stdout + typo.stderr


def test_the_session_cache_is_not_the_users(isolated_cache: Path) -> None:
    from tdmi.export.pipeline import default_cache_dir

    assert default_cache_dir().is_relative_to(isolated_cache)
    assert not default_cache_dir().is_relative_to(Path.home() / ".cache")


@pytest.mark.parametrize("marker", sorted(MARKERS))
def test_markers_are_registered_with_their_reason(marker: str, pytestconfig: pytest.Config) -> None:
    lines = pytestconfig.getini("markers")
    assert any(line.startswith(f"{marker}: ") for line in lines)
