"""The command-line entry point: help and usage errors answer without the heavy imports."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "pandas", "scipy", "plotly")


def test_importing_the_cli_imports_no_heavy_library():
    code = ("import sys, dora_diag.cli.main; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_and_usage_errors_run_without_torch():
    code = ("import sys\n"
            "from dora_diag.cli.main import main\n"
            "try:\n"
            "    main(sys.argv[1:])\n"
            "finally:\n"
            "    print('torch' in sys.modules, file=sys.stderr)\n")
    for args, rc in ((["--help"], 0), (["compare", "--help"], 0), (["train", "--help"], 0),
                     (["compare"], 2), (["compare", "a", "b", "--axis", "sideways"], 2)):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert p.returncode == rc, (args, p.stderr)
        assert p.stderr.splitlines()[-1] == "False", args


def test_package_attributes_load_on_first_use():
    import dora_diag
    from dora_diag.analysis.compare import compare

    assert dora_diag.compare is compare
    assert callable(dora_diag.check) and dora_diag.Analysis.__name__ == "Analysis"


def test_debug_is_accepted_after_the_subcommand(tmp_path, capsys):
    from cli_helpers import call

    code, _, err = call(capsys, "compare", str(tmp_path / "missing"), str(tmp_path / "x"), "--debug")
    assert code == 2 and "Traceback" in err and "no such file or directory" in err.splitlines()[-1]
    code, _, err = call(capsys, "compare", str(tmp_path / "missing"), str(tmp_path / "x"))
    assert code == 2 and "Traceback" not in err
