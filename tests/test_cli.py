import subprocess
import sys


def tunelab(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tunelab", *args], capture_output=True, text=True, timeout=timeout)


def test_models_lists_offline_aliases():
    result = tunelab("models")
    assert result.returncode == 0
    assert "minilm" in result.stdout + result.stderr and "smollm2-135m" in result.stdout + result.stderr


def test_data_lists_vendored_sets():
    result = tunelab("data")
    assert result.returncode == 0 and "ag_news_demo" in result.stdout + result.stderr


def test_missing_recipe_file_is_one_line_exit_2():
    result = tunelab("run", "configs/nope.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == "tunelab: error: recipe file not found: configs/nope.yaml"


def test_missing_data_file_names_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{train: {tmp_path / 'missing.csv'}}}\noutput_dir: {tmp_path}\n")
    result = tunelab("run", str(recipe))
    assert result.returncode == 2
    assert "data.train: file not found" in result.stderr and "Traceback" not in result.stderr


def test_budget_prints_breakdown():
    result = tunelab("budget", "configs/demo.yaml", timeout=300)
    assert result.returncode == 0, result.stderr
    for word in ("lora", "ddora", "adapters", "head", "trainable"):
        assert word in result.stdout
