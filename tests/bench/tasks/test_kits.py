"""A task reaches a model family's own models only through the kit the family registered for it."""

from __future__ import annotations

import pytest

from bench.runner.cli import main as cli_main
from bench.tasks import kits
from bench.tasks.kits import kit_for, register_kit
from bench.zoo.cascade import ZooCascade
from bench.zoo.editing import ZooEditing
from scripts import make_tiny_pipeline


def test_the_zoo_ships_kits_for_inpainting_and_the_cascade():
    assert isinstance(kit_for("inpaint", "emoji", "x"), ZooEditing)
    assert isinstance(kit_for("cascade", "/some/zoo/folder", "x"), ZooCascade)  # a directory is a zoo spec


def test_a_model_without_a_kit_is_refused_in_one_line_naming_those_that_have_one():
    with pytest.raises(ValueError, match=r"^--task inpaint needs an inpainting model, which --model diffusers:/m "
                                         r"\(.*\) does not ship; model sources with one: the zoo \(no prefix\)$"):
        kit_for("inpaint", "diffusers:/m", "an inpainting model")


def test_a_family_registers_its_kit_under_its_source_prefix(monkeypatch):
    monkeypatch.setattr(kits, "KITS", dict(kits.KITS))
    mine = object()
    register_kit("inpaint", "diffusers:", mine)
    assert kit_for("inpaint", "diffusers:/m", "x") is mine
    register_kit("inpaint", "diffusers:", mine)  # the same kit again (a module imported twice) is fine
    with pytest.raises(ValueError, match="registered twice"):
        register_kit("inpaint", "diffusers:", object())


@pytest.mark.parametrize("task", ["inpaint", "cascade"])
def test_a_pipeline_folder_is_refused_before_the_run_directory_is_made(task, tmp_path, capsys):
    folder = tmp_path / "tiny-sd"
    assert make_tiny_pipeline.main([str(folder), "--family", "sd"]) == 0
    capsys.readouterr()  # the builder's own output
    out = tmp_path / "out"
    assert cli_main(["run", "--task", task, "--model", f"diffusers:{folder}", "--preset", "tiny", "--out", str(out),
                     "--run-id", "r"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --task {task} needs") and "model sources with one: the zoo" in err, err
    assert not (out / "r").exists()
