"""The staff API: the queue, a case, the actions on it, and exports. Each view parses its input,
calls a selector or the same service the back office calls, and returns; role rules and four
eyes are the services'."""

from types import SimpleNamespace

from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from activation.admin_views import EXPORT_CONTENT_TYPES
from activation.case_actions import CASE_ACTIONS, run_case_action
from activation.exports import ExportFilters
from activation.models import CaseExport
from activation.pii import may_see_pii
from activation.timeline import RequestContext
from api.schema import error_responses

from . import exports, presenters, selectors
from .permissions import ExportScope, IsStaffToken, ReadScope, WorkCasesScope, has_role
from .serializers import (
    EXPORT_FORMATS,
    StaffCaseActionInputSerializer,
    StaffCaseActionResultSerializer,
    StaffCaseDetailSerializer,
    StaffCasePageSerializer,
    StaffCaseSummarySerializer,
    StaffDownloadQuerySerializer,
    StaffExportInputSerializer,
    StaffExportSerializer,
    StaffManifestSerializer,
    StaffQueueFilterSerializer,
)

TAGS = ["staff"]


def _id(value: str) -> int:
    """A path's id: ASCII digits of a size the database holds, else no such thing (404)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise NotFound()
    return int(value)


ID_PARAMETER = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH)


class QueuePagination(CursorPagination):
    """The back office's order: furthest past the SLA first, no SLA last, then oldest; the id
    makes the order total, so a cursor never skips or repeats a case."""

    ordering = ("queue_due", "opened_at", "pk")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100


class CaseQueueView(APIView):
    permission_classes = [IsStaffToken, ReadScope, has_role("view_activationcase")]

    @extend_schema(
        operation_id="staff_cases_list",
        tags=TAGS,
        parameters=[
            StaffQueueFilterSerializer,
            OpenApiParameter("cursor", OpenApiTypes.STR, description="From a previous page."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="1 to 100; 50 if unset."),
        ],
        responses={200: StaffCasePageSerializer, **error_responses(400, 401, 403, 404)},
    )
    def get(self, request):
        filters = StaffQueueFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        cases = selectors.case_queue(staff=request.user, **filters.validated_data)
        paginator = QueuePagination()
        page = paginator.paginate_queryset(cases, request, view=self)
        rows = [presenters.case_summary(case) for case in page]
        return paginator.get_paginated_response(StaffCaseSummarySerializer(rows, many=True).data)


def _case_detail(request, case_id: int) -> dict:
    case = selectors.case_for_staff(case_id)
    if case is None:
        raise NotFound()
    return presenters.case_detail(case, pii=may_see_pii(request.user))


class CaseDetailView(APIView):
    permission_classes = [IsStaffToken, ReadScope, has_role("view_activationcase")]

    @extend_schema(
        operation_id="staff_cases_retrieve",
        tags=TAGS,
        parameters=[ID_PARAMETER],
        responses={200: StaffCaseDetailSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request, id: str):
        return Response(StaffCaseDetailSerializer(_case_detail(request, _id(id))).data)


class CaseActionView(APIView):
    # The role each action needs is the service's to check (as for the back office's page).
    permission_classes = [IsStaffToken, WorkCasesScope]

    @extend_schema(
        operation_id="staff_cases_action",
        tags=TAGS,
        parameters=[
            ID_PARAMETER,
            OpenApiParameter("action", OpenApiTypes.STR, OpenApiParameter.PATH, enum=CASE_ACTIONS),
        ],
        request=StaffCaseActionInputSerializer,
        responses={
            200: StaffCaseActionResultSerializer,
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def post(self, request, id: str, action: str):
        case_id = _id(id)
        if action not in CASE_ACTIONS:
            raise NotFound()
        data = StaffCaseActionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if selectors.case_for_staff(case_id) is None:
            raise NotFound()
        message = run_case_action(
            action,
            staff=request.user,
            case_id=case_id,
            # request._request: the Django request, whose address and device the timeline keeps.
            context=RequestContext.from_request(request._request),
            data=data.validated_data,
        )
        result = {"message": message, "case": _case_detail(request, case_id)}
        return Response(StaffCaseActionResultSerializer(result).data)


EXPORT_PERMISSIONS = [IsStaffToken, ExportScope, has_role("export_case_history")]


def _export_links(record: CaseExport) -> dict[str, str]:
    return {
        "download_url": reverse("v1:staff-export-download", args=[record.pk]),
        "manifest_url": reverse("v1:staff-export-manifest", args=[record.pk]),
    }


class ExportStartView(APIView):
    permission_classes = EXPORT_PERMISSIONS

    @extend_schema(
        operation_id="staff_exports_create",
        tags=TAGS,
        request=StaffExportInputSerializer,
        responses={201: StaffExportSerializer, **error_responses(400, 401, 403)},
    )
    def post(self, request):
        form = StaffExportInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        record = exports.start_export(
            staff=request.user,
            filters=ExportFilters(
                since=data.get("since"),
                until=data.get("until"),
                states=tuple(data.get("states") or ()),
                reasons=tuple(data.get("reasons") or ()),
            ),
            fmt=data["format"],
        )
        body = StaffExportSerializer(presenters.export(record, **_export_links(record))).data
        return Response(body, status=status.HTTP_201_CREATED)


class ExportFileNegotiation(DefaultContentNegotiation):
    """Here ``?format=`` names the export's file format, not a renderer for the answer."""

    settings = SimpleNamespace(URL_FORMAT_OVERRIDE=None)


class ExportDownloadView(APIView):
    permission_classes = EXPORT_PERMISSIONS
    content_negotiation_class = ExportFileNegotiation

    @extend_schema(
        operation_id="staff_exports_download",
        tags=TAGS,
        parameters=[
            ID_PARAMETER,
            StaffDownloadQuerySerializer,
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="CSV rows."),
            (200, "application/jsonl"): OpenApiResponse(
                OpenApiTypes.BINARY, description="One JSON object a line."
            ),
            **error_responses(400, 401, 403, 404),
        },
    )
    def get(self, request, id: str):
        record = exports.exports_of(request.user).filter(pk=_id(id)).first()
        if record is None:
            raise NotFound()
        query = StaffDownloadQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        own = record.format if record.format in dict(EXPORT_FORMATS) else "csv"
        fmt = query.validated_data.get("format") or own
        response = StreamingHttpResponse(
            exports.export_bytes(record=record, staff=request.user, fmt=fmt),
            content_type=EXPORT_CONTENT_TYPES[fmt],
        )
        response["Content-Disposition"] = f'attachment; filename="case-history-{record.pk}.{fmt}"'
        response["X-Export-Id"] = str(record.pk)
        return response


class ExportManifestView(APIView):
    permission_classes = EXPORT_PERMISSIONS

    @extend_schema(
        operation_id="staff_exports_manifest",
        tags=TAGS,
        parameters=[ID_PARAMETER],
        responses={200: StaffManifestSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request, id: str):
        # As in the back office, anyone who may export reads any export's manifest.
        record = CaseExport.objects.filter(pk=_id(id), manifest__isnull=False).first()
        if record is None:
            raise NotFound()
        return Response(StaffManifestSerializer(record.manifest).data)
