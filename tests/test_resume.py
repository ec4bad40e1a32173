"""Interrupted training: SIGINT leaves a checkpoint, --resume ends with the uninterrupted run's weights."""
import signal
import subprocess
import time

import pytest
import torch

from conftest import BIN, run_cli, with_default_signals


def train_state(path):
    return torch.load(path, weights_only=True)


def interrupted_then_resumed(tmp_path, args, min_epoch):
    out = tmp_path / "resumed"
    state = tmp_path / "resumed.train-state.pt"
    proc = subprocess.Popen(with_default_signals([BIN / "torchport", "train", "--out", out, "--no-progress", *args]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if train_state(state)["epoch"] >= min_epoch:
                break
        except Exception:  # not written yet, or being replaced
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted, no bundle was written" in err and "--resume" in err and "Traceback" not in err
    assert state.exists() and not out.exists()
    stopped_at = train_state(state)["epoch"]
    again = run_cli("train", "--out", str(out), "--no-progress", *args)
    assert again.returncode == 2 and "use --resume (to continue it)" in again.stderr
    resumed = run_cli("train", "--out", str(out), "--no-progress", "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert not state.exists()
    return out, stopped_at


@pytest.mark.full  # three long trainings each
@pytest.mark.parametrize("args, min_epoch", [
    (["--data", "plant_richness_mlr", "--model", "mlp", "--hidden", "16", "--dropout", "0.1", "--batch-size", "4",
      "--epochs", "3000", "--lr-schedule", "cosine"], 300),
    (["--epochs", "3000000"], 300000),  # the tutorial's model on the fast closed-form path
])
def test_resume_reaches_the_uninterrupted_weights(tmp_path, args, min_epoch):
    out, stopped_at = interrupted_then_resumed(tmp_path, args, min_epoch)
    epochs = int(args[args.index("--epochs") + 1])
    assert 0 < stopped_at < epochs
    straight = tmp_path / "straight"
    proc = run_cli("train", "--out", str(straight), "--no-progress", *args)
    assert proc.returncode == 0, proc.stderr
    a = torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(straight / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_with_other_settings_is_refused(tmp_path):
    state = tmp_path / "b.train-state.pt"
    from torchport.train import Regressor, load_dataset
    d = load_dataset("plant_richness_lr")
    Regressor(epochs=300, checkpoint=state).fit(d.X, d.y)
    proc = run_cli("train", "--out", str(tmp_path / "b"), "--epochs", "400", "--resume", "--no-progress")
    assert proc.returncode == 2 and "other settings or data" in proc.stderr
    missing = run_cli("train", "--out", str(tmp_path / "c"), "--resume", "--no-progress")
    assert missing.returncode == 2 and "no training checkpoint" in missing.stderr


def fit_interrupted_then_resumed(monkeypatch, tmp_path, data, kwargs, stop_at):
    """A fit stopped by KeyboardInterrupt right after its checkpoint at ``stop_at`` epochs, then resumed."""
    from torchport.train import Regressor
    state = tmp_path / "fit.train-state.pt"
    save = Regressor._save_state

    def save_then_stop(self, run, epochs_done):
        save(self, run, epochs_done)
        if epochs_done >= stop_at:
            raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(Regressor, "_save_state", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            Regressor(checkpoint=state, **kwargs).fit(data.X, data.y)
    assert train_state(state)["epoch"] == stop_at
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.name]  # written through a temp file, renamed
    return Regressor(checkpoint=state, **kwargs).fit(data.X, data.y, resume=True)


@pytest.mark.parametrize("dataset, kwargs, stop_at", [
    ("plant_richness_lr", {"epochs": 3000}, 1500),  # the closed-form path
    ("plant_richness_mlr", {"model": "mlp", "hidden": (8,), "dropout": 0.1, "batch_size": 4, "epochs": 200,
                            "lr_schedule": "cosine"}, 100),
    ("plant_richness_mlr", {"model": "mlp", "hidden": (8,), "epochs": 3000, "lr": 0.01, "val_fraction": 0.25,
                            "patience": 30}, 60),
])
def test_regressor_resume_is_bit_identical(monkeypatch, tmp_path, dataset, kwargs, stop_at):
    from torchport.train import Regressor, load_dataset
    d = load_dataset(dataset)
    kwargs = {"device": "cpu", **kwargs}
    resumed = fit_interrupted_then_resumed(monkeypatch, tmp_path, d, kwargs, stop_at)
    straight = Regressor(**kwargs).fit(d.X, d.y)
    a, b = resumed.module_.state_dict(), straight.module_.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed.loss_history_ == straight.loss_history_).all()
    assert (resumed.val_loss_history_ == straight.val_loss_history_).all()
    assert (resumed.n_epochs_, resumed.best_epoch_) == (straight.n_epochs_, straight.best_epoch_)
    assert stop_at < straight.n_epochs_  # the interruption came before the end (or the early stop)


def test_regressor_resume_refuses_what_it_cannot_use(tmp_path):
    from torchport.train import DataError, Regressor, load_dataset
    d = load_dataset("plant_richness_lr")
    state = tmp_path / "s.pt"
    with pytest.raises(DataError, match="no training checkpoint at .* resume=False") as e:
        Regressor(epochs=10, checkpoint=state).fit(d.X, d.y, resume=True)
    assert e.value.parameter == "resume"
    Regressor(epochs=300, checkpoint=state).fit(d.X, d.y)
    with pytest.raises(DataError, match="other settings or data") as e:
        Regressor(epochs=400, checkpoint=state).fit(d.X, d.y, resume=True)
    assert e.value.parameter == "resume"
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="is not a torchport training checkpoint") as e:
        Regressor(epochs=300, checkpoint=state).fit(d.X, d.y, resume=True)
    assert e.value.parameter == "checkpoint"
