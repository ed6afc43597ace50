from django.urls import path

from approvals import views
from approvals.report_views import reports_page

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("requests/<uuid:pk>", views.request_page, name="request"),
    path("requests/<uuid:pk>/decide", views.decide, name="request-decide"),
    path("requests/<uuid:pk>/claim", views.claim, name="request-claim"),
    path("requests/<uuid:pk>/unclaim", views.unclaim, name="request-unclaim"),
    path("requests/<uuid:pk>/preview", views.payload_preview, name="request-preview"),
    path("requests/<uuid:pk>/ticket/note", views.ticket_note, name="ticket-note"),
    path("requests/<uuid:pk>/ticket/close", views.ticket_close, name="ticket-close"),
    path("reports/", reports_page, name="reports"),
]
