"""Bad input through every entry point: exit code 2, one line on stderr naming the flag, no traceback, and
nothing sampled when the error was knowable before sampling.

The corpus of bad files is generated here, in a temporary folder (no committed binaries). The entry points
run in-process (their main(argv)), which keeps the suite fast; the lock, which is about two processes, is
tested with subprocesses in tests/bench/runner/test_lock.py.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from bench.runner import cli

from bench.tools import perf

from bench.tools import regress

from bench.report import html as report
from guidance.sources.tiny import save_pipeline

BAD_INPUT = 2


def png(path: Path, size: int = 8, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims width x height (a decompression bomb): a few bytes on disk, never decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    data = zlib.compress(b"\0" * (width + 1) * 16)  # the first rows only
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def nested_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every bad file the cases below name, written once."""
    root = tmp_path_factory.mktemp("corpus")
    png(root / "one" / "a.png")
    png(root / "truncated" / "a.png")
    good = png(root / "truncated" / "b.png", 64, 7)
    (root / "truncated" / "b.png").write_bytes(good.read_bytes()[:60])
    png(root / "textpng" / "a.png")
    (root / "textpng" / "b.png").write_text("not an image")
    png(root / "bomb" / "a.png")
    bomb_png(root / "bomb" / "b.png")
    images = root / "coco_images"
    png(images / "a.png")
    png(images / "b.png", value=9)
    (root / "coco_list.json").write_text("[]")
    (root / "coco_broken.json").write_text('{"images": [')
    (root / "coco_nested.json").write_text(nested_json())
    (root / "coco_absolute.json").write_text(json.dumps({"images": [{"id": 1, "file_name": str(images / "a.png")},
                                                                    {"id": 2, "file_name": "../coco_list.json"}]}))
    (root / "coco_names.json").write_text(json.dumps({"images": [{"id": 1, "file_name": 5}]}))
    save_file({"weights": torch.zeros(2, 2)}, str(root / "neither.safetensors"))
    save_file({"features": torch.zeros(1, 8)}, str(root / "one_row.safetensors"))
    (root / "text.safetensors").write_text("not safetensors")
    (root / "prompts_nested.json").write_text(nested_json())
    (root / "prompts_nested.jsonl").write_text(nested_json() + "\n")
    (root / "prompts_badutf8.txt").write_bytes(b"a cat\n\xff\xfe\n")
    (root / "prompts_empty.txt").write_text("")
    (root / "a_file").write_text("x")
    bomb_png(root / "mask_bomb.png")
    (root / "mask_text.png").write_text("not an image")
    png(root / "mask_big.png", 64)
    return root


def call(main: Callable, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run an entry point's main in-process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, out: str, err: str, flag: str, run_root: Path | None = None) -> None:
    assert code == BAD_INPUT, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert flag in lines[0], (flag, lines[0])
    assert "Traceback" not in out + err
    if run_root is not None:  # nothing sampled: no run directory holds a sample
        assert not [p for p in run_root.rglob("*") if p.suffix in (".npz", ".png")], list(run_root.rglob("*"))


# (argv after `run`, the flag the line must name); {c} is the corpus folder
RUN_CASES = [
    (["--reference", "{c}/one"], "--reference"),
    (["--reference", "{c}/truncated"], "--reference"),
    (["--reference", "{c}/textpng"], "--reference"),
    (["--reference", "{c}/bomb"], "--reference"),
    (["--reference", "{c}/coco_list.json", "--reference-images", "{c}/coco_images"], "--reference"),
    (["--reference", "{c}/coco_broken.json", "--reference-images", "{c}/coco_images"], "--reference {c}/coco_broken.json"),
    (["--reference", "{c}/coco_nested.json", "--reference-images", "{c}/coco_images"], "--reference"),
    (["--reference", "{c}/coco_absolute.json", "--reference-images", "{c}/coco_images"], "--reference-images"),
    (["--reference", "{c}/coco_names.json", "--reference-images", "{c}/coco_images"], "--reference"),
    (["--reference", "{c}/neither.safetensors"], "--reference"),
    (["--reference", "{c}/one_row.safetensors"], "--reference"),
    (["--reference", "{c}/text.safetensors"], "--reference"),
    (["--reference-images", "{c}/coco_images"], "--reference-images"),
    (["--prompts", "{c}/prompts_nested.json"], "--prompts"),
    (["--prompts", "{c}/prompts_nested.jsonl"], "--prompts"),
    (["--prompts", "{c}/prompts_badutf8.txt"], "--prompts"),
    (["--prompts", "{c}/prompts_empty.txt"], "--prompts"),
    (["--seeds", ""], "--seeds"),
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", str(2**64)], "--seeds"),
    (["--seeds", f"0,{2**63}"], "--seeds"),
    (["--scales", ""], "--scales"),
    (["--scales", "nan"], "--scales"),
    (["--scales", "cfg=inf"], "--scales"),
    (["--eta", "nan"], "--eta"),
    (["--steps", "x"], "--steps"),
    (["--mask-file", "{c}/mask_text.png"], "--mask-file"),
    (["--upsampler-scale", "nan"], "--upsampler-scale"),
    (["--upsample-aug", "100000"], "--upsample-aug"),
    (["--negative-prompt", "bad \udcff bytes"], "--negative-prompt"),
    (["--negative-prompt", "nul \x00 byte"], "--negative-prompt"),
    (["--run-id", "a\nb"], "--run-id"),
    (["--run-id", "a\\b"], "--run-id"),
    (["--run-id", "-x"], "--run-id"),
    (["--out", "{c}/a_file"], "--out"),
    (["--out", "{c}/a_file/below"], "--out"),
    (["--prompt-limit", "1", "--metrics", "fid"], "--prompt-limit"),
    (["--metrics", "clip_score,hpsv2"], "--metrics hpsv2"),  # real images only: refused on the zoo
]


def fill(argv: list[str], corpus: Path) -> list[str]:
    return [a.replace("{c}", str(corpus)) for a in argv]


@pytest.mark.parametrize("argv, flag", RUN_CASES, ids=[" ".join(a)[:60] for a, _ in RUN_CASES])
def test_run_refuses_bad_input_before_sampling(argv, flag, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["run", "--preset", "tiny", "--guidance", "cfg", "--scales", "3", "--no-report", "--out", str(out)]
    argv = fill(argv, corpus)
    if "--out" in argv:
        base = base[:-2]
    code, stdout, err = call(cli.main, base + argv, capsys)
    assert_refused(code, stdout, err, fill([flag], corpus)[0], tmp_path)


def broken_pipeline(pipeline: Path, tmp_path: Path, damage: str) -> Path:
    """A copy of the tiny SD pipeline with one kind of damage."""
    import shutil

    root = tmp_path / "pipe"
    shutil.copytree(pipeline, root)
    unet_weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "index-list":
        (root / "model_index.json").write_text("[]")
    elif damage == "unet-entry":
        index = json.loads((root / "model_index.json").read_text())
        (root / "model_index.json").write_text(json.dumps({**index, "unet": []}))
    elif damage.startswith("scheduler"):
        text = {"scheduler": '{"_class_name": ', "scheduler-list": "[]", "scheduler-nested": nested_json(),
                "scheduler-class": '{"_class_name": "os.system"}'}[damage]
        (root / "scheduler" / "scheduler_config.json").write_text(text)
    elif damage == "truncated":
        unet_weights.write_bytes(unet_weights.read_bytes()[:1000])
    elif damage == "not-safetensors":
        unet_weights.write_text("not safetensors at all")
    elif damage == "bin-only":
        (root / "text_encoder" / "model.safetensors").rename(root / "text_encoder" / "pytorch_model.bin")
    elif damage == "empty-tokenizer":
        shutil.rmtree(root / "tokenizer")
        (root / "tokenizer").mkdir()
    elif damage == "wrong-network":
        shutil.copy(root / "vae" / "diffusion_pytorch_model.safetensors", unet_weights)
    elif damage in ("size-huge", "size-negative"):
        config = json.loads((root / "unet" / "config.json").read_text())
        config["sample_size"] = 100000 if damage == "size-huge" else -8
        (root / "unet" / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="session")
def sd_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("sd"), "sd", guiding_clip=False)


DAMAGE = ["index-list", "unet-entry", "scheduler", "scheduler-list", "scheduler-nested", "scheduler-class", "truncated", "not-safetensors", "bin-only", "empty-tokenizer",
          "wrong-network", "size-huge", "size-negative"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_run_refuses_a_damaged_diffusers_folder_before_loading(damage, sd_pipeline, tmp_path, capsys):
    root = broken_pipeline(sd_pipeline, tmp_path, damage)
    out = tmp_path / "out"
    code, stdout, err = call(cli.main, ["run", "--model", f"diffusers:{root}", "--sampler", "ddim", "--preset", "tiny",
                                        "--guidance", "cfg", "--scales", "3", "--metrics", "clip_score",
                                        "--out", str(out), "--no-report"], capsys)
    assert_refused(code, stdout, err, "--model", tmp_path)
    assert not out.exists()  # refused before a run directory was made


REPORT_CASES = [(["{c}/missing"], "{c}/missing"), (["{c}/a_file"], "{c}/a_file"), (["{c}/one"], "{c}/one")]


@pytest.mark.parametrize("argv, flag", REPORT_CASES)
@pytest.mark.parametrize("entry", ["bench report", "bench.report.html"])
def test_report_refuses_what_is_not_a_run(entry, argv, flag, corpus, capsys):
    main, head = (cli.main, ["report"]) if entry == "bench report" else (report.main, [])
    code, out, err = call(main, head + fill(argv, corpus), capsys)
    assert_refused(code, out, err, fill([flag], corpus)[0])


def merge_dir(tmp_path: Path, config: str | None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    if config is not None:
        (run / "config.json").write_text(config)
    return run


MERGE_CASES = [(None, "no config.json"), ("{", "not valid JSON"), ("[1]", "(not an object)"),
               ('{"seeds": NaN, "guidance": ["cfg"]}', "NaN"), (nested_json(), "not valid JSON"),
               ('{"oops": 1}', "keys this version does not know"), ('{"seeds": "0"}', "seeds"),
               ('{"scales": {"cfg": [1, "x"]}}', "scales"), ('{"steps": 2.5}', "steps")]


@pytest.mark.parametrize("config, message", MERGE_CASES, ids=[m for _, m in MERGE_CASES])
def test_merge_refuses_what_is_not_a_mergeable_run(config, message, tmp_path, capsys):
    run = merge_dir(tmp_path, config)
    code, out, err = call(cli.main, ["merge", str(run), "--no-report"], capsys)
    assert_refused(code, out, err, str(run))
    assert message in err


REGRESS_CASES = [("{", "not valid JSON"), ("[]", 'no "cells"'), ('{"config": {}}', 'no "cells"'),
                 ('{"cells": {}}', 'no "cells"'), (nested_json(), "not valid JSON"),
                 ('{"cells": {"cfg@3": {"fid": {"baseline": "x"}}}}', "finite"),
                 ('{"cells": {"cfg@3": {"fid": {"baseline": NaN, "tolerance": 1, "higher_is_better": false}}}}', "finite")]


@pytest.mark.parametrize("baseline, message", REGRESS_CASES, ids=[m for _, m in REGRESS_CASES])
def test_regress_refuses_a_malformed_baseline_before_the_gate_runs(baseline, message, tmp_path, capsys, monkeypatch):
    path = tmp_path / "baseline.json"
    path.write_text(baseline)
    monkeypatch.setattr(regress, "BASELINE", path)
    monkeypatch.setattr(regress, "measure", lambda seeds: pytest.fail("the gate ran on a malformed baseline"))
    code, out, err = call(regress.main, [], capsys)
    assert_refused(code, out, err, str(path))
    assert message in err


INPAINT_CASES = [(["--mask-file", "{c}/mask_bomb.png"], "--mask-file"), (["--mask-file", "{c}/mask_text.png"], "--mask-file"),
                 (["--mask-file", "{c}/mask_big.png"], "mask file"), (["--mask-file", "{c}/missing.png"], "--mask-file"),
                 (["--repaint", "5"], "--repaint"), (["--masks", "circle"], "--masks"),
                 (["--inpaint-methods", ""], "--inpaint-methods"), (["--prompts", "emoji-all"], "--prompts"),
                 (["--reference", "{c}/one"], "--reference"),
                 (["--upsample-aug", "3"], "--upsample-aug"), (["--seeds", "-5"], "--seeds"),
                 (["--inpaint-model", "{c}/text.safetensors", "--inpaint-methods", "model"], "--inpaint-model"),
                 (["--inpaint-model", "{c}/one_row.safetensors", "--inpaint-methods", "model"], "--inpaint-model")]


@pytest.mark.parametrize("argv, flag", INPAINT_CASES, ids=[" ".join(a)[:50] for a, _ in INPAINT_CASES])
def test_inpaint_refuses_bad_input_before_sampling(argv, flag, corpus, tmp_path, capsys):
    code, out, err = call(cli.main, ["run", "--task", "inpaint", "--preset", "tiny", "--guidance", "cfg", "--scales", "3",
                                     "--out", str(tmp_path / "out"), *fill(argv, corpus)], capsys)
    assert_refused(code, out, err, flag, tmp_path)


CASCADE_CASES = [(["--upsampler-scale", "nan"], "--upsampler-scale"), (["--upsampler-scale", "inf"], "--upsampler-scale"),
                 (["--upsampler-scale", "0.5"], "--upsampler-scale"), (["--upsample-aug", "100000"], "--upsample-aug"),
                 (["--upsample-aug", "-1"], "--upsample-aug"), (["--upsampler", "{c}/text.safetensors"], "--upsampler"),
                 (["--upsampler", "{c}/missing.safetensors"], "--upsampler"),
                 (["--upsampler", "{c}/neither.safetensors"], "--upsampler"),
                 (["--cascade-features", "{c}/missing.safetensors"], "--cascade-features"),
                 (["--mask-file", "{c}/mask_text.png"], "--mask-file"),
                 (["--prompts", "{c}/prompts_nested.json"], "--prompts")]


@pytest.mark.parametrize("argv, flag", CASCADE_CASES, ids=[" ".join(a)[:50] for a, _ in CASCADE_CASES])
def test_cascade_refuses_bad_input_before_sampling(argv, flag, corpus, tmp_path, capsys):
    code, out, err = call(cli.main, ["run", "--task", "cascade", "--preset", "tiny", "--guidance", "cfg", "--scales", "3",
                                     "--out", str(tmp_path / "out"), *fill(argv, corpus)], capsys)
    assert_refused(code, out, err, fill([flag], corpus)[0], tmp_path)


PERF_CASES = [(["--model", "{c}/missing"], "{c}/missing"), (["--model", "{c}/one"], "{c}/one"),
              (["--guidance", "nope"], "--guidance"), (["--batch", "0"], "--batch"), (["--steps", "nan"], "--steps")]


@pytest.mark.parametrize("argv, flag", PERF_CASES, ids=[" ".join(a)[:50] for a, _ in PERF_CASES])
def test_perf_refuses_bad_input(argv, flag, corpus, capsys):
    code, out, err = call(perf.main, ["--device", "cpu", "--repeats", "1", *fill(argv, corpus)], capsys)
    assert_refused(code, out, err, fill([flag], corpus)[0])


PREFERENCE_CASES = [
    (["--metrics", "hpsv2"], "--hps-weights is not set"),
    (["--metrics", "hpsv2", "--hps-weights", "{c}/a_file"], "--hps-weights {c}/a_file: not a weights file"),
    (["--metrics", "image_reward", "--image-reward-model", "{c}/absent"], "--image-reward-model {c}/absent: folder"),
    (["--metrics", "pickscore", "--pickscore-model", "{c}"], "--pickscore-model {c}: no config"),
]


@pytest.mark.parametrize("argv, message", PREFERENCE_CASES, ids=[" ".join(a)[:60] for a, _ in PREFERENCE_CASES])
def test_preference_evaluator_files_are_refused_before_loading(argv, message, sd_pipeline, corpus, tmp_path, capsys):
    """A real model's run asking for a preference evaluator without usable files stops in one line."""
    argv = ["run", "--model", f"diffusers:{sd_pipeline}", "--guidance", "cfg", "--scales", "3", "--steps", "2",
            "--prompt-limit", "2", "--seeds", "0", "--no-report", "--out", str(tmp_path / "out"), *fill(argv, corpus)]
    code, stdout, err = call(cli.main, argv, capsys)
    assert_refused(code, stdout, err, fill([message], corpus)[0], tmp_path)
