"""dvc.yaml lists, per stage, exactly the code its script runs (tests/stage_deps.py): a
missing module would leave results stale after a change; an extra one reruns a stage for
nothing."""

import pytest
import yaml

from stage_deps import REPO, STAGES, expected_code_deps, library_closure, smallest_cover

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGE_NAMES = list(DVC_YAML["stages"])


def code_deps(stage: str) -> list[str]:
    deps = DVC_YAML["stages"][stage]["deps"]
    return [d for d in deps if d.startswith(("stages/", "src/"))]


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_stage_deps_are_its_import_closure(stage):
    expected = expected_code_deps(stage)
    listed = code_deps(stage)
    missing = sorted(set(expected) - set(listed))
    extra = sorted(set(listed) - set(expected))
    block = "\n".join(f"      - {path}" for path in expected)
    assert not missing and not extra, (
        f"dvc.yaml stage {stage}: missing {missing}, not imported {extra}; its code deps "
        f"should be (python tests/stage_deps.py {stage}):\n{block}"
    )


def test_every_stage_script_is_a_dvc_stage():
    scripts = {p.stem for p in STAGES.glob("*.py") if not p.stem.startswith("_")}
    assert scripts - {"compose_params"} == set(STAGE_NAMES)


def test_closure_follows_imports_of_imports():
    """export's script imports deploy.export, which imports the ONNX detector and, through it,
    the NumPy post-processing: all three are in its closure; the predict CLI is not."""
    closure = library_closure(STAGES / "export.py")
    assert {"detflow.deploy.export", "detflow.deploy.onnx_detector"} <= closure
    assert "detflow.deploy.onnx_postprocess" in closure
    assert "detflow.deploy.predict" not in closure and "detflow.train.loop" not in closure
    assert {"detflow", "detflow.deploy"} <= closure  # package __init__s run too


def test_a_folder_stands_for_its_files_only_when_all_are_needed():
    folder = REPO / "src/detflow/data/formats"
    every = {p for p in folder.glob("*.py")}
    assert smallest_cover(every) == ["src/detflow/data/formats"]
    some = set(sorted(every)[:2])
    assert smallest_cover(some) == sorted(str(p.relative_to(REPO)) for p in some)


# the stages that may read split/test.json: evaluate (the held-out figures) and optimize (its
# report beside the val decision, tests/deploy/test_optimize.py shows it ignores them); train's
# deps are checked once it no longer reads test.json (issue 39, the train stage's part)
READS_TEST = {"evaluate", "optimize"}  # evaluate reports on test; optimize only reports it


@pytest.mark.parametrize("stage", sorted(set(STAGE_NAMES) - READS_TEST))
def test_no_other_stage_depends_on_the_test_split(stage):
    deps = [d.split()[0] for d in DVC_YAML["stages"][stage].get("deps", [])]
    assert "${paths.split}" not in deps and "${paths.split}/test.json" not in deps, deps
    script = (REPO / "stages" / f"{stage}.py").read_text()
    assert "test.json" not in script, stage
