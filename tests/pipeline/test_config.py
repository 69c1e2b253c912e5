"""Config truth: conf/ is the source, params.yaml its exact composition, and every option of
every config group composes and instantiates."""

import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detflow.core.errors import DetflowError
from detflow.data.augment import build_pipeline
from detflow.data.collect import scan_source
from detflow.deploy.quantize import CALIBRATION_METHODS, STATIC_OPS
from detflow.deploy.variants import VARIANTS
from detflow.model.build import build_model, input_sizes
from detflow.model.postprocess import model_kwargs
from detflow.model.postprocess_config import PostprocessOptions
from detflow.train.model_choice import MULTI_LEVEL, SINGLE_LEVEL, candidate

from conftest import REPO, run

sys.path.insert(0, str(REPO / "stages"))
from compose_params import compose as compose_params  # noqa: E402

CONF = REPO / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str], *, resolve: bool = True) -> dict:
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=resolve)


def test_params_yaml_is_the_composition_of_conf(tmp_path):
    composed = tmp_path / "params.yaml"
    compose_params([], composed)
    assert (REPO / "params.yaml").read_text() == composed.read_text(), (
        "params.yaml differs from the composition of conf/: run `make params`"
    )


def test_params_check_fails_when_someone_edits_only_one_side(tmp_path):
    """The check above is not vacuous: a changed conf/ value changes the composition."""
    composed = tmp_path / "params.yaml"
    compose_params(["train.lr=0.123"], composed)
    assert (REPO / "params.yaml").read_text() != composed.read_text()
    assert yaml.safe_load(composed.read_text())["train"]["lr"] == 0.123


def test_required_groups_exist():
    assert {"data", "model", "augment", "optimize", "paths"} <= set(GROUPS)


@pytest.mark.parametrize("option", _options("model"))
def test_every_model_option_builds(option, monkeypatch):
    """Offline: a model config that needs a download fails here (set its weights to none)."""
    import torch.hub

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"model={option} downloads {url}; its yaml must work offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    cfg = _compose([f"model={option}"])
    postprocess = PostprocessOptions.from_config(cfg["postprocess"])
    configs = [cfg["model"]]
    if cfg["model"]["name"] == "auto":  # the train stage picks one of these from the data
        configs = [candidate(cfg["model"], name) for name in (SINGLE_LEVEL, MULTI_LEVEL)]
    for config in configs:
        config = {k: v for k, v in config.items() if k != "tiles"}  # the plan's, not a build arg
        model = build_model(**config, num_classes=2, **model_kwargs(postprocess))
        head = getattr(model, "roi_heads", model)  # two-stage: the RoI heads; one-stage: model
        assert head.score_thresh == cfg["postprocess"]["score_threshold"]
        min_size, max_size = input_sizes(
            config["name"], min_size=config["min_size"], max_size=config["max_size"]
        )  # auto: built at 416 px, the train stage may grow it (detflow.train.auto_model)
        assert model.transform.min_size == (min_size,)
        assert model.transform.max_size == max_size <= 512  # CPU-friendly sizes


@pytest.mark.parametrize("option", _options("augment"))
def test_every_augment_option_builds(option):
    cfg = _compose([f"augment={option}"])["augment"]
    pipeline = build_pipeline(
        transforms=cfg["transforms"], min_visibility=cfg["min_visibility"], min_area=cfg["min_area"]
    )
    assert len(pipeline.transforms) == len(cfg["transforms"])


def _user_data_options() -> set[str]:
    """Options for the user's own data: their ``path`` is ``???`` (required)."""
    return {
        o
        for o in _options("data")
        if yaml.safe_load((CONF / "data" / f"{o}.yaml").read_text())["path"] == "???"
    }


def test_every_user_data_format_has_an_option():
    assert {"yolo", "coco", "voc", "csv", "video", "archive"} <= _user_data_options()


@pytest.mark.parametrize("option", _options("data"))
def test_every_data_option_composes_and_reads(option, tmp_path):
    if option in _user_data_options():  # the user's own dataset: data.path is required
        with pytest.raises(Exception, match="data.path"):
            OmegaConf.to_container(
                OmegaConf.create(_compose([f"data={option}"], resolve=False)), throw_on_missing=True
            )
        overrides = [f"data={option}", f"data.path={tmp_path / 'missing'}"]
        cfg = _compose(overrides, resolve=False)["data"]
        with pytest.raises(DetflowError, match="missing"):  # every key is one the reader takes
            scan_source(cfg)
        return
    cfg = _compose([f"data={option}"] + (["data.num_images=5"] if option == "synthetic" else []))
    scan = scan_source({**cfg["data"], "path": str(REPO / cfg["data"]["path"])})
    assert scan.images and scan.class_names


@pytest.mark.parametrize("option", _options("optimize"))
def test_every_optimize_option_names_known_variants(option):
    cfg = _compose([f"optimize={option}"])["optimize"]
    assert set(cfg["variants"]) <= set(VARIANTS)
    assert "ort_fp32" in cfg["variants"]  # the accuracy budget's reference
    assert cfg["calibration_method"] in CALIBRATION_METHODS
    assert set(cfg["quantize_op_types"]) <= set(STATIC_OPS)
    assert isinstance(cfg["max_map_drop"], float) and cfg["calibration_images"] > 0


def test_paths_are_relative_and_under_the_repo():
    paths = _compose([])["paths"]
    assert all(not Path(p).is_absolute() for p in paths.values())


def test_stage_reports_config_errors_in_one_line(tmp_path):
    result = run(
        [sys.executable, "stages/split.py", "split.train=0.9", f"hydra.run.dir={tmp_path}"],
        REPO,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and "split ratios" in lines[-1] and "sum to" in lines[-1]


def test_stage_reports_a_missing_required_value(tmp_path):
    result = run(
        [sys.executable, "stages/collect.py", "data=yolo", f"hydra.run.dir={tmp_path}"],
        REPO,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "data.path is required" in result.stderr
