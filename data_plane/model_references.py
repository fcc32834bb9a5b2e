"""The error of a served model whose feature references cannot be read: a view that is not registered or
not servable (retired), a version or feature it lacks, a reference of the static model config that does not
parse. The fault is the model's configuration, not the request, so the message names the model and version
(and, once Predict adds it, the deployment and variant) whose references to fix: the catalog's message
alone ("feature view 'x' is not registered") left an operator to guess which of the served models reads
``x``. A view, version or feature that is not served keeps the catalog's NOT_FOUND; a reference that does
not parse is FAILED_PRECONDITION: the grammar's INVALID_ARGUMENT blamed the caller for the configuration
(the static model config refuses such a reference when it is loaded, so only a deployment plan the control
plane did not check, or a persisted one edited by hand, brings one here).

Built on the error path only: the references are resolved once per model version and catalog (plans and
pins are cached), and only a failure formats these messages."""

from __future__ import annotations

from clients.errors import AetherError, FailedPrecondition, InvalidArgument, NotFound


class ModelReferenceError(AetherError):
    """A model's feature references cannot be read; ``problem`` says which and why. Raised as one of the
    subclasses below, which carry the cause's status."""

    def __init__(self, model: str, problem: str, deployment: str = "", variant: str = "") -> None:
        where = f"model {model}"
        if deployment:
            variant_part = f", variant {variant!r}" if variant else ""
            where += f" (deployment {deployment!r}{variant_part})"
        super().__init__(f"{where} cannot read its feature references: {problem}")
        self.model = model
        self.problem = problem

    def in_deployment(self, deployment: str, variant: str = "") -> ModelReferenceError:
        """The same error naming the deployment (and variant) that served the model."""
        return type(self)(self.model, self.problem, deployment, variant)


class ModelReferenceNotFound(ModelReferenceError, NotFound):
    """A view, version, feature or entity the model reads is not served."""


class ModelReferenceMalformed(ModelReferenceError, FailedPrecondition):
    """A reference the model lists does not parse: the model's configuration is wrong, whatever the request
    (the model registry and the static model config's load refuse such references)."""


def model_reference_error(cause: NotFound | InvalidArgument, model: str) -> ModelReferenceError:
    """``cause`` (the catalog's or the grammar's error) as the error of ``model`` ("name vN")."""
    if isinstance(cause, ModelReferenceError):
        return cause
    if isinstance(cause, NotFound):
        return ModelReferenceNotFound(model, cause.message)
    return ModelReferenceMalformed(model, cause.message)
