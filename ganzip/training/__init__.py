"""ganzip's training package: the loss plan, the step, the loop, checkpoints, OUT, and compress().

* ``plan``: which registered loss terms a recipe turns on (``LossPlan``);
* ``step``: one distillation step (the student's terms, the D step);
* ``loop``: ``train()``: iterate, step, sync, NaN check, log, hold-out, checkpoint;
* ``state``: checkpoints, optimizer flattening, RNG capture, schedules;
* ``outdir`` / ``trainlog``: the OUT folder and its ``train_log.csv``;
* ``batches``: the batch order and loading; ``holdout``: held-out fidelity, the sample grid;
* ``setup``: recipe, data, output geometry, discriminator; ``outputs``: students, samples, report;
* ``compress``: the whole run.

Import from the submodules (``from ganzip.training.loop import train``);
``ganzip.engine`` re-exports the names it always had.
"""
