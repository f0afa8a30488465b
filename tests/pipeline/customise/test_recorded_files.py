"""The files of a customised run found again by name and SHA-256 (issue 30, item 7): only in the folders given and
the model's own, each hash compared before anything loads, and a rerun through the Python API bit-identical."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from multidiffusion.adapters.customise.embeddings import EmbeddingSpec
from multidiffusion.adapters.customise.lora import LoraSpec
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.customise.customisation import Customisation
from multidiffusion.pipeline.customise.recorded_files import FileFolders, find_file, recorded_digests, safe_name
from multidiffusion.pipeline.settings.reproduce import call_arguments, read_recipe
from tests.helpers.tiny_lora import save_embedding, save_lora
from tests.helpers.tiny_models import loaded


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def lora_file(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    folder.mkdir()
    path = folder / "style.safetensors"
    path.write_bytes(b"a LoRA's bytes")
    return path


def test_a_file_is_found_in_the_folders_given_then_beside_the_model(lora_file, tmp_path):
    digest = _sha(lora_file)
    assert find_file("lora", "style.safetensors", digest, FileFolders(lora=(lora_file.parent,))) == lora_file
    beside = FileFolders.beside(lora_file.parent / "model.safetensors", lora=())  # not a file: no model folder
    assert beside.model is None
    (lora_file.parent / "model.safetensors").write_bytes(b"weights")
    beside = FileFolders.beside(lora_file.parent / "model.safetensors")
    assert beside.model == lora_file.parent and find_file("lora", "style.safetensors", digest, beside) == lora_file
    other = tmp_path / "other"
    other.mkdir()
    (other / "style.safetensors").write_bytes(b"another LoRA")
    both = FileFolders(lora=(other, lora_file.parent))  # the first folder holds another file of the name
    assert find_file("lora", "style.safetensors", digest, both) == lora_file


@pytest.mark.parametrize(
    ("name", "folders", "message"),
    [
        ("style.safetensors", None, "give the folder that holds it with --lora-dir"),
        ("missing.safetensors", "loras", "is in none of the folders given with --lora-dir"),
        ("../loras/style.safetensors", "loras", "is not a plain file name"),
        ("..", "loras", "is not a plain file name"),
    ],
)
def test_a_file_not_found_is_one_line(lora_file, name, folders, message):
    given = FileFolders(lora=(lora_file.parent,)) if folders else None
    with pytest.raises(InvalidInputError, match=message) as info:
        find_file("lora", name, _sha(lora_file), given)
    assert "\n" not in str(info.value)


def test_a_file_of_another_hash_is_refused_without_being_loaded(lora_file):
    with pytest.raises(InvalidInputError, match=r"has sha256 \w+…, not the recorded 000000000000…"):
        find_file("lora", "style.safetensors", "0" * 64, FileFolders(lora=(lora_file.parent,)))


def test_a_folder_option_that_names_no_folder_is_one_line(lora_file):
    with pytest.raises(InvalidInputError, match=r"--embedding-dir .* is not a folder"):
        FileFolders(embedding=(lora_file,))


def test_safe_names_are_one_files_own_name():
    assert safe_name("style.safetensors") and safe_name("a:b.pt") and safe_name("..x")
    for bad in ("", ".", "..", "a/b", "a\\b", "/etc/passwd", "x\0"):
        assert not safe_name(bad)


def test_two_different_files_of_one_name_record_no_hash(tmp_path):
    one, two = tmp_path / "a", tmp_path / "b"
    one.mkdir(), two.mkdir()
    (one / "x.safetensors").write_bytes(b"1")
    (two / "x.safetensors").write_bytes(b"2")
    (two / "y.safetensors").write_bytes(b"1")
    specs = [
        LoraSpec(str(one / "x.safetensors")),
        LoraSpec(str(two / "x.safetensors")),
        LoraSpec(str(two / "y.safetensors")),
    ]
    digests = recorded_digests(specs, [], [])
    assert digests == {"lora": {"x.safetensors": None, "y.safetensors": _sha(one / "x.safetensors")}}


def test_the_resize_choices_of_the_schema_are_the_control_specs():
    from multidiffusion.pipeline.customise.control_spec import RESIZE_MODES
    from multidiffusion.pipeline.settings.recipe_schema import RESIZE_CHOICES

    assert RESIZE_CHOICES == RESIZE_MODES


def test_a_lora_and_embedding_run_reproduces_bit_identically_through_the_api(small, tmp_path):
    """``read_recipe(recipe, files=FileFolders(...))`` then ``reproduce``: the LoRA and embedding are found by name."""
    from diffusers import StableDiffusionPipeline

    pipe = MultiDiffusionPipeline(loaded(copy.deepcopy(small)))  # a copy: LoRAs and embeddings change the model
    made = tmp_path / "made"
    made.mkdir()
    lora = save_lora(StableDiffusionPipeline, small, made / "style.safetensors", seed=4)
    dim = small["text_encoder"].config.hidden_size
    embedding = save_embedding(made / "glow.safetensors", 2, dim, seed=5)
    custom = Customisation(loras=(LoraSpec(str(lora), 0.7),), embeddings=(EmbeddingSpec(str(embedding)),))
    first = pipe(
        "a glow hill", height=128, width=256, num_inference_steps=2, progress=False, customise=custom,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    recipe = first.metadata.to_dict()
    with pytest.raises(InvalidInputError, match="--embedding-dir"):
        call_arguments(read_recipe(recipe))  # no folders: nowhere to look
    again = pipe.reproduce(read_recipe(recipe, files=FileFolders(lora=(made,), embedding=(made,))), progress=False)
    assert again.metadata.to_dict() == recipe
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))
