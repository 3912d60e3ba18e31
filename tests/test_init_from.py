"""Fine-tuning starts: `init_from` copies a backbone from an rsjax run or a timm state dict, and
Fashion-MNIST's class halves (`fashion_mnist_transfer/*`) that the transfer task trains on."""

import json
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax.traverse_util import flatten_dict
from jax.flatten_util import ravel_pytree

from rsjax.errors import UsageError
from rsjax.models import abstract_variables, create_model, from_timm_state_dict
from rsjax.models.convert import timm_key
from rsjax.train.state import averaged_variables
from tests.conftest import write_idx
from tests.test_timm_parity import FIXTURE, load_reference
from tests.test_train import REPO, tiny_config


def checkpoint_tree(run_dir) -> dict:
    """The newest checkpoint of `run_dir` as saved (numpy), read with Orbax directly."""
    manager = ocp.CheckpointManager(
        run_dir / "checkpoints", item_handlers=ocp.StandardCheckpointHandler()
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    step = manager.latest_step()
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        manager.item_metadata(step),
    )
    return jax.tree.map(np.asarray, manager.restore(step, args=ocp.args.StandardRestore(target)))


@pytest.fixture(scope="module")
def source_run(small_fmnist, tmp_path_factory):
    """A tiny 10-class run trained 8 steps (flat state layout, as on any CPU)."""
    from rsjax.train import trainer

    run_dir = tmp_path_factory.mktemp("source")
    trainer.train_and_evaluate(tiny_config(small_fmnist, num_train_steps=8), run_dir)
    return run_dir


def fresh_state(config):
    """A new run's (program, state) for `config` on one device, as the trainer makes it."""
    from rsjax import configs
    from rsjax.train import programs, sharding, trainer

    config = trainer.resolve_state_layout(configs.validate(config))
    program = programs.build(config, sharding.make_mesh(1, 1), (28, 28, 1))
    return program, program.init(jax.random.key(config.seed + 1))


@pytest.mark.parametrize("weights, layout", [("ema", "flat"), ("raw", "flat"), ("ema", "tree")])
def test_init_from_copies_every_backbone_leaf_and_starts_head_step_and_optimiser_fresh(
    small_fmnist, source_run, weights, layout
):
    """The source saved its state flat (CPU); the new run's state is flat or tree."""
    from rsjax.train import init_from

    saved = checkpoint_tree(source_run)
    config = tiny_config(small_fmnist, **{"data.num_classes": 5, "init_from.path": str(source_run),
                                          "init_from.weights": weights,
                                          "state_layout": layout})  # fmt: skip
    program, fresh = fresh_state(config)
    state = init_from.initial_state(
        fresh, init_from.source_variables(config.init_from, program.model)
    )
    unravel_params = ravel_pytree(saved["params"])[1]
    unravel_stats = ravel_pytree(saved["batch_stats"])[1]
    want = {
        "params": saved["params"] if weights == "raw" else unravel_params(saved["ema_params"]),
        "batch_stats": saved["batch_stats"]
        if weights == "raw"
        else unravel_stats(saved["ema_batch_stats"]),
    }
    stem = saved["params"]["stem"]["conv1"]["kernel"]
    assert not np.array_equal(stem, unravel_params(saved["ema_params"])["stem"]["conv1"]["kernel"])
    got = flatten_dict({"params": state.params, "batch_stats": state.batch_stats})
    source = flatten_dict(want)
    for key, value in got.items():
        if key[:2] == ("params", "classifier"):
            assert value.shape[-1] == 5 and source[key].shape[-1] == 10
            np.testing.assert_array_equal(value, flatten_dict(fresh.params)[key[1:]])
        else:
            np.testing.assert_array_equal(value, source[key], err_msg="/".join(key))
    assert int(state.step) == 0 and int(saved["step"]) == 8
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(state.opt_state))
    # The EMAs start at the copied weights (flat layout: their raveled vectors).
    assert state.layout == layout
    ema = averaged_variables(state)
    for copied, average in ((state.params, ema["params"]), (state.batch_stats, ema["batch_stats"])):
        for a, b in zip(jax.tree.leaves(copied), jax.tree.leaves(average), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_backbone_that_does_not_match_is_one_error_naming_the_first_key(small_fmnist, source_run):
    from rsjax.train import init_from

    wider = tiny_config(small_fmnist, **{"model.width_multiplier": 0.25,
                                         "init_from.path": str(source_run)})  # fmt: skip
    program, _ = fresh_state(wider)
    source = init_from.source_variables(wider.init_from, program.model)
    target = {"params": program.abstract_state.params,
              "batch_stats": program.abstract_state.batch_stats}  # fmt: skip
    with pytest.raises(
        UsageError,
        match=r"init_from: params/c2_block0/bn1/bias is \(8,\) in the source but \(16,\) here",
    ):
        init_from.transfer(target, source)
    deeper = tiny_config(small_fmnist, **{"model.stage_sizes": (1, 1, 2, 1)})
    program, _ = fresh_state(deeper)
    target = {"params": program.abstract_state.params,
              "batch_stats": program.abstract_state.batch_stats}  # fmt: skip
    with pytest.raises(UsageError, match="the source has no params/c4_block1"):
        init_from.transfer(target, source)
    with pytest.raises(UsageError, match="the source has batch_stats/extra/mean, which"):
        init_from.transfer(
            {"params": {}, "batch_stats": {}}, {"params": {}, "batch_stats": {"extra": {"mean": 0}}}
        )


def timm_state_dict_of(variables: dict) -> dict[str, np.ndarray]:
    """A timm `resnetrs*` state dict holding `variables` (the inverse of the conversion)."""
    state_dict = {}
    for (collection, *path), value in flatten_dict(variables).items():
        key, value = timm_key(collection, tuple(path)), np.asarray(value)
        if value.ndim == 4:  # [kh, kw, I, O] -> [O, I, kh, kw]
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2 and ".se." in key:  # SE dense -> 1x1 conv
            value = value.T[:, :, None, None]
        elif value.ndim == 2:
            value = value.T
        state_dict[key] = value
    return state_dict


def test_a_timm_resnetrs50_state_dict_gives_the_backbone_from_timm_state_dict_gives(tmp_path):
    from rsjax.configs import apply_overrides, imagenet
    from rsjax.train import init_from

    rng = np.random.default_rng(0)
    pretrained = jax.tree.map(
        lambda s: rng.standard_normal(s.shape).astype(s.dtype),
        abstract_variables(create_model("resnetrs50"), channels=3),
    )
    path = tmp_path / "resnetrs50.npz"
    np.savez(path, **timm_state_dict_of(pretrained))
    config = apply_overrides(imagenet.get_config("resnetrs50_i160"),
                             {"data.num_classes": 10, "init_from.path": str(path)})  # fmt: skip
    init_from.check(config.init_from)
    model = create_model("resnetrs50", num_classes=10)
    source = init_from.source_variables(config.init_from, model)
    want = from_timm_state_dict(create_model("resnetrs50"), dict(np.load(path)))
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_variables(model, 3))
    merged = flatten_dict(init_from.transfer(target, source))
    for key, value in flatten_dict(jax.tree.map(np.asarray, want)).items():
        if key[:2] == ("params", "classifier"):
            assert merged[key].shape[-1] == 10 and not merged[key].any()
        else:
            np.testing.assert_array_equal(merged[key], value, err_msg="/".join(key))
            np.testing.assert_array_equal(value, flatten_dict(pretrained)[key])


def test_timm_weights_of_another_architecture_are_one_error_naming_the_key(tmp_path):
    from rsjax.train import init_from

    reference, state_dict, _ = load_reference(FIXTURE)  # a real timm tiny ResNet-RS
    path = tmp_path / "tiny.npz"
    np.savez(path, **state_dict)
    from rsjax import configs

    config = configs.load("imagenet:resnetrs50_i160", {"init_from.path": str(path)})
    with pytest.raises(UsageError, match=r"tiny.npz: timm (state dict is missing|tensor)"):
        init_from.source_variables(config.init_from, create_model("resnetrs50"))
    same = init_from.source_variables(config.init_from, reference.clone(num_classes=3))
    np.testing.assert_array_equal(
        same["params"]["stem"]["conv1"]["kernel"],
        state_dict["conv1.0.weight"].transpose(2, 3, 1, 0),
    )


def test_bad_init_from_paths_are_one_clear_error(tmp_path, source_run):
    from rsjax import configs
    from rsjax.train import init_from

    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "weights.pt").write_bytes(b"")
    for path, message in (
        (tmp_path / "missing", "no such file or run directory"),
        (tmp_path / "not_a_run", "is not an rsjax run"),
        (tmp_path / "weights.pt", "a timm state dict"),
    ):
        config = configs.load("fashion_mnist:tiny", {"init_from.path": str(path)})
        with pytest.raises(UsageError, match=message):
            init_from.check(config.init_from)
    for key, value, message in (("init_from.weights", "best", "init_from.weights must be one"),
                                ("init_from.step", -1, "init_from.step must be >= 0")):  # fmt: skip
        with pytest.raises(UsageError, match=message):
            configs.validate(configs.load("fashion_mnist:tiny", {key: value}))
    config = configs.load("fashion_mnist:tiny",
                          {"init_from.path": str(source_run), "init_from.step": 3})  # fmt: skip
    with pytest.raises(UsageError, match=r"has no checkpoint 3; it has \[4, 8\]"):
        init_from.source_variables(config.init_from, None)


# ---- Fashion-MNIST's class halves ----


def test_the_transfer_splits_are_disjoint_balanced_and_carved_from_train():
    from rsjax.data import fashion_mnist

    labels = np.random.default_rng(0).integers(0, 10, 20_000)
    kept = fashion_mnist.TRANSFER_CLASSES["classes_5to9"]
    splits = fashion_mnist.transfer_indices(labels, kept)
    assert not set(splits["train"]) & set(splits["validation"])
    assert set(splits["train_100"]) <= set(splits["train"])
    assert set(splits["train"]) | set(splits["validation"]) == set(splits["all"])
    assert set(labels[splits["all"]]) == set(kept)
    for split, per_class in (("validation", 500), ("train_100", 100)):
        counts = np.bincount(labels[splits[split]], minlength=10)
        assert list(counts[list(kept)]) == [per_class] * 5 and counts[:5].sum() == 0
    # validation is each class's last 500, train_100 its first 100 (in file order)
    sandals = np.flatnonzero(labels == 5)
    assert set(sandals[-500:]) <= set(splits["validation"])
    assert set(sandals[:100]) <= set(splits["train_100"])


@pytest.fixture(scope="module")
def halves_files(tmp_path_factory):
    """Fashion-MNIST-format files with 700 training images of each class (labels i % 10)."""
    directory, rng = tmp_path_factory.mktemp("halves"), np.random.default_rng(0)
    for split, n in (("train", 7000), ("t10k", 200)):
        labels = np.arange(n) % 10
        images = labels[:, None, None] * 20 + rng.integers(0, 60, (n, 28, 28))  # learnable
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


def test_a_prepared_half_has_five_classes_renumbered_and_the_stated_split_sizes(
    halves_files, tmp_path
):
    import tensorflow_datasets as tfds

    from rsjax.data import fashion_mnist

    builder = fashion_mnist.prepare(
        str(tmp_path), halves_files, name="fashion_mnist_transfer/classes_5to9"
    )
    splits = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert splits == {"train": 5 * 200, "validation": 2500, "train_100": 500, "test": 100}
    assert builder.info.features["label"].names == list(fashion_mnist.CLASS_NAMES[5:])
    labels = [int(x["label"]) for x in tfds.as_numpy(builder.as_dataset(split="train_100"))]
    assert np.bincount(labels).tolist() == [100] * 5
    with pytest.raises(ValueError, match="Unknown dataset 'fashion_mnist_transfer/x'"):
        fashion_mnist.builder_for("fashion_mnist_transfer/x", None)


@pytest.mark.slow
def test_fine_tuning_runs_end_to_end_and_a_mismatched_source_exits_2_before_training(
    halves_files, source_run, tmp_path
):
    """`rsjax train` from a 10-class run onto a 5-class half: complete, the record names its
    source; a source of another width is one line and exit 2, before the run's record starts."""
    common = ["--config", "fashion_mnist:transfer_finetune",
              f"--config.data.manual_dir={halves_files}",
              f"--config.data.data_dir={tmp_path / 'tfds'}",
              "--config.model.stage_sizes=(1,1,1,1)", "--config.model.width_multiplier=0.125",
              "--config.num_train_steps=6", "--config.mesh.data=1", "--config.progress=False",
              f"--config.init_from.path={source_run}"]  # fmt: skip
    env = {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    train = [sys.executable, "-m", "rsjax.cli", "train", *common]
    done = subprocess.run([*train, "--workdir", str(tmp_path / "ft")],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert record["status"] == "complete" and record["init_from"]["path"] == str(source_run)
    assert record["init_from"]["weights"] == "ema"
    wider = [*train, "--config.model.width_multiplier=0.25", "--workdir", str(tmp_path / "bad")]
    bad = subprocess.run(wider, capture_output=True, text=True, env=env)
    assert bad.returncode == 2, bad.stderr[-3000:]
    errors = [line for line in bad.stderr.splitlines() if "init_from" in line]
    assert len(errors) == 1 and "params/c2_block0/bn1/bias is (8,)" in errors[0], bad.stderr[-2000:]
    assert not (tmp_path / "bad" / "result.json").exists()


# ---- model selection reads the validation split, never the test split ----


@pytest.mark.slow
def test_selection_reads_validation_never_test(halves_files, tmp_path):
    """Two points of a learning-rate grid (one learns, one does not), trained on clean data and
    again with the test labels of classes 5-9 rotated (5 -> 6 ... 9 -> 5): the test top-1
    changes and a pick by test would flip, but the run selected by validation is the same."""
    import shutil

    from rsjax.analysis.selection import select
    from rsjax.configs import apply_overrides, fashion_mnist
    from rsjax.results import collect
    from rsjax.train import trainer

    poisoned = tmp_path / "poisoned_files"
    shutil.copytree(halves_files, poisoned)
    labels = np.arange(200) % 10
    write_idx(
        poisoned / "t10k-labels-idx1-ubyte.gz", np.where(labels >= 5, 5 + (labels - 4) % 5, labels)
    )
    tables = {}
    for name, files in (("clean", halves_files), ("poisoned", poisoned)):
        for lr in (1e-6, 0.02):
            config = apply_overrides(fashion_mnist.get_config("transfer_finetune"), {
                "data.manual_dir": str(files), "data.data_dir": str(tmp_path / f"tfds_{name}"),
                "model.stage_sizes": (1, 1, 1, 1), "model.width_multiplier": 0.125,
                "num_train_steps": 30, "ema_decay": 0.0, "mesh.data": 1, "progress": False,
                "optim.base_learning_rate": lr,
                "name": f"lr{lr:g}"})  # fmt: skip
            trainer.train_and_evaluate(config, tmp_path / name / f"lr{lr:g}")
        tables[name] = collect([tmp_path / name])
    clean, dirty = tables["clean"].set_index("name"), tables["poisoned"].set_index("name")
    assert (clean["top1"] != dirty["top1"]).all()
    np.testing.assert_array_equal(clean["val_top1"], dirty["val_top1"])
    picks = {name: select(df).selected["name"] for name, df in tables.items()}
    assert picks == {"clean": "lr0.02", "poisoned": "lr0.02"}
    assert select(tables["poisoned"], by="top1").selected["name"] == "lr1e-06"
