"""The package's shape: `import tl_clt` loads no submodule (not the toy, not viz, not torch),
every public name resolves to its module's object, the import graph inside tl_clt/ has no
cycle, and docs/architecture.md lists every module."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import check_imports  # noqa: E402


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_tl_clt_loads_no_submodule():
    """The test of the issue, and more: nothing but the package itself is imported."""
    subprocess.run(
        [sys.executable, "-c", "import tl_clt, sys; assert 'tl_clt.toy' not in sys.modules"],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    loaded = _run(
        "import json, sys, tl_clt; print(json.dumps({'ours': sorted(m for m in sys.modules "
        "if m.startswith('tl_clt')), 'torch': 'torch' in sys.modules, "
        "'tl': 'transformer_lens' in sys.modules}))"
    )
    assert loaded == {"ours": ["tl_clt"], "torch": False, "tl": False}


def test_public_names_resolve_without_the_toy():
    """Every name in __all__ is its module's object; resolving all of them (render_graph
    included) still imports no toy code."""
    got = _run(
        "import json, sys, tl_clt\n"
        "found = {n: getattr(tl_clt, n).__module__ if hasattr(getattr(tl_clt, n), '__module__') "
        "else None for n in tl_clt.__all__}\n"
        "print(json.dumps({'toy': sorted(m for m in sys.modules if m.startswith('tl_clt.toy')), "
        "'n': len(found)}))"
    )
    assert got["toy"] == []
    import tl_clt

    assert sorted(tl_clt.__all__) == sorted(tl_clt._EXPORTS) == tl_clt.__all__
    for name, module in tl_clt._EXPORTS.items():
        assert getattr(tl_clt, name) is getattr(importlib.import_module(module), name), name
    # about 20 names of API, plus the error and warning types a caller catches (12 of them)
    errors = [n for n in tl_clt.__all__ if n.endswith(("Error", "Warning"))]
    assert got["n"] == len(tl_clt.__all__) and len(tl_clt.__all__) - len(errors) <= 21
    assert set(tl_clt.__all__) <= set(dir(tl_clt))


def test_internals_stay_in_their_modules():
    import tl_clt

    internals = {
        "SparseFeatures": "tl_clt.clt",
        "RaggedFeatures": "tl_clt.clt",
        "ModelIdentity": "tl_clt.config",
        "WeightProcessing": "tl_clt.config",
        "TokenBatch": "tl_clt.activations",
        "ActivationSource": "tl_clt.activations",
    }
    for name, module in internals.items():
        assert name not in tl_clt.__all__
        assert hasattr(importlib.import_module(module), name)
        with pytest.raises(AttributeError, match=name):
            getattr(tl_clt, name)
    assert tl_clt.prune is importlib.import_module("tl_clt.prune")  # a submodule, on demand
    assert "prune" not in tl_clt.__all__ and "toy" not in tl_clt.__all__


def test_one_token_batch_type():
    import tl_clt.activations
    import tl_clt.labels

    assert tl_clt.labels.TokenBatch is tl_clt.activations.TokenBatch
    assert tl_clt.activations.TokenBatch._fields == ("tokens", "keep")


# ---------------------------------------------------------------------- import graph
def test_the_package_has_no_import_cycle():
    out = subprocess.run(
        [sys.executable, "scripts/check_imports.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"\d+ modules, \d+ imports, 0 cycle\(s\)", out.stdout)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "tl_clt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_import_check_finds_module_and_function_level_cycles(tmp_path):
    """A planted package: a -> b at module level, b -> a inside a function (a cycle); c -> d
    only under TYPE_CHECKING and d -> c (not a cycle); `from tl_clt.sub import e` names the
    module tl_clt.sub.e, relative imports resolve."""
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from tl_clt import b\n",
            "b.py": "def f():\n    from tl_clt.a import x\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tl_clt import d\n",
            "d.py": "import tl_clt.c\n",
            "sub/__init__.py": "",
            "sub/e.py": "from . import f\nfrom ..c import thing\n",
            "sub/f.py": "",
        },
    )
    graph = check_imports.import_graph(root)
    assert graph["tl_clt.a"] == {"tl_clt.b"} and graph["tl_clt.b"] == {"tl_clt.a"}
    assert graph["tl_clt.c"] == set() and graph["tl_clt.d"] == {"tl_clt.c"}
    assert graph["tl_clt.sub.e"] == {"tl_clt.sub.f", "tl_clt.c"}
    assert check_imports.cycles(graph) == [["tl_clt.a", "tl_clt.b", "tl_clt.a"]]
    three = {"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}
    assert check_imports.cycles(three) == [["x", "y", "z", "x"]]


# ---------------------------------------------------------------------- docs
def test_architecture_doc_lists_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = set(re.findall(r"^\| `(tl_clt/[\w/]+\.py)` \|", text, re.M))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tl_clt").rglob("*.py")}
    assert modules - table == set(), "modules missing from docs/architecture.md's table"
    assert table - modules == set(), "the table lists files that do not exist"
    assert "## Glossary" in text


def test_code_and_docs_cite_papers_not_outside_files():
    pattern = re.compile(r"REFERENCE\.md|seed's|seed notes")
    found = []
    for folder in ("tl_clt", "docs", "tests", "demos", "benchmarks", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".js", ".sh"} and path.name != Path(__file__).name:
                for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if pattern.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{i}")
    for path in ROOT.glob("*.md"):
        if pattern.search(path.read_text()):
            found.append(path.name)
    assert found == []
