"""The end of a run (core.train.engine's last phase before it finishes): the
test split scored with the weights the config names (the best validation
epoch's by default), and on rank 0 temperature scaling fitted on the
validation split, the test split's expected calibration error before and
after it, balanced accuracy and the confusion matrix."""

from __future__ import annotations

import torch

from core.train import calibration, checkpoint


def score(t, r) -> None:
    """`t`: the engine's Trainer; `r`: its run state (core.train.engine._Run)."""
    use_best = t.cfg.use_weights == "best" and r.watch.best_epoch is not None
    if use_best and r.watch.best_epoch != r.result.epochs:
        best = t.run_dir / checkpoint.BEST_NAME  # rank 0 reads it and hands it to the others
        state = t.dist.broadcast(torch.load(best, map_location="cpu", weights_only=True)["model"]
                                 if t.dist.is_main else None)
        r.model.load_state_dict(state)
    r.result.scored_epoch = r.watch.best_epoch if use_best else r.result.epochs
    r.result.test_loss, r.result.test_accuracy = t._evaluate_split(r, "test")
    t._note_dropped(r.dropped_noted, "in the test set")
    if not t.dist.is_main:
        return
    net, features = (r.net, True) if r.use_cache else (r.model, False)
    splits = r.feats if r.use_cache else {"val": r.bundle.val, "test": r.bundle.test}
    (val_logits, val_y), (test_logits, test_y) = (t.logits(net, splits[k], features) for k in ("val", "test"))
    cal = calibration.calibrate(val_logits, val_y, test_logits, test_y)
    res = r.result
    res.balanced_accuracy = calibration.balanced_accuracy(test_logits.argmax(1), test_y)
    if len(test_y):  # listeners (TensorBoard) draw it from here rather than scoring the test split again
        res.confusion = calibration.confusion_matrix(test_y.numpy(), test_logits.argmax(1).numpy(),
                                                     test_logits.shape[1]).tolist()
    res.temperature, res.ece, res.ece_calibrated = cal["temperature"], cal["ece"], cal["ece_calibrated"]
    res.reliability = cal["reliability"]
    checkpoint.save_calibration(t.run_dir, {"temperature": res.temperature, "ece": res.ece,
                                            "ece_calibrated": res.ece_calibrated, "epoch": res.scored_epoch})
