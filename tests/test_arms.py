"""The arms are data: a third arm written into a study file (IMGINAV_STUDY_FILE) is planned, given
its runs by the analysis, measured, drawn in its own colour and left out of the two-armed decision,
without a change of code; a bad arm entry is refused naming the file and the key."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT

from imginav_core.errors import ConfigError
from imginav_core.study.analysis import plots
from imginav_core.study.analysis.study import AnalysisSettings, ModelResult, Study
from imginav_core.study.parameters import analysis_parameters
from imginav_core.study.plan import STUDY_FILE_VARIABLE, decision_arms, read_plan_file, study_arms, study_plan

STUDY = ROOT / "configs/phase1_2/study.yaml"
V2_LINE = '  V2: {config: V2_vae_light.yaml, colour: "#e41a1c", page: V2_training}\n'
V3_LINE = '  V3: {config: V3_vae_heavy.yaml, colour: "#4daf4a", page: V3_training}\n'
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
    study = _study_file(tmp_path)
    monkeypatch.setenv(STUDY_FILE_VARIABLE, str(study))
    return study


def test_the_plan_lists_the_third_arms_runs_after_the_others(three_arms):
    done = subprocess.run(
        [sys.executable, "-m", "imginav_core", "plan"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[1] for row in rows] == ["V1"] * 5 + ["V2"] * 5 + ["V3"] * 5
    assert [row[2] for row in rows[10:]] == V3_NAMES and {row[5] for row in rows[10:]} == {"0.001"}
    assert [row[0].strip("| ") for row in rows[10:]] == ["11", "12", "13", "14", "15"]
    assert "The comparison: 15 runs (V1 5, V2 5, V3 5)" in done.stdout
    # the other arms' rows are the default study's, unchanged
    default = study_plan(plan_file=STUDY)
    assert [(r.arm, r.name, r.seed, r.kld) for r in study_plan()[:10]] == [
        (r.arm, r.name, r.seed, r.kld) for r in default
    ]


def test_the_analysis_takes_every_arms_runs_the_third_from_the_plan(three_arms, tmp_path):
    values = analysis_parameters(output_root=str(tmp_path / "outputs"))
    assert list(values["arms"]) == ["V1", "V2", "V3"]
    assert values["arms"]["V3"] == V3_NAMES
    assert values["arms"]["V1"] == values["experiment_v1"] and values["arms"]["V2"] == values["experiment_v2"]
    given = analysis_parameters(output_root=str(tmp_path / "outputs"), experiment_v1="a_seed1")
    assert given["arms"]["V1"] == ["a_seed1"] and given["arms"]["V3"] == V3_NAMES
    with pytest.raises(ConfigError, match="V1 and V3 both name phase1_2_AE_V3_vae_heavy_seed42"):
        analysis_parameters(output_root=str(tmp_path / "outputs"), experiment_v1=V3_NAMES[0])


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
        decision_arms()


@pytest.mark.parametrize(
    "v3_line,message",
    [
        ("  V3: {config: V3_vae_heavy.yaml, page: V3_training}\n", "'arms.V3': missing key 'colour'"),
        (
            '  V3: {config: V3_nowhere.yaml, colour: "#4daf4a", page: V3_training}\n',
            "'arms.V3.config' = 'V3_nowhere.yaml': config file not found",
        ),
        ('  V3: {config: V3_vae_heavy.yaml, colour: "#4daf4a", page: V3_training, kld: 1}\n', "unknown key 'kld'"),
    ],
)
def test_a_bad_arm_entry_is_refused_naming_the_file_and_the_key(tmp_path, v3_line, message):
    study = _study_file(tmp_path, v3_line)
    with pytest.raises(ConfigError) as err:
        read_plan_file(study)
    assert message in str(err.value) and str(study) in str(err.value)
    done = subprocess.run(  # what the launcher runs: the message, no traceback
        [sys.executable, "-m", "imginav_core", "plan"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {STUDY_FILE_VARIABLE: str(study), "OMP_NUM_THREADS": "1"},
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
