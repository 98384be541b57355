"""Image classification from scratch: every architecture's shapes and learning, the seeded stratified
split, exact resume through `tunelab run --resume` with BatchNorm and augmentation, reload, bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from tunelab.cli import main
from tunelab.data.image_augment import flip_and_translate
from tunelab.data.vision_sources import read_cifar10_vendored, read_fashion_mnist, read_image_folder, stratified_split
from tunelab.errors import TunelabError
from tunelab.models.artifact import load_run_model
from tunelab.models.scratch import build_scratch_model
from tunelab.recipes import validate
from tunelab.tasks.image_classification import ImageClassificationTask, tta_logits

ARCHS = {
    "mlp": {"type": "mlp", "hidden": [64]},
    "cnn2_relu": {"type": "cnn2", "activation": "relu", "channels": [8, 16], "hidden": 32},
    "cnn2_sigmoid": {"type": "cnn2", "activation": "sigmoid", "channels": [8, 16], "hidden": 32},
    "multiscale": {"type": "multiscale", "width": 4, "fc": [32, 32, 16, 16]},
    "fastcnn": {"type": "fastcnn", "widths": [8, 16, 16]},
}


@pytest.fixture(scope="module")
def cifar():
    images, labels, names = read_cifar10_vendored()
    return images, labels, names


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize(("channels", "size", "classes"), [(3, 32, 10), (1, 28, 7)])
def test_every_model_maps_images_to_logits(name, channels, size, classes):
    model = build_scratch_model({**ARCHS[name], "in_channels": channels, "image_size": size, "classes": classes})
    assert model(torch.randn(5, channels, size, size)).shape == (5, classes)


@pytest.mark.parametrize("name", list(ARCHS))
def test_a_few_steps_lower_the_loss(name, cifar):
    torch.manual_seed(0)
    images, labels, _ = cifar
    x = torch.from_numpy(images[:32]).permute(0, 3, 1, 2).float() / 255 - 0.5  # (32, 3, 32, 32)
    y = torch.from_numpy(labels[:32])
    model = build_scratch_model(ARCHS[name])
    if hasattr(model, "init_from_data"):
        model.init_from_data(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        losses.append(float(loss.detach()))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert min(losses[-3:]) < 0.8 * losses[0], losses


def test_whitening_decorrelates_patches(cifar):
    """fastcnn's first layer, set from the data, outputs (nearly) uncorrelated unit-variance channels."""
    x = torch.from_numpy(cifar[0][:500]).permute(0, 3, 1, 2).float() / 255
    model = build_scratch_model({"type": "fastcnn", "whiten_eps": 1e-8})
    model.init_from_data(x)
    with torch.no_grad():
        h = F.conv2d(x, model.whiten.weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()  # (N·31·31, 12)
    covariance = torch.cov(h.T)
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=1e-2)


def test_cifar_split_is_stratified_seeded_and_disjoint(cifar):
    labels = cifar[1]
    train, held = stratified_split(labels, 0.2, seed=0)
    again_train, again_held = stratified_split(labels, 0.2, seed=0)
    other_train, _ = stratified_split(labels, 0.2, seed=1)
    assert len(train) == 8000 and len(held) == 2000 and not set(train) & set(held)
    assert np.array_equal(train, again_train) and np.array_equal(held, again_held)
    assert not np.array_equal(train, other_train)
    assert np.bincount(labels[held]).tolist() == [200] * 10


def test_task_split_and_normalisation_repeat(cifar):
    config = validate({"task": "image_classification", "model": {"arch": ARCHS["mlp"]}, "data": {"dataset": "cifar10"}})
    first, second = ImageClassificationTask(config), ImageClassificationTask(config)
    first.prepare_data(None, "", None)
    second.prepare_data(None, "", None)
    assert first.train_size == 8000 and len(first.eval_y) == 2000
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.eval_y, second.eval_y)
    x = first.normalise(first.train_x)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_augmentation_flips_and_shifts_each_image_by_its_own_draw():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    out = flip_and_translate(x, np.random.default_rng(3), flip=True, translate=0)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    shifted = flip_and_translate(x, np.random.default_rng(5), flip=False, translate=2)
    offsets = np.random.default_rng(5).integers(0, 5, size=(2, 2))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i, (dy, dx) in enumerate(offsets):
        assert torch.equal(shifted[i], padded[i, :, dy:dy + 6, dx:dx + 6])
    assert torch.equal(shifted, flip_and_translate(x, np.random.default_rng(5), flip=False, translate=2))


def test_test_time_translate_weights_the_shifted_and_mirrored_views():
    """tta_logits = 0.5·view(x) + 0.25·view(x shifted down-right) + 0.25·view(x shifted up-left), view the
    flip mean; a shift- and flip-sensitive model (a linear layer on the raw pixels) sees every view."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifts = [padded[..., :8, :8], padded[..., 2:, 2:]]  # content moved down-right, up-left by 1 pixel

    def flip_mean(v):
        return (model(v) + model(v.flip(-1))) / 2

    with torch.no_grad():
        expected = 0.5 * flip_mean(x) + 0.25 * (flip_mean(shifts[0]) + flip_mean(shifts[1]))
        got = tta_logits(model, x, flip=True, translate=1, channels_last=True)
        plain = tta_logits(model, x, flip=False, translate=0)
        shifted_only = tta_logits(model, x, flip=False, translate=1)
        assert got.shape == (4, 5)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.equal(plain, model(x))
        assert torch.allclose(shifted_only, 0.5 * model(x) + 0.25 * (model(shifts[0]) + model(shifts[1])), atol=1e-5)
        assert not torch.allclose(got, tta_logits(model, x, flip=True, translate=0), atol=1e-3)
    base = {"task": "image_classification", "model": {"arch": ARCHS["fastcnn"]}, "data": {"dataset": "cifar10"}}
    assert validate({**base, "vision": {"tta_translate": 1}}).vision.tta_translate == 1
    for bad in (-1, 5):
        with pytest.raises(TunelabError, match="vision.tta_translate"):
            validate({**base, "vision": {"tta_translate": bad}})


RECIPE = """
name: vis
task: image_classification
model:
  arch: {type: fastcnn, widths: [8, 16, 16]}
data: {dataset: cifar10, limit: 160, eval_limit: 100}
train: {optimizer: sgd, lr: 0.05, batch_size: 16, max_steps: 6, checkpoint_every: 2, precision: fp32,
        log_every: 1, warmup_ratio: 0.0, schedule: linear, lookahead_every: 3}
vision: {flip: true, translate: 2, label_smoothing: 0.2, tta_flip: true, tta_translate: 1, channels_last: true,
         misclassified: 8}
"""


def test_interrupted_run_resumes_exactly_and_reloads(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "vis.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), f"output_dir={tmp_path / 'full'}"]) == 0
    (full,) = list((tmp_path / "full" / "vis").iterdir())

    calls = {"n": 0}
    original = ImageClassificationTask.loss_fn

    def crash_in_step_five(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # what Ctrl-C looks like to the loop
        return original(self, model, batch)

    monkeypatch.setattr(ImageClassificationTask, "loss_fn", crash_in_step_five)
    assert main(["run", str(recipe), f"output_dir={tmp_path / 'cut'}"]) == 130
    monkeypatch.setattr(ImageClassificationTask, "loss_fn", original)
    (cut,) = list((tmp_path / "cut" / "vis").iterdir())
    assert json.loads((cut / "checkpoints" / "last" / "position.json").read_text())["step"] == 4
    assert main(["run", str(recipe), f"output_dir={tmp_path / 'cut'}", "--resume", str(cut)]) == 0

    ours, theirs = (json.loads((run / "summary.json").read_text()) for run in (cut, full))
    assert ours["metrics"] == theirs["metrics"] and ours["steps"] == 6
    weights, reference = (load_file(str(run / "artifact" / "model.safetensors")) for run in (cut, full))
    assert any("running_mean" in k for k in weights)  # BatchNorm statistics are part of the result
    assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
    losses = [json.loads(line)["loss"] for line in (cut / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses == [json.loads(line)["loss"] for line in (full / "metrics.jsonl").read_text().splitlines()
                      if '"loss"' in line]

    for name in ("confusion_matrix.png", "confusion_matrix.md", "misclassified.png", "predictions.csv"):
        assert (full / name).stat().st_size > 0
    per_class = json.loads((full / "per_class_accuracy.json").read_text())
    assert sorted(per_class) == sorted(read_cifar10_vendored()[2])
    assert np.mean(list(per_class.values())) == pytest.approx(theirs["metrics"]["accuracy"])  # 10 per class

    from tunelab.report.html import write_report
    from tunelab.report.runs import load_record

    page = write_report([load_record(full, "vis")], tmp_path / "report.html").read_text()
    assert "section-misclassified" in page and "misclassified vis" in page and "confusion matrix" in page
    from tunelab.report.per_example import read_example_scores, scores_for_metric

    record = load_record(full, "vis")  # predictions.csv reproduces every summary metric the reports test
    for metric in ("accuracy", "macro_f1", "weighted_f1", "mcc", "eval_loss"):
        assert not isinstance(scores_for_metric(record, read_example_scores(record), metric), str), metric

    loaded = load_run_model(full)
    loaded.task.prepare_data(None, "", None)
    assert loaded.task.evaluate(loaded.model)["accuracy"] == theirs["metrics"]["accuracy"]


def test_a_bf16_autocast_run_writes_its_evaluation_files(tmp_path):
    """bf16 autocast (what train.precision=auto picks on a GPU) yields bf16 logits; the metrics and
    predictions.csv are computed from them in fp32."""
    recipe = tmp_path / "vis.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), f"output_dir={tmp_path}", "train.precision=bf16", "train.max_steps=2",
                 "train.checkpoint_every=null", "vision.tta_translate=0"]) == 0
    (run,) = list((tmp_path / "vis").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"] == "bf16"
    rows = (run / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 100 and 0.0 <= summary["metrics"]["accuracy"] <= 1.0


def test_bad_arch_keys_are_one_line_errors(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    for override, key in [("model.arch.widthz=3", "model.arch.widthz"), ("model.arch.type=resnet", "model.arch.type"),
                          ("model.arch={type: cnn2, activation: swishy}", "activation"),
                          ("model.arch.classes=3", "model.arch.classes")]:
        assert main(["run", str(recipe), override, f"output_dir={tmp_path}"]) == 2
        message = capsys.readouterr().err.strip()
        assert key in message and "\n" not in message and "Traceback" not in message, message


def make_folder(root, classes, sizes=((12, 12),)):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i, size in enumerate(sizes):
            colour = (255 * (k == 0), 0, 255 * (k == 1))
            Image.new("RGB", size, colour).save(root / name / f"{i}.png")


def test_image_folders_read_resized_with_class_names(tmp_path):
    make_folder(tmp_path / "photos", ["cat", "dog"], sizes=((12, 12), (20, 9), (5, 5)))
    images = read_image_folder(tmp_path / "photos", 16, "data.train")
    assert images.images.shape == (6, 16, 16, 3) and images.names == ["cat", "dog"]
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.images[0, 8, 8].tolist() == [255, 0, 0] and images.images[5, 8, 8].tolist() == [0, 0, 255]


def test_bad_image_folders_are_one_line_errors(tmp_path):
    make_folder(tmp_path / "one", ["cat"])
    make_folder(tmp_path / "broken", ["cat", "dog"])
    (tmp_path / "broken" / "dog" / "bad.png").write_bytes(b"not a png")
    make_folder(tmp_path / "empty", ["cat", "dog"])
    for file in (tmp_path / "empty" / "dog").iterdir():
        file.unlink()
    cases = [(tmp_path / "missing", "is not a folder"), (tmp_path / "one", "at least two class sub-folders"),
             (tmp_path / "broken", "bad.png"), (tmp_path / "empty", "holds no images")]
    for folder, words in cases:
        with pytest.raises(TunelabError) as err:
            read_image_folder(folder, 8, "data.train")
        assert words in str(err.value) and "\n" not in str(err.value)


def test_fashion_mnist_reads_the_debian_idx_files(tmp_path, monkeypatch):
    import gzip

    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 4], np.uint8)
    for prefix in ("train", "t10k"):
        header = bytes([0, 0, 8, 3]) + np.array([3, 28, 28], ">u4").tobytes()
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        header = bytes([0, 0, 8, 1]) + np.array([3], ">u4").tobytes()
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()))
    monkeypatch.setenv("TUNELAB_FASHION_MNIST", str(tmp_path))
    test = read_fashion_mnist("test")
    assert test.images.shape == (3, 28, 28, 1) and np.array_equal(test.images[..., 0], images)
    assert test.labels.tolist() == [9, 0, 4] and test.names[9] == "Ankle boot"
    monkeypatch.setenv("TUNELAB_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(TunelabError, match="dataset-fashion-mnist"):
        read_fashion_mnist("train")
