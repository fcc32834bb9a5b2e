"""The in-job training SDK and the built-in tabular trainer.

Everything here runs *inside* a job process started by an executor (see
:mod:`control_plane.jobs.launch_env` for the contract): :mod:`.context` reads the launch environment and
gives the job its hyperparameters, its dataset, metric logging and checkpoints; :mod:`.checkpoint` writes
and resumes crash-safe checkpoints; :mod:`.trainer` is the built-in torch MLP for tabular data.

Only the modules that need torch import it (checkpoints, RNG states, the trainer), so the control-plane
server, which never runs training code, never imports torch.
"""
