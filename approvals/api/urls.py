from django.urls import path

from approvals.api import views
from approvals.api.audit import AuditExportView

urlpatterns = [
    path("requests", views.RequestsView.as_view(), name="api-requests"),
    path("requests/<uuid:pk>", views.RequestDetailView.as_view(), name="api-request"),
    path("requests/<uuid:pk>/cancel", views.CancelView.as_view(), name="api-cancel"),
    path("requests/<uuid:pk>/decision", views.DecisionView.as_view(), name="api-decision"),
    path("requests/<uuid:pk>/claim", views.ClaimView.as_view(), name="api-claim"),
    path("requests/<uuid:pk>/unclaim", views.UnclaimView.as_view(), name="api-unclaim"),
    path("audit", AuditExportView.as_view(), name="api-audit"),
]
