"""Prompt-set loaders: every supported format, ``limit``, builtins, and file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.prompts import readers as prompts
from bench.prompts.readers import Prompt, PromptFileError, PromptSet, load_prompt_file, load_prompts
from tests.paths import FIXTURES

PROMPT_FIXTURES = FIXTURES / "prompts"
BAD = PROMPT_FIXTURES / "bad"


def test_txt_one_prompt_per_line_with_stem_as_category() -> None:
    ps = load_prompt_file(PROMPT_FIXTURES / "color_val.txt")  # CRLF endings and a blank line
    assert ps.name == "color_val"
    assert ps.source == str(PROMPT_FIXTURES / "color_val.txt")
    assert ps.texts() == [
        "a green bench and a blue bowl",
        "a blue bench and a green bowl",
        "a red car and a white sheep",
    ]
    assert {p.category for p in ps.prompts} == {"color_val"}
    assert not ps.has_labels


def test_tsv_partiprompts_columns() -> None:
    ps = load_prompt_file(PROMPT_FIXTURES / "parti.tsv")
    assert len(ps) == 4
    assert ps.prompts[0] == Prompt(
        text="bond",
        category="Abstract",
        meta={"Challenge": "Basic", "Note": "Biology-inspired concepts with multiple meanings"},
    )
    assert ps.prompts[1].text.startswith('A robot painted as graffiti. The words "Fly an airplane"')
    assert ps.prompts[1].category == "Outdoor Scenes"
    assert ps.prompts[2].text == "a café in Zürich"
    # TSV has no quoting: a prompt that starts with a quoted word keeps it (PartiPrompts line 1562)
    assert ps.prompts[3].text == '"G I G G L E" painted in thick colorful lettering as graffiti.'
    assert ps.prompts[3].category == "Illustrations"


def test_csv_coco30k_keeps_other_columns_as_meta() -> None:
    ps = load_prompt_file(PROMPT_FIXTURES / "coco.csv")
    assert ps.texts() == [
        "A bicycle replica with a clock as the front wheel.",
        "A bathroom with a toilet, sink, and shower.",
        "a counter with vegetables, knife and cutting board on it.",
    ]
    assert ps.prompts[1].category is None
    assert ps.prompts[1].meta == {
        "image_id": "571635", "source": "coco-30k", "evaluation_seed": "10030", "width": "428", "height": "640"
    }


def test_csv_labels_and_text_column() -> None:
    ps = load_prompt_file(PROMPT_FIXTURES / "emoji.csv")
    assert [(p.text, p.label, p.category) for p in ps.prompts] == [
        ("smiling face", 0, "faces"),
        ("cat face", 3, "animals"),
        ("rocket", 7, "travel"),
    ]
    assert ps.has_labels
    assert all(p.meta == {} for p in ps.prompts)


def test_jsonl_geneval_tag_is_category() -> None:
    ps = load_prompt_file(PROMPT_FIXTURES / "geneval.jsonl")
    assert ps.texts() == ["a photo of a bench", "a photo of two cows", "a photo of a red car"]
    assert [p.category for p in ps.prompts] == ["single_object", "counting", "colors"]
    assert ps.prompts[1].meta == {
        "include": '[{"class": "cow", "count": 2}]',
        "exclude": '[{"class": "cow", "count": 3}]',
    }


def test_jsonl_labels_int_string_or_null() -> None:
    ps = load_prompt_file(PROMPT_FIXTURES / "labels.jsonl")
    assert [p.label for p in ps.prompts] == [0, 3, None]
    assert not ps.has_labels


def test_coco_captions_json() -> None:
    ps = load_prompt_file(PROMPT_FIXTURES / "captions_val2014.json")
    assert ps.texts() == [
        "A bicycle replica with a clock as the front wheel.",
        "A black Honda motorcycle parked in front of a garage.",
        "The bike has a clock as a tire.",
    ]
    assert ps.prompts[2].meta == {
        "image_id": "203564", "id": "49", "file_name": "COCO_val2014_000000203564.jpg"
    }


def test_coco_json_with_odd_images_is_named_or_skipped(tmp_path: Path) -> None:
    """'images' that is not a list is an error naming it; an image whose id cannot key a caption is skipped."""
    odd = tmp_path / "odd.json"
    odd.write_text('{"annotations": [{"caption": "a dog"}], "images": 5}')
    with pytest.raises(PromptFileError, match='"images" is a int, not a list'):
        load_prompt_file(odd)
    odd.write_text('{"annotations": [{"caption": "a dog", "image_id": [1]}, {"caption": "a cat", "image_id": 2}], '
                   '"images": [{"id": [1], "file_name": "x.jpg"}, {"id": 2, "file_name": "y.jpg"}]}')
    ps = load_prompt_file(odd)
    assert ps.texts() == ["a dog", "a cat"] and ps.prompts[1].meta["file_name"] == "y.jpg"
    assert "file_name" not in ps.prompts[0].meta


@pytest.mark.parametrize(
    "name", ["color_val.txt", "parti.tsv", "coco.csv", "geneval.jsonl", "captions_val2014.json"]
)
def test_limit_takes_first_n(name: str) -> None:
    full = load_prompt_file(PROMPT_FIXTURES / name)
    assert load_prompt_file(PROMPT_FIXTURES / name, limit=2).prompts == full.prompts[:2]
    assert load_prompt_file(PROMPT_FIXTURES / name, limit=100).prompts == full.prompts


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        load_prompt_file(PROMPT_FIXTURES / "coco.csv", limit=0)


def test_limit_stops_before_later_bad_rows() -> None:
    assert load_prompt_file(BAD / "bad_label.csv", limit=2).texts() == ["smiling face", "cat face"]


@pytest.mark.parametrize(
    ("name", "line", "fragment"),
    [
        ("empty.txt", 1, "empty"),
        ("blank_lines.txt", 1, "no prompts"),
        ("header_only.csv", 1, "no prompts"),
        ("no_prompt_column.csv", 1, "'image_id', 'description'"),
        ("empty_prompt.tsv", 3, "empty or non-text prompt"),
        ("bad_label.csv", 4, "'seven'"),
        ("negative_label.jsonl", 2, "-2"),
        ("field_count.csv", 3, "3 fields but the header has 2"),
        ("multiline_quote.csv", 4, "3 fields"),
        ("bad_json.jsonl", 3, "invalid JSON"),
        ("missing_prompt.jsonl", 2, "'tag', 'caption_'"),
        ("not_object.jsonl", 3, "JSON object"),
        ("bad_utf8.txt", 3, "UTF-8"),
        ("not_coco.json", 1, "COCO"),
        ("bad_syntax.json", 3, "invalid JSON"),
        ("prompts.yaml", 1, ".txt, .csv, .tsv, .jsonl, .json"),
    ],
)
def test_malformed_file_names_file_and_line(name: str, line: int, fragment: str) -> None:
    with pytest.raises(PromptFileError) as info:
        load_prompt_file(BAD / name)
    message = str(info.value)
    assert message.startswith(f"{BAD / name}:{line}: "), message
    assert fragment in message
    assert "\n" not in message and "; " in message  # one line: problem; fix
    assert (info.value.path, info.value.line) == (str(BAD / name), line)


def test_prompt_file_error_is_value_error() -> None:
    assert issubclass(PromptFileError, ValueError)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty builtin registry, restored after the test."""
    monkeypatch.setattr(prompts, "_BUILTINS", {})


def _dummy() -> PromptSet:
    items = tuple(Prompt(text=f"emoji {i}", label=i) for i in range(5))
    return PromptSet(name="dummy", prompts=items, source="builtin:dummy")


def test_register_and_load_builtin(registry: None) -> None:
    prompts.register_builtin("dummy", _dummy, "five numbered emoji")
    assert prompts.builtin_prompt_sets() == {"dummy": "five numbered emoji"}
    ps = load_prompts("dummy")
    assert ps.source == "builtin:dummy" and len(ps) == 5 and ps.has_labels
    assert load_prompts("dummy", limit=2).texts() == ["emoji 0", "emoji 1"]
    with pytest.raises(ValueError, match="already registered"):
        prompts.register_builtin("dummy", _dummy, "again")


def test_load_prompts_path(registry: None) -> None:
    assert load_prompts(str(PROMPT_FIXTURES / "parti.tsv"), limit=1).texts() == ["bond"]


def test_unknown_name_lists_builtins(registry: None) -> None:
    prompts.register_builtin("dummy", _dummy, "five numbered emoji")
    prompts.register_builtin("other", _dummy, "the same again")
    with pytest.raises(ValueError) as info:
        load_prompts("no_such_set")
    message = str(info.value)
    assert "'no_such_set'" in message and "dummy, other" in message and "existing" in message
    assert not isinstance(info.value, PromptFileError)


def test_an_unreadable_prompt_file_is_one_line(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a cat\n")

    def denied(self):  # noqa: ANN001  (root reads any file: simulate the permission error)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(PromptFileError, match="cannot be read \\(permission denied\\); make it readable"):
        load_prompt_file(path)


def test_csv_drawbench_prompts_and_categories() -> None:
    """DrawBench's CSV (the Imagen sheet's export): header "Prompts,Category", quoted prompts with commas, and
    a category with a trailing space ("Gary Marcus et al. ") read as the category without it."""
    ps = load_prompt_file(PROMPT_FIXTURES / "drawbench.csv")
    assert len(ps) == 6
    assert ps.prompts[0] == Prompt(text="A red colored car.", category="Colors")
    assert ps.prompts[3].text.startswith("A stack of 3 books. A green book is on the top, sitting on a red book.")
    assert [p.category for p in ps.prompts] == ["Colors", "Conflicting", "Counting", "DALL-E", "Gary Marcus et al.",
                                                "Positional"]


def test_json_list_hpdv2_style_is_category(tmp_path) -> None:
    """HPDv2's benchmark files are JSON lists of prompts named by style: the stem is the category."""
    ps = load_prompt_file(PROMPT_FIXTURES / "hpdv2" / "anime.json")
    assert len(ps) == 2 and {p.category for p in ps.prompts} == {"anime"}
    assert ps.texts()[0] == "A whimsical anime illustration of a fox reading a book under a cherry tree."
    bad = tmp_path / "photo.json"
    bad.write_text('["a cat", 3]')
    with pytest.raises(PromptFileError, match=r"photo.json:1: item 1 of the JSON list is not prompt text"):
        load_prompt_file(bad)


def test_json_list_of_objects_imagereward_benchmark() -> None:
    """ImageReward's benchmark/benchmark-prompts.json: a list of {"id", "prompt"}; the id is kept in meta."""
    ps = load_prompt_file(PROMPT_FIXTURES / "imagereward_benchmark.json")
    assert ps.texts()[0] == "a concept art of a vehicle, cyberpunk"
    assert ps.prompts[1].meta == {"id": "005784-0093"} and ps.prompts[1].category is None
