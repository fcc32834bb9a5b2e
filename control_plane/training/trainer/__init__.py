"""The built-in tabular trainer: a torch MLP for regression and classification on feature-store data.

``python -m control_plane.training.trainer`` inside a job (the executor sets the launch environment):
fetch the training set through the SDK, split off a held-out set, train deterministically with a
checkpoint every ``checkpoint_interval`` epochs (resuming from the newest valid one after a crash),
evaluate, export ONNX checked against torch, register a model version with its lineage and the drift
reference profile, write ``outputs.json``. Hyperparameters are listed in :mod:`.config`.
"""
