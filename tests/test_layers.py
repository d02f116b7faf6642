"""The package's layers point one way: a module imports only from its own layer or those below.

The layers, bottom first (``LAYERS``; book/using/code.md says the same in words). The core first,
which a Phase 1.3 project imports alone:

1. foundations: ``errors``, ``files``, ``outputs``, ``palette``, ``images``, ``metrics``, ``config``,
   ``runtime``
2. ``data``
3. ``model``, ``losses``
4. ``training``
5. ``autoencoder`` (a trained run's model, to encode and decode) and ``export`` (every layout's latent)
6. the core's public API (``__init__``)

then the layout scorer, a part of its own that needs only the core:

7. ``scoring``

then the Phase 1.2 study beside them (``imginav_core.study``), which depends on both:

8. ``study`` (its own foundations: ``study.stats``, ``study.results``, ``study.plan``)
9. ``study.runs`` (finished runs as the probe and the analysis read them)
10. ``study.probe``
11. ``study.parameters``
12. ``study.analysis``
13. ``study.perf`` (measures everything, the analysis included)

and at the top the command line (``__main__``), which reaches every part.

Every import counts: at the top of a module, inside a function (imported when it runs), and under
``if TYPE_CHECKING:`` (a type from above is a dependency on above all the same). Read from the
source (AST), so the test imports nothing and takes well under a second.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PACKAGE = "imginav_core"
LAYERS = [
    ("errors", "files", "outputs", "palette", "images", "metrics", "config", "runtime"),
    ("data",),
    ("model", "losses"),
    ("training",),
    ("autoencoder", "export"),
    ("__init__",),
    ("scoring",),
    # the study's records and statistics: torch-free, what a plan is written from
    (
        "study",
        "study.stats",
        "study.power",
        "study.numbers",
        "study.results",
        "study.arms",
        "study.analysis.settings",
        "study.probe.settings",
        "study.analysis.criteria",
    ),
    ("study.plan", "study.budget", "study.protocol", "study.jobscripts"),
    ("study.runs",),
    ("study.probe",),
    ("study.analysis",),
    ("study.jobs", "study.notebooks", "study.settings"),
    ("study.perf",),
    ("__main__",),
]
CORE = LAYERS.index(("__init__",))  # the core's layers: 0 to CORE
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    """``imginav_core/study/probe/run.py`` -> ``imginav_core.study.probe.run`` (a package: its folder's name)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every ``imginav_core`` import in ``source``, wherever it is."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` / `from .. import x`: x may be a module of that package
                names = [f"{name}.{alias.name}" for alias in node.names] if not node.module else [name]
            else:
                names = [node.module or ""]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def layer_of(module: str) -> int:
    """The layer of a module of the package: its longest dotted part below ``imginav_core`` that
    names a layer (``imginav_core.study.probe.run`` -> ``study.probe``)."""
    parts = module.split(".")[1:] or ["__init__"]  # the package itself: its public API
    for length in range(len(parts), 0, -1):
        if ".".join(parts[:length]) in LAYER:
            return LAYER[".".join(parts[:length])]
    raise AssertionError(f"{module}: put {parts[0]!r} in a layer of tests/test_layers.py LAYERS (and in code.md)")


def upward_imports(path: Path, source: str) -> list[str]:
    """Each import in ``source`` (the file at ``path``) of a module from a higher layer, explained."""
    module = module_name(path)
    own = layer_of(module)
    problems = []
    for line, target in imported_modules(source, module, path.name == "__init__.py"):
        if target == PACKAGE:  # the package's own __init__ (config, errors): the foundations
            continue
        level = layer_of(target)
        if level > own:
            problems.append(
                f"{path.relative_to(ROOT)}:{line} imports {target} (layer {level + 1}: {', '.join(LAYERS[level])}) "
                f"from layer {own + 1} ({', '.join(LAYERS[own])}): move what both need to a layer below both"
            )
    return problems


def test_no_module_imports_from_a_layer_above_its_own():
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    assert len(files) > 40  # the package, not an empty folder
    problems = [problem for path in files for problem in upward_imports(path, path.read_text())]
    assert not problems, "\n".join(problems)


def test_an_upward_import_is_found_wherever_it_hides():
    """The check on a built case: the probe reading the analysis at the top, in a function, under
    TYPE_CHECKING and relatively through ``from .. import``; the core's loop reading the study; and
    downward imports that are fine."""
    probe = ROOT / PACKAGE / "study" / "probe" / "run.py"
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ...scoring import LayoutScorer\n"  # down: fine
        "from ..analysis.study import shared_config\n"
        "if TYPE_CHECKING:\n    from imginav_core.study.analysis.runs import RunSummary\n"
        "def f():\n    from .. import analysis\n"
        "def g():\n    import imginav_core.study.perf.memory\n"
    )
    problems = upward_imports(probe, source)
    assert [re.search(r":(\d+) imports (\S+)", p).groups() for p in problems] == [
        ("3", "imginav_core.study.analysis.study"),
        ("5", "imginav_core.study.analysis.runs"),
        ("7", "imginav_core.study.analysis"),
        ("9", "imginav_core.study.perf.memory"),
    ]
    assert "layer 12: study.analysis" in problems[0] and "from layer 11 (study.probe)" in problems[0]
    loop = ROOT / PACKAGE / "training" / "loop.py"
    source = "from ..model import build_model\nfrom ..study.runs import load_run\nfrom ..scoring import LayoutScorer\n"
    assert [re.search(r":(\d+) imports (\S+)", p).groups() for p in upward_imports(loop, source)] == [
        ("2", "imginav_core.study.runs"),
        ("3", "imginav_core.scoring"),
    ]


def test_the_core_imports_nothing_of_the_study_in_a_fresh_interpreter():
    """What a Phase 1.3 project imports -- the package, its config, model, losses, data and training
    loop -- loads no module of the study or the scorer (nor torch for the package alone)."""
    code = (
        "import sys\n"
        "import imginav_core\n"
        "assert 'torch' not in sys.modules, 'import imginav_core loaded torch'\n"
        "import imginav_core.model, imginav_core.losses, imginav_core.training.loop, imginav_core.data.batches\n"
        "import imginav_core.autoencoder, imginav_core.export\n"
        "from imginav_core import build_model, load_config, train, load_autoencoder, export_latents\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('imginav_core.study', 'imginav_core.scoring'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the core loaded {done.stdout.strip()}"


def test_the_book_names_the_layers_in_the_same_order():
    """book/using/code.md's paragraph on the layers names every layer, bottom first."""
    text = (ROOT / "book" / "using" / "code.md").read_text()
    paragraph = re.search(r"Layers point one way:.*?(?:\n\n|\Z)", text, re.S).group(0)
    named = [name for name in re.findall(r"`([\w.]+?)(?:\.py)?`", paragraph) if name in LAYER]
    assert set(named) == set(LAYER), f"code.md's layers paragraph lacks {sorted(set(LAYER) - set(named))}"
    first = {name: named.index(name) for name in LAYER}
    order = sorted(LAYER, key=first.get)
    assert [LAYER[name] for name in order] == sorted(LAYER[name] for name in order), order
