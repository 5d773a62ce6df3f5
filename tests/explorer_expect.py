"""What the Part 1 explorer must list, recomputed by brute force from the saved probabilities and the official labels
(independent of ``vision.evaluate``: plain Python sorts over every image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def official_test_labels(cifar_folder: Path) -> np.ndarray:
    """The labels of the official ``test_batch`` file, read with pickle alone."""
    import pickle

    with open(Path(cifar_folder) / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    return np.asarray(batch[b"labels"] if b"labels" in batch else batch["labels"])  # the official file has bytes keys


def _load(run: Path, model: str, official: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(run / "artefacts" / f"{model}_test_probs.npz") as z:
        probs, index = z["probs"], z["test_index"]
    return probs, index, official[index]


def expected_cells(run: Path, model: str, official: np.ndarray, keep: int = 20) -> dict[tuple[int, int], list[int]]:
    """Test indices of every non-empty (true, predicted) cell: off-diagonal all, diagonal the ``keep`` most and least
    confident, by the predicted probability (highest first, ties to the lower test index)."""
    probs, index, y = _load(run, model, official)
    out = {}
    for t in range(10):
        for p in range(10):
            members = [i for i in range(len(index)) if y[i] == t and probs[i].argmax() == p]
            members.sort(key=lambda i: (-float(probs[i].max()), int(index[i])))
            if t == p and len(members) > 2 * keep:
                members = members[:keep] + members[-keep:]
            if members:
                out[(t, p)] = [int(index[i]) for i in members]
    return out


def expected_changes(run: Path, official: np.ndarray) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Fixed / broken / both wrong on the images both models saw, ranked by the fine-tuned model's probability of its
    prediction; and the two models' accuracies on those images."""
    pa, ia, _ = _load(run, "probe", official)
    pb, ib, _ = _load(run, "finetune", official)
    a, b = {int(t): r for r, t in enumerate(ia)}, {int(t): r for r, t in enumerate(ib)}
    common = sorted(set(a) & set(b))
    right_a = {t: pa[a[t]].argmax() == official[t] for t in common}
    right_b = {t: pb[b[t]].argmax() == official[t] for t in common}
    kinds = {
        "fixed": lambda t: not right_a[t] and right_b[t],
        "broken": lambda t: right_a[t] and not right_b[t],
        "both_wrong": lambda t: not right_a[t] and not right_b[t],
    }
    key = lambda t: (-float(pb[b[t]].max()), t)  # noqa: E731
    lists = {k: sorted((t for t in common if f(t)), key=key) for k, f in kinds.items()}
    acc = {
        "probe": float(np.mean([right_a[t] for t in common])),
        "finetune": float(np.mean([right_b[t] for t in common])),
        "images": len(common),
    }
    return lists, acc


def assert_explorer_matches(run: Path, official: np.ndarray, workdir: Path) -> dict:
    """Click every cell of both matrices and each switch in headless Chromium; each list, in order, must equal the
    recomputation, the switch's counts must add up to the two accuracies, and an image clicked shows both models'
    probabilities, 8x enlarged. Returns the page's answers (for further checks)."""
    import json

    from browser_check import vision_explorer_views

    models = [m for m in ("probe", "finetune") if (run / "artefacts" / f"{m}_test_probs.npz").is_file()]
    cells = [(m, t, p) for m in models for t in range(10) for p in range(10)]
    page = vision_explorer_views(run / "report.html", workdir, cells)
    assert page["errors"] == []
    for m in models:
        want = expected_cells(run, m, official)
        for t in range(10):
            for p in range(10):
                assert page["cells"][(m, t, p)]["shown"] == want.get((t, p), []), (m, t, p)
    lists, acc = expected_changes(run, official)
    for kind, want in lists.items():
        assert page["changes"][kind]["shown"] == want, kind
    n = acc["images"]
    fixed, broken, both = (len(lists[k]) for k in ("fixed", "broken", "both_wrong"))
    assert round(n * (1 - acc["probe"])) == fixed + both and round(n * (1 - acc["finetune"])) == broken + both
    metrics = json.loads((run / "metrics.json").read_text())
    # the same test set: the reported accuracies
    if n == len(np.load(run / "artefacts" / "probe_test_probs.npz")["test_index"]):
        assert round(n * (1 - metrics["probe"]["test_accuracy"])) == fixed + both
    if n == len(np.load(run / "artefacts" / "finetune_test_probs.npz")["test_index"]):
        assert round(n * (1 - metrics["finetune"]["test_accuracy"])) == broken + both
    overall = page["table"][-1]
    assert overall[:5] == ["all classes", f"{n:,}", f"{fixed:,}", f"{broken:,}", f"{both:,}"]
    assert (
        page["detail"]["hidden"] is False
        and page["detail"]["index"] == page["clicked"]
        and page["detail"]["size"] == 256
    )
    assert len(page["detail"]["rows"]) == 10 and all(len(r) == 1 + len(models) for r in page["detail"]["rows"])
    # a model that did not see the image shows "—", and the page says why
    unseen = [m for i, m in enumerate(models) if page["detail"]["rows"][0][1 + i] == "—"]
    assert len(page["detail"]["notes"]) == len(unseen)
    assert all("was not tested on this image" in note for note in page["detail"]["notes"])
    return page


def assert_sprite_is_official(run: Path, cifar_folder: Path) -> int:
    """Each image the page stores (decoded from report.html's sprite) is the official test image of its index."""
    import base64
    import io
    import json
    import pickle
    import re

    from PIL import Image

    html = (run / "report.html").read_text()
    data = json.loads(
        re.search(r'<script type="application/json" id="vision-explorer-data">(.*?)</script>', html).group(1)
    )
    sprite = re.search(r'\.vx-img\{background-image:url\("data:image/webp;base64,([^"]+)"\)\}', html).group(1)
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(sprite))).convert("RGB"))
    with open(Path(cifar_folder) / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    official = (batch[b"data"] if b"data" in batch else batch["data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    cols = data["columns"]
    for k, t in enumerate(data["testIndex"]):
        r, c = divmod(k, cols)
        assert np.array_equal(grid[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32], official[t]), t
    return len(data["testIndex"])
