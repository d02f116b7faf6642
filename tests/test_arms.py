"""The arms are data: a third arm written into a study file (`plan --study FILE`) is planned, gets
its job script, its report chapter and its legend, is given its runs by the analysis, measured,
drawn in its own colour and left out of the two-armed decision, without a change of code; a bad
arm entry is refused naming the file and the key."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT

from imginav_core.errors import ConfigError
from imginav_core.study import arms as study_file
from imginav_core.study.analysis import plots
from imginav_core.study.analysis.evaluation import ModelResult, Study
from imginav_core.study.analysis.settings import AnalysisSettings
from imginav_core.study.arms import decision_arms, read_study_file, study_arms
from imginav_core.study.jobscripts import job_scripts
from imginav_core.study.plan import make_plan, read_plan, write_plan

STUDY = ROOT / "configs/phase1_2/study.yaml"
V2_LINE = '  V2: {config: V2_vae_light.yaml, colour: "#e41a1c", page: V2_training, queue: gpul40s}\n'
V3_LINE = '  V3: {config: V3_vae_heavy.yaml, colour: "#4daf4a", page: V3_training, queue: gpua100}\n'
V3_CONFIG = "inherit: common.yaml\nname: phase1_2_AE_V3_vae_heavy\nmodel:\n  variational: true\nloss:\n  kld: 1.0e-3\n"
V3_NAMES = [f"phase1_2_AE_V3_vae_heavy_seed{seed}" for seed in (42, 43, 44, 45, 46)]


def _study_file(tmp_path, v3_line: str = V3_LINE):
    """A copy of the study's configs with a third arm, V3 (a VAE with KL weight 1e-3), after V2."""
    folder = tmp_path / "configs" / "phase1_2"
    folder.mkdir(parents=True)
    for name in ("V1_deterministic.yaml", "V2_vae_light.yaml", "common.yaml"):
        (folder / name).write_text((STUDY.parent / name).read_text())
    (folder.parent / "phase1_1_architecture.yaml").write_text((ROOT / "configs/phase1_1_architecture.yaml").read_text())
    (folder / "V3_vae_heavy.yaml").write_text(V3_CONFIG)
    text = STUDY.read_text()
    assert V2_LINE in text  # the default study file's V2 entry, after which V3 goes
    study = folder / "study.yaml"
    study.write_text(text.replace(V2_LINE, V2_LINE + v3_line))
    return study


@pytest.fixture
def three_arms(tmp_path, monkeypatch):
    """A study file with V3; the process's active study (as reading a plan of it makes it)."""
    study = _study_file(tmp_path)
    monkeypatch.setattr(study_file, "_active", read_study_file(study))
    return study


def test_the_plan_lists_the_third_arms_runs_after_the_others(three_arms, tmp_path):
    root = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "imginav_core", "plan", "--out", str(root), "--study", str(three_arms)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[1] for row in rows] == ["V1"] * 5 + ["V2"] * 5 + ["V3"] * 5
    assert [row[2] for row in rows[10:]] == V3_NAMES and {row[4] for row in rows[10:]} == {"0.001"}
    assert [row[0].strip("| ") for row in rows[10:]] == ["11", "12", "13", "14", "15"]
    assert "The comparison: 15 runs (V1 5, V2 5, V3 5)" in done.stdout
    # the other arms' rows are the default study's, unchanged
    default = make_plan(tmp_path / "default")
    assert [(r.arm, r.name, r.seed, r.kld) for r in read_plan(root).runs[:10]] == [
        (r.arm, r.name, r.seed, r.kld) for r in default.runs
    ]
    arrays = subprocess.run(
        [sys.executable, "-m", "imginav_core", "plan", "--arrays", "--out", str(root)], capture_output=True, text=True
    )
    assert arrays.stdout.splitlines() == ["V1 1-5 gpuv100", "V2 6-10 gpul40s", "V3 11-15 gpua100"]


def test_the_third_arm_gets_its_job_script_and_its_report_chapter(three_arms, tmp_path):
    scripts = job_scripts(read_study_file(three_arms))
    v3 = scripts[ROOT / "hpc" / "papermill_V3.sh"]
    assert "#BSUB -J phase1_2_V3\n#BSUB -q gpua100\n" in v3 and v3.rstrip().endswith("job train --arm V3")
    assert "VAE, KL weight 0.001" in v3
    assert '#BSUB -J "phase1_2[1-15]"' in scripts[ROOT / "hpc" / "phase1_2_array.sh"]
    from imginav_core.study.analysis.report import chapter_title, stage

    plan = make_plan(tmp_path / "out", three_arms, seeds=[1])
    assert chapter_title(plan, "V3") == "V3 training (VAE, KL weight 0.001): phase1_2_AE_V3_vae_heavy_seed1"
    out = plan.outputs
    for run in plan.runs:  # each run's executed notebook, as the jobs leave them
        out.executed_notebook(run.name).parent.mkdir(parents=True, exist_ok=True)
        out.executed_notebook(run.name).write_text((ROOT / "notebooks/train.ipynb").read_text())
    for notebook in (out.probe_notebook, out.analysis_notebook):
        notebook.write_text((ROOT / "notebooks/analysis.ipynb").read_text())
    book = tmp_path / "book"
    (book / "_static" / "html-manager").mkdir(parents=True)
    (book / "_static" / "html-manager" / "embed.js").write_text("//")
    staged = stage(plan, book)
    assert (
        sorted(p.name for p in (book / "generated" / "arms").iterdir())
        == [
            "V1_training.ipynb",
            "V2_training.ipynb",
            "V3_training.ipynb",
        ]
        and len(staged) == 5
    )
    heading = (book / "generated/arms/V3_training.ipynb").read_text()
    assert "# V3 training (VAE, KL weight 0.001): phase1_2_AE_V3_vae_heavy_seed1" in heading
    toc = (ROOT / "book/_toc.yml").read_text()
    assert "glob: generated/arms/*" in toc  # every staged arm is a chapter: no per-arm line to add


def test_the_analysis_takes_every_arms_runs_the_third_from_the_plan(three_arms, tmp_path):
    from imginav_core.study.notebooks import analysis_inputs

    root = tmp_path / "out"
    write_plan(make_plan(root, three_arms, seeds=[1]), log=lambda _: None)
    plan = read_plan(root)
    assert [plan.arm_names(label) for label in plan.study.arms] == [
        ["phase1_2_AE_V1_deterministic_seed1"],
        ["phase1_2_AE_V2_vae_light_seed1"],
        ["phase1_2_AE_V3_vae_heavy_seed1"],
    ]
    with pytest.raises(Exception, match="no metrics for experiment 'phase1_2_AE_V1_deterministic_seed1'"):
        analysis_inputs(str(root))  # the plan's runs, V3's among them, are what it loads


def _result(label: str, seed: int, sigmas=(0.1, 0.5, 1.0)) -> ModelResult:
    """A measured run with the latent-noise numbers the figure draws."""
    change = np.array(sigmas) * {"V1": 1.0, "V2": 0.5, "V3": 0.25}[label] * (1 + seed % 2 / 10)
    metrics = {"noise": {"sigmas": list(sigmas), "decoded_change": change.tolist(), "relative_change": change.tolist()}}
    return ModelResult(f"{label}_seed{seed}", label, seed, label != "V1", metrics, {}, None, {})


def _study(models: list[ModelResult]) -> Study:
    return Study(
        AnalysisSettings(),
        SimpleNamespace(),
        np.arange(4),
        np.zeros(4),
        np.zeros(4),
        [],
        np.arange(0),
        None,
        {},
        models,
        [],
    )


def test_the_figures_draw_three_arms_each_in_its_study_file_colour(three_arms):
    # measured out of order: the figures take the arms in the study file's order
    study = _study([_result(label, seed) for label in ("V3", "V1", "V2") for seed in (43, 42)])
    assert study.labels == ["V1", "V2", "V3"]
    assert [r.name for r in study.arm("V3")] == ["V3_seed42", "V3_seed43"]
    fig = plots.noise_robustness(study)
    legend = fig.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [f"{a} (mean of 2 seeds)" for a in ("V1", "V2", "V3")]
    colours = [handle.get_color() for handle in legend.legend_handles]
    assert colours == [arm.colour for arm in study_arms().values()] and len(set(colours)) == 3
    assert colours[2] == "#4daf4a"  # V3's, as its entry gives it
    plots.plt.close(fig)


def test_the_decision_stays_between_the_two_arms_it_names(three_arms):
    assert decision_arms() == ("V1", "V2") and list(study_arms()) == ["V1", "V2", "V3"]
    text = three_arms.read_text().replace("decision: [V1, V2]", "decision: [V1, V2, V3]")
    three_arms.write_text(text)
    with pytest.raises(ConfigError, match=r"'decision' = \['V1', 'V2', 'V3'\]: expected the two arms"):
        read_study_file(three_arms)


@pytest.mark.parametrize(
    "v3_line,message",
    [
        ("  V3: {config: V3_vae_heavy.yaml, page: V3_training}\n", "'arms.V3' = {'config'"),
        (
            '  V3: {config: V3_nowhere.yaml, colour: "#4daf4a", page: V3_training, queue: q}\n',
            "'arms.V3.config' = 'V3_nowhere.yaml': config file not found",
        ),
        ('  V3: {config: V3_vae_heavy.yaml, colour: "#4daf4a", page: V3_training, kld: 1}\n', "expected the keys"),
    ],
)
def test_a_bad_arm_entry_is_refused_naming_the_file_and_the_key(tmp_path, v3_line, message):
    study = _study_file(tmp_path, v3_line)
    with pytest.raises(ConfigError) as err:
        read_study_file(study)
    assert message in str(err.value) and str(study) in str(err.value)
    done = subprocess.run(  # what the launcher runs: the message, no traceback
        [sys.executable, "-m", "imginav_core", "plan", "--dry-run", "--study", str(study)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_third_arm_measured_beside_the_decided_two_changes_nothing_of_the_decision(three_arms, monkeypatch):
    import test_decision
    from test_decision import IMAGES, SEEDS, _arm, _probe, _runs, _study

    from imginav_core.study.analysis.criteria import Rule
    from imginav_core.study.analysis.decision import decide

    monkeypatch.setitem(test_decision.NAMES, "V3", "phase1_2_AE_V3_vae_heavy")

    def decision(with_v3: bool):
        rng = np.random.default_rng(0)
        shared = 0.3 * rng.normal(size=IMAGES)
        v1, v2 = _arm("V1", SEEDS, rng, shared), _arm("V2", SEEDS, rng, shared, mse=0.0005)
        # V3 far better on every measure: were it compared, the criteria would move
        v3 = _arm("V3", SEEDS, rng, shared, mse=1e-6, purity=0.99) if with_v3 else []
        probe = _probe(v1_fld=(30.0, 32.0, 31.0), v2_fld=(20.0, 21.0, 19.0))
        runs = _runs(SEEDS) | ({"V3": _runs(SEEDS)["V2"]} if with_v3 else {})
        return decide(_study(v1, v2 + v3), runs, train_images=22000, probe=probe, rule=Rule(resamples=200))

    alone, beside = decision(False), decision(True)
    assert beside.arms == alone.arms and list(beside.arms) == ["V1", "V2"]
    assert (beside.choice, beside.verdict, beside.criteria) == (alone.choice, alone.verdict, alone.criteria)
    assert beside.choice == "variational"  # the case decides: a comparison that moved would show
