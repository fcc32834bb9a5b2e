"""Client of the model registry (``aether.v1.ModelRegistry``) and, for registration, the artifact store.

Registering a version is two steps: the artifact file is uploaded (content-addressed, checked by
sha256 on both sides), then the version is registered with that hash. The version row exists only once
the registration commits, so a client that dies between the two leaves no half-registered version —
at most a blob in the artifact store that nothing references, which is harmless (blobs are found only
through references, and uploading the same file again reuses it).

One method per RPC, plain Python arguments in, proto messages out; a failed call raises the matching
:mod:`clients.errors` exception."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import TypeVar

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import model_registry_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument
from clients.sdk.arguments import checked_request, str_list
from clients.sdk.artifacts import ArtifactClient
from clients.sdk.service_client import ServiceClient

#: A tensor as ``(name, dtype, shape)``, e.g. ``("features", "float32", (-1, 12))``.
TensorTuple = tuple[str, str, Sequence[int]]


def signature(
    inputs: Iterable[TensorTuple],
    outputs: Iterable[TensorTuple],
    *,
    imputes_missing: bool = False,
    classes: Iterable[str] = (),
) -> pb.ModelSignature:
    """A model signature from ``(name, dtype, shape)`` tuples; -1 marks a dynamic dimension.
    ``imputes_missing``: the model takes NaN for a missing value and imputes it itself, so serving feeds
    a missing feature as NaN (and lets NaN through) instead of 0. ``classes``: a classifier's label
    values in output order (``ModelSignature.classes``), which the monitor maps its outputs through."""
    return pb.ModelSignature(
        inputs=[checked_request(pb.TensorSpec, name=n, dtype=d, shape=list(s)) for n, d, s in inputs],
        outputs=[checked_request(pb.TensorSpec, name=n, dtype=d, shape=list(s)) for n, d, s in outputs],
        imputes_missing=imputes_missing,
        classes=list(classes),
    )


class ModelRegistryClient(ServiceClient):
    """Client of one control plane at ``target`` (``host:port``). ``actor`` names the caller in the
    audit log when auth is off (with auth on, the token's principal does); ``timeout`` bounds each
    call except artifact transfers."""

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.ModelRegistryStub(self._channel)  # type: ignore[no-untyped-call]
        self.artifacts = self.sharing(ArtifactClient)

    # Registered models ---------------------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", tags: Mapping[str, str] | None = None
    ) -> pb.RegisteredModel:
        request = checked_request(
            pb.CreateRegisteredModelRequest, name=name, description=description, tags=_texts(tags, "tags")
        )
        return self._call(self._stub.CreateRegisteredModel, request, pb.RegisteredModel)

    def get_model(self, name: str) -> pb.RegisteredModel:
        request = checked_request(pb.GetRegisteredModelRequest, name=name)
        return self._call(self._stub.GetRegisteredModel, request, pb.RegisteredModel)

    def list_models_page(
        self,
        *,
        name_prefix: str = "",
        tags: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.RegisteredModel], str]:
        """One page of models ordered by name, and the token of the next page (empty on the last)."""
        request = checked_request(
            pb.ListRegisteredModelsRequest,
            name_prefix=name_prefix,
            tags=_texts(tags, "tags"),
            page_size=page_size,
            page_token=page_token,
        )
        response = self._call(self._stub.ListRegisteredModels, request, pb.ListRegisteredModelsResponse)
        return list(response.models), response.next_page_token

    def list_models(
        self, *, name_prefix: str = "", tags: Mapping[str, str] | None = None
    ) -> list[pb.RegisteredModel]:
        """Every model matching the filters (all pages)."""
        return list(
            _all_pages(
                lambda token: self.list_models_page(name_prefix=name_prefix, tags=tags, page_token=token)
            )
        )

    def delete_model(self, name: str) -> None:
        request = checked_request(pb.DeleteRegisteredModelRequest, name=name)
        self._call(self._stub.DeleteRegisteredModel, request, pb.DeleteRegisteredModelResponse)

    # Versions ------------------------------------------------------------------------------------------

    def register_version(
        self,
        model_name: str,
        artifact: Path | None = None,
        *,
        artifact_sha256: str = "",
        run_id: str = "",
        signature: pb.ModelSignature | None = None,
        dataset_hash: str = "",
        dataset_query: str = "",
        feature_refs: Sequence[str] = (),
        hyperparameters: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        git_commit: str = "",
        description: str = "",
        create_model: bool = True,
    ) -> pb.ModelVersion:
        """Uploads ``artifact`` (unless an already-stored ``artifact_sha256`` is given) and registers the
        next version of ``model_name`` (creating the model first when ``create_model``). Every argument
        is checked before the upload: a hyperparameter that is not a string, or a metric that is not a
        finite number, is INVALID_ARGUMENT naming its key, and nothing is uploaded."""
        # Built, and so checked, before the upload, which is slow and whose blob is kept: a mistyped
        # argument is refused naming it, with nothing stored.
        request = checked_request(
            pb.CreateModelVersionRequest,
            model_name=model_name,
            run_id=run_id,
            artifact_sha256=artifact_sha256,
            signature=signature,
            dataset=checked_request(pb.DatasetInfo, hash=dataset_hash, query=dataset_query),
            feature_refs=str_list(feature_refs, "feature_refs"),
            hyperparameters=_texts(hyperparameters, "hyperparameters"),
            metrics=_finite_numbers(metrics, "metrics"),
            git_commit=git_commit,
            description=description,
            create_model=create_model,
        )
        if artifact is not None:
            request.artifact_sha256 = self.artifacts.upload_file(artifact).sha256
        return self._call(self._stub.CreateModelVersion, request, pb.ModelVersion)

    def get_version(self, model_name: str, version: int = 0, *, alias: str = "") -> pb.ModelVersion:
        """Version ``version``, the one ``alias`` points at, or (neither given) the latest."""
        request = checked_request(
            pb.GetModelVersionRequest, model_name=model_name, version=version, alias=alias
        )
        return self._call(self._stub.GetModelVersion, request, pb.ModelVersion)

    def get_by_alias(self, model_name: str, alias: str) -> pb.ModelVersion:
        return self.get_version(model_name, alias=alias)

    def list_versions_page(
        self,
        model_name: str,
        *,
        status: pb.ApprovalStatus = pb.APPROVAL_STATUS_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.ModelVersion], str]:
        request = checked_request(
            pb.ListModelVersionsRequest,
            model_name=model_name,
            status=status,
            page_size=page_size,
            page_token=page_token,
        )
        response = self._call(self._stub.ListModelVersions, request, pb.ListModelVersionsResponse)
        return list(response.versions), response.next_page_token

    def list_versions(
        self, model_name: str, *, status: pb.ApprovalStatus = pb.APPROVAL_STATUS_UNSPECIFIED
    ) -> list[pb.ModelVersion]:
        """Every version of the model (all pages), ascending."""
        return list(
            _all_pages(lambda token: self.list_versions_page(model_name, status=status, page_token=token))
        )

    def approve(self, model_name: str, version: int, reason: str = "") -> pb.ModelVersion:
        return self._review(model_name, version, pb.APPROVED, reason)

    def reject(self, model_name: str, version: int, reason: str = "") -> pb.ModelVersion:
        return self._review(model_name, version, pb.REJECTED, reason)

    def _review(
        self, model_name: str, version: int, decision: pb.ApprovalStatus, reason: str
    ) -> pb.ModelVersion:
        request = checked_request(
            pb.ReviewModelVersionRequest,
            model_name=model_name,
            version=version,
            decision=decision,
            reason=reason,
        )
        return self._call(self._stub.ReviewModelVersion, request, pb.ModelVersion)

    def delete_version(self, model_name: str, version: int) -> None:
        request = checked_request(pb.DeleteModelVersionRequest, model_name=model_name, version=version)
        self._call(self._stub.DeleteModelVersion, request, pb.DeleteModelVersionResponse)

    def set_alias(self, model_name: str, alias: str, version: int) -> pb.ModelVersion:
        request = checked_request(pb.SetAliasRequest, model_name=model_name, alias=alias, version=version)
        return self._call(self._stub.SetAlias, request, pb.ModelVersion)

    def delete_alias(self, model_name: str, alias: str) -> None:
        request = checked_request(pb.DeleteAliasRequest, model_name=model_name, alias=alias)
        self._call(self._stub.DeleteAlias, request, pb.DeleteAliasResponse)

    def check_deployable(self, model_name: str, version: int) -> pb.ModelVersion:
        """The version when it may be deployed; ``FailedPrecondition`` unless it is approved."""
        request = checked_request(pb.CheckDeployableRequest, model_name=model_name, version=version)
        return self._call(self._stub.CheckDeployable, request, pb.ModelVersion)

    # Lineage -------------------------------------------------------------------------------------------

    def lineage(self, model_name: str, version: int) -> pb.Lineage:
        request = checked_request(pb.GetLineageRequest, model_name=model_name, version=version)
        return self._call(self._stub.GetLineage, request, pb.Lineage)

    def usages(self, feature_view: str, version: int = 0) -> list[pb.FeatureUsage]:
        """Model versions using ``feature_view`` at ``version`` (0: at any version)."""
        request = checked_request(pb.FindUsagesRequest, feature_view=feature_view, version=version)
        return list(self._call(self._stub.FindUsages, request, pb.FindUsagesResponse).usages)


def _texts(values: Mapping[str, str] | None, name: str) -> dict[str, str]:
    """``values`` as a dict of strings; INVALID_ARGUMENT naming the key whose key or value is not one
    (protobuf's bare TypeError named neither)."""
    texts = dict(values or {})
    for key, value in texts.items():
        _check_key(key, name)
        if not isinstance(value, str):
            raise InvalidArgument(f"{name}[{key!r}]: {_shown(value)} is not a string")
    return texts


def _check_key(key: object, name: str) -> None:
    if not isinstance(key, str):
        raise InvalidArgument(f"{name}: the key {_shown(key)} is not a string")


def _finite_numbers(values: Mapping[str, float] | None, name: str) -> dict[str, float]:
    """``values`` as a dict of floats; INVALID_ARGUMENT naming the key whose value is not a finite number
    (text, None, NaN, infinity: the server refuses the last two, but only after the upload)."""
    numbers: dict[str, float] = {}
    for key, value in (values or {}).items():
        try:
            number = float(value) if isinstance(value, Real) else math.nan
        except OverflowError:  # an int beyond a double's range
            number = math.inf
        _check_key(key, name)
        if not math.isfinite(number):
            raise InvalidArgument(f"{name}[{key!r}]: {_shown(value)} is not a finite number")
        numbers[key] = number
    return numbers


def _shown(value: object) -> str:
    # A huge int's repr may be refused outright (int_max_str_digits).
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 256 else "<a huge int>"
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"


_Item = TypeVar("_Item")


def _all_pages(fetch: Callable[[str], tuple[list[_Item], str]]) -> Iterator[_Item]:
    token = ""
    while True:
        items, token = fetch(token)
        yield from items
        if not token:
            return
