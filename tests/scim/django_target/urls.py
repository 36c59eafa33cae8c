from django.urls import include, path

urlpatterns = [path("v2/", include("django_scim.urls", namespace="scim"))]
