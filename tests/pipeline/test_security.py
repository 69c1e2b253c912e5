"""Safe loading: no unsafe deserialisation in the code, `_target_` only from the project's
own packages (checked by every stage before it runs), no `eval` resolver."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from detflow.core.errors import ConfigError
from detflow.pipeline.config_safety import check_targets

from conftest import REPO, run

SOURCES = sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "stages").glob("*.py"))
UNSAFE = {
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only=True)"),
    "yaml.load / unsafe_load / full_load": re.compile(r"yaml\.(load|unsafe_load|full_load)\("),
    "pickle": re.compile(r"^\s*(import pickle|from pickle|import dill|import cloudpickle)", re.M),
    "XML parsed without defusedxml": re.compile(
        r"from xml\.etree\.ElementTree import .*\b(parse|fromstring|XMLParser)\b|"
        r"xml\.etree\.ElementTree\.(parse|fromstring)|xml\.dom\.minidom|xml\.sax"
    ),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\("),
    "tarfile/zipfile extractall": re.compile(r"\.extractall\(|\.extract\("),
}


@pytest.mark.parametrize("rule", list(UNSAFE))
def test_no_unsafe_loading_in_the_code(rule):
    found = [
        f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in SOURCES
        for text in [path.read_text()]
        for m in UNSAFE[rule].finditer(text)
    ]
    assert found == [], f"{rule}: {found}"


def test_the_rules_catch_what_they_are_for():
    assert UNSAFE["torch.load without weights_only=True"].search("torch.load(path)")
    assert not UNSAFE["torch.load without weights_only=True"].search(
        "torch.load(p, map_location=d, weights_only=True)"
    )
    assert UNSAFE["eval/exec"].search("x = eval(text)")
    assert not UNSAFE["eval/exec"].search("model.eval()")


@pytest.mark.parametrize(
    "target",
    ["os.system", "subprocess.Popen", "builtins.eval", "detflowx.evil", "detflow", 3, ""],
)
def test_targets_outside_the_project_packages_are_refused(target):
    with pytest.raises(ConfigError, match=r"_target_=.* is not allowed"):
        check_targets({"augment": {"transforms": [{"name": "Blur", "_target_": target}]}})


def test_targets_inside_the_project_packages_pass():
    check_targets(
        {
            "a": {"_target_": "detflow.model.build.build_model"},
            "b": [{"_target_": "torchvision.ops.nms"}, {"_target_": "albumentations.Blur"}],
        }
    )


JOB_CONFIGS = [p for p in sorted((REPO / "conf").rglob("*.yaml")) if "hydra" not in p.parts]


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_the_project_configs_name_no_foreign_target(path):
    """What the stages get (conf/hydra/ and the `hydra:` node configure Hydra itself)."""
    config = yaml.safe_load(path.read_text()) or {}
    check_targets({k: v for k, v in config.items() if k != "hydra"})


def test_a_stage_refuses_a_foreign_target_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    result = run(
        [
            sys.executable,
            "stages/split.py",
            f"+split.hook={{_target_: os.system, _args_: ['touch {marker}']}}",
            f"hydra.run.dir={tmp_path}",
        ],
        REPO,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines == [lines[-1]] and "split.hook._target_='os.system' is not allowed" in lines[0]
    assert not marker.exists() and not (tmp_path / "data").exists()


def test_no_eval_resolver_is_registered():
    sys.path.insert(0, str(REPO / "stages"))
    try:
        import _app  # noqa: F401 - registers whatever the stages register
    finally:
        sys.path.remove(str(REPO / "stages"))
    for name in ("eval", "python", "exec"):
        assert not OmegaConf.has_resolver(name), name


def test_dvc_remote_credentials_stay_out_of_git():
    ignored = (REPO / ".dvc" / ".gitignore").read_text().split()
    assert "/config.local" in ignored
    assert not re.search(
        r"(secret|password|access_key|token)\s*=", (REPO / ".dvc/config").read_text()
    )
    assert "dvc remote modify --local" in Path(REPO / "docs" / "reliability.md").read_text()
