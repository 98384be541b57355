"""`tunelab export` through the one entry point: files written, one-line errors with exit 2."""

from __future__ import annotations

import pytest

from tunelab.cli import build_parser, main

from .tiny_bpe import byte_bpe_tokenizer, random_llama
from .tiny_runs import sft_run

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def test_export_verb_writes_each_format(tmp_path, capsys):
    tokenizer = byte_bpe_tokenizer()
    run_dir = sft_run(tmp_path, "lora", model=random_llama(len(tokenizer), tied=True), tokenizer=tokenizer)
    outputs = {"--peft": tmp_path / "peft", "--merged": tmp_path / "merged", "--gguf": tmp_path / "m.gguf"}
    capsys.readouterr()
    for flag, out in outputs.items():
        assert main(["export", str(run_dir), flag, str(out)]) == 0
        printed = capsys.readouterr()
        assert printed.out.strip().endswith(str(out)) and printed.out.count("\n") == 1
    assert (outputs["--peft"] / "adapter_config.json").is_file()
    assert (outputs["--merged"] / "model.safetensors").is_file()
    assert outputs["--gguf"].read_bytes()[:4] == b"GGUF"


def test_refusal_is_one_line_exit_2(tmp_path, capsys):
    run_dir = sft_run(tmp_path, "ddora")
    capsys.readouterr()  # drop the save bars of building the run
    assert main(["export", str(run_dir), "--peft", str(tmp_path / "peft")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunelab: error:") and "ddora" in err and err.strip().count("\n") == 0
    assert main(["export", str(tmp_path / "nowhere"), "--merged", str(tmp_path / "m")]) == 2
    assert "not a finished tunelab run" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["export", "run"], ["export", "run", "--peft", "a", "--merged", "b"]])
def test_exactly_one_format(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "--peft" in capsys.readouterr().err
