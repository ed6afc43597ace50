from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from approvals.metrics import metrics_view
from policies.api import SimulateView

urlpatterns = [
    path("api/v1/", include("approvals.api.urls")),
    path("api/v1/policies/simulate", SimulateView.as_view(), name="api-simulate"),
    path("api/v1/schema", SpectacularJSONAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("approvals.urls")),
]

handler404 = "approvals.api.errors.not_found"
handler500 = "approvals.api.errors.server_failure"
