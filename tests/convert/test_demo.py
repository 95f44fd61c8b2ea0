import pytest
from longrope_convert.convert.cli import main


def test_demo_proves_every_artifact_of_one_model(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--workdir", str(tmp_path / "demo"), "--arch", "Phi3ForCausalLM"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    rows = [line for line in out.splitlines() if line.endswith("ok") or " ok (" in line]
    assert sum(line.startswith("transformers") for line in rows) == 5
    assert sum(line.startswith("onnx:") for line in rows) == 5
    assert sum(line.startswith("gguf:") for line in rows) == 4  # its decode case is skipped: the set is per context
    assert "MISMATCH" not in out and "FAIL" not in out
    assert (tmp_path / "demo" / "phi3" / "model-f32.gguf").is_file()


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--workdir", str(tmp_path / "mine")])
    assert exit_info.value.code == 2
    assert "not made by the demo" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
