"""Synchronous client of the feature registry (the control plane's ``aether.v1.FeatureRegistry``).

Thin on purpose: one method per RPC, plain Python arguments in, the proto messages out. A failed call
raises the matching :mod:`clients.errors` exception (``NotFound``, ``InvalidArgument``...), never a bare
``grpc.RpcError``, so callers handle one exception tree whatever the transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import feature_registry_pb2_grpc as pb_grpc
from clients.sdk.arguments import checked_request
from clients.sdk.pages import every_page
from clients.sdk.service_client import ServiceClient


class FeatureRegistryClient(ServiceClient):
    """Client of one control plane at ``target`` (``host:port``); each call times out after ``timeout``
    seconds. Use as a context manager or call :meth:`close`."""

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.FeatureRegistryStub(self._channel)  # type: ignore[no-untyped-call]

    # Entities ------------------------------------------------------------------------------------------

    def create_entity(self, entity: pb.Entity) -> pb.Entity:
        return self._call(self._stub.CreateEntity, pb.CreateEntityRequest(entity=entity), pb.Entity)

    def get_entity(self, name: str) -> pb.Entity:
        return self._call(self._stub.GetEntity, pb.GetEntityRequest(name=name), pb.Entity)

    def list_entities(self) -> list[pb.Entity]:
        """Every entity, by name (all pages: a page is bounded in bytes)."""

        def page(token: str) -> tuple[Sequence[pb.Entity], str]:
            request = pb.ListEntitiesRequest(page_token=token)
            response = self._call(self._stub.ListEntities, request, pb.ListEntitiesResponse)
            return response.entities, response.next_page_token

        return every_page(page)

    def delete_entity(self, name: str) -> None:
        self._call(self._stub.DeleteEntity, pb.DeleteEntityRequest(name=name), pb.DeleteEntityResponse)

    # Feature views -------------------------------------------------------------------------------------

    def create_feature_view(
        self, spec: pb.FeatureViewSpec, metadata: pb.FeatureViewMetadata | None = None
    ) -> pb.FeatureView:
        request = pb.CreateFeatureViewRequest(spec=spec, metadata=metadata)
        return self._call(self._stub.CreateFeatureView, request, pb.FeatureView)

    def get_feature_view(self, name: str, version: int = 0) -> pb.FeatureView:
        """The view at ``version``; 0 means the latest active or deprecated version."""
        request = checked_request(pb.GetFeatureViewRequest, name=name, version=version)
        return self._call(self._stub.GetFeatureView, request, pb.FeatureView)

    def list_feature_views(
        self, *, owner: str = "", tags: Mapping[str, str] | None = None, include_retired: bool = False
    ) -> list[pb.FeatureView]:
        """Latest version of every view whose owner is ``owner`` (any when empty) and that carries every
        tag in ``tags``, by name (all pages: a page is bounded in bytes)."""

        def page(token: str) -> tuple[Sequence[pb.FeatureView], str]:
            request = pb.ListFeatureViewsRequest(
                owner=owner, tags=dict(tags or {}), include_retired=include_retired, page_token=token
            )
            response = self._call(self._stub.ListFeatureViews, request, pb.ListFeatureViewsResponse)
            return response.views, response.next_page_token

        return every_page(page)

    def list_feature_view_versions(self, name: str) -> list[pb.FeatureView]:
        """Every version of view ``name``, retired ones included, oldest first (all pages)."""

        def page(token: str) -> tuple[Sequence[pb.FeatureView], str]:
            request = pb.ListFeatureViewVersionsRequest(name=name, page_token=token)
            response = self._call(
                self._stub.ListFeatureViewVersions, request, pb.ListFeatureViewVersionsResponse
            )
            return response.versions, response.next_page_token

        return every_page(page)

    def update_feature_view_metadata(
        self,
        name: str,
        metadata: pb.FeatureViewMetadata,
        feature_descriptions: Mapping[str, str] | None = None,
    ) -> pb.FeatureView:
        request = pb.UpdateFeatureViewMetadataRequest(
            name=name, metadata=metadata, feature_descriptions=dict(feature_descriptions or {})
        )
        return self._call(self._stub.UpdateFeatureViewMetadata, request, pb.FeatureView)

    def update_validation(
        self, name: str, version: int, rules: Mapping[str, pb.ValidationRule]
    ) -> pb.FeatureView:
        request = checked_request(pb.UpdateValidationRequest, name=name, version=version, rules=dict(rules))
        return self._call(self._stub.UpdateValidation, request, pb.FeatureView)

    def create_feature_view_version(self, spec: pb.FeatureViewSpec) -> pb.FeatureView:
        request = pb.CreateFeatureViewVersionRequest(spec=spec)
        return self._call(self._stub.CreateFeatureViewVersion, request, pb.FeatureView)

    def deprecate_version(self, name: str, version: int) -> pb.FeatureView:
        request = checked_request(pb.ChangeVersionStatusRequest, name=name, version=version)
        return self._call(self._stub.DeprecateFeatureViewVersion, request, pb.FeatureView)

    def retire_version(self, name: str, version: int) -> pb.FeatureView:
        request = checked_request(pb.ChangeVersionStatusRequest, name=name, version=version)
        return self._call(self._stub.RetireFeatureViewVersion, request, pb.FeatureView)

    def delete_feature_view(self, name: str) -> None:
        request = pb.DeleteFeatureViewRequest(name=name)
        self._call(self._stub.DeleteFeatureView, request, pb.DeleteFeatureViewResponse)

    # Declarative apply ---------------------------------------------------------------------------------

    def apply(
        self, entities: Iterable[pb.Entity], views: Iterable[pb.FeatureView], *, dry_run: bool = False
    ) -> pb.ApplyResponse:
        """Plans (and unless ``dry_run`` carries out, in one transaction) the given definitions."""
        request = pb.ApplyRequest(entities=list(entities), views=list(views), dry_run=dry_run)
        return self.apply_request(request)

    def apply_request(self, request: pb.ApplyRequest) -> pb.ApplyResponse:
        """:meth:`apply` with a ready-made request (e.g. one parsed from a definitions file)."""
        return self._call(self._stub.Apply, request, pb.ApplyResponse)
