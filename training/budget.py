"""Fit fine-tuning into a wall-clock budget (a run on a shared CPU must end by a given time).

`BudgetSchedule` is a Keras callback that owns the learning rate: a linear warm-up, then a cosine decay
to the end of the epochs that FIT. After every epoch it re-estimates how many epochs the remaining
budget allows (from the mean epoch time so far), shortens the cosine to end there, and stops training
after the last one, so a slow machine gets fewer but complete (fully decayed) epochs instead of being
killed half-way.
"""

from __future__ import annotations

import logging
import math
import time

import keras

log = logging.getLogger("smearscope.train")


class BudgetSchedule(keras.callbacks.Callback):
    def __init__(
        self,
        base_lr: float,
        epochs: int,
        steps_per_epoch: int,
        budget_s: float | None,
        warmup_epochs: float = 1.0,
        alpha: float = 0.05,
    ) -> None:
        super().__init__()
        self.base_lr = base_lr
        self.planned = max(1, epochs)
        self.steps = max(1, steps_per_epoch)
        self.budget_s = budget_s
        self.warmup = int(warmup_epochs * self.steps)
        self.alpha = alpha
        self.step = 0
        self.epochs_done = 0
        self.t0 = 0.0

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr / 100 + (self.base_lr - self.base_lr / 100) * step / self.warmup
        total = max(1, self.planned * self.steps - self.warmup)
        frac = min(1.0, (step - self.warmup) / total)
        return self.base_lr * (self.alpha + (1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * frac)))

    def on_train_begin(self, logs=None) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.model.optimizer.learning_rate.assign(self.lr_at(self.step))
        self.step += 1

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.epochs_done += 1
        if logs is not None:
            logs["lr"] = self.lr_at(self.step)
        if self.budget_s is None:
            return
        elapsed = time.perf_counter() - self.t0
        per_epoch = elapsed / self.epochs_done
        fit = self.epochs_done + int((self.budget_s - elapsed) // per_epoch)
        if fit < self.planned:
            # Never shorten below what is already done (+1 if there is time for it).
            new = max(self.epochs_done, fit)
            log.info(
                "time budget: %.0f s/epoch, %d epoch(s) fit (was %d planned)", per_epoch, new, self.planned
            )
            self.planned = new
        if self.epochs_done >= self.planned:
            self.model.stop_training = True
