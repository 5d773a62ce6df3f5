"""``Classifier`` and ``embedlab predict`` on a tiny fine-tuning run folder (synthetic CIFAR batches): the objects
read from the folder give the run's own test probabilities back, image files of any size or mode are made CIFAR
images first, and every unreadable file is one error line while the others are still answered."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import expect_one_error, write_batch
from PIL import Image
from test_finetune_pipeline import args_for

from embedlab.cli import main
from embedlab.errors import InputError
from embedlab.store import Store
from embedlab.vision import cifar10
from embedlab.vision.classifier import Classifier, NotAnImage, as_batch, read_image


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished ``embedlab vision finetune`` folder (probe first, then fine-tuning) and its CIFAR folder."""
    root = tmp_path_factory.mktemp("classifier")
    folder = root / "data" / cifar10.DIRNAME
    folder.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        for i, name in enumerate([*cifar10.TRAIN_FILES, "test_batch"]):
            write_batch(folder / name, 100 if name == "test_batch" else 60, seed=i)
            mp.setitem(cifar10.MD5, name, cifar10.md5_bytes((folder / name).read_bytes()))
        assert main(args_for(root / "data", root / "run", root)) == 0
    return root / "run", folder


def cifar_test_images(folder) -> np.ndarray:
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)


@pytest.mark.parametrize("model, saved", [("probe", "probe"), ("finetuned", "finetune")])
def test_the_classifier_gives_the_runs_own_test_probabilities_back(finished, model, saved):
    run, folder = finished
    clf = Classifier.from_run(run, model=model)
    stored = Store.open(run).predictions(saved)
    images = cifar_test_images(folder)[stored.test_index]
    probs = clf.predict_proba(images)
    assert probs.shape == (len(images), 10)
    # the run predicted through its inference runtime (OpenVINO where installed), the classifier through torch: the
    # outputs agree to a few 1e-6 of their scale (docs/performance.md), the probabilities to a few 1e-5
    np.testing.assert_allclose(probs, stored.probs.numpy(), atol=1e-4)
    assert np.array_equal(probs.argmax(1), stored.probs.numpy().argmax(1))
    # HWC arrays are the same images; predict names the argmax's class
    assert np.array_equal(clf.predict_proba(images[:3].transpose(0, 2, 3, 1)), probs[:3])
    assert clf.predict(images[:5]) == [clf.classes[i] for i in probs[:5].argmax(1)]


def test_image_files_of_any_size_and_mode_are_made_cifar_images_first(finished, tmp_path):
    run, folder = finished
    clf = Classifier.from_run(run, model="finetuned")
    image = cifar_test_images(folder)[0].transpose(1, 2, 0)
    Image.fromarray(image).save(tmp_path / "same.png")
    assert np.array_equal(read_image(tmp_path / "same.png"), image)  # a 32 px RGB file is read as it is
    np.testing.assert_allclose(clf.predict_proba(tmp_path / "same.png"), clf.predict_proba(image), atol=1e-6)
    Image.fromarray(image).resize((400, 300)).convert("L").save(tmp_path / "big.jpg")
    Image.fromarray(image).convert("P").save(tmp_path / "palette.png")
    for name in ("big.jpg", "palette.png"):
        assert read_image(tmp_path / name).shape == (32, 32, 3)
    probs = clf.predict_proba([tmp_path / "big.jpg", Image.open(tmp_path / "palette.png")])
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_wrong_arguments_are_input_errors(finished, tmp_path):
    run, _ = finished
    clf = Classifier.from_run(run, model="probe")
    with pytest.raises(InputError, match="uint8"):
        clf.predict_proba(np.zeros((2, 32, 32, 3), dtype=np.float32))
    with pytest.raises(InputError, match="CIFAR-shaped"):
        as_batch(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="model"):
        Classifier.from_run(run, model="resnet")
    with pytest.raises(NotAnImage, match="folder"):
        read_image(tmp_path)


def test_predict_answers_the_readable_files_and_names_each_unreadable_one(finished, tmp_path, capsys):
    run, folder = finished
    Image.fromarray(cifar_test_images(folder)[1].transpose(1, 2, 0)).save(tmp_path / "ok.png")
    Image.new("RGB", (1, 1), (200, 20, 20)).save(tmp_path / "dot.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    whole = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "folder").mkdir()
    files = ["ok.png", "notes.txt", "empty.png", "cut.png", "folder", "dot.png"]
    assert main(["predict", *(str(tmp_path / f) for f in files), "--run", str(run)]) == 2
    out, err = capsys.readouterr()
    errors = err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("embedlab: error: ") for line in errors)
    for name, says in (("notes.txt", "not a readable image"), ("empty.png", "empty file"), ("cut.png", "truncated")):
        assert any(name in line and says in line for line in errors), (name, errors)
    assert any("folder" in line and "is a folder" in line for line in errors)
    lines = out.splitlines()
    assert lines[0].endswith("ok.png") and lines[3].endswith("dot.png") and len(lines) == 6
    assert lines[1].lstrip().startswith("probe:") and lines[2].lstrip().startswith("finetuned:")
    clf = Classifier.from_run(run, model="finetuned")
    best = clf.top(tmp_path / "ok.png", k=3)[0]
    assert lines[2].split(":", 1)[1].strip() == ", ".join(f"{c} {p * 100:.1f} %" for c, p in best)


def test_a_very_large_image_is_read_and_a_decompression_bomb_refused(tmp_path, recwarn):
    Image.new("L", (10_000, 10_000), 90).save(tmp_path / "large.png")  # 100 Mpx: PIL warns, embedlab reads it
    assert read_image(tmp_path / "large.png").shape == (32, 32, 3)
    assert not [w for w in recwarn if "decompression" in str(w.message).lower()]
    Image.new("1", (14_000, 14_000)).save(tmp_path / "bomb.png")  # 196 Mpx: more than twice PIL's limit
    with pytest.raises(NotAnImage, match="bomb.png is not a readable image"):
        read_image(tmp_path / "bomb.png")


def test_a_run_without_a_fine_tuned_model(finished, tmp_path, capsys):
    run, folder = finished
    Image.fromarray(cifar_test_images(folder)[2].transpose(1, 2, 0)).save(tmp_path / "ok.png")
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    (partial / "artefacts" / "finetune_checkpoint.pt").unlink()
    status = main(["predict", str(tmp_path / "ok.png"), "--run", str(partial), "--model", "finetuned"])
    expect_one_error(status, capsys, "holds no fine-tuned model")
    assert main(["predict", str(tmp_path / "ok.png"), "--run", str(partial)]) == 0  # both: the probe answers
    out, err = capsys.readouterr()
    assert "embedlab: note:" in err and "probe" in out and "finetuned" not in out


@pytest.mark.parametrize("name, model", [("probe_model.pt", "probe"), ("finetune_checkpoint.pt", "finetuned")])
def test_a_tampered_model_file_is_refused_and_no_code_is_unpickled(finished, name, model, tmp_path, capsys):
    run, folder = finished
    Image.fromarray(cifar_test_images(folder)[2].transpose(1, 2, 0)).save(tmp_path / "ok.png")
    for content, says in ((b"junk", "is damaged"), (pickle.dumps(Exploit()), "is damaged")):
        broken = tmp_path / f"broken{len(content)}"
        shutil.copytree(run, broken)
        (broken / "artefacts" / name).write_bytes(content)
        status = main(["predict", str(tmp_path / "ok.png"), "--run", str(broken), "--model", model])
        expect_one_error(status, capsys, says)
    assert not (Path(__file__).parent / "pwned-never").exists()


class Exploit:
    """A pickle that would run code when loaded without ``weights_only``."""

    def __reduce__(self):
        return (open, (str(Path(__file__).parent / "pwned-never"), "w"))
