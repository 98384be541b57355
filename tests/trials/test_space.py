"""Sweep spaces without training: parsing, grid expansion, per-layer keys, variants as an axis, sweep files
and sweep naming (same command = same sweep folder)."""

import pytest

from tunelab.errors import TunelabError
from tunelab.recipes import load_recipe
from tunelab.trials.space import Param, check_space, expand_grid, full_space, parse_param, trial_config
from tunelab.trials.spec import SweepSpec, companion_sweep_file, read_sweep_file, resolve

TINY = ["data.limit=16"]


def test_parse_lists_and_ranges():
    assert parse_param("adapter.rank=[4,8,16]") == Param("adapter.rank", choices=(4, 8, 16))
    assert parse_param("train.lr=[1e-4,3e-4]").choices == (1e-4, 3e-4)
    lr = parse_param("train.lr={low: 1e-5, high: 1e-3, log: true}")
    assert lr.is_range and lr.log and not lr.is_int and (lr.low, lr.high) == (1e-5, 1e-3)
    assert parse_param("train.batch_size={low: 8, high: 64, step: 8}").is_int
    targets = parse_param("adapter.targets=[[query],[query,value]]")
    assert targets.encoded_choices() == ['["query"]', '["query", "value"]']  # Optuna keeps primitives only
    assert targets.decode('["query", "value"]') == ["query", "value"]
    for bad in ("train.lr={low: 1}", "train.lr={low: 2, high: 1}", "adapter.rank=[]", "train.lr={lo: 1, high: 2}"):
        with pytest.raises(TunelabError, match="sweep parameter"):
            parse_param(bad)


def test_grid_expands_every_combination_last_key_fastest():
    points = expand_grid([parse_param("adapter.rank=[4,8,16]"), parse_param("train.lr=[1e-4,3e-4]")])
    assert len(points) == 6
    assert points[:3] == [{"adapter.rank": 4, "train.lr": 1e-4}, {"adapter.rank": 4, "train.lr": 3e-4},
                          {"adapter.rank": 8, "train.lr": 1e-4}]
    with pytest.raises(TunelabError, match="grid search needs lists.*train.lr is a range"):
        expand_grid([parse_param("train.lr={low: 1e-5, high: 1e-3}")])


def test_per_layer_keys_index_the_recipes_layer_rules():
    base = load_recipe("configs/ag_news_budget_search.yaml", TINY)
    config = trial_config(base, {"adapter.layers.1.rank": 64, "adapter.layers.2.alpha": 8,
                                 "adapter.layers.0.exclude": False, "train.lr": 3e-4})
    layers = config.adapter.layers
    assert (layers[1].rank, layers[2].alpha, layers[0].exclude, config.train.lr) == (64, 8, False, 3e-4)
    assert base.adapter.layers[1].rank == 16  # the base is untouched
    with pytest.raises(TunelabError, match="adapter.layers has 3 entries"):
        trial_config(base, {"adapter.layers.7.rank": 4})
    with pytest.raises(TunelabError, match="adapter.rnak"):
        check_space(base, [parse_param("adapter.rnak=[4]")])
    with pytest.raises(TunelabError, match="adapter.rank"):
        check_space(base, [parse_param("adapter.rank=[4,0]")], expand_grid([parse_param("adapter.rank=[4,0]")]))


def test_recipe_variants_become_an_axis():
    base = load_recipe("configs/demo.yaml", TINY)
    params = full_space(base, [parse_param("train.seed=[0,1,2]")])
    assert params[0] == Param("variant", choices=("lora", "dora", "dora_scaled", "ddora"))
    points = expand_grid(params)
    assert len(points) == 12 and points[3] == {"variant": "dora", "train.seed": 0}
    config = trial_config(base, points[3])
    assert config.adapter.variant == "dora" and config.variants == {}


def test_sweep_files_and_the_budget_search_space():
    assert companion_sweep_file("configs/ag_news_budget_search.yaml").name == "ag_news_budget_search.sweep.yaml"
    assert companion_sweep_file("configs/demo.yaml") is None
    raw = read_sweep_file("configs/ag_news_budget_search.sweep.yaml")
    assert raw["search"] == "optuna" and "adapter.layers.1.rank" in raw["space"]
    sweep = resolve(SweepSpec("configs/ag_news_budget_search.yaml", tuple(TINY), root="/tmp/x"))
    assert sweep.search == "optuna" and sweep.spec.trials == 30 and sweep.metric == "accuracy"
    check_space(sweep.base, sweep.params)  # every key of the documented space is a valid recipe key


def test_bad_sweep_file_names_the_key(tmp_path):
    path = tmp_path / "s.sweep.yaml"
    path.write_text("serach: grid\nspace: {adapter.rank: [4]}\n")
    with pytest.raises(TunelabError, match="serach: unknown key"):
        read_sweep_file(path)


def test_same_command_same_sweep_folder_other_space_other_folder(tmp_path):
    def folder(*grid, trials=None, search=None):
        spec = SweepSpec("configs/head_only.yaml", tuple(TINY), tuple(parse_param(g) for g in grid),
                         search=search, trials=trials, root=str(tmp_path))
        return resolve(spec).folder

    assert folder("train.lr=[1e-3,3e-3]") == folder("train.lr=[1e-3,3e-3]")
    assert folder("train.lr=[1e-3,3e-3]") != folder("train.lr=[1e-3,1e-2]")
    assert folder("train.lr=[1e-3,3e-3]", search="optuna", trials=4) == \
        folder("train.lr=[1e-3,3e-3]", search="optuna", trials=8)  # --trials grows the same sweep
    assert folder("train.lr=[1e-3]").parent == tmp_path / "head_only"
    with pytest.raises(TunelabError, match="needs --trials"):
        folder("train.lr=[1e-3]", search="optuna")
