import pytest
from pydantic import ValidationError

from tunelab.errors import TunelabError
from tunelab.recipes import apply_overrides, load_recipe, parse_override, validate

BASE = {"data": {"dataset": "ag_news_demo"}}


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_overrides_apply_dotted_keys_with_types(tmp_path):
    path = write(tmp_path, "data: {dataset: ag_news_demo}\ntrain: {lr: 1.0e-3}\n")
    config = load_recipe(path, ["train.lr=3e-4", "adapter.rank=4", "adapter.targets=[query,key]"])
    assert config.train.lr == pytest.approx(3e-4)
    assert config.adapter.rank == 4
    assert config.adapter.targets == ["query", "key"]
    assert config.name == "r"


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(TunelabError) as err:
        validate(apply_overrides(BASE, ["adapter.rnak=4"]))
    message = str(err.value)
    assert "adapter.rnak" in message and "did you mean 'rank'" in message and "\n" not in message


def test_unknown_section_suggests():
    with pytest.raises(TunelabError, match="did you mean 'train'"):
        validate(apply_overrides(BASE, ["trian.lr=1"]))


def test_wrong_type_names_the_key():
    with pytest.raises(TunelabError, match=r"train\.lr: .*valid number"):
        validate(apply_overrides(BASE, ["train.lr=fast"]))


def test_out_of_range_value_names_the_key():
    with pytest.raises(TunelabError, match=r"adapter\.rank: .*greater than or equal to 1"):
        validate(apply_overrides(BASE, ["adapter.rank=0"]))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(TunelabError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "data:\n  dataset: [unclosed\n")
    with pytest.raises(TunelabError, match="invalid YAML"):
        load_recipe(path)


def test_data_source_required():
    with pytest.raises(TunelabError, match="data.dataset"):
        validate({"data": {}})


def test_config_is_frozen():
    config = validate(BASE)
    with pytest.raises(ValidationError):
        config.train.lr = 1.0  # type: ignore[misc]


def test_override_syntax_error():
    with pytest.raises(TunelabError, match="key.sub=value"):
        parse_override("train.lr")


def test_shipped_recipes_validate():
    from pathlib import Path

    recipes = [p for p in sorted(Path("configs").glob("*.yaml")) if not p.name.endswith(".sweep.yaml")]
    assert len(recipes) >= 10
    for path in recipes:
        config = load_recipe(path)
        assert config.name == path.stem
