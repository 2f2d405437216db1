"""The package face: `import ncf_tune` is light and names the public API; `ncf-tune`
runs the three tools."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ncf_tune.cli import main


def test_import_is_light_and_names_the_public_api():
    code = ("import sys, ncf_tune; heavy = [m for m in ('torch', 'ray', 'pandas') if m in "
            "sys.modules]; print(heavy, ncf_tune.__version__ != '0+unknown'); "
            "from ncf_tune.config import TrainConfig; import ncf_tune.chain as c; "
            "print(ncf_tune.TrainConfig is TrainConfig, ncf_tune.run_chain is c.run_chain)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split("\n")[:2] == ["[] True", "True True"]
    import ncf_tune
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ncf_tune.nothing  # noqa: B018


def test_ncf_tune_dispatches_to_each_tool(capsys):
    assert main([]) == 2 and "ncf-tune {search|train|recommend}" in capsys.readouterr().out
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0 and "--batch-size" in capsys.readouterr().out
    # a tool's own one-line errors and exit code come through
    assert main(["train", "--model", "gmf", "--config", "/nonexistent.yaml"]) == 2
    assert "nonexistent.yaml" in capsys.readouterr().err


def test_the_console_script_is_installed():
    exe = shutil.which("ncf-tune")
    assert exe is not None, "pip install -e . installs the ncf-tune command"
    p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "recommend" in p.stdout
