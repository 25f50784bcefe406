"""The Python API: `import persona` is light, names every function behind the CLI, and the README's example
runs as written (in a copy of identities/, on the embedded model)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_persona_is_light_and_names_the_api():
    code = ("import sys, persona; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "print(sorted(n for n in dir(persona) if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("load_spec", "generate", "judge_run", "build_run", "train_model", "evaluate", "write_report",
                 "RunConfig", "BuildSettings", "EvalSettings", "PersonaError"):
        assert f"'{name}'" in out
    import persona

    import persona.train  # noqa: F401  (the submodule must not shadow the function)
    assert callable(persona.train_model) and persona.train_model.__module__ == "persona.train"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shutil.copytree(ROOT / "identities", tmp_path / "identities")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    assert (tmp_path / "runs/notebook/report.html").is_file()
    assert namespace["page"] == Path("runs/notebook/report.html") or Path(namespace["page"]).name == "report.html"
    assert sum(namespace["summary"].build.sft["train"].values()) > 0
    assert namespace["metrics"]["verdict"] and (Path(namespace["result"].output_dir) / "adapter_config.json").is_file()
