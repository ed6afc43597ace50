from django.urls import path

from approvals import views

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("requests/<uuid:pk>", views.request_page, name="request"),
]
